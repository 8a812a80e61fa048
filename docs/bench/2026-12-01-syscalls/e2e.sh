#!/bin/bash
# e2e.sh ROUNDS "RATES" VARIANTS...: each variant DIR:NAME (DIR/ours, or rmqc); interleaved
U=amqp://guest:guest@127.0.0.1:31750/%2f
R=$1; RATES=$2; shift 2
for r in $(seq $R); do
  for rate in $RATES; do
  for v in "$@"; do
    dir=${v%%:*}; name=${v##*:}
    bin=$dir/ours; [ "$name" = rmqc ] && bin=$dir/rmqc
    q=e2e-$RANDOM
    $bin e2e uri=$U queue=$q rate=$rate seconds=4 size=64 > /tmp/ab/e2e.json 2>/tmp/ab/e2e.err
    /tmp/bN/rmqc delete uri=$U queue=$q >/dev/null 2>&1
    python3 -c "import json;d=json.load(open('/tmp/ab/e2e.json'));print('e2e_$rate', '%-5s'%'$name', round(d['e2e_p50_ns']/1000,1), round(d['e2e_p99_ns']/1000,1), round(d.get('cpu_us_per_msg',0),1), d['ok'])" 2>&1 | tail -1
  done; done
done

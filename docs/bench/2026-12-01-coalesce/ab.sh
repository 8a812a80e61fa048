#!/bin/bash
# ab.sh ROUNDS: consume and e2e, ours default / ours inline_delivery=false / rmqc, interleaved
U=amqp://guest:guest@127.0.0.1:31750/%2f
B=/tmp/bx
R=$1
for r in $(seq $R); do
  for v in "ours" "ours copts=inline_delivery=false" "rmqc"; do
    bin=${v%% *}; extra=$(echo "$v" | cut -s -d" " -f2-)
    $B/rmqc fill uri=$U queue=cq n=200000 size=64 >/dev/null
    $B/$bin consume uri=$U queue=cq n=200000 size=64 prefetch=500 $extra > /tmp/ab1.json 2>/dev/null
    python3 -c "import json;d=json.load(open('/tmp/ab1.json'));print('consume', '%-34s'%'$v', round(d['msgs_per_s']), round(d['vol_ctx_switches_per_msg'],4), round(d['cpu_us_per_msg'],2), d['ok'])"
  done
  for rate in 10000 1000; do
  for v in "ours" "ours copts=inline_delivery=false" "rmqc"; do
    bin=${v%% *}; extra=$(echo "$v" | cut -s -d" " -f2-)
    q=e2e-$RANDOM
    $B/$bin e2e uri=$U queue=$q rate=$rate seconds=4 size=64 $extra > /tmp/ab2.json 2>/dev/null
    $B/rmqc delete uri=$U queue=$q >/dev/null 2>&1
    python3 -c "import json;d=json.load(open('/tmp/ab2.json'));print('e2e_$rate', '%-34s'%'$v', round(d['e2e_p50_ns']/1000,1), round(d['e2e_p99_ns']/1000,1), d['ok'])"
  done; done
done

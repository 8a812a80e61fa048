#!/bin/bash
# consume.sh ROUNDS: consume 200k x 64 B prefetch 500, new / old / rmqc interleaved
U=amqp://guest:guest@127.0.0.1:31750/%2f
for r in $(seq $1); do
  for v in "/tmp/bN/ours new" "/tmp/bO/ours old" "/tmp/bN/rmqc rmqc"; do
    bin=${v%% *}; name=${v##* }
    /tmp/bN/rmqc fill uri=$U queue=cq n=200000 size=64 >/dev/null
    $bin consume uri=$U queue=cq n=200000 size=64 prefetch=500 > /tmp/ab/c.json 2>/dev/null
    python3 -c "import json;d=json.load(open('/tmp/ab/c.json'));print('consume', '%-5s'%'$name', round(d['msgs_per_s']), round(d['vol_ctx_switches_per_msg'],4), round(d['cpu_us_per_msg'],2), d['ok'])"
  done
done

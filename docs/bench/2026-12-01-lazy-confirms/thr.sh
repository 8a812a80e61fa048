#!/bin/bash
# thr.sh BIN RATE: per-thread voluntary switches during a 4 s e2e run
U=amqp://guest:guest@127.0.0.1:31750/%2f
q=e2e-$RANDOM
$1 e2e uri=$U queue=$q rate=$2 seconds=4 size=64 > /tmp/ab/thr.json 2>/dev/null &
pid=$!
sleep 3.5
for t in /proc/$pid/task/*; do echo "$(cat $t/comm) $(grep voluntary_ctxt $t/status | head -1 | awk '{print $2}')"; done | sort | awk '{a[$1]+=$2; n[$1]++} END {for (k in a) print k, n[k], a[k]}'
wait $pid
/tmp/bN/rmqc delete uri=$U queue=$q >/dev/null 2>&1
python3 -c "import json;d=json.load(open('/tmp/ab/thr.json'));print(round(d['e2e_p50_ns']/1000,1), round(d['e2e_p99_ns']/1000,1), d['ok'])"

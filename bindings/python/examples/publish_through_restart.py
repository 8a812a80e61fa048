#!/usr/bin/env python3
"""Publishes 2,000 messages while the broker's application is stopped and
started again halfway, then reads them all back: nothing lost.

    python3 examples/publish_through_restart.py URI "CTL"

CTL: a command prefix that runs rabbitmqctl against that broker (run with
`sh -c`), e.g. "rabbitmqctl -n rabbit@host" or "scripts/broker.sh ctl".
"""
import logging
import os
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import resilient_amqp as ra  # noqa: E402

N = 2000
uri, ctl = sys.argv[1], sys.argv[2]
logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
queue = "restart-demo-" + uuid.uuid4().hex[:8]

with ra.Connection(uri, {"reconnect_delay_max_ms": 500}, wait=15, close_timeout=60) as conn:
    q = conn.queue(queue, durable=True, expires_ms=600000)  # survives the restart
    for i in range(N):
        if i == N // 2:                            # the broker goes away...
            subprocess.run(["sh", "-c", f"{ctl} stop_app"], check=True, capture_output=True)
        q.publish(f"order {i}", message_id=str(i))  # ...and publish never fails meanwhile
        if i == N // 2 + 100:                      # ...and comes back
            subprocess.run(["sh", "-c", f"{ctl} start_app"], check=True, capture_output=True)
        time.sleep(0.001)
# leaving the block waited until the broker confirmed every message
print(f"published {N}, unsent at close: {conn.close_report.unsent}")

seen = set()
with ra.Connection(uri, wait=15) as conn:
    q = conn.queue(queue, durable=True, expires_ms=600000)
    while len(seen) < N:
        msgs = q.poll(256, timeout=10)
        if not msgs:
            break
        seen.update(m.message_id for m in msgs)
        q.settle_many([m.delivery_id for m in msgs], ra.ACK)
missing = N - len(seen)
print(f"read back {len(seen)} distinct messages, missing {missing}")
sys.exit(1 if missing or conn.close_report.unsent else 0)

#!/usr/bin/env python3
"""bench.py URI QUEUE N SIZE: publishes N messages of SIZE bytes to QUEUE
(transient, non-durable queue as the C bench), waits until all are
confirmed, then consumes them all with ack through batched pull mode
(amqp_poll up to 256 at a time, amqp_settle_many per batch) and prints
`BENCH python publish <msg/s> consume <msg/s>`."""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
_built = os.path.join(HERE, "..", "..", "target", "release")
if not (os.environ.get("RESILIENT_AMQP_LIB") or os.environ.get("RESILIENT_AMQP_LIB_DIR")) \
        and os.path.exists(os.path.join(_built, "libresilient_amqp.so")):
    os.environ["RESILIENT_AMQP_LIB_DIR"] = os.path.abspath(_built)   # this repository's build
import resilient_amqp as ra  # noqa: E402


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: bench.py URI QUEUE N SIZE")
    uri, queue, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    body = b"x" * size
    with ra.Connection(uri, wait=30, close_timeout=30) as conn:
        q = conn.queue(queue, durable=False, prefetch=500)
        t0 = time.perf_counter()
        publish = q.publish
        for _ in range(n):
            publish(body, wait=30)
        while q.stats().confirmed < n:
            time.sleep(0.001)
        t1 = time.perf_counter()
        got = 0
        poll, settle = q.poll, q.settle_many
        nbytes = 0
        while got < n:
            msgs = poll(256, 10.0)
            if not msgs:
                sys.exit(f"bench: consume stalled at {got} of {n}")
            settle([m.delivery_id for m in msgs], ra.ACK)
            for m in msgs:
                nbytes += len(m.body)
            got += len(msgs)
        t2 = time.perf_counter()
        if nbytes != n * size:
            sys.exit(f"bench: {nbytes} body bytes consumed, expected {n * size}")
        q.stop(10)
    print(f"BENCH python publish {n / (t1 - t0):.0f} consume {n / (t2 - t1):.0f}")


if __name__ == "__main__":
    main()

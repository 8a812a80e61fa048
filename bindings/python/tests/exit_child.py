"""Run by test_exit.py: starts a consumer whose handler is running (and
messages in flight, a log callback busy), then ends the interpreter
without closing. mode: "callback" (library threads call Python) or
"async" (asyncio pull consumer with a publish_confirmed pending if
supported) or "exit" (sys.exit from inside the handler's thread race)."""
import asyncio
import logging
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import resilient_amqp as ra  # noqa: E402
from resilient_amqp import aio  # noqa: E402

uri, queue, mode = sys.argv[1], sys.argv[2], sys.argv[3]
logging.basicConfig(level=logging.DEBUG, stream=open(os.devnull, "w"))
ra.set_log_level(logging.DEBUG)   # the log thread calls into Python all the time

if mode == "callback":
    conn = ra.Connection(uri, {"reconnect_delay_ms": 10}, wait=15)
    q = conn.queue(queue, durable=False, expires_ms=60000, prefetch=20)
    inside = threading.Event()

    def handler(m):
        inside.set()
        time.sleep(0.002)
        return ra.ACK if int(m.body[1:]) % 3 else ra.REQUEUE

    for i in range(3000):
        q.publish(b"m%d" % i)
    q.consume(handler, repeat=4)
    ra.Connection("amqp://guest:guest@127.0.0.1:9/%2f", {"reconnect_delay_ms": 1})
    if not inside.wait(20):
        sys.exit(3)
    for i in range(3000):   # more in flight while we exit
        q.publish(b"n%d" % i)
    time.sleep(0.05)
    print("exiting with handlers running", file=sys.stderr)
else:
    async def main():
        conn = aio.AsyncConnection(uri, {"reconnect_delay_ms": 10})
        await conn.wait_connected(15)
        q = await conn.queue(queue, durable=False, expires_ms=60000, prefetch=20)
        for i in range(3000):
            q.publish(b"m%d" % i)
        got = []

        async def handler(m):
            got.append(m)
            await asyncio.sleep(0.001)

        task = asyncio.ensure_future(q.consume_async(handler))
        while len(got) < 50:
            await asyncio.sleep(0.01)
        if ra._ffi.HAS_REPORTS_PULL:
            for i in range(100):
                q.publish_confirmed(b"c%d" % i)
        # the blocking sync callback consumer too, on the same process
        conn.sync.queue(queue + "-cb", durable=False, expires_ms=60000).consume(
            lambda m: time.sleep(0.001))
        print("exiting the loop with the pull consumer running", file=sys.stderr)
        return task

    asyncio.run(main())   # returns with the consumer task pending: no close

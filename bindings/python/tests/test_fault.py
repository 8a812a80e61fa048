"""6. Fault test: the broker closes every connection every 0.5 s
(`$RESILIENT_AMQP_TEST_CTL close_all_connections test` in a loop) while
10,000 messages are published and consumed: 0 missing (distinct bodies
counted; duplicates allowed). Once with library-thread callbacks, once
with the asyncio pull consumer."""
import asyncio
import threading
import time
import unittest

from helpers import CTL, FAST, URI, ctl, qname, wait_until

import resilient_amqp as ra
from resilient_amqp import aio

N = 10_000


class Killer:
    """Closes every broker connection every 0.5 s until stopped."""

    def __init__(self):
        self.stop = threading.Event()
        self.kills = 0
        self.errors = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.wait(0.5):
            r = ctl("close_all_connections", "test", check=False)
            if r.returncode == 0:
                self.kills += 1
            else:
                self.errors.append(r.stderr[-300:])

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)


@unittest.skipUnless(CTL, "RESILIENT_AMQP_TEST_CTL is not set")
class Fault(unittest.TestCase):
    def publish_spread(self, q, k, seconds=6.0):
        # spread over several kill periods: 10 batches of N/10; rabbitmqctl is slow on a
        # loaded machine, so the last batch waits until 3 kills landed while publishing
        for b in range(10):
            if b == 9:
                wait_until(lambda: k.kills >= 3, 60, 0.05)
            for i in range(b * N // 10, (b + 1) * N // 10):
                q.publish(b"f%05d" % i, wait=30)
            time.sleep(seconds / 10)

    def test_callbacks_under_connection_kills(self):
        got = set()
        lock = threading.Lock()

        def handler(m):
            with lock:
                got.add(m.body)

        conn = ra.Connection(URI, FAST, wait=15)
        try:
            q = conn.queue(qname("fault"), durable=False, expires_ms=300000, prefetch=200)
            q.consume(handler, repeat=2)
            with Killer() as k:
                self.publish_spread(q, k)
                done = wait_until(lambda: len(got) >= N, 90, 0.05)
            self.assertTrue(done, f"{N - len(got)} missing of {N} after {k.kills} kills")
            self.assertGreaterEqual(k.kills, 3, f"too few connection kills: {k.errors[:2]}")
            self.assertEqual(got, {b"f%05d" % i for i in range(N)})
            self.assertGreaterEqual(conn.stats().connects, 2)
        finally:
            self.assertEqual(conn.close(30), 0)

    def test_asyncio_under_connection_kills(self):
        async def main():
            got = set()
            async with aio.AsyncConnection(URI, FAST, wait=15, close_timeout=30) as conn:
                q = await conn.queue(qname("afault"), durable=False, expires_ms=300000,
                                     prefetch=200)

                async def handler(m):
                    got.add(m.body)

                task = asyncio.ensure_future(q.consume_async(handler))
                loop = asyncio.get_running_loop()
                with Killer() as k:
                    # publish_confirmed from the loop: every awaitable must resolve
                    futs = []
                    for b in range(10):
                        if b == 9:  # 3 kills while publishing, however slow rabbitmqctl is
                            end = loop.time() + 60
                            while k.kills < 3 and loop.time() < end:
                                await asyncio.sleep(0.05)
                        for i in range(b * N // 10, (b + 1) * N // 10):
                            futs.append(q.publish_confirmed(b"f%05d" % i))
                        await asyncio.sleep(0.6)
                    attempts = await asyncio.wait_for(asyncio.gather(*futs), 90)
                    end = loop.time() + 90
                    while len(got) < N and loop.time() < end:
                        await asyncio.sleep(0.05)
                self.assertEqual(len(attempts), N)
                self.assertGreaterEqual(k.kills, 3, f"too few connection kills: {k.errors[:2]}")
                self.assertEqual(len(got), N, f"{N - len(got)} missing after {k.kills} kills")
                self.assertEqual(got, {b"f%05d" % i for i in range(N)})
                self.assertGreaterEqual(conn.stats().consume_connects, 2)
            self.assertEqual(conn.close_report.unsent, 0)
            await asyncio.wait_for(task, 10)   # ends by itself once the connection closed

        asyncio.run(main())


if __name__ == "__main__":
    unittest.main()


@unittest.skipUnless(CTL, "RESILIENT_AMQP_TEST_CTL is not set")
class ReadmeExample(unittest.TestCase):
    def test_publish_through_broker_restart(self):
        import os
        import subprocess
        import sys
        from helpers import HERE
        ex = os.path.join(os.path.dirname(HERE), "examples", "publish_through_restart.py")
        p = subprocess.run([sys.executable, ex, URI, CTL], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("missing 0", p.stdout)
        self.assertIn("unsent at close: 0", p.stdout)

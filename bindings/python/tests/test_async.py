"""3. asyncio: consume_async with an async handler that raises on every
other message (requeued, logged, counted, 0 lost), `async for` over
messages(), publish_confirmed resolving on the broker's confirm and
failing with the reason, close settling what is left. Everything on the
loop through pull mode: no handler ever runs on a library thread."""
import asyncio
import logging
import threading
import unittest

from helpers import CTL, FAST, URI, ctl, qname

import resilient_amqp as ra
from resilient_amqp import _ffi, aio

N = 500


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class Async(unittest.TestCase):
    def test_async_handler_raising_requeues(self):
        async def main():
            async with aio.AsyncConnection(URI, FAST, wait=15) as conn:
                q = await conn.queue(qname("araise"), durable=False, expires_ms=60000,
                                     prefetch=100)
                for i in range(N):
                    q.publish(b"a%d" % i)
                loop_thread = threading.get_ident()
                calls, acked, threads = [0], set(), set()

                async def handler(m):
                    threads.add(threading.get_ident())
                    calls[0] += 1
                    nth = calls[0]  # before the await: concurrent handlers interleave
                    await asyncio.sleep(0)
                    if nth % 2 == 0:
                        raise RuntimeError("async failure")
                    acked.add(m.body)

                with self.assertLogs("resilient_amqp", logging.ERROR) as logs:
                    task = asyncio.ensure_future(q.consume_async(handler, concurrency=4))
                    while len(acked) < N:
                        await asyncio.sleep(0.02)
                    task.cancel()
                    with self.assertRaises(asyncio.CancelledError):
                        await task
                self.assertEqual(acked, {b"a%d" % i for i in range(N)})
                self.assertEqual(threads, {loop_thread})
                self.assertGreaterEqual(q.handler_errors, N // 2 - 2)
                self.assertTrue(any("async handler raised" in r.getMessage()
                                    for r in logs.records))
                for _ in range(500):   # settles are sent within a few ms
                    s = q.stats()
                    if s.acked >= N and s.requeued >= q.handler_errors:
                        break
                    await asyncio.sleep(0.01)
                self.assertGreaterEqual(s.requeued, q.handler_errors)
                self.assertGreaterEqual(s.acked, N)
                self.assertEqual(s.invalid_dispositions, 0)
            self.assertEqual(conn.close_report.unsettled, 0)

        run(main())

    def test_async_for_messages(self):
        async def main():
            async with aio.AsyncConnection(URI, FAST, wait=15) as conn:
                q = await conn.queue(qname("aiter"), durable=False, expires_ms=60000)
                for i in range(100):
                    q.publish("text %d" % i, correlation_id=str(i))
                while q.stats().confirmed < 100:   # all in the queue before consuming
                    await asyncio.sleep(0.01)
                seen = []
                async for m in q.messages():
                    self.assertEqual(m.text, "text %d" % len(seen))
                    self.assertEqual(m.correlation_id, str(len(seen)))
                    seen.append(m)
                    if len(seen) % 2:
                        m.ack()
                    else:
                        m.requeue() if not m.redelivered else m.ack()
                    if len(seen) == 100:
                        break
                # the requeued half comes back, redelivered
                again = []
                async for m in q.messages(batch=10):
                    self.assertTrue(m.redelivered)
                    m.ack()
                    again.append(m.body)
                    if len(again) == 50:
                        break
                self.assertEqual(sorted(again), sorted(b"text %d" % i for i in range(1, 100, 2)))

        run(main())

    def test_consume_async_ends_when_connection_closes(self):
        async def main():
            conn = aio.AsyncConnection(URI, FAST)
            await conn.wait_connected(15)
            q = await conn.queue(qname("aend"), durable=False, expires_ms=60000)
            got = []
            task = asyncio.ensure_future(q.consume_async(lambda m: got.append(m.body)))
            q.publish(b"one")
            while not got:
                await asyncio.sleep(0.01)
            self.assertEqual(await conn.close(5), 0)
            await asyncio.wait_for(task, 5)   # returned by itself
            self.assertEqual(got, [b"one"])

        run(main())

    def test_refused_pull_consumer_raises_broker_error(self):
        async def main():
            async with aio.AsyncConnection(URI, FAST, wait=15) as conn:
                name = qname("aexcl")
                other = await conn.queue(name, durable=False, expires_ms=60000,
                                         consumer_exclusive=True)
                other.queue.consume(lambda m: None)     # an exclusive consumer holds it
                conn2 = aio.AsyncConnection(URI, FAST)
                await conn2.wait_connected(15)
                try:
                    q = await conn2.queue(name, durable=False, expires_ms=60000)
                    for _ in range(2):                   # refused each time, no stale state
                        with self.assertRaises(ra.BrokerError) as cm:
                            await q.get_batch()
                        self.assertIn("403", cm.exception.message)
                finally:
                    await conn2.close(5)

        run(main())

    @unittest.skipUnless(_ffi.HAS_REPORTS_PULL, "library without amqp_reports_pull (ABI 4)")
    def test_cancel_pull_gives_prefetched_messages_back(self):
        if not CTL:
            self.skipTest("RESILIENT_AMQP_TEST_CTL is not set")
        name = qname("acancel")

        def consumers():
            out = ctl("-q", "list_queues", "--no-table-headers", "name", "consumers").stdout
            for line in out.splitlines():
                f = line.split()
                if len(f) == 2 and f[0] == name:
                    return int(f[1])
            return -1

        async def main():
            async with aio.AsyncConnection(URI, FAST, wait=15) as conn:
                q = await conn.queue(name, durable=False, expires_ms=60000, prefetch=10)
                for i in range(5):
                    q.publish(b"c%d" % i)
                first = (await q.get_batch(1))[0]
                first.ack()
                await q.cancel_pull(5.0)
                for _ in range(500):
                    if consumers() == 0:
                        break
                    await asyncio.sleep(0.02)
                self.assertEqual(consumers(), 0)
                got = []
                while len(got) < 4:          # a new pull consumer gets the rest
                    msgs = await q.get_batch(8)
                    for m in msgs:
                        m.ack()
                    got += [m.body for m in msgs]
                self.assertEqual(sorted(got), [b"c1", b"c2", b"c3", b"c4"])
                with self.assertRaises(ra.InvalidArgument):
                    q.queue.consume_pull_cancel(0)
                    q.queue.consume_pull_cancel(0)

        run(main())

    def test_publish_confirmed(self):
        async def main():
            async with aio.AsyncConnection(URI, FAST, wait=15) as conn:
                name = qname("aconf")
                q = await conn.queue(name, "py-ex-" + name, "rk", durable=False,
                                     expires_ms=60000)
                attempts = await q.publish_confirmed(b"first")
                self.assertEqual(attempts, 1)
                futs = [q.publish_confirmed(b"m%d" % i, message_id=str(i)) for i in range(1000)]
                q.publish(b"plain")   # reported too (tag 0), drained quietly
                self.assertEqual(set(await asyncio.gather(*futs)), {1})
                with self.assertRaises(ra.PublishFailed) as cm:
                    await q.publish_confirmed(b"lost", routing_key="nobody-binds-this")
                self.assertEqual(cm.exception.status, "UNROUTABLE")
                self.assertIn("nobody-binds-this", cm.exception.message)
                self.assertEqual(cm.exception.reply_code, 312)
                for _ in range(500):
                    s = q.stats()
                    if s.confirmed >= 1002 and s.buffered == 0:
                        break
                    await asyncio.sleep(0.01)
                self.assertEqual(s.confirmed, 1002)
                self.assertEqual(s.buffered, 0)

        run(main())

    @unittest.skipUnless(_ffi.HAS_REPORTS_PULL, "library without amqp_reports_pull (ABI 4)")
    def test_publish_confirmed_unsent_at_close(self):
        async def main():
            conn = aio.AsyncConnection("amqp://guest:guest@127.0.0.1:9/%2f", FAST)
            q = await conn.queue(qname("aunsent"), durable=False)
            futs = [q.publish_confirmed(b"m%d" % i) for i in range(10)]
            self.assertEqual(await conn.close(0.3), 10)
            for f in futs:
                with self.assertRaises(ra.PublishFailed) as cm:
                    await f
                self.assertEqual(cm.exception.status, "UNSENT")

        run(main())


if __name__ == "__main__":
    unittest.main()

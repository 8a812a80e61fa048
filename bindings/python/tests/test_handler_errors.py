"""2. A handler that raises on every other call never acks: the message is
requeued and redelivered (0 lost), the exception is logged through
`logging` and counted; with on_error="reject" it is rejected instead."""
import logging
import threading
import unittest

from helpers import FAST, URI, qname, wait_until

import resilient_amqp as ra

N = 300


class HandlerRaises(unittest.TestCase):
    def setUp(self):
        self.conn = ra.Connection(URI, FAST, wait=15)

    def tearDown(self):
        self.conn.close(5)

    def test_raising_handler_requeues_and_loses_nothing(self):
        q = self.conn.queue(qname("raise"), durable=False, expires_ms=60000, prefetch=50)
        calls = [0]
        acked = set()
        lock = threading.Lock()

        def handler(m):
            with lock:
                calls[0] += 1
                fail = calls[0] % 2 == 0
                if not fail:
                    acked.add(m.body)
            if fail:
                raise RuntimeError(f"handler failure on {m.body!r}")

        for i in range(N):
            q.publish(b"m%d" % i)
        with self.assertLogs("resilient_amqp", logging.ERROR) as logs:
            q.consume(handler, repeat=4)
            self.assertTrue(wait_until(lambda: len(acked) == N, 30),
                            f"{len(acked)} of {N} acked")
            q.stop(10)
        # the dispositions of the last handlers are applied just after they return
        wait_until(lambda: q.stats().requeued + q.stats().acked == calls[0], 5)
        s = q.stats()
        self.assertEqual(acked, {b"m%d" % i for i in range(N)})
        self.assertGreaterEqual(s.handler_errors, N // 2 - 1)
        self.assertEqual(s.handler_errors, q.handler_errors)
        # every failure requeued, none acked by the failure path
        self.assertEqual(s.requeued, s.handler_errors)
        self.assertEqual(s.acked, calls[0] - s.handler_errors)
        self.assertEqual(s.invalid_dispositions, 0)
        self.assertTrue(any("handler raised" in r.getMessage() and r.exc_info
                            for r in logs.records))
        self.assertTrue(any("RuntimeError: handler failure" in line for line in logs.output))

    def test_on_error_reject(self):
        q = self.conn.queue(qname("rej"), durable=False, expires_ms=60000, on_error="reject")
        seen = []

        def handler(m):
            seen.append(m.body)
            raise ValueError("no")

        q.publish(b"x")
        with self.assertLogs("resilient_amqp", logging.ERROR):
            q.consume(handler)
            self.assertTrue(wait_until(lambda: q.stats().rejected == 1, 10), q.stats())
        q.stop(10)
        self.assertEqual(seen, [b"x"])   # rejected, not redelivered
        self.assertEqual(q.stats().requeued, 0)
        self.assertEqual(q.handler_errors, 1)

    def test_bad_return_value_counts_as_failure(self):
        q = self.conn.queue(qname("badret"), durable=False, expires_ms=60000)
        n = [0]

        def handler(m):
            n[0] += 1
            return "yes" if n[0] == 1 else None

        q.publish(b"x")
        with self.assertLogs("resilient_amqp", logging.ERROR):
            q.consume(handler)
            self.assertTrue(wait_until(lambda: q.stats().acked == 1, 10), q.stats())
        self.assertEqual(q.stats().requeued, 1)
        self.assertEqual(n[0], 2)


if __name__ == "__main__":
    unittest.main()

"""7. Graceful close returns the unsent count; stats are readable; the
library's log lines arrive in the `resilient_amqp` logger."""
import logging
import threading
import unittest

from helpers import FAST, URI, qname, wait_until

import resilient_amqp as ra

DEAD = "amqp://guest:guest@127.0.0.1:9/%2f"   # nothing listens: never connects


class CloseStatsLogs(unittest.TestCase):
    def test_close_returns_unsent(self):
        conn = ra.Connection(DEAD, FAST)
        q = conn.queue(qname("unsent"), durable=False)
        for i in range(25):
            q.publish(b"m%d" % i)
        self.assertEqual(q.stats().buffered, 25)
        with self.assertLogs("resilient_amqp", logging.WARNING):
            unsent = conn.close(0.3)
        self.assertEqual(unsent, 25)
        self.assertFalse(conn.close_report.ok)
        self.assertEqual(conn.close_report.unsent, 25)
        self.assertEqual(conn.close(), 0)   # a second close is a no-op

    def test_close_waits_for_confirms(self):
        with ra.Connection(URI, FAST, wait=15) as conn:
            q = conn.queue(qname("confirmed"), durable=False, expires_ms=60000)
            for i in range(2000):
                q.publish(b"m%d" % i)
        self.assertEqual(conn.close_report.unsent, 0)
        self.assertTrue(conn.close_report.ok)

    def test_close_waits_for_a_running_handler(self):
        conn = ra.Connection(URI, FAST, wait=15)
        q = conn.queue(qname("slow"), durable=False, expires_ms=60000)
        inside, done = threading.Event(), threading.Event()

        def handler(m):
            inside.set()
            threading.Event().wait(0.5)
            done.set()

        q.consume(handler)
        q.publish(b"x")
        self.assertTrue(inside.wait(10))
        self.assertEqual(conn.close(10), 0)
        self.assertTrue(done.is_set(), "close returned while the handler ran")

    def test_stats(self):
        with ra.Connection(URI, FAST, wait=15) as conn:
            q = conn.queue(qname("stats"), durable=False, expires_ms=60000)
            for i in range(10):
                q.publish(b"m%d" % i)
            self.assertTrue(wait_until(lambda: q.stats().confirmed == 10, 10))
            s = q.stats()
            self.assertIsInstance(s, ra.QueueStats)
            self.assertEqual(s.published, 10)
            self.assertEqual(s.as_dict()["confirmed"], 10)
            c = conn.stats()
            self.assertIsInstance(c, ra.ConnectionStats)
            self.assertEqual(c.state, "AMQP_STATE_CONNECTED")
            self.assertEqual(c.connects, 1)
            self.assertEqual(c.queues, 1)
            self.assertEqual(q.name, q.declared_name)
            self.assertEqual(ra.abi_version() >= 3, True)

    def test_library_logs_reach_logging(self):
        logger = logging.getLogger("resilient_amqp")
        old = logger.level
        logger.setLevel(logging.INFO)
        ra.set_log_level(logging.INFO)
        try:
            with self.assertLogs("resilient_amqp", logging.INFO) as logs:
                with ra.Connection(URI, FAST, wait=15):
                    pass
                self.assertTrue(wait_until(
                    lambda: any("connected to" in r.getMessage() for r in logs.records), 5))
            rec = next(r for r in logs.records if "connected to" in r.getMessage())
            self.assertEqual(rec.levelno, logging.INFO)
            self.assertNotIn("guest:guest", rec.getMessage())   # never the password
            with self.assertLogs("resilient_amqp", logging.WARNING) as logs:
                conn = ra.Connection(DEAD, FAST)
                self.assertTrue(wait_until(
                    lambda: any("failed" in r.getMessage() for r in logs.records), 5))
                conn.close(0)
            self.assertTrue(all(r.levelno >= logging.WARNING for r in logs.records))
        finally:
            logger.setLevel(old)
            ra.set_log_level()


if __name__ == "__main__":
    unittest.main()

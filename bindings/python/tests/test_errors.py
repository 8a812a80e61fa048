"""4. Errors are exceptions carrying the library's code and text, right
under concurrency: 8 threads each open a queue with a different bad
option at the same moment and each gets the text naming its own key."""
import threading
import unittest

from helpers import FAST, URI, qname

import resilient_amqp as ra


class Errors(unittest.TestCase):
    def test_eight_concurrent_failures_get_their_own_text(self):
        with ra.Connection(URI, FAST, wait=15) as conn:
            for rnd in range(5):
                results = [None] * 8
                barrier = threading.Barrier(8)

                def worker(i):
                    barrier.wait()
                    try:
                        conn.queue(qname("bad"), durable=False, **{f"bogus_key_{i}_x": "1"})
                        results[i] = "no error"
                    except ra.AmqpError as e:
                        results[i] = e

                threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(30)
                for i, e in enumerate(results):
                    self.assertIsInstance(e, ra.InvalidArgument, f"round {rnd} thread {i}: {e}")
                    self.assertEqual(e.code, 1)
                    self.assertEqual(e.code_name, "AMQP_ERR_INVALID_ARGUMENT")
                    self.assertIn(f"bogus_key_{i}_x", e.message)
                    for j in range(8):
                        if j != i:
                            self.assertNotIn(f"bogus_key_{j}_x", e.message)

    def test_concurrent_publish_errors_without_e_variant(self):
        # amqp_publish has no _e variant: the text comes from amqp_last_error
        # read on the same OS thread right after the call.
        with ra.Connection(URI, dict(FAST, max_message_bytes=100), wait=15) as conn:
            q = conn.queue(qname("big"), durable=False, expires_ms=60000)
            errs = [None] * 8

            def worker(i):
                try:
                    if i % 2:
                        q.publish(b"x" * 1000)
                    else:
                        q.publish(b"x", headers={"": 1})   # empty key
                except ra.AmqpError as e:
                    errs[i] = e

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            for i, e in enumerate(errs):
                if i % 2:
                    self.assertIsInstance(e, ra.MessageTooLarge, e)
                else:
                    self.assertIsInstance(e, ra.InvalidArgument, e)
                self.assertTrue(e.message, e)

    def test_codes_map_to_classes(self):
        with self.assertRaises(ra.InvalidArgument) as cm:
            ra.Connection("http://nope", None)
        self.assertIn("uri", str(cm.exception).lower())
        conn = ra.Connection(URI, FAST, wait=15)
        name = qname("durable")
        q = conn.queue(name, durable=False, expires_ms=60000)
        with self.assertRaises(ra.BrokerError) as cm:
            conn.queue(name, durable=True)   # inequivalent arg: 406
        self.assertIn("406", cm.exception.message)
        with self.assertRaises(ra.Timeout):
            ra.Connection("amqp://guest:guest@127.0.0.1:9/%2f", wait=0.3)
        conn.close(5)
        with self.assertRaises(ra.InvalidHandle) as cm:
            q.publish(b"x")
        self.assertEqual(cm.exception.code, 2)
        self.assertIsInstance(cm.exception, ra.AmqpError)


if __name__ == "__main__":
    unittest.main()

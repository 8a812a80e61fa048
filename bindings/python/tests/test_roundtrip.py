"""1. publish + consume round trip: bytes and str, properties and typed
headers through amqp_publish_message, read back on the delivery (callback
mode and pull mode); stop/start."""
import datetime
import decimal
import threading
import time
import unittest

from helpers import FAST, URI, qname, wait_until

import resilient_amqp as ra

HEADERS = {
    "s": "text é",
    "b": b"\x00\x01bytes",
    "i": -42,
    "big": 2 ** 40,
    "f": 1.5,
    "t": True,
    "n": None,
    "ts": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    "d": decimal.Decimal("12.345"),
    "nested": {"x": 1, "y": ["a", 2, {"z": False}]},
    "i8": ra.Typed("int8", -5),
    "u32": ra.Typed("uint32", 4000000000),
}


class RoundTrip(unittest.TestCase):
    def setUp(self):
        self.conn = ra.Connection(URI, FAST, wait=15)

    def tearDown(self):
        self.conn.close(5)

    def check_props(self, m):
        self.assertEqual(m.content_type, "application/json")
        self.assertEqual(m.content_encoding, "utf-8")
        self.assertEqual(m.correlation_id, "corr-1")
        self.assertEqual(m.reply_to, "replies")
        self.assertEqual(m.message_id, "mid-1")
        self.assertEqual(m.expiration, "60000")
        self.assertEqual(m.timestamp, 1700000000)
        self.assertEqual(m.type, "order.created")
        self.assertEqual(m.app_id, "tests")
        self.assertEqual(m.priority, 3)
        self.assertEqual(m.delivery_mode, 1)
        h = m.headers
        self.assertEqual(h["s"], "text é")
        self.assertEqual(h["b"], b"\x00\x01bytes")
        self.assertEqual(h["i"], -42)
        self.assertEqual(h["big"], 2 ** 40)
        self.assertEqual(h["f"], 1.5)
        self.assertIs(h["t"], True)
        self.assertIsNone(h["n"])
        self.assertEqual(h["ts"], HEADERS["ts"])
        self.assertEqual(h["d"], decimal.Decimal("12.345"))
        self.assertEqual(h["nested"], {"x": 1, "y": ["a", 2, {"z": False}]})
        self.assertEqual(h["i8"], -5)
        self.assertEqual(h["u32"], 4000000000)

    def publish_all(self, q):
        q.publish(b"raw \x00\xff bytes")
        q.publish("a str: é ü")
        q.publish(bytearray(b"from a bytearray"))
        q.publish('{"order": 1}', content_type="application/json", content_encoding="utf-8",
                  correlation_id="corr-1", reply_to="replies", message_id="mid-1",
                  expiration="60000", timestamp=1700000000, message_type="order.created",
                  app_id="tests", priority=3, delivery_mode=1, headers=HEADERS)

    def test_callback_round_trip(self):
        q = self.conn.queue(qname("rt"), durable=False, expires_ms=60000)
        got = []
        lock = threading.Lock()

        def handler(m):
            threading.current_thread()
            with lock:
                got.append(m)

        q.consume(handler)
        self.publish_all(q)
        self.assertTrue(wait_until(lambda: len(got) == 4, 15), f"got {len(got)}")
        got.sort(key=lambda m: m.delivery_tag)
        self.assertEqual(got[0].body, b"raw \x00\xff bytes")
        self.assertIsNone(got[0].content_type)
        self.assertEqual(got[1].text, "a str: é ü")
        self.assertEqual(got[2].body, b"from a bytearray")
        self.assertEqual(got[3].text, '{"order": 1}')
        self.check_props(got[3])
        self.assertFalse(got[0].redelivered)
        self.assertEqual(got[0].exchange, "")
        s = q.stats()
        self.assertTrue(wait_until(lambda: q.stats().acked == 4, 5), q.stats())
        self.assertEqual(s.published, 4)
        self.assertEqual(s.handler_errors, 0)

    def test_pull_round_trip_and_routing_key(self):
        name = qname("rtp")
        q = self.conn.queue(name, "py-ex-" + name, "rk1", durable=False, expires_ms=60000)
        self.publish_all(q)
        # a routing key of its own: no queue takes it -> unroutable, not delivered
        q.publish(b"nowhere", routing_key="no-such-key")
        msgs = []
        end = time.monotonic() + 15
        while len(msgs) < 4 and time.monotonic() < end:
            msgs += q.poll(256, 1.0)
        self.assertEqual(len(msgs), 4)
        q.settle_many([m.delivery_id for m in msgs], ra.ACK)
        self.assertEqual(msgs[0].routing_key, "rk1")
        self.assertEqual(msgs[0].exchange, "py-ex-" + name)
        self.check_props(msgs[3])
        self.assertEqual(q.poll(256, 0.3), [])
        self.assertTrue(wait_until(lambda: q.stats().unroutable == 1, 10), q.stats())

    def test_pull_from_several_threads(self):
        q = self.conn.queue(qname("mt"), durable=False, expires_ms=60000, prefetch=300)
        for i in range(3000):
            q.publish(b"t%d" % i)
        seen, lock = [], threading.Lock()

        def worker():
            while True:
                msgs = q.poll(64, 0.5)
                if not msgs:
                    return
                q.settle_many([m.delivery_id for m in msgs], ra.ACK)
                with lock:
                    seen.extend(m.body for m in msgs)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(sorted(seen), sorted(b"t%d" % i for i in range(3000)))


    def test_consumer_cancel(self):
        q = self.conn.queue(qname("cancel"), durable=False, expires_ms=60000)
        got = []
        c = q.consume(lambda m: got.append(m.body))
        q.publish(b"before")
        self.assertTrue(wait_until(lambda: got == [b"before"], 10), got)
        c.cancel(10)
        q.publish(b"after")
        time.sleep(0.5)
        self.assertEqual(got, [b"before"])
        with self.assertRaises(ra.InvalidArgument):
            c.cancel(1)   # a second cancel
        msgs = q.poll(10, 5.0)
        self.assertEqual([m.body for m in msgs], [b"after"])
        msgs[0].ack()

    def test_stop_start_and_defer(self):
        q = self.conn.queue(qname("ss"), durable=False, expires_ms=60000)
        got = []
        deferred = []

        def handler(m):
            got.append(m.body)
            if m.body == b"defer":
                deferred.append(m)
                return ra.DEFER
            return ra.ACK

        q.consume(handler, repeat=2)
        q.publish(b"one")
        self.assertTrue(wait_until(lambda: len(got) == 1, 10))
        q.stop(10)
        q.publish(b"two")
        time.sleep(0.5)
        self.assertEqual(got, [b"one"])
        q.start()
        self.assertTrue(wait_until(lambda: len(got) == 2, 10), got)
        q.publish(b"defer")
        self.assertTrue(wait_until(lambda: deferred, 10))
        self.assertEqual(q.stats().unsettled, 1)
        deferred[0].ack()
        self.assertTrue(wait_until(lambda: q.stats().unsettled == 0, 5))
        with self.assertRaises(ra.AlreadySettled):
            deferred[0].ack()

    def test_context_manager_closes(self):
        with ra.Connection(URI, FAST, wait=15) as conn:
            q = conn.queue(qname("cm"), durable=False, expires_ms=60000)
            for i in range(100):
                q.publish(b"m%d" % i)
        self.assertTrue(conn.closed)
        self.assertEqual(conn.close_report.unsent, 0)
        self.assertTrue(conn.close_report.ok)
        with self.assertRaises(ra.InvalidHandle):
            q.publish(b"after close")


class DroppedConnection(unittest.TestCase):
    def test_handler_survives_a_dropped_connection_object(self):
        import gc
        from resilient_amqp import _ffi
        got = []
        conn = ra.Connection(URI, FAST, wait=15)
        q = conn.queue(qname("drop"), durable=False, expires_ms=60000)
        q.consume(lambda m: got.append(m.body))
        handle, qh = conn.handle, q.handle
        del conn, q
        gc.collect()
        for i in range(50):
            self.assertEqual(_ffi.lib.amqp_publish(qh, b"x%d" % i, 2 + len(str(i))), 0)
        self.assertTrue(wait_until(lambda: len(got) == 50, 10), len(got))
        self.assertEqual(_ffi.lib.amqp_close_graceful(handle, 5000, None), 0)


if __name__ == "__main__":
    unittest.main()

"""A handler that raises must not ack: ctypes makes the callback return 0,
which is no amqp_disposition, so the message is requeued, redelivered and
counted in invalid_dispositions. Each message raises on its first delivery
and is acked when redelivered."""
import sys
import time

import ramqp

N = 20
queue_name = sys.argv[1].encode()
acked = set()


def on_delivery(d, userdata):
    body = ramqp.body_of(d)
    if not d.contents.redelivered:
        raise RuntimeError(f"handler failed on {body!r} (expected by the test)")
    acked.add(body)
    return ramqp.AMQP_ACK


consume_cb = ramqp.CONSUME_FN(on_delivery)
conn = ramqp.connect()
q = ramqp.open_queue(conn, queue_name)
for i in range(N):
    ramqp.check("amqp_publish", ramqp.lib.amqp_publish(q, b"t%d" % i, len(b"t%d" % i)))
ramqp.check("amqp_consume", ramqp.lib.amqp_consume(q, consume_cb, None, 2))
deadline = time.time() + 30
while time.time() < deadline:
    s = ramqp.stats(q)
    if len(acked) == N and s.acked == N:
        break
    time.sleep(0.05)
s = ramqp.stats(q)
print(f"acked {len(acked)} of {N}; stats: delivered={s.delivered} acked={s.acked} "
      f"requeued={s.requeued} invalid_dispositions={s.invalid_dispositions}", file=sys.stderr)
ramqp.check("amqp_close_graceful", ramqp.lib.amqp_close_graceful(conn, 10000, None))
ok = len(acked) == N and s.acked == N and s.invalid_dispositions == N and s.requeued == N
sys.exit(0 if ok else 1)

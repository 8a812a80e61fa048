"""The interpreter exits (falls off the end of the script, no close) while
consumer callbacks and the log callback are running in Python.

Python's finalization ends every thread that tries to take the GIL with
pthread_exit: a forced unwind through the library's callback frame. The
process must exit with status 0 and print no FATAL.

The log callback is turned off at atexit, before finalization: a ctypes
callback that *starts* after Py_Finalize crashes CPython whatever the library
does (see ramqp.set_log_callback_until_exit). The consumer callbacks are left
running: those in Python when finalization starts are what this test is about
(their ctypes trampoline is kept alive: ramqp.keep_for_process)."""
import ctypes
import os
import sys
import threading
import time

import ramqp

queue_name = sys.argv[1].encode()
inside = threading.Event()
delivered = [0]


def on_delivery(d, userdata):
    delivered[0] += 1
    inside.set()
    time.sleep(0.002)  # stay in Python: the exit finds callbacks running
    return ramqp.AMQP_ACK


def on_log(level, message, userdata):
    time.sleep(0.001)


# Called until the process ends (no close): kept past finalization.
consume_cb = ramqp.keep_for_process(ramqp.CONSUME_FN(on_delivery))
log_cb = ramqp.LOG_FN(on_log)
# Log lines keep coming through the exit; the callback is turned off at
# atexit (see set_log_callback_until_exit), the consumer callbacks are not.
ramqp.set_log_callback_until_exit(log_cb, ramqp.AMQP_LOG_DEBUG)

conn = ramqp.connect()
q = ramqp.open_queue(conn, queue_name)
# A connection that never connects keeps the log thread busy with failures.
ramqp.connect(b"amqp://guest:guest@127.0.0.1:9/%2f")
for i in range(3000):
    ramqp.check("amqp_publish", ramqp.lib.amqp_publish(q, b"m%d" % i, len(b"m%d" % i)))
ramqp.check("amqp_consume", ramqp.lib.amqp_consume(q, consume_cb, None, 4))
if not inside.wait(20):
    print("no delivery within 20 s", file=sys.stderr)
    sys.exit(3)
time.sleep(0.05)
print(f"exiting with callbacks running ({delivered[0]} delivered)", file=sys.stderr)
# Falls off the end: no close.

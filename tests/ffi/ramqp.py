"""ctypes binding of the few resilient-amqp calls the FFI exit tests use.

RA_LIB: path of libresilient_amqp.so. RESILIENT_AMQP_TEST_URI: the broker.
"""
import ctypes
import os

AMQP_OK = 0
AMQP_ACK = 0x5A01
AMQP_REJECT = 0x5A02
AMQP_REQUEUE = 0x5A03
AMQP_LOG_DEBUG = 4


class Delivery(ctypes.Structure):
    _fields_ = [
        ("body", ctypes.c_void_p),
        ("body_len", ctypes.c_size_t),
        ("delivery_tag", ctypes.c_uint64),
        ("redelivered", ctypes.c_bool),
        ("exchange", ctypes.c_void_p),
        ("exchange_len", ctypes.c_size_t),
        ("routing_key", ctypes.c_void_p),
        ("routing_key_len", ctypes.c_size_t),
        ("queue", ctypes.c_uint64),
        ("delivery_id", ctypes.c_uint64),
    ]


class QueueStats(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t)] + [
        (name, ctypes.c_uint64)
        for name in (
            "buffered buffered_bytes in_flight published confirmed resent nacked "
            "delivered acked rejected requeued released unsettled "
            "invalid_dispositions returns_ignored"
        ).split()
    ]


CONSUME_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(Delivery), ctypes.c_void_p)
LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

lib = ctypes.CDLL(os.environ["RA_LIB"])
U64 = ctypes.c_uint64
lib.amqp_connect.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(U64)]
lib.amqp_wait_connected.argtypes = [U64, ctypes.c_uint32]
lib.amqp_queue_open.argtypes = [
    U64, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(U64)
]
lib.amqp_publish.argtypes = [U64, ctypes.c_char_p, ctypes.c_size_t]
lib.amqp_consume.argtypes = [U64, CONSUME_FN, ctypes.c_void_p, ctypes.c_uint32]
lib.amqp_set_log_callback.argtypes = [LOG_FN, ctypes.c_int, ctypes.c_void_p]
lib.amqp_set_log_callback_ex.argtypes = [LOG_FN, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
lib.amqp_queue_get_stats.argtypes = [U64, ctypes.POINTER(QueueStats)]
lib.amqp_close_graceful.argtypes = [U64, ctypes.c_uint32, ctypes.POINTER(U64)]


_libc = ctypes.CDLL(None, use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def set_log_callback_until_exit(log_cb, level):
    """Installs `log_cb`, and at interpreter exit (atexit, before
    finalization) turns it off and waits, bounded, for the library's release
    (its last call returned). Any ctypes user must: CPython crashes a ctypes
    callback that starts after Py_Finalize (PyGILState_Ensure with no
    interpreter: the ramqp-log thread, about 1 exit in 300 here). The Python
    binding does the same."""
    import atexit
    import time
    sem = ctypes.create_string_buffer(64)  # sem_t is 32 bytes on x86-64 glibc
    _libc.sem_init(sem, 0, 0)
    post = ctypes.cast(_libc.sem_post, ctypes.c_void_p)
    check("amqp_set_log_callback_ex", lib.amqp_set_log_callback_ex(log_cb, level, sem, post))

    def off():
        lib.amqp_set_log_callback(LOG_FN(), 0, None)
        deadline = time.time() + 1.0
        ts = _Timespec(int(deadline), int((deadline % 1) * 1e9))
        _libc.sem_timedwait(sem, ctypes.byref(ts))  # ctypes releases the GIL meanwhile

    atexit.register(off)
    set_log_callback_until_exit.keep = (log_cb, sem)


def keep_for_process(callback):
    """Leaks a reference to a ctypes callback the library may call until the
    process ends (a consumer on a connection never closed): finalization
    would otherwise free its trampoline while a library thread calls it
    (a SIGSEGV at a freed address, about 1 exit in 400 here). The Python
    binding does the same at exit for what is still open."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(callback))
    return callback


def check(what, rc):
    if rc != AMQP_OK:
        buf = ctypes.create_string_buffer(512)
        lib.amqp_last_error(buf, 512)
        raise RuntimeError(f"{what}: {rc} {buf.value.decode()}")


def connect(uri=None, options=b"reconnect_delay_ms=10&reconnect_delay_max_ms=50"):
    conn = U64()
    uri = uri or os.environ["RESILIENT_AMQP_TEST_URI"].encode()
    check("amqp_connect", lib.amqp_connect(uri, options, ctypes.byref(conn)))
    return conn.value


def open_queue(conn, name, options=b"durable=false"):
    check("amqp_wait_connected", lib.amqp_wait_connected(conn, 15000))
    q = U64()
    check("amqp_queue_open", lib.amqp_queue_open(conn, name, None, None, options, ctypes.byref(q)))
    return q.value


def stats(q):
    s = QueueStats()
    s.size = ctypes.sizeof(QueueStats)
    check("amqp_queue_get_stats", lib.amqp_queue_get_stats(q, ctypes.byref(s)))
    return s


def body_of(d):
    return ctypes.string_at(d.contents.body, d.contents.body_len)

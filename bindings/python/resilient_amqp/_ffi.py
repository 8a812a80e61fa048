"""ctypes declarations of the C API (include/resilient_amqp.h) and the
loading of libresilient_amqp.so.

Where the library is found, first match wins:
  1. RESILIENT_AMQP_LIB      full path of the shared library
  2. RESILIENT_AMQP_LIB_DIR  a directory holding libresilient_amqp.so
  3. <sys.prefix>/lib, <sys.base_prefix>/lib, /usr/local/lib (install prefixes)
  4. the system loader (LD_LIBRARY_PATH, ldconfig's cache)

ctypes releases the GIL around every foreign call, so the calls that block
(wait_connected, queue_open, consume_stop, close, poll with a timeout) let
other Python threads, and the library's callback threads, run meanwhile.
"""
import ctypes
import ctypes.util
import os
import sys

LIB_NAME = "libresilient_amqp.so"

# amqp_result
OK = 0
ERR_INVALID_ARGUMENT = 1
ERR_INVALID_HANDLE = 2
ERR_BUFFER_FULL = 3
ERR_MESSAGE_TOO_LARGE = 4
ERR_CLOSED = 5
ERR_TIMEOUT = 6
ERR_NOT_CONNECTED = 7
ERR_BROKER = 8
ERR_INTERNAL = 9
ERR_STALE_DELIVERY = 10
ERR_ALREADY_SETTLED = 11

# amqp_disposition
ACK = 0x5A01
REJECT = 0x5A02
REQUEUE = 0x5A03
DEFER = 0x5A04

# amqp_message.present
PROP_CONTENT_TYPE = 0x8000
PROP_CONTENT_ENCODING = 0x4000
PROP_HEADERS = 0x2000
PROP_DELIVERY_MODE = 0x1000
PROP_PRIORITY = 0x0800
PROP_CORRELATION_ID = 0x0400
PROP_REPLY_TO = 0x0200
PROP_EXPIRATION = 0x0100
PROP_MESSAGE_ID = 0x0080
PROP_TIMESTAMP = 0x0040
PROP_TYPE = 0x0020
PROP_USER_ID = 0x0010
PROP_APP_ID = 0x0008

# amqp_value_kind
V_VOID, V_BOOL, V_INT, V_DOUBLE, V_STRING, V_BYTES, V_TIMESTAMP, V_TABLE, V_ARRAY = range(9)
V_INT8, V_UINT8, V_INT16, V_UINT16, V_INT32, V_UINT32, V_FLOAT, V_DECIMAL = range(9, 17)

U64 = ctypes.c_uint64
SIZE = ctypes.c_size_t
CHARP = ctypes.c_char_p
VOIDP = ctypes.c_void_p
U32 = ctypes.c_uint32
INT = ctypes.c_int


class Value(ctypes.Structure):
    _fields_ = [("kind", U32), ("integer", ctypes.c_int64), ("number", ctypes.c_double),
                ("bytes", VOIDP), ("len", SIZE)]


class Field(ctypes.Structure):
    _fields_ = [("key", CHARP), ("value", Value)]


class Message(ctypes.Structure):
    _fields_ = [
        ("size", SIZE),
        ("routing_key", CHARP),
        ("content_type", CHARP),
        ("content_encoding", CHARP),
        ("headers", ctypes.POINTER(Field)),
        ("header_count", SIZE),
        ("delivery_mode", ctypes.c_uint8),
        ("priority", ctypes.c_uint8),
        ("present", ctypes.c_uint16),
        ("correlation_id", CHARP),
        ("reply_to", CHARP),
        ("expiration", CHARP),
        ("message_id", CHARP),
        ("timestamp", U64),
        ("message_type", CHARP),
        ("user_id", CHARP),
        ("app_id", CHARP),
        ("tag", U64),
    ]


class Delivery(ctypes.Structure):
    _fields_ = [
        ("body", VOIDP),
        ("body_len", SIZE),
        ("delivery_tag", U64),
        ("redelivered", ctypes.c_bool),
        ("exchange", VOIDP),
        ("exchange_len", SIZE),
        ("routing_key", VOIDP),
        ("routing_key_len", SIZE),
        ("queue", U64),
        ("delivery_id", U64),
        ("message", ctypes.POINTER(Message)),
        ("properties", VOIDP),
        ("properties_len", SIZE),
    ]


_QUEUE_STAT_NAMES = (
    "buffered buffered_bytes in_flight published confirmed resent nacked delivered acked "
    "rejected requeued released unsettled invalid_dispositions returns_ignored failed "
    "expired refused queue_failed consume_refusals unroutable deduplicated spooled spool_restored "
    "spool_dropped_bytes"
).split()


class QueueStats(ctypes.Structure):
    _fields_ = [("size", SIZE)] + [(n, U64) for n in _QUEUE_STAT_NAMES]


class ConnectionStats(ctypes.Structure):
    _fields_ = [("size", SIZE), ("state", INT)] + [
        (n, U64) for n in ("connects failed_attempts consecutive_failures queues "
                           "protocol_errors consume_connects consume_failed_attempts").split()
    ]


class CloseReport(ctypes.Structure):
    _fields_ = [("size", SIZE), ("unsent", U64), ("unsettled", U64),
                ("callbacks_running", U64)]


class DeliveryReport(ctypes.Structure):
    _fields_ = [("size", SIZE), ("tag", U64), ("status", INT), ("attempts", U32),
                ("reply_code", U32), ("reason", CHARP)]


DELIVERY_P = ctypes.POINTER(Delivery)
CONSUME_FN = ctypes.CFUNCTYPE(INT, VOIDP, VOIDP)  # the delivery as an address
LOG_FN = ctypes.CFUNCTYPE(None, INT, CHARP, VOIDP)


def _candidates():
    path = os.environ.get("RESILIENT_AMQP_LIB")
    if path:
        yield path
        return
    d = os.environ.get("RESILIENT_AMQP_LIB_DIR")
    if d:
        yield os.path.join(d, LIB_NAME)
        return
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, "/usr/local")):
        p = os.path.join(prefix, "lib", LIB_NAME)
        if os.path.exists(p):
            yield p
    found = ctypes.util.find_library("resilient_amqp")
    if found:
        yield found
    yield LIB_NAME


def _load():
    errors = []
    for c in _candidates():
        try:
            return ctypes.CDLL(c)
        except OSError as e:
            errors.append(f"{c}: {e}")
    raise ImportError(
        "resilient_amqp: cannot load libresilient_amqp.so (set RESILIENT_AMQP_LIB to its "
        "path or RESILIENT_AMQP_LIB_DIR to its directory): " + "; ".join(errors))


lib = _load()

_P = ctypes.POINTER
_SIGS = {
    "amqp_connect": (INT, [CHARP, CHARP, _P(U64)]),
    "amqp_wait_connected_e": (INT, [U64, U32, CHARP, SIZE]),
    "amqp_close_ex_e": (INT, [U64, U32, _P(CloseReport), CHARP, SIZE]),
    "amqp_close_graceful": (INT, [U64, U32, _P(U64)]),
    "amqp_connection_get_stats": (INT, [U64, _P(ConnectionStats)]),
    "amqp_connection_state_str": (CHARP, [INT]),
    "amqp_queue_open_e": (INT, [U64, CHARP, CHARP, CHARP, CHARP, _P(U64), CHARP, SIZE]),
    "amqp_queue_get_stats": (INT, [U64, _P(QueueStats)]),
    "amqp_queue_name": (INT, [U64, CHARP, SIZE, _P(SIZE)]),
    "amqp_publish": (INT, [U64, CHARP, SIZE]),
    "amqp_publish_tagged": (INT, [U64, CHARP, SIZE, U64]),
    "amqp_publish_message": (INT, [U64, CHARP, SIZE, _P(Message)]),
    "amqp_publish_wait_e": (INT, [U64, CHARP, SIZE, U32, CHARP, SIZE]),
    "amqp_consume_ex": (INT, [U64, CONSUME_FN, VOIDP, VOIDP, U32, _P(U64)]),
    "amqp_consume_cancel_e": (INT, [U64, U64, U32, CHARP, SIZE]),
    "amqp_consume_stop_timeout_e": (INT, [U64, U32, CHARP, SIZE]),
    "amqp_consume_start": (INT, [U64]),
    "amqp_consume_pull": (INT, [U64, _P(INT)]),
    "amqp_consume_pull_cancel": (INT, [U64, U32]),
    "amqp_poll_e": (INT, [U64, VOIDP, SIZE, U32, _P(SIZE), CHARP, SIZE]),
    "amqp_poll_wake": (INT, [U64]),
    "amqp_settle": (INT, [U64, U64, INT]),
    "amqp_settle_many": (INT, [U64, _P(U64), SIZE, INT, VOIDP]),
    "amqp_delivery_free": (None, [VOIDP]),
    "amqp_delivery_free_many": (None, [VOIDP, SIZE]),
    "amqp_abi_version": (U32, []),
    "amqp_result_str": (CHARP, [INT]),
    "amqp_last_error": (SIZE, [CHARP, SIZE]),
    "amqp_set_log_callback": (INT, [LOG_FN, INT, VOIDP]),
    "amqp_set_log_callback_ex": (INT, [LOG_FN, INT, VOIDP, VOIDP]),
    # pull-mode delivery reports (newer libraries)
    "amqp_reports_pull": (INT, [U64, _P(INT)]),
    "amqp_poll_reports": (INT, [U64, VOIDP, SIZE, U32, _P(SIZE)]),
    "amqp_reports_free": (None, [VOIDP, SIZE]),
}

for _name, (_res, _args) in _SIGS.items():
    try:
        _f = getattr(lib, _name)
    except AttributeError:
        continue
    _f.restype = _res
    _f.argtypes = _args

HAS_REPORTS_PULL = hasattr(lib, "amqp_reports_pull") and hasattr(lib, "amqp_poll_reports")

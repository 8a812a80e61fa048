"""The synchronous API: Connection, Queue, Message, stats, logging."""
import atexit
import ctypes
import dataclasses
import enum
import logging
import threading

from . import _ffi
from ._codec import _s, _string_at, build_message, cstr, option_string, table_of
from ._ffi import lib
from .errors import errbuf, raise_e, raise_last, ERRCAP

log = logging.getLogger("resilient_amqp")


class Disposition(enum.IntEnum):
    """What a handler decided (return it from a consume handler, or pass it to
    Message.settle). Returning None (or True) means ACK."""
    ACK = _ffi.ACK
    REJECT = _ffi.REJECT
    REQUEUE = _ffi.REQUEUE
    DEFER = _ffi.DEFER


ACK, REJECT, REQUEUE, DEFER = Disposition.ACK, Disposition.REJECT, Disposition.REQUEUE, Disposition.DEFER


# ---- logging -----------------------------------------------------------------------

_LEVEL_TO_PY = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG}
_log_lock = threading.Lock()
_log_cb = None      # the installed ctypes callback, kept alive for the process
_log_level = None
_log_released = None  # the semaphore the library posts after the installed callback's last call
_log_sems = []        # every one handed out, kept alive: the library posts each one later
_libc = ctypes.CDLL(None, use_errno=True)
_libc.sem_post.restype = ctypes.c_int
_SEM_POST = ctypes.cast(_libc.sem_post, ctypes.c_void_p)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _stop_logging_at_exit():
    """At interpreter exit (atexit, before finalization): the log thread must
    not call into Python once the interpreter is gone (CPython crashes in
    PyGILState_Ensure then). Turn the callback off and wait, bounded, for the
    library's release: its call in progress, if any, has returned."""
    global _log_released, _log_level
    with _log_lock:
        sem, _log_released = _log_released, None
        if _log_level:
            lib.amqp_set_log_callback(_ffi.LOG_FN(), 0, None)
            _log_level = 0
    if sem is None:
        return
    import time
    deadline = time.time() + 1.0
    ts = _Timespec(int(deadline), int((deadline % 1) * 1e9))
    _libc.sem_timedwait(sem, ctypes.byref(ts))   # ctypes releases the GIL meanwhile


def _on_log(level, message, _userdata):
    # Runs on the library's "ramqp-log" thread; logging is thread-safe.
    try:
        log.log(_LEVEL_TO_PY.get(level, logging.INFO), "%s",
                message.decode("utf-8", "replace") if message else "")
    except BaseException:  # never let anything unwind into the library
        pass


def _c_level(pylevel):
    if pylevel <= logging.DEBUG:
        return 4
    if pylevel <= logging.INFO:
        return 3
    if pylevel <= logging.WARNING:
        return 2
    if pylevel <= logging.CRITICAL:
        return 1
    return 0


def set_log_level(level=None):
    """Routes the library's log lines into the `resilient_amqp` logger from
    `level` up (a logging level; default: that logger's effective level).
    Called with the effective level by the first Connection; call it again
    after changing the logger's level. logging.CRITICAL + 1 turns it off."""
    global _log_cb, _log_level
    if level is None:
        level = log.getEffectiveLevel()
    c = _c_level(level)
    with _log_lock:
        if _log_cb is None:
            _log_cb = _ffi.LOG_FN(_on_log)
        if c == _log_level:
            return
        global _log_released
        if c == 0:
            rc = lib.amqp_set_log_callback(_ffi.LOG_FN(), 0, None)
            sem = None
        else:
            # A semaphore per installation, posted by the library (sem_post
            # as the release) once this callback's last call returned.
            sem = ctypes.create_string_buffer(64)
            _libc.sem_init(sem, 0, 0)
            _log_sems.append(sem)
            rc = lib.amqp_set_log_callback_ex(_log_cb, c, sem, _SEM_POST)
        if rc != _ffi.OK:
            raise_last(rc)
        _log_released = sem
        _log_level = c


atexit.register(_stop_logging_at_exit)


def _ensure_logging():
    if _log_level is None:
        set_log_level()


# ---- stats -------------------------------------------------------------------------

def _fields(ctype):
    return [n for n, _ in ctype._fields_ if n != "size"]


@dataclasses.dataclass(frozen=True)
class QueueStats:
    buffered: int = 0
    buffered_bytes: int = 0
    in_flight: int = 0
    published: int = 0
    confirmed: int = 0
    resent: int = 0
    nacked: int = 0
    delivered: int = 0
    acked: int = 0
    rejected: int = 0
    requeued: int = 0
    released: int = 0
    unsettled: int = 0
    invalid_dispositions: int = 0
    returns_ignored: int = 0
    failed: int = 0
    expired: int = 0
    refused: int = 0
    queue_failed: int = 0
    consume_refusals: int = 0
    unroutable: int = 0
    deduplicated: int = 0
    spooled: int = 0
    spool_restored: int = 0
    spool_dropped_bytes: int = 0
    handler_errors: int = 0   # the binding's: handlers that raised

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ConnectionStats:
    state: str = ""
    connects: int = 0
    failed_attempts: int = 0
    consecutive_failures: int = 0
    queues: int = 0
    protocol_errors: int = 0
    consume_connects: int = 0
    consume_failed_attempts: int = 0

    def as_dict(self):
        return dataclasses.asdict(self)


# ---- deliveries --------------------------------------------------------------------

class Message:
    """A received message, copied out of the library (valid after its handler
    returned). Settle it by returning a Disposition from a handler, or with
    ack() / reject() / requeue() (any thread; pull mode must settle each)."""

    __slots__ = ("body", "delivery_id", "delivery_tag", "redelivered", "exchange",
                 "routing_key", "content_type", "content_encoding", "headers",
                 "delivery_mode", "priority", "correlation_id", "reply_to", "expiration",
                 "message_id", "timestamp", "type", "user_id", "app_id", "_queue")

    @property
    def text(self):
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    def settle(self, disposition):
        q = self._queue
        q._settle_one(self.delivery_id, disposition)

    def ack(self):
        self.settle(_ffi.ACK)

    def reject(self):
        self.settle(_ffi.REJECT)

    def requeue(self):
        self.settle(_ffi.REQUEUE)

    def __repr__(self):
        return (f"<Message id={self.delivery_id} len={len(self.body)} "
                f"redelivered={self.redelivered}>")


_Delivery_from = _ffi.Delivery.from_address
_P_MSG = ctypes.POINTER(_ffi.Message)


def message_from(addr, queue):
    """Copies the amqp_delivery at `addr` into a Message."""
    d = _Delivery_from(addr)
    m = Message()
    n = d.body_len
    m.body = _string_at(d.body, n) if n else b""
    m.delivery_id = d.delivery_id
    m.delivery_tag = d.delivery_tag
    m.redelivered = d.redelivered
    n = d.exchange_len
    m.exchange = _string_at(d.exchange, n).decode("utf-8", "replace") if n else ""
    n = d.routing_key_len
    m.routing_key = _string_at(d.routing_key, n).decode("utf-8", "replace") if n else ""
    m._queue = queue
    p = d.message
    pr = p.contents.present if p else 0
    if pr & ~_ffi.PROP_DELIVERY_MODE:
        c = p.contents
        m.content_type = _s(c.content_type) if pr & _ffi.PROP_CONTENT_TYPE else None
        m.content_encoding = _s(c.content_encoding) if pr & _ffi.PROP_CONTENT_ENCODING else None
        m.headers = table_of(ctypes.cast(c.headers, ctypes.c_void_p).value, c.header_count) \
            if pr & _ffi.PROP_HEADERS else None
        m.delivery_mode = c.delivery_mode if pr & _ffi.PROP_DELIVERY_MODE else None
        m.priority = c.priority if pr & _ffi.PROP_PRIORITY else None
        m.correlation_id = _s(c.correlation_id) if pr & _ffi.PROP_CORRELATION_ID else None
        m.reply_to = _s(c.reply_to) if pr & _ffi.PROP_REPLY_TO else None
        m.expiration = _s(c.expiration) if pr & _ffi.PROP_EXPIRATION else None
        m.message_id = _s(c.message_id) if pr & _ffi.PROP_MESSAGE_ID else None
        m.timestamp = c.timestamp if pr & _ffi.PROP_TIMESTAMP else None
        m.type = _s(c.message_type) if pr & _ffi.PROP_TYPE else None
        m.user_id = _s(c.user_id) if pr & _ffi.PROP_USER_ID else None
        m.app_id = _s(c.app_id) if pr & _ffi.PROP_APP_ID else None
    else:
        m.delivery_mode = p.contents.delivery_mode if pr else None
        m.content_type = m.content_encoding = m.headers = m.priority = None
        m.correlation_id = m.reply_to = m.expiration = m.message_id = None
        m.timestamp = m.type = m.user_id = m.app_id = None
    return m


# ---- queue -------------------------------------------------------------------------

_PROP_KEYS = frozenset(("routing_key", "content_type", "content_encoding", "headers",
                        "delivery_mode", "priority", "correlation_id", "reply_to",
                        "expiration", "message_id", "timestamp", "message_type", "user_id",
                        "app_id", "tag"))


def _body(body):
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, bytes):
        return body
    return bytes(body)


class Consumer:
    """A consumer set started by Queue.consume; cancel() ends it."""

    def __init__(self, queue, consumer_id):
        self.queue = queue
        self.id = consumer_id

    def cancel(self, timeout=30.0):
        buf = errbuf()
        rc = lib.amqp_consume_cancel_e(self.queue.handle, self.id, int(timeout * 1000), buf, ERRCAP)
        if rc != _ffi.OK:
            raise_e(rc, buf)


class Queue:
    """A queue opened on a Connection (one channel). Its methods may be
    called from any thread. Handles become invalid once the connection is
    closed (InvalidHandle)."""

    def __init__(self, connection, handle, name, on_error):
        self.connection = connection
        self.handle = handle
        self.declared_name = name
        self.on_error = on_error
        self._errors = 0
        self._errors_lock = threading.Lock()
        self._pull_started = False

    # publishing
    def publish(self, body, *, wait=None, **props):
        """Copies `body` (bytes, bytearray, memoryview or str: UTF-8) into the
        buffer and returns at once. Properties as keyword arguments:
        content_type, content_encoding, correlation_id, reply_to, expiration,
        message_id, timestamp (int or datetime), message_type, user_id, app_id,
        priority, delivery_mode, headers (dict: str, bytes, int, float, bool,
        None, datetime, Decimal, dict, list, or Typed(kind, value)),
        routing_key (this message's own), tag (handed back in reports).
        `wait` (seconds): when the buffer is full, wait up to this long for
        room instead of raising BufferFull."""
        b = _body(body)
        if props:
            unknown = set(props) - _PROP_KEYS
            if unknown:
                raise TypeError(f"unknown publish argument(s): {', '.join(sorted(unknown))}")
            if wait is not None:
                raise TypeError("wait= is only for publishes without properties")
            keep = []
            m = build_message(props, keep)
            rc = lib.amqp_publish_message(self.handle, b, len(b), ctypes.byref(m))
            if rc != _ffi.OK:
                raise_last(rc)
            return
        if wait is not None:
            rc = lib.amqp_publish(self.handle, b, len(b))   # fast path: room in the buffer
            if rc == _ffi.OK:
                return
            if rc != _ffi.ERR_BUFFER_FULL:
                raise_last(rc)
            buf = errbuf()
            rc = lib.amqp_publish_wait_e(self.handle, b, len(b), int(wait * 1000), buf, ERRCAP)
            if rc != _ffi.OK:
                raise_e(rc, buf)
            return
        rc = lib.amqp_publish(self.handle, b, len(b))
        if rc != _ffi.OK:
            raise_last(rc)

    # consuming with callbacks
    def _count_error(self):
        with self._errors_lock:
            self._errors += 1

    @property
    def handler_errors(self):
        """Handler calls (callback or asyncio) that raised."""
        return self._errors

    def consume(self, handler, repeat=1):
        """Calls `handler(message)` for each delivery on `repeat` library
        threads ("ramqp-consumer"; at most `repeat` at once). Its return value
        settles the delivery: None/True or ACK acks, REJECT, REQUEUE, DEFER
        (settle later with message.ack() etc.). A handler that raises never
        acks: the delivery is requeued (rejected if the queue was opened with
        on_error="reject"), the exception logged on the `resilient_amqp`
        logger and counted in stats().handler_errors. Returns a Consumer."""
        on_fail = _ffi.REJECT if self.on_error == "reject" else _ffi.REQUEUE
        queue = self
        valid = frozenset((_ffi.ACK, _ffi.REJECT, _ffi.REQUEUE, _ffi.DEFER))

        def trampoline(dp, _userdata):
            try:
                msg = message_from(dp, queue)
                r = handler(msg)
                if r is None or r is True:
                    return _ffi.ACK
                if r in valid:
                    return int(r)
                raise TypeError(f"handler returned {r!r}, not a Disposition")
            except BaseException:  # noqa: B902 - nothing may unwind into the library
                try:
                    queue._count_error()
                    log.exception("resilient_amqp: handler raised on queue %s; message %s",
                                  queue.declared_name,
                                  "rejected" if on_fail == _ffi.REJECT else "requeued")
                except BaseException:
                    pass
                return on_fail

        cb = _ffi.CONSUME_FN(trampoline)
        cid = ctypes.c_uint64()
        rc = lib.amqp_consume_ex(self.handle, cb, None, None, repeat, ctypes.byref(cid))
        if rc != _ffi.OK:
            raise_last(rc)
        _alive.setdefault(self.connection.handle, []).append(cb)  # see _alive
        return Consumer(self, cid.value)

    def stop(self, timeout=30.0):
        """Pauses every consumer (callbacks and pull): when it returns no
        callback runs; prefetched deliveries go back. 0 begins and returns."""
        buf = errbuf()
        rc = lib.amqp_consume_stop_timeout_e(self.handle, int(timeout * 1000), buf, ERRCAP)
        if rc != _ffi.OK:
            raise_e(rc, buf)

    def start(self):
        """Resumes the consumers after stop()."""
        rc = lib.amqp_consume_start(self.handle)
        if rc != _ffi.OK:
            raise_last(rc)

    # pull mode
    def consume_pull(self):
        """Starts the queue's pull consumer (once) and returns a new
        notification file descriptor (the caller's to close)."""
        fd = ctypes.c_int(-1)
        rc = lib.amqp_consume_pull(self.handle, ctypes.byref(fd))
        if rc != _ffi.OK:
            raise_last(rc)
        self._pull_started = True
        return fd.value

    def consume_pull_cancel(self, timeout=5.0):
        """Ends the pull consumer alone (amqp_consume_pull_cancel): what
        still waits goes back to the broker, polled messages stay
        settleable, callback consumers go on; the next poll() or
        consume_pull() starts a new one. Waits up to `timeout` seconds for
        the broker's cancel-ok (0: does not wait). Blocking."""
        rc = lib.amqp_consume_pull_cancel(self.handle, int(timeout * 1000))
        self._pull_started = False
        if rc != _ffi.OK:
            raise_last(rc)

    def poll(self, max=256, timeout=1.0):
        """Pull mode: up to `max` waiting messages, waiting up to `timeout`
        seconds for the first ([] when none came). Starts the pull consumer
        on first use. Each message must be settled (ack/reject/requeue or
        settle_many). Raises Closed once the connection closed. Blocking:
        never call it with a timeout from an event loop thread."""
        if not self._pull_started:
            import os
            os.close(self.consume_pull())
        out = (ctypes.c_void_p * max)()   # per call: several threads may poll at once
        n = ctypes.c_size_t(0)
        buf = errbuf()
        rc = lib.amqp_poll_e(self.handle, out, max, int(timeout * 1000), ctypes.byref(n), buf, ERRCAP)
        if rc == _ffi.ERR_TIMEOUT:
            return []
        if rc != _ffi.OK:
            raise_e(rc, buf)
        return self._take(out, n.value)

    def _take(self, out, count):
        msgs = []
        try:
            for i in range(count):
                msgs.append(message_from(out[i], self))
        finally:
            lib.amqp_delivery_free_many(out, count)  # the batch in one call
        return msgs

    def settle_many(self, ids, disposition=_ffi.ACK):
        """Settles deliveries by id (Message.delivery_id) in one call. Raises
        the first failure (e.g. StaleDelivery: the broker redelivers it)."""
        n = len(ids)
        if not n:
            return
        arr = (ctypes.c_uint64 * n)(*ids)
        rc = lib.amqp_settle_many(self.handle, arr, n, int(disposition), None)
        if rc != _ffi.OK:
            raise_last(rc)

    def _settle_one(self, delivery_id, disposition):
        rc = lib.amqp_settle(self.handle, delivery_id, int(disposition))
        if rc != _ffi.OK:
            raise_last(rc)

    def wake(self):
        """Ends a blocked poll() at once (it returns [])."""
        lib.amqp_poll_wake(self.handle)

    # introspection
    @property
    def name(self):
        """The queue's name at the broker (a server-named queue's current one)."""
        n = ctypes.c_size_t(0)
        buf = ctypes.create_string_buffer(256)
        rc = lib.amqp_queue_name(self.handle, buf, 256, ctypes.byref(n))
        if rc != _ffi.OK:
            raise_last(rc)
        return buf.value.decode("utf-8", "replace")

    def stats(self):
        s = _ffi.QueueStats()
        s.size = ctypes.sizeof(s)
        rc = lib.amqp_queue_get_stats(self.handle, ctypes.byref(s))
        if rc != _ffi.OK:
            raise_last(rc)
        return QueueStats(**{n: getattr(s, n) for n in _fields(_ffi.QueueStats)},
                          handler_errors=self._errors)

    def __repr__(self):
        return f"<Queue {self.declared_name!r} handle={self.handle}>"


# ---- connection --------------------------------------------------------------------

# The ctypes callback objects of each open connection, by handle: the library
# may call them until the connection is closed, so they live here (not on the
# Connection object, which the application may drop without closing) and go
# only after a close that returned OK. A close that timed out keeps them for
# the process (a callback may still run).
_alive = {}
_graveyard = []


def _keep_callbacks_at_exit():
    """At interpreter exit (atexit, before finalization): the library may call
    the callbacks of connections still open until the process ends, so
    finalization must not free their ctypes trampolines (a library thread
    would jump to freed memory: tests/ffi/py_exit.py saw it about 1 exit in
    400). A reference to each is leaked on purpose."""
    for kept in [*_alive.values(), _graveyard]:
        for cb in kept:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(cb))


atexit.register(_keep_callbacks_at_exit)


@dataclasses.dataclass(frozen=True)
class CloseReport:
    ok: bool
    unsent: int
    unsettled: int
    callbacks_running: int


class Connection:
    """A connection to RabbitMQ that reconnects by itself.

        with Connection("amqp://guest:guest@localhost:5672/%2f") as conn:
            q = conn.queue("orders", durable=False)
            q.publish(b"hello")
        # leaving the block closes gracefully (waits for the confirms)

    `options`: dict or "k=v&k=v" (reconnect_delay_ms, max_reconnects,
    max_buffered, ...). `wait` (seconds, default 0): wait this long for the
    first connect (Timeout if not connected by then; a broker that is down
    is otherwise no error). `close_timeout`: used by the with block."""

    def __init__(self, uri, options=None, *, wait=0, close_timeout=5.0):
        _ensure_logging()
        h = ctypes.c_uint64()
        rc = lib.amqp_connect(cstr(uri), option_string(options), ctypes.byref(h))
        if rc != _ffi.OK:
            raise_last(rc)
        self.handle = h.value
        self.close_timeout = close_timeout
        self.closed = False
        self.close_report = None
        self._queues = []
        if wait:
            try:
                self.wait_connected(wait)
            except BaseException:
                self.close(0)
                raise

    def wait_connected(self, timeout=30.0):
        buf = errbuf()
        rc = lib.amqp_wait_connected_e(self.handle, int(timeout * 1000), buf, ERRCAP)
        if rc != _ffi.OK:
            raise_e(rc, buf)

    def queue(self, name, exchange=None, routing_key=None, *, on_error="requeue", **options):
        """Opens (declares) a queue: options as keyword arguments (durable,
        persistent, prefetch, exchange_type, queue_type, exclusive, ...; keys
        with dots via **{"arg.x-queue-mode": "str:lazy"}). on_error:
        "requeue" or "reject", what a handler that raised does."""
        if on_error not in ("requeue", "reject"):
            raise ValueError("on_error must be 'requeue' or 'reject'")
        out = ctypes.c_uint64()
        buf = errbuf()
        rc = lib.amqp_queue_open_e(self.handle, cstr(name), cstr(exchange), cstr(routing_key),
                                   option_string(options), ctypes.byref(out), buf, ERRCAP)
        if rc != _ffi.OK:
            raise_e(rc, buf)
        q = Queue(self, out.value, name, on_error)
        self._queues.append(q)
        return q

    def stats(self):
        s = _ffi.ConnectionStats()
        s.size = ctypes.sizeof(s)
        rc = lib.amqp_connection_get_stats(self.handle, ctypes.byref(s))
        if rc != _ffi.OK:
            raise_last(rc)
        d = {n: getattr(s, n) for n in _fields(_ffi.ConnectionStats)}
        d["state"] = lib.amqp_connection_state_str(s.state).decode()
        return ConnectionStats(**d)

    def close(self, timeout=None):
        """Graceful close: refuses new publishes, stops consumers, waits up
        to `timeout` seconds for every confirm and running handler, then frees
        the connection and its queues. Returns the number of messages not
        confirmed (0 = everything reached the broker); close_report has the
        details. A second close returns 0."""
        if self.closed:
            return 0
        if timeout is None:
            timeout = self.close_timeout
        rep = _ffi.CloseReport()
        rep.size = ctypes.sizeof(rep)
        buf = errbuf()
        rc = lib.amqp_close_ex_e(self.handle, int(timeout * 1000), ctypes.byref(rep), buf, ERRCAP)
        self.closed = True
        if rc not in (_ffi.OK, _ffi.ERR_TIMEOUT):
            raise_e(rc, buf)
        self.close_report = CloseReport(rc == _ffi.OK, rep.unsent, rep.unsettled,
                                        rep.callbacks_running)
        kept = _alive.pop(self.handle, [])
        if rc != _ffi.OK:
            _graveyard.extend(kept)  # a callback may still run
            log.warning("resilient_amqp: close timed out: %d unsent, %d unsettled, "
                        "%d callbacks running", rep.unsent, rep.unsettled, rep.callbacks_running)
        return rep.unsent

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"<Connection handle={self.handle}{' closed' if self.closed else ''}>"

"""asyncio API on the library's pull mode: no Python code of this module
ever runs on a library thread. Deliveries wait inside the library; the
notification descriptor of amqp_consume_pull is watched with
loop.add_reader, batches are taken with amqp_poll (timeout 0, never
blocking the loop) and settled with amqp_settle_many. Calls that block
(connect wait, queue declare, stop, close) run in the loop's executor.

    async with AsyncConnection(uri) as conn:
        q = await conn.queue("jobs", durable=False)
        await q.publish_confirmed(b"job 1")       # resolves once the broker confirmed
        async def handle(msg):
            await do_work(msg.body)               # raising requeues the message
        await q.consume_async(handle)             # runs until the connection closes
"""
import asyncio
import ctypes
import functools
import inspect
import itertools
import os

from . import _ffi
from .client import Connection, log
from .errors import (AlreadySettled, Closed, InvalidHandle, PublishFailed, StaleDelivery, errbuf,
                     raise_e, raise_last, ERRCAP)

lib = _ffi.lib

REPORT_STATUS = ("CONFIRMED", "NACKED", "REFUSED", "TOO_LARGE", "EXPIRED", "UNSENT", "UNROUTABLE")


class _FdWaiter:
    """Waits for a level-triggered descriptor: the reader is installed only
    while someone waits, so a descriptor that stays readable while we are
    busy elsewhere never spins the loop."""

    def __init__(self, loop, fd):
        self.loop = loop
        self.fd = fd
        self.waiters = []
        self.closed = False

    def _ready(self):
        self.loop.remove_reader(self.fd)
        ws, self.waiters = self.waiters, []
        for w in ws:
            if not w.done():
                w.set_result(None)

    async def wait(self):
        if self.closed:
            raise Closed(_ffi.ERR_CLOSED, "the pull consumer was closed")
        fut = self.loop.create_future()
        if not self.waiters:
            self.loop.add_reader(self.fd, self._ready)
        self.waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self.waiters:
                self.waiters.remove(fut)
                if not self.waiters and not self.closed:
                    self.loop.remove_reader(self.fd)

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.fd)
        for w in self.waiters:
            if not w.done():
                w.set_exception(Closed(_ffi.ERR_CLOSED, "the connection was closed"))
        self.waiters = []
        os.close(self.fd)


class AsyncQueue:
    """A queue of an AsyncConnection. `queue` is the synchronous Queue
    underneath (publish() is non-blocking and may be called directly)."""

    def __init__(self, aconn, queue):
        self.connection = aconn
        self.queue = queue
        self._loop = aconn._loop
        self._pull = None
        self._pull_starting = None
        self._out = (ctypes.c_void_p * 256)()
        self._count = ctypes.c_size_t(0)
        self._errbuf = errbuf()
        # delivery reports (publish_confirmed)
        self._reports = None
        self._rep_out = None
        self._futures = {}
        self._tags = itertools.count(1)

    # ---- publishing --------------------------------------------------------------

    def publish(self, body, **props):
        """Buffers the message and returns at once (never blocks); see
        Queue.publish for the properties."""
        self.queue.publish(body, **props)

    def _start_reports(self):
        if self._reports is not None:
            return
        if not _ffi.HAS_REPORTS_PULL:
            raise NotImplementedError(
                "publish_confirmed needs amqp_reports_pull (a newer libresilient_amqp.so)")
        fd = ctypes.c_int(-1)
        rc = lib.amqp_reports_pull(self.queue.handle, ctypes.byref(fd))
        if rc != _ffi.OK:
            raise_last(rc)
        self._reports = fd.value
        self._rep_out = (ctypes.c_void_p * 256)()
        self._loop.add_reader(self._reports, self._drain_reports)

    def _drain_reports(self):
        out = self._rep_out
        n = ctypes.c_size_t(0)
        while True:
            rc = lib.amqp_poll_reports(self.queue.handle, out, 256, 0, ctypes.byref(n))
            if rc != _ffi.OK:
                if rc != _ffi.ERR_TIMEOUT:   # closed: the descriptor stays readable
                    self._stop_reports()
                return
            count = n.value
            try:
                for i in range(count):
                    r = _ffi.DeliveryReport.from_address(out[i])
                    fut = self._futures.pop(r.tag, None)
                    if fut is None or fut.done():
                        continue
                    if r.status == 0:
                        fut.set_result(r.attempts)
                    else:
                        status = REPORT_STATUS[r.status] if r.status < len(REPORT_STATUS) \
                            else f"STATUS_{r.status}"
                        reason = r.reason.decode("utf-8", "replace") if r.reason else ""
                        fut.set_exception(PublishFailed(status, reason, r.reply_code, r.attempts))
            finally:
                lib.amqp_reports_free(out, count)
            if count < 256:
                return

    def _stop_reports(self):
        if self._reports is not None and self._reports >= 0:
            self._loop.remove_reader(self._reports)
            os.close(self._reports)
            self._reports = -1

    def _fail_pending(self, why):
        futs, self._futures = self._futures, {}
        for fut in futs.values():
            if not fut.done():
                fut.set_exception(PublishFailed("UNSENT", why))

    def publish_confirmed(self, body, **props):
        """Publishes and returns an awaitable that resolves (to the number of
        attempts) once the broker confirmed the message, or raises
        PublishFailed with the status (NACKED, REFUSED, TOO_LARGE, EXPIRED,
        UNSENT, UNROUTABLE) and the broker's reason. The publish itself
        happens now, before the first await (errors such as BufferFull are
        raised here). Switches the queue's reports to pull mode."""
        self._start_reports()
        tag = next(self._tags)
        fut = self._loop.create_future()
        self._futures[tag] = fut
        try:
            if props:
                self.queue.publish(body, tag=tag, **props)
            else:
                b = body.encode() if isinstance(body, str) else bytes(body)
                rc = lib.amqp_publish_tagged(self.queue.handle, b, len(b), tag)
                if rc != _ffi.OK:
                    raise_last(rc)
        except BaseException:
            del self._futures[tag]
            raise
        return fut

    # ---- consuming ---------------------------------------------------------------

    async def _ensure_pull(self):
        if self._pull is not None:
            return self._pull
        if self._pull_starting is None:
            # amqp_consume_pull waits for the broker's consume-ok: off the loop.
            self._pull_starting = self._loop.run_in_executor(None, self.queue.consume_pull)
        try:
            fd = await asyncio.shield(self._pull_starting)
        except BaseException:
            f = self._pull_starting
            if f is not None and f.done() and not f.cancelled() and f.exception() is not None:
                self._pull_starting = None   # refused: a later call tries again
            raise
        if self._pull is None:
            self._pull = _FdWaiter(self._loop, fd)
        return self._pull

    def poll_nowait(self, max=256):
        """Takes up to `max` waiting messages without waiting ([] if none);
        raises Closed once the connection closed. Each must be settled."""
        if max > len(self._out):
            self._out = (ctypes.c_void_p * max)()
        out = self._out
        n = self._count
        rc = lib.amqp_poll_e(self.queue.handle, out, max, 0, ctypes.byref(n),
                             self._errbuf, ERRCAP)
        if rc == _ffi.OK:
            return self.queue._take(out, n.value)
        if rc == _ffi.ERR_TIMEOUT:
            return []
        if rc == _ffi.ERR_INVALID_HANDLE:
            raise Closed(_ffi.ERR_CLOSED, "the connection was closed")
        raise_e(rc, self._errbuf)

    async def get_batch(self, max=256):
        """Waits (without blocking the loop) for at least one message and
        returns up to `max`. Raises Closed once the connection closed."""
        pull = await self._ensure_pull()
        while True:
            msgs = self.poll_nowait(max)
            if msgs:
                return msgs
            await pull.wait()

    async def messages(self, batch=256):
        """Async iterator of messages: `async for msg in q.messages():`.
        Settle every message (msg.ack(), msg.reject(), msg.requeue(); they
        never block); the iteration ends when the connection closes. Leaving
        the loop early requeues the messages taken but not yet handed out."""
        pending = []
        try:
            while True:
                try:
                    pending = await self.get_batch(batch)
                except Closed:
                    return
                pending.reverse()
                while pending:
                    yield pending.pop()
        finally:
            if pending:
                self._settle(self.queue, [m.delivery_id for m in pending], _ffi.REQUEUE)

    @staticmethod
    def _settle(queue, ids, disposition):
        if not ids:
            return
        try:
            queue.settle_many(ids, disposition)
        except (StaleDelivery, AlreadySettled, InvalidHandle, Closed):
            pass  # the broker redelivers what was not applied; handler-settled ones
        except Exception:
            log.exception("resilient_amqp: settling %d deliveries failed", len(ids))

    async def consume_async(self, handler, concurrency=1, batch=256):
        """Calls `await handler(msg)` (a coroutine function, or a plain
        function) for each message, on the event loop, up to `concurrency`
        at once; returns when the connection closes (or when cancelled: the
        messages taken and not handled are requeued). The return value
        settles the message: None/True/ACK acks, REJECT, REQUEUE; DEFER
        leaves it to the handler (msg.ack() later). A handler that raises
        never acks: requeued (rejected with on_error="reject"), logged,
        counted in stats().handler_errors."""
        q = self.queue
        on_fail = _ffi.REJECT if q.on_error == "reject" else _ffi.REQUEUE
        sem = asyncio.Semaphore(concurrency) if concurrency > 1 else None
        undecided = set()
        decided = {_ffi.ACK: [], _ffi.REJECT: [], _ffi.REQUEUE: []}

        async def run(msg):
            try:
                r = handler(msg)
                if inspect.isawaitable(r):
                    r = await r
                if r is None or r is True:
                    r = _ffi.ACK
                elif r not in (_ffi.ACK, _ffi.REJECT, _ffi.REQUEUE, _ffi.DEFER):
                    raise TypeError(f"handler returned {r!r}, not a Disposition")
            except asyncio.CancelledError:
                raise
            except BaseException:
                q._count_error()
                log.exception("resilient_amqp: async handler raised on queue %s; message %s",
                              q.declared_name, "rejected" if on_fail == _ffi.REJECT else "requeued")
                r = on_fail
            undecided.discard(msg.delivery_id)
            if r != _ffi.DEFER:
                decided[int(r)].append(msg.delivery_id)

        async def run_limited(msg):
            async with sem:
                await run(msg)

        def flush():
            for disp, ids in decided.items():
                if ids:
                    self._settle(q, ids, disp)
                    ids.clear()

        try:
            while True:
                try:
                    msgs = await self.get_batch(batch)
                except Closed:
                    return
                undecided.update(m.delivery_id for m in msgs)
                if sem is None:
                    for m in msgs:
                        await run(m)
                else:
                    await asyncio.gather(*(run_limited(m) for m in msgs))
                flush()
        finally:
            flush()
            if undecided:
                self._settle(q, list(undecided), _ffi.REQUEUE)

    # ---- control -----------------------------------------------------------------

    async def cancel_pull(self, timeout=5.0):
        """Ends the queue's pull consumer (what messages() and consume_async
        read): the messages the library prefetched go back to the broker;
        the next get_batch starts a new one. Call it after those loops ended
        (a task cancelled). Waits off the loop."""
        pull, self._pull, self._pull_starting = self._pull, None, None
        try:
            await self._loop.run_in_executor(
                None, functools.partial(self.queue.consume_pull_cancel, timeout))
        finally:
            if pull is not None:
                pull.close()

    async def stop(self, timeout=30.0):
        """Pauses the queue's consumers (pull and callbacks); waits off the loop."""
        await self._loop.run_in_executor(None, functools.partial(self.queue.stop, timeout))

    def start(self):
        self.queue.start()

    def stats(self):
        return self.queue.stats()

    @property
    def handler_errors(self):
        return self.queue.handler_errors

    @property
    def name(self):
        return self.queue.name

    def _closed(self):
        if self._pull is not None:
            self._pull.close()
        self._stop_reports()
        self._fail_pending("not confirmed before the connection closed (unsent)")


class AsyncConnection:
    """Connection for asyncio. The constructor never blocks; `await
    conn.wait_connected()` or `async with` (which waits up to `wait`
    seconds when given) as you like.

        async with AsyncConnection(uri, wait=10) as conn:
            q = await conn.queue("jobs", durable=False)
    """

    def __init__(self, uri, options=None, *, wait=0, close_timeout=5.0):
        self._loop = asyncio.get_running_loop()
        self.sync = Connection(uri, options, wait=0, close_timeout=close_timeout)
        self._wait = wait
        self._queues = []

    @property
    def closed(self):
        return self.sync.closed

    @property
    def close_report(self):
        return self.sync.close_report

    async def wait_connected(self, timeout=30.0):
        await self._loop.run_in_executor(None, self.sync.wait_connected, timeout)

    async def queue(self, name, exchange=None, routing_key=None, **options):
        """Opens a queue (the declares run off the loop); see Connection.queue."""
        q = await self._loop.run_in_executor(
            None, functools.partial(self.sync.queue, name, exchange, routing_key, **options))
        aq = AsyncQueue(self, q)
        self._queues.append(aq)
        return aq

    def stats(self):
        return self.sync.stats()

    async def close(self, timeout=None):
        """Graceful close off the loop (the loop goes on settling deliveries
        and reading delivery reports meanwhile). Returns the unsent count;
        publish_confirmed awaitables still pending then fail with UNSENT."""
        if self.sync.closed:
            return 0
        if timeout is None:
            timeout = self.sync.close_timeout
        # First let the publish_confirmed awaitables settle on the loop: a
        # report not polled when the library's close returns cannot be
        # polled any more (the queue handle is gone).
        pending = [f for aq in self._queues for f in aq._futures.values()]
        start = self._loop.time()
        if pending:
            for aq in self._queues:
                if aq._reports is not None and aq._reports >= 0:
                    aq._drain_reports()
            await asyncio.wait(pending, timeout=timeout)
        left = max(0.0, timeout - (self._loop.time() - start))
        try:
            return await self._loop.run_in_executor(None, self.sync.close, left)
        finally:
            for aq in self._queues:
                aq._closed()

    async def __aenter__(self):
        if self._wait:
            await self.wait_connected(self._wait)
        return self

    async def __aexit__(self, *exc):
        await self.close()
        return False

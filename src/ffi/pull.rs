//! Pull mode: deliveries wait inside the library until amqp_poll takes them.

use super::consume::amqp_delivery;
use super::delivery::OwnedDelivery;
use super::{amqp_queue_handle, amqp_result, lookup_queue, out_param};
use crate::error::Error;
use std::ffi::{c_char, c_int};
use std::os::fd::IntoRawFd;
use std::time::Duration;

/// Starts the queue's pull consumer: one broker consumer (prefetch from the
/// queue's options) whose deliveries wait inside the library, at most
/// `prefetch` of them, until amqp_poll takes them, instead of going to a
/// callback. One pull consumer per queue: a second call keeps the first
/// (AMQP_OK, no second broker consumer) and only hands out another
/// descriptor. It may run beside amqp_consume callbacks on the same queue.
/// Works while disconnected (starts on connect) and restarts after every
/// reconnect; amqp_consume_stop / amqp_consume_start pause and resume it.
///
/// `notify_fd` (may be NULL) receives a NEW file descriptor on every call,
/// which the caller owns and closes (after removing it from its event loop);
/// closing it never disturbs the library, which signals through its own
/// descriptor of the same pipe. Only wait on it for readability; never read
/// or write it. It is O_CLOEXEC and O_NONBLOCK and level-triggered: readable
/// while at least one delivery waits (amqp_poll keeps it so), and for good
/// once the connection is closed or failed, so an event loop wakes and
/// learns AMQP_ERR_CLOSED from amqp_poll. Readiness can be spurious: on
/// readable, call amqp_poll with timeout_ms 0 until AMQP_ERR_TIMEOUT. A child
/// after fork must not use it.
///
/// The pull consumer runs on the consume link and is confirmed by the
/// broker as amqp_consume_ex's are: while connected, the call that adds it
/// waits for the consume-ok; AMQP_ERR_BROKER (the broker's text in
/// amqp_last_error; no descriptor returned, nothing left registered: a later
/// call tries again) when refused, AMQP_ERR_TIMEOUT after 30 s without an
/// answer.
///
/// Errors: AMQP_ERR_CLOSED after a close began or the connection failed for
/// good; AMQP_ERR_INTERNAL when no descriptor could be created. Any thread.
/// Blocks: while connected, the call that adds the pull consumer until the
/// broker's consume-ok (a round trip), at most 30 s; later calls briefly.
#[no_mangle]
pub unsafe extern "C" fn amqp_consume_pull(
    queue: amqp_queue_handle,
    notify_fd: *mut c_int,
) -> amqp_result {
    // SAFETY: the caller's promise for `notify_fd` (above).
    ffi_boundary!({ unsafe { consume_pull(queue, notify_fd) } })
}

/// (ABI 4) amqp_consume_pull, and on failure the error message also goes
/// to `errbuf` (like snprintf: at most `errcap` bytes, NUL-terminated when
/// `errcap` > 0; untouched on success), e.g. the broker's text of a refused
/// consumer, for bindings that call it on a worker thread (Node's pool).
/// Blocks: as amqp_consume_pull, at most 30 s.
#[no_mangle]
pub unsafe extern "C" fn amqp_consume_pull_e(
    queue: amqp_queue_handle,
    notify_fd: *mut c_int,
    errbuf: *mut c_char,
    errcap: usize,
) -> amqp_result {
    ffi_boundary!(errbuf errbuf, errcap, {
        // SAFETY: as in amqp_consume_pull.
        unsafe { consume_pull(queue, notify_fd) }
    })
}

/// (ABI 6) Ends the queue's pull consumer (amqp_consume_pull): its broker
/// consumer is cancelled, and the deliveries still waiting to be polled go
/// back to the broker once it confirmed the cancel. Polled deliveries stay
/// valid and must still be settled and freed. The queue's callback
/// consumers go on (amqp_consume_stop pauses them all). Descriptors from
/// amqp_consume_pull stay open and usable; amqp_poll finds nothing new
/// (AMQP_ERR_TIMEOUT) until a later amqp_consume_pull starts a new pull
/// consumer. `timeout_ms` 0 begins and returns; otherwise it waits up to
/// `timeout_ms` for the broker's cancel-ok: AMQP_ERR_TIMEOUT when none came
/// (the cancel goes on). AMQP_ERR_INVALID_ARGUMENT when the queue has no
/// pull consumer (a second cancel included); AMQP_ERR_CLOSED after a close
/// began or the connection failed for good. Any thread.
/// Blocks: up to timeout_ms (while disconnected, briefly).
#[no_mangle]
pub extern "C" fn amqp_consume_pull_cancel(
    queue: amqp_queue_handle,
    timeout_ms: u32,
) -> amqp_result {
    ffi_boundary!({
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms)));
        lookup_queue(queue)?.queue.consumers.cancel_pull(timeout)
    })
}

/// amqp_consume_pull's body.
///
/// # Safety
/// `notify_fd` is NULL or a writable int.
unsafe fn consume_pull(queue: amqp_queue_handle, notify_fd: *mut c_int) -> crate::Result<()> {
    let entry = lookup_queue(queue)?;
    entry.conn.check_open()?;
    let fd = entry
        .conn
        .conn
        .consume_pull(&entry.queue, !notify_fd.is_null())?;
    if let Some(fd) = fd {
        // SAFETY: non-NULL (we asked for a descriptor only then), and the
        // caller promises an int we may write.
        unsafe { *notify_fd = fd.into_raw_fd() };
    }
    Ok(())
}

/// Takes up to `max` waiting deliveries of the queue's pull consumer: fills
/// `out` (a caller-provided array of `max` pointers) and `*count`, waiting
/// up to `timeout_ms` for the first (0: never waits).
///
/// AMQP_OK with `*count` >= 1; AMQP_ERR_TIMEOUT with `*count` = 0 when none
/// arrived in time or amqp_poll_wake woke it (no error text is formatted:
/// amqp_last_error is then empty); AMQP_ERR_CLOSED once the connection is
/// closing, closed or failed for good; AMQP_ERR_INVALID_ARGUMENT on a queue
/// without a pull consumer, `out` or `count` NULL, or `max` 0. `*count` is
/// written (0) on every failure too.
///
/// Each delivery (the struct, body and everything it points to) is the
/// caller's until amqp_delivery_free, whatever settle, stop, reconnect or
/// close do. Every polled delivery must be settled by its `delivery_id`
/// with amqp_settle / amqp_settle_many (before or after its free): until
/// then it counts against the prefetch and in the queue's `unsettled`.
/// After a reconnect, settling one from before gives
/// AMQP_ERR_STALE_DELIVERY (nothing applied; the broker redelivers it).
/// Deliveries that waited when their channel was lost, or while the queue
/// was stopped, are never handed out (the broker has them again).
///
/// Any thread, several at once (each gets different deliveries). Blocks the
/// calling thread up to `timeout_ms`; amqp_poll_wake, a close or a failure
/// ends the wait at once. Never call it with a timeout from an event loop's
/// thread: use the descriptor and timeout_ms 0 there.
#[no_mangle]
pub unsafe extern "C" fn amqp_poll(
    queue: amqp_queue_handle,
    out: *mut *const amqp_delivery,
    max: usize,
    timeout_ms: u32,
    count: *mut usize,
) -> amqp_result {
    // SAFETY: the caller's promises for `out`, `max` and `count` (above).
    ffi_boundary!({ unsafe { poll(queue, out, max, timeout_ms, count) } })
}

/// amqp_poll, and on failure the error message also goes to `errbuf` (like
/// snprintf: at most `errcap` bytes, NUL-terminated when `errcap` > 0;
/// untouched on success; an empty string for AMQP_ERR_TIMEOUT), for
/// bindings that poll on a worker thread (Node's asynchronous calls) or from
/// Go. Blocks: up to timeout_ms, as amqp_poll.
#[no_mangle]
pub unsafe extern "C" fn amqp_poll_e(
    queue: amqp_queue_handle,
    out: *mut *const amqp_delivery,
    max: usize,
    timeout_ms: u32,
    count: *mut usize,
    errbuf: *mut c_char,
    errcap: usize,
) -> amqp_result {
    ffi_boundary!(errbuf errbuf, errcap, {
        // SAFETY: as in amqp_poll.
        unsafe { poll(queue, out, max, timeout_ms, count) }
    })
}

/// amqp_poll's body.
///
/// # Safety
/// `out` is NULL or `max` writable pointers; `count` NULL or a writable
/// size_t.
unsafe fn poll(
    queue: amqp_queue_handle,
    out: *mut *const amqp_delivery,
    max: usize,
    timeout_ms: u32,
    count: *mut usize,
) -> crate::Result<()> {
    // SAFETY: the caller's promise for `count` (above).
    let count = unsafe { batch_args(out, max, count) }?;
    let entry = lookup_queue(queue)?;
    let handle = entry.handle;
    let timeout = Duration::from_millis(u64::from(timeout_ms));
    let mut n = 0;
    entry.queue.consumers.poll(max, timeout, |p| {
        // SAFETY: `out` is non-NULL and the caller promises `max` writable
        // pointers; the core hands out at most `max`, so n < max.
        unsafe { out.add(n).write(OwnedDelivery::polled(p, handle)) };
        n += 1;
    })?;
    *count = n;
    Ok(())
}

/// Makes every amqp_poll of the queue blocked right now return
/// AMQP_ERR_TIMEOUT at once (cancellation: a Go context, Ctrl-C in Python).
/// When none is blocked, the wake is kept for the next amqp_poll that would
/// wait (so a wake racing with the start of a poll is not lost); any return
/// of amqp_poll uses it up. Close and failure wake pollers by themselves
/// (with AMQP_ERR_CLOSED). AMQP_ERR_INVALID_ARGUMENT on a queue without a
/// pull consumer. Any thread (a signal handler excepted); never blocks.
#[no_mangle]
pub extern "C" fn amqp_poll_wake(queue: amqp_queue_handle) -> amqp_result {
    ffi_boundary!({ lookup_queue(queue)?.queue.consumers.poll_wake() })
}

/// The argument checks of a batch poll (amqp_poll, amqp_poll_reports):
/// `*count` is written 0 first (every failure leaves it so), then `out` must
/// not be NULL nor `max` 0. Returns `count`.
///
/// # Safety
/// `count` is NULL or a writable size_t.
pub(super) unsafe fn batch_args<'a, T>(
    out: *mut T,
    max: usize,
    count: *mut usize,
) -> crate::Result<&'a mut usize> {
    // SAFETY: NULL or a size_t the caller lets us write (the header).
    let count = unsafe { out_param(count, "count") }?;
    *count = 0;
    if out.is_null() {
        return Err(Error::invalid("out (the array of pointers) is NULL"));
    }
    if max == 0 {
        return Err(Error::invalid("max is 0"));
    }
    Ok(count)
}

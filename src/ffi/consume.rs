//! Consuming: callbacks on library-owned threads, stop and start.

use super::message::amqp_message;
use super::message_view::MessageView;
use super::{amqp_queue_handle, amqp_result, lookup_queue, UserData};
use crate::client::{Callback, DeliveryView, Disposition, Release};
use crate::error::Error;
use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;
use std::time::Duration;

/// What the callback decided. The values are ones no accident produces: 0,
/// 1 (`true`), small error codes and garbage are none of them, and any value
/// that is not one of these is applied as the queue's `invalid_disposition`
/// (requeue by default), counted in `invalid_dispositions` and logged at
/// WARN: a handler that threw and made its FFI return 0 loses nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum amqp_disposition {
    /// Done: basic.ack.
    AMQP_ACK = 0x5A01,
    /// Failed: basic.reject requeue=false (dead-letters if configured).
    AMQP_REJECT = 0x5A02,
    /// Try again later: basic.reject requeue=true.
    AMQP_REQUEUE = 0x5A03,
    /// Settled later with amqp_settle (any thread); until then it counts
    /// against the prefetch and in `unsettled`.
    AMQP_DEFER = 0x5A04,
}

/// The core's disposition for a value from C.
fn disposition_of(raw: amqp_disposition_raw) -> Disposition {
    match raw {
        0x5A01 => Disposition::Ack,
        0x5A02 => Disposition::Reject,
        0x5A03 => Disposition::Requeue,
        0x5A04 => Disposition::Defer,
        other => Disposition::Invalid(i64::from(other)),
    }
}

/// An `amqp_disposition` as returned by C code, where any int may arrive.
pub type amqp_disposition_raw = c_int;

/// One delivery. Every pointer is valid only during the callback; in a
/// delivery from amqp_delivery_dup or amqp_poll, until amqp_delivery_free.
#[repr(C)]
pub struct amqp_delivery {
    /// The message body (NULL or dangling when body_len is 0).
    pub body: *const u8,
    /// Its length in bytes.
    pub body_len: usize,
    /// The broker's tag on the channel the delivery came from.
    pub delivery_tag: u64,
    /// The broker delivered this message before.
    pub redelivered: bool,
    /// Not NUL-terminated: use exchange_len.
    pub exchange: *const c_char,
    /// Length of exchange in bytes (0: the default exchange).
    pub exchange_len: usize,
    /// Not NUL-terminated: use routing_key_len.
    pub routing_key: *const c_char,
    /// Length of routing_key in bytes.
    pub routing_key_len: usize,
    /// The queue it was consumed from.
    pub queue: amqp_queue_handle,
    /// Identifies this delivery for amqp_settle (ABI 2): unique in the
    /// process for its life, never 0, below 2^53, never a broker tag.
    pub delivery_id: u64,
    /// Its properties and headers (ABI 3): never NULL, valid as long as the
    /// delivery (see amqp_message).
    pub message: *const amqp_message,
    /// The content header's property bytes as received (flags, then
    /// fields: AMQP 0-9-1 basic properties), for forwarding or a decoder of
    /// your own (ABI 3). Empty if they did not parse (then `message` has
    /// none either; logged once at WARN).
    pub properties: *const u8,
    pub properties_len: usize,
}

impl amqp_delivery {
    /// The C view of a delivery, pointing into `d`'s bytes and `msg`
    /// (valid while they are): the one place the fields are filled, for
    /// callbacks and polled deliveries alike.
    pub(super) fn borrowing(
        d: &DeliveryView<'_>,
        msg: &MessageView,
        queue: amqp_queue_handle,
    ) -> amqp_delivery {
        amqp_delivery {
            body: d.body.as_ptr(),
            body_len: d.body.len(),
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            exchange: d.exchange.as_ptr() as *const c_char,
            exchange_len: d.exchange.len(),
            routing_key: d.routing_key.as_ptr() as *const c_char,
            routing_key_len: d.routing_key.len(),
            queue,
            delivery_id: d.delivery_id,
            message: &msg.message,
            properties: d.properties.as_ptr(),
            properties_len: d.properties.len(),
        }
    }
}

/// The consume callback. Runs on a library-owned thread named
/// "ramqp-consumer" (never the caller's, never the network thread): one of
/// the connection's pool of callback threads, at most min(64, consumers)
/// (consumers: the connection's broker consumers with callbacks, `repeat`
/// per amqp_consume call). Each broker consumer's deliveries come in order,
/// one at a time, never on two threads at once (a consumer may move between
/// pool threads between deliveries); up to `repeat` run at once per
/// amqp_consume call. Up to 64 consumers, each can have a thread; beyond,
/// a callback that takes long holds one of the 64 threads, and 64 such
/// callbacks at once hold up every other consumer of the connection until
/// one returns (the pool takes up to 32 deliveries of a consumer per turn,
/// then the next waiting consumer). With the connection option
/// inline_delivery=true (the default on plain TCP) the pool has one thread
/// more (at most 65), and the pool's threads also read the consume link:
/// the thread its bytes wake runs the callback, then reads again; should a
/// callback keep it 5 ms without reading, another pool thread reads. It may call amqp_publish,
/// amqp_consume_stop, amqp_settle and amqp_close_graceful. A return value
/// that is no amqp_disposition is applied as the queue's
/// `invalid_disposition` (requeue by default): nothing is lost.
///
/// It must not throw (a C++ exception that escapes it ends the process, as
/// an uncaught exception does). Exit: the process may exit at any time,
/// without closing, while callbacks run; nothing waits for them. If the
/// application's runtime ends the thread inside the callback (pthread_exit
/// or thread cancellation: Python does so at interpreter exit to every
/// thread that wants the GIL), the unwind passes through the library and
/// ends that thread alone: the delivery in that callback stays unsettled
/// (never acked; amqp_settle by its delivery_id still applies) and the
/// broker redelivers it when the channel closes, at the latest at exit;
/// no callback of that consumer set (that amqp_consume call) starts again,
/// on any thread (its queued and later deliveries go back to the broker;
/// its set's release does not run); stop and close do not wait for it;
/// other sets go on (the pool starts a thread in its place). Python ctypes:
/// keep the callback object alive past finalization (Py_IncRef it) if the
/// process may exit with the connection open, or finalization frees its
/// trampoline while a pool thread calls it.
pub type amqp_consume_fn = Option<
    unsafe extern "C-unwind" fn(
        delivery: *const amqp_delivery,
        userdata: *mut c_void,
    ) -> amqp_disposition_raw,
>;

/// Called once when a consumer set (amqp_consume_ex) has ended, with its
/// userdata: on a library thread, after the last callback that could see
/// userdata returned, when no callback of the set can start any more; free
/// userdata here. It may call any function of the library; no API call
/// waits for it.
pub type amqp_release_fn = Option<unsafe extern "C-unwind" fn(userdata: *mut c_void)>;

/// amqp_consume_ex with no release and no consumer id (the consumers end
/// with amqp_close_graceful). Errors as amqp_consume_ex (AMQP_ERR_BROKER
/// when the broker refuses the consumer). Blocks: while connected, until
/// the broker's consume-ok (a round trip; the first consumer of a
/// connection also opens its consume link), at most 30 s.
#[no_mangle]
pub unsafe extern "C" fn amqp_consume(
    queue: amqp_queue_handle,
    cb: amqp_consume_fn,
    userdata: *mut c_void,
    repeat: u32,
) -> amqp_result {
    ffi_boundary!({ consume_ex(queue, cb, userdata, None, repeat).map(drop) })
}

/// Starts a consumer set: `repeat` broker consumers (0 means 1) on the queue,
/// each delivering to `cb` in order on the connection's pool of library
/// threads (see amqp_consume_fn: at most min(64, consumers) threads);
/// callbacks may run concurrently up to `repeat`. The returned disposition is applied on the
/// channel the delivery came from; a delivery whose channel died is never
/// acked on a new one (the broker redelivers it). Consumers restart after
/// every reconnect; while disconnected they start on connect. Calling it
/// again adds another set.
/// `release` (may be NULL) is called exactly once, on a library thread,
/// after the last callback that can see `userdata` returned and none can
/// start: after amqp_consume_cancel of this set, or after close (also when
/// the close timed out with a callback still running: release then comes
/// after that callback returns). Never called when this fails.
/// `consumer_id` (may be NULL) receives the set's id for
/// amqp_consume_cancel: unique in the process, never 0, below 2^53.
/// Consumers run on the connection's consume link, a second TCP connection
/// opened with the first consumer of any of its queues, so they keep
/// receiving while the broker blocks publishers (memory or disk alarm).
/// While connected, it waits for the broker's consume-ok: AMQP_ERR_BROKER
/// with the broker's text in amqp_last_error when the broker refuses (403
/// another client's exclusive consumer or no read permission, 404, 405),
/// AMQP_ERR_TIMEOUT when it does not answer in 30 s; in both cases nothing
/// stays registered and `release` is never called. Publishing on the queue
/// is unaffected either way. While disconnected it returns AMQP_OK and the
/// set starts on connect (also while the queue is stopped: on
/// amqp_consume_start). A refusal later (after a reconnect, or
/// amqp_consume_start) is logged at ERROR once per incident, counted in the
/// queue's `consume_refusals` and retried with backoff up to
/// reconnect_delay_max_ms. AMQP_ERR_CLOSED once a close began.
/// Blocks: while connected, until the broker's consume-ok (a round trip;
/// the first consumer of a connection also opens its consume link), at
/// most 30 s.
#[no_mangle]
pub unsafe extern "C" fn amqp_consume_ex(
    queue: amqp_queue_handle,
    cb: amqp_consume_fn,
    userdata: *mut c_void,
    release: amqp_release_fn,
    repeat: u32,
    consumer_id: *mut u64,
) -> amqp_result {
    // SAFETY: the caller's promises for `consumer_id` (above).
    ffi_boundary!({ unsafe { consume_ex_out(queue, cb, userdata, release, repeat, consumer_id) } })
}

/// (ABI 4) amqp_consume_ex, and on failure the error message also goes to
/// `errbuf` (like snprintf: at most `errcap` bytes, NUL-terminated when
/// `errcap` > 0; untouched on success), e.g. the broker's text of a
/// refused consumer, for bindings that call it on a worker thread.
/// amqp_consume is this with `release` and `consumer_id` NULL.
/// Blocks: as amqp_consume_ex, at most 30 s.
#[no_mangle]
pub unsafe extern "C" fn amqp_consume_ex_e(
    queue: amqp_queue_handle,
    cb: amqp_consume_fn,
    userdata: *mut c_void,
    release: amqp_release_fn,
    repeat: u32,
    consumer_id: *mut u64,
    errbuf: *mut c_char,
    errcap: usize,
) -> amqp_result {
    ffi_boundary!(errbuf errbuf, errcap, {
        // SAFETY: as in amqp_consume_ex.
        unsafe { consume_ex_out(queue, cb, userdata, release, repeat, consumer_id) }
    })
}

/// amqp_consume_ex's body.
///
/// # Safety
/// `consumer_id` is NULL or a writable uint64_t for this call.
unsafe fn consume_ex_out(
    queue: amqp_queue_handle,
    cb: amqp_consume_fn,
    userdata: *mut c_void,
    release: amqp_release_fn,
    repeat: u32,
    consumer_id: *mut u64,
) -> crate::Result<()> {
    // SAFETY: the caller promises `consumer_id` is NULL or a writable
    // uint64_t for this call; written only on success.
    let out = unsafe { consumer_id.as_mut() };
    let user = UserData(userdata);
    let release = release.map(|release| {
        Box::new(move || {
            let user = user;
            // SAFETY: the application's non-NULL release function, called
            // once on a library thread with its userdata, as the header says.
            unsafe { release(user.0) }
        }) as Release
    });
    let id = consume_ex(queue, cb, userdata, release, repeat)?;
    if let Some(out) = out {
        *out = id;
    }
    Ok(())
}

fn consume_ex(
    queue: amqp_queue_handle,
    cb: amqp_consume_fn,
    userdata: *mut c_void,
    release: Option<Release>,
    repeat: u32,
) -> crate::Result<u64> {
    let Some(cb) = cb else {
        return Err(Error::invalid("cb is NULL"));
    };
    let entry = lookup_queue(queue)?;
    entry.conn.check_open()?;
    let user = UserData(userdata);
    let handle = entry.handle;
    let callback: Callback = Arc::new(move |d: &DeliveryView<'_>| {
        let msg = MessageView::new(d.properties);
        let delivery = amqp_delivery::borrowing(d, &msg, handle);
        let user = &user;
        // Not inside catch_unwind (nothing of ours here can panic): a
        // forced unwind out of `cb` must pass (see amqp_consume_fn).
        // SAFETY: `cb` is the application's non-NULL function of this
        // type; the header lets it run on this library thread with this
        // userdata, and `delivery` (and the bytes it points into) stays
        // valid for the whole call, which is all the header promises.
        disposition_of(unsafe { cb(&delivery, user.0) })
    });
    entry
        .conn
        .conn
        .consume(&entry.queue, callback, repeat, release)
}

/// Ends one consumer set (amqp_consume_ex's `consumer_id`): its broker
/// consumers are cancelled, its prefetched deliveries not yet handed to a
/// callback go back to the broker, no callback of it starts any more; the
/// queue's other sets go on. Deferred deliveries stay settleable.
/// `timeout_ms` 0 begins and returns (the set's release reports the end);
/// otherwise it waits up to `timeout_ms` for the set's running callbacks:
/// AMQP_ERR_TIMEOUT if one still runs then (it ends later; release follows
/// it). Called from one of the set's own callbacks it does not wait for
/// that one. AMQP_ERR_INVALID_ARGUMENT for an id that is not a live set of
/// this queue (a second cancel included). Blocks: up to timeout_ms.
#[no_mangle]
pub extern "C" fn amqp_consume_cancel(
    queue: amqp_queue_handle,
    consumer_id: u64,
    timeout_ms: u32,
) -> amqp_result {
    ffi_boundary!({ consume_cancel(queue, consumer_id, timeout_ms) })
}

/// amqp_consume_cancel, and on failure the error message also goes to
/// `errbuf` (like snprintf: at most `errcap` bytes, NUL-terminated when
/// `errcap` > 0; untouched on success). Blocks: up to timeout_ms.
#[no_mangle]
pub unsafe extern "C" fn amqp_consume_cancel_e(
    queue: amqp_queue_handle,
    consumer_id: u64,
    timeout_ms: u32,
    errbuf: *mut c_char,
    errcap: usize,
) -> amqp_result {
    ffi_boundary!(errbuf errbuf, errcap, { consume_cancel(queue, consumer_id, timeout_ms) })
}

fn consume_cancel(queue: amqp_queue_handle, id: u64, timeout_ms: u32) -> crate::Result<()> {
    let timeout = (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms)));
    lookup_queue(queue)?.queue.consumers.cancel(id, timeout)
}

/// Pauses all consumers of the queue. When it returns AMQP_OK, no callback
/// of the queue is running or will start (called from inside one of its
/// callbacks, it does not wait for that one); prefetched deliveries not yet
/// handed to a callback go back to the broker. Deferred deliveries stay
/// settleable. It waits at most 30 s: AMQP_ERR_TIMEOUT when a callback still
/// runs then (none starts after it). amqp_consume_stop_timeout takes your
/// bound. Blocks: up to 30 s.
#[no_mangle]
pub extern "C" fn amqp_consume_stop(queue: amqp_queue_handle) -> amqp_result {
    ffi_boundary!({ lookup_queue(queue)?.queue.consumers.stop() })
}

/// amqp_consume_stop waiting at most `timeout_ms` (AMQP_ERR_TIMEOUT if a
/// callback still runs then); 0 begins the stop and returns at once (no
/// callback starts after this call, but one may still be running).
/// Blocks: up to timeout_ms.
#[no_mangle]
pub extern "C" fn amqp_consume_stop_timeout(
    queue: amqp_queue_handle,
    timeout_ms: u32,
) -> amqp_result {
    ffi_boundary!({ consume_stop_timeout(queue, timeout_ms) })
}

/// amqp_consume_stop_timeout, and on failure the error message also goes
/// to `errbuf` (like snprintf: at most `errcap` bytes, NUL-terminated when
/// `errcap` > 0; untouched on success). Blocks: up to timeout_ms.
#[no_mangle]
pub unsafe extern "C" fn amqp_consume_stop_timeout_e(
    queue: amqp_queue_handle,
    timeout_ms: u32,
    errbuf: *mut c_char,
    errcap: usize,
) -> amqp_result {
    ffi_boundary!(errbuf errbuf, errcap, { consume_stop_timeout(queue, timeout_ms) })
}

fn consume_stop_timeout(queue: amqp_queue_handle, timeout_ms: u32) -> crate::Result<()> {
    let timeout = Duration::from_millis(u64::from(timeout_ms));
    lookup_queue(queue)?.queue.consumers.stop_timeout(timeout)
}

/// Resumes the queue's consumers after amqp_consume_stop (cancelled sets
/// stay ended). Blocks: never.
#[no_mangle]
pub extern "C" fn amqp_consume_start(queue: amqp_queue_handle) -> amqp_result {
    ffi_boundary!({
        let entry = lookup_queue(queue)?;
        entry.conn.check_open()?;
        entry.queue.consumers.start();
        Ok(())
    })
}

/// Settles a delivery by its `delivery_id`: AMQP_ACK, AMQP_REJECT or
/// AMQP_REQUEUE, from any thread (inside a callback too), after its callback
/// returned AMQP_DEFER or even while the callback still runs (its return
/// value is then ignored, and counted in `returns_ignored`). Never blocks,
/// never waits for a callback: AMQP_OK means queued on the delivery's own
/// channel (sent within a few ms). Blocks: never. Errors: AMQP_ERR_ALREADY_SETTLED (a second
/// settle), AMQP_ERR_STALE_DELIVERY (its channel is gone: nothing applied, the
/// broker redelivers it), AMQP_ERR_INVALID_ARGUMENT (an unknown id, an id of
/// another queue, or AMQP_DEFER / another value as `disposition`).
#[no_mangle]
pub extern "C" fn amqp_settle(
    queue: amqp_queue_handle,
    delivery_id: u64,
    disposition: amqp_disposition_raw,
) -> amqp_result {
    ffi_boundary!({
        let entry = lookup_queue(queue)?;
        entry
            .queue
            .consumers
            .settle(delivery_id, disposition_of(disposition))
    })
}

/// amqp_settle for `n` ids with one disposition; `results` (NULL or `n`
/// entries) gets each id's result. Returns AMQP_OK when all succeeded, else
/// the first failure (its message in amqp_last_error). Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_settle_many(
    queue: amqp_queue_handle,
    ids: *const u64,
    n: usize,
    disposition: amqp_disposition_raw,
    results: *mut amqp_result,
) -> amqp_result {
    ffi_boundary!({
        if n > 0 && ids.is_null() {
            return Err(Error::invalid("ids is NULL"));
        }
        let entry = lookup_queue(queue)?;
        let ids: &[u64] = if n == 0 {
            &[]
        } else {
            // SAFETY: non-NULL, and the caller promises `n` readable u64s.
            unsafe { std::slice::from_raw_parts(ids, n) }
        };
        let disposition = disposition_of(disposition);
        let mut first_error = None;
        for (i, &id) in ids.iter().enumerate() {
            let r = entry.queue.consumers.settle(id, disposition);
            if !results.is_null() {
                let code = match &r {
                    Ok(()) => amqp_result::AMQP_OK,
                    Err(e) => super::errors::code_of(e.kind),
                };
                // SAFETY: non-NULL, and the caller promises `n` writable
                // entries; i < n.
                unsafe { results.add(i).write(code) };
            }
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    })
}

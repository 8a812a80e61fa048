//! Publishing: a copy into the queue's buffer, never a network wait
//! (`amqp_publish_wait` may wait for buffer room, never for the network
//! itself). At low rates the calling thread also writes the message to the
//! socket itself, without waiting: the socket is non-blocking.

use super::{amqp_queue_handle, amqp_result, lookup_queue};
use crate::error::Error;
use std::ffi::{c_char, c_void};
use std::time::Duration;

/// Copies `len` bytes of `body` into the queue's buffer and returns at once.
/// Messages leave in publish order; each stays buffered until the broker
/// confirmed it and is sent again after a reconnect (at-least-once).
/// `len` 0 is a valid empty message (`body` may then be NULL).
/// Errors: AMQP_ERR_INVALID_ARGUMENT (NULL body with len > 0),
/// AMQP_ERR_INVALID_HANDLE, AMQP_ERR_MESSAGE_TOO_LARGE (over
/// max_message_bytes, over the queue's max_buffered_bytes, or over the
/// broker's max_message_size once a refusal named it), AMQP_ERR_BUFFER_FULL
/// (nothing stored), AMQP_ERR_CLOSED (closing, or failed for good),
/// AMQP_ERR_BROKER (the broker refuses the queue: see amqp_last_error).
/// Callable from any thread, including a consume callback. Blocks: never
/// (with few messages in flight it writes the message to the socket itself,
/// a non-blocking write of a few microseconds, instead of waking the
/// library's thread for it; on plain TCP, with 4 or more in flight, it
/// first reads the confirms waiting on the socket, non-blocking, and
/// applies them: their reports go to the report thread as usual).
#[no_mangle]
pub unsafe extern "C" fn amqp_publish(
    queue: amqp_queue_handle,
    body: *const c_void,
    len: usize,
) -> amqp_result {
    ffi_boundary!({
        // SAFETY: the caller promises `body` points to `len` bytes, valid
        // for this call; the slice does not outlive it (publish copies).
        let bytes = unsafe { body_slice(body, len) }?;
        lookup_queue(queue)?.queue.outbox.publish(bytes)
    })
}

/// amqp_publish with the application's `tag`, handed back in the
/// message's delivery report (amqp_set_report_callback): e.g. an id, an
/// index or a pointer of the application's own. Errors as amqp_publish.
/// Callable from any thread, including a consume callback. Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_publish_tagged(
    queue: amqp_queue_handle,
    body: *const c_void,
    len: usize,
    tag: u64,
) -> amqp_result {
    ffi_boundary!({
        // SAFETY: as in `amqp_publish`.
        let bytes = unsafe { body_slice(body, len) }?;
        lookup_queue(queue)?.queue.outbox.publish_tagged(bytes, tag)
    })
}

/// `amqp_publish` for producers that would rather wait than handle
/// AMQP_ERR_BUFFER_FULL: when the queue's buffer is at `max_buffered` or
/// `max_buffered_bytes`, the calling thread sleeps until confirms free a
/// sixteenth of the bound (they wake it; it also looks again every 10 ms),
/// for at most `timeout_ms`.
/// Returns AMQP_OK once stored; AMQP_ERR_BUFFER_FULL when it is still full
/// after `timeout_ms` (at once when `timeout_ms` is 0), with nothing stored; AMQP_ERR_CLOSED
/// as soon as the connection starts closing or fails for good, also while
/// waiting. Other errors as `amqp_publish`.
/// While the broker is away nothing is confirmed, so a full buffer stays
/// full: it then waits the whole `timeout_ms`. From a consume callback it
/// holds that consumer for as long as it waits.
/// Blocks: up to timeout_ms (only while the buffer is full).
#[no_mangle]
pub unsafe extern "C" fn amqp_publish_wait(
    queue: amqp_queue_handle,
    body: *const c_void,
    len: usize,
    timeout_ms: u32,
) -> amqp_result {
    // SAFETY: the caller's promises are publish_wait's.
    ffi_boundary!({ unsafe { publish_wait(queue, body, len, timeout_ms) } })
}

/// amqp_publish_wait, and on failure the error message also goes to
/// `errbuf` (like snprintf: at most `errcap` bytes, NUL-terminated when
/// `errcap` > 0; untouched on success).
/// Blocks: up to timeout_ms (only while the buffer is full).
#[no_mangle]
pub unsafe extern "C" fn amqp_publish_wait_e(
    queue: amqp_queue_handle,
    body: *const c_void,
    len: usize,
    timeout_ms: u32,
    errbuf: *mut c_char,
    errcap: usize,
) -> amqp_result {
    // SAFETY: the caller's promises are publish_wait's.
    ffi_boundary!(errbuf errbuf, errcap, { unsafe { publish_wait(queue, body, len, timeout_ms) } })
}

/// # Safety
/// As `body_slice`.
unsafe fn publish_wait(
    queue: amqp_queue_handle,
    body: *const c_void,
    len: usize,
    timeout_ms: u32,
) -> crate::Result<()> {
    // SAFETY: as in `amqp_publish`; publish_wait copies before returning.
    let bytes = unsafe { body_slice(body, len) }?;
    let timeout = Duration::from_millis(u64::from(timeout_ms));
    lookup_queue(queue)?
        .queue
        .outbox
        .publish_wait(bytes, Some(timeout))
}

/// The body as a slice; NULL is allowed only for an empty body.
///
/// # Safety
/// `body` is NULL or points to `len` readable bytes that stay valid and
/// unchanged for `'a` (the header's promise for `amqp_publish`'s body:
/// valid during the call).
pub(super) unsafe fn body_slice<'a>(body: *const c_void, len: usize) -> Result<&'a [u8], Error> {
    if len == 0 {
        Ok(&[])
    } else if body.is_null() {
        Err(Error::invalid(format!("body is NULL but len is {len}")))
    } else {
        // SAFETY: not NULL, and `len` bytes readable for 'a by this
        // function's contract; `len` > 0 here, and a C object of `len`
        // bytes cannot exceed isize::MAX.
        Ok(unsafe { std::slice::from_raw_parts(body as *const u8, len) })
    }
}

//! Publishing: a copy into the queue's buffer, never a network wait.

use super::{amqp_queue_handle, amqp_result, lookup_queue};
use crate::error::Error;
use std::ffi::c_void;

/// Copies `len` bytes of `body` into the queue's buffer and returns at once.
/// Messages leave in publish order; each stays buffered until the broker
/// confirmed it and is sent again after a reconnect (at-least-once).
/// `len` 0 is a valid empty message (`body` may then be NULL).
/// Errors: AMQP_ERR_INVALID_ARGUMENT (NULL body with len > 0),
/// AMQP_ERR_INVALID_HANDLE, AMQP_ERR_MESSAGE_TOO_LARGE, AMQP_ERR_BUFFER_FULL
/// (nothing stored), AMQP_ERR_CLOSED (closing, or failed for good).
/// Callable from any thread, including a consume callback.
#[no_mangle]
pub unsafe extern "C" fn amqp_publish(
    queue: amqp_queue_handle,
    body: *const c_void,
    len: usize,
) -> amqp_result {
    ffi_boundary!({
        let bytes: &[u8] = if len == 0 {
            &[]
        } else if body.is_null() {
            return Err(Error::invalid(format!("body is NULL but len is {len}")));
        } else {
            std::slice::from_raw_parts(body as *const u8, len)
        };
        lookup_queue(queue)?.queue.publish(bytes)
    })
}

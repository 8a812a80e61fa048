//! Consuming: callbacks on library-owned threads, stop and start.

use super::{amqp_queue_handle, amqp_result, lookup_queue, UserData};
use crate::client::{Callback, DeliveryView, Disposition};
use crate::error::Error;
use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

/// What the callback decided.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum amqp_disposition {
    /// Done: basic.ack.
    AMQP_ACK = 0,
    /// Failed: basic.reject requeue=false (dead-letters if configured).
    AMQP_REJECT = 1,
    /// Try again later: basic.reject requeue=true.
    AMQP_REQUEUE = 2,
}

/// An `amqp_disposition` as returned by C code, where any int may arrive.
pub type amqp_disposition_raw = c_int;

/// One delivery. Every pointer is valid only during the callback.
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
}

/// The consume callback. Runs on a library-owned thread named
/// "ramqp-consumer" (never the caller's, never the network thread);
/// up to `repeat` run at once per amqp_consume call. It may call amqp_publish,
/// amqp_consume_stop and amqp_close_graceful. An unknown return value is
/// treated as AMQP_REQUEUE (nothing is lost).
pub type amqp_consume_fn = Option<
    unsafe extern "C" fn(
        delivery: *const amqp_delivery,
        userdata: *mut c_void,
    ) -> amqp_disposition_raw,
>;

/// Starts `repeat` consumers (0 means 1) on the queue, each delivering to `cb`
/// on its own library thread; callbacks may run concurrently up to `repeat`.
/// The returned disposition is applied on the channel the delivery came from;
/// a delivery whose channel died is never acked on a new one (the broker
/// redelivers it). Consumers restart after every reconnect; while
/// disconnected they start on connect. Calling it again adds more consumers.
#[no_mangle]
pub unsafe extern "C" fn amqp_consume(
    queue: amqp_queue_handle,
    cb: amqp_consume_fn,
    userdata: *mut c_void,
    repeat: u32,
) -> amqp_result {
    ffi_boundary!({
        let Some(cb) = cb else {
            return Err(Error::invalid("cb is NULL"));
        };
        let entry = lookup_queue(queue)?;
        entry.conn.check_open()?;
        let user = UserData(userdata);
        let handle = entry.handle;
        let callback: Callback = Arc::new(move |d: &DeliveryView<'_>| {
            let delivery = amqp_delivery {
                body: d.body.as_ptr(),
                body_len: d.body.len(),
                delivery_tag: d.delivery_tag,
                redelivered: d.redelivered,
                exchange: d.exchange.as_ptr() as *const c_char,
                exchange_len: d.exchange.len(),
                routing_key: d.routing_key.as_ptr() as *const c_char,
                routing_key_len: d.routing_key.len(),
                queue: handle,
            };
            let user = &user;
            // SAFETY: `cb` is the application's non-NULL function of this
            // type; the header lets it run on this library thread with this
            // userdata, and `delivery` (and the bytes it points into) stays
            // valid for the whole call, which is all the header promises.
            match unsafe { cb(&delivery, user.0) } {
                0 => Disposition::Ack,
                1 => Disposition::Reject,
                2 => Disposition::Requeue,
                other => {
                    error!(
                        "consume callback returned {other}, not an amqp_disposition; requeueing"
                    );
                    Disposition::Requeue
                }
            }
        });
        entry.queue.consumers.add(callback, repeat)
    })
}

/// Pauses all consumers of the queue. When it returns, no callback of the
/// queue is running or will start (called from inside one of its callbacks,
/// it does not wait for that one); prefetched deliveries not yet handed to a
/// callback go back to the broker.
#[no_mangle]
pub extern "C" fn amqp_consume_stop(queue: amqp_queue_handle) -> amqp_result {
    ffi_boundary!({ lookup_queue(queue)?.queue.consumers.stop() })
}

/// Resumes the queue's consumers after amqp_consume_stop.
#[no_mangle]
pub extern "C" fn amqp_consume_start(queue: amqp_queue_handle) -> amqp_result {
    ffi_boundary!({
        let entry = lookup_queue(queue)?;
        entry.conn.check_open()?;
        entry.queue.consumers.start();
        Ok(())
    })
}

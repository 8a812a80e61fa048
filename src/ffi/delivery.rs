//! Deliveries the application owns: amqp_delivery_dup and amqp_poll's.

use super::amqp_queue_handle;
use super::consume::amqp_delivery;
use super::message_view::MessageView;
use crate::client::Polled;
use std::ffi::c_char;

/// A delivery the application owns (amqp_delivery_dup, amqp_poll): the
/// struct first, so its address is the amqp_delivery's.
#[repr(C)]
pub(crate) struct OwnedDelivery {
    delivery: amqp_delivery,
    /// What `delivery` points into; never read, only kept.
    _bytes: Kept,
    /// What `delivery.message` points to (its strings and tables).
    _message: Box<MessageView>,
}

/// The bytes of an owned delivery: a copy (amqp_delivery_dup), or the
/// polled delivery itself (amqp_poll: no copy).
enum Kept {
    Copy(#[allow(dead_code)] Box<[u8]>),
    Polled(#[allow(dead_code)] Polled),
}

impl OwnedDelivery {
    /// A copy of every field; the pointers point into the copy's own bytes.
    pub(crate) fn boxed(d: &amqp_delivery, parts: [&[u8]; 4]) -> *const amqp_delivery {
        let [exchange, routing_key, body, properties] = parts;
        let bytes: Box<[u8]> = [exchange, routing_key, body, properties]
            .concat()
            .into_boxed_slice();
        let base = bytes.as_ptr();
        let (e, r, b) = (exchange.len(), routing_key.len(), body.len());
        let props = &bytes[e + r + b..];
        let message = Box::new(MessageView::new(props));
        // Offsets within `bytes`, whose heap buffer does not move when the
        // Box is moved into the struct (wrapping_add: no unsafe needed, and
        // the result is in bounds or one past the end).
        let at = |off: usize| base.wrapping_add(off);
        let owned = Box::new(OwnedDelivery {
            delivery: amqp_delivery {
                body: at(e + r),
                body_len: body.len(),
                exchange: at(0) as *const c_char,
                exchange_len: e,
                routing_key: at(e) as *const c_char,
                routing_key_len: r,
                message: &message.message,
                properties: at(e + r + b),
                properties_len: properties.len(),
                ..*d
            },
            _bytes: Kept::Copy(bytes),
            _message: message,
        });
        Box::into_raw(owned) as *const amqp_delivery
    }

    /// A delivery amqp_poll hands out: it keeps the polled delivery, whose
    /// heap bytes the pointers point into (they do not move with it).
    pub(crate) fn polled(p: Polled, queue: amqp_queue_handle) -> *const amqp_delivery {
        let d = p.view();
        let message = Box::new(MessageView::new(d.properties));
        let delivery = amqp_delivery::borrowing(&d, &message, queue);
        let owned = Box::new(OwnedDelivery {
            delivery,
            _bytes: Kept::Polled(p),
            _message: message,
        });
        Box::into_raw(owned) as *const amqp_delivery
    }
}

/// The bytes an amqp_delivery points to.
///
/// # Safety
/// `d` is a valid amqp_delivery whose pointers are valid for their lengths.
unsafe fn parts(d: &amqp_delivery) -> [&[u8]; 4] {
    let part = |p: *const u8, n: usize| -> &[u8] {
        if n == 0 || p.is_null() {
            &[]
        } else {
            // SAFETY: the caller promises `p` is valid for `n` bytes.
            unsafe { std::slice::from_raw_parts(p, n) }
        }
    };
    [
        part(d.exchange as *const u8, d.exchange_len),
        part(d.routing_key as *const u8, d.routing_key_len),
        part(d.body, d.body_len),
        part(d.properties, d.properties_len),
    ]
}

/// A copy of a delivery (every field, those added in later ABI versions
/// too) that stays valid until amqp_delivery_free, whatever settle, stop or
/// close do; settle it by its `delivery_id` as usual. NULL for NULL. Call it
/// on a callback's delivery (or a copy). Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_delivery_dup(d: *const amqp_delivery) -> *const amqp_delivery {
    ffi_boundary!(value std::ptr::null(), {
        // SAFETY: NULL or a valid amqp_delivery, by the contract.
        match unsafe { d.as_ref() } {
            // SAFETY: a valid delivery's pointers are valid for their lengths.
            Some(d) => OwnedDelivery::boxed(d, unsafe { parts(d) }),
            None => std::ptr::null(),
        }
    })
}

/// Frees a delivery from amqp_delivery_dup (or amqp_poll); NULL is a no-op.
/// Never pass a callback's own delivery. Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_delivery_free(d: *const amqp_delivery) {
    ffi_boundary!(value(), {
        if !d.is_null() {
            // SAFETY: by the contract `d` came from OwnedDelivery::boxed
            // (Box::into_raw of an OwnedDelivery, whose first field it is)
            // and is freed once.
            drop(unsafe { Box::from_raw(d as *mut OwnedDelivery) });
        }
    })
}

/// (ABI 4) Frees `count` deliveries of an array (from amqp_poll, or
/// amqp_delivery_dup), as amqp_delivery_free does for each: one call per
/// poll batch instead of one per delivery, for bindings whose every foreign
/// call costs. NULL entries are skipped; `deliveries` NULL frees nothing.
/// Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_delivery_free_many(
    deliveries: *const *const amqp_delivery,
    count: usize,
) {
    ffi_boundary!(value(), {
        // SAFETY: the caller passes NULL or an array of `count` pointers,
        // each NULL or from amqp_poll / amqp_delivery_dup (boxed
        // OwnedDelivery) and not freed before (the header).
        unsafe { super::free_batch::<_, OwnedDelivery>(deliveries, count) }
    })
}

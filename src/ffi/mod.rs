//! The C API. Thin: every export checks its arguments, turns C strings and
//! handles into core values, and calls the core inside `ffi_boundary!`,
//! which catches panics (AMQP_ERR_INTERNAL) and records `amqp_last_error`.
//!
//! One file per API area: `errors` (codes, last error), `connection`,
//! `queue`, `publish`, `consume`, `pull`, `log`. Handles come from the two
//! generation-checked registries below.

#![allow(non_camel_case_types, clippy::missing_safety_doc)]

/// Runs an export's body: panics become AMQP_ERR_INTERNAL, errors set the
/// thread's last error, success clears it.
macro_rules! ffi_boundary {
    ($body:block) => {
        $crate::ffi::errors::run_boundary(move || -> $crate::error::Result<()> { $body })
    };
    // The `_e` variants: also copy the error message into the caller's
    // buffer on failure (`errors::run_boundary_e`; the export is `unsafe
    // extern "C"` and its header promises `errbuf` holds `errcap` bytes).
    (errbuf $buf:expr, $cap:expr, $body:block) => {{
        let body = move || -> $crate::error::Result<()> { $body };
        // SAFETY: the export's caller promises `$buf` is NULL or `$cap`
        // writable bytes for the duration of the call.
        unsafe { $crate::ffi::errors::run_boundary_e($buf, $cap, body) }
    }};
    // For the few exports that return a value rather than a code.
    (value $fallback:expr, $body:block) => {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || $body)).unwrap_or($fallback)
    };
}

/// For a C enum whose values are 0, 1, 2, ...: `ALL` (every variant in
/// value order), `name` (the variant's own name, as C spells it) and
/// `from_raw` (the variant with a value that came from C, if any). The
/// variants are listed once, here: a variant left out does not compile, and
/// one out of value order fails the compile-time check.
macro_rules! c_enum_values {
    ($ty:ident, $raw:ty, [$($variant:ident),+ $(,)?]) => {
        impl $ty {
            pub(crate) const ALL: [$ty; [$(stringify!($variant)),+].len()] = [$($ty::$variant),+];
            const NAMES: [&'static std::ffi::CStr; [$(stringify!($variant)),+].len()] = [$(
                match std::ffi::CStr::from_bytes_with_nul(
                    concat!(stringify!($variant), "\0").as_bytes(),
                ) {
                    Ok(name) => name,
                    Err(_) => panic!("a variant name holds a NUL"),
                }
            ),+];

            pub(crate) const fn name(self) -> &'static std::ffi::CStr {
                Self::NAMES[self as usize]
            }

            pub(crate) fn from_raw(raw: $raw) -> Option<$ty> {
                usize::try_from(raw)
                    .ok()
                    .and_then(|i| Self::ALL.get(i).copied())
            }
        }

        const _: () = {
            // Every variant is listed ...
            let _every_variant = |v: $ty| match v {
                $($ty::$variant)|+ => (),
            };
            // ... and `ALL[i]` has value `i`, so `name` and `from_raw` may
            // index by value.
            let mut i = 0;
            while i < $ty::ALL.len() {
                assert!($ty::ALL[i] as usize == i);
                i += 1;
            }
        };
    };
}

mod connection;
mod consume;
mod delivery;
mod errors;
mod log;
mod message;
mod message_view;
mod publish;
mod pull;
mod queue;
mod report;

pub use connection::*;
pub use consume::*;
pub use delivery::*;
pub use errors::*;
pub use log::*;
pub use message::*;
pub use publish::*;
pub use pull::*;
pub use queue::*;
pub use report::*;

use crate::client::{Connection, Queue};
use crate::error::{Error, Result};
use crate::registry::Registry;
use std::ffi::{c_char, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A connection handle: never 0, below 2^53, never valid as a queue handle.
pub type amqp_connection_handle = u64;
/// A queue handle: never 0, below 2^53, never valid as a connection handle.
pub type amqp_queue_handle = u64;

/// An application pointer (userdata) handed back unchanged to its callback
/// on the library's threads.
pub(crate) struct UserData(pub *mut std::ffi::c_void);
// SAFETY: we never dereference the pointer, only hand it back to the
// application's callback; the header says which library thread calls each
// callback, and by passing the pointer the application promises it may be
// used there.
unsafe impl Send for UserData {}
// SAFETY: shared access only copies the pointer value out (to pass it to a
// callback); the same promise as for Send covers callbacks running on
// several library threads at once (`repeat` > 1).
unsafe impl Sync for UserData {}

pub(crate) struct ConnectionEntry {
    pub conn: Arc<Connection>,
    pub queue_handles: Mutex<Vec<amqp_queue_handle>>,
    /// Set once by `amqp_close_graceful`; read through `check_open`.
    closing: AtomicBool,
}

impl ConnectionEntry {
    pub fn new(conn: Arc<Connection>) -> Self {
        ConnectionEntry {
            conn,
            queue_handles: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
        }
    }

    /// The check of every export that would add to a connection (open a
    /// queue, start consumers): AMQP_ERR_CLOSED once a close has begun.
    pub fn check_open(&self) -> Result<()> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::closed("the connection is closing"));
        }
        Ok(())
    }

    /// Marks the connection closing; `false` when a close had already begun.
    pub fn begin_close(&self) -> bool {
        !self.closing.swap(true, Ordering::SeqCst)
    }
}

pub(crate) struct QueueEntry {
    pub queue: Arc<Queue>,
    pub handle: amqp_queue_handle,
    pub conn: Arc<ConnectionEntry>,
}

pub(crate) static CONNECTIONS: Registry<ConnectionEntry> = Registry::new(0);
pub(crate) static QUEUES: Registry<QueueEntry> = Registry::new(1);

/// A required C string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid and
/// unchanged for `'a` (the header's promise for every `const char *`
/// argument: valid for the duration of the call).
pub(crate) unsafe fn required_str<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and NUL-terminated and valid for 'a by this
    // function's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// An optional C string argument: NULL is `None`.
///
/// # Safety
/// As `required_str`.
pub(crate) unsafe fn optional_str<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: this function's contract is `required_str`'s.
        unsafe { required_str(p, what) }.map(Some)
    }
}

/// An out-parameter: checked for NULL before anything happens.
///
/// # Safety
/// `p` is NULL or points to a `T` the caller lets us write during `'a`
/// (the header's promise for every out-parameter), aligned, and not
/// otherwise borrowed by us.
pub(crate) unsafe fn out_param<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T> {
    // SAFETY: NULL is handled by `as_mut`; otherwise valid, aligned and
    // ours to write for 'a by this function's contract.
    unsafe { p.as_mut() }.ok_or_else(|| Error::invalid(format!("{what} (out-parameter) is NULL")))
}

const SIZE_FIELD: usize = std::mem::size_of::<usize>();

/// The `size` a caller declared in a struct that starts with `size_t size`,
/// checked (not NULL, at least the size field itself) before anything
/// happens.
///
/// # Safety
/// `p` is NULL or points to a struct that begins with a readable size_t.
pub(crate) unsafe fn check_sized<T>(p: *mut T, what: &str) -> Result<usize> {
    if p.is_null() {
        return Err(Error::invalid(format!("{what} (out-parameter) is NULL")));
    }
    // SAFETY: non-NULL, and by the contract it begins with a size_t the
    // caller set (read unaligned: we do not rely on its alignment).
    let declared = unsafe { std::ptr::read_unaligned(p as *const usize) };
    if declared < SIZE_FIELD {
        return Err(Error::invalid(format!(
            "{what}.size is {declared}: set it to sizeof the struct"
        )));
    }
    Ok(declared)
}

/// Writes `value` to a caller-allocated struct that starts with `size_t
/// size` (ABI rule of contract v2): only the first `size` bytes the caller
/// declared, and never its `size` field, so a caller built against an older,
/// smaller struct is never overrun.
///
/// # Safety
/// `p` is NULL or points to at least `(*p).size` writable bytes.
pub(crate) unsafe fn out_sized<T: Copy>(p: *mut T, value: T, what: &str) -> Result<()> {
    // SAFETY: this function's contract covers check_sized's.
    let declared = unsafe { check_sized(p, what) }?;
    let n = declared.min(std::mem::size_of::<T>());
    // SAFETY: `value` is a live T of size_of::<T>() >= n bytes; the caller
    // promised `declared` >= n writable bytes at `p`; the ranges are
    // distinct objects; bytes [0, SIZE_FIELD) (the size) are left alone.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&value as *const T as *const u8).add(SIZE_FIELD),
            (p as *mut u8).add(SIZE_FIELD),
            n - SIZE_FIELD,
        );
    }
    Ok(())
}

pub(crate) fn lookup_connection(handle: amqp_connection_handle) -> Result<Arc<ConnectionEntry>> {
    CONNECTIONS.get(handle).ok_or_else(|| {
        Error::new(
            crate::ErrorKind::InvalidHandle,
            format!("{handle} is not a valid connection handle (0, never issued, or closed)"),
        )
    })
}

pub(crate) fn lookup_queue(handle: amqp_queue_handle) -> Result<Arc<QueueEntry>> {
    QUEUES.get(handle).ok_or_else(|| {
        Error::new(
            crate::ErrorKind::InvalidHandle,
            format!("{handle} is not a valid queue handle (0, never issued, or closed)"),
        )
    })
}

/// Frees the `count` objects a batch poll handed out (`amqp_delivery_free_many`,
/// `amqp_reports_free`): each non-NULL entry is a `Box<O>` the library made
/// and gave out as a `*const P`. `ptrs` NULL frees nothing.
///
/// # Safety
/// `ptrs` is NULL or an array of `count` pointers, each NULL or made by
/// `Box::<O>::into_raw` and not freed before.
pub(crate) unsafe fn free_batch<P, O>(ptrs: *const *const P, count: usize) {
    if ptrs.is_null() {
        return;
    }
    for i in 0..count {
        // SAFETY: within the caller's array of `count` pointers.
        let p = unsafe { ptrs.add(i).read() };
        if !p.is_null() {
            // SAFETY: made by Box::<O>::into_raw, freed once (the caller).
            drop(unsafe { Box::from_raw(p as *mut O) });
        }
    }
}

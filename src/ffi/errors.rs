//! Result codes, their names, and the per-thread last error message.

use crate::error::{ErrorKind, Result};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr};

/// The result of every call that can fail.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum amqp_result {
    /// Success.
    AMQP_OK = 0,
    /// NULL pointer, bad URI/option, bad UTF-8, name too long.
    AMQP_ERR_INVALID_ARGUMENT = 1,
    /// 0, never issued, or already freed.
    AMQP_ERR_INVALID_HANDLE = 2,
    /// Publish buffer at max_buffered / max_buffered_bytes; nothing was stored.
    AMQP_ERR_BUFFER_FULL = 3,
    /// Body longer than max_message_bytes.
    AMQP_ERR_MESSAGE_TOO_LARGE = 4,
    /// Closing, or failed for good after max_reconnects.
    AMQP_ERR_CLOSED = 5,
    /// A wait ran out (wait_connected, close_graceful, a declare the broker did not answer).
    AMQP_ERR_TIMEOUT = 6,
    /// The operation needs a live connection.
    AMQP_ERR_NOT_CONNECTED = 7,
    /// The broker refused: 403/404/406 ... (see amqp_last_error).
    AMQP_ERR_BROKER = 8,
    /// A bug, including a caught panic.
    AMQP_ERR_INTERNAL = 9,
    /// amqp_settle: the delivery's channel is gone (a reconnect, or its
    /// channel closed); nothing was applied and the broker redelivers it.
    AMQP_ERR_STALE_DELIVERY = 10,
    /// amqp_settle: the delivery was settled already (harmless races may
    /// ignore it).
    AMQP_ERR_ALREADY_SETTLED = 11,
}

/// An `amqp_result` as received from C, where any int may arrive.
pub type amqp_result_raw = c_int;

c_enum_values!(
    amqp_result,
    amqp_result_raw,
    [
        AMQP_OK,
        AMQP_ERR_INVALID_ARGUMENT,
        AMQP_ERR_INVALID_HANDLE,
        AMQP_ERR_BUFFER_FULL,
        AMQP_ERR_MESSAGE_TOO_LARGE,
        AMQP_ERR_CLOSED,
        AMQP_ERR_TIMEOUT,
        AMQP_ERR_NOT_CONNECTED,
        AMQP_ERR_BROKER,
        AMQP_ERR_INTERNAL,
        AMQP_ERR_STALE_DELIVERY,
        AMQP_ERR_ALREADY_SETTLED,
    ]
);

impl amqp_result {
    /// The core's error kind for a failure code; `None` for AMQP_OK (the
    /// inverse of `code_of`, for the test that checks both directions).
    #[cfg(test)]
    pub(crate) const fn kind(self) -> Option<ErrorKind> {
        use amqp_result::*;
        Some(match self {
            AMQP_OK => return None,
            AMQP_ERR_INVALID_ARGUMENT => ErrorKind::InvalidArgument,
            AMQP_ERR_INVALID_HANDLE => ErrorKind::InvalidHandle,
            AMQP_ERR_BUFFER_FULL => ErrorKind::BufferFull,
            AMQP_ERR_MESSAGE_TOO_LARGE => ErrorKind::MessageTooLarge,
            AMQP_ERR_CLOSED => ErrorKind::Closed,
            AMQP_ERR_TIMEOUT => ErrorKind::Timeout,
            AMQP_ERR_NOT_CONNECTED => ErrorKind::NotConnected,
            AMQP_ERR_BROKER => ErrorKind::Broker,
            AMQP_ERR_INTERNAL => ErrorKind::Internal,
            AMQP_ERR_STALE_DELIVERY => ErrorKind::StaleDelivery,
            AMQP_ERR_ALREADY_SETTLED => ErrorKind::AlreadySettled,
        })
    }
}

/// The C code for a core error kind (the inverse of `amqp_result::kind`;
/// the unit tests check both directions).
pub(crate) const fn code_of(kind: ErrorKind) -> amqp_result {
    use amqp_result::*;
    match kind {
        ErrorKind::InvalidArgument => AMQP_ERR_INVALID_ARGUMENT,
        ErrorKind::InvalidHandle => AMQP_ERR_INVALID_HANDLE,
        ErrorKind::BufferFull => AMQP_ERR_BUFFER_FULL,
        ErrorKind::MessageTooLarge => AMQP_ERR_MESSAGE_TOO_LARGE,
        ErrorKind::Closed => AMQP_ERR_CLOSED,
        ErrorKind::Timeout => AMQP_ERR_TIMEOUT,
        ErrorKind::NotConnected => AMQP_ERR_NOT_CONNECTED,
        ErrorKind::Broker => AMQP_ERR_BROKER,
        ErrorKind::Internal => AMQP_ERR_INTERNAL,
        ErrorKind::StaleDelivery => AMQP_ERR_STALE_DELIVERY,
        ErrorKind::AlreadySettled => AMQP_ERR_ALREADY_SETTLED,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Thread-locals may already be destroyed (a call from an atexit handler):
/// then the message is dropped rather than panicking.
fn set_last_error(message: String) {
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut e) = e.try_borrow_mut() {
            *e = message;
        }
    });
}

pub(crate) fn run_boundary(body: impl FnOnce() -> Result<()>) -> amqp_result {
    let guarded = move || {
        let result = if crate::runtime::forked() {
            Err(crate::runtime::forked_error())
        } else {
            body()
        };
        match result {
            Ok(()) => {
                set_last_error(String::new());
                amqp_result::AMQP_OK
            }
            Err(e) => {
                let code = code_of(e.kind);
                set_last_error(e.message);
                code
            }
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(guarded)) {
        Ok(code) => code,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            // Never unwind out of here, even if recording the message fails.
            let _ = std::panic::catch_unwind(move || {
                set_last_error(format!("internal error (a bug in resilient-amqp): {what}"))
            });
            amqp_result::AMQP_ERR_INTERNAL
        }
    }
}

/// The version of the C contract this library implements, for compile-time
/// checks (`#if AMQP_ABI_VERSION >= 2`). ABI rules: structs the library
/// allocates and hands out (`amqp_delivery`) only grow at the end, and a
/// field added in version N exists iff `amqp_abi_version() >= N`; structs the
/// application allocates start with `size_t size` (set it to `sizeof`), and
/// the library reads and writes only what fits.
pub const AMQP_ABI_VERSION: u32 = 6;

/// The contract version of the loaded library (AMQP_ABI_VERSION it was built
/// with): compare at run time, e.g. before reading a field added later.
/// Blocks: never.
#[no_mangle]
pub extern "C" fn amqp_abi_version() -> u32 {
    ffi_boundary!(value AMQP_ABI_VERSION, { AMQP_ABI_VERSION })
}

/// Cargo.toml's version, for amqp_library_version.
const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the version holds a NUL"),
    };

/// The version of the loaded library, "MAJOR.MINOR.PATCH" (Cargo.toml's
/// version; the header's AMQP_LIBRARY_VERSION_STRING is the one it was built
/// against). A static, NUL-terminated string: never free it.
/// Blocks: never.
#[no_mangle]
pub extern "C" fn amqp_library_version() -> *const c_char {
    ffi_boundary!(value VERSION.as_ptr(), { VERSION.as_ptr() })
}

/// A static, NUL-terminated name for any value, including unknown ones.
/// Blocks: never.
#[no_mangle]
pub extern "C" fn amqp_result_str(code: amqp_result_raw) -> *const c_char {
    ffi_boundary!(value c"AMQP_ERR_UNKNOWN".as_ptr(), {
        amqp_result::from_raw(code)
            .map_or(c"AMQP_ERR_UNKNOWN", amqp_result::name)
            .as_ptr()
    })
}

/// Copies the message of the last failed call on this thread into `buf`
/// like snprintf (always NUL-terminated when `cap` > 0; `buf` may be NULL
/// when `cap` is 0) and returns its full length. 0 when the last call on
/// this thread succeeded. Does not itself change the last error.
/// Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_last_error(buf: *mut c_char, cap: usize) -> usize {
    ffi_boundary!(value 0, {
        // SAFETY: the caller promises `buf` is NULL or `cap` writable bytes.
        unsafe { copy_last_error(buf, cap) }
    })
}

/// Copies this thread's last error into `buf` like snprintf; returns its
/// full length.
///
/// # Safety
/// `buf` is NULL or points to `cap` writable bytes.
unsafe fn copy_last_error(buf: *mut c_char, cap: usize) -> usize {
    LAST_ERROR
        .try_with(|e| {
            let Ok(e) = e.try_borrow() else { return 0 };
            let bytes = e.as_bytes();
            if cap > 0 && !buf.is_null() {
                let n = bytes.len().min(cap - 1);
                // SAFETY: the caller promises `buf` points to `cap` writable
                // bytes (the snprintf contract); we write `n + 1 <= cap` of
                // them, and our own String cannot overlap the caller's buffer.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, n);
                    *buf.add(n) = 0;
                }
            }
            bytes.len()
        })
        .unwrap_or(0)
}

/// `run_boundary` for the `_e` variants of the blocking calls (a binding
/// whose call may finish on another thread than the one that reads
/// `amqp_last_error`: Node's worker pool, Go's goroutines): on failure the
/// message also goes to `errbuf` (like snprintf: at most `errcap` bytes,
/// NUL-terminated when `errcap` > 0; NULL allowed when `errcap` is 0); on
/// success `errbuf` is left alone. Reached through `ffi_boundary!(errbuf
/// buf, cap, { ... })`, which any later blocking export (amqp_poll_e) can
/// use as it is.
///
/// # Safety
/// `errbuf` is NULL or points to `errcap` writable bytes for this call.
pub(crate) unsafe fn run_boundary_e(
    errbuf: *mut c_char,
    errcap: usize,
    body: impl FnOnce() -> Result<()>,
) -> amqp_result {
    let code = run_boundary(body);
    if code != amqp_result::AMQP_OK {
        // Never unwind out of here: at worst the buffer stays as it was.
        // SAFETY: this function's contract is copy_last_error's.
        let _ = std::panic::catch_unwind(|| unsafe { copy_last_error(errbuf, errcap) });
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn every_code_is_named_after_its_variant_and_round_trips() {
        for (i, code) in amqp_result::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, i);
            assert_eq!(code.name().to_str().unwrap(), format!("{code:?}"));
            assert_eq!(amqp_result::from_raw(i as c_int), Some(code));
            // SAFETY: amqp_result_str returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(amqp_result_str(i as c_int)) };
            assert_eq!(name, code.name());
        }
        for unknown in [-1, 12, 13, c_int::MAX, c_int::MIN] {
            assert_eq!(amqp_result::from_raw(unknown), None);
            // SAFETY: as above.
            let name = unsafe { CStr::from_ptr(amqp_result_str(unknown)) };
            assert_eq!(name, c"AMQP_ERR_UNKNOWN");
        }
    }

    #[test]
    fn error_kinds_and_codes_map_one_to_one() {
        let mut kinds = Vec::new();
        for code in amqp_result::ALL {
            match code.kind() {
                None => assert_eq!(code, amqp_result::AMQP_OK),
                Some(kind) => {
                    assert_eq!(code_of(kind), code, "{kind:?}");
                    assert!(!kinds.contains(&kind), "{kind:?} twice");
                    kinds.push(kind);
                }
            }
        }
        assert_eq!(kinds.len(), amqp_result::ALL.len() - 1);
    }
}

//! Logs to an application callback.

use super::{amqp_release_fn, amqp_result, UserData};
use crate::log::{set_callback, Level, LogCallback, LogRelease};
use std::ffi::{c_char, c_int, c_void, CString};
use std::panic::catch_unwind;
use std::sync::Arc;

/// Log levels, most severe first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum amqp_log_level {
    /// Nothing.
    AMQP_LOG_OFF = 0,
    /// Gave up: failed for good, a queue the broker keeps refusing.
    AMQP_LOG_ERROR = 1,
    /// Trouble that is being handled: a lost connection, a failed attempt.
    AMQP_LOG_WARN = 2,
    /// Connected, reconnected, blocked/unblocked by the broker.
    AMQP_LOG_INFO = 3,
    /// Details for debugging.
    AMQP_LOG_DEBUG = 4,
}

/// An `amqp_log_level` as received from C.
pub type amqp_log_level_raw = c_int;

/// The log callback: called on the library's "ramqp-log" thread,
/// one message at a time, in order. `message` is valid during the call.
/// It may call any function of the library (none waits for the log thread).
/// It must not throw. If the application's runtime ends the thread inside
/// the callback (pthread_exit or cancellation, as Python does at exit), the
/// thread ends without harm: later messages are discarded.
pub type amqp_log_fn = Option<
    unsafe extern "C-unwind" fn(
        level: amqp_log_level_raw,
        message: *const c_char,
        userdata: *mut c_void,
    ),
>;

/// Sends log messages at `level` and more severe to `cb` (NULL turns callback
/// logging off). Independent of RESILIENT_AMQP_LOG, which logs to stderr.
/// Messages never contain passwords. amqp_set_log_callback_ex with no
/// release. Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_set_log_callback(
    cb: amqp_log_fn,
    level: amqp_log_level_raw,
    userdata: *mut c_void,
) -> amqp_result {
    ffi_boundary!({ set_log_callback(cb, level, userdata, None) })
}

/// amqp_set_log_callback with a `release` (may be NULL) for `userdata`:
/// called once, on the "ramqp-log" thread, when this callback is replaced
/// (by another amqp_set_log_callback / _ex call) or turned off (cb NULL),
/// after its last call returned. Once replaced or turned off, a callback is
/// not called again (lines still queued for it are dropped; a call already
/// in progress finishes), so a runtime that turns logging off before it
/// ends is not called after that. Never called when this call fails, nor
/// for a NULL `cb` (nothing to release). No API call waits for it.
/// Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_set_log_callback_ex(
    cb: amqp_log_fn,
    level: amqp_log_level_raw,
    userdata: *mut c_void,
    release: amqp_release_fn,
) -> amqp_result {
    ffi_boundary!({
        let release = match (cb, release) {
            (Some(_), Some(release)) => {
                let user = UserData(userdata);
                Some(Box::new(move || {
                    let user = user;
                    // SAFETY: the application's non-NULL release function,
                    // called once on the "ramqp-log" thread with its
                    // userdata, as the header says.
                    unsafe { release(user.0) }
                }) as LogRelease)
            }
            _ => None,
        };
        set_log_callback(cb, level, userdata, release)
    })
}

fn set_log_callback(
    cb: amqp_log_fn,
    level: amqp_log_level_raw,
    userdata: *mut c_void,
    release: Option<LogRelease>,
) -> crate::Result<()> {
    if !(0..=4).contains(&level) {
        return Err(crate::Error::invalid(format!(
            "level {level} is not an amqp_log_level (0..4)"
        )));
    }
    let level = Level::from_u8(level as u8);
    let callback: Option<LogCallback> = cb.map(|cb| {
        let user = UserData(userdata);
        Arc::new(move |level: Level, msg: &str| {
            let user = &user;
            // Our half may not panic out of the log thread (it has no catch
            // frame); the call into the application is outside
            // catch_unwind, so a forced unwind passes (`os_thread`).
            let Ok(msg) = catch_unwind(|| CString::new(msg.replace('\0', " "))) else {
                return;
            };
            let msg = msg.unwrap_or_default();
            // SAFETY: `cb` is the application's non-NULL function of
            // this type, called on the "ramqp-log" thread with its
            // userdata, as the header says; `msg` is NUL-terminated and
            // outlives the call.
            unsafe { cb(level as c_int, msg.as_ptr(), user.0) };
        }) as LogCallback
    });
    set_callback(callback, level, release)
        .map_err(|e| crate::Error::internal(format!("cannot start the log thread: {e}")))
}

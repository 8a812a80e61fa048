//! Connections: connect, wait, close, stats.

use super::{amqp_connection_handle, amqp_result, ConnectionEntry, CONNECTIONS, QUEUES};
use super::{lookup_connection, optional_str, out_param, required_str};
use crate::client::options::{parse_connection_options, parse_uri};
use crate::client::{Connection, ConnectionState};
use crate::error::{Error, ErrorKind};
use std::ffi::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The state of a connection, as `amqp_connection_get_stats` reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum amqp_connection_state {
    /// The first connect has not succeeded yet.
    AMQP_STATE_CONNECTING = 0,
    /// Connected; queues are declared and publishing.
    AMQP_STATE_CONNECTED = 1,
    /// Lost; reconnecting in the background.
    AMQP_STATE_RECONNECTING = 2,
    /// Gave up for good (max_reconnects, or the broker refused the login).
    AMQP_STATE_FAILED = 3,
    /// amqp_close_graceful began.
    AMQP_STATE_CLOSED = 4,
}

/// An `amqp_connection_state` as received from C.
pub type amqp_connection_state_raw = c_int;

impl From<ConnectionState> for amqp_connection_state {
    fn from(s: ConnectionState) -> Self {
        match s {
            ConnectionState::Connecting => Self::AMQP_STATE_CONNECTING,
            ConnectionState::Connected => Self::AMQP_STATE_CONNECTED,
            ConnectionState::Reconnecting => Self::AMQP_STATE_RECONNECTING,
            ConnectionState::Failed => Self::AMQP_STATE_FAILED,
            ConnectionState::Closed => Self::AMQP_STATE_CLOSED,
        }
    }
}

/// A snapshot of a connection's state and counters.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct amqp_connection_stats {
    /// The current state.
    pub state: amqp_connection_state,
    /// Successful connects, the first one included.
    pub connects: u64,
    /// Connect attempts that failed, in all.
    pub failed_attempts: u64,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// Queues open on the connection.
    pub queues: u64,
}

/// Starts a connection to `uri` (`amqp://user:pass@host:port/vhost?heartbeat=10`)
/// and returns at once: connecting and every reconnect run in the background,
/// and a broker that is down is not an error. `options` is NULL or
/// `key=value&...`: reconnect_delay_ms (100), reconnect_delay_max_ms (5000),
/// max_reconnects (0 = never give up), max_buffered (100000 per queue),
/// max_buffered_bytes (64 MiB per queue), max_message_bytes (128 MiB).
/// Errors: AMQP_ERR_INVALID_ARGUMENT (NULL, bad URI or option; amqp_last_error
/// names it; the password is never repeated).
#[no_mangle]
pub unsafe extern "C" fn amqp_connect(
    uri: *const c_char,
    options: *const c_char,
    out: *mut amqp_connection_handle,
) -> amqp_result {
    ffi_boundary!({
        let out = out_param(out, "out")?;
        let address = parse_uri(required_str(uri, "uri")?)?;
        let options = parse_connection_options(optional_str(options, "options")?)?;
        let conn = Connection::connect(address, options)?;
        let entry = Arc::new(ConnectionEntry {
            conn: conn.clone(),
            queue_handles: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
        });
        let Some(handle) = CONNECTIONS.insert(entry) else {
            conn.close(Duration::ZERO);
            return Err(Error::internal("too many open connections"));
        };
        *out = handle;
        Ok(())
    })
}

/// Waits until the connection is up: AMQP_OK once connected,
/// AMQP_ERR_TIMEOUT after `timeout_ms`, AMQP_ERR_CLOSED once it gave up for
/// good (amqp_last_error says why, e.g. the broker's 403 ACCESS_REFUSED).
#[no_mangle]
pub extern "C" fn amqp_wait_connected(
    conn: amqp_connection_handle,
    timeout_ms: u32,
) -> amqp_result {
    ffi_boundary!({
        let entry = lookup_connection(conn)?;
        entry
            .conn
            .wait_connected(Duration::from_millis(timeout_ms as u64))
    })
}

/// Stops accepting publishes (AMQP_ERR_CLOSED from then on), stops consumers,
/// waits up to `timeout_ms` until every buffered and in-flight message is
/// confirmed, closes the connection and frees it and its queue handles.
/// AMQP_OK when everything was confirmed, AMQP_ERR_TIMEOUT otherwise;
/// `unsent` (may be NULL) receives the number not confirmed. A second call
/// gets AMQP_ERR_INVALID_HANDLE. May be called from a consume callback.
#[no_mangle]
pub unsafe extern "C" fn amqp_close_graceful(
    conn: amqp_connection_handle,
    timeout_ms: u32,
    unsent: *mut u64,
) -> amqp_result {
    ffi_boundary!({
        let entry = lookup_connection(conn)?;
        if entry.closing.swap(true, Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::InvalidHandle,
                format!("{conn} is already being closed"),
            ));
        }
        let left = entry.conn.close(Duration::from_millis(timeout_ms as u64));
        let handles = std::mem::take(
            &mut *entry
                .queue_handles
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for h in handles {
            QUEUES.remove(h);
        }
        CONNECTIONS.remove(conn);
        if let Some(unsent) = unsent.as_mut() {
            *unsent = left;
        }
        if left > 0 {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("{left} message(s) were not confirmed by the broker before the timeout"),
            ));
        }
        Ok(())
    })
}

/// Writes a snapshot of the connection's state and counters to `out`.
#[no_mangle]
pub unsafe extern "C" fn amqp_connection_get_stats(
    conn: amqp_connection_handle,
    out: *mut amqp_connection_stats,
) -> amqp_result {
    ffi_boundary!({
        let out = out_param(out, "out")?;
        let entry = lookup_connection(conn)?;
        let s = entry.conn.stats();
        *out = amqp_connection_stats {
            state: entry.conn.state().into(),
            connects: s.connects,
            failed_attempts: s.failed_attempts,
            consecutive_failures: s.consecutive_failures,
            queues: s.queues,
        };
        Ok(())
    })
}

/// A static, NUL-terminated name for any state value, including unknown ones.
#[no_mangle]
pub extern "C" fn amqp_connection_state_str(state: amqp_connection_state_raw) -> *const c_char {
    ffi_boundary!(value c"AMQP_STATE_UNKNOWN".as_ptr(), {
        let s: &'static std::ffi::CStr = match state {
            0 => c"AMQP_STATE_CONNECTING",
            1 => c"AMQP_STATE_CONNECTED",
            2 => c"AMQP_STATE_RECONNECTING",
            3 => c"AMQP_STATE_FAILED",
            4 => c"AMQP_STATE_CLOSED",
            _ => c"AMQP_STATE_UNKNOWN",
        };
        s.as_ptr()
    })
}

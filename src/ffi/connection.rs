//! Connections: connect, wait, close, stats.

use super::{amqp_connection_handle, amqp_result, ConnectionEntry, CONNECTIONS, QUEUES};
use super::{lookup_connection, optional_str, out_param, out_sized, required_str};
use crate::client::address::parse_uri;
use crate::client::options::parse_connection_options;
use crate::client::{Connection, ConnectionState, ConnectionStatsSnapshot};
use crate::error::{Error, ErrorKind};
use std::ffi::{c_char, c_int};
use std::sync::Arc;
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

c_enum_values!(
    amqp_connection_state,
    amqp_connection_state_raw,
    [
        AMQP_STATE_CONNECTING,
        AMQP_STATE_CONNECTED,
        AMQP_STATE_RECONNECTING,
        AMQP_STATE_FAILED,
        AMQP_STATE_CLOSED,
    ]
);

impl amqp_connection_state {
    /// The core's state (the inverse of `From<ConnectionState>`, for the
    /// test that checks both directions).
    #[cfg(test)]
    pub(crate) const fn core(self) -> ConnectionState {
        use amqp_connection_state::*;
        match self {
            AMQP_STATE_CONNECTING => ConnectionState::Connecting,
            AMQP_STATE_CONNECTED => ConnectionState::Connected,
            AMQP_STATE_RECONNECTING => ConnectionState::Reconnecting,
            AMQP_STATE_FAILED => ConnectionState::Failed,
            AMQP_STATE_CLOSED => ConnectionState::Closed,
        }
    }
}

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
    /// sizeof(amqp_connection_stats), set by the caller (the library writes
    /// only what fits; ABI rules in the header's introduction).
    pub size: usize,
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
    /// Connections that ended because the broker broke the protocol or one
    /// of our limits (malformed frames, a frame over frame_max, a confirm of
    /// a tag never published, more deliveries than the prefetch, ...): each
    /// was closed with connection.close 501-505, logged at ERROR and
    /// reconnected with backoff.
    pub protocol_errors: u64,
}

impl From<ConnectionStatsSnapshot> for amqp_connection_stats {
    /// Field by field, with no `..` on either side: a field added to one
    /// struct and not the other does not compile.
    fn from(s: ConnectionStatsSnapshot) -> Self {
        let ConnectionStatsSnapshot {
            state,
            connects,
            failed_attempts,
            consecutive_failures,
            queues,
            protocol_errors,
        } = s;
        amqp_connection_stats {
            size: std::mem::size_of::<amqp_connection_stats>(),
            state: state.into(),
            connects,
            failed_attempts,
            consecutive_failures,
            queues,
            protocol_errors,
        }
    }
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
        // The header's contract for `amqp_connect`: `out` is NULL or
        // writable, `uri` and `options` NULL or NUL-terminated, all valid for
        // the duration of this call, which no borrow below outlives.
        // SAFETY: `out` as the contract says; written only on success.
        let out = unsafe { out_param(out, "out") }?;
        // SAFETY: `uri` as the contract says; parsed into owned values.
        let address = parse_uri(unsafe { required_str(uri, "uri") }?)?;
        // SAFETY: `options` as the contract says; parsed into owned values.
        let options = parse_connection_options(unsafe { optional_str(options, "options") }?)?;
        let conn = Connection::connect(address, options)?;
        let entry = Arc::new(ConnectionEntry::new(conn.clone()));
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
        if !entry.begin_close() {
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
        // SAFETY: the caller promises `unsent` is NULL or a writable
        // uint64_t, valid for the duration of this call.
        if let Some(unsent) = unsafe { unsent.as_mut() } {
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
        let stats = lookup_connection(conn)?.conn.stats().into();
        // SAFETY: the caller promises `out` is NULL or an
        // amqp_connection_stats of at least its declared `size`, writable for
        // this call.
        unsafe { out_sized(out, stats, "out") }
    })
}

/// A static, NUL-terminated name for any state value, including unknown ones.
#[no_mangle]
pub extern "C" fn amqp_connection_state_str(state: amqp_connection_state_raw) -> *const c_char {
    ffi_boundary!(value c"AMQP_STATE_UNKNOWN".as_ptr(), {
        amqp_connection_state::from_raw(state)
            .map_or(c"AMQP_STATE_UNKNOWN", amqp_connection_state::name)
            .as_ptr()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn every_state_is_named_after_its_variant_and_round_trips() {
        for (i, state) in amqp_connection_state::ALL.into_iter().enumerate() {
            assert_eq!(state as usize, i);
            assert_eq!(state.name().to_str().unwrap(), format!("{state:?}"));
            assert_eq!(amqp_connection_state::from_raw(i as c_int), Some(state));
            assert_eq!(amqp_connection_state::from(state.core()), state);
            // SAFETY: amqp_connection_state_str returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(amqp_connection_state_str(i as c_int)) };
            assert_eq!(name, state.name());
        }
        for unknown in [-1, 5, c_int::MAX, c_int::MIN] {
            assert_eq!(amqp_connection_state::from_raw(unknown), None);
            // SAFETY: as above.
            let name = unsafe { CStr::from_ptr(amqp_connection_state_str(unknown)) };
            assert_eq!(name, c"AMQP_STATE_UNKNOWN");
        }
    }
}

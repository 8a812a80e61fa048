//! Connections: connect, wait, close, stats.

use super::{amqp_connection_handle, amqp_result, ConnectionEntry, CONNECTIONS, QUEUES};
use super::{check_sized, lookup_connection, optional_str, out_param, out_sized, required_str};
use crate::client::address_list::parse_addresses;
use crate::client::options::parse_connection_options;
use crate::client::{CloseReport, Connection, ConnectionState, ConnectionStatsSnapshot};
use crate::error::{Error, ErrorKind};
use std::ffi::{c_char, c_int};
use std::sync::Arc;
use std::time::Duration;

/// The state of a connection, as `amqp_connection_get_stats` reports it:
/// its publish link's (the consume link, opened with the first consumer,
/// reconnects on its own; either link giving up makes the connection Failed).
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
    /// The current state: the publish link's (the consume link's shows in
    /// consume_connects / consume_failed_attempts and the log).
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
    /// Successful connects of the consume link, the first one included: a
    /// second TCP connection, opened when the first consumer is added
    /// (amqp_consume, amqp_consume_ex, amqp_consume_pull) and carrying every
    /// consumer of the connection, so that deliveries flow while the broker
    /// blocks publishers. 0 while no consumer was added. `state` and the
    /// counters above are the publish link's.
    pub consume_connects: u64,
    /// Connect attempts of the consume link that failed, in all.
    pub consume_failed_attempts: u64,
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
            consume_connects,
            consume_failed_attempts,
        } = s;
        amqp_connection_stats {
            size: std::mem::size_of::<amqp_connection_stats>(),
            state: state.into(),
            connects,
            failed_attempts,
            consecutive_failures,
            queues,
            protocol_errors,
            consume_connects,
            consume_failed_attempts,
        }
    }
}

/// Starts a connection to `uri` (`amqp://user:pass@host:port/vhost?heartbeat=10`,
/// or `amqps://` for TLS: the broker's certificate and host name verified
/// against the system's roots, or the query's `cacertfile=PATH` (PEM);
/// `certfile=`/`keyfile=` a client certificate (with `auth_mechanism=external`
/// the login); `tls_insecure_skip_verify=true` verifies nothing and logs a
/// warning at every connect) and returns at once: connecting and every
/// reconnect run in the background, and a broker that is down (or a TLS
/// handshake that fails) is not an error. `options` is NULL or
/// `key=value&...`: reconnect_delay_ms (100), reconnect_delay_max_ms (5000),
/// max_reconnects (0 = never give up), max_buffered (100000 per queue),
/// max_buffered_bytes (64 MiB per queue), max_message_bytes (128 MiB),
/// inline_delivery (true: on a plain TCP link the callback threads read
/// the consume link themselves and a delivery's callback runs on the thread
/// its bytes woke, with no hand-off from the network thread: lower latency
/// and CPU per delivery; one "ramqp-consumer" thread more, which stays free
/// to read; a busy link wakes a reader once 2 KiB wait, or 200 µs after the
/// first byte that came short of that; see amqp_consume_fn. false: the
/// network thread reads it and hands each burst to a callback thread).
/// Several brokers (a cluster): list them in the authority,
/// `amqp://user:pass@h1:5672,h2:5673,h3/vhost`, and/or in the query,
/// `?addresses=h2:5673,h3` (added after the authority's); all share the
/// credentials, vhost and query, each is verified (amqps) as its own host
/// name. The first that answers is used; after a loss, the next one in the
/// list (wrapping around, the lost one last); the backoff runs between full
/// rounds, and max_reconnects counts rounds. The log names the address in
/// use ("connected to ... (generation 3, address 2 of 3)").
/// Errors: AMQP_ERR_INVALID_ARGUMENT (NULL, bad URI or option, an empty or
/// bad entry in a host list, a TLS file that cannot be read; amqp_last_error
/// names it; the password is never repeated).
/// Blocks: never on the network (an amqps:// URI reads its certificate files,
/// or the system's roots, in this call).
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
        let addresses = parse_addresses(unsafe { required_str(uri, "uri") }?)?;
        // SAFETY: `options` as the contract says; parsed into owned values.
        let options = parse_connection_options(unsafe { optional_str(options, "options") }?)?;
        let conn = Connection::connect(addresses, options)?;
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
/// Blocks: up to timeout_ms.
#[no_mangle]
pub extern "C" fn amqp_wait_connected(
    conn: amqp_connection_handle,
    timeout_ms: u32,
) -> amqp_result {
    ffi_boundary!({ wait_connected(conn, timeout_ms) })
}

/// amqp_wait_connected, and on failure the error message also goes to
/// `errbuf` (like snprintf: at most `errcap` bytes, NUL-terminated when
/// `errcap` > 0; untouched on success), for bindings that cannot call
/// amqp_last_error on the same thread. Blocks: up to timeout_ms.
#[no_mangle]
pub unsafe extern "C" fn amqp_wait_connected_e(
    conn: amqp_connection_handle,
    timeout_ms: u32,
    errbuf: *mut c_char,
    errcap: usize,
) -> amqp_result {
    ffi_boundary!(errbuf errbuf, errcap, { wait_connected(conn, timeout_ms) })
}

fn wait_connected(conn: amqp_connection_handle, timeout_ms: u32) -> crate::Result<()> {
    lookup_connection(conn)?
        .conn
        .wait_connected(Duration::from_millis(u64::from(timeout_ms)))
}

/// What amqp_close_ex left undone at its deadline (all 0 after AMQP_OK).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct amqp_close_report {
    /// sizeof(amqp_close_report), set by the caller (the library writes
    /// only what fits).
    pub size: usize,
    /// Publishes not confirmed by the broker.
    pub unsent: u64,
    /// Deliveries deferred (AMQP_DEFER) or polled and not settled.
    pub unsettled: u64,
    /// Consume callbacks still running at the deadline (a close called from
    /// a callback does not count its own).
    pub callbacks_running: u64,
}

impl From<CloseReport> for amqp_close_report {
    /// Field by field, with no `..`: a field added on one side only does
    /// not compile.
    fn from(r: CloseReport) -> Self {
        let CloseReport {
            unsent,
            unsettled,
            callbacks_running,
        } = r;
        amqp_close_report {
            size: std::mem::size_of::<amqp_close_report>(),
            unsent,
            unsettled,
            callbacks_running,
        }
    }
}

/// Stops accepting publishes (AMQP_ERR_CLOSED from then on), stops consumers,
/// waits up to `timeout_ms` until every buffered and in-flight message is
/// confirmed, no consume callback runs any more, and every deferred (or
/// polled) delivery is settled; then closes the connection and frees it and
/// its queue handles (in every case; a second call gets
/// AMQP_ERR_INVALID_HANDLE). AMQP_OK when all of that happened in time;
/// AMQP_ERR_TIMEOUT otherwise, never AMQP_OK while a callback still runs
/// (it keeps running; the consumer's release comes after it returns).
/// `unsent` (may be NULL) receives the number of messages not confirmed,
/// on AMQP_OK and AMQP_ERR_TIMEOUT. Deferred deliveries not settled by then
/// go back to the broker with the connection. May be called from a consume
/// callback (it does not wait for that one). amqp_close_ex tells which
/// wait ran out. Blocks: up to timeout_ms.
#[no_mangle]
pub unsafe extern "C" fn amqp_close_graceful(
    conn: amqp_connection_handle,
    timeout_ms: u32,
    unsent: *mut u64,
) -> amqp_result {
    ffi_boundary!({
        let report = close_connection(conn, timeout_ms)?;
        // SAFETY: the caller promises `unsent` is NULL or a writable
        // uint64_t, valid for the duration of this call.
        if let Some(unsent) = unsafe { unsent.as_mut() } {
            *unsent = report.unsent;
        }
        close_result(&report)
    })
}

/// amqp_close_graceful that reports what was left at the deadline: `out`
/// (may be NULL; else its `size` set to sizeof(amqp_close_report)) is
/// written on AMQP_OK (all 0) and on AMQP_ERR_TIMEOUT (unsent, unsettled,
/// callbacks_running). Blocks: up to timeout_ms.
#[no_mangle]
pub unsafe extern "C" fn amqp_close_ex(
    conn: amqp_connection_handle,
    timeout_ms: u32,
    out: *mut amqp_close_report,
) -> amqp_result {
    // SAFETY: the caller promises `out` is NULL or a writable
    // amqp_close_report of its declared `size`, valid for this call.
    ffi_boundary!({ unsafe { close_ex(conn, timeout_ms, out) } })
}

/// amqp_close_ex, and on failure the error message also goes to `errbuf`
/// (as amqp_wait_connected_e). Blocks: up to timeout_ms.
#[no_mangle]
pub unsafe extern "C" fn amqp_close_ex_e(
    conn: amqp_connection_handle,
    timeout_ms: u32,
    out: *mut amqp_close_report,
    errbuf: *mut c_char,
    errcap: usize,
) -> amqp_result {
    // SAFETY: as in amqp_close_ex.
    ffi_boundary!(errbuf errbuf, errcap, { unsafe { close_ex(conn, timeout_ms, out) } })
}

/// # Safety
/// `out` is NULL or a writable amqp_close_report of its declared `size`.
unsafe fn close_ex(
    conn: amqp_connection_handle,
    timeout_ms: u32,
    out: *mut amqp_close_report,
) -> crate::Result<()> {
    if !out.is_null() {
        // Refused before anything closes.
        // SAFETY: as this function's contract.
        unsafe { check_sized(out, "out") }?;
    }
    let report = close_connection(conn, timeout_ms)?;
    if !out.is_null() {
        // SAFETY: as this function's contract.
        unsafe { out_sized(out, report.into(), "out") }?;
    }
    close_result(&report)
}

/// Closes the connection and frees its handles; what was left undone.
fn close_connection(conn: amqp_connection_handle, timeout_ms: u32) -> crate::Result<CloseReport> {
    let entry = lookup_connection(conn)?;
    if !entry.begin_close() {
        return Err(Error::new(
            ErrorKind::InvalidHandle,
            format!("{conn} is already being closed"),
        ));
    }
    let report = entry
        .conn
        .close(Duration::from_millis(u64::from(timeout_ms)));
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
    Ok(report)
}

/// AMQP_ERR_TIMEOUT, saying what was left, unless the close was clean.
fn close_result(r: &CloseReport) -> crate::Result<()> {
    if r.clean() {
        return Ok(());
    }
    let mut left = Vec::new();
    if r.unsent > 0 {
        left.push(format!(
            "{} message(s) were not confirmed by the broker",
            r.unsent
        ));
    }
    if r.unsettled > 0 {
        left.push(format!(
            "{} deferred delivery(ies) not settled",
            r.unsettled
        ));
    }
    if r.callbacks_running > 0 {
        left.push(format!("{} callback(s) still running", r.callbacks_running));
    }
    Err(Error::new(
        ErrorKind::Timeout,
        format!("close: at the deadline, {}", left.join(", ")),
    ))
}

/// Writes a snapshot of the connection's state and counters to `out`.
/// Blocks: never.
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
/// Blocks: never.
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

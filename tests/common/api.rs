//! Thin wrappers of the C API, so that each test reads like the C API, and the guards that
//! close what a test opened when it fails.

use super::{poll, uri};
use resilient_amqp::*;
use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Library wrappers (thin, so that each test reads like the C API)
// ---------------------------------------------------------------------------------------------

pub fn cs(s: &str) -> CString {
    CString::new(s).expect("no NUL in test strings")
}

fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// The message of the last failed call on this thread.
pub fn last_error() -> String {
    let mut buf = vec![0u8; 1024];
    let n = unsafe { amqp_last_error(buf.as_mut_ptr() as *mut c_char, buf.len()) };
    if n >= buf.len() {
        buf = vec![0u8; n + 1];
        unsafe { amqp_last_error(buf.as_mut_ptr() as *mut c_char, buf.len()) };
    }
    let s = unsafe { CStr::from_ptr(buf.as_ptr() as *const c_char) };
    s.to_string_lossy().into_owned()
}

pub fn result_str(r: amqp_result) -> String {
    raw_result_str(r as i32)
}

pub fn raw_result_str(r: i32) -> String {
    let p = unsafe { amqp_result_str(r as _) };
    assert!(!p.is_null());
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Connection options every test connection gets on top of its own
/// (`RA_TEST_CONNECTION_OPTIONS`, e.g. `inline_delivery=false`: scripts/test.sh
/// runs the consume suites again that way), unless it sets the key itself.
fn with_test_options(options: Option<&str>) -> Option<String> {
    let extra = std::env::var("RA_TEST_CONNECTION_OPTIONS").unwrap_or_default();
    let mut all: Vec<String> = options
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .into_iter()
        .collect();
    for kv in extra.split('&').filter(|kv| !kv.is_empty()) {
        let key = kv.split('=').next().unwrap_or(kv);
        let set = options.is_some_and(|o| o.split('&').any(|p| p.split('=').next() == Some(key)));
        if !set {
            all.push(kv.to_owned());
        }
    }
    (!all.is_empty()).then(|| all.join("&"))
}

pub fn try_connect(uri: &str, options: Option<&str>) -> (amqp_result, u64) {
    let u = cs(uri);
    let options = with_test_options(options);
    let o = options.as_deref().map(cs);
    let mut out: u64 = 0;
    let r = unsafe { amqp_connect(u.as_ptr(), opt_ptr(&o), &mut out) };
    (r, out)
}

/// Connects (asserting AMQP_OK) and returns the handle; does not wait for the connection.
pub fn connect(uri: &str, options: Option<&str>) -> u64 {
    let (r, h) = try_connect(uri, options);
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_connect({uri}, {options:?}): {}",
        last_error()
    );
    assert_ne!(h, 0);
    h
}

/// Connects to the test broker and waits (10 s) until connected.
pub fn connect_ok(options: Option<&str>) -> u64 {
    let c = connect(&uri(), options);
    let r = unsafe { amqp_wait_connected(c, 10_000) };
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_wait_connected: {}",
        last_error()
    );
    c
}

pub fn try_queue_open(
    conn: u64,
    queue: &str,
    exchange: Option<&str>,
    routing_key: Option<&str>,
    options: Option<&str>,
) -> (amqp_result, u64) {
    let q = cs(queue);
    let e = exchange.map(cs);
    let k = routing_key.map(cs);
    let o = options.map(cs);
    let mut out: u64 = 0;
    let r = unsafe {
        amqp_queue_open(
            conn,
            q.as_ptr(),
            opt_ptr(&e),
            opt_ptr(&k),
            opt_ptr(&o),
            &mut out,
        )
    };
    (r, out)
}

pub fn queue_open(
    conn: u64,
    queue: &str,
    exchange: Option<&str>,
    routing_key: Option<&str>,
    options: Option<&str>,
) -> u64 {
    let (r, h) = try_queue_open(conn, queue, exchange, routing_key, options);
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_queue_open({queue}, {options:?}): {}",
        last_error()
    );
    assert_ne!(h, 0);
    h
}

/// Opens a queue on the default exchange with default options.
pub fn open_simple(conn: u64, queue: &str) -> u64 {
    queue_open(conn, queue, None, None, None)
}

pub fn publish(q: u64, body: &[u8]) -> amqp_result {
    unsafe { amqp_publish(q, body.as_ptr() as *const c_void, body.len()) }
}

pub fn publish_ok(q: u64, body: &[u8]) {
    let r = publish(q, body);
    assert_eq!(r, amqp_result::AMQP_OK, "amqp_publish: {}", last_error());
}

pub fn qstats(q: u64) -> amqp_queue_stats {
    let mut s: amqp_queue_stats = unsafe { std::mem::zeroed() };
    s.size = std::mem::size_of::<amqp_queue_stats>();
    let r = unsafe { amqp_queue_get_stats(q, &mut s) };
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_queue_get_stats: {}",
        last_error()
    );
    s
}

pub fn cstats(c: u64) -> amqp_connection_stats {
    let mut s: amqp_connection_stats = unsafe { std::mem::zeroed() };
    s.size = std::mem::size_of::<amqp_connection_stats>();
    let r = unsafe { amqp_connection_get_stats(c, &mut s) };
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_connection_get_stats: {}",
        last_error()
    );
    s
}

pub fn conn_state(c: u64) -> amqp_connection_state {
    cstats(c).state
}

/// amqp_close_graceful with an `unsent` out-parameter.
pub fn close(conn: u64, timeout_ms: u32) -> (amqp_result, u64) {
    let mut unsent: u64 = u64::MAX;
    let r = unsafe { amqp_close_graceful(conn, timeout_ms, &mut unsent) };
    (r, unsent)
}

/// Closes and asserts that everything was confirmed.
pub fn close_ok(conn: u64) {
    let (r, unsent) = close(conn, 20_000);
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_close_graceful: {} (unsent {unsent})",
        last_error()
    );
    assert_eq!(unsent, 0);
}

/// Waits until the library holds nothing for this queue (everything confirmed).
pub fn wait_drained(q: u64, timeout: Duration) {
    let mut last = qstats(q);
    let ok = poll(timeout, Duration::from_millis(20), || {
        last = qstats(q);
        last.buffered == 0
    });
    assert!(
        ok,
        "queue handle {q}: buffer not drained within {timeout:?}: {}",
        fmt_qstats(&last)
    );
}

pub fn fmt_qstats(s: &amqp_queue_stats) -> String {
    format!(
        "buffered={} bytes={} in_flight={} published={} confirmed={} resent={} nacked={} \
         delivered={} acked={} rejected={} requeued={} released={}",
        s.buffered,
        s.buffered_bytes,
        s.in_flight,
        s.published,
        s.confirmed,
        s.resent,
        s.nacked,
        s.delivered,
        s.acked,
        s.rejected,
        s.requeued,
        s.released
    )
}

// ---------------------------------------------------------------------------------------------
// Guards: a failed assert (a panic) must not leave an open connection on the shared broker
// ---------------------------------------------------------------------------------------------

/// How long a guard's close may wait for confirms: a failing test is not held up long.
pub const GUARD_CLOSE_MS: u32 = 2000;

/// Is `conn` a connection handle the library still knows (not closed yet)?
pub fn conn_is_open(conn: u64) -> bool {
    let mut s: amqp_connection_stats = unsafe { std::mem::zeroed() };
    s.size = std::mem::size_of::<amqp_connection_stats>();
    unsafe { amqp_connection_get_stats(conn, &mut s) == amqp_result::AMQP_OK }
}

/// Owns a connection handle: closes it (amqp_close_graceful, `GUARD_CLOSE_MS`) when dropped,
/// unless it was closed already, through the guard or by any direct `amqp_close_graceful` on
/// the handle (handles are never reissued, so the library knows which ones are closed). Tests
/// keep using the plain handle (`h()`) with the wrappers; a panic anywhere still closes it.
pub struct ConnGuard {
    handle: u64,
    closed: Cell<bool>,
}

impl ConnGuard {
    pub fn new(handle: u64) -> ConnGuard {
        ConnGuard {
            handle,
            closed: Cell::new(false),
        }
    }

    /// `connect_ok`, guarded: connects to the test broker and waits until connected.
    pub fn connect_ok(options: Option<&str>) -> ConnGuard {
        ConnGuard::new(connect_ok(options))
    }

    /// `connect`, guarded: does not wait for the connection.
    pub fn connect(uri: &str, options: Option<&str>) -> ConnGuard {
        ConnGuard::new(connect(uri, options))
    }

    /// The connection handle.
    pub fn h(&self) -> u64 {
        self.handle
    }

    /// `close`: amqp_close_graceful with an `unsent` out-parameter; the guard is done.
    pub fn close(&self, timeout_ms: u32) -> (amqp_result, u64) {
        self.closed.set(true);
        close(self.handle, timeout_ms)
    }

    /// `close_ok`: closes and asserts that everything was confirmed.
    pub fn close_ok(&self) {
        self.closed.set(true);
        close_ok(self.handle);
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if !self.closed.get() && conn_is_open(self.handle) {
            let _ = close(self.handle, GUARD_CLOSE_MS);
        }
    }
}

/// Several guarded connections (e.g. opened in a loop); all closed on drop.
#[derive(Default)]
pub struct ConnGuards(pub Vec<ConnGuard>);

impl ConnGuards {
    pub fn new() -> ConnGuards {
        ConnGuards(Vec::new())
    }

    /// Guards `handle` and returns it.
    pub fn push(&mut self, handle: u64) -> u64 {
        self.0.push(ConnGuard::new(handle));
        handle
    }
}

pub fn publish_tagged(q: u64, body: &[u8], tag: u64) -> amqp_result {
    unsafe { amqp_publish_tagged(q, body.as_ptr() as *const std::ffi::c_void, body.len(), tag) }
}

pub fn publish_tagged_ok(q: u64, body: &[u8], tag: u64) {
    let r = publish_tagged(q, body, tag);
    assert_eq!(r, amqp_result::AMQP_OK, "publish {tag}: {}", last_error());
}

/// Records the library's log lines (amqp_set_log_callback, process-wide: the last one set wins).
pub struct LogLines(std::sync::Mutex<Vec<(i32, String)>>);

unsafe extern "C-unwind" fn record_log(
    level: amqp_log_level_raw,
    msg: *const std::ffi::c_char,
    ud: *mut std::ffi::c_void,
) {
    let logs = unsafe { &*(ud as *const LogLines) };
    let m = unsafe { std::ffi::CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    logs.0.lock().unwrap().push((level, m));
}

impl LogLines {
    /// Logs at `level` and above go to the returned recorder from now on.
    pub fn capture(level: amqp_log_level) -> &'static LogLines {
        let logs: &'static LogLines = Box::leak(Box::new(LogLines(Default::default())));
        let ud = logs as *const LogLines as *mut std::ffi::c_void;
        let r = unsafe { amqp_set_log_callback(Some(record_log), level as _, ud) };
        assert_eq!(r, amqp_result::AMQP_OK);
        logs
    }

    pub fn lines(&self) -> Vec<(i32, String)> {
        self.0.lock().unwrap().clone()
    }
}

//! Contract v2's consumers, release, stop and close, against the real broker: a consumer
//! set's `release` comes exactly once, after its last callback returned (after
//! amqp_consume_cancel, and after close, also a close that timed out with a callback still
//! running); cancelling one set leaves the others running; cancel and stop with timeout 0
//! begin and return; close returns AMQP_ERR_TIMEOUT (never AMQP_OK) while a callback runs or
//! deferred deliveries are unsettled, and AMQP_OK once they were settled in time; the `_e`
//! variants fill their error buffer on failure only; the log callback's release.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// The userdata of a consumer set with a release: the recorder its callbacks use, and what
/// the release saw.
struct Probe {
    rec: Arc<Recorder>,
    released: AtomicU64,
    /// Callbacks that began after the release (must stay 0).
    used_after_release: AtomicU64,
    /// At the release: callbacks started and finished (they must be equal).
    at_release: Mutex<Option<(u64, u64, Option<String>)>>,
}

impl Probe {
    fn new(rec: Arc<Recorder>) -> Arc<Probe> {
        Arc::new(Probe {
            rec,
            released: AtomicU64::new(0),
            used_after_release: AtomicU64::new(0),
            at_release: Mutex::new(None),
        })
    }

    fn released(&self) -> u64 {
        self.released.load(Ordering::SeqCst)
    }

    /// The release came once, after every callback returned, on a library thread, and no
    /// callback started after it.
    fn assert_released_cleanly(&self) {
        assert_eq!(self.released(), 1, "release exactly once");
        let (started, finished, thread) = self.at_release.lock().unwrap().clone().unwrap();
        assert_eq!(started, finished, "a callback ran at the release");
        assert!(
            thread.is_some_and(|t| t.starts_with("ramqp-")),
            "release on a library thread"
        );
        assert_eq!(self.used_after_release.load(Ordering::SeqCst), 0);
    }
}

unsafe extern "C-unwind" fn probe_cb(
    d: *const amqp_delivery,
    ud: *mut c_void,
) -> amqp_disposition_raw {
    let probe = &*(ud as *const Probe);
    if probe.released() > 0 {
        probe.used_after_release.fetch_add(1, Ordering::SeqCst);
    }
    record_cb(d, Arc::as_ptr(&probe.rec) as *mut c_void)
}

unsafe extern "C-unwind" fn probe_release(ud: *mut c_void) {
    let probe = &*(ud as *const Probe);
    *probe.at_release.lock().unwrap() =
        Some((probe.rec.started(), probe.rec.finished(), os_thread_name()));
    probe.released.fetch_add(1, Ordering::SeqCst);
}

/// amqp_consume_ex with `probe_release`; returns the consumer id. The probe is leaked on
/// purpose (a failing test must not leave the library calling into freed memory).
fn consume_ex(q: u64, probe: &Arc<Probe>, repeat: u32) -> u64 {
    let ud = Arc::into_raw(probe.clone()) as *mut c_void;
    let mut id = 0u64;
    let r = unsafe { amqp_consume_ex(q, Some(probe_cb), ud, Some(probe_release), repeat, &mut id) };
    assert_eq!(r, amqp_result::AMQP_OK, "amqp_consume_ex: {}", last_error());
    assert!(id > 0 && id < 1 << 53, "consumer id {id}");
    id
}

/// A recorder whose callbacks wait (at most 20 s) until `gate` opens, then ack.
fn gated(gate: &Arc<AtomicBool>) -> Arc<Recorder> {
    let gate = gate.clone();
    Recorder::new(
        Duration::ZERO,
        Box::new(move |_, _| {
            let until = Instant::now() + Duration::from_secs(20);
            while !gate.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            raw(amqp_disposition::AMQP_ACK)
        }),
    )
}

fn close_ex(c: &ConnGuard, timeout_ms: u32) -> (amqp_result, amqp_close_report) {
    let mut report = amqp_close_report {
        size: std::mem::size_of::<amqp_close_report>(),
        unsent: u64::MAX,
        unsettled: u64::MAX,
        callbacks_running: u64::MAX,
    };
    // The guard's Drop finds the handle closed and does nothing.
    let r = unsafe { amqp_close_ex(c.h(), timeout_ms, &mut report) };
    (r, report)
}

/// Cancelling one consumer set: its release follows its last callback, the queue's other
/// set keeps consuming, nothing is lost, and the id is not valid a second time.
#[test]
fn cancel_ends_one_set_and_its_release_follows_the_last_callback() {
    let c = ConnGuard::connect_ok(None);
    let name = unique_name("cancel");
    let q = queue_open(c.h(), &name, None, None, Some("prefetch=10"));
    let a = Probe::new(Recorder::acking(Duration::from_millis(100)));
    let b = Probe::new(Recorder::acking(Duration::ZERO));
    let (ida, idb) = (consume_ex(q, &a, 2), consume_ex(q, &b, 1));
    assert_ne!(ida, idb);
    for i in 0..40 {
        publish_ok(q, &seq_body(i));
    }
    wait_for("set A has started", T, || a.rec.started() >= 2);
    assert_eq!(
        amqp_consume_cancel(q, ida, 10_000),
        amqp_result::AMQP_OK,
        "{}",
        last_error()
    );
    assert_eq!(
        a.rec.current(),
        0,
        "a callback of A still runs after cancel"
    );
    wait_for("A's release", T, || a.released() == 1);
    a.assert_released_cleanly();
    let a_done = a.rec.started();
    assert_eq!(
        amqp_consume_cancel(q, ida, 1000),
        amqp_result::AMQP_ERR_INVALID_ARGUMENT,
        "a second cancel"
    );
    assert!(last_error().contains(&ida.to_string()), "{}", last_error());
    assert_eq!(
        amqp_consume_cancel(q, 0, 1000),
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );
    for i in 40..60 {
        publish_ok(q, &seq_body(i));
    }
    // Everything reaches B: A's prefetched deliveries went back to the broker.
    wait_for("all 60 acked", T, || {
        let s = qstats(q);
        s.acked >= 60
    });
    wait_queue_messages(&name, 0, T);
    assert_eq!(a.rec.started(), a_done, "A called back after its cancel");
    let mut bodies = a.rec.bodies();
    bodies.extend(b.rec.bodies());
    let (missing, _, foreign) = check_seqs(bodies.iter().map(Vec::as_slice), 60);
    assert!(missing.is_empty() && foreign == 0, "missing {missing:?}");
    assert_eq!(b.released(), 0, "B still runs");
    c.close_ok();
    wait_for("B's release after close", T, || b.released() == 1);
    b.assert_released_cleanly();
    a.rec.assert_no_panic();
    b.rec.assert_no_panic();
}

/// Cancel with timeout 0 returns at once while a callback runs; with a timeout it reports
/// AMQP_ERR_TIMEOUT while one still runs; either way release comes after that callback.
#[test]
fn cancel_zero_begins_and_returns_and_a_timed_out_cancel_says_so() {
    let c = ConnGuard::connect_ok(None);
    let name = unique_name("cancel-0");
    let q = open_simple(c.h(), &name);
    for (timeout_ms, expect) in [
        (0, amqp_result::AMQP_OK),
        (200, amqp_result::AMQP_ERR_TIMEOUT),
    ] {
        let gate = Arc::new(AtomicBool::new(false));
        let p = Probe::new(gated(&gate));
        let id = consume_ex(q, &p, 1);
        publish_ok(q, b"x");
        wait_for("the callback runs", T, || p.rec.current() == 1);
        let t0 = Instant::now();
        assert_eq!(amqp_consume_cancel(q, id, timeout_ms), expect);
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(p.released(), 0, "release while its callback runs");
        gate.store(true, Ordering::SeqCst);
        wait_for("the release", T, || p.released() == 1);
        p.assert_released_cleanly();
    }
    wait_queue_messages(&name, 0, T);
    c.close_ok();
}

/// amqp_consume_stop_timeout: AMQP_ERR_TIMEOUT while a callback runs past the bound, 0 begins
/// and returns, AMQP_OK once none runs; the `_e` variant fills its buffer on the timeout.
#[test]
fn stop_timeout_bounds_the_wait() {
    let c = ConnGuard::connect_ok(None);
    let name = unique_name("stop-timeout");
    let q = open_simple(c.h(), &name);
    let gate = Arc::new(AtomicBool::new(false));
    let rec = gated(&gate);
    consume(q, &rec, 1);
    publish_ok(q, b"x");
    wait_for("the callback runs", T, || rec.current() == 1);
    let t0 = Instant::now();
    assert_eq!(
        amqp_consume_stop_timeout(q, 200),
        amqp_result::AMQP_ERR_TIMEOUT
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    let mut buf = [0x55u8; 128];
    let r =
        unsafe { amqp_consume_stop_timeout_e(q, 100, buf.as_mut_ptr() as *mut c_char, buf.len()) };
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    let text = unsafe { CStr::from_ptr(buf.as_ptr() as *const c_char) };
    assert!(text.to_str().unwrap().contains("still running"), "{text:?}");
    let t0 = Instant::now();
    assert_eq!(amqp_consume_stop_timeout(q, 0), amqp_result::AMQP_OK);
    assert!(t0.elapsed() < Duration::from_millis(500));
    gate.store(true, Ordering::SeqCst);
    assert_eq!(amqp_consume_stop_timeout(q, 10_000), amqp_result::AMQP_OK);
    assert_eq!(rec.current(), 0);
    // Stopped: nothing is called back until start.
    publish_ok(q, b"y");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rec.started(), 1);
    assert_eq!(amqp_consume_start(q), amqp_result::AMQP_OK);
    wait_for("the second delivery", T, || rec.finished() == 2);
    wait_queue_messages(&name, 0, T);
    c.close_ok();
}

/// Issue 13: a close whose deadline passes while a callback runs returns AMQP_ERR_TIMEOUT with
/// callbacks_running = 1 (amqp_close_graceful too); the set's release comes after that
/// callback returned, and the userdata is not used after it.
#[test]
fn close_times_out_while_a_callback_runs_and_release_follows_it() {
    for ex in [true, false] {
        let c = ConnGuard::connect_ok(None);
        let name = unique_name("close-running");
        let q = open_simple(c.h(), &name);
        let gate = Arc::new(AtomicBool::new(false));
        let p = Probe::new(gated(&gate));
        consume_ex(q, &p, 1);
        publish_ok(q, b"x");
        wait_for("the callback runs", T, || p.rec.current() == 1);
        let t0 = Instant::now();
        if ex {
            let (r, report) = close_ex(&c, 300);
            assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT, "{}", last_error());
            assert!(last_error().contains("callback"), "{}", last_error());
            assert_eq!(
                (report.unsent, report.unsettled, report.callbacks_running),
                (0, 0, 1)
            );
        } else {
            let (r, unsent) = c.close(300);
            assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT, "close_graceful said OK");
            assert_eq!(unsent, 0);
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert_eq!(
            amqp_wait_connected(c.h(), 0),
            amqp_result::AMQP_ERR_INVALID_HANDLE
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            p.released(),
            0,
            "release before the running callback returned"
        );
        gate.store(true, Ordering::SeqCst);
        wait_for("the release", T, || p.released() == 1);
        std::thread::sleep(Duration::from_millis(200));
        p.assert_released_cleanly();
        // Its ack could not be sent (the connection is gone): the broker has it again.
        wait_queue_messages(&name, 1, T);
        Reader::new().delete(&name);
    }
}

/// Close waits for deferred deliveries: AMQP_ERR_TIMEOUT with unsettled = N while they stay
/// unsettled (the broker gets them back), AMQP_OK when they are settled within the timeout.
#[test]
fn close_waits_for_deferred_deliveries_to_be_settled() {
    for settle_in_time in [false, true] {
        let c = ConnGuard::connect_ok(None);
        let name = unique_name("close-deferred");
        let q = open_simple(c.h(), &name);
        let p = Probe::new(Recorder::always(
            Duration::ZERO,
            amqp_disposition::AMQP_DEFER,
        ));
        consume_ex(q, &p, 1);
        for i in 0..3 {
            publish_ok(q, &seq_body(i));
        }
        wait_for("3 deferred", T, || p.rec.finished() == 3);
        assert_eq!(qstats(q).unsettled, 3);
        let ids: Vec<u64> = p.rec.deliveries().iter().map(|d| d.delivery_id).collect();
        let settler = settle_in_time.then(|| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                ids.iter()
                    .map(|&id| amqp_settle(q, id, raw(amqp_disposition::AMQP_ACK)))
                    .collect::<Vec<_>>()
            })
        });
        let (r, report) = close_ex(&c, if settle_in_time { 10_000 } else { 300 });
        if let Some(settler) = settler {
            assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
            assert_eq!(
                (report.unsent, report.unsettled, report.callbacks_running),
                (0, 0, 0)
            );
            let results = settler.join().unwrap();
            assert!(
                results.iter().all(|r| *r == amqp_result::AMQP_OK),
                "{results:?}"
            );
            wait_queue_messages(&name, 0, T);
        } else {
            assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
            assert!(last_error().contains("not settled"), "{}", last_error());
            assert_eq!(
                (report.unsent, report.unsettled, report.callbacks_running),
                (0, 3, 0)
            );
            wait_queue_messages(&name, 3, T);
        }
        wait_for("the release", T, || p.released() == 1);
        p.assert_released_cleanly();
        Reader::new().delete(&name);
    }
}

/// The close report's size rule: a smaller (older) struct is written only as far as it goes;
/// a size below the size field is refused before anything closes.
#[test]
fn close_report_is_written_only_as_far_as_its_size() {
    let c = ConnGuard::connect_ok(None);
    let mut bad = amqp_close_report {
        size: 4,
        unsent: 7,
        unsettled: 7,
        callbacks_running: 7,
    };
    let r = unsafe { amqp_close_ex(c.h(), 1000, &mut bad) };
    assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT);
    assert!(conn_is_open(c.h()), "refused before closing");
    let mut old = amqp_close_report {
        size: 16, // size + unsent only
        unsent: 7,
        unsettled: 7,
        callbacks_running: 7,
    };
    let r = unsafe { amqp_close_ex(c.h(), 5000, &mut old) };
    assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
    assert_eq!(
        (old.size, old.unsent, old.unsettled, old.callbacks_running),
        (16, 0, 7, 7)
    );
    assert!(!conn_is_open(c.h()));
}

fn marked_buf() -> [u8; 64] {
    let mut buf = [b'#'; 64];
    buf[63] = 0;
    buf
}

fn buf_text(buf: &[u8]) -> String {
    unsafe { CStr::from_ptr(buf.as_ptr() as *const c_char) }
        .to_string_lossy()
        .into_owned()
}

/// The `_e` variants write the error message into the caller's buffer on failure (truncated
/// like snprintf), and leave it alone on success.
#[test]
fn e_variants_fill_errbuf_on_failure_only() {
    let untouched = buf_text(&marked_buf());
    let c = ConnGuard::connect_ok(None);
    let mut buf = marked_buf();
    let p = buf.as_mut_ptr() as *mut c_char;
    assert_eq!(
        unsafe { amqp_wait_connected_e(c.h(), 1000, p, 64) },
        amqp_result::AMQP_OK
    );
    assert_eq!(buf_text(&buf), untouched);
    assert_eq!(
        unsafe { amqp_wait_connected_e(123_456, 0, p, 64) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
    assert!(buf_text(&buf).contains("123456"), "{}", buf_text(&buf));
    // Truncated like snprintf.
    let mut small = [b'#'; 8];
    let sp = small.as_mut_ptr() as *mut c_char;
    assert_eq!(
        unsafe { amqp_wait_connected_e(123_456, 0, sp, 8) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
    assert_eq!(small[7], 0);
    assert_eq!(buf_text(&small).len(), 7);
    // errcap 0: nothing written, NULL allowed.
    assert_eq!(
        unsafe { amqp_wait_connected_e(123_456, 0, std::ptr::null_mut(), 0) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );

    let name = unique_name("errbuf");
    let q = open_simple(c.h(), &name);
    let (qn, opts) = (cs(&name), cs("durable=false"));
    let mut out = 0u64;
    let mut buf = marked_buf();
    let p = buf.as_mut_ptr() as *mut c_char;
    let r = unsafe {
        amqp_queue_open_e(
            c.h(),
            qn.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            opts.as_ptr(),
            &mut out,
            p,
            64,
        )
    };
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER);
    assert!(buf_text(&buf).contains("406"), "{}", buf_text(&buf));
    let mut buf = marked_buf();
    let p = buf.as_mut_ptr() as *mut c_char;
    let r = unsafe {
        amqp_queue_open_e(
            c.h(),
            qn.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            &mut out,
            p,
            64,
        )
    };
    assert_eq!(r, amqp_result::AMQP_OK);
    assert_eq!(buf_text(&buf), untouched);

    let r = unsafe { amqp_publish_wait_e(q, b"x".as_ptr() as *const c_void, 1, 1000, p, 64) };
    assert_eq!(r, amqp_result::AMQP_OK);
    assert_eq!(buf_text(&buf), untouched);
    let r = unsafe { amqp_publish_wait_e(q, std::ptr::null(), 3, 1000, p, 64) };
    assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT);
    assert!(buf_text(&buf).contains("NULL"), "{}", buf_text(&buf));

    let mut buf = marked_buf();
    let p = buf.as_mut_ptr() as *mut c_char;
    assert_eq!(
        unsafe { amqp_consume_cancel_e(q, 42, 100, p, 64) },
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );
    assert!(buf_text(&buf).contains("42"), "{}", buf_text(&buf));
    let mut buf = marked_buf();
    let p = buf.as_mut_ptr() as *mut c_char;
    assert_eq!(
        unsafe { amqp_consume_stop_timeout_e(q, 1000, p, 64) },
        amqp_result::AMQP_OK
    );
    assert_eq!(buf_text(&buf), untouched);

    let r = unsafe { amqp_close_ex_e(c.h(), 10_000, std::ptr::null_mut(), p, 64) };
    assert_eq!(r, amqp_result::AMQP_OK);
    assert_eq!(buf_text(&buf), untouched);
    let r = unsafe { amqp_close_ex_e(c.h(), 10_000, std::ptr::null_mut(), p, 64) };
    assert_eq!(r, amqp_result::AMQP_ERR_INVALID_HANDLE);
    assert_ne!(buf_text(&buf), untouched);
    Reader::new().delete(&name);
}

// ------------------------------------------------------------------------- log release --

struct LogProbe {
    calls: AtomicU64,
    released: AtomicU64,
    calls_after_release: AtomicU64,
}

unsafe extern "C-unwind" fn log_cb(
    _level: amqp_log_level_raw,
    _msg: *const c_char,
    ud: *mut c_void,
) {
    let p = &*(ud as *const LogProbe);
    if p.released.load(Ordering::SeqCst) > 0 {
        p.calls_after_release.fetch_add(1, Ordering::SeqCst);
    }
    p.calls.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2));
}

unsafe extern "C-unwind" fn log_release(ud: *mut c_void) {
    let p = &*(ud as *const LogProbe);
    p.released.fetch_add(1, Ordering::SeqCst);
}

fn log_probe() -> (Arc<LogProbe>, *mut c_void) {
    let p = Arc::new(LogProbe {
        calls: AtomicU64::new(0),
        released: AtomicU64::new(0),
        calls_after_release: AtomicU64::new(0),
    });
    let ud = Arc::into_raw(p.clone()) as *mut c_void;
    (p, ud)
}

/// The log callback is process-wide: the log tests take turns.
static LOG_TESTS: Mutex<()> = Mutex::new(());

unsafe extern "C-unwind" fn slow_log_cb(
    _level: amqp_log_level_raw,
    _msg: *const c_char,
    ud: *mut c_void,
) {
    let p = &*(ud as *const LogProbe);
    p.calls.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(20));
}

/// Turned off, a callback is called no more (lines queued for it are dropped; only a call in
/// progress finishes), and its release follows at once: a runtime that turns logging off
/// before it ends (Node at exit) is not called after that.
#[test]
fn a_callback_turned_off_is_not_called_for_lines_still_queued() {
    let _turn = LOG_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let debug = amqp_log_level::AMQP_LOG_DEBUG as amqp_log_level_raw;
    let (a, ua) = log_probe();
    let r = unsafe { amqp_set_log_callback_ex(Some(slow_log_cb), debug, ua, Some(log_release)) };
    assert_eq!(r, amqp_result::AMQP_OK);
    // Lines come much faster than the callback takes them: a queue builds up.
    let dead = ConnGuard::connect(
        DEAD_URI,
        Some("reconnect_delay_ms=1&reconnect_delay_max_ms=2"),
    );
    wait_for("log calls", T, || a.calls.load(Ordering::SeqCst) >= 5);
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let r = unsafe { amqp_set_log_callback(None, 0, std::ptr::null_mut()) };
    assert_eq!(r, amqp_result::AMQP_OK);
    let at_off = a.calls.load(Ordering::SeqCst);
    wait_for("the release", T, || a.released.load(Ordering::SeqCst) == 1);
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let after = a.calls.load(Ordering::SeqCst) - at_off;
    drop(dead);
    assert!(
        after <= 1,
        "{after} calls after it was turned off (a call in progress at most)"
    );
    assert!(
        took < Duration::from_millis(500),
        "release took {took:?}: the queue was drained first"
    );
}

/// The log callback's release comes once, when it is replaced or turned off, after its last
/// call.
#[test]
fn log_callback_release_follows_its_last_call() {
    let _turn = LOG_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let debug = amqp_log_level::AMQP_LOG_DEBUG as amqp_log_level_raw;
    let (a, ua) = log_probe();
    let (b, ub) = log_probe();
    let set =
        |ud, cb: amqp_log_fn| unsafe { amqp_set_log_callback_ex(cb, debug, ud, Some(log_release)) };
    assert_eq!(set(ua, Some(log_cb)), amqp_result::AMQP_OK);
    // Something to log: a connection to nowhere retries (and logs) in a loop.
    let dead = ConnGuard::connect(
        DEAD_URI,
        Some("reconnect_delay_ms=5&reconnect_delay_max_ms=10"),
    );
    wait_for("log calls", T, || a.calls.load(Ordering::SeqCst) >= 5);
    assert_eq!(set(ub, Some(log_cb)), amqp_result::AMQP_OK, "replaced");
    wait_for("A's release", T, || a.released.load(Ordering::SeqCst) == 1);
    wait_for("log calls to B", T, || b.calls.load(Ordering::SeqCst) >= 5);
    assert_eq!(b.released.load(Ordering::SeqCst), 0);
    assert_eq!(
        unsafe { amqp_set_log_callback(None, 0, std::ptr::null_mut()) },
        amqp_result::AMQP_OK,
        "turned off"
    );
    wait_for("B's release", T, || b.released.load(Ordering::SeqCst) == 1);
    drop(dead);
    std::thread::sleep(Duration::from_millis(200));
    for p in [&a, &b] {
        assert_eq!(p.released.load(Ordering::SeqCst), 1);
        assert_eq!(p.calls_after_release.load(Ordering::SeqCst), 0);
    }
    // A failed call never releases.
    let (c, uc) = log_probe();
    assert_eq!(
        unsafe { amqp_set_log_callback_ex(Some(log_cb), 9, uc, Some(log_release)) },
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.released.load(Ordering::SeqCst), 0);
}

//! Connecting, giving up, invalid handles/arguments, buffer limits and broker refusals.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::ffi::c_void;
use std::time::{Duration, Instant};

#[test]
fn connect_and_wait_connected_ok() {
    let c_guard = ConnGuard::connect(&uri(), None);
    let c = c_guard.h();
    let r = unsafe { amqp_wait_connected(c, 10_000) };
    assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
    assert_eq!(
        last_error(),
        "",
        "last_error must be empty after a successful call"
    );
    let s = cstats(c);
    assert_eq!(s.state, amqp_connection_state::AMQP_STATE_CONNECTED);
    assert_eq!(s.connects, 1);
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!(s.queues, 0);
    // already connected: returns at once
    let t = Instant::now();
    assert_eq!(
        unsafe { amqp_wait_connected(c, 10_000) },
        amqp_result::AMQP_OK
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    c_guard.close_ok();
}

#[test]
fn wait_connected_times_out_on_dead_port() {
    let c_guard = ConnGuard::connect(DEAD_URI, None);
    let c = c_guard.h();
    let t = Instant::now();
    let r = unsafe { amqp_wait_connected(c, 300) };
    let el = t.elapsed();
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    assert!(
        el >= Duration::from_millis(250),
        "returned after {el:?}, before the timeout"
    );
    assert!(
        el < Duration::from_secs(5),
        "returned after {el:?}, far beyond the 300 ms timeout"
    );
    let s = cstats(c);
    assert_ne!(s.state, amqp_connection_state::AMQP_STATE_CONNECTED);
    assert_ne!(
        s.state,
        amqp_connection_state::AMQP_STATE_FAILED,
        "max_reconnects=0 never gives up"
    );
    assert!(s.failed_attempts >= 1, "refused attempts must be counted");
    // nothing buffered: closing is immediate and complete
    let (r, unsent) = close(c, 1000);
    assert_eq!(r, amqp_result::AMQP_OK);
    assert_eq!(unsent, 0);
}

/// A host list (issue 15): dead addresses first, the live broker last. The first connect goes
/// through the list at once (no backoff inside a round) and takes the one that answers.
#[test]
fn host_list_skips_dead_addresses() {
    let live = uri();
    let hostport = live.split('@').nth(1).unwrap().split('/').next().unwrap();
    let list = live.replacen(hostport, &format!("127.0.0.1:1,127.0.0.1:2,{hostport}"), 1);
    // a slow backoff: connecting quickly proves the round had none
    let c_guard = ConnGuard::connect(&list, Some("reconnect_delay_ms=3000"));
    let c = c_guard.h();
    let t = Instant::now();
    let r = unsafe { amqp_wait_connected(c, 10_000) };
    assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    let s = cstats(c);
    assert_eq!(s.connects, 1);
    assert_eq!(
        s.failed_attempts, 2,
        "the two dead addresses, tried once each"
    );
    let q = open_simple(c, &unique_name("host-list"));
    publish_ok(q, b"through the third address");
    wait_drained(q, Duration::from_secs(10));
    c_guard.close_ok();
}

/// With several addresses, max_reconnects counts full rounds, and the error names an address.
#[test]
fn host_list_max_reconnects_counts_rounds() {
    let c_guard = ConnGuard::connect(
        "amqp://guest:guest@127.0.0.1:1,127.0.0.1:2/%2f",
        Some("max_reconnects=2&reconnect_delay_ms=10&reconnect_delay_max_ms=20"),
    );
    let c = c_guard.h();
    let r = unsafe { amqp_wait_connected(c, 10_000) };
    assert_eq!(r, amqp_result::AMQP_ERR_CLOSED, "{}", last_error());
    assert!(last_error().contains("127.0.0.1:"), "{}", last_error());
    let s = cstats(c);
    assert_eq!(s.state, amqp_connection_state::AMQP_STATE_FAILED);
    assert_eq!(s.failed_attempts, 4, "2 rounds of 2 addresses");
    let _ = close(c, 100);
}

#[test]
fn max_reconnects_gives_up_and_reports_unsent() {
    // slow backoff so that the publishes below surely happen before giving up
    let c_guard = ConnGuard::connect(
        DEAD_URI,
        Some("max_reconnects=2&reconnect_delay_ms=300&reconnect_delay_max_ms=400"),
    );
    let c = c_guard.h();
    let q = queue_open(c, &unique_name("giveup"), None, None, None);
    for i in 0..3 {
        assert_eq!(
            publish(q, &seq_body(i)),
            amqp_result::AMQP_OK,
            "publish while connecting: {}",
            last_error()
        );
    }
    let t = Instant::now();
    let r = unsafe { amqp_wait_connected(c, 20_000) };
    assert_eq!(
        r,
        amqp_result::AMQP_ERR_CLOSED,
        "after max_reconnects wait_connected must report CLOSED"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    let s = cstats(c);
    assert_eq!(s.state, amqp_connection_state::AMQP_STATE_FAILED);
    assert!(
        (2..=3).contains(&s.failed_attempts),
        "max_reconnects=2: expected 2 (or 3 counting the first) failed attempts, got {}",
        s.failed_attempts
    );
    // it stays failed: no further attempts
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        cstats(c).failed_attempts,
        s.failed_attempts,
        "attempts continued after giving up"
    );

    assert_eq!(publish(q, b"late"), amqp_result::AMQP_ERR_CLOSED);
    assert!(
        !last_error().is_empty(),
        "a failed publish must set last_error"
    );
    let st = qstats(q);
    assert_eq!(st.buffered, 3);
    assert_eq!(st.published, 3);
    assert_eq!(st.confirmed, 0);

    let (r, unsent) = close(c, 500);
    assert_eq!(
        r,
        amqp_result::AMQP_ERR_TIMEOUT,
        "nothing could be confirmed: close must not report OK"
    );
    assert_eq!(unsent, 3);
    assert_eq!(publish(q, b"x"), amqp_result::AMQP_ERR_INVALID_HANDLE);
    assert_eq!(close(c, 100).0, amqp_result::AMQP_ERR_INVALID_HANDLE);
    // and the process is still alive: we are here.
}

#[test]
fn invalid_handles() {
    let body = b"x";
    assert_eq!(publish(0, body), amqp_result::AMQP_ERR_INVALID_HANDLE);
    assert_eq!(
        publish(0x1234_5678, body),
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
    assert_eq!(
        unsafe { amqp_wait_connected(0, 10) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
    assert_eq!(close(0, 10).0, amqp_result::AMQP_ERR_INVALID_HANDLE);
    assert_eq!(
        unsafe { amqp_consume_stop(0) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
    assert_eq!(
        unsafe { amqp_consume_start(0) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );

    let c_guard = ConnGuard::connect(DEAD_URI, None);
    let c = c_guard.h();
    let q = queue_open(c, &unique_name("handles"), None, None, None);
    assert!(
        c < (1u64 << 53) && q < (1u64 << 53),
        "handles must stay below 2^53: {c} {q}"
    );
    // a connection handle is not a queue handle and vice versa
    assert_eq!(publish(c, body), amqp_result::AMQP_ERR_INVALID_HANDLE);
    assert_eq!(
        unsafe { amqp_wait_connected(q, 10) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
    assert_eq!(close(q, 10).0, amqp_result::AMQP_ERR_INVALID_HANDLE);
    assert_eq!(
        try_queue_open(q, "x", None, None, None).0,
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
    let mut s: amqp_queue_stats = unsafe { std::mem::zeroed() };
    s.size = std::mem::size_of::<amqp_queue_stats>();
    assert_eq!(
        unsafe { amqp_queue_get_stats(c, &mut s) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
    let mut cs_: amqp_connection_stats = unsafe { std::mem::zeroed() };
    cs_.size = std::mem::size_of::<amqp_connection_stats>();
    assert_eq!(
        unsafe { amqp_connection_get_stats(q, &mut cs_) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );

    let (r, unsent) = close(c, 100);
    assert_eq!(r, amqp_result::AMQP_OK);
    assert_eq!(unsent, 0);
    // freed handles stay invalid, even after new handles are issued
    let c2_guard = ConnGuard::connect(DEAD_URI, None);
    let c2 = c2_guard.h();
    let q2 = queue_open(c2, &unique_name("handles"), None, None, None);
    assert_ne!(c2, c);
    assert_ne!(q2, q);
    assert_eq!(publish(q, body), amqp_result::AMQP_ERR_INVALID_HANDLE);
    assert_eq!(
        unsafe { amqp_wait_connected(c, 10) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
    assert_eq!(publish(q2, body), amqp_result::AMQP_OK);
    let (r, unsent) = close(c2, 100);
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    assert_eq!(unsent, 1);
}

#[test]
fn invalid_arguments() {
    let bad = |opts: &str, word: &str| {
        let (r, h) = try_connect(DEAD_URI, Some(opts));
        assert_eq!(
            r,
            amqp_result::AMQP_ERR_INVALID_ARGUMENT,
            "connect options {opts:?} must be refused"
        );
        assert_eq!(h, 0, "out written on failure");
        let e = last_error();
        assert!(e.contains(word), "last_error {e:?} should name {word:?}");
    };
    bad("no_such_option=1", "no_such_option");
    bad("max_buffered=abc", "max_buffered");
    bad("reconnect_delay_ms=-5", "reconnect_delay_ms");

    // bad URIs / NULLs
    assert_eq!(
        try_connect("http://nope", None).0,
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );
    let mut out: u64 = 7;
    assert_eq!(
        unsafe { amqp_connect(std::ptr::null(), std::ptr::null(), &mut out) },
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );
    assert_eq!(out, 7, "out written on failure");
    let u = cs(DEAD_URI);
    assert_eq!(
        unsafe { amqp_connect(u.as_ptr(), std::ptr::null(), std::ptr::null_mut()) },
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );
    // invalid UTF-8
    let badutf = std::ffi::CString::new(vec![b'a', 0xff, 0xfe]).unwrap();
    assert_eq!(
        unsafe { amqp_connect(badutf.as_ptr(), std::ptr::null(), &mut out) },
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );

    let c_guard = ConnGuard::connect(DEAD_URI, None);
    let c = c_guard.h();
    let (r, h) = try_queue_open(c, &unique_name("args"), None, None, Some("bogus=1"));
    assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT);
    assert_eq!(h, 0);
    assert!(last_error().contains("bogus"), "{}", last_error());
    assert_eq!(
        try_queue_open(c, &unique_name("args"), None, None, Some("queue_type=lazy")).0,
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        try_queue_open(c, &unique_name("args"), None, None, Some("durable=maybe")).0,
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );
    // a queue name longer than 255 bytes cannot exist in AMQP 0-9-1
    assert_eq!(
        try_queue_open(c, &"q".repeat(300), None, None, None).0,
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );
    let q = queue_open(c, &unique_name("args"), None, None, None);
    assert_eq!(
        unsafe { amqp_publish(q, std::ptr::null(), 5) },
        amqp_result::AMQP_ERR_INVALID_ARGUMENT,
        "NULL body with len > 0"
    );
    assert_eq!(
        unsafe { amqp_publish(q, std::ptr::null(), 0) },
        amqp_result::AMQP_OK,
        "NULL body with len 0"
    );
    assert_eq!(
        unsafe { amqp_consume(q, None, std::ptr::null_mut::<c_void>(), 1) },
        amqp_result::AMQP_ERR_INVALID_ARGUMENT,
        "NULL callback"
    );
    let (r, unsent) = close(c, 100);
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    assert_eq!(unsent, 1);
}

#[test]
fn result_str_names_every_code() {
    use amqp_result::*;
    for (code, name) in [
        (AMQP_OK, "AMQP_OK"),
        (AMQP_ERR_INVALID_ARGUMENT, "AMQP_ERR_INVALID_ARGUMENT"),
        (AMQP_ERR_INVALID_HANDLE, "AMQP_ERR_INVALID_HANDLE"),
        (AMQP_ERR_BUFFER_FULL, "AMQP_ERR_BUFFER_FULL"),
        (AMQP_ERR_MESSAGE_TOO_LARGE, "AMQP_ERR_MESSAGE_TOO_LARGE"),
        (AMQP_ERR_CLOSED, "AMQP_ERR_CLOSED"),
        (AMQP_ERR_TIMEOUT, "AMQP_ERR_TIMEOUT"),
        (AMQP_ERR_NOT_CONNECTED, "AMQP_ERR_NOT_CONNECTED"),
        (AMQP_ERR_BROKER, "AMQP_ERR_BROKER"),
        (AMQP_ERR_INTERNAL, "AMQP_ERR_INTERNAL"),
    ] {
        assert_eq!(result_str(code), name);
    }
    // any value, including unknown ones, has a static name
    for raw in [-1, 10, 999, i32::MAX] {
        let s = raw_result_str(raw);
        assert!(!s.is_empty(), "no name for {raw}");
        assert_ne!(s, "AMQP_OK");
    }
}

#[test]
fn last_error_is_copied_like_snprintf() {
    assert_eq!(publish(0, b"x"), amqp_result::AMQP_ERR_INVALID_HANDLE);
    let full = last_error();
    assert!(full.len() > 4, "expected a message, got {full:?}");
    let mut buf = [0x55u8; 4];
    let n = unsafe { amqp_last_error(buf.as_mut_ptr() as *mut _, buf.len()) };
    assert_eq!(n, full.len(), "returns the full length");
    assert_eq!(&buf[..3], &full.as_bytes()[..3]);
    assert_eq!(buf[3], 0, "always NUL-terminated");
    assert_eq!(
        unsafe { amqp_last_error(std::ptr::null_mut(), 0) },
        full.len()
    );
    // per thread
    let other = std::thread::spawn(last_error).join().unwrap();
    assert_eq!(other, "", "last_error leaked to another thread");
}

// ----- buffer limits: the connection never connects, so nothing drains -----

#[test]
fn buffer_full_by_count() {
    let c_guard = ConnGuard::connect(DEAD_URI, None);
    let c = c_guard.h();
    let q = queue_open(c, &unique_name("full"), None, None, Some("max_buffered=10"));
    for i in 0..10 {
        assert_eq!(
            publish(q, &seq_body(i)),
            amqp_result::AMQP_OK,
            "message {i}: {}",
            last_error()
        );
    }
    assert_eq!(
        publish(q, b"one too many"),
        amqp_result::AMQP_ERR_BUFFER_FULL
    );
    assert_eq!(
        publish(q, b""),
        amqp_result::AMQP_ERR_BUFFER_FULL,
        "an empty message still counts"
    );
    let s = qstats(q);
    assert_eq!(s.buffered, 10, "nothing stored on BUFFER_FULL");
    assert_eq!(s.published, 10);
    assert_eq!(s.buffered_bytes, 10 * seq_body(0).len() as u64);
    let (r, unsent) = close(c, 200);
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    assert_eq!(unsent, 10);
}

#[test]
fn buffer_full_by_bytes() {
    let c_guard = ConnGuard::connect(DEAD_URI, None);
    let c = c_guard.h();
    let q = queue_open(
        c,
        &unique_name("fullb"),
        None,
        None,
        Some("max_buffered_bytes=100"),
    );
    for i in 0..10 {
        assert_eq!(
            publish(q, b"0123456789"),
            amqp_result::AMQP_OK,
            "message {i}: {}",
            last_error()
        );
    }
    assert_eq!(publish(q, b"0123456789"), amqp_result::AMQP_ERR_BUFFER_FULL);
    assert_eq!(publish(q, b"x"), amqp_result::AMQP_ERR_BUFFER_FULL);
    let s = qstats(q);
    assert_eq!(s.buffered, 10);
    assert_eq!(s.buffered_bytes, 100);
    let (r, unsent) = close(c, 200);
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    assert_eq!(unsent, 10);
}

#[test]
fn connection_level_max_buffered_applies_to_queues() {
    let c_guard = ConnGuard::connect(DEAD_URI, Some("max_buffered=5&max_buffered_bytes=1000"));
    let c = c_guard.h();
    let q1 = queue_open(c, &unique_name("connmax"), None, None, None);
    let q2 = queue_open(
        c,
        &unique_name("connmax"),
        None,
        None,
        Some("max_buffered=7"),
    );
    let q3 = queue_open(c, &unique_name("connmax"), None, None, None);
    for _ in 0..5 {
        assert_eq!(publish(q1, b"abc"), amqp_result::AMQP_OK);
    }
    assert_eq!(
        publish(q1, b"abc"),
        amqp_result::AMQP_ERR_BUFFER_FULL,
        "connection default max_buffered=5"
    );
    for _ in 0..7 {
        assert_eq!(
            publish(q2, b"abc"),
            amqp_result::AMQP_OK,
            "queue option overrides: {}",
            last_error()
        );
    }
    assert_eq!(publish(q2, b"abc"), amqp_result::AMQP_ERR_BUFFER_FULL);
    // the limit is per queue, and bytes default from the connection too
    assert_eq!(publish(q3, &[0u8; 600]), amqp_result::AMQP_OK);
    assert_eq!(
        publish(q3, &[0u8; 600]),
        amqp_result::AMQP_ERR_BUFFER_FULL,
        "connection max_buffered_bytes=1000"
    );
    let (r, unsent) = close(c, 200);
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    assert_eq!(unsent, 5 + 7 + 1);
}

#[test]
fn message_too_large() {
    let c_guard = ConnGuard::connect(DEAD_URI, Some("max_message_bytes=16"));
    let c = c_guard.h();
    let q = queue_open(c, &unique_name("large"), None, None, None);
    assert_eq!(publish(q, &[b'a'; 16]), amqp_result::AMQP_OK);
    assert_eq!(
        publish(q, &[b'a'; 17]),
        amqp_result::AMQP_ERR_MESSAGE_TOO_LARGE
    );
    let s = qstats(q);
    assert_eq!(s.published, 1);
    assert_eq!(s.buffered, 1);
    let (_, unsent) = close(c, 100);
    assert_eq!(unsent, 1);
}

// ----- the broker refuses -----

#[test]
fn precondition_failed_406_is_reported_and_connection_survives() {
    let reader = Reader::new();
    let name = unique_name("406");
    // declared non-durable by someone else; the library declares durable=true by default
    reader
        .declare(
            &name,
            lapin::options::QueueDeclareOptions {
                durable: false,
                ..Default::default()
            },
        )
        .expect("reader declare");
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let (r, h) = try_queue_open(c, &name, None, None, None);
    assert_eq!(
        r,
        amqp_result::AMQP_ERR_BROKER,
        "redeclare with other attributes must be refused"
    );
    assert_eq!(h, 0, "out written on failure");
    let e = last_error();
    assert!(
        e.contains("406") || e.contains("PRECONDITION_FAILED"),
        "last_error should carry the broker's 406: {e:?}"
    );
    // the same attributes as the existing queue are accepted
    let same = queue_open(c, &name, None, None, Some("durable=false"));
    // and the connection stays usable
    assert_eq!(
        unsafe { amqp_wait_connected(c, 1000) },
        amqp_result::AMQP_OK
    );
    let other = unique_name("406ok");
    let q = open_simple(c, &other);
    publish_ok(q, b"after 406");
    publish_ok(same, b"to the non-durable queue");
    wait_drained(q, Duration::from_secs(10));
    wait_drained(same, Duration::from_secs(10));
    assert_eq!(
        cstats(c).connects,
        1,
        "a channel error must not cost the connection"
    );
    wait_queue_messages(&other, 1, Duration::from_secs(10));
    wait_queue_messages(&name, 1, Duration::from_secs(10));
    c_guard.close_ok();
    reader.delete(&name);
    reader.delete(&other);
}

#[test]
fn exclusive_queue_of_another_connection_is_refused() {
    let reader = Reader::new();
    let name = unique_name("excl");
    reader
        .declare(
            &name,
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .expect("reader declare");
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let (r, _) = try_queue_open(c, &name, None, None, Some("durable=false"));
    assert_eq!(
        r,
        amqp_result::AMQP_ERR_BROKER,
        "an exclusive queue of another connection (405 RESOURCE_LOCKED)"
    );
    assert!(!last_error().is_empty());
    let q = open_simple(c, &unique_name("exclok"));
    publish_ok(q, b"x");
    wait_drained(q, Duration::from_secs(10));
    assert_eq!(
        cstats(c).connects,
        1,
        "a channel error (405) must not cost the connection"
    );
    c_guard.close_ok();
}

#[test]
fn refused_login_fails_for_good() {
    let good = uri();
    let bad = good.replacen("guest:guest@", "guest:wrong-password@", 1);
    assert_ne!(bad, good, "test URI should carry guest:guest credentials");
    let c_guard = ConnGuard::connect(&bad, Some("reconnect_delay_ms=50"));
    let c = c_guard.h();
    let t = Instant::now();
    let r = unsafe { amqp_wait_connected(c, 20_000) };
    assert_eq!(
        r,
        amqp_result::AMQP_ERR_CLOSED,
        "a refused login is final (after {:?})",
        t.elapsed()
    );
    let e = last_error();
    assert!(
        e.contains("403") || e.contains("ACCESS_REFUSED") || e.to_lowercase().contains("auth"),
        "last_error should say the login was refused: {e:?}"
    );
    assert!(
        !e.contains("wrong-password"),
        "last_error must not repeat the password: {e:?}"
    );
    assert_eq!(conn_state(c), amqp_connection_state::AMQP_STATE_FAILED);
    // failed for good: CLOSED, per the contract's meaning of AMQP_ERR_CLOSED
    let (r, _) = try_queue_open(c, &unique_name("refused"), None, None, None);
    assert_eq!(r, amqp_result::AMQP_ERR_CLOSED);
    let (_, unsent) = close(c, 100);
    assert_eq!(unsent, 0);
}

struct LogSink {
    lines: std::sync::Mutex<Vec<(i32, String, Option<String>)>>,
}

unsafe extern "C-unwind" fn log_cb(
    level: amqp_log_level_raw,
    msg: *const std::ffi::c_char,
    ud: *mut c_void,
) {
    let sink = &*(ud as *const LogSink);
    let m = std::ffi::CStr::from_ptr(msg).to_string_lossy().into_owned();
    let name = crate::common::os_thread_name();
    sink.lines.lock().unwrap().push((level, m, name));
}

#[test]
fn log_callback_receives_messages_on_the_log_thread() {
    let sink: &'static LogSink = Box::leak(Box::new(LogSink {
        lines: std::sync::Mutex::new(Vec::new()),
    }));
    let ud = sink as *const LogSink as *mut c_void;
    assert_eq!(
        unsafe { amqp_set_log_callback(Some(log_cb), 99, ud) },
        amqp_result::AMQP_ERR_INVALID_ARGUMENT,
        "level out of range"
    );
    let r = unsafe { amqp_set_log_callback(Some(log_cb), amqp_log_level::AMQP_LOG_DEBUG as _, ud) };
    assert_eq!(r, amqp_result::AMQP_OK);
    ConnGuard::connect_ok(None).close_ok();
    wait_for("a log line", Duration::from_secs(10), || {
        !sink.lines.lock().unwrap().is_empty()
    });
    let off = unsafe { amqp_set_log_callback(None, 0, std::ptr::null_mut()) };
    assert_eq!(off, amqp_result::AMQP_OK);
    let lines = sink.lines.lock().unwrap().clone();
    for (level, m, thread) in &lines {
        assert!((1..=4).contains(level), "level {level} for {m:?}");
        assert_eq!(thread.as_deref(), Some("ramqp-log"), "{m:?}");
        assert!(!m.contains("guest:guest"), "a password in the log: {m:?}");
    }
    assert!(
        lines.iter().any(|(_, m, _)| m.contains("connected")),
        "expected a 'connected' message in {lines:?}"
    );
}

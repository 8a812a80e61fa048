//! Passwords never leak: not in a log line (callback at DEBUG), not in `amqp_last_error`, not in
//! the stats. Needs the broker (a user is created with rabbitmqctl and deleted afterwards).
//!
//! Scenarios, all with distinctive passwords:
//! - a wrong password for guest (the broker refuses the login: 403, failed for good);
//! - a dead port with a password (refused connects, TIMEOUT then CLOSED after max_reconnects);
//! - a user created with `add_user` whose password has characters that need percent-encoding:
//!   connect, publish, consume, `close_all_connections` (loss + reconnect logs), a 406 (queue
//!   redeclared with other attributes), a 403 (exchange named amq.*), an unknown vhost (530);
//! - bad URIs and bad options next to a password (parse errors).
//!
//! `amqp_set_log_callback` is process-global, so this file is its own test binary and its
//! tests run one at a time (SERIAL).
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wrong password for guest.
const WRONG_PW: &str = "S3cr3t-Pw-xyz";
/// The created user's password: ':', '/', '@' and '%' must be percent-encoded in a URI.
const USER_PW: &str = "S3cr3t-Pw:ok/@%9";
const USER: &str = "ra-cred-user";

/// Every form in which a password could leak.
fn secret_forms() -> Vec<String> {
    let mut v = Vec::new();
    for pw in [WRONG_PW, USER_PW] {
        v.push(pw.to_string());
        v.push(pct(pw));
        v.push(pct(pw).to_lowercase());
    }
    // distinctive fragments: catch a leak cut at a special character
    v.push("S3cr3t".into());
    v.push("Pw-xyz".into());
    v.push("Pw:ok".into());
    v.push("Pw%3Aok".into());
    v
}

fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `host:port` of the test broker, from RESILIENT_AMQP_TEST_URI.
fn broker_addr() -> String {
    let u = uri();
    u.split('@')
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("host:port in RESILIENT_AMQP_TEST_URI")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------------------------

struct LogLine {
    level: c_int,
    text: String,
    thread: String,
}

static LOGS: Mutex<Vec<LogLine>> = Mutex::new(Vec::new());

unsafe extern "C-unwind" fn log_cb(level: c_int, message: *const c_char, userdata: *mut c_void) {
    assert_eq!(userdata as usize, 0x5EC2E7, "userdata not handed back");
    let text = if message.is_null() {
        "<NULL message>".to_string()
    } else {
        CStr::from_ptr(message).to_string_lossy().into_owned()
    };
    let thread = common::os_thread_name().unwrap_or_default();
    LOGS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(LogLine {
            level,
            text,
            thread,
        });
}

fn log_count() -> usize {
    LOGS.lock().unwrap().len()
}

/// Waits until no log line arrived for 500 ms (the log thread is asynchronous).
fn logs_settle() {
    let mut last = log_count();
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(50));
        let n = log_count();
        if n != last {
            last = n;
            quiet_since = Instant::now();
        }
    }
}

/// Every text the application can see: error messages, stats, results.
#[derive(Default)]
struct Seen {
    texts: Vec<(String, String)>,
}

impl Seen {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.texts.push((what.into(), text.into()));
    }
    /// Records `amqp_last_error` after a call that returned `r`.
    fn err(&mut self, what: &str, r: amqp_result) -> amqp_result {
        let e = last_error();
        self.add(format!("{what} -> {r:?}"), e);
        r
    }
}

/// Deletes the test user even when the test fails.
struct UserGuard;

impl Drop for UserGuard {
    fn drop(&mut self) {
        let _ = ctl_try(&format!("delete_user '{USER}'"));
    }
}

#[test]
fn passwords_never_in_logs_errors_or_stats() {
    let _g = serial();
    // the callback is the only sink: RESILIENT_AMQP_LOG (stderr) unset before the first log
    std::env::remove_var("RESILIENT_AMQP_LOG");
    let r = unsafe { amqp_set_log_callback(Some(log_cb), 4, 0x5EC2E7 as *mut c_void) };
    assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());

    let addr = broker_addr();
    let mut seen = Seen::default();

    // the user with a password that needs encoding
    let _user = UserGuard;
    let _ = ctl_try(&format!("delete_user '{USER}'"));
    ctl(&format!("add_user '{USER}' '{USER_PW}'"));
    ctl(&format!("set_permissions -p / '{USER}' '.*' '.*' '.*'"));

    // --- 1. wrong password for guest: refused by the broker, failed for good ---------------
    for (k, pw_in_uri) in [WRONG_PW.to_string(), pct(WRONG_PW)].iter().enumerate() {
        let u = format!("amqp://guest:{pw_in_uri}@{addr}/%2f");
        let c_guard = ConnGuard::connect(&u, Some("reconnect_delay_ms=50"));
        let c = c_guard.h();
        let (r, q) = try_queue_open(c, &unique_name("cred-wrong"), None, None, None);
        seen.err("queue_open (wrong password)", r);
        let r = seen.err("wait_connected (wrong password)", unsafe {
            amqp_wait_connected(c, 15_000)
        });
        assert_eq!(
            r,
            amqp_result::AMQP_ERR_CLOSED,
            "the login must be refused for good"
        );
        let e = last_error();
        assert!(e.contains("403") || e.contains("ACCESS_REFUSED"), "{e}");
        if q != 0 {
            let r = publish(q, b"never");
            seen.err("publish (wrong password)", r);
        }
        let st = cstats(c);
        assert_eq!(st.state, amqp_connection_state::AMQP_STATE_FAILED);
        seen.add(
            format!("connection stats (wrong password {k})"),
            format!("{st:?}"),
        );
        let (r, unsent) = close(c, 100);
        seen.err("close (wrong password)", r);
        seen.add("unsent", unsent.to_string());
    }

    // --- 2. dead port with a password: TIMEOUT, then CLOSED after max_reconnects -----------
    let u = format!("amqp://{USER}:{}@127.0.0.1:1/%2f", pct(USER_PW));
    let c_guard = ConnGuard::connect(
        &u,
        Some("max_reconnects=3&reconnect_delay_ms=50&reconnect_delay_max_ms=100"),
    );
    let c = c_guard.h();
    let q = queue_open(c, &unique_name("cred-dead"), None, None, None);
    publish_ok(q, b"stays unsent");
    let r = seen.err("wait_connected (dead port, 20 ms)", unsafe {
        amqp_wait_connected(c, 20)
    });
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    let r = seen.err("wait_connected (dead port)", unsafe {
        amqp_wait_connected(c, 10_000)
    });
    assert_eq!(r, amqp_result::AMQP_ERR_CLOSED);
    assert!(
        last_error().contains(&format!("{USER}@127.0.0.1:1")),
        "the address (without password) should be named: {}",
        last_error()
    );
    seen.err("publish (dead port, failed)", publish(q, b"x"));
    seen.add("queue stats (dead port)", format!("{:?}", qstats(q)));
    seen.add("connection stats (dead port)", format!("{:?}", cstats(c)));
    let (r, unsent) = close(c, 0);
    seen.err("close (dead port)", r);
    assert_eq!(unsent, 1);

    // --- 3. the created user: connect, publish, consume, forced reconnect, refusals --------
    let u = format!("amqp://{USER}:{}@{addr}/%2f", pct(USER_PW));
    let c_guard = ConnGuard::connect(&u, Some("reconnect_delay_ms=50"));
    let c = c_guard.h();
    let r = seen.err("wait_connected (user)", unsafe {
        amqp_wait_connected(c, 10_000)
    });
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "the user must log in: {}",
        last_error()
    );
    let qname = unique_name("cred-q");
    let q = queue_open(c, &qname, None, None, None);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    for i in 0..20 {
        publish_ok(q, &seq_body(i));
    }
    wait_for("20 deliveries", Duration::from_secs(10), || {
        rec.unique_bodies() >= 20
    });
    // the broker drops every connection: loss and reconnect are logged
    close_all_connections();
    wait_reconnected(c, 2, Duration::from_secs(20));
    for i in 20..40 {
        publish_ok(q, &seq_body(i));
    }
    wait_for("40 deliveries", Duration::from_secs(15), || {
        rec.unique_bodies() >= 40
    });
    // 406: the queue exists durable; asking for a non-durable one is refused
    let (r, _) = try_queue_open(c, &qname, None, None, Some("durable=false"));
    seen.err("queue_open durable=false (406)", r);
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER);
    assert!(last_error().contains("406"), "{}", last_error());
    // 403: exchange names starting with amq. are reserved
    let (r, _) = try_queue_open(c, &unique_name("cred-x"), Some("amq.cred-test"), None, None);
    seen.err("queue_open exchange amq.* (403)", r);
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER);
    seen.add("queue stats (user)", format!("{:?}", qstats(q)));
    seen.add("connection stats (user)", format!("{:?}", cstats(c)));
    let (r, _) = close(c, 10_000);
    seen.err("close (user)", r);
    assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
    Reader::new().delete(&qname);

    // unknown vhost: refused at login
    let u = format!("amqp://{USER}:{}@{addr}/no-such-vhost", pct(USER_PW));
    let c_guard = ConnGuard::connect(&u, Some("reconnect_delay_ms=50&max_reconnects=5"));
    let c = c_guard.h();
    let r = seen.err("wait_connected (unknown vhost)", unsafe {
        amqp_wait_connected(c, 15_000)
    });
    assert_eq!(r, amqp_result::AMQP_ERR_CLOSED, "{}", last_error());
    seen.add(
        "connection stats (unknown vhost)",
        format!("{:?}", cstats(c)),
    );
    let (r, _) = close(c, 0);
    seen.err("close (unknown vhost)", r);

    // --- 4. parse errors next to a password ------------------------------------------------
    let enc = pct(USER_PW);
    for bad in [
        format!("amqp://{USER}:{enc}@127.0.0.1:99999/%2f"),
        format!("amqps://{USER}:{enc}@127.0.0.1:1/%2f"),
        format!("http://{USER}:{enc}@127.0.0.1:1/%2f"),
        format!("amqp://{USER}:{enc}@127.0.0.1:1/%2f?colour=1"),
        format!("amqp://{USER}:{enc}@127.0.0.1:1/%2f?heartbeat=x"),
        format!("amqp://{USER}:{enc}@/%2f"),
        format!("amqp://{USER}:{WRONG_PW}@127.0.0.1:1/%zz"),
        format!("amqp://{USER}:{WRONG_PW}@[::1/%2f"),
        format!("amqp://{USER}:{USER_PW}@127.0.0.1:1/%2f"), // unencoded: garbled, not leaked
        format!("{USER}:{WRONG_PW}"),
    ] {
        let (r, h) = try_connect(&bad, None);
        seen.err(&format!("connect({})", bad.len()), r);
        if r == amqp_result::AMQP_OK {
            let (r, _) = close(h, 0);
            seen.err("close (odd uri)", r);
        }
    }
    let (r, _) = try_connect(
        &format!("amqp://{USER}:{enc}@127.0.0.1:1/%2f"),
        Some("colour=blue"),
    );
    seen.err("connect bad option", r);
    assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT);

    // --- collect and judge -----------------------------------------------------------------
    logs_settle();
    let r = unsafe { amqp_set_log_callback(None, 0, std::ptr::null_mut()) };
    assert_eq!(r, amqp_result::AMQP_OK);
    let logs = LOGS.lock().unwrap();
    let forms = secret_forms();
    let mut leaks = Vec::new();
    for l in logs.iter() {
        for f in &forms {
            if l.text.contains(f.as_str()) {
                leaks.push(format!(
                    "log line (level {}) contains {f:?}: {}",
                    l.level, l.text
                ));
            }
        }
    }
    for (what, t) in &seen.texts {
        for f in &forms {
            if t.contains(f.as_str()) {
                leaks.push(format!("{what}: contains {f:?}: {t}"));
            }
        }
    }

    let mut by_level = [0usize; 5];
    for l in logs.iter() {
        by_level[(l.level.clamp(0, 4)) as usize] += 1;
    }
    println!(
        "{} log lines (error {}, warn {}, info {}, debug {}), {} error/stat texts, {} secret forms \
         searched",
        logs.len(),
        by_level[1],
        by_level[2],
        by_level[3],
        by_level[4],
        seen.texts.len(),
        forms.len()
    );
    for l in logs.iter().take(40) {
        println!("  log[{}] {}", l.level, l.text);
    }
    for (what, t) in &seen.texts {
        println!("  {what}: {t}");
    }

    // the capture worked and the interesting paths were logged (so a leak had its chance)
    assert!(!logs.is_empty(), "no log line arrived through the callback");
    let wrong_thread: Vec<_> = logs
        .iter()
        .filter(|l| l.thread != "ramqp-log")
        .map(|l| (l.thread.clone(), l.text.clone()))
        .collect();
    assert!(
        wrong_thread.is_empty(),
        "log callback ran off the ramqp-log thread: {wrong_thread:?}"
    );
    assert!(
        logs.iter().all(|l| (1..=4).contains(&l.level)),
        "a log line with a level outside 1..4"
    );
    let any = |needle: &str| logs.iter().any(|l| l.text.contains(needle));
    assert!(
        any(&format!("{USER}@")),
        "no log line names the user's address"
    );
    assert!(
        any("403") || any("ACCESS_REFUSED"),
        "the refused login was not logged"
    );
    assert!(any("lost"), "the forced connection loss was not logged");
    assert!(
        any("Connection refused") || any("refused"),
        "the dead port was not logged"
    );
    assert!(leaks.is_empty(), "password leaks:\n{}", leaks.join("\n"));
}

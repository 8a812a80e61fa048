//! Issue 11, findings 4 and 8, against the real broker: consumers run on their own TCP
//! connection (the consume link) inside one amqp_connection.
//! - A refused consumer (another client's exclusive consumer, no read permission):
//!   amqp_consume / amqp_consume_ex / amqp_consume_pull return AMQP_ERR_BROKER with the
//!   broker's text, nothing stays registered, and publishing on the same handle goes on;
//!   a refusal later (amqp_consume_start) is retried with backoff, not in a loop.
//! - Memory alarm: while the broker blocks the publishers, a consumer on the same
//!   amqp_connection still drains the queue.
//! - The consume link reconnects after close_all_connections and its consumers resume;
//!   settling a delivery of the lost link is AMQP_ERR_STALE_DELIVERY.
//! - A publish-only connection never opens the consume link.
//!
//! The tests of this file run one at a time (`serial`): one closes every connection on the
//! broker, one raises a memory alarm.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Another client (plain lapin) holding an exclusive consumer on a queue (no-ack, so the
/// broker just hands it whatever it routes there); dropping it closes its connection.
struct ExclusiveHolder {
    rt: tokio::runtime::Runtime,
    conn: Option<lapin::Connection>,
}

impl ExclusiveHolder {
    fn take(queue: &str) -> ExclusiveHolder {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let conn = rt.block_on(async {
            let conn = lapin::Connection::connect(&uri(), Default::default())
                .await
                .expect("holder: connect");
            let ch = conn.create_channel().await.expect("holder: channel");
            let opts = lapin::options::BasicConsumeOptions {
                exclusive: true,
                no_ack: true,
                ..Default::default()
            };
            let consumer = ch
                .basic_consume(queue.into(), "holder".into(), opts, Default::default())
                .await
                .expect("holder: exclusive basic.consume");
            // Keep the consumer (and its channel) alive with the connection.
            std::mem::forget(consumer);
            conn
        });
        ExclusiveHolder {
            rt,
            conn: Some(conn),
        }
    }
}

impl Drop for ExclusiveHolder {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = self.rt.block_on(conn.close(200, "done".into()));
        }
    }
}

fn try_consume_ex(q: u64, rec: &Arc<Recorder>, released: &'static AtomicU64) -> (amqp_result, u64) {
    unsafe extern "C-unwind" fn release(ud: *mut c_void) {
        let counter = &*(ud as *const AtomicU64);
        counter.fetch_add(1, Ordering::SeqCst);
    }
    // The recorder is leaked on purpose (see common::try_consume); the release counts.
    let _ = Arc::into_raw(rec.clone());
    let ud = released as *const AtomicU64 as *mut c_void;
    let mut id = 0u64;
    let r = unsafe { amqp_consume_ex(q, Some(record_cb_on(rec)), ud, Some(release), 1, &mut id) };
    (r, id)
}

/// `record_cb` needs the recorder as userdata; consume_ex's userdata is the release counter
/// here, and its callback must never run (the set is refused), so any callback will do.
fn record_cb_on(
    _rec: &Arc<Recorder>,
) -> unsafe extern "C-unwind" fn(*const amqp_delivery, *mut c_void) -> i32 {
    unsafe extern "C-unwind" fn never(_: *const amqp_delivery, _: *mut c_void) -> i32 {
        panic!("a refused consumer's callback ran")
    }
    never
}

fn broker_consumers(queue: &str) -> u64 {
    queue_info(queue, &["consumers"])
        .and_then(|v| v.first().and_then(|c| c.parse().ok()))
        .unwrap_or(0)
}

/// Publishes `n` messages on `q` and waits until every one is confirmed.
fn publish_confirmed(q: u64, n: u64, timeout: Duration) -> Duration {
    let before = qstats(q).confirmed;
    let t = Instant::now();
    for i in 0..n {
        loop {
            match publish(q, &seq_body(i)) {
                amqp_result::AMQP_OK => break,
                amqp_result::AMQP_ERR_BUFFER_FULL => std::thread::sleep(Duration::from_millis(1)),
                r => panic!("amqp_publish: {r:?} {}", last_error()),
            }
        }
    }
    wait_for("all publishes confirmed", timeout, || {
        qstats(q).confirmed >= before + n
    });
    t.elapsed()
}

/// (a) Another client's exclusive consumer: every consume call is AMQP_ERR_BROKER with the
/// broker's text, nothing is registered, publishing on the handle is unaffected; once the
/// holder goes, consuming works.
#[test]
fn exclusive_consumer_elsewhere_refuses_ours_and_publishing_goes_on() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("excl");
    let q = open_simple(conn.h(), &name);
    let holder = ExclusiveHolder::take(&name);

    let rec = Recorder::acking(Duration::ZERO);
    let t = Instant::now();
    let r = try_consume(q, &rec, 2);
    let waited = t.elapsed();
    let text = last_error();
    eprintln!("amqp_consume: {r:?} after {waited:?}: {text}");
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER, "{text}");
    assert!(text.contains("exclusive"), "the broker's text: {text}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    static RELEASED: AtomicU64 = AtomicU64::new(0);
    let (r, id) = try_consume_ex(q, &rec, &RELEASED);
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER, "{}", last_error());
    assert_eq!(id, 0, "consumer_id untouched on failure");
    let mut fd: i32 = -1;
    let r = unsafe { amqp_consume_pull(q, &mut fd) };
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER, "{}", last_error());
    assert_eq!(fd, -1, "notify_fd untouched on failure");
    // The _e variants put the broker's text in the caller's buffer, in the same call.
    let mut buf = [0 as std::ffi::c_char; 256];
    let r = unsafe { amqp_consume_pull_e(q, &mut fd, buf.as_mut_ptr(), buf.len()) };
    let text = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER, "{text}");
    assert!(
        text.contains("exclusive"),
        "amqp_consume_pull_e's text: {text}"
    );
    let mut buf = [0 as std::ffi::c_char; 256];
    let mut id = 0u64;
    let r = unsafe {
        amqp_consume_ex_e(
            q,
            Some(record_cb_on(&rec)),
            std::ptr::null_mut(),
            None,
            1,
            &mut id,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    let text = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER, "{text}");
    assert!(
        text.contains("exclusive"),
        "amqp_consume_ex_e's text: {text}"
    );
    assert_eq!(id, 0);
    let took = publish_confirmed(q, 20_000, Duration::from_secs(60));
    let s = qstats(q);
    eprintln!(
        "20,000 publishes confirmed in {took:?}; consume_refusals {}; {}",
        s.consume_refusals,
        fmt_qstats(&s)
    );
    assert_eq!(s.published, 20_000);
    assert_eq!(s.confirmed, 20_000);
    assert!(s.consume_refusals >= 3, "{}", s.consume_refusals);
    assert_eq!(broker_consumers(&name), 1, "only the holder's consumer");
    assert_eq!(
        RELEASED.load(Ordering::SeqCst),
        0,
        "no release for a refused set"
    );
    assert_eq!(rec.started(), 0);

    drop(holder);
    consume(q, &rec, 1);
    for i in 0..100 {
        publish_ok(q, &seq_body(i));
    }
    wait_for("deliveries after the holder left", T, || {
        rec.finished() >= 100
    });
    assert_eq!(broker_consumers(&name), 1);
    conn.close_ok();
    let _ = ctl_try(&format!("delete_queue {name}"));
}

/// A refusal after the consumer was registered (stop, another client takes the queue, start)
/// is retried with backoff (capped at reconnect_delay_max), counted, never a fast loop; the
/// consumers start once the holder goes; publishing on the handle never stops.
#[test]
fn a_later_refusal_backs_off_and_recovers() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(Some("reconnect_delay_ms=100&reconnect_delay_max_ms=1000"));
    let name = unique_name("later");
    let q = open_simple(conn.h(), &name);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    assert_eq!(unsafe { amqp_consume_stop(q) }, amqp_result::AMQP_OK);
    let holder = ExclusiveHolder::take(&name);
    assert_eq!(unsafe { amqp_consume_start(q) }, amqp_result::AMQP_OK);
    let watch = Duration::from_secs(6);
    let t = Instant::now();
    let mut sent = 0;
    while t.elapsed() < watch {
        publish_ok(q, &seq_body(sent));
        sent += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_drained(q, T);
    let s = qstats(q);
    eprintln!(
        "refusals in {watch:?} (delay 100 ms, max 1 s): {}; {sent} published, {} confirmed",
        s.consume_refusals, s.confirmed
    );
    assert!(s.consume_refusals >= 2, "retried: {}", s.consume_refusals);
    assert!(
        s.consume_refusals <= 15,
        "backed off: {}",
        s.consume_refusals
    );
    assert_eq!(s.confirmed, sent);
    assert_eq!(rec.started(), 0);
    drop(holder);
    publish_ok(q, b"after");
    wait_for("the consumer restarted", T, || rec.finished() >= 1);
    let after = qstats(q).consume_refusals;
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(qstats(q).consume_refusals, after, "no refusal once it runs");
    conn.close_ok();
    let _ = ctl_try(&format!("delete_queue {name}"));
}

/// Deletes the test user when dropped.
struct UserGuard(String);

impl Drop for UserGuard {
    fn drop(&mut self) {
        let _ = ctl_try(&format!("delete_user {}", self.0));
    }
}

/// (b) A user without read permission on the queue: amqp_consume is AMQP_ERR_BROKER
/// ("access ... refused"), publishing works.
#[test]
fn no_read_permission_is_a_broker_error() {
    let _s = serial();
    let user = format!("ra_noread_{}", std::process::id());
    let _guard = UserGuard(user.clone());
    ctl(&format!("add_user {user} secret"));
    ctl(&format!("set_permissions -p / {user} \".*\" \".*\" \"\""));
    let u = uri().replacen("guest:guest", &format!("{user}:secret"), 1);
    assert!(u.contains(&user), "the test URI has guest:guest: {u}");
    let conn = ConnGuard::connect(&u, None);
    assert_eq!(
        unsafe { amqp_wait_connected(conn.h(), 10_000) },
        amqp_result::AMQP_OK,
        "{}",
        last_error()
    );
    let name = unique_name("noread");
    let q = open_simple(conn.h(), &name);
    let rec = Recorder::acking(Duration::ZERO);
    let r = try_consume(q, &rec, 1);
    let text = last_error();
    eprintln!("amqp_consume without read permission: {r:?}: {text}");
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER, "{text}");
    assert!(
        text.contains("403") || text.contains("ACCESS_REFUSED"),
        "{text}"
    );
    publish_confirmed(q, 1_000, T);
    assert_eq!(qstats(q).confirmed, 1_000);
    assert_eq!(broker_consumers(&name), 0);
    conn.close_ok();
    let _ = ctl_try(&format!("delete_queue {name}"));
}

/// Restores the memory watermark when dropped.
struct WatermarkGuard;

impl Drop for WatermarkGuard {
    fn drop(&mut self) {
        let _ = ctl_try("set_vm_memory_high_watermark 0.4");
    }
}

/// (c) Memory alarm: the broker blocks the publishers; a consumer on the SAME amqp_connection
/// (whose publisher is blocked) still receives what was queued.
#[test]
fn consumers_flow_while_the_broker_blocks_publishers() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("alarm");
    let q = open_simple(conn.h(), &name);
    let n = 5_000;
    publish_confirmed(q, n, T);
    let guard = WatermarkGuard;
    ctl("set_vm_memory_high_watermark 0.000001");
    // The publisher is blocked: what it publishes now is not confirmed.
    std::thread::sleep(Duration::from_millis(500));
    let confirmed = qstats(q).confirmed;
    for i in 0..200 {
        publish_ok(q, &seq_body(n + i));
    }
    std::thread::sleep(Duration::from_secs(2));
    let blocked = qstats(q).confirmed == confirmed;
    eprintln!("publisher blocked by the alarm: {blocked}");
    let rec = Recorder::acking(Duration::ZERO);
    let t = Instant::now();
    consume(q, &rec, 1);
    wait_for("the queued messages consumed during the alarm", T, || {
        rec.finished() >= n
    });
    let took = t.elapsed();
    eprintln!(
        "{n} deliveries during the alarm in {took:?} ({:.0} msg/s); confirmed meanwhile: {}",
        n as f64 / took.as_secs_f64(),
        qstats(q).confirmed - confirmed
    );
    assert!(blocked, "the alarm did not block the publisher");
    drop(guard);
    wait_drained(q, T);
    wait_for("the messages published during the alarm", T, || {
        rec.unique_bodies() as u64 >= n + 200
    });
    let c = cstats(conn.h());
    assert_eq!(c.connects, 1);
    assert_eq!(c.consume_connects, 1);
    conn.close_ok();
    let _ = ctl_try(&format!("delete_queue {name}"));
}

/// (d) close_all_connections: both links reconnect, consumers resume, nothing is lost, and a
/// deferred delivery of the lost consume link is AMQP_ERR_STALE_DELIVERY.
#[test]
fn the_consume_link_reconnects_and_consumers_resume() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("relink");
    let q = open_simple(conn.h(), &name);
    let deferred = Arc::new(Mutex::new(Vec::new()));
    let keep = deferred.clone();
    let rec = Recorder::new(
        Duration::ZERO,
        Box::new(move |d, _| {
            let mut k = keep.lock().unwrap();
            if k.is_empty() {
                k.push(d.delivery_id);
                return raw(amqp_disposition::AMQP_DEFER);
            }
            raw(amqp_disposition::AMQP_ACK)
        }),
    );
    consume(q, &rec, 2);
    let n = 2_000;
    publish_confirmed(q, n / 2, T);
    wait_for("the first half consumed", T, || rec.finished() >= n / 2);
    let before = cstats(conn.h());
    assert_eq!(before.consume_connects, 1);
    close_all_connections();
    wait_reconnected(conn.h(), 2, T);
    wait_for("the consume link back", T, || {
        cstats(conn.h()).consume_connects >= 2
    });
    let id = deferred.lock().unwrap()[0];
    let r = unsafe { amqp_settle(q, id, amqp_disposition::AMQP_ACK as i32) };
    assert_eq!(r, amqp_result::AMQP_ERR_STALE_DELIVERY, "{}", last_error());
    for i in n / 2..n {
        publish_ok(q, &seq_body(i));
    }
    wait_drained(q, T);
    wait_for("every message consumed after the reconnect", T, || {
        rec.unique_bodies() as u64 >= n
    });
    let c = cstats(conn.h());
    eprintln!(
        "after close_all_connections: connects {} consume_connects {}; {} deliveries for {n} messages",
        c.connects,
        c.consume_connects,
        rec.finished()
    );
    conn.close_ok();
    let _ = ctl_try(&format!("delete_queue {name}"));
}

/// A publish-only application uses one TCP connection: the consume link never opens.
#[test]
fn publishing_alone_opens_no_consume_link() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("pubonly");
    let q = open_simple(conn.h(), &name);
    publish_confirmed(q, 1_000, T);
    let c = cstats(conn.h());
    assert_eq!(
        (c.connects, c.consume_connects, c.consume_failed_attempts),
        (1, 0, 0)
    );
    conn.close_ok();
    let _ = ctl_try(&format!("delete_queue {name}"));
}

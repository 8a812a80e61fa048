//! Broker outages: stop_app/start_app and close_all_connections while publishing and consuming.
//! Every test here disrupts the whole broker, so they run one at a time (SERIAL), and this binary
//! is the only one that disrupts it (cargo runs test binaries one after another).
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // a previous (failed) test may have left the app stopped; start_app is a no-op otherwise
    let _ = ctl_try("-q start_app");
    wait_broker_up(Duration::from_secs(60));
    g
}

const T: Duration = Duration::from_secs(60);

/// Fast reconnects, so that the tests do not wait for backoff.
const FAST: &str = "reconnect_delay_ms=100&reconnect_delay_max_ms=500";

fn wait_state(c: u64, want: amqp_connection_state, timeout: Duration) {
    let mut last = conn_state(c);
    let ok = poll(timeout, Duration::from_millis(20), || {
        last = conn_state(c);
        last == want
    });
    assert!(
        ok,
        "connection {c}: state {} not reached within {timeout:?}, is {}",
        want as u32, last as u32
    );
}

#[test]
fn queue_open_while_disconnected_declares_on_reconnect() {
    let _g = serial();
    let c_guard = ConnGuard::connect_ok(Some(FAST));
    let c = c_guard.h();
    let mut app = AppStopped::stop();
    wait_state(c, amqp_connection_state::AMQP_STATE_RECONNECTING, T);
    let name = unique_name("late-open");
    let x = format!("ra-x-{name}");
    let (r, q) = try_queue_open(c, &name, Some(&x), Some("k"), Some("exchange_type=fanout"));
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "queue_open while disconnected must succeed: {}",
        last_error()
    );
    for i in 0..5 {
        publish_ok(q, &seq_body(i));
    }
    assert_eq!(
        unsafe { amqp_wait_connected(c, 200) },
        amqp_result::AMQP_ERR_TIMEOUT,
        "not connected while the app is stopped"
    );
    app.start();
    assert_eq!(
        unsafe { amqp_wait_connected(c, 30_000) },
        amqp_result::AMQP_OK
    );
    wait_drained(q, T);
    wait_queue_messages(&name, 5, T);
    assert_eq!(
        exchange_type(&x).as_deref(),
        Some("fanout"),
        "exchange declared on reconnect"
    );
    assert!(cstats(c).connects >= 2);
    c_guard.close_ok();
}

#[test]
fn close_times_out_while_broker_is_down() {
    let _g = serial();
    let c_guard = ConnGuard::connect_ok(Some(FAST));
    let c = c_guard.h();
    let name = unique_name("close-down");
    let q = open_simple(c, &name);
    let mut app = AppStopped::stop();
    wait_state(c, amqp_connection_state::AMQP_STATE_RECONNECTING, T);
    for i in 0..100 {
        publish_ok(q, &seq_body(i));
    }
    let t = Instant::now();
    let (r, unsent) = close(c, 300);
    let el = t.elapsed();
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    assert_eq!(unsent, 100);
    assert!(
        el >= Duration::from_millis(250),
        "close returned after {el:?}, before its timeout"
    );
    assert!(
        el < Duration::from_secs(5),
        "close took {el:?} with a 300 ms timeout"
    );
    assert_eq!(publish(q, b"x"), amqp_result::AMQP_ERR_INVALID_HANDLE);
    app.start();
    // the closed connection must not come back and deliver its buffer later
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        queue_messages(&name),
        0,
        "a closed connection published after coming back"
    );
}

/// Publishes `n` sequenced messages at a steady pace; returns the thread and a progress counter.
fn paced_publisher(
    q: u64,
    n: u64,
    interval_us: u64,
) -> (
    std::thread::JoinHandle<Vec<(u64, amqp_result)>>,
    Arc<AtomicU64>,
) {
    paced_publisher_until(q, Arc::new(AtomicU64::new(n)), interval_us)
}

/// As `paced_publisher`, publishing until `limit` (which the test may lower meanwhile).
fn paced_publisher_until(
    q: u64,
    limit: Arc<AtomicU64>,
    interval_us: u64,
) -> (
    std::thread::JoinHandle<Vec<(u64, amqp_result)>>,
    Arc<AtomicU64>,
) {
    let progress = Arc::new(AtomicU64::new(0));
    let p = progress.clone();
    let h = std::thread::spawn(move || {
        let mut failures = Vec::new();
        let start = Instant::now();
        let mut i = 0;
        while i < limit.load(Ordering::SeqCst) {
            let r = publish(q, &seq_body(i));
            if r != amqp_result::AMQP_OK {
                failures.push((i, r));
            }
            p.store(i + 1, Ordering::SeqCst);
            // steady pace: message i is due at i * interval_us
            let due = Duration::from_micros(i * interval_us);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            i += 1;
        }
        failures
    });
    (h, progress)
}

fn assert_nothing_lost(name: &str, n: u64) {
    let got = Reader::new().drain(name);
    let (missing, dups, foreign) = check_seqs(got.iter().map(|g| g.body.as_slice()), n);
    eprintln!(
        "{name}: {} messages read, {dups} duplicates, {} missing",
        got.len(),
        missing.len()
    );
    assert_eq!(foreign, 0, "unexpected bodies");
    assert!(
        missing.is_empty(),
        "{} of {n} messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
}

#[test]
fn outage_while_publishing_loses_nothing() {
    let _g = serial();
    let c_guard = ConnGuard::connect_ok(Some(FAST));
    let c = c_guard.h();
    let name = unique_name("outage");
    let q = open_simple(c, &name); // durable + persistent by default
                                   // Publishes (2 ms apart) until 1,000 messages after the restart, however long
                                   // rabbitmqctl takes to stop and start the broker on a loaded machine.
    let limit = Arc::new(AtomicU64::new(100_000));
    let (publisher, progress) = paced_publisher_until(q, limit.clone(), 2000);
    wait_for("1000 published", T, || {
        progress.load(Ordering::SeqCst) >= 1000
    });
    let mut app = AppStopped::stop();
    let stopped_at = progress.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(3));
    app.start();
    let restarted_at = progress.load(Ordering::SeqCst);
    let n = restarted_at + 1000;
    limit.store(n, Ordering::SeqCst);
    let failures = publisher.join().unwrap();
    assert!(
        failures.is_empty(),
        "publish failed during the outage: {:?}",
        &failures[..failures.len().min(10)]
    );
    eprintln!("outage from message {stopped_at} to {restarted_at}");
    assert!(
        restarted_at > stopped_at && restarted_at < n,
        "the outage should lie inside the publishing"
    );
    wait_drained(q, Duration::from_secs(120));
    let s = qstats(q);
    eprintln!("stats after outage: {}", fmt_qstats(&s));
    assert_eq!(s.published, n);
    assert_eq!(s.confirmed, n);
    assert!(
        cstats(c).connects >= 2,
        "the connection should have reconnected"
    );
    assert_nothing_lost(&name, n);
    c_guard.close_ok();
}

#[test]
fn connections_killed_while_publishing_lose_nothing() {
    let _g = serial();
    let c_guard = ConnGuard::connect_ok(Some(FAST));
    let c = c_guard.h();
    let name = unique_name("killed");
    let q = open_simple(c, &name);
    let n = 4000u64;
    let (publisher, progress) = paced_publisher(q, n, 1000); // ~4 s
    for k in 1..=3u64 {
        wait_for("progress", T, || {
            progress.load(Ordering::SeqCst) >= k * 1000
        });
        close_all_connections();
        wait_reconnected(c, k + 1, T);
    }
    let failures = publisher.join().unwrap();
    assert!(
        failures.is_empty(),
        "publish failed: {:?}",
        &failures[..failures.len().min(10)]
    );
    wait_drained(q, Duration::from_secs(120));
    let s = qstats(q);
    eprintln!("stats after kills: {}", fmt_qstats(&s));
    assert_eq!(s.confirmed, n);
    assert_nothing_lost(&name, n);
    c_guard.close_ok();
}

#[test]
fn burst_during_outage_is_delivered_after_it() {
    let _g = serial();
    let c_guard = ConnGuard::connect_ok(Some(FAST));
    let c = c_guard.h();
    let name = unique_name("burst");
    let q = open_simple(c, &name);
    let mut app = AppStopped::stop();
    wait_state(c, amqp_connection_state::AMQP_STATE_RECONNECTING, T);
    let n = 20_000u64;
    for i in 0..n {
        publish_ok(q, &seq_body(i));
    }
    assert_eq!(qstats(q).buffered, n);
    app.start();
    wait_drained(q, Duration::from_secs(120));
    wait_queue_messages(&name, n, T);
    assert_nothing_lost(&name, n);
    c_guard.close_ok();
}

#[test]
fn consumers_come_back_after_reconnect_not_doubled() {
    let _g = serial();
    let c_guard = ConnGuard::connect_ok(Some(FAST));
    let c = c_guard.h();
    let name = unique_name("consumers-back");
    let q = open_simple(c, &name);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 3);
    let consumers = |n: u64| {
        let mut last = None;
        let ok = poll(T, Duration::from_millis(200), || {
            last = queue_counts(&name);
            last.map(|c| c.consumers) == Some(n)
        });
        assert!(ok, "expected {n} consumers, broker says {last:?}");
    };
    consumers(3);

    close_all_connections();
    wait_reconnected(c, 2, T);
    consumers(3);
    std::thread::sleep(Duration::from_secs(1));
    consumers(3); // still 3, not 6

    let mut app = AppStopped::stop();
    wait_state(c, amqp_connection_state::AMQP_STATE_RECONNECTING, T);
    app.start();
    wait_reconnected(c, 3, T);
    consumers(3);
    std::thread::sleep(Duration::from_secs(1));
    consumers(3);

    seed_and_expect(&name, &rec, 30);
    c_guard.close_ok();
}

fn seed_and_expect(name: &str, rec: &Arc<Recorder>, n: u64) {
    let bodies: Vec<Vec<u8>> = (0..n).map(seq_body).collect();
    Reader::new().publish(name, &bodies);
    wait_for("seeded messages consumed", T, || {
        rec.unique_bodies() as u64 >= n
    });
    wait_queue_messages(name, 0, T);
}

#[test]
fn consume_while_disconnected_starts_on_connect() {
    let _g = serial();
    let c_guard = ConnGuard::connect_ok(Some(FAST));
    let c = c_guard.h();
    let mut app = AppStopped::stop();
    wait_state(c, amqp_connection_state::AMQP_STATE_RECONNECTING, T);
    let name = unique_name("consume-down");
    let q = open_simple(c, &name);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 2);
    for i in 0..10 {
        publish_ok(q, &seq_body(i));
    }
    app.start();
    wait_for("10 deliveries after reconnect", T, || {
        rec.unique_bodies() >= 10
    });
    wait_queue_messages(&name, 0, T);
    assert_eq!(queue_counts(&name).unwrap().consumers, 2);
    c_guard.close_ok();
}

#[test]
fn consuming_through_connection_kills_loses_nothing() {
    let _g = serial();
    let c_guard = ConnGuard::connect_ok(Some(FAST));
    let c = c_guard.h();
    let name = unique_name("consume-kill");
    let q = open_simple(c, &name);
    let n = 600u64;
    Reader::new().publish(&name, &(0..n).map(seq_body).collect::<Vec<_>>());
    let rec = Recorder::acking(Duration::from_millis(5));
    consume(q, &rec, 2);
    for k in 1..=2u64 {
        wait_for("progress", T, || rec.finished() >= k * 150);
        close_all_connections();
        wait_reconnected(c, k + 1, T);
    }
    wait_for("every message handled", T, || {
        rec.unique_bodies() as u64 >= n
    });
    wait_queue_messages(&name, 0, T);
    let (missing, dups, _) = check_seqs(rec.bodies().iter().map(|b| b.as_slice()), n);
    eprintln!(
        "consume through kills: {} deliveries, {dups} duplicates",
        rec.started()
    );
    assert!(missing.is_empty());
    rec.assert_no_panic();
    c_guard.close_ok();
}

#[test]
fn ack_of_delivery_from_dead_channel_is_not_sent_on_new_one() {
    let _g = serial();
    let c_guard = ConnGuard::connect_ok(Some(FAST));
    let c = c_guard.h();
    let name = unique_name("dead-channel-ack");
    let q = queue_open(c, &name, None, None, Some("prefetch=1"));
    let in_first = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let (in_first2, release2) = (in_first.clone(), release.clone());
    let rec = Recorder::new(
        Duration::ZERO,
        Box::new(move |_, r| {
            if r.started() == 1 {
                in_first2.store(true, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(30);
                while !release2.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            raw(amqp_disposition::AMQP_ACK)
        }),
    );
    consume(q, &rec, 1);
    Reader::new().publish(&name, &(0..5).map(seq_body).collect::<Vec<_>>());
    wait_for("first callback running", T, || {
        in_first.load(Ordering::SeqCst)
    });
    close_all_connections();
    wait_reconnected(c, 2, T);
    release.store(true, Ordering::SeqCst);
    // the first message's ack belongs to the dead channel: the broker redelivers it
    wait_for("all 5 handled", T, || rec.unique_bodies() >= 5);
    wait_queue_messages(&name, 0, T);
    let ds = rec.deliveries();
    let first = &ds[0].body;
    let again: Vec<_> = ds.iter().skip(1).filter(|d| &d.body == first).collect();
    assert_eq!(
        again.len(),
        1,
        "the message in the callback during the kill must be redelivered once"
    );
    assert!(again[0].redelivered, "and flagged redelivered");
    // no channel error from a stale ack: the connection did not drop again
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        cstats(c).connects,
        2,
        "a stale ack on a new channel would have broken it"
    );
    let st = qstats(q);
    eprintln!("stats: {}", fmt_qstats(&st));
    assert_eq!(
        st.delivered, 6,
        "5 messages + 1 redelivery handed to the callback"
    );
    // 5 acks applied; the one decided on the dead channel was dropped, so it
    // counts as released, not acked.
    assert_eq!(st.acked, 5, "acks applied on live channels");
    assert_eq!(st.released, 1, "the stale ack was dropped");
    rec.assert_no_panic();
    c_guard.close_ok();
}

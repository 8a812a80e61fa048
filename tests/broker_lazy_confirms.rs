//! The publish link's confirms read late (`wire::lazy_read`): while the
//! publishing threads send their messages themselves, no thread is woken by
//! a confirm as it arrives. What the eager reader gave for free must hold:
//! the confirms are read when publishing pauses (the runtime's timer), the
//! broker's heartbeats are read, and what the broker sends between
//! confirms (a basic.return for a deleted queue) still works.

mod common;

use common::*;
use resilient_amqp::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// One test at a time: the log capture is the process's.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The test broker's URI with a 1 s heartbeat: three silent ticks (1.5 s)
/// drop a link.
fn uri_heartbeat_1s() -> String {
    let u = uri();
    let sep = if u.contains('?') { '&' } else { '?' };
    format!("{u}{sep}heartbeat=1")
}

fn went_lazy(logs: &LogLines) -> bool {
    logs.lines()
        .iter()
        .any(|l| l.1.contains("confirms read late"))
}

/// A few messages sent by the publishing thread (fewer than 4 in flight:
/// it never reads the link itself), then a pause longer than the
/// heartbeat bound. Without the runtime's timer the confirms would stay
/// unread (confirmed 0) and so would the heartbeats (the link dropped,
/// connects 2).
#[test]
fn confirms_and_heartbeats_are_read_when_publishing_pauses() {
    let _one = serial();
    let logs = LogLines::capture(amqp_log_level::AMQP_LOG_DEBUG);
    let conn = ConnGuard::connect(&uri_heartbeat_1s(), None);
    let c = conn.h();
    assert_eq!(amqp_wait_connected(c, 10_000), amqp_result::AMQP_OK);
    let name = unique_name("lazy-pause");
    let q = queue_open(c, &name, None, None, None);
    let mut sent = 0u64;
    for round in 1..=3u64 {
        for _ in 0..3 {
            publish_ok(q, &seq_body(sent));
            sent += 1;
        }
        let t0 = Instant::now();
        wait_for("the confirms after a pause", T, || {
            qstats(q).confirmed == sent
        });
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "round {round}: confirms read only after {:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    assert!(went_lazy(logs), "the publish link never read late");
    assert_eq!(
        cstats(c).connects,
        1,
        "the publish link was dropped (its heartbeats unread?)"
    );
    let got = Reader::new().drain(&name);
    let bodies: Vec<&[u8]> = got.iter().map(|g| g.body.as_slice()).collect();
    let (missing, dups, foreign) = check_seqs(bodies.iter().copied(), sent);
    assert!(
        missing.is_empty() && dups == 0 && foreign == 0,
        "missing {missing:?}, duplicated {dups:?}, foreign {foreign}"
    );
    conn.close_ok();
}

/// Publishing at a steady 1,000 msg/s (the publishing thread sends, and
/// reads the link itself every few messages) while another thread deletes
/// the queue: the basic.return that follows is read by the publishing
/// thread too; the queue is declared again and every message published
/// after the delete arrives.
#[test]
fn a_queue_deleted_while_publishing_at_a_steady_rate_comes_back() {
    let _one = serial();
    let logs = LogLines::capture(amqp_log_level::AMQP_LOG_DEBUG);
    let conn = ConnGuard::connect_ok(None);
    let c = conn.h();
    let name = unique_name("lazy-deleted");
    let q = queue_open(c, &name, None, None, None);
    let n = 3_000u64;
    // The highest sequence number published before the delete returned.
    let published = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deleter = {
        let (name, published) = (name.clone(), published.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1_000));
            Reader::new().delete(&name);
            published.load(std::sync::atomic::Ordering::SeqCst)
        })
    };
    let start = Instant::now();
    for i in 0..n {
        publish_ok(q, &seq_body(i));
        published.store(i + 1, std::sync::atomic::Ordering::SeqCst);
        // Paced from the start, so a slow moment does not become a burst.
        let due = start + Duration::from_millis(i + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let first_after = deleter.join().expect("the deleting thread");
    wait_drained(q, T);
    assert!(went_lazy(logs), "the publish link never read late");
    let got = Reader::new().drain(&name);
    let bodies: Vec<&[u8]> = got.iter().map(|g| g.body.as_slice()).collect();
    let (missing, _dups, _foreign) = check_seqs(bodies.iter().copied(), n);
    let missing_after: Vec<u64> = missing.into_iter().filter(|&s| s >= first_after).collect();
    assert!(
        missing_after.is_empty(),
        "published after the delete but lost: {missing_after:?}"
    );
    let s = qstats(q);
    assert_eq!(s.confirmed, n, "{}", fmt_qstats(&s));
    assert!(s.resent > 0, "nothing came back: {}", fmt_qstats(&s));
    conn.close_ok();
}

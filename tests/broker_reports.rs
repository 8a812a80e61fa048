//! Delivery reports (issue 11): every published message ends in exactly one
//! report, on the report thread, after its confirm or its failure:
//! confirmed, expired after publish_timeout_ms, unsent at close.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::ffi::c_void;
use std::time::{Duration, Instant};

#[test]
fn every_message_ends_in_one_report_in_publish_order() {
    let _broker = broker_shared();
    let c = ConnGuard::connect_ok(None);
    let name = unique_name("reports");
    let q = queue_open(
        c.h(),
        &name,
        None,
        None,
        Some("durable=false&persistent=false"),
    );
    let reports = Reports::attach(q);
    const N: u64 = 20_000;
    for i in 0..N {
        publish_tagged_ok(q, &seq_body(i), i + 1);
    }
    let all = reports.wait_for(N as usize, Duration::from_secs(60));
    assert!(all
        .iter()
        .all(|r| r.status == amqp_report_status::AMQP_REPORT_CONFIRMED
            && r.attempts == 1
            && r.code == 0
            && r.reason.is_empty()));
    let tags: Vec<u64> = all.iter().map(|r| r.tag).collect();
    assert_eq!(
        tags,
        (1..=N).collect::<Vec<_>>(),
        "confirms in publish order"
    );
    // A message's room is given back once its report returned.
    wait_for("the buffer to empty", Duration::from_secs(5), || {
        qstats(q).buffered == 0
    });
    let s = qstats(q);
    assert_eq!((s.confirmed, s.failed), (N, 0), "{}", fmt_qstats(&s));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(reports.all().len(), N as usize, "a report came twice");
    assert_eq!(queue_messages(&name), N);
    c.close_ok();
}

#[test]
fn a_slow_report_function_slows_publishing_instead_of_growing_memory() {
    let _broker = broker_shared();
    let c = ConnGuard::connect_ok(None);
    let q = queue_open(
        c.h(),
        &unique_name("slowreports"),
        None,
        None,
        Some("durable=false&persistent=false&max_buffered=50"),
    );
    let slow = std::sync::Arc::new(SlowReports::default());
    let r = unsafe {
        amqp_set_report_callback(
            q,
            Some(slow_report),
            std::sync::Arc::as_ptr(&slow) as *mut c_void,
        )
    };
    assert_eq!(r, amqp_result::AMQP_OK);
    let mut full = 0;
    let mut stored = 0u64;
    let t0 = Instant::now();
    while stored < 200 {
        match publish(q, b"m") {
            amqp_result::AMQP_OK => stored += 1,
            amqp_result::AMQP_ERR_BUFFER_FULL => {
                full += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            other => panic!("{other:?}: {}", last_error()),
        }
        assert!(qstats(q).buffered <= 50);
    }
    // 200 reports at 2 ms each: at least 150 had to wait for one.
    assert!(full > 0, "never BUFFER_FULL");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    wait_for("every report", Duration::from_secs(10), || {
        slow.seen.load(std::sync::atomic::Ordering::SeqCst) == 200
    });
    c.close_ok();
}

#[derive(Default)]
struct SlowReports {
    seen: std::sync::atomic::AtomicU64,
}

unsafe extern "C-unwind" fn slow_report(_r: *const amqp_delivery_report, ud: *mut c_void) {
    let s = unsafe { &*(ud as *const SlowReports) };
    std::thread::sleep(Duration::from_millis(2));
    s.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn messages_expire_after_publish_timeout_while_the_broker_is_away() {
    let _broker = broker_alone();
    let c = ConnGuard::connect_ok(Some("reconnect_delay_max_ms=500"));
    let name = unique_name("expire");
    let q = queue_open(
        c.h(),
        &name,
        None,
        None,
        Some("durable=false&persistent=false&publish_timeout_ms=300"),
    );
    let reports = Reports::attach(q);
    let mut stopped = AppStopped::stop();
    let t0 = Instant::now();
    for i in 0..20 {
        publish_tagged_ok(q, &seq_body(i), i);
    }
    let all = reports.wait_for(20, Duration::from_secs(5));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "expired early: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "expired late: {took:?}");
    for r in &all {
        assert_eq!(r.status, amqp_report_status::AMQP_REPORT_EXPIRED, "{r:?}");
        assert!(r.reason.contains("publish_timeout_ms 300"), "{r:?}");
    }
    let s = qstats(q);
    assert_eq!(
        (s.expired, s.failed, s.buffered),
        (20, 20, 0),
        "{}",
        fmt_qstats(&s)
    );
    stopped.start();
    unsafe { amqp_wait_connected(c.h(), 30_000) };
    publish_tagged_ok(q, b"after", 100);
    let all = reports.wait_for(21, Duration::from_secs(20));
    assert_eq!(all[20].tag, 100);
    assert_eq!(all[20].status, amqp_report_status::AMQP_REPORT_CONFIRMED);
    c.close_ok();
}

#[test]
fn close_reports_what_it_could_not_send() {
    let _broker = broker_alone();
    let c = ConnGuard::connect_ok(None);
    let q = queue_open(
        c.h(),
        &unique_name("unsent"),
        None,
        None,
        Some("durable=false&persistent=false"),
    );
    let reports = Reports::attach(q);
    let _stopped = AppStopped::stop();
    for i in 0..50 {
        publish_tagged_ok(q, &seq_body(i), i);
    }
    let (r, unsent) = c.close(300);
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    assert_eq!(unsent, 50);
    // Every report came before close returned.
    let all = reports.all();
    assert_eq!(all.len(), 50);
    assert!(all
        .iter()
        .all(|r| r.status == amqp_report_status::AMQP_REPORT_UNSENT));
    let tags: Vec<u64> = all.iter().map(|r| r.tag).collect();
    assert_eq!(tags, (0..50).collect::<Vec<_>>());
}

/// The publish timeout counts from when a message goes out, not from the
/// last confirm: a queue idle for longer than publish_timeout_ms must not
/// take its next message for a stuck channel.
#[test]
fn an_idle_queue_is_not_stuck_when_it_publishes_again() {
    let _broker = broker_shared();
    let c = ConnGuard::connect_ok(None);
    let q = queue_open(
        c.h(),
        &unique_name("idle_timeout"),
        None,
        None,
        Some("durable=false&persistent=false&publish_timeout_ms=300"),
    );
    let reports = Reports::attach(q);
    for i in 0..3u64 {
        publish_tagged_ok(q, &seq_body(i), i + 1);
        reports.wait_for(i as usize + 1, Duration::from_secs(10));
        // Idle for twice the publish timeout before the next message.
        std::thread::sleep(Duration::from_millis(600));
    }
    let all = reports.all();
    assert!(
        all.iter()
            .all(|r| r.status == amqp_report_status::AMQP_REPORT_CONFIRMED && r.attempts == 1),
        "{all:?}"
    );
    let s = qstats(q);
    assert_eq!(
        (s.confirmed, s.resent, s.failed),
        (3, 0, 0),
        "{}",
        fmt_qstats(&s)
    );
    c.close_ok();
}

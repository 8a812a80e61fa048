//! Delivery reports in pull mode (amqp_reports_pull, amqp_poll_reports,
//! amqp_reports_free): every message's report waits in the library until
//! polled, keeps its buffer room until then, and the descriptor says when
//! reports wait.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

struct Polled {
    tag: u64,
    status: amqp_report_status,
    reason: String,
}

/// Polls up to `max` reports, copying and freeing them.
fn poll_reports(q: u64, max: usize, timeout_ms: u32) -> (amqp_result, Vec<Polled>) {
    let mut out = vec![std::ptr::null(); max];
    let mut n = usize::MAX;
    let r = unsafe { amqp_poll_reports(q, out.as_mut_ptr(), max, timeout_ms, &mut n) };
    let got = out[..n.min(max)]
        .iter()
        .map(|&p| {
            let rep = unsafe { &*p };
            let reason = if rep.reason.is_null() {
                String::new()
            } else {
                unsafe { std::ffi::CStr::from_ptr(rep.reason) }
                    .to_string_lossy()
                    .into_owned()
            };
            Polled {
                tag: rep.tag,
                status: rep.status,
                reason,
            }
        })
        .collect();
    unsafe { amqp_reports_free(out.as_ptr(), n.min(max)) };
    (r, got)
}

fn readable(fd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

fn reports_pull(q: u64) -> OwnedFd {
    let mut fd = -1;
    assert_eq!(
        unsafe { amqp_reports_pull(q, &mut fd) },
        amqp_result::AMQP_OK
    );
    assert!(fd >= 0);
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[test]
fn every_message_is_reported_once_in_order_when_polled() {
    let _broker = broker_shared();
    let c = ConnGuard::connect_ok(None);
    let name = unique_name("pullreports");
    let q = queue_open(c.h(), &name, None, None, Some("durable=false"));
    let fd = reports_pull(q);
    assert!(!readable(&fd), "readable before any report");
    const N: u64 = 5_000;
    for i in 0..N {
        publish_tagged_ok(q, &seq_body(i), i + 1);
    }
    let mut tags = Vec::new();
    let t0 = Instant::now();
    while (tags.len() as u64) < N && t0.elapsed() < Duration::from_secs(60) {
        let (r, got) = poll_reports(q, 256, 100);
        match r {
            amqp_result::AMQP_OK => assert!(!got.is_empty()),
            amqp_result::AMQP_ERR_TIMEOUT => assert!(got.is_empty()),
            other => panic!("amqp_poll_reports: {other:?}"),
        }
        for p in got {
            assert_eq!(p.status, amqp_report_status::AMQP_REPORT_CONFIRMED);
            assert!(p.reason.is_empty());
            tags.push(p.tag);
        }
    }
    assert_eq!(
        tags,
        (1..=N).collect::<Vec<_>>(),
        "once each, in publish order"
    );
    assert!(!readable(&fd), "readable with no report waiting");
    let (r, got) = poll_reports(q, 16, 0);
    assert_eq!((r, got.len()), (amqp_result::AMQP_ERR_TIMEOUT, 0));
    assert_eq!(qstats(q).buffered, 0, "polled reports free their room");
    assert_eq!(queue_messages(&name), N);
    c.close_ok();
}

#[test]
fn unpolled_reports_hold_buffer_room_but_are_not_unsent() {
    let _broker = broker_shared();
    let c = ConnGuard::connect_ok(None);
    let q = queue_open(
        c.h(),
        &unique_name("pullroom"),
        None,
        None,
        Some("durable=false&max_buffered=20"),
    );
    let fd = reports_pull(q);
    for i in 0..20 {
        publish_tagged_ok(q, &seq_body(i), i + 1);
    }
    wait_for("20 confirms", Duration::from_secs(10), || {
        qstats(q).confirmed == 20
    });
    assert!(readable(&fd), "reports wait: the descriptor is readable");
    // Confirmed, but the reports were not taken: no room yet.
    assert_eq!(publish(q, b"one more"), amqp_result::AMQP_ERR_BUFFER_FULL);
    let (r, got) = poll_reports(q, 5, 0);
    assert_eq!((r, got.len()), (amqp_result::AMQP_OK, 5));
    assert_eq!(
        publish(q, b"one more"),
        amqp_result::AMQP_OK,
        "room after a poll"
    );
    // Close does not wait for reports nobody polls: they are not unsent.
    let t0 = Instant::now();
    let (r, unsent) = c.close(5000);
    assert_eq!((r, unsent), (amqp_result::AMQP_OK, 0));
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "close waited for unpolled reports"
    );
    assert!(readable(&fd), "readable for good after close");
}

#[test]
fn nacked_messages_are_reported_with_the_reason_and_a_report_function_switches_back() {
    let _broker = broker_shared();
    let c = ConnGuard::connect_ok(None);
    let q = queue_open(
        c.h(),
        &unique_name("pullnack"),
        None,
        None,
        Some("durable=false&max_length=1&overflow=reject-publish&publish_retries=0"),
    );
    let _fd = reports_pull(q);
    publish_tagged_ok(q, b"fits", 1);
    publish_tagged_ok(q, b"refused", 2);
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < 2 && t0.elapsed() < Duration::from_secs(20) {
        got.extend(poll_reports(q, 8, 100).1);
    }
    got.sort_by_key(|p| p.tag);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].status, amqp_report_status::AMQP_REPORT_CONFIRMED);
    assert_eq!(got[1].status, amqp_report_status::AMQP_REPORT_NACKED);
    assert!(!got[1].reason.is_empty(), "a nack says why");
    // A report function replaces pull mode: polling is then refused.
    let reports = Reports::attach(q);
    let (r, _) = poll_reports(q, 8, 0);
    assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT);
    publish_tagged_ok(q, b"x", 3);
    assert_eq!(reports.wait_for(1, Duration::from_secs(10)).len(), 1);
    c.close_ok();
}

#[test]
fn a_blocked_poll_learns_the_close_and_bad_arguments_are_refused() {
    let _broker = broker_shared();
    let c = ConnGuard::connect_ok(None);
    let q = queue_open(
        c.h(),
        &unique_name("pullclose"),
        None,
        None,
        Some("durable=false"),
    );
    let mut n = 7usize;
    let mut out = [std::ptr::null(); 4];
    // Not in pull mode yet.
    let r = unsafe { amqp_poll_reports(q, out.as_mut_ptr(), 4, 0, &mut n) };
    assert_eq!((r, n), (amqp_result::AMQP_ERR_INVALID_ARGUMENT, 0));
    assert_eq!(
        unsafe { amqp_reports_pull(q, std::ptr::null_mut()) },
        amqp_result::AMQP_OK
    );
    let r = unsafe { amqp_poll_reports(q, std::ptr::null_mut(), 4, 0, &mut n) };
    assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT);
    let r = unsafe { amqp_poll_reports(q, out.as_mut_ptr(), 0, 0, &mut n) };
    assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT);
    let r = unsafe { amqp_poll_reports(q, out.as_mut_ptr(), 4, 0, std::ptr::null_mut()) };
    assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT);
    unsafe { amqp_reports_free(std::ptr::null(), 3) };
    let r = unsafe { amqp_reports_pull(u64::MAX, std::ptr::null_mut()) };
    assert_eq!(r, amqp_result::AMQP_ERR_INVALID_HANDLE);
    let poller = std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut out = [std::ptr::null(); 4];
        let mut n = 0usize;
        let r = unsafe { amqp_poll_reports(q, out.as_mut_ptr(), 4, 30_000, &mut n) };
        (r, t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    c.close_ok();
    let (r, took) = poller.join().unwrap();
    assert!(
        matches!(
            r,
            amqp_result::AMQP_ERR_CLOSED | amqp_result::AMQP_ERR_INVALID_HANDLE
        ),
        "{r:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "the close did not end the wait: {took:?}"
    );
}

#[test]
fn close_waits_for_reports_being_polled_beside_it() {
    // An event loop polls reports while another thread closes: every report reaches it
    // before the queue handle goes.
    let _broker = broker_shared();
    let c = ConnGuard::connect_ok(None);
    let q = queue_open(
        c.h(),
        &unique_name("pullclose2"),
        None,
        None,
        Some("durable=false"),
    );
    let _fd = reports_pull(q);
    const N: u64 = 3000;
    for i in 0..N {
        publish_tagged_ok(q, &seq_body(i), i + 1);
    }
    wait_for("all confirmed", Duration::from_secs(20), || {
        qstats(q).confirmed == N
    });
    let poller = std::thread::spawn(move || {
        let mut tags = 0u64;
        loop {
            // slowly: 50 at a time
            let (r, got) = poll_reports(q, 50, 0);
            tags += got.len() as u64;
            match r {
                amqp_result::AMQP_OK | amqp_result::AMQP_ERR_TIMEOUT => {}
                _ => return tags,
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    std::thread::sleep(Duration::from_millis(10));
    let (r, unsent) = c.close(10_000);
    assert_eq!((r, unsent), (amqp_result::AMQP_OK, 0));
    assert_eq!(
        poller.join().unwrap(),
        N,
        "every report was polled before the close ended"
    );
}

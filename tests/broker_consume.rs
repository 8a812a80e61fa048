//! Consuming against a live broker: dispositions, concurrency, threads, stop/start, re-entrancy.
//! Messages are seeded with the independent lapin `Reader`, so these tests do not depend on the
//! library's publisher (except where publishing from a callback is the point).
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn seed(reader: &Reader, queue: &str, range: std::ops::Range<u64>) {
    let bodies: Vec<Vec<u8>> = range.map(seq_body).collect();
    reader.publish(queue, &bodies);
}

#[test]
fn ack_removes_messages() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("ack");
    let q = open_simple(c, &name);
    let reader = Reader::new();
    seed(&reader, &name, 0..50);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    wait_for("50 callbacks", T, || rec.finished() >= 50);
    wait_queue_messages(&name, 0, T);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rec.started(), 50, "each message exactly once");
    let ds = rec.deliveries();
    let seqs: Vec<u64> = ds.iter().map(|d| parse_seq(&d.body).unwrap()).collect();
    assert_eq!(
        seqs,
        (0..50).collect::<Vec<_>>(),
        "one consumer sees the queue order"
    );
    for d in &ds {
        assert_eq!(d.exchange, "");
        assert_eq!(d.routing_key, name);
        assert_eq!(d.queue, q, "delivery.queue is the queue handle");
        assert!(!d.redelivered);
        assert!(d.delivery_tag > 0);
    }
    let s = qstats(q);
    assert_eq!((s.delivered, s.acked), (50, 50), "{}", fmt_qstats(&s));
    rec.assert_no_panic();
    c_guard.close_ok();
}

#[test]
fn delivery_fields_through_an_exchange() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("fields");
    let x = format!("ra-x-{name}");
    let q = queue_open(
        c,
        &name,
        Some(&x),
        Some("the.key"),
        Some("exchange_type=topic"),
    );
    publish_ok(q, b"hello");
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    wait_for("1 callback", T, || rec.finished() == 1);
    let d = &rec.deliveries()[0];
    assert_eq!(d.body, b"hello");
    assert_eq!(d.exchange, x);
    assert_eq!(d.routing_key, "the.key");
    c_guard.close_ok();
}

#[test]
fn bodies_of_every_size_arrive_whole() {
    // Empty (no body frame), one byte, exactly one frame, and bodies split
    // over several frames (frame_max is 128 KiB), interleaved.
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("sizes");
    let q = open_simple(c, &name);
    let sizes = [0usize, 1, 131_064, 131_065, 300_000, 0, 5, 1 << 20];
    let bodies: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (j * 31 + i) as u8).collect())
        .collect();
    Reader::new().publish(&name, &bodies);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    wait_for("every body", T, || rec.finished() >= bodies.len() as u64);
    let got: Vec<Vec<u8>> = rec.deliveries().into_iter().map(|d| d.body).collect();
    assert_eq!(got.len(), bodies.len());
    for (i, (g, b)) in got.iter().zip(&bodies).enumerate() {
        assert!(
            g == b,
            "body {i} ({} bytes) differs: got {} bytes",
            b.len(),
            g.len()
        );
    }
    wait_queue_messages(&name, 0, T);
    c_guard.close_ok();
}

#[test]
fn reject_without_dlx_drops() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("reject");
    let q = open_simple(c, &name);
    seed(&Reader::new(), &name, 0..20);
    let rec = Recorder::always(Duration::ZERO, amqp_disposition::AMQP_REJECT);
    consume(q, &rec, 1);
    wait_for("20 callbacks", T, || rec.finished() >= 20);
    wait_queue_messages(&name, 0, T);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rec.started(), 20, "rejected messages must not come back");
    let s = qstats(q);
    assert_eq!(
        (s.delivered, s.rejected, s.acked, s.requeued),
        (20, 20, 0, 0),
        "{}",
        fmt_qstats(&s)
    );
    c_guard.close_ok();
}

#[test]
fn requeue_redelivers() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("requeue");
    let q = open_simple(c, &name);
    let n = 5u64;
    seed(&Reader::new(), &name, 0..n);
    // first sight of a body: REQUEUE; second: ACK
    let rec = Recorder::new(
        Duration::ZERO,
        Box::new(|d, r| {
            let times = r
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|x| x.body == d.body)
                .count();
            if times == 1 {
                raw(amqp_disposition::AMQP_REQUEUE)
            } else {
                raw(amqp_disposition::AMQP_ACK)
            }
        }),
    );
    consume(q, &rec, 1);
    wait_for("2n callbacks", T, || rec.finished() >= 2 * n);
    wait_queue_messages(&name, 0, T);
    std::thread::sleep(Duration::from_millis(300));
    let ds = rec.deliveries();
    assert_eq!(ds.len() as u64, 2 * n, "each message twice");
    let mut by_body: HashMap<Vec<u8>, Vec<bool>> = HashMap::new();
    for d in &ds {
        by_body
            .entry(d.body.clone())
            .or_default()
            .push(d.redelivered);
    }
    assert_eq!(by_body.len() as u64, n);
    for (b, flags) in by_body {
        assert_eq!(
            flags,
            vec![false, true],
            "body {:?}: redelivered flags",
            String::from_utf8_lossy(&b)
        );
    }
    let s = qstats(q);
    assert_eq!(
        (s.delivered, s.requeued, s.acked),
        (2 * n, n, n),
        "{}",
        fmt_qstats(&s)
    );
    c_guard.close_ok();
}

#[test]
fn repeat_4_runs_4_callbacks_concurrently() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("repeat4");
    let q = open_simple(c, &name);
    let rec = Recorder::acking(Duration::from_millis(50));
    consume(q, &rec, 4);
    // all four consumers registered before the messages arrive (a backlog present at
    // consume time would all be prefetched by the first consumer to register)
    wait_for("4 consumers listed", T, || {
        queue_counts(&name).map(|c| c.consumers) == Some(4)
    });
    seed(&Reader::new(), &name, 0..40);
    wait_for("40 callbacks", T, || rec.finished() >= 40);
    assert_eq!(
        rec.max_current(),
        4,
        "repeat=4: up to 4 callbacks at once, and 4 should be reached"
    );
    wait_queue_messages(&name, 0, T);
    c_guard.close_ok();
}

#[test]
fn repeat_4_on_a_backlog_with_small_prefetch() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("repeat4-backlog");
    let q = queue_open(c, &name, None, None, Some("prefetch=5"));
    seed(&Reader::new(), &name, 0..40);
    let rec = Recorder::acking(Duration::from_millis(50));
    consume(q, &rec, 4);
    wait_for("40 callbacks", T, || rec.finished() >= 40);
    assert_eq!(
        rec.max_current(),
        4,
        "prefetch=5 per consumer spreads a backlog of 40 over the 4 consumers"
    );
    wait_queue_messages(&name, 0, T);
    c_guard.close_ok();
}

#[test]
fn repeat_0_means_1() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("repeat0");
    let q = open_simple(c, &name);
    seed(&Reader::new(), &name, 0..10);
    let rec = Recorder::acking(Duration::from_millis(30));
    consume(q, &rec, 0);
    wait_for("10 callbacks", T, || rec.finished() >= 10);
    assert_eq!(rec.max_current(), 1);
    assert_eq!(
        queue_counts(&name).unwrap().consumers,
        1,
        "repeat 0 means one consumer"
    );
    c_guard.close_ok();
}

#[test]
fn callbacks_run_on_library_threads() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("threads");
    let q = open_simple(c, &name);
    seed(&Reader::new(), &name, 0..20);
    let rec = Recorder::acking(Duration::from_millis(5));
    consume(q, &rec, 3);
    wait_for("20 callbacks", T, || rec.finished() >= 20);
    let me = std::thread::current().id();
    for d in rec.deliveries() {
        assert_ne!(d.thread, me, "callback ran on the caller's thread");
        assert!(
            !d.in_tokio,
            "callback ran inside a tokio runtime (thread {:?})",
            d.thread_name
        );
        let n = d.thread_name.clone().unwrap_or_default();
        assert!(
            n.starts_with(LIB_THREAD_PREFIX),
            "callback thread name {n:?} should start with {LIB_THREAD_PREFIX:?}"
        );
    }
    c_guard.close_ok();
}

#[test]
fn consume_twice_adds_consumers() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("twice");
    let q = open_simple(c, &name);
    let r1 = Recorder::acking(Duration::ZERO);
    let r2 = Recorder::acking(Duration::ZERO);
    consume(q, &r1, 2);
    consume(q, &r2, 2);
    let mut last = None;
    let ok = poll(T, Duration::from_millis(200), || {
        last = queue_counts(&name);
        last.map(|c| c.consumers) == Some(4)
    });
    assert!(ok, "expected 4 consumers, broker says {last:?}");
    seed(&Reader::new(), &name, 0..40);
    wait_for("40 deliveries over both callbacks", T, || {
        r1.finished() + r2.finished() >= 40
    });
    assert!(
        r1.finished() > 0 && r2.finished() > 0,
        "both callbacks receive: {} {}",
        r1.finished(),
        r2.finished()
    );
    c_guard.close_ok();
}

#[test]
fn prefetch_limits_unacked() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("prefetch");
    let q = queue_open(c, &name, None, None, Some("prefetch=3"));
    seed(&Reader::new(), &name, 0..30);
    let rec = Recorder::acking(Duration::from_millis(100));
    consume(q, &rec, 1);
    wait_for("first callback", T, || rec.started() >= 1);
    let mut max_unacked = 0;
    for _ in 0..6 {
        let qc = queue_counts(&name).unwrap();
        max_unacked = max_unacked.max(qc.unacked);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(max_unacked >= 1, "something should be in flight");
    assert!(max_unacked <= 3, "prefetch=3 but {max_unacked} unacked");
    assert_eq!(unsafe { amqp_consume_stop(q) }, amqp_result::AMQP_OK);
    c_guard.close_ok();
}

#[test]
fn consume_stop_freezes_callbacks_and_returns_prefetched() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("stop");
    let q = open_simple(c, &name);
    let seeded = 300u64;
    seed(&Reader::new(), &name, 0..seeded);
    let rec = Recorder::acking(Duration::from_millis(5));
    consume(q, &rec, 2);
    wait_for("40 callbacks", T, || rec.started() >= 40);

    // keep publishing through the library while stopping
    let stop_pub = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(seeded));
    let publisher = {
        let (stop_pub, next) = (stop_pub.clone(), next.clone());
        std::thread::spawn(move || {
            while !stop_pub.load(Ordering::SeqCst) {
                let i = next.load(Ordering::SeqCst);
                assert_eq!(publish(q, &seq_body(i)), amqp_result::AMQP_OK);
                next.store(i + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        unsafe { amqp_consume_stop(q) },
        amqp_result::AMQP_OK,
        "{}",
        last_error()
    );
    assert_eq!(
        rec.current(),
        0,
        "a callback is still running after consume_stop returned"
    );
    let frozen = rec.started();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        rec.started(),
        frozen,
        "callbacks started after consume_stop returned"
    );
    stop_pub.store(true, Ordering::SeqCst);
    publisher.join().unwrap();
    let total = next.load(Ordering::SeqCst);
    wait_drained(q, T);

    // the broker has every message not yet acked back as ready, none unacked
    let done = rec.finished();
    let mut last = None;
    let ok = poll(T, Duration::from_millis(200), || {
        last = queue_counts(&name);
        matches!(last, Some(qc) if qc.unacked == 0 && qc.ready == total - done && qc.consumers == 0)
    });
    assert!(
        ok,
        "after stop: expected ready={} unacked=0 consumers=0, broker says {last:?}",
        total - done
    );
    let s = qstats(q);
    assert!(
        s.released > 0,
        "prefetched deliveries should be counted as released: {}",
        fmt_qstats(&s)
    );
    assert_eq!(s.delivered, done);

    // resume: everything arrives
    assert_eq!(
        unsafe { amqp_consume_start(q) },
        amqp_result::AMQP_OK,
        "{}",
        last_error()
    );
    wait_for("all messages after consume_start", T, || {
        rec.unique_bodies() as u64 >= total
    });
    wait_queue_messages(&name, 0, T);
    let (missing, dups, foreign) = check_seqs(rec.bodies().iter().map(|b| b.as_slice()), total);
    assert!(missing.is_empty(), "missing {missing:?}");
    assert_eq!(dups, 0, "no message should be handed to a callback twice");
    assert_eq!(foreign, 0);
    rec.assert_no_panic();
    c_guard.close_ok();
}

#[test]
fn consume_stop_start_are_idempotent() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("idem");
    let q = open_simple(c, &name);
    // before any consumer
    assert_eq!(unsafe { amqp_consume_stop(q) }, amqp_result::AMQP_OK);
    assert_eq!(unsafe { amqp_consume_start(q) }, amqp_result::AMQP_OK);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    assert_eq!(unsafe { amqp_consume_stop(q) }, amqp_result::AMQP_OK);
    assert_eq!(unsafe { amqp_consume_stop(q) }, amqp_result::AMQP_OK);
    seed(&Reader::new(), &name, 0..5);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rec.started(), 0, "stopped consumer received");
    assert_eq!(unsafe { amqp_consume_start(q) }, amqp_result::AMQP_OK);
    assert_eq!(unsafe { amqp_consume_start(q) }, amqp_result::AMQP_OK);
    wait_for("5 callbacks", T, || rec.finished() >= 5);
    wait_for("one consumer", T, || {
        queue_counts(&name).map(|c| c.consumers) == Some(1)
    });
    c_guard.close_ok();
}

// ----- re-entrancy: calling the library from inside a callback -----

#[test]
fn publish_from_callback() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let a = unique_name("cb-src");
    let b = unique_name("cb-dst");
    let qa = open_simple(c, &a);
    let qb = open_simple(c, &b);
    seed(&Reader::new(), &a, 0..50);
    let rec = Recorder::new(
        Duration::ZERO,
        Box::new(move |d, _| {
            assert_eq!(publish(qb, &d.body), amqp_result::AMQP_OK);
            raw(amqp_disposition::AMQP_ACK)
        }),
    );
    consume(qa, &rec, 2);
    wait_for("50 callbacks", T, || rec.finished() >= 50);
    rec.assert_no_panic();
    wait_drained(qb, T);
    wait_queue_messages(&b, 50, T);
    wait_queue_messages(&a, 0, T);
    let got = Reader::new().drain(&b);
    let (missing, _, _) = check_seqs(got.iter().map(|g| g.body.as_slice()), 50);
    assert!(missing.is_empty(), "missing {missing:?}");
    c_guard.close_ok();
}

#[test]
fn consume_stop_from_callback() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("cb-stop");
    let q = open_simple(c, &name);
    let result: Arc<Mutex<Option<amqp_result>>> = Arc::new(Mutex::new(None));
    let res2 = result.clone();
    let rec = Recorder::new(
        Duration::ZERO,
        Box::new(move |_, r| {
            if r.started() == 1 {
                let x = unsafe { amqp_consume_stop(q) };
                *res2.lock().unwrap() = Some(x);
            }
            raw(amqp_disposition::AMQP_ACK)
        }),
    );
    consume(q, &rec, 1);
    seed(&Reader::new(), &name, 0..20);
    wait_for(
        "consume_stop returned inside the callback (deadlock?)",
        T,
        || result.lock().unwrap().is_some(),
    );
    assert_eq!(result.lock().unwrap().unwrap(), amqp_result::AMQP_OK);
    wait_for("callback returned", T, || rec.finished() == 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        rec.started(),
        1,
        "callbacks ran after consume_stop from a callback"
    );
    let mut last = None;
    let ok = poll(T, Duration::from_millis(200), || {
        last = queue_counts(&name);
        matches!(last, Some(qc) if qc.unacked == 0 && qc.ready == 19)
    });
    assert!(
        ok,
        "the first message acked, 19 back in the queue; broker says {last:?}"
    );
    assert_eq!(unsafe { amqp_consume_start(q) }, amqp_result::AMQP_OK);
    wait_for("the other 19", T, || rec.finished() >= 20);
    wait_queue_messages(&name, 0, T);
    rec.assert_no_panic();
    c_guard.close_ok();
}

#[test]
fn close_graceful_from_callback() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("cb-close");
    let q = open_simple(c, &name);
    let other = open_simple(c, &unique_name("cb-close-other"));
    for i in 0..20 {
        publish_ok(other, &seq_body(i));
    }
    let result: Arc<Mutex<Option<(amqp_result, u64)>>> = Arc::new(Mutex::new(None));
    let res2 = result.clone();
    let rec = Recorder::new(
        Duration::ZERO,
        Box::new(move |_, r| {
            if r.started() == 1 {
                let x = close(c, 10_000);
                *res2.lock().unwrap() = Some(x);
            }
            raw(amqp_disposition::AMQP_ACK)
        }),
    );
    consume(q, &rec, 1);
    seed(&Reader::new(), &name, 0..5);
    wait_for(
        "close_graceful returned inside the callback (deadlock?)",
        T,
        || result.lock().unwrap().is_some(),
    );
    let (r, unsent) = result.lock().unwrap().unwrap();
    assert_eq!(r, amqp_result::AMQP_OK, "close from a callback");
    assert_eq!(unsent, 0);
    wait_for("callback returned", T, || rec.finished() >= 1);
    assert_eq!(publish(q, b"x"), amqp_result::AMQP_ERR_INVALID_HANDLE);
    assert_eq!(publish(other, b"x"), amqp_result::AMQP_ERR_INVALID_HANDLE);
    assert_eq!(
        unsafe { amqp_wait_connected(c, 10) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rec.started(), 1, "callbacks ran after close");
    rec.assert_no_panic();
    // the connection is gone on the broker side: nothing consumes any more
    wait_for("no consumers left", T, || {
        queue_counts(&name).map(|c| c.consumers) == Some(0)
    });
}

#[test]
fn close_while_consuming_stops_callbacks() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("close-consuming");
    let q = open_simple(c, &name);
    seed(&Reader::new(), &name, 0..200);
    let rec = Recorder::acking(Duration::from_millis(10));
    consume(q, &rec, 2);
    wait_for("some callbacks", T, || rec.started() >= 10);
    c_guard.close_ok();
    assert_eq!(
        rec.current(),
        0,
        "a callback still runs after close_graceful returned"
    );
    let n = rec.started();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rec.started(), n);
    // not acked = back in the queue; acked = gone: nothing lost
    let mut last = None;
    let ok = poll(T, Duration::from_millis(200), || {
        last = queue_counts(&name);
        matches!(last, Some(qc) if qc.unacked == 0 && qc.ready + rec.finished() >= 200)
    });
    assert!(ok, "after close: {last:?}, {} acked", rec.finished());
}

#[test]
fn unknown_disposition_requeues() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("bad-disposition");
    let q = open_simple(c, &name);
    seed(&Reader::new(), &name, 0..3);
    // first sight: an int that is no amqp_disposition; second: ACK
    let rec = Recorder::new(
        Duration::ZERO,
        Box::new(|d, r| {
            let times = r
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|x| x.body == d.body)
                .count();
            if times == 1 {
                77
            } else {
                raw(amqp_disposition::AMQP_ACK)
            }
        }),
    );
    consume(q, &rec, 1);
    wait_for("6 callbacks", T, || rec.finished() >= 6);
    wait_queue_messages(&name, 0, T);
    let redelivered = rec.deliveries().iter().filter(|d| d.redelivered).count();
    assert_eq!(
        redelivered, 3,
        "an unknown disposition must requeue (nothing lost)"
    );
    c_guard.close_ok();
}

#[test]
fn close_timeout_bounds_the_wait_for_a_running_callback() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("close-slow-callback");
    let q = open_simple(c, &name);
    seed(&Reader::new(), &name, 0..1);
    // The callback runs for 5 s; close is given 1 s in all.
    let rec = Recorder::acking(Duration::from_secs(5));
    consume(q, &rec, 1);
    wait_for("the callback started", T, || rec.started() >= 1);
    let t = std::time::Instant::now();
    let (r, unsent) = close(c, 1000);
    let took = t.elapsed();
    // Contract v2 (issue 13): never AMQP_OK while a callback still runs.
    assert_eq!(
        (r, unsent),
        (amqp_result::AMQP_ERR_TIMEOUT, 0),
        "a callback still ran; nothing was buffered"
    );
    assert!(
        took < Duration::from_millis(2500),
        "close_graceful(1000 ms) took {took:?} while a callback ran"
    );
    // The callback's ack comes too late for the closed channel: the broker
    // keeps the message.
    wait_for("the callback ended", T, || rec.finished() >= 1);
    wait_queue_messages(&name, 1, T);
}

#[test]
fn consumers_come_back_after_their_queue_is_deleted() {
    // The broker cancels the consumers of a deleted queue; the library
    // declares the queue again and restarts them.
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("cancelled");
    let q = open_simple(c, &name);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 2);
    for i in 0..10 {
        publish_ok(q, &seq_body(i));
    }
    wait_for("10 callbacks", T, || rec.finished() >= 10);
    Reader::new().delete(&name);
    wait_for("the queue declared again", T, || {
        queue_counts(&name).is_some()
    });
    for i in 10..20 {
        publish_ok(q, &seq_body(i));
    }
    wait_for("20 callbacks", T, || rec.finished() >= 20);
    let bodies = rec.bodies();
    let (missing, _, foreign) = check_seqs(bodies.iter().map(|b| b.as_slice()), 20);
    assert!(missing.is_empty() && foreign == 0, "missing {missing:?}");
    rec.assert_no_panic();
    c_guard.close_ok();
}

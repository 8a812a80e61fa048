//! Publishing against a live broker: routing, queue/exchange options, persistence, stats, close.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn default_exchange_all_messages_arrive_in_order() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("default");
    let q = open_simple(c, &name);
    let n = 500u64;
    for i in 0..n {
        publish_ok(q, &seq_body(i));
    }
    wait_drained(q, T);
    assert_eq!(queue_messages(&name), n, "rabbitmqctl count");
    let s = qstats(q);
    assert_eq!(s.published, n);
    assert_eq!(s.confirmed, n);
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.buffered_bytes, 0);
    assert_eq!(s.nacked, 0);

    let got = Reader::new().drain(&name);
    let seqs: Vec<u64> = got
        .iter()
        .map(|g| parse_seq(&g.body).expect("sequenced body"))
        .collect();
    assert_eq!(
        seqs,
        (0..n).collect::<Vec<_>>(),
        "messages leave in publish order, exactly once here"
    );
    for g in &got {
        assert_eq!(g.exchange, "", "default exchange");
        assert_eq!(g.routing_key, name, "routed by queue name");
    }
    c_guard.close_ok();
}

#[test]
fn empty_and_binary_messages() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("binary");
    let q = open_simple(c, &name);
    assert_eq!(
        unsafe { amqp_publish(q, std::ptr::null(), 0) },
        amqp_result::AMQP_OK
    );
    let bin: Vec<u8> = (0..=255u8).chain([0, 0, 0]).collect();
    publish_ok(q, &bin);
    let big = vec![0xabu8; 1 << 20];
    publish_ok(q, &big);
    wait_drained(q, T);
    let got = Reader::new().drain(&name);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].body.len(), 0);
    assert_eq!(got[1].body, bin);
    assert_eq!(got[2].body, big);
    c_guard.close_ok();
}

#[test]
fn direct_exchange_with_routing_key() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("direct");
    let x = format!("ra-x-{name}");
    let q = queue_open(c, &name, Some(&x), Some("rk"), None);
    assert_eq!(
        exchange_type(&x).as_deref(),
        Some("direct"),
        "default exchange_type is direct"
    );
    for i in 0..10 {
        publish_ok(q, &seq_body(i));
    }
    wait_drained(q, T);
    wait_queue_messages(&name, 10, T);
    let got = Reader::new().drain(&name);
    assert_eq!(got.len(), 10);
    assert!(
        got.iter().all(|g| g.exchange == x && g.routing_key == "rk"),
        "{:?}",
        got[0]
    );
    // a second queue bound with another key does not get them
    let other = unique_name("direct-other");
    let q2 = queue_open(c, &other, Some(&x), Some("other-key"), None);
    publish_ok(q, b"for rk only");
    wait_drained(q, T);
    wait_queue_messages(&name, 1, T);
    assert_eq!(queue_messages(&other), 0);
    publish_ok(q2, b"for other-key");
    wait_drained(q2, T);
    wait_queue_messages(&other, 1, T);
    c_guard.close_ok();
}

#[test]
fn null_routing_key_means_empty() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("nullrk");
    let x = format!("ra-x-{name}");
    let q = queue_open(c, &name, Some(&x), None, None);
    publish_ok(q, b"x");
    wait_drained(q, T);
    let got = Reader::new().drain_at_least(&name, 1, T);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].routing_key, "");
    c_guard.close_ok();
}

#[test]
fn fanout_exchange_reaches_every_bound_queue() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let a = unique_name("fan-a");
    let b = unique_name("fan-b");
    let x = format!("ra-x-{a}");
    let qa = queue_open(c, &a, Some(&x), Some("ka"), Some("exchange_type=fanout"));
    let _qb = queue_open(c, &b, Some(&x), Some("kb"), Some("exchange_type=fanout"));
    assert_eq!(exchange_type(&x).as_deref(), Some("fanout"));
    for i in 0..5 {
        publish_ok(qa, &seq_body(i));
    }
    wait_drained(qa, T);
    wait_queue_messages(&a, 5, T);
    wait_queue_messages(&b, 5, T);
    c_guard.close_ok();
}

#[test]
fn topic_exchange() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("topic");
    let x = format!("ra-x-{name}");
    let q = queue_open(
        c,
        &name,
        Some(&x),
        Some("orders.created"),
        Some("exchange_type=topic"),
    );
    assert_eq!(exchange_type(&x).as_deref(), Some("topic"));
    publish_ok(q, b"order");
    wait_drained(q, T);
    let got = Reader::new().drain_at_least(&name, 1, T);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].exchange, x);
    assert_eq!(got[0].routing_key, "orders.created");
    c_guard.close_ok();
}

#[test]
fn durable_option() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let d = unique_name("durable");
    let t = unique_name("transient");
    open_simple(c, &d);
    queue_open(c, &t, None, None, Some("durable=false"));
    assert_eq!(
        queue_info(&d, &["durable"]).expect("durable queue listed")[0],
        "true"
    );
    assert_eq!(
        queue_info(&t, &["durable"]).expect("transient queue listed")[0],
        "false"
    );
    c_guard.close_ok();
}

#[test]
fn quorum_queue() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("quorum");
    let q = queue_open(c, &name, None, None, Some("queue_type=quorum"));
    assert_eq!(queue_info(&name, &["type"]).expect("listed")[0], "quorum");
    for i in 0..20 {
        publish_ok(q, &seq_body(i));
    }
    wait_drained(q, T);
    wait_queue_messages(&name, 20, T);
    let got = Reader::new().drain(&name);
    let (missing, dups, _) = check_seqs(got.iter().map(|g| g.body.as_slice()), 20);
    assert!(
        missing.is_empty() && dups == 0,
        "missing {missing:?} dups {dups}"
    );
    // an explicit classic queue
    let cl = unique_name("classic");
    queue_open(c, &cl, None, None, Some("queue_type=classic"));
    assert_eq!(queue_info(&cl, &["type"]).expect("listed")[0], "classic");
    c_guard.close_ok();
}

#[test]
fn persistent_sets_delivery_mode() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let p = unique_name("persistent");
    let np = unique_name("nonpersistent");
    let qp = open_simple(c, &p);
    let qn = queue_open(c, &np, None, None, Some("persistent=false"));
    publish_ok(qp, b"p");
    publish_ok(qn, b"n");
    wait_drained(qp, T);
    wait_drained(qn, T);
    let r = Reader::new();
    let gp = r.drain_at_least(&p, 1, T);
    let gn = r.drain_at_least(&np, 1, T);
    assert_eq!(
        gp[0].delivery_mode,
        Some(2),
        "persistent (default) must be delivery mode 2"
    );
    assert!(
        matches!(gn[0].delivery_mode, None | Some(1)),
        "persistent=false must be delivery mode 1 or absent, got {:?}",
        gn[0].delivery_mode
    );
    c_guard.close_ok();
}

#[test]
fn many_threads_publish_to_one_queue() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("threads");
    let q = open_simple(c, &name);
    let per = 500u64;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..per {
                    assert_eq!(publish(q, &seq_body(t * per + i)), amqp_result::AMQP_OK);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_drained(q, T);
    assert_eq!(qstats(q).published, 4 * per);
    assert_eq!(qstats(q).confirmed, 4 * per);
    let got = Reader::new().drain(&name);
    let (missing, dups, foreign) = check_seqs(got.iter().map(|g| g.body.as_slice()), 4 * per);
    assert!(missing.is_empty(), "missing {} messages", missing.len());
    assert_eq!((dups, foreign), (0, 0));
    // per publishing thread the order is kept
    for t in 0..4 {
        let s: Vec<u64> = got
            .iter()
            .filter_map(|g| parse_seq(&g.body))
            .filter(|s| s / per == t)
            .collect();
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "thread {t}: order not kept"
        );
    }
    c_guard.close_ok();
}

#[test]
fn several_queues_on_one_connection() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let names: Vec<String> = (0..5).map(|_| unique_name("multi")).collect();
    let qs: Vec<u64> = names.iter().map(|n| open_simple(c, n)).collect();
    assert_eq!(cstats(c).queues, 5);
    for (i, q) in qs.iter().enumerate() {
        for _ in 0..=i {
            publish_ok(*q, b"m");
        }
    }
    for (i, (q, n)) in qs.iter().zip(&names).enumerate() {
        wait_drained(*q, T);
        assert_eq!(queue_messages(n), i as u64 + 1);
    }
    c_guard.close_ok();
}

#[test]
fn stats_count_what_happened() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("stats");
    let q = open_simple(c, &name);
    let s0 = qstats(q);
    assert_eq!(
        (
            s0.buffered,
            s0.published,
            s0.confirmed,
            s0.delivered,
            s0.acked
        ),
        (0, 0, 0, 0, 0),
        "fresh queue: {}",
        fmt_qstats(&s0)
    );
    for i in 0..30 {
        publish_ok(q, &seq_body(i));
    }
    let s1 = qstats(q);
    assert_eq!(s1.published, 30);
    assert!(
        s1.buffered + s1.confirmed == 30,
        "buffered + confirmed = published: {}",
        fmt_qstats(&s1)
    );
    assert!(s1.in_flight <= s1.buffered);
    wait_drained(q, T);
    let s2 = qstats(q);
    assert_eq!(
        (s2.published, s2.confirmed, s2.buffered, s2.in_flight),
        (30, 30, 0, 0)
    );
    assert_eq!(
        s2.resent, 0,
        "no reconnect happened, nothing should be resent"
    );

    let rec = Recorder::always(Duration::ZERO, amqp_disposition::AMQP_ACK);
    consume(q, &rec, 1);
    wait_for("30 deliveries", T, || rec.finished() == 30);
    wait_queue_messages(&name, 0, T);
    let s3 = qstats(q);
    assert_eq!(
        (s3.delivered, s3.acked, s3.rejected, s3.requeued),
        (30, 30, 0, 0),
        "{}",
        fmt_qstats(&s3)
    );
    c_guard.close_ok();
}

// ----- close_graceful -----

#[test]
fn close_graceful_confirms_everything_then_invalidates_handles() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("close");
    let q = open_simple(c, &name);
    for i in 0..300 {
        publish_ok(q, &seq_body(i));
    }
    // no waiting: close must wait for the confirms itself
    let (r, unsent) = close(c, 20_000);
    assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
    assert_eq!(unsent, 0);
    assert_eq!(
        queue_messages(&name),
        300,
        "close reported OK, so all must be on the broker"
    );

    use amqp_result::AMQP_ERR_INVALID_HANDLE as INV;
    assert_eq!(publish(q, b"x"), INV);
    let rec = Recorder::acking(Duration::ZERO);
    assert_eq!(try_consume(q, &rec, 1), INV);
    assert_eq!(unsafe { amqp_consume_stop(q) }, INV);
    assert_eq!(unsafe { amqp_consume_start(q) }, INV);
    assert_eq!(
        try_queue_open(c, &unique_name("after"), None, None, None).0,
        INV
    );
    assert_eq!(unsafe { amqp_wait_connected(c, 10) }, INV);
    let mut s: amqp_queue_stats = unsafe { std::mem::zeroed() };
    s.size = std::mem::size_of::<amqp_queue_stats>();
    assert_eq!(unsafe { amqp_queue_get_stats(q, &mut s) }, INV);
    let (r2, unsent2) = close(c, 100);
    assert_eq!(r2, INV, "second close");
    assert_eq!(unsent2, u64::MAX, "out written on failure");
}

#[test]
fn close_graceful_accepts_null_unsent() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let q = open_simple(c, &unique_name("closenull"));
    publish_ok(q, b"x");
    let r = unsafe { amqp_close_graceful(c, 10_000, std::ptr::null_mut()) };
    assert_eq!(r, amqp_result::AMQP_OK);
    assert_eq!(publish(q, b"x"), amqp_result::AMQP_ERR_INVALID_HANDLE);
}

#[test]
fn publish_during_close_is_refused() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("closing");
    let q = open_simple(c, &name);
    for i in 0..2000 {
        publish_ok(q, &seq_body(i));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let results = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut ok = 0u64;
        let mut i = 2000u64;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            let r = publish(q, &seq_body(i));
            if r == amqp_result::AMQP_OK {
                ok += 1;
                i += 1;
            }
            if seen.last() != Some(&r) {
                seen.push(r);
            }
        }
        (seen, ok)
    });
    std::thread::sleep(Duration::from_millis(5));
    let (r, unsent) = close(c, 20_000);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (seen, racing_ok) = results.join().unwrap();
    eprintln!("racing publishes accepted during close: {racing_ok}; results {seen:?}");
    assert_eq!(r, amqp_result::AMQP_OK);
    assert_eq!(unsent, 0);
    // while racing, publish returned OK, then CLOSED (closing) and/or INVALID_HANDLE (freed), never else
    for w in &seen {
        assert!(
            matches!(
                w,
                amqp_result::AMQP_OK
                    | amqp_result::AMQP_ERR_CLOSED
                    | amqp_result::AMQP_ERR_INVALID_HANDLE
            ),
            "unexpected result while closing: {seen:?}"
        );
    }
    assert_eq!(publish(q, b"x"), amqp_result::AMQP_ERR_INVALID_HANDLE);
    let ok_after = seen
        .iter()
        .position(|r| *r != amqp_result::AMQP_OK)
        .unwrap_or(seen.len());
    assert!(
        seen[ok_after..].iter().all(|r| *r != amqp_result::AMQP_OK),
        "OK again after close began: {seen:?}"
    );
    // everything that was accepted is on the broker (racing messages included)
    let got = Reader::new().drain(&name);
    let total = 2000 + racing_ok;
    let (missing, dups, _) = check_seqs(got.iter().map(|g| g.body.as_slice()), total);
    assert!(
        missing.is_empty() && dups == 0,
        "of {total} accepted: missing {} dups {dups}",
        missing.len()
    );
}

#[test]
fn mandatory_false_lets_the_broker_drop_what_reaches_no_queue() {
    // The documented price of mandatory=false: after someone deletes the
    // queue, the broker confirms each message and drops it; the library
    // cannot tell, so nothing is resent and the queue is not declared again.
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("nomandatory");
    let q = queue_open(c, &name, None, None, Some("mandatory=false"));
    publish_ok(q, &seq_body(0));
    wait_drained(q, T);
    let reader = Reader::new();
    reader.delete(&name);
    for i in 1..50 {
        publish_ok(q, &seq_body(i));
    }
    wait_drained(q, T);
    let s = qstats(q);
    assert_eq!(s.confirmed, 50, "{}", fmt_qstats(&s));
    assert_eq!(s.resent, 0, "{}", fmt_qstats(&s));
    assert!(
        queue_counts(&name).is_none(),
        "the queue was not declared again"
    );
    c_guard.close_ok();
}

#[test]
fn a_queue_deleted_by_someone_else_is_declared_again_and_nothing_is_lost() {
    // Publishes are mandatory: a message that reaches no queue comes back
    // (basic.return) instead of being confirmed and dropped; the library
    // reopens the channel, declares the queue again and resends.
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("deleted");
    let q = open_simple(c, &name);
    for i in 0..100 {
        publish_ok(q, &seq_body(i));
    }
    wait_drained(q, T);
    let reader = Reader::new();
    reader.delete(&name);
    assert!(
        queue_counts(&name).is_none(),
        "the queue is gone before we publish again"
    );
    for i in 100..300 {
        publish_ok(q, &seq_body(i));
    }
    wait_drained(q, T);
    let got = reader.drain(&name);
    let bodies: Vec<&[u8]> = got.iter().map(|g| g.body.as_slice()).collect();
    let (missing, _dups, _foreign) = check_seqs(bodies.iter().copied(), 300);
    let missing_after: Vec<u64> = missing.into_iter().filter(|&s| s >= 100).collect();
    assert!(
        missing_after.is_empty(),
        "published after the delete but lost: {missing_after:?}"
    );
    let s = qstats(q);
    assert!(
        s.resent > 0,
        "returned messages were sent again: {}",
        fmt_qstats(&s)
    );
    c_guard.close_ok();
}

fn publish_wait(q: u64, body: &[u8], timeout_ms: u32) -> amqp_result {
    unsafe {
        amqp_publish_wait(
            q,
            body.as_ptr() as *const std::ffi::c_void,
            body.len(),
            timeout_ms,
        )
    }
}

#[test]
fn publish_wait_moves_everything_through_a_small_buffer_in_order() {
    // 3,000 messages through a buffer of 16: the producer sleeps until
    // confirms make room; none is refused, all arrive once, in order.
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let name = unique_name("pubwait");
    let q = queue_open(c, &name, None, None, Some("max_buffered=16"));
    let n = 3000u64;
    for i in 0..n {
        let r = publish_wait(q, &seq_body(i), 20_000);
        assert_eq!(r, amqp_result::AMQP_OK, "message {i}: {}", last_error());
        assert!(qstats(q).buffered <= 16);
    }
    wait_drained(q, T);
    let s = qstats(q);
    assert_eq!((s.published, s.confirmed), (n, n), "{}", fmt_qstats(&s));
    let got = Reader::new().drain(&name);
    let seqs: Vec<u64> = got.iter().filter_map(|g| parse_seq(&g.body)).collect();
    assert_eq!(seqs, (0..n).collect::<Vec<_>>());
    c_guard.close_ok();
}

#[test]
fn publish_wait_returns_closed_when_close_begins_while_it_waits() {
    // Nothing drains a buffer whose broker never answers: the waiting
    // producer must be woken by the close, not sleep out its timeout.
    let c_guard = ConnGuard::connect(DEAD_URI, Some("max_buffered=1"));
    let c = c_guard.h();
    let (r, q) = try_queue_open(c, &unique_name("pubwaitclose"), None, None, None);
    assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
    assert_eq!(publish(q, b"first"), amqp_result::AMQP_OK);
    let waiter = std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        let r = publish_wait(q, b"second", 60_000);
        (r, last_error(), t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiter.is_finished(), "it waits while the buffer is full");
    let (r, unsent) = close(c, 100);
    assert_eq!((r, unsent), (amqp_result::AMQP_ERR_TIMEOUT, 1));
    let (r, err, waited) = waiter.join().unwrap();
    assert_eq!(r, amqp_result::AMQP_ERR_CLOSED, "{err}");
    assert!(
        waited < Duration::from_secs(30),
        "woken by the close: {waited:?}"
    );
}

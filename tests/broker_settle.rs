//! Contract v2's dispositions and settle, against the real broker: values no accident
//! produces (0, 1, garbage requeue and are counted, never ack), AMQP_DEFER with amqp_settle
//! from another thread, a settle while the callback still runs, the errors of a second or a
//! stale settle, amqp_settle_many, and amqp_delivery_dup / amqp_delivery_free.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// One test closes every connection on the broker (the independent reader's too): it runs
/// alone (write), the others side by side (read).
static BROKER: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    BROKER.read().unwrap_or_else(|p| p.into_inner())
}

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    BROKER.write().unwrap_or_else(|p| p.into_inner())
}

fn seed(reader: &Reader, queue: &str, range: std::ops::Range<u64>) {
    let bodies: Vec<Vec<u8>> = range.map(seq_body).collect();
    reader.publish(queue, &bodies);
}

fn settle(q: u64, id: u64, d: amqp_disposition) -> amqp_result {
    amqp_settle(q, id, d as amqp_disposition_raw)
}

/// What an FFI returns when a handler throws (0, 1 = `true`, a small error code) is no
/// disposition: the message is requeued (or rejected, by option) and counted, never acked.
#[test]
fn values_no_accident_produces_never_ack() {
    let _broker = shared();
    for (options, expect_requeue) in [(None, true), (Some("invalid_disposition=reject"), false)] {
        let c_guard = ConnGuard::connect_ok(None);
        let name = unique_name("invalid-disposition");
        let q = queue_open(c_guard.h(), &name, None, None, options);
        seed(&Reader::new(), &name, 0..3);
        // First sight of each message: 0, 1 or 2 (the old ACK, REJECT, REQUEUE); then ACK.
        let rec = Recorder::new(
            Duration::ZERO,
            Box::new(|d, r| {
                let seen = r
                    .log
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|x| x.body == d.body)
                    .count();
                if seen == 1 {
                    parse_seq(&d.body).unwrap() as amqp_disposition_raw
                } else {
                    raw(amqp_disposition::AMQP_ACK)
                }
            }),
        );
        consume(q, &rec, 1);
        if expect_requeue {
            wait_for("6 callbacks", T, || rec.finished() >= 6);
            wait_queue_messages(&name, 0, T);
            let redelivered = rec.deliveries().iter().filter(|d| d.redelivered).count();
            assert_eq!(redelivered, 3, "each invalid value requeued its message");
        } else {
            wait_for("3 callbacks", T, || rec.finished() >= 3);
            wait_queue_messages(&name, 0, T);
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(rec.finished(), 3, "rejected, not redelivered");
        }
        let s = qstats(q);
        assert_eq!(s.invalid_dispositions, 3, "{}", fmt_qstats(&s));
        assert_eq!(s.acked, if expect_requeue { 3 } else { 0 });
        c_guard.close_ok();
    }
}

/// AMQP_DEFER leaves deliveries unsettled (they hold the prefetch); amqp_settle from another
/// thread acks them, and a second settle is AMQP_ERR_ALREADY_SETTLED.
#[test]
fn deferred_deliveries_are_settled_from_another_thread() {
    let _broker = shared();
    let c_guard = ConnGuard::connect_ok(None);
    let name = unique_name("defer");
    let q = queue_open(c_guard.h(), &name, None, None, Some("prefetch=5"));
    seed(&Reader::new(), &name, 0..12);
    let rec = Recorder::always(Duration::ZERO, amqp_disposition::AMQP_DEFER);
    consume(q, &rec, 2);
    // Two broker consumers, each with prefetch 5.
    wait_for("10 callbacks (the prefetch)", T, || rec.finished() >= 10);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rec.finished(), 10, "deferred deliveries hold the prefetch");
    assert_eq!(qstats(q).unsettled, 10);
    let mut settled = 0;
    while settled < 12 {
        let ids: Vec<u64> = rec.deliveries()[settled..]
            .iter()
            .map(|d| d.delivery_id)
            .collect();
        let settler = std::thread::spawn(move || {
            ids.iter()
                .map(|&id| settle(q, id, amqp_disposition::AMQP_ACK))
                .collect::<Vec<_>>()
        });
        let results = settler.join().unwrap();
        assert!(
            results.iter().all(|r| *r == amqp_result::AMQP_OK),
            "{results:?}"
        );
        settled += results.len();
        wait_for("more callbacks", T, || {
            rec.finished() as usize > settled || settled == 12
        });
    }
    wait_queue_messages(&name, 0, T);
    let first = rec.deliveries()[0].delivery_id;
    assert_eq!(
        settle(q, first, amqp_disposition::AMQP_ACK),
        amqp_result::AMQP_ERR_ALREADY_SETTLED
    );
    let s = qstats(q);
    assert_eq!(
        (s.unsettled, s.acked, s.delivered),
        (0, 12, 12),
        "{}",
        fmt_qstats(&s)
    );
    c_guard.close_ok();
}

/// A settle that arrives while the delivery's callback still runs wins; the callback's
/// return value is then ignored and counted.
#[test]
fn a_settle_during_the_callback_wins_over_its_return() {
    let _broker = shared();
    let c_guard = ConnGuard::connect_ok(None);
    let name = unique_name("settle-inside");
    let q = open_simple(c_guard.h(), &name);
    seed(&Reader::new(), &name, 0..2);
    let results = Arc::new(Mutex::new(Vec::new()));
    let results2 = results.clone();
    let rec = Recorder::new(
        Duration::ZERO,
        Box::new(move |d, _| {
            // From inside the callback, and from another thread while it runs.
            let inside = settle(d.queue, d.delivery_id, amqp_disposition::AMQP_ACK);
            let (q, id) = (d.queue, d.delivery_id);
            let outside = std::thread::spawn(move || settle(q, id, amqp_disposition::AMQP_REJECT))
                .join()
                .unwrap();
            results2.lock().unwrap().push((inside, outside));
            raw(amqp_disposition::AMQP_REQUEUE) // ignored
        }),
    );
    consume(q, &rec, 1);
    wait_for("2 callbacks", T, || rec.finished() >= 2);
    wait_queue_messages(&name, 0, T);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rec.finished(), 2, "acked, not requeued");
    for (inside, outside) in results.lock().unwrap().iter() {
        assert_eq!(*inside, amqp_result::AMQP_OK);
        assert_eq!(*outside, amqp_result::AMQP_ERR_ALREADY_SETTLED);
    }
    let s = qstats(q);
    assert_eq!(
        (s.acked, s.requeued, s.returns_ignored),
        (2, 0, 2),
        "{}",
        fmt_qstats(&s)
    );
    c_guard.close_ok();
}

/// A deferred delivery whose channel died is stale: nothing is applied (the broker
/// redelivers it, and the redelivery is settleable as usual).
#[test]
fn a_deferred_delivery_from_a_lost_connection_is_stale() {
    let _broker = alone();
    let c_guard = ConnGuard::connect_ok(Some("reconnect_delay_ms=50"));
    let c = c_guard.h();
    let name = unique_name("stale");
    let q = open_simple(c, &name);
    seed(&Reader::new(), &name, 0..1);
    let rec = Recorder::always(Duration::ZERO, amqp_disposition::AMQP_DEFER);
    consume(q, &rec, 1);
    wait_for("the first delivery", T, || rec.finished() >= 1);
    let connects = cstats(c).connects;
    close_all_connections();
    wait_reconnected(c, connects, T);
    wait_for("the redelivery", T, || rec.finished() >= 2);
    let ds = rec.deliveries();
    assert!(ds[1].redelivered);
    assert_eq!(
        settle(q, ds[0].delivery_id, amqp_disposition::AMQP_ACK),
        amqp_result::AMQP_ERR_STALE_DELIVERY
    );
    assert_eq!(
        settle(q, ds[1].delivery_id, amqp_disposition::AMQP_ACK),
        amqp_result::AMQP_OK
    );
    wait_queue_messages(&name, 0, T);
    assert_eq!(qstats(q).unsettled, 0);
    c_guard.close_ok();
}

/// amqp_settle_many reports each id; ids of another queue, unknown ids and AMQP_DEFER as a
/// settle are AMQP_ERR_INVALID_ARGUMENT and apply nothing.
#[test]
fn settle_many_and_bad_settles() {
    let _broker = shared();
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let (a, b) = (unique_name("many-a"), unique_name("many-b"));
    let (qa, qb) = (open_simple(c, &a), open_simple(c, &b));
    let reader = Reader::new();
    seed(&reader, &a, 0..4);
    seed(&reader, &b, 0..1);
    let (ra, rb) = (
        Recorder::always(Duration::ZERO, amqp_disposition::AMQP_DEFER),
        Recorder::always(Duration::ZERO, amqp_disposition::AMQP_DEFER),
    );
    consume(qa, &ra, 1);
    consume(qb, &rb, 1);
    wait_for("4 + 1 callbacks", T, || {
        ra.finished() >= 4 && rb.finished() >= 1
    });
    let b_id = rb.deliveries()[0].delivery_id;
    assert_eq!(
        settle(qa, b_id, amqp_disposition::AMQP_ACK),
        amqp_result::AMQP_ERR_INVALID_ARGUMENT,
        "another queue's id"
    );
    assert_eq!(
        settle(qa, 7, amqp_disposition::AMQP_ACK),
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );
    let a_ids: Vec<u64> = ra.deliveries().iter().map(|d| d.delivery_id).collect();
    assert_eq!(
        settle(qa, a_ids[0], amqp_disposition::AMQP_DEFER),
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );
    let mut ids = a_ids.clone();
    ids.push(a_ids[0]); // twice
    let mut results = vec![amqp_result::AMQP_ERR_INTERNAL; ids.len()];
    let r = unsafe {
        amqp_settle_many(
            qa,
            ids.as_ptr(),
            ids.len(),
            amqp_disposition::AMQP_ACK as amqp_disposition_raw,
            results.as_mut_ptr(),
        )
    };
    assert_eq!(
        r,
        amqp_result::AMQP_ERR_ALREADY_SETTLED,
        "the first failure"
    );
    assert_eq!(&results[..4], &[amqp_result::AMQP_OK; 4]);
    assert_eq!(results[4], amqp_result::AMQP_ERR_ALREADY_SETTLED);
    assert_eq!(
        settle(qb, b_id, amqp_disposition::AMQP_REJECT),
        amqp_result::AMQP_OK
    );
    wait_queue_messages(&a, 0, T);
    wait_queue_messages(&b, 0, T);
    assert_eq!(qstats(qa).acked, 4);
    assert_eq!(qstats(qb).rejected, 1);
    c_guard.close_ok();
}

/// amqp_delivery_dup keeps every field past the callback; the copy settles by its id.
#[test]
fn a_duplicated_delivery_outlives_its_callback() {
    let _broker = shared();
    struct Kept(*const amqp_delivery);
    // SAFETY (test): the copy is owned by this test and freed once, from one thread.
    unsafe impl Send for Kept {}
    let c_guard = ConnGuard::connect_ok(None);
    let name = unique_name("dup");
    let q = open_simple(c_guard.h(), &name);
    seed(&Reader::new(), &name, 0..1);
    let kept = Arc::new(Mutex::new(None::<Kept>));
    unsafe extern "C-unwind" fn dup_cb(
        d: *const amqp_delivery,
        ud: *mut std::ffi::c_void,
    ) -> amqp_disposition_raw {
        let slot = &*(ud as *const Mutex<Option<Kept>>);
        *slot.lock().unwrap() = Some(Kept(amqp_delivery_dup(d)));
        amqp_disposition::AMQP_DEFER as amqp_disposition_raw
    }
    let ud = Arc::into_raw(kept.clone()) as *mut std::ffi::c_void;
    assert_eq!(
        unsafe { amqp_consume(q, Some(dup_cb), ud, 1) },
        amqp_result::AMQP_OK
    );
    wait_for("the copy", T, || kept.lock().unwrap().is_some());
    let copy = kept.lock().unwrap().take().unwrap().0;
    let d = unsafe { &*copy };
    let body = unsafe { std::slice::from_raw_parts(d.body, d.body_len) };
    assert_eq!(parse_seq(body), Some(0));
    let rk = unsafe { std::slice::from_raw_parts(d.routing_key as *const u8, d.routing_key_len) };
    assert_eq!(rk, name.as_bytes());
    assert_eq!(d.queue, q);
    assert!(d.delivery_id >= 1 << 52 && d.delivery_id < 1 << 53);
    assert_eq!(
        settle(q, d.delivery_id, amqp_disposition::AMQP_ACK),
        amqp_result::AMQP_OK
    );
    unsafe { amqp_delivery_free(copy) };
    unsafe { amqp_delivery_free(std::ptr::null()) };
    assert!(unsafe { amqp_delivery_dup(std::ptr::null()) }.is_null());
    wait_queue_messages(&name, 0, T);
    c_guard.close_ok();
}

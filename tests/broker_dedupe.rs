//! Duplicate suppression (queue option `dedupe=N`) against the real broker: ids published
//! twice reach the callback (and amqp_poll) once, messages without ids always, a requeued
//! message comes again, the window is bounded, and redeliveries after connection kills do
//! not reach the handler. Auto message ids (`message_id=auto`) are checked with the
//! independent lapin reader.
//!
//! The tests of this file run one at a time: one closes every connection on the broker.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Publishes `body` with message_id `id` through the library.
fn publish_id(q: u64, body: &[u8], id: &str) {
    let mut m = CMessage::new();
    m.m.message_id = m.s(id);
    let r = unsafe { amqp_publish_message(q, body.as_ptr() as *const c_void, body.len(), &m.m) };
    assert_eq!(r, amqp_result::AMQP_OK, "publish_message: {}", last_error());
}

/// Publishes each id as body and message_id, `rounds` times (all ids, then all again).
fn publish_ids(q: u64, ids: &[String], rounds: usize) {
    for _ in 0..rounds {
        for id in ids {
            publish_id(q, id.as_bytes(), id);
        }
    }
    wait_drained(q, T);
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:06}")).collect()
}

fn open(conn: u64, queue: &str, options: &str) -> u64 {
    queue_open(conn, queue, None, None, Some(options))
}

fn wait_stat(q: u64, what: &str, f: impl Fn(&amqp_queue_stats) -> bool) {
    let ok = poll(T, Duration::from_millis(20), || f(&qstats(q)));
    assert!(ok, "{what}: {}", fmt_qstats(&qstats(q)));
}

/// (a) with callbacks: 1,000 ids published twice reach the callback once each.
#[test]
fn ids_published_twice_reach_the_callback_once() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("dedupe-cb");
    let q = open(conn.h(), &name, "dedupe=5000");
    let all = ids("a", 1000);
    publish_ids(q, &all, 2);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 4);
    wait_stat(q, "1,000 deduplicated", |s| {
        s.deduplicated == 1000 && s.delivered == 1000
    });
    wait_queue_messages(&name, 0, T);
    std::thread::sleep(Duration::from_millis(300));
    let s = qstats(q);
    assert_eq!((s.delivered, s.deduplicated), (1000, 1000));
    assert_eq!(rec.deliveries().len(), 1000);
    assert_eq!(rec.unique_bodies(), 1000);
    conn.close_ok();
    Reader::new().delete(&name);
}

/// One polled delivery: its body and id (freed after copying).
fn poll_some(q: u64, timeout_ms: u32) -> Vec<(Vec<u8>, u64)> {
    let mut out = vec![std::ptr::null::<amqp_delivery>(); 64];
    let mut count = 0usize;
    let r = unsafe { amqp_poll(q, out.as_mut_ptr(), 64, timeout_ms, &mut count) };
    if r == amqp_result::AMQP_ERR_TIMEOUT {
        return Vec::new();
    }
    assert_eq!(r, amqp_result::AMQP_OK, "amqp_poll: {}", last_error());
    let got: Vec<(Vec<u8>, u64)> = out[..count]
        .iter()
        .map(|&p| {
            let d = unsafe { &*p };
            let body = unsafe { std::slice::from_raw_parts(d.body, d.body_len) }.to_vec();
            (body, d.delivery_id)
        })
        .collect();
    unsafe { amqp_delivery_free_many(out.as_ptr(), count) };
    got
}

fn settle_acks(q: u64, got: &[(Vec<u8>, u64)]) {
    let ids: Vec<u64> = got.iter().map(|g| g.1).collect();
    let mut results = vec![amqp_result::AMQP_ERR_INTERNAL; ids.len()];
    let r = unsafe {
        amqp_settle_many(
            q,
            ids.as_ptr(),
            ids.len(),
            raw(amqp_disposition::AMQP_ACK),
            results.as_mut_ptr(),
        )
    };
    assert_eq!(r, amqp_result::AMQP_OK, "settle_many: {}", last_error());
}

/// (a) in pull mode: amqp_poll hands each id out once.
#[test]
fn ids_published_twice_are_polled_once() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("dedupe-pull");
    let q = open(conn.h(), &name, "dedupe=5000");
    let all = ids("p", 1000);
    publish_ids(q, &all, 2);
    let mut fd: i32 = -1;
    assert_eq!(
        unsafe { amqp_consume_pull(q, &mut fd) },
        amqp_result::AMQP_OK
    );
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + T;
    while qstats(q).deduplicated < 1000 || seen.len() < 1000 {
        assert!(Instant::now() < deadline, "{}", fmt_qstats(&qstats(q)));
        let got = poll_some(q, 200);
        settle_acks(q, &got);
        seen.extend(got.into_iter().map(|g| g.0));
    }
    seen.extend(poll_some(q, 500).into_iter().map(|g| g.0));
    wait_queue_messages(&name, 0, T);
    assert_eq!(seen.len(), 1000, "polled");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1000);
    assert_eq!(qstats(q).deduplicated, 1000);
    unsafe { libc::close(fd) };
    conn.close_ok();
    Reader::new().delete(&name);
}

/// (b) messages without a message_id are never deduplicated.
#[test]
fn messages_without_ids_are_all_delivered() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("dedupe-noid");
    let q = open(conn.h(), &name, "dedupe=5000");
    for _ in 0..2 {
        for i in 0..200 {
            publish_ok(q, &seq_body(i));
        }
    }
    wait_drained(q, T);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 2);
    wait_for("400 delivered", T, || rec.finished() == 400);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rec.finished(), 400);
    assert_eq!(qstats(q).deduplicated, 0);
    conn.close_ok();
    Reader::new().delete(&name);
}

/// (c) a message the callback requeued is not remembered: it comes again; once acked, a
/// copy published later is deduplicated.
#[test]
fn a_requeued_message_is_delivered_again() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("dedupe-requeue");
    let q = open(conn.h(), &name, "dedupe=5000");
    let rec = Recorder::new(
        Duration::ZERO,
        Box::new(|_, r| {
            if r.started() == 1 {
                raw(amqp_disposition::AMQP_REQUEUE)
            } else {
                raw(amqp_disposition::AMQP_ACK)
            }
        }),
    );
    consume(q, &rec, 1);
    publish_id(q, b"r-1", "r-1");
    wait_for("requeued, then delivered again", T, || rec.finished() == 2);
    let s = qstats(q);
    assert_eq!((s.requeued, s.deduplicated), (1, 0));
    publish_id(q, b"r-1", "r-1");
    wait_stat(q, "the copy deduplicated", |s| s.deduplicated == 1);
    assert_eq!(rec.finished(), 2);
    let d = rec.deliveries();
    assert!(d.iter().all(|d| d.body == b"r-1"));
    assert!(d[1].redelivered, "the requeued one came back");
    conn.close_ok();
    Reader::new().delete(&name);
}

/// (d) the window is bounded: with dedupe=10 an id acked 20 acks ago is delivered again, one
/// acked among the last 10 is not.
#[test]
fn the_window_is_bounded() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("dedupe-window");
    let q = open(conn.h(), &name, "dedupe=10");
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    let all = ids("w", 20);
    publish_ids(q, &all, 1);
    wait_for("20 delivered", T, || rec.finished() == 20);
    // w-0 was acked 20 acks ago: forgotten (the window holds w-10..w-19).
    publish_id(q, all[0].as_bytes(), &all[0]);
    wait_for("w-0 again", T, || rec.finished() == 21);
    // Now w-11..w-19 and w-0: w-15 is known, w-10 forgotten.
    publish_id(q, all[15].as_bytes(), &all[15]);
    wait_stat(q, "w-15 deduplicated", |s| s.deduplicated == 1);
    publish_id(q, all[10].as_bytes(), &all[10]);
    wait_for("w-10 again", T, || rec.finished() == 22);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rec.finished(), 22);
    assert_eq!(qstats(q).deduplicated, 1);
    conn.close_ok();
    Reader::new().delete(&name);
}

/// Consumes `n` messages with ids through a slow callback while every connection is closed
/// every 0.5 s; returns (duplicates reaching the callback, missing, kills, deduplicated).
fn consume_through_kills(options: &str, n: usize) -> (usize, usize, usize, u64) {
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("dedupe-kills");
    let q = open(conn.h(), &name, options);
    let all = ids("k", n);
    publish_ids(q, &all, 1);
    let rec = Recorder::acking(Duration::from_millis(1));
    consume(q, &rec, 4);
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    let acked = |rec: &Recorder| rec.unique_bodies();
    while acked(&rec) < n {
        assert!(Instant::now() < deadline, "{}", fmt_qstats(&qstats(q)));
        if kills < 40 {
            close_all_connections();
            kills += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_queue_messages(&name, 0, T);
    std::thread::sleep(Duration::from_millis(500));
    let mut count: HashMap<Vec<u8>, usize> = HashMap::new();
    for b in rec.bodies() {
        *count.entry(b).or_default() += 1;
    }
    let dups = count.values().map(|c| c - 1).sum();
    let missing = all
        .iter()
        .filter(|id| !count.contains_key(id.as_bytes()))
        .count();
    let dedup = qstats(q).deduplicated;
    conn.close_ok();
    Reader::new().delete(&name);
    (dups, missing, kills, dedup)
}

/// (f) redeliveries after connection kills: with dedupe the callback sees every id once.
#[test]
fn redeliveries_after_connection_kills_do_not_reach_the_handler() {
    let _s = serial();
    let n = 20_000;
    let (dups, missing, kills, dedup) = consume_through_kills("dedupe=100000", n);
    eprintln!(
        "dedupe on: {n} messages, {kills} kills: {dups} duplicates reached the handler, \
         {missing} missing, {dedup} deduplicated"
    );
    let (dups_off, missing_off, kills_off, _) = consume_through_kills("dedupe=0", n);
    eprintln!(
        "dedupe off: {n} messages, {kills_off} kills: {dups_off} duplicates reached the \
         handler, {missing_off} missing"
    );
    assert_eq!((dups, missing), (0, 0));
    assert_eq!(missing_off, 0);
    assert!(kills >= 5, "only {kills} kills");
}

/// (e) auto message ids: 10,000 plain publishes all carry distinct non-empty message ids (read
/// by lapin); a message_id set by the application is kept, other properties keep theirs.
#[test]
fn auto_message_ids_are_distinct_and_kept_when_set() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("auto-id");
    let q = open(conn.h(), &name, "auto_message_id=true");
    let n = 10_000;
    for i in 0..n {
        publish_ok(q, &seq_body(i));
    }
    let mut m = CMessage::new();
    m.m.message_id = m.s("mine");
    let r = unsafe { amqp_publish_message(q, b"own".as_ptr() as *const c_void, 3, &m.m) };
    assert_eq!(r, amqp_result::AMQP_OK);
    let mut m = CMessage::new();
    m.m.content_type = m.s("text/plain");
    m.m.app_id = m.s("app");
    let r = unsafe { amqp_publish_message(q, b"props".as_ptr() as *const c_void, 5, &m.m) };
    assert_eq!(r, amqp_result::AMQP_OK);
    wait_drained(q, T);
    let got = Reader::new().drain_fast(&name, Duration::from_millis(500), T);
    assert_eq!(got.len(), n as usize + 2);
    let mut ids = HashSet::new();
    for g in &got {
        let id = g.properties.message_id().as_ref().map(|s| s.to_string());
        let id = id.unwrap_or_else(|| panic!("no message_id on {:?}", g.body));
        assert!(!id.is_empty());
        assert!(ids.insert(id.clone()), "{id} twice");
        match &g.body[..] {
            b"own" => assert_eq!(id, "mine"),
            b"props" => {
                let p = &g.properties;
                assert_eq!(p.content_type().as_ref().unwrap().as_str(), "text/plain");
                assert_eq!(p.app_id().as_ref().unwrap().as_str(), "app");
                assert_eq!(*p.delivery_mode(), Some(2));
            }
            _ => assert_eq!(g.delivery_mode, Some(2), "persistent as a plain publish"),
        }
    }
    assert_eq!(ids.len(), n as usize + 2);
    conn.close_ok();
    Reader::new().delete(&name);
}

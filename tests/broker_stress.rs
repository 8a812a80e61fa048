//! Stress against the real broker, bounded in time (RA_STRESS_SECS, default 20 s of load):
//!
//! - 8 threads publish sequenced messages to 2 queues on one connection;
//! - consumers on those queues are stopped and started over and over by another thread, which
//!   checks the stop guarantee (no callback running when stop returns, none starting before
//!   start);
//! - two more threads open and close other connections in a loop (with queues, consumers and
//!   publishes; to the broker and to a dead port), so handle slots are reused: every stale
//!   handle must stay AMQP_ERR_INVALID_HANDLE and no new handle may equal a stale one;
//! - a watchdog aborts the process if any API call takes longer than 30 s (a deadlock).
//!
//! At the end the main connection closes gracefully (unsent 0), and every message whose
//! amqp_publish returned AMQP_OK must be found either in a callback record or in the queue (read
//! by an independent lapin client): no confirmed message lost, no phantom message; duplicates
//! are allowed and reported.
//!
//! A second test checks that open/close cycles do not grow RSS, threads or file descriptors
//! without bound. The tests of this file run one at a time (they measure the process).
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Watchdog: every API call made by the stress threads goes through `timed`
// ---------------------------------------------------------------------------------------------

const CALL_LIMIT: Duration = Duration::from_secs(30);

struct Slot {
    thread: String,
    current: Mutex<Option<(&'static str, Instant)>>,
    /// call name -> (count, max duration)
    stats: Mutex<BTreeMap<&'static str, (u64, Duration)>>,
}

static SLOTS: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());

thread_local! {
    static MY_SLOT: std::cell::RefCell<Option<Arc<Slot>>> = const { std::cell::RefCell::new(None) };
}

fn my_slot() -> Arc<Slot> {
    MY_SLOT.with(|s| {
        s.borrow_mut()
            .get_or_insert_with(|| {
                let slot = Arc::new(Slot {
                    thread: common::os_thread_name().unwrap_or_else(|| "unnamed".into()),
                    current: Mutex::new(None),
                    stats: Mutex::new(BTreeMap::new()),
                });
                SLOTS.lock().unwrap().push(slot.clone());
                slot
            })
            .clone()
    })
}

/// Runs one API call under the watchdog's eye and records its duration.
fn timed<R>(call: &'static str, f: impl FnOnce() -> R) -> R {
    let slot = my_slot();
    let t0 = Instant::now();
    *slot.current.lock().unwrap() = Some((call, t0));
    let r = f();
    let el = t0.elapsed();
    *slot.current.lock().unwrap() = None;
    let mut st = slot.stats.lock().unwrap();
    let e = st.entry(call).or_insert((0, Duration::ZERO));
    e.0 += 1;
    e.1 = e.1.max(el);
    r
}

/// Aborts the process (a deadlock cannot be failed otherwise) when a call exceeds CALL_LIMIT.
fn start_watchdog(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                for s in SLOTS.lock().unwrap().iter() {
                    if let Some((call, t0)) = *s.current.lock().unwrap() {
                        if t0.elapsed() > CALL_LIMIT {
                            eprintln!(
                                "WATCHDOG: {call} on thread {} has been running for {:?} \
                                 (limit {CALL_LIMIT:?}): deadlock? aborting",
                                s.thread,
                                t0.elapsed()
                            );
                            std::process::abort();
                        }
                    }
                }
            }
        })
        .unwrap()
}

fn call_latency_table() -> String {
    let mut merged: BTreeMap<&'static str, (u64, Duration)> = BTreeMap::new();
    for s in SLOTS.lock().unwrap().iter() {
        for (k, (n, max)) in s.stats.lock().unwrap().iter() {
            let e = merged.entry(k).or_insert((0, Duration::ZERO));
            e.0 += n;
            e.1 = e.1.max(*max);
        }
    }
    let mut out = String::from("call                      count      max\n");
    for (k, (n, max)) in merged {
        out.push_str(&format!("{k:<24} {n:>7} {max:>10.1?}\n"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A light consume callback: records bodies and checks the stop guarantee
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Sink {
    bodies: Mutex<Vec<Vec<u8>>>,
    running: AtomicUsize,
    /// set by the toggler after amqp_consume_stop returned, cleared before amqp_consume_start
    stopped: AtomicBool,
    /// callbacks that started while the queue was stopped
    started_while_stopped: AtomicU64,
    calls: AtomicU64,
}

unsafe extern "C-unwind" fn sink_cb(
    d: *const amqp_delivery,
    ud: *mut c_void,
) -> amqp_disposition_raw {
    let s = &*(ud as *const Sink);
    s.running.fetch_add(1, Ordering::SeqCst);
    if s.stopped.load(Ordering::SeqCst) {
        s.started_while_stopped.fetch_add(1, Ordering::SeqCst);
    }
    let d = &*d;
    let body = if d.body_len == 0 {
        Vec::new()
    } else {
        std::slice::from_raw_parts(d.body, d.body_len).to_vec()
    };
    s.bodies.lock().unwrap().push(body);
    s.calls.fetch_add(1, Ordering::SeqCst);
    s.running.fetch_sub(1, Ordering::SeqCst);
    amqp_disposition::AMQP_ACK as amqp_disposition_raw
}

/// Leaks an Arc for userdata (it must outlive the connection; a failing test must never leave
/// the library calling into freed memory).
fn sink_ud(s: &Arc<Sink>) -> *mut c_void {
    Arc::into_raw(s.clone()) as *mut c_void
}

fn body(q: usize, t: usize, seq: u64) -> Vec<u8> {
    format!("{q}:{t}:{seq}").into_bytes()
}

fn parse_body(b: &[u8]) -> Option<(usize, usize, u64)> {
    let s = std::str::from_utf8(b).ok()?;
    let mut it = s.split(':');
    let q = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    Some((q, t, seq))
}

/// Compares what was confirmed (publish returned OK) with what was seen (callbacks + reader).
/// Returns (missing, duplicates, phantoms).
fn reconcile(
    expected: &HashSet<(usize, u64)>,
    queue_index: usize,
    seen: impl IntoIterator<Item = Vec<u8>>,
) -> (Vec<(usize, u64)>, usize, Vec<String>) {
    let mut counts: HashMap<(usize, u64), usize> = HashMap::new();
    let mut phantoms = Vec::new();
    for b in seen {
        match parse_body(&b) {
            Some((q, t, seq)) if q == queue_index && expected.contains(&(t, seq)) => {
                *counts.entry((t, seq)).or_default() += 1
            }
            _ => phantoms.push(String::from_utf8_lossy(&b).into_owned()),
        }
    }
    let mut missing: Vec<_> = expected
        .iter()
        .filter(|k| !counts.contains_key(k))
        .copied()
        .collect();
    missing.sort();
    let dups = counts.values().map(|n| n - 1).sum();
    (missing, dups, phantoms)
}

fn stress_secs() -> u64 {
    std::env::var("RA_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// A churn connection's queue: what was confirmed and who consumed it.
struct ChurnQueue {
    name: String,
    ok: HashSet<(usize, u64)>,
    sink: Option<Arc<Sink>>,
}

#[derive(Default)]
struct ChurnReport {
    cycles: u64,
    dead_cycles: u64,
    stale_checks: u64,
    queues: Vec<ChurnQueue>,
    errors: Vec<String>,
}

/// One churn thread: connections opened and closed in a loop until `deadline`.
fn churn(id: usize, deadline: Instant, stale: Arc<Mutex<Vec<(char, u64)>>>) -> ChurnReport {
    let mut rep = ChurnReport::default();
    let check_new = |h: u64, what: &str, errors: &mut Vec<String>| {
        if stale.lock().unwrap().iter().any(|(_, s)| *s == h) {
            errors.push(format!("new {what} handle {h:#x} equals a stale handle"));
        }
    };
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        // a connection to the broker, with two queues, a consumer, publishes
        let c = timed("amqp_connect", || {
            connect(&uri(), Some("reconnect_delay_ms=20"))
        });
        let _c_guard = ConnGuard::new(c); // closed below; closes it if this thread panics first
        check_new(c, "connection", &mut rep.errors);
        let r = timed("amqp_wait_connected", || amqp_wait_connected(c, 10_000));
        if r != amqp_result::AMQP_OK {
            rep.errors.push(format!(
                "churn {id}: wait_connected {r:?}: {}",
                last_error()
            ));
        }
        let mut cycle_queues = Vec::new();
        for k in 0..2 {
            let name = unique_name(&format!("stress-churn{id}"));
            let (r, q) = timed("amqp_queue_open", || {
                try_queue_open(c, &name, None, None, None)
            });
            if r != amqp_result::AMQP_OK {
                rep.errors
                    .push(format!("churn {id}: queue_open {r:?}: {}", last_error()));
                continue;
            }
            check_new(q, "queue", &mut rep.errors);
            let sink = (k == 0).then(|| Arc::new(Sink::default()));
            if let Some(s) = &sink {
                let r = timed("amqp_consume", || unsafe {
                    amqp_consume(q, Some(sink_cb), sink_ud(s), 1 + (n % 2) as u32)
                });
                if r != amqp_result::AMQP_OK {
                    rep.errors
                        .push(format!("churn {id}: consume {r:?}: {}", last_error()));
                }
            }
            let mut ok = HashSet::new();
            // queue index in the body: 100 + churn id (never confused with the main queues)
            for seq in 0..40u64 {
                let r = timed("amqp_publish", || publish(q, &body(100 + id, k, seq)));
                if r == amqp_result::AMQP_OK {
                    ok.insert((k, seq));
                } else {
                    rep.errors
                        .push(format!("churn {id}: publish {r:?}: {}", last_error()));
                }
            }
            if n.is_multiple_of(3) {
                let r = timed("amqp_consume_stop", || amqp_consume_stop(q));
                if r != amqp_result::AMQP_OK {
                    rep.errors
                        .push(format!("churn {id}: consume_stop {r:?}: {}", last_error()));
                }
            }
            cycle_queues.push((q, ChurnQueue { name, ok, sink }));
        }
        let mut unsent = u64::MAX;
        let r = timed("amqp_close_graceful", || unsafe {
            amqp_close_graceful(c, 20_000, &mut unsent)
        });
        if r != amqp_result::AMQP_OK || unsent != 0 {
            rep.errors.push(format!(
                "churn {id}: close_graceful {r:?} unsent {unsent}: {}",
                last_error()
            ));
        }
        // everything of this connection is stale now
        let mut st = stale.lock().unwrap();
        st.push(('c', c));
        for (q, cq) in cycle_queues {
            st.push(('q', q));
            rep.queues.push(cq);
        }
        drop(st);

        // a dead-port connection: slots churn fast, the unsent count is exact
        let d = timed("amqp_connect", || connect(DEAD_URI, None));
        check_new(d, "connection", &mut rep.errors);
        let (r, dq) = timed("amqp_queue_open", || {
            try_queue_open(d, "stress-dead", None, None, None)
        });
        if r == amqp_result::AMQP_OK {
            check_new(dq, "queue", &mut rep.errors);
            let _ = timed("amqp_publish", || publish(dq, b"never sent"));
        } else {
            rep.errors.push(format!(
                "churn {id}: dead queue_open {r:?}: {}",
                last_error()
            ));
        }
        let mut unsent = u64::MAX;
        let r = timed("amqp_close_graceful", || unsafe {
            amqp_close_graceful(d, 0, &mut unsent)
        });
        if r != amqp_result::AMQP_ERR_TIMEOUT || unsent != 1 {
            rep.errors.push(format!(
                "churn {id}: dead close {r:?} unsent {unsent} (expected TIMEOUT, 1)"
            ));
        }
        {
            let mut st = stale.lock().unwrap();
            st.push(('c', d));
            st.push(('q', dq));
        }
        rep.dead_cycles += 1;

        // stale handles (of every thread; the newest 200 and a spread of older ones) stay
        // invalid, although their slots are reused
        let snapshot: Vec<(char, u64)> = {
            let st = stale.lock().unwrap();
            let recent = st.len().saturating_sub(200);
            st.iter()
                .enumerate()
                .filter(|(i, _)| *i >= recent || i % 37 == n as usize % 37)
                .map(|(_, x)| *x)
                .collect()
        };
        for (kind, h) in snapshot {
            rep.stale_checks += 1;
            let r = if kind == 'c' {
                timed("amqp_wait_connected", || amqp_wait_connected(h, 0))
            } else {
                timed("amqp_publish", || publish(h, b"stale"))
            };
            if r != amqp_result::AMQP_ERR_INVALID_HANDLE {
                rep.errors.push(format!(
                    "stale {kind} handle {h:#x} gave {r:?} (slot reused?)"
                ));
            }
            if kind == 'q' {
                let r = timed("amqp_consume_start", || amqp_consume_start(h));
                if r != amqp_result::AMQP_ERR_INVALID_HANDLE {
                    rep.errors
                        .push(format!("stale queue {h:#x}: consume_start gave {r:?}"));
                }
            }
        }
        rep.cycles += 1;
        // leave the broker some air: the point is concurrency, not connection rate
        std::thread::sleep(Duration::from_millis(30));
    }
    rep
}

#[test]
fn stress_publish_consume_churn_no_confirmed_message_lost() {
    let _g = serial();
    let secs = stress_secs();
    let t_start = Instant::now();
    let stop_watchdog = Arc::new(AtomicBool::new(false));
    let watchdog = start_watchdog(stop_watchdog.clone());
    let reader = Reader::new();

    // the main connection: 2 queues, consumers on both
    let conn = timed("amqp_connect", || connect_ok(None));
    let names: Vec<String> = (0..2)
        .map(|i| unique_name(&format!("stress-main{i}")))
        .collect();
    let queues: Vec<u64> = names
        .iter()
        .map(|n| timed("amqp_queue_open", || open_simple(conn, n)))
        .collect();
    let sinks: Vec<Arc<Sink>> = (0..2).map(|_| Arc::new(Sink::default())).collect();
    for (q, s) in queues.iter().zip(&sinks) {
        let r = timed("amqp_consume", || unsafe {
            amqp_consume(*q, Some(sink_cb), sink_ud(s), 2)
        });
        assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
    }

    let deadline = Instant::now() + Duration::from_secs(secs);

    // 8 publishers, alternating between the two queues; pacing keeps the final check fast
    const PUBLISHERS: usize = 8;
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|t| {
            let queues = queues.clone();
            std::thread::Builder::new()
                .name(format!("publisher-{t}"))
                .spawn(move || {
                    // per queue: the sequence numbers whose publish returned OK
                    let mut ok: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
                    let mut seq = [0u64; 2];
                    let mut full = 0u64;
                    let mut other = Vec::new();
                    let mut i = 0u64;
                    while Instant::now() < deadline {
                        let qi = (i % 2) as usize;
                        i += 1;
                        let s = seq[qi];
                        seq[qi] += 1;
                        let r = timed("amqp_publish", || publish(queues[qi], &body(qi, t, s)));
                        match r {
                            amqp_result::AMQP_OK => ok[qi].push(s),
                            amqp_result::AMQP_ERR_BUFFER_FULL => {
                                full += 1;
                                std::thread::sleep(Duration::from_millis(2));
                            }
                            r => other.push(format!("{r:?}: {}", last_error())),
                        }
                        if i.is_multiple_of(10) {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    (ok, full, other)
                })
                .unwrap()
        })
        .collect();

    // the toggler: stop and start the consumers of the main queues, checking the guarantee
    let toggler = {
        let queues = queues.clone();
        let sinks = sinks.clone();
        std::thread::Builder::new()
            .name("toggler".into())
            .spawn(move || {
                let mut violations = Vec::new();
                let mut toggles = 0u64;
                let mut k = 0u64;
                // the last 3 s: both consumers stay stopped, so what is published then (and
                // what was prefetched) must be found in the queues by the reader
                while Instant::now() + Duration::from_secs(3) < deadline {
                    k += 1;
                    let qi = (k % 2) as usize;
                    let r = timed("amqp_consume_stop", || amqp_consume_stop(queues[qi]));
                    if r != amqp_result::AMQP_OK {
                        violations.push(format!("consume_stop {r:?}: {}", last_error()));
                    }
                    let running = sinks[qi].running.load(Ordering::SeqCst);
                    if running != 0 {
                        violations.push(format!(
                            "queue {qi}: {running} callback(s) running after amqp_consume_stop returned"
                        ));
                    }
                    sinks[qi].stopped.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5 + (k * 7) % 45));
                    sinks[qi].stopped.store(false, Ordering::SeqCst);
                    let r = timed("amqp_consume_start", || amqp_consume_start(queues[qi]));
                    if r != amqp_result::AMQP_OK {
                        violations.push(format!("consume_start {r:?}: {}", last_error()));
                    }
                    toggles += 1;
                    std::thread::sleep(Duration::from_millis(10 + (k * 13) % 90));
                }
                for qi in 0..2 {
                    let r = timed("amqp_consume_stop", || amqp_consume_stop(queues[qi]));
                    if r != amqp_result::AMQP_OK {
                        violations.push(format!("final consume_stop {r:?}: {}", last_error()));
                    }
                    let running = sinks[qi].running.load(Ordering::SeqCst);
                    if running != 0 {
                        violations.push(format!(
                            "queue {qi}: {running} callback(s) running after the final stop"
                        ));
                    }
                    // never cleared: any callback from now on is a violation
                    sinks[qi].stopped.store(true, Ordering::SeqCst);
                }
                (toggles, violations)
            })
            .unwrap()
    };

    // churn: other connections opened and closed concurrently
    let stale: Arc<Mutex<Vec<(char, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let churners: Vec<_> = (0..2)
        .map(|id| {
            let stale = stale.clone();
            std::thread::Builder::new()
                .name(format!("churn-{id}"))
                .spawn(move || churn(id, deadline, stale))
                .unwrap()
        })
        .collect();

    // collect
    let mut expected: [HashSet<(usize, u64)>; 2] = [HashSet::new(), HashSet::new()];
    let mut full_total = 0;
    let mut publish_errors = Vec::new();
    for (t, h) in publishers.into_iter().enumerate() {
        let (ok, full, other) = h.join().expect("publisher panicked");
        for qi in 0..2 {
            expected[qi].extend(ok[qi].iter().map(|s| (t, *s)));
        }
        full_total += full;
        publish_errors.extend(other);
    }
    let (toggles, violations) = toggler.join().expect("toggler panicked");
    let reports: Vec<ChurnReport> = churners
        .into_iter()
        .map(|h| h.join().expect("churn thread panicked"))
        .collect();
    let load_time = t_start.elapsed();

    // the library's own counters agree with what the callers saw
    let mut stats_errors = Vec::new();
    for qi in 0..2 {
        let s = timed("amqp_queue_get_stats", || qstats(queues[qi]));
        if s.published != expected[qi].len() as u64 {
            stats_errors.push(format!(
                "queue {qi}: stats.published {} != {} publishes that returned OK",
                s.published,
                expected[qi].len()
            ));
        }
        println!("main queue {qi} before close: {}", fmt_qstats(&s));
    }

    // close gracefully: everything confirmed
    let mut unsent = u64::MAX;
    let t_close = Instant::now();
    let r = timed("amqp_close_graceful", || unsafe {
        amqp_close_graceful(conn, 25_000, &mut unsent)
    });
    let close_err = last_error();
    let close_time = t_close.elapsed();
    stop_watchdog.store(true, Ordering::SeqCst);
    watchdog.join().unwrap();

    // what reached the queues, read by an independent client
    let mut lost_report = Vec::new();
    let mut summary = Vec::new();
    for qi in 0..2 {
        let in_queue = reader.drain_fast(
            &names[qi],
            Duration::from_millis(500),
            Duration::from_secs(60),
        );
        let from_cb = sinks[qi].bodies.lock().unwrap().clone();
        let (n_cb, n_q) = (from_cb.len(), in_queue.len());
        let seen = from_cb
            .into_iter()
            .chain(in_queue.into_iter().map(|g| g.body));
        let (missing, dups, phantoms) = reconcile(&expected[qi], qi, seen);
        summary.push(format!(
            "main queue {qi}: {} confirmed publishes, {n_cb} callback deliveries, {n_q} left in \
             the queue, {} missing, {dups} duplicates, {} phantoms, {} callbacks started while \
             stopped",
            expected[qi].len(),
            missing.len(),
            phantoms.len(),
            sinks[qi].started_while_stopped.load(Ordering::SeqCst)
        ));
        if !missing.is_empty() {
            lost_report.push(format!(
                "queue {qi}: {} confirmed messages lost, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            ));
        }
        if !phantoms.is_empty() {
            lost_report.push(format!(
                "queue {qi}: {} messages never published OK, e.g. {:?}",
                phantoms.len(),
                &phantoms[..phantoms.len().min(5)]
            ));
        }
        let sws = sinks[qi].started_while_stopped.load(Ordering::SeqCst);
        if sws > 0 {
            lost_report.push(format!(
                "queue {qi}: {sws} callback(s) started between amqp_consume_stop and amqp_consume_start"
            ));
        }
        reader.delete(&names[qi]);
    }

    // the churn connections' queues
    let mut churn_errors = Vec::new();
    let (mut churn_cycles, mut churn_msgs, mut churn_dups, mut stale_checks) = (0, 0, 0, 0);
    for (id, rep) in reports.iter().enumerate() {
        churn_cycles += rep.cycles;
        stale_checks += rep.stale_checks;
        churn_errors.extend(rep.errors.iter().cloned());
        for cq in &rep.queues {
            // small queues: basic.get is quicker than a consumer's idle wait
            let in_queue = reader.drain(&cq.name);
            let from_cb = cq
                .sink
                .as_ref()
                .map(|s| s.bodies.lock().unwrap().clone())
                .unwrap_or_default();
            let seen = from_cb
                .into_iter()
                .chain(in_queue.into_iter().map(|g| g.body));
            let (missing, dups, phantoms) = reconcile(&cq.ok, 100 + id, seen);
            churn_msgs += cq.ok.len();
            churn_dups += dups;
            if !missing.is_empty() || !phantoms.is_empty() {
                churn_errors.push(format!(
                    "churn queue {}: {} lost {:?}, phantoms {:?}",
                    cq.name,
                    missing.len(),
                    &missing[..missing.len().min(5)],
                    &phantoms[..phantoms.len().min(5)]
                ));
            }
            if let Some(s) = &cq.sink {
                if s.started_while_stopped.load(Ordering::SeqCst) > 0 {
                    churn_errors.push(format!("churn queue {}: callback while stopped", cq.name));
                }
            }
            reader.delete(&cq.name);
        }
    }

    println!("--- stress summary ({secs} s of load, {load_time:.1?} until all threads joined) ---");
    for s in &summary {
        println!("{s}");
    }
    println!(
        "publishers: {PUBLISHERS} threads, {} OK, {full_total} BUFFER_FULL, {} other errors",
        expected[0].len() + expected[1].len(),
        publish_errors.len()
    );
    println!(
        "toggler: {toggles} stop/start pairs, {} violations",
        violations.len()
    );
    println!(
        "churn: {churn_cycles} broker + dead-port connection cycles, {churn_msgs} confirmed \
         messages, {churn_dups} duplicates, {stale_checks} stale-handle checks, {} errors",
        churn_errors.len()
    );
    println!("close_graceful: {r:?}, unsent {unsent}, took {close_time:.1?}");
    println!(
        "API call latencies (watchdog limit {CALL_LIMIT:?}):\n{}",
        call_latency_table()
    );

    let mut failures = Vec::new();
    if r != amqp_result::AMQP_OK || unsent != 0 {
        failures.push(format!(
            "close_graceful: {r:?}, unsent {unsent}: {close_err}"
        ));
    }
    failures.extend(publish_errors.into_iter().take(10));
    failures.extend(violations.into_iter().take(10));
    failures.extend(stats_errors);
    failures.extend(lost_report);
    failures.extend(churn_errors.into_iter().take(20));
    assert!(
        expected[0].len() > 1000 && expected[1].len() > 1000,
        "too little load to mean anything: {} / {}",
        expected[0].len(),
        expected[1].len()
    );
    assert!(toggles > 10, "the toggler hardly ran: {toggles}");
    assert!(
        churn_cycles >= 4,
        "the churn threads hardly ran: {churn_cycles}"
    );
    assert!(
        failures.is_empty(),
        "stress failures:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Resources across open/close cycles
// ---------------------------------------------------------------------------------------------

static ACKED: AtomicU64 = AtomicU64::new(0);

unsafe extern "C-unwind" fn ack_cb(
    _d: *const amqp_delivery,
    _u: *mut c_void,
) -> amqp_disposition_raw {
    ACKED.fetch_add(1, Ordering::Relaxed);
    amqp_disposition::AMQP_ACK as amqp_disposition_raw
}

/// Tasks alive on the library's tokio runtime (its supervisors and sessions, and lapin's own
/// tasks).
fn runtime_tasks() -> usize {
    resilient_amqp::testing::runtime_tasks().expect("runtime")
}

/// The test broker's URI with a short heartbeat: lapin's heartbeat task of a closed connection
/// ends at its next tick (half the heartbeat), so the task count settles quickly.
fn short_heartbeat_uri() -> String {
    let u = uri();
    let sep = if u.contains('?') { '&' } else { '?' };
    format!("{u}{sep}heartbeat=1")
}

/// One full cycle against the broker: connect, queue, 2 consumers, publishes, graceful close.
fn broker_cycle(queue: &str) {
    let c_guard = ConnGuard::connect(&short_heartbeat_uri(), Some("reconnect_delay_ms=20"));
    let c = c_guard.h();
    assert_eq!(
        amqp_wait_connected(c, 10_000),
        amqp_result::AMQP_OK,
        "{}",
        last_error()
    );
    let q = open_simple(c, queue);
    let r = unsafe { amqp_consume(q, Some(ack_cb), std::ptr::null_mut(), 2) };
    assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
    let payload = vec![b'm'; 1024];
    for _ in 0..20 {
        publish_ok(q, &payload);
    }
    wait_drained(q, Duration::from_secs(10));
    c_guard.close_ok();
}

/// One cycle to a dead port that surely makes connect attempts (max_reconnects=2: it gives up
/// after them; the delay between them, at least 100 ms, leaves time to open and publish), with a
/// message that is never sent.
fn dead_cycle() {
    let c_guard = ConnGuard::connect(DEAD_URI, Some("max_reconnects=2&reconnect_delay_ms=200"));
    let c = c_guard.h();
    let q = open_simple(c, "rss-dead");
    publish_ok(q, &[0u8; 4096]);
    assert_eq!(amqp_wait_connected(c, 10_000), amqp_result::AMQP_ERR_CLOSED);
    let (r, unsent) = close(c, 0);
    assert_eq!((r, unsent), (amqp_result::AMQP_ERR_TIMEOUT, 1));
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

fn count_dir(p: &str) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

fn threads() -> usize {
    count_dir("/proc/self/task")
}

fn fds() -> usize {
    count_dir("/proc/self/fd")
}

/// Waits up to `timeout` for `f()` to drop to at most `limit`; returns the last value.
fn settle(limit: usize, timeout: Duration, f: impl Fn() -> usize) -> usize {
    let mut last = f();
    poll(timeout, Duration::from_millis(100), || {
        last = f();
        last <= limit
    });
    last
}

#[derive(Clone, Copy)]
struct Sample {
    cycles: usize,
    rss: u64,
    threads: usize,
    fds: usize,
    tasks: usize,
}

fn sample(cycles: usize, base: Option<&Sample>) -> Sample {
    // threads, descriptors and tasks of closed connections end asynchronously: give them time
    let (thr, fd, tk) = match base {
        Some(b) => (
            settle(b.threads + 2, Duration::from_secs(10), threads),
            settle(b.fds + 2, Duration::from_secs(10), fds),
            settle(b.tasks + 4, Duration::from_secs(10), runtime_tasks),
        ),
        None => (threads(), fds(), runtime_tasks()),
    };
    Sample {
        cycles,
        rss: rss_bytes(),
        threads: thr,
        fds: fd,
        tasks: tk,
    }
}

/// Runs `cycle` in rounds and checks that RSS, threads, descriptors and runtime tasks do not
/// grow from round to round. Returns the problems found.
fn check_cycles(what: &str, rounds: usize, per_round: usize, cycle: impl Fn()) -> Vec<String> {
    for _ in 0..per_round / 5 + 1 {
        cycle(); // warm-up: runtime, allocator arenas, lapin's statics
    }
    std::thread::sleep(Duration::from_millis(300));
    let s0 = sample(0, None);
    let mut samples = vec![s0];
    let t0 = Instant::now();
    for r in 1..=rounds {
        for _ in 0..per_round {
            cycle();
        }
        samples.push(sample(r * per_round, Some(&s0)));
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{what}: {rounds} rounds of {per_round} cycles in {:.1?}",
        t0.elapsed()
    );
    println!(
        "{:>8} {:>12} {:>10} {:>8} {:>6} {:>14}",
        "cycles", "RSS (KiB)", "delta MiB", "threads", "fds", "runtime tasks"
    );
    for s in &samples {
        println!(
            "{:>8} {:>12} {:>+10.2} {:>8} {:>6} {:>14}",
            s.cycles,
            s.rss / 1024,
            mib(s.rss) - mib(s0.rss),
            s.threads,
            s.fds,
            s.tasks
        );
    }
    let mut errors = Vec::new();
    let last = samples[samples.len() - 1];
    let prev = samples[samples.len() - 2];
    // generous slack for allocator caches and fragmentation; a leak of a few KiB per cycle
    // shows (the bodies alone are 4-20 KiB per cycle)
    let round_budget = (per_round as u64 * 2048).max(4 << 20);
    if last.rss.saturating_sub(prev.rss) > round_budget {
        errors.push(format!(
            "{what}: RSS grew {:.2} MiB in the last round of {per_round} cycles (budget {:.2} MiB)",
            mib(last.rss) - mib(prev.rss),
            mib(round_budget)
        ));
    }
    if last.rss.saturating_sub(s0.rss) > 2 * round_budget + (8 << 20) {
        errors.push(format!(
            "{what}: RSS grew {:.2} MiB over {} cycles",
            mib(last.rss) - mib(s0.rss),
            last.cycles
        ));
    }
    for s in &samples[1..] {
        if s.threads > s0.threads + 2 {
            errors.push(format!(
                "{what}: threads {} -> {} after {} cycles",
                s0.threads, s.threads, s.cycles
            ));
        }
        if s.fds > s0.fds + 2 {
            errors.push(format!(
                "{what}: fds {} -> {} after {} cycles",
                s0.fds, s.fds, s.cycles
            ));
        }
        if s.tasks > s0.tasks + 4 {
            errors.push(format!(
                "{what}: {} runtime tasks alive after {} cycles (baseline {}): {:.2} leaked per cycle",
                s.tasks,
                s.cycles,
                s0.tasks,
                (s.tasks - s0.tasks) as f64 / s.cycles as f64
            ));
        }
    }
    errors
}

#[test]
fn open_close_cycles_do_not_leak() {
    let _g = serial();
    let queue = unique_name("rss");
    let reader = Reader::new();
    let broker_rounds: usize = std::env::var("RA_STRESS_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut errors = check_cycles(
        "broker connect/consume/publish/close",
        2,
        broker_rounds,
        || broker_cycle(&queue),
    );
    // Each dead cycle waits for its connection to give up (>= 100 ms), so
    // one "cycle" here runs 8 of them at once: 2 x 80 x 8 = 1280 connections.
    errors.extend(check_cycles(
        "dead-port connect/fail/close (8 at once)",
        2,
        80,
        || std::thread::scope(|s| (0..8).for_each(|_| drop(s.spawn(dead_cycle)))),
    ));
    println!(
        "acked by the broker-cycle consumers: {}",
        ACKED.load(Ordering::Relaxed)
    );
    reader.delete(&queue);
    assert!(
        errors.is_empty(),
        "resource growth across open/close cycles:\n{}",
        errors.join("\n")
    );
}

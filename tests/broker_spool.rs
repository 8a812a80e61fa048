//! The on-disk spool (queue option `spool_dir`) against the real broker:
//!
//! - `sigkilled_publishers_lose_nothing`: a publisher process (this test
//!   binary run again as `publisher_child`) publishes numbered messages into
//!   a spool and prints every number `amqp_publish` accepted; it is SIGKILLed
//!   at random moments SPOOL_KILLS times (default 10): once with the broker
//!   up, then during an outage (`stop_app`), the last time while the broker
//!   comes back (`start_app`). Each time a new process opens the same
//!   spool. A last process sends what is left and exits; an independent
//!   reader (lapin) drains the queue: every accepted number must be there
//!   (duplicates are allowed: at-least-once).
//! - `a_second_user_of_the_directory_is_refused`: while a child process
//!   holds the spool, opening it here is AMQP_ERR_INVALID_ARGUMENT naming
//!   the holder; so is a second queue handle in one process.
//!
//! Needs RESILIENT_AMQP_TEST_URI and RESILIENT_AMQP_TEST_CTL (stop_app /
//! start_app); the tests in this file run one at a time.

mod common;

use common::*;
use resilient_amqp::ffi::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

const CHILD_DIR: &str = "RA_SPOOL_CHILD_DIR";
const CHILD_QUEUE: &str = "RA_SPOOL_CHILD_QUEUE";
const CHILD_START: &str = "RA_SPOOL_CHILD_START";
/// Set: publish nothing, wait until the spool is empty, exit.
const CHILD_FINAL: &str = "RA_SPOOL_CHILD_FINAL";
const CHILD_SYNC: &str = "RA_SPOOL_CHILD_SYNC";

fn spool_options(dir: &str, sync: &str) -> String {
    format!("spool_dir={dir}&spool_sync={sync}")
}

/// The publisher process: prints `PUB n` for every number accepted.
#[test]
fn publisher_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // run as a test: nothing to do
    };
    let queue = std::env::var(CHILD_QUEUE).expect("queue");
    let sync = std::env::var(CHILD_SYNC).unwrap_or_else(|_| "batch".into());
    let conn = connect(
        &uri(),
        Some("reconnect_delay_ms=20&reconnect_delay_max_ms=200"),
    );
    let q = queue_open(conn, &queue, None, None, Some(&spool_options(&dir, &sync)));
    let out = std::io::stdout();
    let s = qstats(q);
    writeln!(out.lock(), "RESTORED {}", s.spool_restored).unwrap();
    if std::env::var_os(CHILD_FINAL).is_some() {
        wait_for("the spool to drain", Duration::from_secs(60), || {
            qstats(q).spooled == 0
        });
        let s = qstats(q);
        writeln!(out.lock(), "DRAINED confirmed={}", s.confirmed).unwrap();
        close_ok(conn);
        return;
    }
    let mut n: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    loop {
        match publish(q, &seq_body(n)) {
            amqp_result::AMQP_OK => {
                // One line per message, flushed: a kill leaves at most a
                // partial line, which the parent ignores.
                writeln!(out.lock(), "PUB {n}").unwrap();
                n += 1;
            }
            amqp_result::AMQP_ERR_BUFFER_FULL => std::thread::sleep(Duration::from_millis(5)),
            r => panic!("amqp_publish: {r:?}: {}", last_error()),
        }
        std::thread::sleep(Duration::from_micros(300));
    }
}

fn spawn_child(dir: &str, queue: &str, start: u64, last: bool, sync: &str) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "publisher_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR, dir)
    .env(CHILD_QUEUE, queue)
    .env(CHILD_START, start.to_string())
    .env(CHILD_SYNC, sync)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if last {
        cmd.env(CHILD_FINAL, "1");
    }
    cmd.spawn().expect("spawn the publisher")
}

/// Reads the child's `PUB n` lines into `accepted` on a thread; returns
/// the receiver of its other lines.
fn collect(child: &mut Child) -> (std::thread::JoinHandle<Vec<u64>>, mpsc::Receiver<String>) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut got = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match line.strip_prefix("PUB ").and_then(|n| n.parse().ok()) {
                Some(n) => got.push(n),
                None => {
                    let _ = tx.send(line);
                }
            }
        }
        got
    });
    (h, rx)
}

fn rand_ms(lo: u64, hi: u64, seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    lo + *seed % (hi - lo)
}

fn temp_dir(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("ra-spool-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d.to_string_lossy().into_owned()
}

/// Runs one publisher for `ms`, then SIGKILLs it; returns what it accepted.
fn run_and_kill(dir: &str, queue: &str, start: u64, ms: u64, sync: &str) -> (Vec<u64>, u64) {
    let mut child = spawn_child(dir, queue, start, false, sync);
    let (h, rx) = collect(&mut child);
    std::thread::sleep(Duration::from_millis(ms));
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL
    let _ = child.wait();
    let accepted = h.join().unwrap();
    let restored = rx
        .try_iter()
        .find_map(|l| {
            l.split("RESTORED ")
                .nth(1)
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0);
    (accepted, restored)
}

#[test]
fn sigkilled_publishers_lose_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let kills: usize = std::env::var("SPOOL_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let sync = std::env::var("SPOOL_SYNC").unwrap_or_else(|_| "batch".into());
    let queue = unique_name("spool-kill");
    let dir = temp_dir(&queue);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
    let mut accepted: BTreeSet<u64> = BTreeSet::new();
    let mut next = 1u64;
    let t0 = Instant::now();
    let mut outage: Option<AppStopped> = None;
    for i in 0..kills {
        if i == 1 {
            outage = Some(AppStopped::stop());
        }
        let ms = rand_ms(150, 900, &mut seed);
        let restart = i + 1 == kills && kills > 1;
        let (got, restored) = if restart {
            // The last kill while the broker comes back (confirms racing it).
            let mut child = spawn_child(&dir, &queue, next, false, &sync);
            let (h, rx) = collect(&mut child);
            std::thread::sleep(Duration::from_millis(ms));
            if let Some(o) = outage.as_mut() {
                o.start();
            }
            std::thread::sleep(Duration::from_millis(rand_ms(0, 400, &mut seed)));
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            let restored = rx
                .try_iter()
                .find_map(|l| {
                    l.split("RESTORED ")
                        .nth(1)
                        .and_then(|n| n.trim().parse().ok())
                })
                .unwrap_or(0);
            (h.join().unwrap(), restored)
        } else {
            run_and_kill(&dir, &queue, next, ms, &sync)
        };
        eprintln!(
            "spool kill {}: after {ms} ms, {} accepted (from {next}), {restored} restored at its start",
            i + 1,
            got.len()
        );
        if let Some(&m) = got.iter().max() {
            next = next.max(m + 1);
        }
        accepted.extend(got);
    }
    if let Some(mut o) = outage.take() {
        o.start();
    }
    // The last process sends what is left and exits cleanly.
    let mut child = spawn_child(&dir, &queue, next, true, &sync);
    let (h, rx) = collect(&mut child);
    let status = child.wait().expect("wait");
    let _ = h.join();
    let lines: Vec<String> = rx
        .try_iter()
        .filter(|l| l.contains("RESTORED") || l.contains("DRAINED"))
        .collect();
    assert!(status.success(), "last publisher failed: {lines:?}");
    // Everything confirmed: the old segments are gone.
    let segments = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
        })
        .count();
    assert!(
        segments <= 1,
        "{segments} segment files left after the drain"
    );
    let reader = Reader::new();
    let got = reader.drain_fast(&queue, Duration::from_millis(500), Duration::from_secs(60));
    reader.delete(&queue);
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut dups = 0;
    for g in &got {
        let n = parse_seq(&g.body).expect("a numbered body");
        if !seen.insert(n) {
            dups += 1;
        }
    }
    let missing: Vec<u64> = accepted.difference(&seen).copied().collect();
    eprintln!(
        "spool: {kills} SIGKILLs ({sync}), {} accepted, {} read ({} distinct, {dups} duplicates), \
         {} missing, {:.1} s; last process: {lines:?}",
        accepted.len(),
        got.len(),
        seen.len(),
        missing.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(accepted.len() > 100, "too few messages to prove anything");
    assert!(
        missing.is_empty(),
        "missing: {:?}",
        &missing[..missing.len().min(20)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_user_of_the_directory_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let queue = unique_name("spool-lock");
    let dir = temp_dir(&queue);
    let mut child = spawn_child(&dir, &queue, 1, false, "none");
    let (h, _rx) = collect(&mut child);
    wait_for(
        "the child to open the spool",
        Duration::from_secs(10),
        || std::fs::read_to_string(format!("{dir}/LOCK")).is_ok_and(|s| !s.is_empty()),
    );
    let conn = ConnGuard::connect(&uri(), None);
    let opts = spool_options(&dir, "batch");
    let (r, _) = try_queue_open(conn.h(), &queue, None, None, Some(&opts));
    let err = last_error();
    child.kill().unwrap();
    let _ = child.wait();
    let _ = h.join();
    assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT, "{err}");
    assert!(
        err.contains("in use") && err.contains(&format!("pid {}", child.id())),
        "{err}"
    );
    // The holder is gone: the directory is ours; a second handle here is
    // refused the same way.
    let _q = queue_open(conn.h(), &queue, None, None, Some(&opts));
    let (r, _) = try_queue_open(conn.h(), &queue, None, None, Some(&opts));
    assert_eq!(
        r,
        amqp_result::AMQP_ERR_INVALID_ARGUMENT,
        "{}",
        last_error()
    );
    assert!(last_error().contains("in use"), "{}", last_error());
    // Another queue's spool is refused too.
    let (r, _) = try_queue_open(conn.h(), "another-queue", None, None, Some(&opts));
    assert_eq!(
        r,
        amqp_result::AMQP_ERR_INVALID_ARGUMENT,
        "{}",
        last_error()
    );
    conn.close_ok();
    // Closed: the directory is free again for this process.
    let conn = ConnGuard::connect(&uri(), None);
    let (r, _) = try_queue_open(conn.h(), &queue, None, None, Some(&opts));
    assert_eq!(r, amqp_result::AMQP_OK, "after close: {}", last_error());
    conn.close_ok();
    Reader::new().delete(&queue);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_spool_options_are_refused() {
    let conn = ConnGuard::connect(DEAD_URI, None);
    for (opts, key) in [
        ("spool_dir=/tmp/x&spool_sync=sometimes", "spool_sync"),
        ("spool_dir=/tmp/x&spool_max_bytes=-1", "spool_max_bytes"),
        ("spool_dir=/proc/no/such/dir", "spool"),
    ] {
        let (r, _) = try_queue_open(conn.h(), "q", None, None, Some(opts));
        assert_ne!(r, amqp_result::AMQP_OK, "{opts}");
        assert!(last_error().contains(key), "{opts}: {}", last_error());
    }
}

/// Messages published while the broker cannot be reached, with every
/// property and header type, a routing key of their own and tags, and
/// unsent when the connection closes, stay in the spool; the next process
/// (here: the next connection) sends them first, in order, byte for byte.
#[test]
fn properties_and_order_survive_a_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let queue = unique_name("spool-props");
    let dir = temp_dir(&queue);
    let opts = format!(
        "{}&durable=false&persistent=false",
        spool_options(&dir, "always")
    );
    let want = every_property("guest");
    let cm = CMessage::from_lapin(&want, None);
    let dead = ConnGuard::connect(DEAD_URI, Some("reconnect_delay_ms=50"));
    let q = queue_open(dead.h(), &queue, None, None, Some(&opts));
    for i in 0..50u64 {
        if i.is_multiple_of(2) {
            let b = seq_body(i);
            let r = unsafe { amqp_publish_message(q, b.as_ptr().cast(), b.len(), &cm.m) };
            assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
        } else {
            publish_tagged_ok(q, &seq_body(i), 1000 + i);
        }
    }
    assert_eq!(qstats(q).spooled, 50);
    let (_, unsent) = dead.close(0);
    assert_eq!(unsent, 50);
    let conn = ConnGuard::connect_ok(None);
    let q = queue_open(conn.h(), &queue, None, None, Some(&opts));
    assert_eq!(qstats(q).spool_restored, 50);
    publish_ok(q, &seq_body(50));
    wait_drained(q, Duration::from_secs(20));
    assert_eq!(qstats(q).spooled, 0);
    let got = Reader::new().drain_at_least(&queue, 51, Duration::from_secs(20));
    let order: Vec<u64> = got.iter().map(|g| parse_seq(&g.body).unwrap()).collect();
    assert_eq!(
        order,
        (0..=50).collect::<Vec<_>>(),
        "restored first, in order"
    );
    for g in &got[..50] {
        let i = parse_seq(&g.body).unwrap();
        if i.is_multiple_of(2) {
            assert_eq!(g.properties, want, "message {i}: every property and header");
        } else {
            assert_eq!(
                g.properties,
                lapin::BasicProperties::default(),
                "message {i}"
            );
        }
    }
    conn.close_ok();
    Reader::new().delete(&queue);
    let _ = std::fs::remove_dir_all(&dir);
}

//! A queue deleted while another queue shares its fanout exchange: no basic.return comes (the
//! other queue takes each message), so only the periodic passive declare (`topology_check_ms`)
//! notices, and the queue is declared and bound again.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::ffi::c_void;
use std::time::{Duration, Instant};

#[test]
fn a_queue_deleted_behind_a_shared_fanout_exchange_comes_back_within_the_check_interval() {
    let logs = LogLines::capture(amqp_log_level::AMQP_LOG_WARN);
    let exchange = unique_name("fanout");
    let (a, b) = (unique_name("fan-a"), unique_name("fan-b"));
    let reader = Reader::new();
    let c = ConnGuard::connect_ok(None);
    let opts = Some("exchange_type=fanout&topology_check_ms=1000");
    let qa = queue_open(c.h(), &a, Some(&exchange), Some(""), opts);
    let qb = queue_open(c.h(), &b, Some(&exchange), Some(""), opts);
    for i in 0..10 {
        publish_ok(qa, &seq_body(i));
    }
    wait_drained(qa, Duration::from_secs(10));
    assert_eq!(
        (reader.count(&a), reader.count(&b)),
        (Some((10, 0)), Some((10, 0)))
    );
    ctl(&format!("delete_queue {a}"));
    let deleted = Instant::now();
    // Gone, or (the check runs every second) already declared again, empty.
    let after = reader.count(&a);
    assert!(matches!(after, None | Some((0, _))), "deleted: {after:?}");
    // Meanwhile b takes every message: confirmed, nothing comes back for a.
    publish_ok(qb, b"while a is gone");
    let back = poll(Duration::from_secs(5), Duration::from_millis(10), || {
        reader.count(&a).is_some()
    });
    let took = deleted.elapsed();
    assert!(back, "queue {a} was not declared again");
    println!("queue declared again {took:?} after its deletion (check every 1 s)");
    assert!(
        took < Duration::from_millis(2500),
        "within the interval: {took:?}"
    );
    // Bound again: what is published from now on reaches it.
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..5 {
        publish_ok(qa, &seq_body(100 + i));
    }
    wait_drained(qa, Duration::from_secs(10));
    wait_for(
        "5 messages in the queue again",
        Duration::from_secs(10),
        || reader.count(&a) == Some((5, 0)),
    );
    let warned = logs.lines().iter().any(|(l, m)| {
        *l == amqp_log_level::AMQP_LOG_WARN as i32 && m.contains(&a) && m.contains("404")
    });
    assert!(warned, "a WARN says why: {:#?}", logs.lines());
    let s = cstats(c.h());
    assert_eq!(s.connects, 1, "the connection was kept");
    c.close_ok();
    let _ = unsafe { amqp_set_log_callback(None, 0, std::ptr::null_mut()) };
    reader.delete(&a);
    reader.delete(&b);
}

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn broker_pid() -> String {
    let port = std::env::var("RA_BROKER_PORT").expect("RA_BROKER_PORT");
    let file = format!(
        "{}/target/rabbitmq/node-{port}/rabbitmq.pid",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .to_string()
}

/// The cost of the check, measured by hand (docs/bench/): broker and library CPU with 1,000 idle
/// queues checked every 5 s against none, and the publish rate of one queue with and without it.
/// `cargo test --release --test broker_topology_check -- --ignored --nocapture`
#[test]
#[ignore]
fn cost_of_the_topology_check() {
    let broker = broker_pid();
    let me = std::process::id().to_string();
    let window = Duration::from_secs(30);
    let reader = Reader::new();
    for round in 0..2 {
        for check in [5000u32, 0] {
            let c = ConnGuard::connect_ok(None);
            let opts = format!("durable=false&persistent=false&topology_check_ms={check}");
            let names: Vec<String> = (0..1000).map(|_| unique_name("cost")).collect();
            for n in &names {
                queue_open(c.h(), n, None, None, Some(&opts));
            }
            std::thread::sleep(Duration::from_secs(6));
            let (b0, m0) = (cpu_seconds(&broker), cpu_seconds(&me));
            std::thread::sleep(window);
            let (b1, m1) = (cpu_seconds(&broker), cpu_seconds(&me));
            let per_s = |a: f64, b: f64| (b - a) / window.as_secs_f64() * 100.0;
            println!(
                "round {round} check {check} ms, 1000 idle queues: broker CPU {:.2}%, library CPU {:.2}%",
                per_s(b0, b1),
                per_s(m0, m1)
            );
            // One queue's publish rate (the 999 others idle, checked or not).
            let pub_name = unique_name("cost-pub");
            let q = queue_open(c.h(), &pub_name, None, None, Some(&opts));
            let n = 200_000u64;
            let body = [7u8; 64];
            let t = Instant::now();
            for _ in 0..n {
                while unsafe {
                    amqp_publish_wait(q, body.as_ptr() as *const c_void, body.len(), 10_000)
                } != amqp_result::AMQP_OK
                {}
            }
            wait_drained(q, Duration::from_secs(60));
            let rate = n as f64 / t.elapsed().as_secs_f64();
            println!(
                "round {round} check {check} ms: publish {rate:.0} msg/s (200k x 64 B transient)"
            );
            c.close_ok();
            names.iter().for_each(|n| reader.delete(n));
            reader.delete(&pub_name);
        }
    }
}

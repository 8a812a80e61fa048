//! The fault suite (issue 4): zero loss under broker faults, with figures.
//!
//! A test target with `harness = false`: `cargo test --release --test fault_suite` runs `main`.
//! It needs a RabbitMQ node it may disrupt (stop, kill, restart): `bash scripts/test.sh` (SHORT,
//! under ~90 s) or `bash scripts/faults.sh` (FULL, `FAULT_SUITE=full`, a private node).
//!
//! Scenarios (each publishes sequenced, persistent messages to a durable queue at a fixed rate
//! through the library while one fault is injected):
//! - 1: `close_all_connections` every 0.5 s
//! - 2: `stop_app` for 3 s, then `start_app`
//! - 3: the broker's Erlang VM killed with SIGKILL, restarted 2 s later with its data
//! - 4: a silent network blackhole (a TCP proxy in this program stops forwarding, sockets open),
//!   `?heartbeat=2`; 4b (FULL only): the same on an idle connection
//! - 4c: the proxy resets the connection (TCP RST) while publishing, heartbeat 10 s; 4d (FULL
//!   only): the same on an idle connection
//! - 5: a memory alarm (`set_vm_memory_high_watermark 0.00001`, then back to 0.4)
//! - 6a-c: consumers under faults 1-3: a queue pre-seeded by plain lapin is consumed by the
//!   library during the same fault (every message reaches a callback, the queue ends empty, no
//!   bad ack in the broker log, the consumer count is `repeat` after recovery)
//!
//! Settings: FAULT_SUITE=full (bigger N, longer faults), FAULT_SUITE_ONLY=2,4c (only those),
//! FAULT_SUITE_DEDUPE=N (the consume scenarios seed message ids and consume with dedupe=N),
//! FAULT_SUITE_TRACE=1 (the library's timeline per scenario on stderr).
//!
//! What reached the broker is counted by an independent lapin reader, never by the library's own
//! counters. Output: a markdown table on stdout, `target/fault-suite.md`, `target/fault-suite.json`,
//! and a last line `N passed, N failed`. Exit status 1 when any scenario failed.
//!
//! Layout: this file (the scenario list, `main`) and its modules in `tests/fault_suite/`: `cfg`
//! (settings, clock), `broker` (driving and restoring the broker, its log, the independent
//! reader), `monitor` (sampling the library's stats, figures from the samples), `publisher`,
//! `proxy` (blackhole, reset), `sides` (the publishing and consuming sides of a scenario and their
//! checks), `scenarios`, `report` (table, JSON). Generic helpers come from `tests/common`.
#![allow(unused_unsafe)]

mod common;

#[path = "fault_suite/broker.rs"]
mod broker;
#[path = "fault_suite/cfg.rs"]
mod cfg;
#[path = "fault_suite/monitor.rs"]
mod monitor;
#[path = "fault_suite/proxy.rs"]
mod proxy;
#[path = "fault_suite/publisher.rs"]
mod publisher;
#[path = "fault_suite/report.rs"]
mod report;
#[path = "fault_suite/scenarios.rs"]
mod scenarios;
#[path = "fault_suite/sides.rs"]
mod sides;

use broker::*;
use cfg::*;
use monitor::*;
use proxy::*;
use publisher::*;
use report::*;
use scenarios::*;
use sides::*;

use common::*;
use futures_util::StreamExt;
use resilient_amqp::*;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::process::{Command, Stdio};
use std::result::Result;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CONNECTED: u32 = amqp_connection_state::AMQP_STATE_CONNECTED as u32;
/// Reconnect fast, as the brief asks.
const CONN_OPTS: &str = "reconnect_delay_ms=100&reconnect_delay_max_ms=1000";
/// Messages whose log lines mean a consumer acked on the wrong channel.
const BAD_LOG: [&str; 2] = ["unknown delivery tag", "PRECONDITION_FAILED"];

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

type Scenario = fn(&Cfg) -> Vec<Row>;

/// `cargo test` hands libtest's arguments to every test binary. This one is a single test named
/// `fault_suite`: `--list` lists it, `--ignored` and a name filter that does not match it skip it
/// (so `cargo test -- some_other_test` does not disrupt the broker); other options are ignored.
fn selected_by_args() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => {
                if !args.iter().any(|a| a == "--ignored") {
                    println!("fault_suite: test");
                }
                std::process::exit(0);
            }
            "--ignored" => {
                println!("fault_suite: not an ignored test; skipped (--ignored)");
                std::process::exit(0);
            }
            // options that take a value in the next argument
            "--test-threads" | "--skip" | "--color" | "--format" | "--logfile" | "-Z"
            | "--shuffle-seed" => {
                it.next();
            }
            x if x.starts_with('-') => {}
            x => filters.push(x.to_string()),
        }
    }
    let exact = args.iter().any(|a| a == "--exact");
    filters.is_empty()
        || filters.iter().any(|f| {
            if exact {
                f == "fault_suite"
            } else {
                "fault_suite".contains(f.as_str())
            }
        })
}

fn main() {
    let _ = t0();
    if !selected_by_args() {
        println!("fault_suite: skipped (filtered out by the test name filter)");
        println!("0 passed, 0 failed");
        return;
    }
    let cfg = Cfg::from_env();
    say(&format!(
        "{} suite against {} (broker script {}, logs {})",
        if cfg.full { "FULL" } else { "SHORT" },
        cfg.uri,
        cfg.broker_sh,
        cfg.log_dir.display()
    ));
    if !poll(Duration::from_secs(60), Duration::from_millis(200), || {
        port_open(cfg.addr)
    }) {
        let _ = restore_broker(&cfg);
    }
    if let Err(e) = restore_broker(&cfg) {
        fatal(&format!("the broker is not usable: {e}"));
    }
    if let Err(e) = bad_log_lines(&cfg) {
        fatal(&format!(
            "the broker log is needed for the consumer checks: {e}"
        ));
    }

    // a watchdog: the suite is bounded in time, and leaves the broker up even when it hangs
    {
        let cfg = cfg.clone();
        std::thread::spawn(move || {
            std::thread::sleep(cfg.deadline);
            eprintln!(
                "fault_suite: ERROR: the suite did not finish within {:?}; restoring the broker and exiting",
                cfg.deadline
            );
            let _ = restore_broker(&cfg);
            println!("0 passed, 1 failed");
            std::process::exit(2);
        });
    }

    let mut scenarios: Vec<(&str, Scenario)> = vec![
        ("1. close_all_connections every 0.5 s", s_close_all),
        ("2. stop_app 3 s, start_app", s_stop_app),
        ("3. SIGKILL broker, restart 2 s later", s_kill),
        ("4. network blackhole (heartbeat=2)", s_blackhole),
        ("5. memory alarm (connection.blocked)", s_alarm),
    ];
    scenarios.insert(4, ("4c. connection reset (RST), heartbeat 10 s", s_reset));
    if cfg.full {
        scenarios.insert(
            4,
            ("4b. network blackhole, idle connection", s_blackhole_idle),
        );
        scenarios.insert(6, ("4d. connection reset (RST), idle", s_reset_idle));
    }
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    // FAULT_SUITE_ONLY=2,5: only those scenarios (by number)
    let only: Option<Vec<String>> = std::env::var("FAULT_SUITE_ONLY")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|x| x.trim().to_string()).collect());
    for (name, f) in scenarios {
        if let Some(only) = &only {
            if !only.iter().any(|o| name.starts_with(&format!("{o}."))) {
                continue;
            }
        }
        say(&format!("scenario {name}"));
        let t = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(&cfg)));
        let mut got = match result {
            Ok(rows) => rows,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                let mut r = Row::new(name, "-");
                r.fail(format!("panicked: {msg}"));
                vec![r]
            }
        };
        if let Err(e) = restore_broker(&cfg) {
            for r in got.iter_mut() {
                r.fail(format!("broker not restored: {e}"));
            }
        }
        for r in &got {
            say(&format!(
                "{} ({}): {} in {:.1} s: N {} missing {} duplicates {} recover {} / {}{}",
                r.scenario,
                r.kind,
                if r.passed() { "pass" } else { "FAIL" },
                secs(t.elapsed()),
                r.n,
                r.missing,
                r.duplicates,
                fmt_opt(r.recover_connected),
                fmt_opt(r.recover_done),
                if r.failures.is_empty() {
                    String::new()
                } else {
                    format!(" -- {}", r.failures.join("; "))
                }
            ));
        }
        rows.extend(got);
    }
    let took = started.elapsed();
    let md = table(&rows, &cfg);
    println!("\n{md}");
    let target = std::path::PathBuf::from(format!("{}/target", env!("CARGO_MANIFEST_DIR")));
    let _ = std::fs::create_dir_all(&target);
    if let Err(e) = std::fs::write(target.join("fault-suite.md"), &md) {
        eprintln!("fault_suite: cannot write target/fault-suite.md: {e}");
    }
    if let Err(e) = std::fs::write(target.join("fault-suite.json"), json(&rows, &cfg, took)) {
        eprintln!("fault_suite: cannot write target/fault-suite.json: {e}");
    }
    let passed = rows.iter().filter(|r| r.passed()).count();
    let failed = rows.len() - passed;
    println!("fault suite took {:.0} s", secs(took));
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

//! Faults on a real 3-node RabbitMQ cluster with quorum queues (issue 15): the library holds a
//! host list (`amqp://guest:guest@127.0.0.1:31810,127.0.0.1:31820,127.0.0.1:31830/%2f`) and must
//! move to another node, with zero loss, when
//! - a: the node it is connected to is killed with SIGKILL (restarted with its data later);
//! - b: all three nodes are restarted one by one (a rolling restart);
//! - c: the node it is connected to is cut off from the other two (a network partition; with
//!   `pause_minority` the node pauses and closes its client connections), then healed.
//!
//! Each scenario publishes sequenced persistent messages to a quorum queue at a fixed rate while
//! consuming a pre-seeded quorum queue (acking), exactly like the fault suite
//! (`tests/fault_suite/`, whose publishing and consuming sides and checks this file reuses); what
//! reached the broker is counted by an independent lapin reader.
//!
//! Needs the cluster of `scripts/cluster.sh`; run by `bash scripts/cluster-test.sh [short|full]`,
//! which starts it, exports
//! - `RESILIENT_AMQP_CLUSTER_URI` (the host list) and `RESILIENT_AMQP_CLUSTER_SH` (cluster.sh),
//! - `RESILIENT_AMQP_TEST_URI` / `RESILIENT_AMQP_TEST_CTL`: node 1 alone, for the reader and
//!   rabbitmqctl (node 1 is up whenever they are used),
//!
//! and stops the cluster afterwards. Without `RESILIENT_AMQP_CLUSTER_URI` the test prints a note
//! and passes (it is part of `cargo test`). `CLUSTER_FAULTS=full`: publishing at 2,000 msg/s
//! (at least 50,000 per scenario), 50,000 consumed; otherwise 500 msg/s and 5,000. `CLUSTER_FAULTS_ONLY=a,c`: only those. Output: a markdown table
//! on stderr and in `target/cluster-faults.md`.
#![allow(dead_code, unused_unsafe, unused_imports)]

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
#[path = "fault_suite/sides.rs"]
mod sides;

use broker::*;
use cfg::*;
use monitor::*;
use proxy::*;
use publisher::*;
use report::*;
use sides::*;

use common::*;
use futures_util::StreamExt;
use resilient_amqp::*;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::result::Result;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CONNECTED: u32 = amqp_connection_state::AMQP_STATE_CONNECTED as u32;
const CONN_OPTS: &str = "reconnect_delay_ms=100&reconnect_delay_max_ms=1000";
const BAD_LOG: [&str; 2] = ["unknown delivery tag", "PRECONDITION_FAILED"];

/// Quorum queue, persistent messages. While a quorum queue elects a new leader (its leader's
/// node died or paused) the broker nacks publishes for seconds; the default publish_retries (3,
/// with a backoff of 0.1 s, 0.2 s, 0.4 s here) fails them (AMQP_REPORT_NACKED) long before the
/// election is over. 60 retries (the backoff capped at reconnect_delay_max_ms = 1 s) ride out
/// about a minute of it. `CLUSTER_PUBLISH_RETRIES=N` sets another number (3: the default).
fn quorum() -> PubQueue {
    let retries = std::env::var("CLUSTER_PUBLISH_RETRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    PubQueue {
        durable: true,
        persistent: true,
        quorum: true,
        publish_retries: Some(retries),
    }
}

/// The cluster under test.
struct Cluster {
    uri: String,
    sh: String,
    full: bool,
    /// node n's AMQP port is ports[n - 1]
    ports: Vec<u16>,
}

impl Cluster {
    fn from_env() -> Option<Cluster> {
        let uri = std::env::var("RESILIENT_AMQP_CLUSTER_URI")
            .ok()
            .filter(|u| !u.is_empty())?;
        let sh = std::env::var("RESILIENT_AMQP_CLUSTER_SH")
            .unwrap_or_else(|_| format!("{}/scripts/cluster.sh", env!("CARGO_MANIFEST_DIR")));
        let hosts = uri.split('@').nth(1)?.split('/').next()?;
        let ports = hosts
            .split(',')
            .map(|h| h.rsplit(':').next().and_then(|p| p.parse().ok()))
            .collect::<Option<Vec<u16>>>()?;
        let full = std::env::var("CLUSTER_FAULTS").is_ok_and(|v| v == "full");
        Some(Cluster {
            uri,
            sh,
            full,
            ports,
        })
    }

    /// `cluster.sh ARGS`; panics (the scenario fails) when it fails.
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(&self.sh)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cluster.sh");
        assert!(
            out.status.success(),
            "cluster.sh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The node most client connections go to (connection names end in "-> 127.0.0.1:PORT";
    /// any running node lists the whole cluster's connections).
    fn busiest_node(&self) -> usize {
        let listing = (1..=self.ports.len()).find_map(|n| {
            let out = Command::new("bash")
                .arg(&self.sh)
                .args(["ctl", &n.to_string(), "-q", "list_connections", "name"])
                .stdin(Stdio::null())
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        });
        let listing = listing.expect("no node answers list_connections");
        let count = |port: u16| {
            let end = format!(":{port}");
            listing
                .lines()
                .filter(|l| l.trim_end().ends_with(&end))
                .count()
        };
        (1..=self.ports.len())
            .max_by_key(|n| (count(self.ports[n - 1]), std::cmp::Reverse(*n)))
            .unwrap_or(1)
    }

    fn port_up(&self, n: usize) -> bool {
        port_open(format!("127.0.0.1:{}", self.ports[n - 1]).parse().unwrap())
    }
}

fn cfg_for(cl: &Cluster) -> Cfg {
    let node1 = uri();
    let root = env!("CARGO_MANIFEST_DIR");
    let port = cl.ports[0];
    let (rate, consume_n, consume_repeat, consume_sleep) = if cl.full {
        (2000, 50_000, 4, Duration::from_millis(1))
    } else {
        (500, 5000, 3, Duration::from_millis(3))
    };
    Cfg {
        full: cl.full,
        uri: node1,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        port,
        broker_sh: format!("{root}/scripts/broker.sh"),
        log_dir: format!("{root}/target/rabbitmq/node-{port}/log").into(),
        rate,
        lead_in: Duration::from_secs(if cl.full { 3 } else { 2 }),
        lead_out: Duration::from_secs(if cl.full { 8 } else { 3 }),
        close_all_for: Duration::ZERO,
        stop_app_rounds: 0,
        kill_rounds: 0,
        blackhole_for: Duration::from_secs(if cl.full { 15 } else { 8 }),
        alarm_for: Duration::ZERO,
        consume_n,
        consume_repeat,
        consume_sleep,
        deadline: Duration::from_secs(1200),
    }
}

/// The consuming side on a pre-seeded quorum queue, connected through the host list.
fn con_prepare_quorum(cfg: &Cfg, cl: &Cluster, tag: &str, conns: &mut ConnGuards) -> ConSide {
    let conn = conns
        .push(lib_connect(&with_query(&cl.uri, "heartbeat=2")).unwrap_or_else(|e| panic!("{e}")));
    let name = unique_name(&format!("cl-{tag}-con"));
    let n = cfg.consume_n;
    let q = queue_open(conn, &name, None, None, Some("queue_type=quorum"));
    let bodies: Vec<Vec<u8>> = (0..n).map(seq_body).collect();
    Reader::new().publish(&name, &bodies);
    con_side(cfg, conn, q, name, n)
}

/// Runs one scenario: publish + consume through the host list, `fault` in the middle.
fn scenario(
    cfg: &Cfg,
    cl: &Cluster,
    label: &str,
    tag: &str,
    fault: impl FnOnce() -> (Fault, Vec<String>),
) -> Vec<Row> {
    let mut conns = ConnGuards::new();
    let con = con_prepare_quorum(cfg, cl, tag, &mut conns);
    let side = pub_start(
        cfg,
        &with_query(&cl.uri, "heartbeat=2"),
        tag,
        quorum(),
        &mut conns,
    );
    con_begin(cfg, &con);
    std::thread::sleep(cfg.lead_in);
    let (fault, notes) = fault();
    std::thread::sleep(cfg.lead_out);
    let mut prow = Row::new(label, "publish");
    prow.notes.extend(notes.iter().cloned());
    pub_finish(cfg, side, fault, &mut prow);
    let mut crow = Row::new(label, "consume");
    crow.notes.extend(notes);
    con_finish(cfg, con, fault, &mut crow);
    vec![prow, crow]
}

/// a: SIGKILL of the node the client is connected to, restarted with its data 5 s later.
fn s_kill(cfg: &Cfg, cl: &Cluster) -> Vec<Row> {
    scenario(cfg, cl, "a. SIGKILL the client's node", "kill", || {
        let n = cl.busiest_node();
        let first = Instant::now();
        cl.run(&["kill", &n.to_string()]);
        std::thread::sleep(Duration::from_secs(5));
        cl.run(&["start-node", &n.to_string()]);
        let end = Instant::now();
        let note = format!("killed node {n}, back {:.1} s later", secs(end - first));
        say(&note);
        let fault = Fault {
            first,
            last: first,
            end,
            instant: true,
        };
        (fault, vec![note])
    })
}

/// b: every node stopped (gracefully) and started again, one after the other.
fn s_rolling(cfg: &Cfg, cl: &Cluster) -> Vec<Row> {
    let gap = if cl.full { 5 } else { 2 };
    scenario(cfg, cl, "b. rolling restart of 3 nodes", "rolling", || {
        let first = Instant::now();
        let mut last = first;
        let mut notes = Vec::new();
        for n in 1..=cl.ports.len() {
            if n > 1 {
                std::thread::sleep(Duration::from_secs(gap));
            }
            last = Instant::now();
            cl.run(&["stop-node", &n.to_string()]);
            cl.run(&["start-node", &n.to_string()]);
            notes.push(format!("node {n} down {:.1} s", secs(last.elapsed())));
        }
        say(&notes.join(", "));
        let fault = Fault {
            first,
            last,
            end: Instant::now(),
            instant: true,
        };
        (fault, notes)
    })
}

/// c: the client's node cut off from the other two (pause_minority pauses it), then healed.
fn s_partition(cfg: &Cfg, cl: &Cluster) -> Vec<Row> {
    scenario(
        cfg,
        cl,
        "c. partition of the client's node",
        "partition",
        || {
            let n = cl.busiest_node();
            let first = Instant::now();
            cl.run(&["partition", &n.to_string()]);
            std::thread::sleep(cfg.blackhole_for);
            cl.run(&["heal", &n.to_string()]);
            let back = poll(Duration::from_secs(60), Duration::from_millis(100), || {
                cl.port_up(n)
            });
            assert!(back, "node {n} did not resume within 60 s of the heal");
            let end = Instant::now();
            let note = format!(
                "node {n} cut off for {:.1} s, serving again {:.1} s after the heal",
                secs(cfg.blackhole_for),
                secs(end - first - cfg.blackhole_for)
            );
            say(&note);
            let fault = Fault {
                first,
                last: first,
                end,
                instant: true,
            };
            (fault, vec![note])
        },
    )
}

#[test]
fn cluster_faults() {
    let Some(cl) = Cluster::from_env() else {
        eprintln!(
            "cluster_faults: skipped: RESILIENT_AMQP_CLUSTER_URI is not set (run \
             `bash scripts/cluster-test.sh`, which starts a 3-node cluster)"
        );
        return;
    };
    let cfg = cfg_for(&cl);
    say(&format!(
        "{} cluster scenarios against {}",
        if cl.full { "FULL" } else { "SHORT" },
        cl.uri
    ));
    let only: Option<Vec<String>> = std::env::var("CLUSTER_FAULTS_ONLY")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|x| x.trim().to_string()).collect());
    type Scenario = fn(&Cfg, &Cluster) -> Vec<Row>;
    let all: [(&str, Scenario); 3] = [("a", s_kill), ("b", s_rolling), ("c", s_partition)];
    let mut rows = Vec::new();
    for (id, f) in all {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == id)) {
            continue;
        }
        let t = Instant::now();
        let got = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&cfg, &cl))) {
            Ok(rows) => rows,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                let mut r = Row::new(&format!("{id}. (panicked)"), "-");
                r.fail(format!("panicked: {msg}"));
                vec![r]
            }
        };
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
    let md = table(&rows, &cfg);
    eprintln!("\n{md}");
    let target = format!("{}/target", env!("CARGO_MANIFEST_DIR"));
    let _ = std::fs::write(format!("{target}/cluster-faults.md"), &md);
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.passed()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} rows failed",
        failed.len(),
        rows.len()
    );
}

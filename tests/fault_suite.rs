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
//! FAULT_SUITE_TRACE=1 (the library's timeline per scenario on stderr).
//!
//! What reached the broker is counted by an independent lapin reader, never by the library's own
//! counters. Output: a markdown table on stdout, `target/fault-suite.md`, `target/fault-suite.json`,
//! and a last line `N passed, N failed`. Exit status 1 when any scenario failed.
#![allow(unused_unsafe)]

mod common;

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

/// The library's publish window (messages sent ahead of their confirms): at most this many
/// duplicates per lost connection.
const CONFIRM_WINDOW: u64 = 512;
const CONNECTED: u32 = amqp_connection_state::AMQP_STATE_CONNECTED as u32;
/// Reconnect fast, as the brief asks.
const CONN_OPTS: &str = "reconnect_delay_ms=100&reconnect_delay_max_ms=1000";
/// Messages whose log lines mean a consumer acked on the wrong channel.
const BAD_LOG: [&str; 2] = ["unknown delivery tag", "PRECONDITION_FAILED"];

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Cfg {
    full: bool,
    uri: String,
    /// 127.0.0.1:port of the broker
    addr: SocketAddr,
    port: u16,
    broker_sh: String,
    log_dir: std::path::PathBuf,
    /// publish rate, messages per second
    rate: u64,
    lead_in: Duration,
    lead_out: Duration,
    close_all_for: Duration,
    stop_app_rounds: u32,
    kill_rounds: u32,
    blackhole_for: Duration,
    alarm_for: Duration,
    /// pre-seeded messages for the consumer scenarios, their consumers and callback sleep
    consume_n: u64,
    consume_repeat: u32,
    consume_sleep: Duration,
    /// the whole suite is aborted (broker restored, exit 2) after this
    deadline: Duration,
}

impl Cfg {
    fn from_env() -> Cfg {
        let uri = match std::env::var("RESILIENT_AMQP_TEST_URI") {
            Ok(u) if !u.is_empty() => u,
            _ => fatal(
                "RESILIENT_AMQP_TEST_URI is not set: the fault suite needs a RabbitMQ node it may \
                 stop, kill and restart. Run `bash scripts/test.sh` (short suite) or \
                 `bash scripts/faults.sh` (full suite), which start a private node.",
            ),
        };
        let ctl = match std::env::var("RESILIENT_AMQP_TEST_CTL") {
            Ok(c) if !c.is_empty() => c,
            _ => fatal(
                "RESILIENT_AMQP_TEST_CTL is not set (rabbitmqctl for the test node); run \
                 `bash scripts/test.sh` or `bash scripts/faults.sh`.",
            ),
        };
        let hostport = uri
            .split('@')
            .nth(1)
            .and_then(|s| s.split('/').next())
            .unwrap_or_else(|| fatal(&format!("cannot find host:port in {uri}")))
            .to_string();
        let port: u16 = hostport
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| fatal(&format!("no port in {uri}")));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let root = env!("CARGO_MANIFEST_DIR");
        // "<path>/broker.sh ctl" -> "<path>/broker.sh"; otherwise ours
        let broker_sh = ctl
            .strip_suffix(" ctl")
            .filter(|p| p.ends_with("broker.sh"))
            .map(str::to_string)
            .unwrap_or_else(|| format!("{root}/scripts/broker.sh"));
        let log_dir = std::path::PathBuf::from(format!("{root}/target/rabbitmq/node-{port}/log"));
        let full = std::env::var("FAULT_SUITE")
            .map(|v| v == "full")
            .unwrap_or(false);
        if full {
            Cfg {
                full,
                uri,
                addr,
                port,
                broker_sh,
                log_dir,
                rate: 2000,
                lead_in: Duration::from_secs(2),
                lead_out: Duration::from_secs(3),
                close_all_for: Duration::from_secs(30),
                stop_app_rounds: 3,
                kill_rounds: 2,
                blackhole_for: Duration::from_secs(15),
                alarm_for: Duration::from_secs(10),
                consume_n: 50_000,
                consume_repeat: 4,
                consume_sleep: Duration::from_millis(2),
                deadline: Duration::from_secs(900),
            }
        } else {
            Cfg {
                full,
                uri,
                addr,
                port,
                broker_sh,
                log_dir,
                rate: 1000,
                lead_in: Duration::from_secs(1),
                lead_out: Duration::from_millis(1500),
                close_all_for: Duration::from_secs(4),
                stop_app_rounds: 1,
                kill_rounds: 1,
                blackhole_for: Duration::from_secs(8),
                alarm_for: Duration::from_secs(4),
                consume_n: 5000,
                consume_repeat: 3,
                consume_sleep: Duration::from_millis(3),
                deadline: Duration::from_secs(300),
            }
        }
    }

    /// The test URI with `?heartbeat=..` (and more) appended.
    fn uri_with(&self, query: &str) -> String {
        with_query(&self.uri, query)
    }

    /// The URI through a proxy listening on `port`.
    fn uri_via(&self, port: u16, query: &str) -> String {
        let u = self.uri.replace(
            &format!("127.0.0.1:{}", self.port),
            &format!("127.0.0.1:{port}"),
        );
        with_query(&u, query)
    }
}

fn with_query(uri: &str, query: &str) -> String {
    if uri.contains('?') {
        format!("{uri}&{query}")
    } else {
        format!("{uri}?{query}")
    }
}

fn fatal(msg: &str) -> ! {
    eprintln!("fault_suite: ERROR: {msg}");
    println!("fault_suite: ERROR: {msg}");
    println!("0 passed, 1 failed");
    std::process::exit(1);
}

fn say(msg: &str) {
    eprintln!("[fault_suite {:>7.1}s] {msg}", t0().elapsed().as_secs_f64());
}

fn t0() -> Instant {
    static T0: once_cell::sync::Lazy<Instant> = once_cell::sync::Lazy::new(Instant::now);
    *T0
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// b - a in seconds, may be negative.
fn delta(a: Instant, b: Instant) -> f64 {
    if b >= a {
        secs(b - a)
    } else {
        -secs(a - b)
    }
}

// ---------------------------------------------------------------------------------------------
// Broker control
// ---------------------------------------------------------------------------------------------

/// Is the broker listening on `addr`? Read from /proc/net/tcp (a socket in LISTEN state), NOT
/// by connecting: the test ports lie inside the kernel's ephemeral range (32768-60999), and a
/// connect to a port nobody listens on can pick that very port as its own source port and
/// connect to itself (TCP self-connect). Closing it leaves a TIME_WAIT on the port that makes the
/// broker's listen fail with eaddrinuse for 60 s (seen: start_app failed after a fast connect
/// poll during stop_app). Falls back to a connect where /proc/net/tcp is missing.
fn port_open(addr: SocketAddr) -> bool {
    match std::fs::read_to_string("/proc/net/tcp") {
        Ok(table) => {
            let want = format!(":{:04X}", addr.port());
            table.lines().skip(1).any(|l| {
                let mut f = l.split_whitespace();
                let (Some(_), Some(local), Some(_), Some(st)) =
                    (f.next(), f.next(), f.next(), f.next())
                else {
                    return false;
                };
                // 127.0.0.1 or 0.0.0.0, state 0A = LISTEN
                st == "0A"
                    && local.ends_with(&want)
                    && (local.starts_with("0100007F:") || local.starts_with("00000000:"))
            })
        }
        Err(_) => TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok(),
    }
}

fn broker_cmd(cfg: &Cfg, args: &[&str]) -> Command {
    let mut c = Command::new("bash");
    c.arg(&cfg.broker_sh)
        .args(args)
        .env("RA_BROKER_PORT", cfg.port.to_string())
        .env("RA_BROKER_KEEP_DATA", "1")
        .stdin(Stdio::null());
    c
}

fn ctl_cmd(args: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("{} {}", ctl_prefix(), args))
        .stdin(Stdio::null());
    c
}

/// Runs `cmd` and polls the AMQP port while it runs; returns when the command ended, with the
/// instant the port first accepted connections (None if never).
fn run_until_port_open(cfg: &Cfg, mut cmd: Command) -> (bool, Option<Instant>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // read the pipes in threads so the child never blocks on them
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let ho = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let he = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let mut open_at = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if open_at.is_none() && port_open(cfg.addr) {
            open_at = Some(Instant::now());
        }
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if open_at.is_none() && port_open(cfg.addr) {
        open_at = Some(Instant::now());
    }
    let out = format!(
        "{}{}",
        ho.join().unwrap_or_default(),
        he.join().unwrap_or_default()
    );
    (status.success(), open_at, out)
}

/// Puts the broker back the way the suite found it: node running (restarted with its data if
/// killed), application started, memory watermark 0.4. Called after every scenario, on every path.
fn restore_broker(cfg: &Cfg) -> Result<(), String> {
    let mut notes = Vec::new();
    if !port_open(cfg.addr) {
        let alive = broker_cmd(cfg, &["status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if alive {
            let (ok, _, err) = ctl_try("-q start_app");
            if !ok {
                notes.push(format!("start_app: {}", compact(&err, 300)));
            }
            poll(Duration::from_secs(10), Duration::from_millis(100), || {
                port_open(cfg.addr)
            });
        }
        // Not up (node dead, or the app cannot start again, e.g. after a failed start_app):
        // restart the node with its data, a few times (a TIME_WAIT on the port lasts 60 s).
        let deadline = Instant::now() + Duration::from_secs(100);
        while !port_open(cfg.addr) && Instant::now() < deadline {
            notes.push(format!(
                "restarting the node with its data ({})",
                sockets_on_port(cfg)
            ));
            let _ = broker_cmd(cfg, &["stop"]).output();
            match broker_cmd(cfg, &["start"]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    notes.push(format!(
                        "broker.sh start failed: {}",
                        compact(&String::from_utf8_lossy(&out.stderr), 300)
                    ));
                    std::thread::sleep(Duration::from_secs(5));
                }
                Err(e) => return Err(format!("cannot run broker.sh: {e}")),
            }
        }
    }
    let (ok, _, err) = ctl_try("-q set_vm_memory_high_watermark 0.4");
    if !ok {
        notes.push(format!(
            "set_vm_memory_high_watermark 0.4: {}",
            compact(&err, 300)
        ));
    }
    if !notes.is_empty() {
        say(&format!("restore: {}", notes.join("; ")));
    }
    if !port_open(cfg.addr) {
        return Err(format!(
            "broker not accepting connections after restore ({})",
            notes.join("; ")
        ));
    }
    Ok(())
}

/// `s` on one line, at most `max` characters.
fn compact(s: &str, max: usize) -> String {
    let t = s.split_whitespace().collect::<Vec<_>>().join(" ");
    t.chars().take(max).collect()
}

/// What holds the AMQP port (`ss`), for failure messages: a TIME-WAIT with the port as both
/// ends is a TCP self-connect.
fn sockets_on_port(cfg: &Cfg) -> String {
    Command::new("ss")
        .args(["-tanH", &format!("sport = :{}", cfg.port)])
        .output()
        .map(|o| {
            let t = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if t.is_empty() {
                "no socket on the port".to_string()
            } else {
                format!("sockets on the port: {t}")
            }
        })
        .unwrap_or_else(|e| format!("ss: {e}"))
}

/// Lines of the broker log that mean a bad ack (see BAD_LOG).
fn bad_log_lines(cfg: &Cfg) -> Result<Vec<String>, String> {
    let dir = std::fs::read_dir(&cfg.log_dir)
        .map_err(|e| format!("cannot read broker log dir {}: {e}", cfg.log_dir.display()))?;
    let mut lines = Vec::new();
    let mut any = false;
    for ent in dir.flatten() {
        let p = ent.path();
        if p.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        any = true;
        let text = std::fs::read(&p).map_err(|e| e.to_string())?;
        for l in String::from_utf8_lossy(&text).lines() {
            if BAD_LOG.iter().any(|b| l.contains(b)) {
                lines.push(l.to_string());
            }
        }
    }
    if !any {
        return Err(format!("no *.log file in {}", cfg.log_dir.display()));
    }
    Ok(lines)
}

// ---------------------------------------------------------------------------------------------
// The independent reader: plain lapin, consumes a whole queue (no-ack) and deletes it
// ---------------------------------------------------------------------------------------------

/// Messages as (body, delivery mode).
type Drained = Vec<(Vec<u8>, Option<u8>)>;

/// Every message of `queue` as (body, delivery mode); the queue is deleted afterwards.
fn drain_and_delete(uri: &str, queue: &str) -> Result<Drained, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut conn = None;
        for _ in 0..150 {
            match lapin::Connection::connect(uri, lapin::ConnectionProperties::default()).await {
                Ok(c) => {
                    conn = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let conn = conn.ok_or("reader: cannot connect")?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .map_err(|e| format!("reader: queue {queue}: {e}"))?;
        let expected = q.message_count() as usize;
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "fault-suite-reader".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(expected);
        // until the count the broker announced, then anything that might still come
        loop {
            let wait = if out.len() < expected {
                Duration::from_secs(15)
            } else {
                Duration::from_millis(300)
            };
            match tokio::time::timeout(wait, consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    let mode = *d.properties.delivery_mode();
                    out.push((d.data, mode))
                }
                Ok(Some(Err(e))) => return Err(format!("reader: {e}")),
                Ok(None) | Err(_) => break,
            }
        }
        if out.len() < expected {
            return Err(format!(
                "reader: the broker announced {expected} messages, got only {}",
                out.len()
            ));
        }
        let _ = ch.queue_delete(queue.into(), Default::default()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "OK".into())).await;
        Ok(out)
    })
}

// ---------------------------------------------------------------------------------------------
// Monitor: samples the library's connection (and queue) stats every 5 ms
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Sample {
    t: Instant,
    state: u32,
    connects: u64,
    buffered: u64,
    published: u64,
    confirmed: u64,
}

struct Monitor {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    h: Option<JoinHandle<()>>,
}

impl Monitor {
    fn start(conn: u64, q: u64) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s2, v2) = (stop.clone(), samples.clone());
        let h = std::thread::Builder::new()
            .name("fs-monitor".into())
            .spawn(move || {
                while !s2.load(Ordering::SeqCst) {
                    let mut cs: amqp_connection_stats = unsafe { std::mem::zeroed() };
                    let mut qs: amqp_queue_stats = unsafe { std::mem::zeroed() };
                    if unsafe { amqp_connection_get_stats(conn, &mut cs) } != amqp_result::AMQP_OK
                        || unsafe { amqp_queue_get_stats(q, &mut qs) } != amqp_result::AMQP_OK
                    {
                        break;
                    }
                    v2.lock().unwrap().push(Sample {
                        t: Instant::now(),
                        state: cs.state as u32,
                        connects: cs.connects,
                        buffered: qs.buffered,
                        published: qs.published,
                        confirmed: qs.confirmed,
                    });
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
            .unwrap();
        Monitor {
            stop,
            samples,
            h: Some(h),
        }
    }

    fn stop(&mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.h.take() {
            let _ = h.join();
        }
        self.samples.lock().unwrap().clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last sample at or before `t` (or the first one).
fn at(s: &[Sample], t: Instant) -> Sample {
    s.iter()
        .rev()
        .find(|x| x.t <= t)
        .or(s.first())
        .copied()
        .unwrap()
}

/// When the connection that was up at `from` was first seen lost at or after `from` (state not
/// CONNECTED, or a new connect already counted).
fn lost_after(s: &[Sample], from: Instant) -> Option<Instant> {
    let c0 = at(s, from).connects;
    s.iter()
        .find(|x| x.t >= from && (x.state != CONNECTED || x.connects > c0))
        .map(|x| x.t)
}

/// The first sample at or after `from` where the library is connected on a connection newer than
/// the one it had at `from`.
fn reconnected_after(s: &[Sample], from: Instant) -> Option<Instant> {
    let c0 = at(s, from).connects;
    s.iter()
        .find(|x| x.t >= from && x.state == CONNECTED && x.connects > c0)
        .map(|x| x.t)
}

/// The first sample at or after `from` where every message published up to `from` is confirmed.
fn drained_after(s: &[Sample], from: Instant) -> Option<Instant> {
    let p = at(s, from).published;
    s.iter()
        .find(|x| x.t >= from && x.confirmed >= p)
        .map(|x| x.t)
}

/// The library's outages in the samples: from the first sample that saw a connection gone (state
/// not CONNECTED, or a newer connection already counted) to the first CONNECTED one after it.
fn outages(s: &[Sample]) -> Vec<f64> {
    let mut out = Vec::new();
    let mut down_since: Option<Instant> = None;
    let mut prev: Option<Sample> = None;
    for x in s {
        let lost = x.state != CONNECTED || prev.is_some_and(|p| x.connects > p.connects);
        if down_since.is_none() && lost {
            // a loss and reconnect between two samples counts from the previous sample
            down_since = Some(if x.state == CONNECTED {
                prev.map_or(x.t, |p| p.t)
            } else {
                x.t
            });
        }
        if let Some(d) = down_since {
            if x.state == CONNECTED {
                out.push(secs(x.t - d));
                down_since = None;
            }
        }
        prev = Some(*x);
    }
    out
}

fn outage_note(s: &[Sample]) -> String {
    let mut o = outages(s);
    if o.is_empty() {
        return "never offline".into();
    }
    o.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let max = o[o.len() - 1];
    if o.len() == 1 {
        format!("offline {max:.2} s")
    } else {
        format!(
            "offline {} times, median {:.2} s, max {max:.2} s",
            o.len(),
            o[o.len() / 2]
        )
    }
}

/// The longest time the library was CONNECTED with messages buffered while no confirm arrived
/// (seconds) and when it began; a window that is not moving although the link is up.
fn longest_stall(s: &[Sample]) -> (f64, Option<Instant>) {
    let mut best = (0.0, None);
    let mut since: Option<(Instant, u64)> = None;
    for x in s {
        let stuck = x.state == CONNECTED && x.buffered > 0;
        match since {
            Some((t, c)) if stuck && x.confirmed == c => {
                let d = secs(x.t - t);
                if d > best.0 {
                    best = (d, Some(t));
                }
            }
            _ => since = stuck.then_some((x.t, x.confirmed)),
        }
    }
    best
}

/// FAULT_SUITE_TRACE=1: the timeline on stderr, one line per 100 ms.
fn trace(label: &str, s: &[Sample], fault: Fault) {
    if std::env::var("FAULT_SUITE_TRACE").map_or(true, |v| v != "1") {
        return;
    }
    let Some(first) = s.first() else { return };
    eprintln!("trace {label}: t rel. fault start (s), state, connects, buffered, published, confirmed; fault end at {:.2}", delta(fault.first, fault.end));
    let mut next = first.t;
    for x in s {
        if x.t >= next {
            eprintln!(
                "  {:>7.2} {} {:>3} {:>7} {:>7} {:>7}",
                delta(fault.first, x.t),
                x.state,
                x.connects,
                x.buffered,
                x.published,
                x.confirmed
            );
            next = x.t + Duration::from_millis(100);
        }
    }
}

/// Connection losses seen in the samples (connects at the end - at the start).
fn losses(s: &[Sample]) -> u64 {
    match (s.first(), s.last()) {
        (Some(a), Some(b)) => b.connects - a.connects,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Paced publisher
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct PubResult {
    /// sequence numbers 0..attempted were passed to amqp_publish
    attempted: u64,
    /// those that did not get AMQP_OK
    refused: HashSet<u64>,
    buffer_full: u64,
    /// other results: (code name, count)
    errors: Vec<(String, u64)>,
}

impl PubResult {
    fn app_errors(&self) -> u64 {
        self.errors.iter().map(|e| e.1).sum()
    }
}

struct Publisher {
    stop: Arc<AtomicBool>,
    /// while set, nothing is published (and the pace restarts when cleared)
    paused: Arc<AtomicBool>,
    h: Option<JoinHandle<PubResult>>,
}

impl Publisher {
    /// Publishes seq 0, 1, ... at `rate` per second until stopped (at most `cap`).
    fn start(q: u64, rate: u64, cap: u64) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let (s2, pa2) = (stop.clone(), paused.clone());
        let h = std::thread::Builder::new()
            .name("fs-publisher".into())
            .spawn(move || {
                let mut r = PubResult::default();
                let mut start = Instant::now();
                let interval_ns = 1_000_000_000 / rate.max(1);
                let mut i = 0u64;
                let mut i0 = 0u64; // pace: message i is due at (i - i0) * interval after start
                while i < cap && !s2.load(Ordering::SeqCst) {
                    if pa2.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5));
                        start = Instant::now();
                        i0 = i;
                        continue;
                    }
                    let res = publish(q, &seq_body(i));
                    match res {
                        amqp_result::AMQP_OK => {}
                        amqp_result::AMQP_ERR_BUFFER_FULL => {
                            r.buffer_full += 1;
                            r.refused.insert(i);
                        }
                        other => {
                            r.refused.insert(i);
                            let name = result_str(other);
                            match r.errors.iter_mut().find(|e| e.0 == name) {
                                Some(e) => e.1 += 1,
                                None => r.errors.push((name, 1)),
                            }
                        }
                    }
                    i += 1;
                    let due = Duration::from_nanos((i - i0) * interval_ns);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                r.attempted = i;
                r
            })
            .unwrap();
        Publisher {
            stop,
            paused,
            h: Some(h),
        }
    }

    fn finish(&mut self) -> PubResult {
        self.stop.store(true, Ordering::SeqCst);
        self.h
            .take()
            .map(|h| h.join().expect("publisher thread"))
            .unwrap_or_default()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Default, Clone)]
struct Row {
    scenario: String,
    /// "publish" or "consume"
    kind: &'static str,
    n: u64,
    missing: u64,
    duplicates: u64,
    /// fault end -> connected again
    recover_connected: Option<f64>,
    /// fault end -> everything published before it confirmed (publish) / every message handled
    /// (consume)
    recover_done: Option<f64>,
    app_errors: u64,
    buffer_full: u64,
    reconnects: u64,
    /// blackhole: start -> the library's state left CONNECTED
    detect: Option<f64>,
    notes: Vec<String>,
    failures: Vec<String>,
}

impl Row {
    fn new(scenario: &str, kind: &'static str) -> Row {
        Row {
            scenario: scenario.to_string(),
            kind,
            ..Default::default()
        }
    }
    fn passed(&self) -> bool {
        self.failures.is_empty() && self.missing == 0
    }
    fn fail(&mut self, why: impl Into<String>) {
        let why = why.into();
        say(&format!(
            "{} ({}): CHECK FAILED: {why}",
            self.scenario, self.kind
        ));
        self.failures.push(why);
    }
    fn check(&mut self, ok: bool, why: impl FnOnce() -> String) {
        if !ok {
            self.fail(why());
        }
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.2} s"))
}

fn table(rows: &[Row], cfg: &Cfg) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "## resilient-amqp fault suite ({}; publish rate {} msg/s)\n\n",
        if cfg.full { "FULL" } else { "SHORT" },
        cfg.rate
    ));
    s.push_str(
        "| scenario | side | N | missing | duplicates | recover: connected / done | app errors (BUFFER_FULL) | result | notes |\n",
    );
    s.push_str("|---|---|---:|---:|---:|---|---|---|---|\n");
    for r in rows {
        let mut notes = r.notes.clone();
        for f in &r.failures {
            notes.push(format!("FAILED: {f}"));
        }
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} / {} | {} ({}) | {} | {} |\n",
            r.scenario,
            r.kind,
            r.n,
            r.missing,
            r.duplicates,
            fmt_opt(r.recover_connected),
            fmt_opt(r.recover_done),
            r.app_errors,
            r.buffer_full,
            if r.passed() { "pass" } else { "FAIL" },
            notes.join("; ").replace('|', "/"),
        ));
    }
    s.push_str(
        "\nrecover: *connected* = fault end -> the library connected again (0 when it kept its \
         connection); *done* = fault end -> every message published before the fault end was \
         confirmed (publish) / every seeded message reached a callback (consume). Fault end = the \
         broker accepting TCP again (stop_app, kill), the library seeing the last close \
         (close_all), the proxy forwarding again (blackhole), the watermark restored (alarm). \
         *offline* in the notes = the library's own outages (state not CONNECTED), sampled \
         every 5 ms. Missing and duplicates are \
         counted by an independent lapin reader (publish) or from the callbacks' bodies (consume).\n",
    );
    s
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_opt(v: Option<f64>) -> String {
    v.map_or("null".to_string(), |v| format!("{v:.3}"))
}

fn json(rows: &[Row], cfg: &Cfg, took: Duration) -> String {
    let mut s = format!(
        "{{\n  \"mode\": {},\n  \"publish_rate\": {},\n  \"seconds\": {:.1},\n  \"passed\": {},\n  \"failed\": {},\n  \"rows\": [\n",
        json_str(if cfg.full { "full" } else { "short" }),
        cfg.rate,
        secs(took),
        rows.iter().filter(|r| r.passed()).count(),
        rows.iter().filter(|r| !r.passed()).count()
    );
    for (i, r) in rows.iter().enumerate() {
        let list = |v: &[String]| v.iter().map(|x| json_str(x)).collect::<Vec<_>>().join(", ");
        s.push_str(&format!(
            "    {{\"scenario\": {}, \"side\": {}, \"n\": {}, \"missing\": {}, \"duplicates\": {}, \
             \"recover_connected_s\": {}, \"recover_done_s\": {}, \"app_errors\": {}, \
             \"buffer_full\": {}, \"reconnects\": {}, \"detect_s\": {}, \"passed\": {}, \
             \"notes\": [{}], \"failures\": [{}]}}{}\n",
            json_str(&r.scenario),
            json_str(r.kind),
            r.n,
            r.missing,
            r.duplicates,
            json_opt(r.recover_connected),
            json_opt(r.recover_done),
            r.app_errors,
            r.buffer_full,
            r.reconnects,
            json_opt(r.detect),
            r.passed(),
            list(&r.notes),
            list(&r.failures),
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    s.push_str("  ]\n}\n");
    s
}

// ---------------------------------------------------------------------------------------------
// Scenario building blocks
// ---------------------------------------------------------------------------------------------

/// When a fault happened: `first` = the first injection began, `last` = the last one began,
/// `end` = the broker (or network) was fully back.
#[derive(Clone, Copy)]
struct Fault {
    first: Instant,
    last: Instant,
    end: Instant,
    /// the fault is an instant (a close): recovery counts from when the library saw it
    instant: bool,
}

/// (the instant recovery counts from, fault end -> connected again in s, kept its connection)
fn recovery(samples: &[Sample], fault: Fault) -> (Instant, Option<f64>, bool) {
    match lost_after(samples, fault.last) {
        None => (fault.end, Some(0.0), true),
        Some(lost) => {
            let end = if fault.instant { lost } else { fault.end };
            let back = reconnected_after(samples, lost).map(|t| delta(end, t).max(0.0));
            (end, back, false)
        }
    }
}

/// Closes connections on drop (a failing scenario must not leave a reconnecting connection).
struct Conns(Vec<u64>);

impl Drop for Conns {
    fn drop(&mut self) {
        for c in self.0.drain(..) {
            let _ = close(c, 2000);
        }
    }
}

fn lib_connect(uri: &str) -> Result<u64, String> {
    let (r, c) = try_connect(uri, Some(CONN_OPTS));
    if r != amqp_result::AMQP_OK {
        return Err(format!("amqp_connect: {}: {}", result_str(r), last_error()));
    }
    let r = unsafe { amqp_wait_connected(c, 30_000) };
    if r != amqp_result::AMQP_OK {
        let _ = close(c, 100);
        return Err(format!(
            "amqp_wait_connected: {}: {}",
            result_str(r),
            last_error()
        ));
    }
    Ok(c)
}

/// The publishing side of a scenario.
struct PubSide {
    conn: u64,
    q: u64,
    name: String,
    mon: Monitor,
    publisher: Publisher,
}

fn pub_start(cfg: &Cfg, conn_uri: &str, tag: &str, conns: &mut Conns) -> PubSide {
    let conn = lib_connect(conn_uri).unwrap_or_else(|e| panic!("{e}"));
    conns.0.push(conn);
    let name = unique_name(&format!("fs-{tag}-pub"));
    let q = open_simple(conn, &name); // durable queue, persistent messages (the defaults)
    let mon = Monitor::start(conn, q);
    let publisher = Publisher::start(q, cfg.rate, cfg.rate * 600);
    PubSide {
        conn,
        q,
        name,
        mon,
        publisher,
    }
}

/// Stops publishing, waits for recovery and the drain, counts what reached the broker.
fn pub_finish(cfg: &Cfg, mut side: PubSide, fault: Fault, row: &mut Row, conns: &mut Conns) {
    let res = side.publisher.finish();
    row.app_errors = res.app_errors();
    row.buffer_full = res.buffer_full;
    row.check(res.errors.is_empty(), || {
        format!("amqp_publish returned errors: {:?}", res.errors)
    });
    row.check(res.buffer_full == 0, || {
        format!("{} publishes refused with BUFFER_FULL", res.buffer_full)
    });
    let accepted = res.attempted - res.refused.len() as u64;
    row.n = accepted;

    // the library reconnects and drains everything
    let reconnected = poll(Duration::from_secs(60), Duration::from_millis(20), || {
        conn_state(side.conn) == amqp_connection_state::AMQP_STATE_CONNECTED
    });
    row.check(reconnected, || {
        format!(
            "not connected 60 s after the fault: state {}",
            conn_state(side.conn) as u32
        )
    });
    let mut last = qstats(side.q);
    let drained = poll(Duration::from_secs(90), Duration::from_millis(20), || {
        last = qstats(side.q);
        last.buffered == 0
    });
    row.check(drained, || {
        format!(
            "buffer not drained 90 s after the fault: {}",
            fmt_qstats(&last)
        )
    });
    std::thread::sleep(Duration::from_millis(100));
    let samples = side.mon.stop();
    let st = qstats(side.q);
    let cs = cstats(side.conn);
    row.reconnects = cs.connects.saturating_sub(1);
    row.check(st.published == accepted, || {
        format!(
            "library counted {} published, {accepted} accepted",
            st.published
        )
    });
    row.check(st.confirmed == accepted, || {
        format!("library counted {} confirmed of {accepted}", st.confirmed)
    });

    // figures from the timeline
    let (end, back, kept) = recovery(&samples, fault);
    row.recover_connected = back;
    if kept {
        row.notes.push("kept its connection".into());
    }
    row.recover_done = drained_after(&samples, end).map(|t| delta(end, t).max(0.0));
    let max_buf = samples
        .iter()
        .filter(|x| x.t >= fault.first)
        .map(|x| x.buffered)
        .max()
        .unwrap_or(0);
    let (stall, stall_at) = longest_stall(&samples);
    row.notes.push(format!(
        "{} reconnects ({}), max buffered {max_buf}, resent {}, longest wait for a confirm while connected {stall:.2} s{}",
        row.reconnects,
        outage_note(&samples),
        st.resent,
        stall_at.map_or(String::new(), |t| format!(
            " (at {:+.2} s from the fault start)",
            delta(fault.first, t)
        ))
    ));
    trace(&row.scenario, &samples, fault);

    // close: everything must be confirmed already
    let (r, unsent) = close(side.conn, 10_000);
    conns.0.retain(|c| *c != side.conn);
    row.check(r == amqp_result::AMQP_OK && unsent == 0, || {
        format!("amqp_close_graceful: {} unsent {unsent}", result_str(r))
    });

    // what the broker has, by an independent reader
    match drain_and_delete(&cfg.uri, &side.name) {
        Err(e) => row.fail(e),
        Ok(bodies) => {
            let mut seen = HashSet::new();
            let mut dups = 0u64;
            let mut foreign = 0u64;
            let transient = bodies.iter().filter(|b| b.1 != Some(2)).count();
            row.check(transient == 0, || {
                format!("{transient} messages without delivery mode 2 (persistent)")
            });
            for (b, _) in &bodies {
                match parse_seq(b) {
                    Some(s) if s < res.attempted && !res.refused.contains(&s) => {
                        if !seen.insert(s) {
                            dups += 1;
                        }
                    }
                    _ => foreign += 1,
                }
            }
            let missing: Vec<u64> = (0..res.attempted)
                .filter(|s| !res.refused.contains(s) && !seen.contains(s))
                .collect();
            row.missing = missing.len() as u64;
            row.duplicates = dups;
            row.check(missing.is_empty(), || {
                format!(
                    "{} messages lost, e.g. {:?}",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                )
            });
            row.check(foreign == 0, || format!("{foreign} unexpected bodies"));
            row.check(dups <= st.resent, || {
                format!("{dups} duplicates but only {} resent", st.resent)
            });
            let bound = CONFIRM_WINDOW * losses(&samples).max(1);
            row.check(dups <= bound, || {
                format!(
                    "{dups} duplicates > confirm window x losses = {bound} ({} losses)",
                    losses(&samples)
                )
            });
        }
    }
}

/// Distinct bodies handled by the callbacks, and when the last missing one was.
type DoneSet = Arc<Mutex<(HashSet<Vec<u8>>, Option<Instant>)>>;

/// The consuming side of a scenario: a pre-seeded durable queue consumed by the library.
struct ConSide {
    conn: u64,
    q: u64,
    name: String,
    n: u64,
    rec: Arc<Recorder>,
    /// distinct bodies seen by the callbacks, and when the n-th one was handled
    done: DoneSet,
    mon: Monitor,
    bad_log_before: usize,
}

fn con_prepare(cfg: &Cfg, tag: &str, conns: &mut Conns) -> ConSide {
    let conn = lib_connect(&cfg.uri_with("heartbeat=2")).unwrap_or_else(|e| panic!("{e}"));
    conns.0.push(conn);
    let name = unique_name(&format!("fs-{tag}-con"));
    let q = open_simple(conn, &name);
    let n = cfg.consume_n;
    // seeded by plain lapin, persistent, confirmed
    Reader::new().publish(&name, &(0..n).map(seq_body).collect::<Vec<_>>());
    let bad_log_before = bad_log_lines(cfg).map(|v| v.len()).unwrap_or(0);
    let mon = Monitor::start(conn, q);
    let done: DoneSet = Default::default();
    let d2 = done.clone();
    let rec = Recorder::new(
        cfg.consume_sleep,
        Box::new(move |d, _| {
            let mut g = d2.lock().unwrap();
            if g.0.insert(d.body.clone()) && g.0.len() as u64 == n {
                g.1 = Some(Instant::now());
            }
            raw(amqp_disposition::AMQP_ACK)
        }),
    );
    ConSide {
        conn,
        q,
        name,
        n,
        rec,
        done,
        mon,
        bad_log_before,
    }
}

fn con_begin(cfg: &Cfg, side: &ConSide) {
    consume(side.q, &side.rec, cfg.consume_repeat);
}

fn distinct_handled(rec: &Recorder, n: u64) -> u64 {
    let (missing, _, _) = check_seqs(rec.bodies().iter().map(|b| b.as_slice()), n);
    n - missing.len() as u64
}

fn con_finish(cfg: &Cfg, mut side: ConSide, fault: Fault, row: &mut Row, conns: &mut Conns) {
    let n = side.n;
    row.n = n;
    let all = poll(Duration::from_secs(120), Duration::from_millis(50), || {
        side.done.lock().unwrap().1.is_some()
    });
    let done_at = side.done.lock().unwrap().1;
    let handled = distinct_handled(&side.rec, n);
    row.missing = n - handled;
    row.check(all, || {
        format!("only {handled} of {n} messages reached a callback within 120 s")
    });
    let (_, dups, foreign) = check_seqs(side.rec.bodies().iter().map(|b| b.as_slice()), n);
    row.duplicates = dups as u64;
    row.check(foreign == 0, || format!("{foreign} unexpected bodies"));

    // the queue ends empty (nothing ready, nothing unacked)
    let mut last = None;
    let empty = poll(Duration::from_secs(60), Duration::from_millis(200), || {
        last = queue_counts(&side.name);
        matches!(last, Some(c) if c.messages == 0)
    });
    row.check(empty, || {
        format!("queue not empty after consuming: {last:?}")
    });

    // exactly `repeat` consumers, and they stay so (not doubled by a reconnect)
    let want = cfg.consume_repeat as u64;
    let mut last = None;
    let ok = poll(Duration::from_secs(30), Duration::from_millis(200), || {
        last = queue_counts(&side.name);
        matches!(last, Some(c) if c.consumers == want)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let again = queue_counts(&side.name);
    row.check(
        ok && matches!(again, Some(c) if c.consumers == want),
        || format!("expected {want} consumers after recovery, broker says {last:?} then {again:?}"),
    );
    row.check(
        side.rec.max_current() <= cfg.consume_repeat as usize,
        || {
            format!(
                "{} callbacks ran at once with repeat {}",
                side.rec.max_current(),
                cfg.consume_repeat
            )
        },
    );
    row.check(!side.rec.panicked.load(Ordering::SeqCst), || {
        "a callback panicked".into()
    });

    // no ack on a wrong channel
    match bad_log_lines(cfg) {
        Err(e) => row.fail(e),
        Ok(lines) => {
            let new = &lines[side.bad_log_before.min(lines.len())..];
            row.check(new.is_empty(), || {
                format!(
                    "broker log: {} bad-ack lines, e.g. {:?}",
                    new.len(),
                    &new[..new.len().min(3)]
                )
            });
        }
    }

    let samples = side.mon.stop();
    let st = qstats(side.q);
    let cs = cstats(side.conn);
    row.reconnects = cs.connects.saturating_sub(1);
    let (end, back, _) = recovery(&samples, fault);
    row.recover_connected = back;
    row.recover_done = done_at.map(|t| delta(end, t).max(0.0));
    row.notes.push(format!(
        "{} reconnects ({}), {} deliveries ({} redelivered), acked {}, released {}, repeat {}",
        row.reconnects,
        outage_note(&samples),
        side.rec.started(),
        side.rec
            .deliveries()
            .iter()
            .filter(|d| d.redelivered)
            .count(),
        st.acked,
        st.released,
        cfg.consume_repeat
    ));
    let (r, _) = close(side.conn, 10_000);
    conns.0.retain(|c| *c != side.conn);
    row.check(r == amqp_result::AMQP_OK, || {
        format!("amqp_close_graceful: {}", result_str(r))
    });
    let _ = drain_and_delete(&cfg.uri, &side.name);
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// 1. close_all_connections every 0.5 s (publish + consume).
fn s_close_all(cfg: &Cfg) -> Vec<Row> {
    let label = "1. close_all_connections every 0.5 s";
    let mut conns = Conns(Vec::new());
    let con = con_prepare(cfg, "closeall", &mut conns);
    let side = pub_start(cfg, &cfg.uri_with("heartbeat=2"), "closeall", &mut conns);
    con_begin(cfg, &con);
    std::thread::sleep(cfg.lead_in);
    let first = Instant::now();
    let mut last = first;
    let mut closes = 0;
    let mut slow = Duration::ZERO;
    while first.elapsed() < cfg.close_all_for {
        let t = Instant::now();
        last = t;
        ctl("-q close_all_connections");
        closes += 1;
        slow = slow.max(t.elapsed());
        if let Some(w) = Duration::from_millis(500).checked_sub(t.elapsed()) {
            std::thread::sleep(w);
        }
    }
    let end = Instant::now();
    let fault = Fault {
        first,
        last,
        end,
        instant: true,
    };
    say(&format!(
        "{closes} close_all_connections done (slowest ctl {:.2} s)",
        secs(slow)
    ));
    std::thread::sleep(cfg.lead_out);
    let mut prow = Row::new(label, "publish");
    pub_finish(cfg, side, fault, &mut prow, &mut conns);
    prow.notes.push(format!("{closes} closes"));
    let mut crow = Row::new("6a. consumers under close_all every 0.5 s", "consume");
    con_finish(cfg, con, fault, &mut crow, &mut conns);
    vec![prow, crow]
}

/// 2. stop_app for 3 s, then start_app (publish + consume).
fn s_stop_app(cfg: &Cfg) -> Vec<Row> {
    let label = "2. stop_app 3 s, start_app";
    let mut conns = Conns(Vec::new());
    let con = con_prepare(cfg, "stopapp", &mut conns);
    let side = pub_start(cfg, &cfg.uri_with("heartbeat=2"), "stopapp", &mut conns);
    con_begin(cfg, &con);
    std::thread::sleep(cfg.lead_in);
    let first = Instant::now();
    let mut fault = Fault {
        first,
        last: first,
        end: first,
        instant: false,
    };
    let mut notes = Vec::new();
    for round in 0..cfg.stop_app_rounds {
        if round > 0 {
            std::thread::sleep(Duration::from_secs(3));
        }
        fault.last = Instant::now();
        ctl("-q stop_app");
        let stopped = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        let (ok, open_at, out) = run_until_port_open(cfg, ctl_cmd("-q start_app"));
        assert!(
            ok,
            "start_app failed ({}): {}",
            sockets_on_port(cfg),
            compact(&out, 400)
        );
        fault.end = open_at.unwrap_or_else(Instant::now);
        notes.push(format!(
            "stop_app took {:.1} s, down {:.1} s",
            delta(fault.last, stopped),
            delta(fault.last, fault.end)
        ));
    }
    std::thread::sleep(cfg.lead_out);
    let mut prow = Row::new(label, "publish");
    prow.notes.extend(notes.iter().cloned());
    pub_finish(cfg, side, fault, &mut prow, &mut conns);
    let mut crow = Row::new("6b. consumers under stop_app 3 s", "consume");
    crow.notes.extend(notes.iter().cloned());
    con_finish(cfg, con, fault, &mut crow, &mut conns);
    vec![prow, crow]
}

/// 3. SIGKILL of the broker, restarted 2 s later with its data (publish + consume).
fn s_kill(cfg: &Cfg) -> Vec<Row> {
    let label = "3. SIGKILL broker, restart 2 s later";
    let mut conns = Conns(Vec::new());
    let con = con_prepare(cfg, "kill", &mut conns);
    let side = pub_start(cfg, &cfg.uri_with("heartbeat=2"), "kill", &mut conns);
    con_begin(cfg, &con);
    std::thread::sleep(cfg.lead_in);
    let first = Instant::now();
    let mut fault = Fault {
        first,
        last: first,
        end: first,
        instant: false,
    };
    let mut notes = Vec::new();
    let mut handled_before_kill = Vec::new();
    for round in 0..cfg.kill_rounds {
        if round > 0 {
            std::thread::sleep(Duration::from_secs(3));
        }
        fault.last = Instant::now();
        handled_before_kill.push(con.rec.finished());
        let out = broker_cmd(cfg, &["kill"]).output().expect("broker.sh kill");
        assert!(
            out.status.success(),
            "broker.sh kill failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let killed = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        let restart = Instant::now();
        let (ok, open_at, out) = run_until_port_open(cfg, broker_cmd(cfg, &["start"]));
        assert!(
            ok,
            "broker.sh start (keep data) failed ({}): {}",
            sockets_on_port(cfg),
            compact(&out, 400)
        );
        fault.end = open_at.unwrap_or_else(Instant::now);
        notes.push(format!(
            "kill took {:.2} s, broker boot {:.1} s, down {:.1} s",
            delta(fault.last, killed),
            delta(restart, fault.end),
            delta(fault.last, fault.end)
        ));
    }
    std::thread::sleep(cfg.lead_out);
    let mut prow = Row::new(label, "publish");
    prow.notes.extend(notes.iter().cloned());
    pub_finish(cfg, side, fault, &mut prow, &mut conns);
    let mut crow = Row::new("6c. consumers under SIGKILL + restart", "consume");
    crow.notes.extend(notes.iter().cloned());
    con_finish(cfg, con, fault, &mut crow, &mut conns);
    crow.notes.push(format!(
        "callbacks finished before each kill: {handled_before_kill:?} (acks the broker had not \
         yet written to disk come back as redeliveries: at-least-once)"
    ));
    vec![prow, crow]
}

/// A TCP proxy on 127.0.0.1 between the library and the broker. While `blackhole` is set it
/// forwards nothing in either direction and closes nothing (the bytes wait in the kernel's
/// buffers, as on a silent network); new connections are accepted and connected upstream, but
/// nothing flows. When cleared, forwarding resumes on every connection.
struct Proxy {
    port: u16,
    blackhole: Arc<AtomicBool>,
    /// bumped by `reset_all`: every connection older than that is reset (RST to the library)
    resets: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    h: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().unwrap().port();
        let blackhole = Arc::new(AtomicBool::new(false));
        let resets = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (bh, rs, st, acc) = (
            blackhole.clone(),
            resets.clone(),
            stop.clone(),
            accepted.clone(),
        );
        let h = std::thread::Builder::new()
            .name("fs-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    acc.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue; // broker down: the client sees a close
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let gen = rs.load(Ordering::SeqCst);
                    for (from, to, from_is_client) in [
                        (
                            client.try_clone().unwrap(),
                            server.try_clone().unwrap(),
                            true,
                        ),
                        (server, client, false),
                    ] {
                        let p = PumpCtl {
                            blackhole: bh.clone(),
                            resets: rs.clone(),
                            gen,
                            stop: st.clone(),
                            from_is_client,
                        };
                        std::thread::spawn(move || pump(from, to, p));
                    }
                }
            })
            .unwrap();
        Proxy {
            port,
            blackhole,
            resets,
            stop,
            accepted,
            h: Some(h),
        }
    }

    /// Resets every connection open now: the library's side gets a TCP RST (SO_LINGER 0 and
    /// close), the broker's side a plain close. New connections go through normally.
    fn reset_all(&self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }
}

struct PumpCtl {
    blackhole: Arc<AtomicBool>,
    resets: Arc<AtomicU64>,
    gen: u64,
    stop: Arc<AtomicBool>,
    from_is_client: bool,
}

/// SO_LINGER {on, 0}: closing the socket sends a RST instead of a FIN.
fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, p: PumpCtl) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 64 * 1024];
    while !p.stop.load(Ordering::SeqCst) {
        if p.resets.load(Ordering::SeqCst) != p.gen {
            // both pumps of the connection leave; the last close of the client socket sends RST
            set_linger_zero(if p.from_is_client { &from } else { &to });
            return;
        }
        if p.blackhole.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.blackhole.store(false, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake accept
        if let Some(h) = self.h.take() {
            let _ = h.join();
        }
    }
}

/// 4. A silent blackhole between library and broker (publish).
fn s_blackhole(cfg: &Cfg) -> Vec<Row> {
    blackhole(cfg, "4. network blackhole (heartbeat=2)", false)
}

/// 4b. The same on an idle connection (nothing published during the blackhole): only the
/// heartbeats can tell.
fn s_blackhole_idle(cfg: &Cfg) -> Vec<Row> {
    blackhole(cfg, "4b. network blackhole, idle connection", true)
}

fn blackhole(cfg: &Cfg, label: &str, idle: bool) -> Vec<Row> {
    let mut conns = Conns(Vec::new());
    let proxy = Proxy::start(cfg.addr);
    let uri = cfg.uri_via(proxy.port, "heartbeat=2&connection_timeout=2000");
    let side = pub_start(cfg, &uri, "blackhole", &mut conns);
    let conn = side.conn;
    std::thread::sleep(cfg.lead_in);
    if idle {
        side.publisher.paused.store(true, Ordering::SeqCst);
        let q = side.q;
        wait_for("idle before the blackhole", Duration::from_secs(30), || {
            qstats(q).buffered == 0
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    let c0 = cstats(conn).connects;
    let first = Instant::now();
    proxy.blackhole.store(true, Ordering::SeqCst);
    // watch for the state leaving CONNECTED (the monitor samples too; this is finer)
    let mut detect = None;
    while first.elapsed() < cfg.blackhole_for {
        if detect.is_none() {
            let s = cstats(conn);
            if s.state != amqp_connection_state::AMQP_STATE_CONNECTED || s.connects > c0 {
                detect = Some(first.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    proxy.blackhole.store(false, Ordering::SeqCst);
    let end = Instant::now();
    side.publisher.paused.store(false, Ordering::SeqCst);
    let mut detect_after_heal = None;
    if detect.is_none() {
        poll(Duration::from_secs(60), Duration::from_millis(2), || {
            let s = cstats(conn);
            let lost = s.state != amqp_connection_state::AMQP_STATE_CONNECTED || s.connects > c0;
            if lost {
                detect_after_heal = Some(first.elapsed());
            }
            lost
        });
    }
    let fault = Fault {
        first,
        last: first,
        end,
        instant: false,
    };
    std::thread::sleep(cfg.lead_out);
    let mut row = Row::new(label, "publish");
    match (detect, detect_after_heal) {
        (Some(d), _) => {
            row.detect = Some(secs(d));
            row.notes.push(format!(
                "blackhole {:.0} s{}: CONNECTED left {:.2} s after it began (2 heartbeats = 4 s)",
                secs(cfg.blackhole_for),
                if idle {
                    ", nothing published during it"
                } else {
                    ""
                },
                secs(d)
            ));
            row.check(secs(d) <= 7.0, || {
                format!(
                    "the blackhole was noticed after {:.2} s, far more than 2 heartbeats (4 s)",
                    secs(d)
                )
            });
        }
        (None, d) => {
            row.detect = d.map(secs);
            row.fail(format!(
                "the blackhole was NOT noticed during {:.0} s (2 heartbeats = 4 s); noticed {} after it began, i.e. only once traffic flowed again",
                secs(cfg.blackhole_for),
                fmt_opt(d.map(secs))
            ));
        }
    }
    pub_finish(cfg, side, fault, &mut row, &mut conns);
    row.notes.push(format!(
        "{} proxied connections, connection_timeout=2000",
        proxy.accepted.load(Ordering::SeqCst)
    ));
    drop(conns);
    drop(proxy);
    vec![row]
}

/// 4c. The network resets the connection (a TCP RST to the library, a close to the broker) while
/// publishing, with the library's default heartbeat (10 s): the reset itself must be noticed, not
/// the missing heartbeats. LAPIN-NOTES saw lapin notice a reset only at its next heartbeat.
fn s_reset(cfg: &Cfg) -> Vec<Row> {
    reset(cfg, "4c. connection reset (RST), heartbeat 10 s", false)
}

/// 4d. The same on an idle connection.
fn s_reset_idle(cfg: &Cfg) -> Vec<Row> {
    reset(
        cfg,
        "4d. connection reset (RST), idle, heartbeat 10 s",
        true,
    )
}

fn reset(cfg: &Cfg, label: &str, idle: bool) -> Vec<Row> {
    let mut conns = Conns(Vec::new());
    let proxy = Proxy::start(cfg.addr);
    let uri = cfg.uri_via(proxy.port, "heartbeat=10&connection_timeout=2000");
    let side = pub_start(cfg, &uri, "reset", &mut conns);
    let conn = side.conn;
    std::thread::sleep(cfg.lead_in);
    if idle {
        side.publisher.paused.store(true, Ordering::SeqCst);
        let q = side.q;
        wait_for("idle before the reset", Duration::from_secs(30), || {
            qstats(q).buffered == 0
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    let c0 = cstats(conn).connects;
    let first = Instant::now();
    proxy.reset_all();
    let mut detect = None;
    poll(Duration::from_secs(60), Duration::from_millis(1), || {
        let s = cstats(conn);
        let lost = s.state != amqp_connection_state::AMQP_STATE_CONNECTED || s.connects > c0;
        if lost {
            detect = Some(first.elapsed());
        }
        lost
    });
    side.publisher.paused.store(false, Ordering::SeqCst);
    let fault = Fault {
        first,
        last: first,
        end: first,
        instant: true,
    };
    std::thread::sleep(cfg.lead_out);
    let mut row = Row::new(label, "publish");
    row.detect = detect.map(secs);
    match detect {
        Some(d) => {
            row.notes.push(format!(
                "reset{}: CONNECTED left {:.3} s after it",
                if idle { " while idle" } else { "" },
                secs(d)
            ));
            row.check(secs(d) <= 2.0, || {
                format!(
                    "the reset was noticed only after {:.2} s (a RST should be noticed at once)",
                    secs(d)
                )
            });
        }
        None => row.fail("the reset was not noticed within 60 s"),
    }
    pub_finish(cfg, side, fault, &mut row, &mut conns);
    row.notes.push(format!(
        "{} proxied connections",
        proxy.accepted.load(Ordering::SeqCst)
    ));
    drop(conns);
    drop(proxy);
    vec![row]
}

/// 5. A memory alarm: the broker blocks publishers; publishes buffer, nothing is lost.
fn s_alarm(cfg: &Cfg) -> Vec<Row> {
    let label = "5. memory alarm (connection.blocked)";
    let mut conns = Conns(Vec::new());
    let side = pub_start(cfg, &cfg.uri_with("heartbeat=2"), "alarm", &mut conns);
    let conn = side.conn;
    let q = side.q;
    std::thread::sleep(cfg.lead_in);
    let c0 = cstats(conn).connects;
    let first = Instant::now();
    ctl("-q set_vm_memory_high_watermark 0.00001");
    let raised = Instant::now();
    // the alarm is on when `status` lists it
    std::thread::sleep(Duration::from_millis(500));
    let alarm_listed = ctl("-q status").contains("Memory alarm");
    let s1 = qstats(q);
    let t1 = Instant::now();
    std::thread::sleep(cfg.alarm_for.saturating_sub(first.elapsed()));
    let s2 = qstats(q);
    let during = delta(t1, Instant::now());
    ctl("-q set_vm_memory_high_watermark 0.4");
    let end = Instant::now();
    let fault = Fault {
        first,
        last: first,
        end,
        instant: false,
    };
    std::thread::sleep(cfg.lead_out);
    let mut row = Row::new(label, "publish");
    let grew = s2.confirmed - s1.confirmed;
    row.notes.push(format!(
        "alarm raised in {:.2} s, listed by status: {alarm_listed}; during {during:.1} s of alarm: +{grew} confirmed, buffered {} -> {}",
        delta(first, raised),
        s1.buffered,
        s2.buffered
    ));
    row.check(alarm_listed, || {
        "the memory alarm did not show in status".into()
    });
    row.check(grew <= CONFIRM_WINDOW && s2.buffered > s1.buffered, || {
        format!(
            "publishing was not blocked: +{grew} confirmed, buffered {} -> {}",
            s1.buffered, s2.buffered
        )
    });
    pub_finish(cfg, side, fault, &mut row, &mut conns);
    // a block is not a reason to reconnect
    let reconnects = row.reconnects;
    row.check(reconnects == 0 && c0 == 1, || {
        format!("the library reconnected during the block ({reconnects} reconnects)")
    });
    if reconnects == 0 {
        row.notes.push("connection kept through the block".into());
    }
    vec![row]
}

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

//! The test broker: where it is (RESILIENT_AMQP_TEST_URI), rabbitmqctl on it
//! (RESILIENT_AMQP_TEST_CTL), what it says about queues, and disrupting it.

use super::{cstats, poll};
use resilient_amqp::*;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

pub fn uri() -> String {
    match std::env::var("RESILIENT_AMQP_TEST_URI") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "RESILIENT_AMQP_TEST_URI is not set: these tests need a RabbitMQ node; \
             run bash scripts/test.sh (it starts a private broker and exports the variables)"
        ),
    }
}

pub fn ctl_prefix() -> String {
    match std::env::var("RESILIENT_AMQP_TEST_CTL") {
        Ok(c) if !c.is_empty() => c,
        _ => panic!(
            "RESILIENT_AMQP_TEST_CTL is not set: these tests need rabbitmqctl on the test node; \
             run bash scripts/test.sh"
        ),
    }
}

/// `$RESILIENT_AMQP_TEST_CTL <args>` as a command (stdin closed), to run or
/// to watch while it runs.
pub fn ctl_command(args: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("{} {}", ctl_prefix(), args))
        .stdin(Stdio::null());
    c
}

/// Runs `$RESILIENT_AMQP_TEST_CTL <args>`; returns (success, stdout, stderr).
pub fn ctl_try(args: &str) -> (bool, String, String) {
    let out = ctl_command(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{} {args}`: {e}", ctl_prefix()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs rabbitmqctl and returns its stdout; panics when it fails.
pub fn ctl(args: &str) -> String {
    // rabbitmqctl very rarely fails transiently under load (e.g. right after start_app);
    // every command the tests use is idempotent, so try again a few times
    let (mut ok, mut out, mut err) = ctl_try(args);
    for _ in 0..3 {
        if ok {
            break;
        }
        eprintln!("rabbitmqctl {args} failed, retrying:\nstdout: {out}\nstderr: {err}");
        std::thread::sleep(Duration::from_millis(500));
        (ok, out, err) = ctl_try(args);
    }
    assert!(
        ok,
        "rabbitmqctl {args} failed:\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// `list_queues name <fields...>` as a map name -> field values.
pub fn list_queues(fields: &[&str]) -> BTreeMap<String, Vec<String>> {
    let out = ctl(&format!(
        "-q list_queues --no-table-headers name {}",
        fields.join(" ")
    ));
    let mut map = BTreeMap::new();
    for line in out.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != fields.len() + 1 {
            continue; // e.g. a "Timeout" notice or an empty line
        }
        map.insert(
            cols[0].to_string(),
            cols[1..].iter().map(|s| s.trim().to_string()).collect(),
        );
    }
    map
}

/// The values of `fields` of one queue, or None when the broker does not list it.
pub fn queue_info(queue: &str, fields: &[&str]) -> Option<Vec<String>> {
    list_queues(fields).remove(queue)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    pub messages: u64,
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u64,
}

/// What the broker says about a queue (rabbitmqctl), or None when it does not exist.
pub fn queue_counts(queue: &str) -> Option<QueueCounts> {
    let v = queue_info(
        queue,
        &[
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ],
    )?;
    let n = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|_| panic!("bad number {s:?} in list_queues"))
    };
    Some(QueueCounts {
        messages: n(&v[0]),
        ready: n(&v[1]),
        unacked: n(&v[2]),
        consumers: n(&v[3]),
    })
}

pub fn queue_messages(queue: &str) -> u64 {
    queue_counts(queue)
        .map(|c| c.messages)
        .unwrap_or_else(|| panic!("queue {queue} does not exist"))
}

/// Waits until rabbitmqctl reports the queue with exactly `n` messages; panics with the last
/// seen counts otherwise.
pub fn wait_queue_messages(queue: &str, n: u64, timeout: Duration) {
    let mut last = None;
    let ok = poll(timeout, Duration::from_millis(200), || {
        last = queue_counts(queue);
        matches!(last, Some(c) if c.messages == n)
    });
    assert!(
        ok,
        "queue {queue}: expected {n} messages within {timeout:?}, broker says {last:?}"
    );
}

pub fn exchange_type(exchange: &str) -> Option<String> {
    let out = ctl("-q list_exchanges --no-table-headers name type");
    out.lines().find_map(|l| {
        let mut it = l.split('\t');
        (it.next()? == exchange).then(|| it.next().unwrap_or("").trim().to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// Broker disruption (only for tests/broker_faults.rs, serialized there)
// ---------------------------------------------------------------------------------------------

/// Stops the rabbit application (the node stays up, every connection drops, the listener
/// closes); restarts it when dropped, so a failing test never leaves the broker down.
pub struct AppStopped {
    running: bool,
}

impl AppStopped {
    pub fn stop() -> AppStopped {
        ctl("stop_app");
        AppStopped { running: false }
    }
    pub fn start(&mut self) {
        if !self.running {
            ctl("start_app");
            self.running = true;
            wait_broker_up(Duration::from_secs(60));
        }
    }
}

impl Drop for AppStopped {
    fn drop(&mut self) {
        if !self.running {
            let _ = ctl_try("start_app");
            self.running = true;
        }
    }
}

/// Waits until an AMQP connection to the broker can be opened.
pub fn wait_broker_up(timeout: Duration) {
    let u = uri();
    let addr = u
        .split('@')
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or("127.0.0.1:5672")
        .to_string();
    let ok = poll(timeout, Duration::from_millis(100), || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    assert!(
        ok,
        "broker at {addr} not accepting connections within {timeout:?}"
    );
}

/// Closes every client connection on the broker (the library must reconnect).
pub fn close_all_connections() {
    ctl("close_all_connections --global \"resilient-amqp test\"");
}

/// Waits until the connection is CONNECTED and has connected at least `connects` times.
pub fn wait_reconnected(conn: u64, connects: u64, timeout: Duration) {
    let mut last = cstats(conn);
    let ok = poll(timeout, Duration::from_millis(20), || {
        last = cstats(conn);
        last.connects >= connects && last.state == amqp_connection_state::AMQP_STATE_CONNECTED
    });
    assert!(
        ok,
        "connection {conn}: not reconnected ({connects} connects) within {timeout:?}: state {:?} connects {} failed {}",
        last.state as u32, last.connects, last.failed_attempts
    );
}

// ---------------------------------------------------------------------------------------------
// Tests of one file that disturb the broker for the others (stop_app, close_all_connections)
// ---------------------------------------------------------------------------------------------

static BROKER_USE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held by a test that only uses the broker: many at once.
pub fn broker_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    BROKER_USE.read().unwrap_or_else(|p| p.into_inner())
}

/// Held by a test that disturbs the broker (stop_app, close_all_connections): it runs alone
/// among the tests of its file.
pub fn broker_alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    BROKER_USE.write().unwrap_or_else(|p| p.into_inner())
}

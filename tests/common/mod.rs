//! The one helper module of the integration tests (`tests/*.rs` include it with `mod common;`).
//!
//! The tests need a real RabbitMQ node. `bash scripts/test.sh` starts a private one and exports:
//! - `RESILIENT_AMQP_TEST_URI`  e.g. `amqp://guest:guest@127.0.0.1:31720/%2f`
//! - `RESILIENT_AMQP_TEST_CTL`  a shell command prefix that runs rabbitmqctl against that node
//!
//! Without them every broker test panics (it never passes silently).
//!
//! Two independent views of the broker are used to judge the library:
//! - `ctl(..)`/`queue_counts(..)`: rabbitmqctl, i.e. what the broker itself says;
//! - `Reader`: a plain lapin connection (no resilient-amqp code) that drains queues with
//!   `basic.get` (no-ack), publishes seed messages with confirms and declares queues.
//!
//! Layout:
//! - `broker`: the test broker (URI, rabbitmqctl through `RESILIENT_AMQP_TEST_CTL`, queue counts,
//!   disruption with `AppStopped`);
//! - `api`: thin wrappers of the C API, and `ConnGuard`, which closes a connection when a test
//!   panics (a failed assert must not leave an open connection on the shared broker);
//! - `consume`: the consume callback `record_cb` and its `Recorder`;
//! - `reader`: `Reader`, the independent lapin client;
//! - `reports`: `Reports`, which records a queue's delivery reports;
//! - `message`: `CMessage`, an amqp_message built from lapin's properties, and the way back;
//! - here: names, polling, sequenced bodies.
#![allow(dead_code, unused_unsafe)]

mod api;
mod broker;
mod consume;
mod message;
mod reader;
mod reports;

#[allow(unused_imports)]
pub use api::*;
#[allow(unused_imports)]
pub use broker::*;
#[allow(unused_imports)]
pub use consume::*;
#[allow(unused_imports)]
pub use message::*;
#[allow(unused_imports)]
pub use reader::*;
#[allow(unused_imports)]
pub use reports::*;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
/// Prefix of the names of the threads on which the library runs consume callbacks.
pub const LIB_THREAD_PREFIX: &str = "ramqp-consumer";

/// A URI where nothing listens: connecting is refused at once, forever.
pub const DEAD_URI: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A queue name unique to this test, this process and this call.
pub fn unique_name(test: &str) -> String {
    format!(
        "ra-test-{}-{}-{}",
        test,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Polls `f` every `every` until it is true or `timeout` passed; returns whether it became true.
pub fn poll(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// `poll` that panics with `what` on timeout.
pub fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(
        poll(timeout, Duration::from_millis(20), f),
        "timed out after {timeout:?} waiting for {what}"
    );
}
// ---------------------------------------------------------------------------------------------
// Sequenced bodies
// ---------------------------------------------------------------------------------------------

pub fn seq_body(n: u64) -> Vec<u8> {
    format!("seq-{n:08}").into_bytes()
}

pub fn parse_seq(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(body)
        .ok()?
        .strip_prefix("seq-")?
        .parse()
        .ok()
}

/// (missing sequence numbers among 0..n, number of duplicate deliveries, bodies not of the form)
pub fn check_seqs<'a>(
    bodies: impl IntoIterator<Item = &'a [u8]>,
    n: u64,
) -> (Vec<u64>, usize, usize) {
    let mut seen = HashSet::new();
    let mut dups = 0;
    let mut foreign = 0;
    for b in bodies {
        match parse_seq(b) {
            Some(s) if s < n => {
                if !seen.insert(s) {
                    dups += 1
                }
            }
            _ => foreign += 1,
        }
    }
    let missing = (0..n).filter(|s| !seen.contains(s)).collect();
    (missing, dups, foreign)
}

/// The OS name of the calling thread. The library's callback threads are
/// POSIX threads it names itself, not std threads (a forced unwind must be
/// able to end them), so `std::thread::current().name()` does not know it.
pub fn os_thread_name() -> Option<String> {
    std::fs::read_to_string("/proc/thread-self/comm")
        .ok()
        .map(|s| s.trim_end().to_string())
}

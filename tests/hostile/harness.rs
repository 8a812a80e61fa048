//! One hostile scenario, run the same way every time: the library connects through a
//! [`HostileProxy`], opens a queue, publishes numbered messages (and consumes them, for the
//! scenarios on a consuming channel) while the proxy does its hostile act; then the proxy is
//! transparent, the library must recover, and the checks run:
//! - (a) the process lives: the test binary itself would die on an abort or a segfault;
//! - (b) bounds: every `amqp_publish` returns within `PUBLISH_BOUND`, `amqp_queue_open` within
//!   its 30 s, `amqp_wait_connected` within its timeout, `amqp_close_graceful(conn, 3000)` within
//!   3000 ms + `CLOSE_SLACK`;
//! - (c) memory: VmRSS grows by less than `RSS_BOUND` over the scenario;
//! - (d) nothing lost: every number the REAL broker confirmed (the proxy watched its acks) and,
//!   since no forged ack can make a correct library drop a message it sent, every number
//!   published is in the real queue (read by the independent lapin `Reader`) or was handed to a
//!   consume callback; duplicates at most one publish window (+ the prefetch, when consuming) per
//!   incident (a connection or channel lost, a hostile act), plus the messages the proxy nacked;
//! - for protocol violations: the library dropped the connection and connected again.
//!
//! Failures are collected and reported together at the end, so one run shows every bound a
//! scenario breaks.

use super::proxy::{Factory, HostileProxy};
use super::*;
use std::collections::HashSet;
use std::ffi::c_void;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const PUBLISH_BOUND: Duration = Duration::from_millis(100);
pub const CLOSE_TIMEOUT_MS: u32 = 3000;
pub const CLOSE_SLACK: Duration = Duration::from_millis(100);
pub const RSS_BOUND: u64 = 128 << 20;
/// How long the library has to recover after the hostile act.
pub const RECOVER: Duration = Duration::from_secs(45);
pub const PREFETCH: u64 = 50;
/// Fast reconnects, so the suite does not wait for backoff.
pub const FAST: &str = "reconnect_delay_ms=50&reconnect_delay_max_ms=500";

static SERIAL: Mutex<()> = Mutex::new(());

/// One scenario at a time: RSS is per process, and the proxy's counters per scenario.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn vm_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// The real broker's address, from RESILIENT_AMQP_TEST_URI.
pub fn upstream() -> SocketAddr {
    let u = uri();
    let hostport = u
        .split('@')
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("host:port in RESILIENT_AMQP_TEST_URI")
        .to_string();
    hostport.to_socket_addrs().unwrap().next().unwrap()
}

/// The URI of the test broker, through the proxy.
pub fn uri_via(port: u16, query: &str) -> String {
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("&{query}")
    };
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f?connection_timeout=3000{q}")
}

pub struct Scenario {
    pub name: &'static str,
    pub factory: Factory,
    /// the library also consumes the queue (the hostile act is on a consuming channel)
    pub consume: bool,
    /// a protocol violation: the library must drop the connection and connect again
    pub violation: bool,
    /// extra URI query, e.g. "heartbeat=2"
    pub query: &'static str,
    /// extra queue options, e.g. "&publish_timeout_ms=1500"
    pub queue_options: &'static str,
    pub messages: u64,
    /// bodies the proxy forged into deliveries start with this; the callback may see them
    pub forged_prefix: &'static [u8],
}

impl Scenario {
    pub fn new(name: &'static str, factory: Factory) -> Scenario {
        Scenario {
            name,
            factory,
            consume: false,
            violation: false,
            query: "",
            queue_options: "",
            messages: 1500,
            forged_prefix: b"hostile",
        }
    }
    pub fn consuming(mut self) -> Scenario {
        self.consume = true;
        self
    }
    pub fn violation(mut self) -> Scenario {
        self.violation = true;
        self
    }
    pub fn query(mut self, q: &'static str) -> Scenario {
        self.query = q;
        self
    }
    pub fn queue_options(mut self, o: &'static str) -> Scenario {
        self.queue_options = o;
        self
    }
}

/// Collects what a scenario broke.
#[derive(Default)]
pub struct Failures(pub Vec<String>);

impl Failures {
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let w = what();
            eprintln!("FAILED CHECK: {w}");
            self.0.push(w);
        }
    }
    pub fn assert_none(&self, name: &str) {
        assert!(
            self.0.is_empty(),
            "hostile scenario {name}: {} check(s) failed:\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

pub fn run(s: Scenario) {
    let _g = serial();
    let mut f = Failures::default();
    let rss0 = vm_rss();
    let proxy = HostileProxy::start(upstream(), s.factory);
    let conn = ConnGuard::connect(&uri_via(proxy.port, s.query), Some(FAST));
    let c = conn.h();
    let name = unique_name(s.name);

    let t = Instant::now();
    let options = format!("prefetch=50{}", s.queue_options);
    let (r, q) = try_queue_open(c, &name, None, None, Some(&options));
    let el = t.elapsed();
    f.check(el <= Duration::from_secs(30) + CLOSE_SLACK, || {
        format!("amqp_queue_open took {el:?} (bound 30 s)")
    });
    assert_eq!(r, amqp_result::AMQP_OK, "amqp_queue_open: {}", last_error());
    let rec = Recorder::acking(Duration::ZERO);
    let reports = Reports::attach(q);
    if s.consume {
        consume(q, &rec, 1);
    }

    // publish, paced (~1 ms a message), timing every call
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    for i in 0..s.messages {
        let t = Instant::now();
        let body = seq_body(i);
        let r = unsafe { amqp_publish_tagged(q, body.as_ptr() as *const c_void, body.len(), i) };
        slowest = slowest.max(t.elapsed());
        f.check(r == amqp_result::AMQP_OK, || {
            format!("amqp_publish #{i}: {} {}", result_str(r), last_error())
        });
        if let Some(w) = Duration::from_millis(i).checked_sub(start.elapsed()) {
            std::thread::sleep(w);
        }
    }
    f.check(slowest <= PUBLISH_BOUND, || {
        format!("slowest amqp_publish call took {slowest:?} (bound {PUBLISH_BOUND:?})")
    });

    // recovery: the act happened, everything confirmed (and consumed)
    let acted = poll(RECOVER, Duration::from_millis(20), || proxy.acts() > 0);
    f.check(acted, || "the proxy never got to its hostile act".into());
    let mut last = qstats(q);
    let drained = poll(RECOVER, Duration::from_millis(20), || {
        last = qstats(q);
        last.buffered == 0
    });
    f.check(drained, || {
        format!(
            "not everything confirmed {RECOVER:?} after the hostile act: {}",
            fmt_qstats(&last)
        )
    });
    if s.consume {
        let all = poll(RECOVER, Duration::from_millis(20), || {
            seen_all(&rec.bodies(), s.messages)
        });
        f.check(all, || {
            format!(
                "the consumer did not get every message within {RECOVER:?}: {} delivered",
                rec.started()
            )
        });
    }
    let t = Instant::now();
    let r = unsafe { amqp_wait_connected(c, 10_000) };
    let el = t.elapsed();
    f.check(r == amqp_result::AMQP_OK, || {
        format!("not connected after recovery: {}", result_str(r))
    });
    f.check(el <= Duration::from_millis(10_000) + CLOSE_SLACK, || {
        format!("amqp_wait_connected(10000) took {el:?}")
    });
    let cs = cstats(c);
    let qs = qstats(q);

    // close, timed
    let t = Instant::now();
    let (r, unsent) = conn.close(CLOSE_TIMEOUT_MS);
    let el = t.elapsed();
    f.check(
        el <= Duration::from_millis(CLOSE_TIMEOUT_MS.into()) + CLOSE_SLACK,
        || {
            format!(
                "amqp_close_graceful({CLOSE_TIMEOUT_MS}) took {el:?} ({}, unsent {unsent})",
                result_str(r)
            )
        },
    );

    // nothing lost
    let reader = Reader::new();
    let exists = reader.count(&name).is_some();
    f.check(exists, || {
        format!("queue {name} was never declared on the broker")
    });
    let left: Vec<Vec<u8>> = if exists {
        reader.drain(&name).into_iter().map(|g| g.body).collect()
    } else {
        Vec::new()
    };
    reader.delete(&name);
    let consumed = rec.bodies();
    let (forged, consumed): (Vec<_>, Vec<_>) = consumed
        .into_iter()
        .partition(|b| b.starts_with(s.forged_prefix));
    let all: Vec<&[u8]> = left
        .iter()
        .chain(consumed.iter())
        .map(|b| b.as_slice())
        .collect();
    let (missing, dups, foreign) = check_seqs(all.iter().copied(), s.messages);
    let present: HashSet<u64> = all.iter().filter_map(|b| parse_seq(b)).collect();
    let confirmed = proxy.confirmed();
    let lost_confirmed: Vec<u64> = confirmed
        .iter()
        .filter(|n| !present.contains(n))
        .copied()
        .collect();
    f.check(lost_confirmed.is_empty(), || {
        format!(
            "{} messages the broker confirmed are lost, e.g. {:?}",
            lost_confirmed.len(),
            &lost_confirmed[..lost_confirmed.len().min(10)]
        )
    });
    // Every message ends in exactly one report; a message may be missing
    // only if its report said it failed (e.g. nacked too often), and every
    // message reported confirmed is there.
    let reported = reports.all();
    let mut tags: Vec<u64> = reported.iter().map(|r| r.tag).collect();
    tags.sort_unstable();
    f.check(tags == (0..s.messages).collect::<Vec<_>>(), || {
        format!(
            "{} reports for {} messages (each must have exactly one)",
            reported.len(),
            s.messages
        )
    });
    let failed: HashSet<u64> = reported
        .iter()
        .filter(|r| r.status != amqp_report_status::AMQP_REPORT_CONFIRMED)
        .map(|r| r.tag)
        .collect();
    let unreported: Vec<u64> = missing
        .iter()
        .filter(|n| !failed.contains(n))
        .copied()
        .collect();
    f.check(unreported.is_empty(), || {
        format!(
            "{} of {} published messages missing without a failure report, e.g. {:?}",
            unreported.len(),
            s.messages,
            &unreported[..unreported.len().min(10)]
        )
    });
    let lost_reported: Vec<u64> = reported
        .iter()
        .filter(|r| r.status == amqp_report_status::AMQP_REPORT_CONFIRMED)
        .filter(|r| !present.contains(&r.tag))
        .map(|r| r.tag)
        .collect();
    f.check(lost_reported.is_empty(), || {
        format!(
            "{} messages reported confirmed are lost, e.g. {:?}",
            lost_reported.len(),
            &lost_reported[..lost_reported.len().min(10)]
        )
    });
    f.check(foreign == 0, || {
        format!("{foreign} bodies neither published nor forged")
    });
    let channel_closes = proxy
        .stats
        .channel_closes
        .load(std::sync::atomic::Ordering::SeqCst);
    // Both links of the connection: publish and (when consuming) consume.
    let connects = cs.connects + cs.consume_connects;
    let failed_attempts = cs.failed_attempts + cs.consume_failed_attempts;
    let incidents = connects + failed_attempts + channel_closes + proxy.acts();
    let per = publish_window(true, true, false) + if s.consume { PREFETCH } else { 0 };
    let nacked = proxy
        .stats
        .forged_nacks
        .load(std::sync::atomic::Ordering::SeqCst);
    let dup_bound = per * incidents + nacked;
    f.check(dups as u64 <= dup_bound, || {
        format!("{dups} duplicates, bound {dup_bound} ({per} x {incidents} incidents + {nacked} nacked)")
    });
    if s.violation {
        f.check(cs.protocol_errors >= 1, || {
            "a protocol violation, but amqp_connection_stats.protocol_errors is 0".to_string()
        });
        let links = if s.consume { 2 } else { 1 };
        // More connections than links: at least one reconnect.
        f.check(connects + failed_attempts > links && proxy.accepted() > links, || {
            format!(
                "a protocol violation, but the library did not reconnect (connects {}, failed attempts {}, proxy accepted {})",
                connects, failed_attempts, proxy.accepted()
            )
        });
    }
    let rss1 = vm_rss();
    let grew = rss1.saturating_sub(rss0);
    f.check(grew < RSS_BOUND, || {
        format!(
            "VmRSS grew by {} MiB (bound {} MiB)",
            grew >> 20,
            RSS_BOUND >> 20
        )
    });
    eprintln!(
        "HOSTILE {}: acts {} | connects {} failed {} proxy-accepted {} channel-closes {} | \
         confirmed-by-broker {} missing {} (failed reports {}) dups {} forged-delivered {} | slowest publish {:?} | \
         close {:?} | rss +{} KiB | {}",
        s.name,
        proxy.acts(),
        connects,
        failed_attempts,
        proxy.accepted(),
        channel_closes,
        confirmed.len(),
        missing.len(),
        failed.len(),
        dups,
        forged.len(),
        slowest,
        el,
        grew >> 10,
        fmt_qstats(&qs)
    );
    drop(proxy);
    f.assert_none(s.name);
}

/// Has every number 0..n been seen?
pub fn seen_all(bodies: &[Vec<u8>], n: u64) -> bool {
    let seen: HashSet<u64> = bodies.iter().filter_map(|b| parse_seq(b)).collect();
    (0..n).all(|i| seen.contains(&i))
}

//! The suite's configuration (SHORT or FULL, from the environment), its clock and messages.

use super::*;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub(crate) struct Cfg {
    pub(crate) full: bool,
    pub(crate) uri: String,
    /// 127.0.0.1:port of the broker
    pub(crate) addr: SocketAddr,
    pub(crate) port: u16,
    pub(crate) broker_sh: String,
    pub(crate) log_dir: std::path::PathBuf,
    /// publish rate, messages per second
    pub(crate) rate: u64,
    pub(crate) lead_in: Duration,
    pub(crate) lead_out: Duration,
    pub(crate) close_all_for: Duration,
    pub(crate) stop_app_rounds: u32,
    pub(crate) kill_rounds: u32,
    pub(crate) blackhole_for: Duration,
    pub(crate) alarm_for: Duration,
    /// pre-seeded messages for the consumer scenarios, their consumers and callback sleep
    pub(crate) consume_n: u64,
    pub(crate) consume_repeat: u32,
    pub(crate) consume_sleep: Duration,
    /// the whole suite is aborted (broker restored, exit 2) after this
    pub(crate) deadline: Duration,
}

impl Cfg {
    pub(crate) fn from_env() -> Cfg {
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
    pub(crate) fn uri_with(&self, query: &str) -> String {
        with_query(&self.uri, query)
    }

    /// The URI through a proxy listening on `port`.
    pub(crate) fn uri_via(&self, port: u16, query: &str) -> String {
        let u = self.uri.replace(
            &format!("127.0.0.1:{}", self.port),
            &format!("127.0.0.1:{port}"),
        );
        with_query(&u, query)
    }
}

pub(crate) fn with_query(uri: &str, query: &str) -> String {
    if uri.contains('?') {
        format!("{uri}&{query}")
    } else {
        format!("{uri}?{query}")
    }
}

pub(crate) fn fatal(msg: &str) -> ! {
    eprintln!("fault_suite: ERROR: {msg}");
    println!("fault_suite: ERROR: {msg}");
    println!("0 passed, 1 failed");
    std::process::exit(1);
}

pub(crate) fn say(msg: &str) {
    eprintln!("[fault_suite {:>7.1}s] {msg}", t0().elapsed().as_secs_f64());
}

pub(crate) fn t0() -> Instant {
    static T0: once_cell::sync::Lazy<Instant> = once_cell::sync::Lazy::new(Instant::now);
    *T0
}

pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// b - a in seconds, may be negative.
pub(crate) fn delta(a: Instant, b: Instant) -> f64 {
    if b >= a {
        secs(b - a)
    } else {
        -secs(a - b)
    }
}

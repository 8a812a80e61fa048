//! TLS (amqps://) against the private node's TLS listener, with certificates made at test time.
//! Run by `bash scripts/tls-test.sh`, which makes the certificates (scripts/tls-certs.sh),
//! starts the node with a TLS listener (scripts/broker.sh, RA_BROKER_TLS_DIR) and exports:
//! - `RESILIENT_AMQP_TEST_TLS_URI`  e.g. `amqps://guest:guest@localhost:31723/%2f`
//! - `RESILIENT_AMQP_TEST_TLS_DIR`  the certificates (ca.pem, client.pem, other-ca.pem, ...)
//!
//! and, for its second phase (the node restarted with an expired server certificate),
//! `RESILIENT_AMQP_TEST_TLS_EXPIRED=1`, under which only `expired_certificate_*` runs.
//! The plain listener of the same node (`RESILIENT_AMQP_TEST_URI`) is the independent reader's.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
/// Fast reconnects for the drop test.
const FAST: &str = "reconnect_delay_ms=100&reconnect_delay_max_ms=500";

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: run bash scripts/tls-test.sh (it makes the certificates and starts a TLS node)"),
    }
}

fn tls_uri() -> String {
    env("RESILIENT_AMQP_TEST_TLS_URI")
}

fn cert(file: &str) -> String {
    format!("{}/{file}", env("RESILIENT_AMQP_TEST_TLS_DIR"))
}

/// The TLS URI with `host` for localhost and `query` appended.
fn uri_with(host: &str, query: &str) -> String {
    format!(
        "{}?{query}",
        tls_uri().replacen("@localhost:", &format!("@{host}:"), 1)
    )
}

/// Trusts the test CA.
fn trusted() -> String {
    uri_with("localhost", &format!("cacertfile={}", cert("ca.pem")))
}

/// The phase with the expired server certificate runs only `expired_certificate_*`.
fn good_node() {
    assert!(
        std::env::var("RESILIENT_AMQP_TEST_TLS_EXPIRED").is_err(),
        "this test needs the node with the good certificate (the first phase of scripts/tls-test.sh)"
    );
}

/// rabbitmqctl list_connections: one row of `fields` per connection.
fn connections(fields: &str) -> Vec<Vec<String>> {
    ctl(&format!("-q list_connections --no-table-headers {fields}"))
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Connects to `uri` and watches it fail for `watch`: the failed attempts are bounded (backoff,
/// no storm) and amqp_last_error names the reason (`needle`). Returns the error.
fn fails_with_backoff(uri: &str, options: Option<&str>, needle: &str) -> String {
    let c = ConnGuard::connect(uri, options);
    let watch = Duration::from_secs(6);
    std::thread::sleep(watch);
    let r = unsafe { amqp_wait_connected(c.h(), 100) };
    let err = last_error();
    let s = cstats(c.h());
    eprintln!(
        "{needle}: {} failed attempts in {watch:?}; {err}",
        s.failed_attempts
    );
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT, "{err}");
    assert_eq!(s.connects, 0);
    assert!(err.contains("TLS handshake"), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("guest:"), "password in the error: {err}");
    // reconnect_delay 100 ms doubling to 5 s, jitter in the upper half: at most ~8 in 6 s
    assert!(
        (2..=12).contains(&s.failed_attempts),
        "{} failed attempts in {watch:?}: expected retries with backoff",
        s.failed_attempts
    );
    err
}

#[test]
fn publish_and_consume_10000_over_tls() {
    good_node();
    let _g = broker_shared();
    let c = ConnGuard::connect(&trusted(), None);
    assert_eq!(
        unsafe { amqp_wait_connected(c.h(), 15_000) },
        amqp_result::AMQP_OK,
        "{}",
        last_error()
    );
    let rows = connections("ssl ssl_protocol peer_port");
    eprintln!("connections (ssl, protocol, peer port): {rows:?}");
    assert!(
        rows.iter().any(|r| r[0] == "true"),
        "no TLS connection: {rows:?}"
    );
    let name = unique_name("tls-10k");
    let q = open_simple(c.h(), &name);
    let n = 10_000u64;
    let t = Instant::now();
    for i in 0..n {
        publish_ok(q, &seq_body(i));
    }
    wait_drained(q, T);
    let s = qstats(q);
    eprintln!(
        "published and confirmed {n} over TLS in {:?}: {}",
        t.elapsed(),
        fmt_qstats(&s)
    );
    assert_eq!((s.published, s.confirmed, s.nacked), (n, n, 0));
    wait_queue_messages(&name, n, T);
    // read back over TLS: our consumer (the consume link, a second TLS connection)
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    wait_for("10,000 consumed", T, || rec.unique_bodies() as u64 >= n);
    let bodies = rec.bodies();
    let (missing, dups, foreign) = check_seqs(bodies.iter().map(Vec::as_slice), n);
    assert_eq!(
        (missing.len(), foreign),
        (0, 0),
        "missing e.g. {:?}",
        &missing[..missing.len().min(10)]
    );
    eprintln!("consumed {} over TLS ({dups} duplicates)", bodies.len());
    rec.assert_no_panic();
    assert_eq!(cstats(c.h()).consume_connects, 1);
    wait_for("queue empty", T, || queue_messages(&name) == 0);
    c.close_ok();
}

#[test]
fn wrong_ca_fails_clearly_with_backoff() {
    good_node();
    let _g = broker_shared();
    let uri = uri_with("localhost", &format!("cacertfile={}", cert("other-ca.pem")));
    fails_with_backoff(&uri, None, "UnknownIssuer");
}

#[test]
fn system_roots_do_not_trust_the_test_ca() {
    good_node();
    let _g = broker_shared();
    fails_with_backoff(&tls_uri(), None, "UnknownIssuer");
}

#[test]
fn wrong_host_name_fails_clearly_with_backoff() {
    good_node();
    let _g = broker_shared();
    // the server certificate is for localhost only
    let uri = uri_with("127.0.0.1", &format!("cacertfile={}", cert("ca.pem")));
    let err = fails_with_backoff(&uri, None, "not valid for name");
    assert!(err.contains("127.0.0.1"), "{err}");
}

/// A host list over TLS (issue 15): each address is verified by its own name. The same TLS
/// listener twice, first as 127.0.0.1 (not in the certificate: refused), then as localhost.
#[test]
fn host_list_over_tls_verifies_each_host_by_its_own_name() {
    good_node();
    let _g = broker_shared();
    let base = tls_uri();
    let hostport = base.split('@').nth(1).unwrap().split('/').next().unwrap();
    let port = hostport.rsplit(':').next().unwrap();
    let list = base.replacen(hostport, &format!("127.0.0.1:{port},localhost:{port}"), 1);
    let uri = format!("{list}?cacertfile={}", cert("ca.pem"));
    let c = ConnGuard::connect(&uri, Some("reconnect_delay_ms=3000"));
    let r = unsafe { amqp_wait_connected(c.h(), 10_000) };
    assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
    let s = cstats(c.h());
    assert_eq!(s.connects, 1);
    assert_eq!(
        s.failed_attempts, 1,
        "127.0.0.1 refused by name, localhost taken"
    );
    c.close_ok();
}

#[test]
fn plain_port_with_amqps_fails_clearly() {
    good_node();
    let _g = broker_shared();
    let plain = uri().replacen("amqp://", "amqps://", 1);
    let uri = format!("{plain}?cacertfile={}", cert("ca.pem"));
    fails_with_backoff(&uri, None, "TLS listener");
}

#[test]
fn insecure_skip_verify_connects_and_warns_at_every_connect() {
    good_node();
    let _g = broker_alone();
    let logs = LogLines::capture(amqp_log_level::AMQP_LOG_WARN);
    // wrong host name and no CA: only the insecure setting lets it through
    let c = ConnGuard::connect(
        &uri_with("127.0.0.1", "tls_insecure_skip_verify=true"),
        Some(FAST),
    );
    assert_eq!(
        unsafe { amqp_wait_connected(c.h(), 15_000) },
        amqp_result::AMQP_OK,
        "{}",
        last_error()
    );
    let q = open_simple(c.h(), &unique_name("tls-insecure"));
    publish_ok(q, b"x");
    wait_drained(q, T);
    close_all_connections();
    wait_reconnected(c.h(), 2, T);
    let warned = logs
        .lines()
        .into_iter()
        .filter(|(_, m)| m.contains("tls_insecure_skip_verify=true") && m.contains("NOT verified"))
        .count();
    assert!(
        warned >= 2,
        "a warning per connect expected, got {warned}: {:?}",
        logs.lines()
    );
    c.close_ok();
}

#[test]
fn tls_connection_dropped_mid_stream_loses_nothing() {
    good_node();
    let _g = broker_alone();
    let c = ConnGuard::connect(&trusted(), Some(FAST));
    assert_eq!(
        unsafe { amqp_wait_connected(c.h(), 15_000) },
        amqp_result::AMQP_OK,
        "{}",
        last_error()
    );
    let name = unique_name("tls-drop");
    let q = open_simple(c.h(), &name); // durable + persistent
    let n = 10_000u64;
    let stop = Arc::new(AtomicBool::new(false));
    let closes = Arc::new(AtomicU64::new(0));
    let closer = {
        let (stop, closes) = (stop.clone(), closes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(500));
                close_all_connections();
                closes.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let t = Instant::now();
    for i in 0..n {
        publish_ok(q, &seq_body(i));
        // ~10 s of publishing: message i is due at i ms
        if let Some(wait) = Duration::from_millis(i).checked_sub(t.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    stop.store(true, Ordering::SeqCst);
    closer.join().unwrap();
    wait_drained(q, Duration::from_secs(120));
    let s = qstats(q);
    let cs = cstats(c.h());
    eprintln!(
        "{} close_all_connections; connects {}, failed attempts {}; {}",
        closes.load(Ordering::SeqCst),
        cs.connects,
        cs.failed_attempts,
        fmt_qstats(&s)
    );
    assert_eq!((s.published, s.confirmed), (n, n));
    assert!(
        cs.connects >= 3,
        "expected reconnects, got {} connects",
        cs.connects
    );
    // the independent reader: lapin on the node's plain listener
    let got = Reader::new().drain_fast(&name, Duration::from_secs(2), T);
    let (missing, dups, foreign) = check_seqs(got.iter().map(|g| g.body.as_slice()), n);
    eprintln!(
        "{name}: {} read back, {dups} duplicates, {} missing",
        got.len(),
        missing.len()
    );
    assert_eq!(foreign, 0);
    assert!(
        missing.is_empty(),
        "{} lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    c.close_ok();
}

/// The user of the client certificate (CN=ra-tls-client): made here, with a password nobody
/// knows, so only EXTERNAL can log in as it.
fn tls_user() {
    let pw = format!(
        "unused-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let _ = ctl_try(&format!("-q add_user ra-tls-client {pw}"));
    ctl("-q set_permissions -p / ra-tls-client '.*' '.*' '.*'");
}

#[test]
fn external_logs_in_with_the_client_certificate() {
    good_node();
    let _g = broker_shared();
    tls_user();
    let query = format!(
        "auth_mechanism=external&cacertfile={}&certfile={}&keyfile={}",
        cert("ca.pem"),
        cert("client.pem"),
        cert("client.key")
    );
    let uri = format!("{}?{query}", tls_uri().replacen("guest:guest@", "", 1));
    let c = ConnGuard::connect(&uri, None);
    assert_eq!(
        unsafe { amqp_wait_connected(c.h(), 15_000) },
        amqp_result::AMQP_OK,
        "{}",
        last_error()
    );
    let rows = connections("user auth_mechanism ssl");
    eprintln!("connections (user, mechanism, ssl): {rows:?}");
    assert!(
        rows.iter()
            .any(|r| r[..] == ["ra-tls-client", "EXTERNAL", "true"]),
        "no EXTERNAL login as ra-tls-client: {rows:?}"
    );
    let name = unique_name("tls-external");
    let q = open_simple(c.h(), &name);
    for i in 0..100 {
        publish_ok(q, &seq_body(i));
    }
    wait_drained(q, T);
    wait_queue_messages(&name, 100, T);
    c.close_ok();
}

#[test]
fn client_certificate_of_another_ca_is_refused_by_the_broker() {
    good_node();
    let _g = broker_shared();
    let query = format!(
        "auth_mechanism=external&cacertfile={}&certfile={}&keyfile={}",
        cert("ca.pem"),
        cert("other-client.pem"),
        cert("other-client.key")
    );
    let uri = format!("{}?{query}", tls_uri().replacen("guest:guest@", "", 1));
    let c = ConnGuard::connect(&uri, None);
    std::thread::sleep(Duration::from_secs(3));
    let r = unsafe { amqp_wait_connected(c.h(), 100) };
    let err = last_error();
    let s = cstats(c.h());
    eprintln!("{} failed attempts; {err}", s.failed_attempts);
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT, "{err}");
    assert_eq!(s.connects, 0);
    // the broker's alert (usually), or the reset that overtook it (our AMQP header crossed it)
    assert!(
        err.contains("TLS error: received fatal alert") || err.contains("I/O error"),
        "{err}"
    );
    assert!(err.contains("refused our client certificate"), "{err}");
    assert!(
        (1..=10).contains(&s.failed_attempts),
        "{}",
        s.failed_attempts
    );
}

#[test]
fn expired_certificate_fails_clearly_with_backoff() {
    if std::env::var("RESILIENT_AMQP_TEST_TLS_EXPIRED").is_err() {
        panic!(
            "needs the node restarted with an expired server certificate: the second phase of \
             bash scripts/tls-test.sh (RESILIENT_AMQP_TEST_TLS_EXPIRED=1)"
        );
    }
    let uri = uri_with("localhost", &format!("cacertfile={}", cert("ca.pem")));
    fails_with_backoff(&uri, None, "expired");
}

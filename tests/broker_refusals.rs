//! The broker saying "no" (issue 11), against the real broker: nacks,
//! a message over the broker's max_message_size, refused publishing, a
//! refused declare after a reconnect; every message ends in one report.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::time::{Duration, Instant};

/// Removes a policy when dropped (also when the test fails).
struct Policy(String);

impl Policy {
    fn set(name: &str, pattern: &str, definition: &str) -> Policy {
        ctl(&format!(
            "set_policy {name} '{pattern}' '{definition}' --apply-to queues"
        ));
        Policy(name.to_string())
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = ctl_try(&format!("clear_policy {}", self.0));
    }
}

/// A transient queue that holds `max_length` messages and nacks the rest (reject-publish),
/// opened with `publish_retries` on a new connection; returned once the policy applies (it
/// does once the queue exists).
fn nacking_queue(
    prefix: &str,
    max_length: u32,
    conn_options: Option<&str>,
    publish_retries: u32,
) -> (String, Policy, ConnGuard, u64) {
    let name = unique_name(prefix);
    let policy = Policy::set(
        &format!("{name}-p"),
        &format!("^{name}$"),
        &format!(r#"{{"max-length":{max_length},"overflow":"reject-publish"}}"#),
    );
    let c = ConnGuard::connect_ok(conn_options);
    let q = queue_open(
        c.h(),
        &name,
        None,
        None,
        Some(&format!(
            "durable=false&persistent=false&publish_retries={publish_retries}"
        )),
    );
    wait_for("the policy to apply", Duration::from_secs(10), || {
        queue_info(&name, &["policy"]).is_some_and(|p| p[0] == format!("{name}-p"))
    });
    (name, policy, c, q)
}

#[test]
fn nacked_messages_back_off_and_fail_after_publish_retries() {
    let _broker = broker_shared();
    // A queue that holds 10 messages and nacks the rest (reject-publish):
    // the 90 others are resent publish_retries (2) times with a backoff,
    // then each fails with one NACKED report; nothing spins.
    let (name, _policy, c, q) = nacking_queue(
        "nack",
        10,
        Some("reconnect_delay_ms=100&reconnect_delay_max_ms=400"),
        2,
    );
    let reports = Reports::attach(q);
    let t0 = Instant::now();
    for i in 0..100 {
        publish_tagged_ok(q, &seq_body(i), 1000 + i);
    }
    let all = reports.wait_for(100, Duration::from_secs(30));
    let took = t0.elapsed();
    let by_status = |s| all.iter().filter(|r| r.status == s).count();
    assert_eq!(by_status(amqp_report_status::AMQP_REPORT_CONFIRMED), 10);
    assert_eq!(by_status(amqp_report_status::AMQP_REPORT_NACKED), 90);
    let mut tags: Vec<u64> = all.iter().map(|r| r.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, (1000..1100).collect::<Vec<_>>(), "one report per tag");
    for r in all
        .iter()
        .filter(|r| r.status == amqp_report_status::AMQP_REPORT_NACKED)
    {
        assert_eq!(r.attempts, 3, "{r:?}");
        assert!(r.reason.contains("nacked"), "{r:?}");
    }
    // A message's room is freed once its report returned.
    wait_for("the buffer to empty", Duration::from_secs(5), || {
        qstats(q).buffered == 0
    });
    let s = qstats(q);
    assert_eq!(s.nacked, 90 * 3, "{}", fmt_qstats(&s));
    assert_eq!(s.resent, 90 * 2, "{}", fmt_qstats(&s));
    assert_eq!((s.failed, s.confirmed, s.buffered), (90, 10, 0));
    // Two backoffs of 50-100 ms and 100-200 ms (jitter) between the rounds.
    assert!(
        took >= Duration::from_millis(150),
        "resent without backoff: {took:?}"
    );
    assert_eq!(queue_messages(&name), 10);
    // Nothing is resent any more.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(qstats(q).resent, 90 * 2);
    c.close_ok();
}

/// Nacks read by the publishing thread itself (the publish link's confirms are read late, and
/// with 4 in flight `amqp_publish` reads them before it sends). The backoff and the resends
/// they start belong to the publisher task, which sleeps with nothing planned: it must be
/// woken, or the nacked messages (and the one pushed meanwhile) wait forever.
#[test]
fn nacks_read_by_the_publishing_thread_still_back_off_and_resend() {
    let _broker = broker_shared();
    let (name, _policy, c, q) = nacking_queue("nack-here", 2, None, 1);
    let reports = Reports::attach(q);
    for round in 0..3u64 {
        // Idle first, so that the publishing thread sends the first 4 itself.
        std::thread::sleep(Duration::from_millis(50));
        for i in 0..4 {
            publish_tagged_ok(q, b"x", round * 10 + i);
        }
        // The confirms arrive (below the link's low mark) before the 5th,
        // which reads them itself (the link stays lazy for ~2 ms).
        std::thread::sleep(Duration::from_micros(900));
        publish_tagged_ok(q, b"x", round * 10 + 4);
        let want = (round as usize + 1) * 5;
        let all = reports.wait_for(want, Duration::from_secs(10));
        assert!(
            all.iter()
                .all(|r| r.status == amqp_report_status::AMQP_REPORT_NACKED
                    || r.status == amqp_report_status::AMQP_REPORT_CONFIRMED),
            "{all:?}"
        );
        // Room for the next round.
        ctl(&format!("purge_queue {name}"));
    }
    let s = qstats(q);
    assert_eq!(s.buffered, 0, "{}", fmt_qstats(&s));
    c.close_ok();
}

/// Sets the broker's max_message_size, and restores the default when dropped.
struct MaxMessageSize;

impl MaxMessageSize {
    fn set(bytes: u64) -> MaxMessageSize {
        ctl(&format!(
            "eval 'application:set_env(rabbit, max_message_size, {bytes}).'"
        ));
        MaxMessageSize
    }
}

impl Drop for MaxMessageSize {
    fn drop(&mut self) {
        let _ = ctl_try("eval 'application:set_env(rabbit, max_message_size, 134217728).'");
    }
}

#[test]
fn a_message_over_the_brokers_max_size_fails_alone_and_the_others_go_on() {
    let _broker = broker_shared();
    let _limit = MaxMessageSize::set(1 << 20);
    let name = unique_name("toolarge");
    let c = ConnGuard::connect_ok(None);
    let q = queue_open(
        c.h(),
        &name,
        None,
        None,
        Some("durable=false&persistent=false"),
    );
    let reports = Reports::attach(q);
    let big = vec![7u8; 2 << 20];
    for i in 0..5 {
        publish_tagged_ok(q, &seq_body(i), i);
    }
    publish_tagged_ok(q, &big, 99);
    for i in 5..10 {
        publish_tagged_ok(q, &seq_body(i), i);
    }
    let all = reports.wait_for(11, Duration::from_secs(30));
    let failed: Vec<_> = all
        .iter()
        .filter(|r| r.status != amqp_report_status::AMQP_REPORT_CONFIRMED)
        .collect();
    assert_eq!(failed.len(), 1, "{all:?}");
    assert_eq!(failed[0].tag, 99);
    assert_eq!(failed[0].status, amqp_report_status::AMQP_REPORT_TOO_LARGE);
    assert_eq!(failed[0].code, 406);
    assert!(failed[0].reason.contains("max size"), "{:?}", failed[0]);
    // Every good message arrived; those in flight with the big one may
    // have been sent twice (one window per incident), nothing more.
    let got = Reader::new().drain_at_least(&name, 10, Duration::from_secs(10));
    let mut counts = BTreeMap::new();
    for g in &got {
        *counts
            .entry(parse_seq(&g.body).expect("a seq body"))
            .or_insert(0) += 1;
    }
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert!(counts.values().all(|&n| n <= 2), "{counts:?}");
    // The broker's limit is known now: a body over it fails at once.
    let r = publish_tagged(q, &big, 100);
    assert_eq!(r, amqp_result::AMQP_ERR_MESSAGE_TOO_LARGE);
    assert!(
        last_error().contains("max_message_size"),
        "{}",
        last_error()
    );
    let s = qstats(q);
    assert_eq!((s.failed, s.refused, s.queue_failed), (1, 1, 0));
    c.close_ok();
}

struct User(&'static str);

impl User {
    /// A user that may configure and read everything but write only to
    /// exchanges matching `write`.
    fn create(name: &'static str, write: &str) -> User {
        let _ = ctl_try(&format!("delete_user '{name}'"));
        ctl(&format!("add_user '{name}' pw"));
        ctl(&format!(
            "set_permissions -p / '{name}' '.*' '{write}' '.*'"
        ));
        User(name)
    }

    fn uri(&self) -> String {
        uri().replacen("guest:guest", &format!("{}:pw", self.0), 1)
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = ctl_try(&format!("delete_user '{}'", self.0));
    }
}

#[test]
fn refused_publishing_fails_the_queue_not_its_neighbours() {
    let _broker = broker_shared();
    // Binding needs write permission on the queue as well.
    let user = User::create("ra-nowrite", "^ra-allowed-x$|^ra-test-canwrite-");
    let c = ConnGuard::connect(&user.uri(), Some("reconnect_delay_max_ms=1000"));
    assert_eq!(
        unsafe { amqp_wait_connected(c.h(), 10_000) },
        amqp_result::AMQP_OK
    );
    let refused_name = unique_name("nowrite");
    let ok_name = unique_name("canwrite");
    let refused = queue_open(c.h(), &refused_name, None, None, Some("durable=false"));
    let ok = queue_open(
        c.h(),
        &ok_name,
        Some("ra-allowed-x"),
        Some("k"),
        Some("durable=false"),
    );
    let reports = Reports::attach(refused);
    // The refusal of the first may come back before the last is published.
    let mut accepted = 0;
    for i in 0..5 {
        match publish_tagged(refused, &seq_body(i), i) {
            amqp_result::AMQP_OK => accepted += 1,
            amqp_result::AMQP_ERR_BROKER => break,
            other => panic!("publish {i}: {other:?} {}", last_error()),
        }
    }
    assert!(accepted >= 1);
    let all = reports.wait_for(accepted, Duration::from_secs(20));
    for r in &all {
        assert_eq!(r.status, amqp_report_status::AMQP_REPORT_REFUSED, "{r:?}");
        assert_eq!(r.code, 403, "{r:?}");
        assert!(r.reason.contains("ACCESS_REFUSED"), "{r:?}");
    }
    wait_for("the buffer to empty", Duration::from_secs(5), || {
        qstats(refused).buffered == 0
    });
    let s = qstats(refused);
    assert_eq!(
        (s.queue_failed, s.failed, s.buffered),
        (1, accepted as u64, 0),
        "{}",
        fmt_qstats(&s)
    );
    assert_eq!(publish(refused, b"later"), amqp_result::AMQP_ERR_BROKER);
    assert!(last_error().contains("ACCESS_REFUSED"), "{}", last_error());
    // The neighbour on the same connection is unaffected.
    for i in 0..1000 {
        publish_ok(ok, &seq_body(i));
    }
    wait_drained(ok, Duration::from_secs(20));
    assert_eq!(qstats(ok).confirmed, 1000);
    assert_eq!(cstats(c.h()).connects, 1);
    // Granted: after the slow retry (reconnect_delay_max_ms) it works again.
    ctl(&format!("set_permissions -p / '{}' '.*' '.*' '.*'", user.0));
    wait_for("the queue to work again", Duration::from_secs(20), || {
        publish(refused, b"again") == amqp_result::AMQP_OK
    });
    wait_for("its confirm", Duration::from_secs(20), || {
        qstats(refused).confirmed >= 1
    });
    assert_eq!(qstats(refused).queue_failed, 0);
    c.close_ok();
}

#[test]
fn a_declare_refused_after_a_reconnect_fails_the_queue_until_it_can_be_declared() {
    let _broker = broker_alone();
    let c = ConnGuard::connect_ok(Some("reconnect_delay_max_ms=500"));
    let name = unique_name("redeclared");
    let other_name = unique_name("neighbour");
    let q = queue_open(c.h(), &name, None, None, None);
    let other = open_simple(c.h(), &other_name);
    publish_ok(q, b"before");
    wait_drained(q, Duration::from_secs(10));
    // Someone replaces the queue with an inequivalent one (not durable).
    let reader = Reader::new();
    reader.delete(&name);
    reader
        .declare(
            &name,
            lapin::options::QueueDeclareOptions {
                durable: false,
                ..Default::default()
            },
        )
        .unwrap();
    let reports = Reports::attach(q);
    let connects = cstats(c.h()).connects;
    close_all_connections();
    wait_reconnected(c.h(), connects, Duration::from_secs(20));
    wait_for("the queue to fail", Duration::from_secs(20), || {
        qstats(q).queue_failed == 1
    });
    let r = publish_tagged(q, b"while refused", 7);
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER);
    assert!(
        last_error().contains("PRECONDITION_FAILED"),
        "{}",
        last_error()
    );
    // The neighbour works.
    publish_ok(other, b"fine");
    wait_drained(other, Duration::from_secs(20));
    // Fixed by an operator: the queue comes back on its own. (A new
    // reader: close_all_connections closed the first one too.)
    Reader::new().delete(&name);
    wait_for("the queue to work again", Duration::from_secs(20), || {
        publish_tagged(q, b"after", 8) == amqp_result::AMQP_OK
    });
    let all = reports.wait_for(1, Duration::from_secs(20));
    assert_eq!(all[0].tag, 8);
    assert_eq!(all[0].status, amqp_report_status::AMQP_REPORT_CONFIRMED);
    assert_eq!(qstats(q).queue_failed, 0);
    c.close_ok();
}

#[test]
fn a_body_that_never_fits_the_buffer_is_too_large_not_buffer_full() {
    let _broker = broker_shared();
    let c = ConnGuard::connect_ok(None);
    let q = queue_open(
        c.h(),
        &unique_name("neverfits"),
        None,
        None,
        Some("durable=false&max_buffered_bytes=1000"),
    );
    let body = vec![1u8; 1001];
    assert_eq!(publish(q, &body), amqp_result::AMQP_ERR_MESSAGE_TOO_LARGE);
    assert!(
        last_error().contains("max_buffered_bytes"),
        "{}",
        last_error()
    );
    let r = unsafe { amqp_publish_wait(q, body.as_ptr() as *const c_void, body.len(), 1000) };
    assert_eq!(r, amqp_result::AMQP_ERR_MESSAGE_TOO_LARGE);
    publish_ok(q, &body[..1000]);
    c.close_ok();
}

#[test]
fn an_unknown_exchange_type_fails_its_queue_not_the_connection_again_and_again() {
    let _broker = broker_alone();
    let c = ConnGuard::connect_ok(Some("reconnect_delay_ms=50&reconnect_delay_max_ms=500"));
    let good = open_simple(c.h(), &unique_name("typo-neighbour"));
    // While connected: the broker closes the whole connection (503); the
    // open says so, and the connection comes back once.
    let (r, _) = try_queue_open(
        c.h(),
        &unique_name("typo-now"),
        Some("ra-typo-x"),
        Some("k"),
        Some("exchange_type=x-typo"),
    );
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER);
    assert!(last_error().contains("x-typo"), "{}", last_error());
    wait_reconnected(c.h(), 2, Duration::from_secs(20));
    // Opened while the broker is away: declared on connect, it breaks that
    // connection once, then it is refused for good.
    let mut stopped = AppStopped::stop();
    wait_for("disconnected", Duration::from_secs(20), || {
        conn_state(c.h()) != amqp_connection_state::AMQP_STATE_CONNECTED
    });
    let later = queue_open(
        c.h(),
        &unique_name("typo-later"),
        Some("ra-typo-x2"),
        Some("k"),
        Some("exchange_type=x-typo"),
    );
    publish_ok(later, b"held");
    let reports = Reports::attach(later);
    let before = cstats(c.h()).connects;
    stopped.start();
    wait_for("the queue to fail", Duration::from_secs(30), || {
        qstats(later).queue_failed == 1
    });
    let all = reports.wait_for(1, Duration::from_secs(10));
    assert_eq!(all[0].status, amqp_report_status::AMQP_REPORT_REFUSED);
    assert!(all[0].reason.contains("x-typo"), "{:?}", all[0]);
    assert_eq!(publish(later, b"x"), amqp_result::AMQP_ERR_BROKER);
    unsafe { amqp_wait_connected(c.h(), 20_000) };
    std::thread::sleep(Duration::from_secs(3));
    let connects = cstats(c.h()).connects - before;
    assert!(
        connects <= 2,
        "{connects} connects: the queue keeps breaking the connection"
    );
    // The neighbour works throughout.
    publish_ok(good, b"fine");
    wait_drained(good, Duration::from_secs(20));
    c.close_ok();
}

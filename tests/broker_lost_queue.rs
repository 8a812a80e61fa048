//! A durable queue gone when the link comes back: the broker lost it (a crash right after its
//! declaration, a node back without its data). The library says so, loudly, and declares it
//! again. (Its own file: it closes every connection of the broker.)
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::time::Duration;

/// A durable queue that is gone when the link comes back (the broker lost it: a crash right
/// after its declaration, a node without its data) is said loudly, then declared again.
#[test]
fn a_durable_queue_missing_after_a_reconnect_is_reported_as_lost_by_the_broker() {
    let logs = LogLines::capture(amqp_log_level::AMQP_LOG_WARN);
    let name = unique_name("lost-by-broker");
    let reader = Reader::new();
    let c = ConnGuard::connect_ok(None);
    let q = queue_open(c.h(), &name, None, None, None);
    for i in 0..10 {
        publish_ok(q, &seq_body(i));
    }
    wait_drained(q, Duration::from_secs(10));
    assert_eq!(reader.count(&name), Some((10, 0)));
    // gone while the library is idle (nothing tells it), then the link drops: what it finds
    // when it comes back is what a broker that lost the queue shows
    reader.delete(&name);
    ctl("close_all_connections");
    let reader = Reader::new(); // the old one's connection was closed too
    wait_for("the link back", Duration::from_secs(30), || {
        cstats(c.h()).connects >= 2
            && conn_state(c.h()) == amqp_connection_state::AMQP_STATE_CONNECTED
    });
    for i in 10..15 {
        publish_ok(q, &seq_body(i));
    }
    wait_drained(q, Duration::from_secs(10));
    assert_eq!(
        reader.count(&name),
        Some((5, 0)),
        "declared again, new messages in it: {:#?}",
        logs.lines()
    );
    let warned = logs.lines().iter().any(|(l, m)| {
        *l == amqp_log_level::AMQP_LOG_WARN as i32
            && m.contains(&name)
            && m.contains("the broker lost it")
    });
    assert!(
        warned,
        "a WARN says the broker lost it: {:#?}",
        logs.lines()
    );
    c.close_ok();
    let _ = unsafe { amqp_set_log_callback(None, 0, std::ptr::null_mut()) };
    reader.delete(&name);
}

//! inline_delivery=true: the callback threads read the consume link. What the
//! runtime-read path gave for free must hold: a callback that blocks does not
//! stop the link (the other consumers' deliveries and the broker's heartbeats
//! are read by another pool thread), and the callbacks still run on
//! "ramqp-consumer" threads. The consume suites also run whole in this mode
//! (scripts/test.sh, step inline).

mod common;

use common::*;
use resilient_amqp::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// One test at a time: the reconnect test closes every connection.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn seed(queue: &str, range: std::ops::Range<u64>) {
    let bodies: Vec<Vec<u8>> = range.map(seq_body).collect();
    Reader::new().publish(queue, &bodies);
}

/// The test broker's URI with a 1 s heartbeat: three silent ticks (1.5 s)
/// end a link whose reading stopped.
fn uri_heartbeat_1s() -> String {
    let u = uri();
    let sep = if u.contains('?') { '&' } else { '?' };
    format!("{u}{sep}heartbeat=1")
}

#[test]
fn a_blocked_callback_does_not_stop_the_link() {
    let _one = serial();
    let conn = ConnGuard::connect(&uri_heartbeat_1s(), Some("inline_delivery=true"));
    let c = conn.h();
    assert_eq!(amqp_wait_connected(c, 10_000), amqp_result::AMQP_OK);
    let slow_name = unique_name("inline-slow");
    let fast_name = unique_name("inline-fast");
    let slow_q = open_simple(c, &slow_name);
    let fast_q = open_simple(c, &fast_name);
    // The slow consumer's first callback blocks 4 s: longer than the
    // heartbeat allows a link to be silent.
    let blocked = Arc::new(AtomicBool::new(false));
    let b2 = blocked.clone();
    let slow = Recorder::new(
        Duration::ZERO,
        Box::new(move |_, r| {
            if r.started() == 1 {
                b2.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_secs(4));
                b2.store(false, Ordering::SeqCst);
            }
            raw(amqp_disposition::AMQP_ACK)
        }),
    );
    let threads: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let t2 = threads.clone();
    let fast = Recorder::new(
        Duration::ZERO,
        Box::new(move |_, _| {
            t2.lock().unwrap().push(os_thread_name());
            raw(amqp_disposition::AMQP_ACK)
        }),
    );
    consume(slow_q, &slow, 1);
    consume(fast_q, &fast, 1);
    seed(&slow_name, 0..3);
    wait_for("the slow callback to block", T, || {
        blocked.load(Ordering::SeqCst)
    });
    let begun = Instant::now();
    seed(&fast_name, 0..200);
    wait_for("the fast consumer's 200 deliveries", T, || {
        fast.finished() >= 200
    });
    assert!(
        blocked.load(Ordering::SeqCst),
        "the fast consumer's deliveries waited for the blocked callback ({:?})",
        begun.elapsed()
    );
    wait_for("the slow consumer's 3 deliveries", T, || {
        slow.finished() >= 3
    });
    let stats = cstats(c);
    assert_eq!(
        stats.consume_connects, 1,
        "the consume link was lost while a callback blocked (missed heartbeats?)"
    );
    let names = threads.lock().unwrap().clone();
    assert!(
        names.iter().all(|n| n.as_deref() == Some("ramqp-consumer")),
        "callbacks ran on {names:?}"
    );
    let seqs: Vec<u64> = fast.bodies().iter().filter_map(|b| parse_seq(b)).collect();
    assert_eq!(seqs, (0..200).collect::<Vec<_>>(), "in order, each once");
    fast.assert_no_panic();
    slow.assert_no_panic();
    conn.close_ok();
}

#[test]
fn deliveries_flow_after_the_consume_link_is_lost() {
    let _one = serial();
    let opts = "inline_delivery=true&reconnect_delay_ms=100&reconnect_delay_max_ms=500";
    let conn = ConnGuard::connect_ok(Some(opts));
    let c = conn.h();
    let name = unique_name("inline-reconnect");
    let q = open_simple(c, &name);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 2);
    seed(&name, 0..100);
    wait_for("the first 100", T, || rec.finished() >= 100);
    // Only the consume link carries a consumer: close it from the broker.
    let before = cstats(c).consume_connects;
    // Every connection of the node (this binary's tests run one at a time).
    let _ = ctl_try("close_all_connections test");
    wait_for("the consume link to come back", T, || {
        cstats(c).consume_connects > before
    });
    seed(&name, 100..200);
    wait_for("the next 100 after the reconnect", T, || {
        rec.unique_bodies() >= 200
    });
    conn.close_ok();
}

/// A busy link wakes its reader once a few KiB wait (`wire::coalesce`); what
/// comes short of that (the end of a burst, a lone message after it, the
/// broker's heartbeats) is read after the linger timer. Without that timer a
/// burst that ends with the link coalescing leaves the next message unread,
/// and the heartbeats too: the link is dropped as silent (1 s heartbeat) and
/// `consume_connects` counts the reconnect.
#[test]
fn the_end_of_a_busy_burst_is_delivered() {
    let _one = serial();
    let logs = LogLines::capture(amqp_log_level::AMQP_LOG_DEBUG);
    let conn = ConnGuard::connect(&uri_heartbeat_1s(), Some("inline_delivery=true"));
    let c = conn.h();
    assert_eq!(amqp_wait_connected(c, 10_000), amqp_result::AMQP_OK);
    let name = unique_name("inline-burst");
    let q = queue_open(c, &name, None, None, Some("prefetch=500"));
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    let (burst, rounds) = (4_000u64, 6u64);
    let mut sent = 0u64;
    for _ in 0..rounds {
        seed(&name, sent..sent + burst);
        sent += burst;
        wait_for("a burst", T, || rec.finished() >= sent);
        std::thread::sleep(Duration::from_millis(50));
        publish_ok(q, &seq_body(sent));
        sent += 1;
        wait_for("a lone delivery after the burst", T, || {
            rec.finished() >= sent
        });
    }
    let busy = |l: &(i32, String)| l.1.contains("consume link busy");
    assert!(
        logs.lines().iter().any(busy),
        "the bursts never made the link coalesce"
    );
    assert_eq!(
        cstats(c).consume_connects,
        1,
        "the consume link was dropped (its heartbeats unread?)"
    );
    let seqs: Vec<u64> = rec.bodies().iter().filter_map(|b| parse_seq(b)).collect();
    assert_eq!(seqs, (0..sent).collect::<Vec<_>>(), "in order, each once");
    rec.assert_no_panic();
    conn.close_ok();
}

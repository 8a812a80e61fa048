//! The connection's pool of callback threads against a live broker: more consumers than the
//! pool's bound (64), each consumer's deliveries in order and never on two threads at once, a
//! slow handler holding one thread while the others go on, and the threads ending with the
//! connection.
#![allow(unused_unsafe)]

mod common;

use common::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
const QUEUES: usize = 80;
const PER_QUEUE: u64 = 20;

/// Threads of this process named ramqp-consumer.
fn consumer_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "ramqp-consumer")
        .count()
}

#[test]
fn many_consumers_share_a_bounded_pool_in_order() {
    let c_guard = ConnGuard::connect_ok(None);
    let c = c_guard.h();
    let reader = Reader::new();
    let mut recs: Vec<(String, u64, Arc<Recorder>)> = Vec::new();
    for i in 0..QUEUES {
        let name = unique_name(&format!("pool{i}"));
        let q = open_simple(c, &name);
        let bodies: Vec<Vec<u8>> = (0..PER_QUEUE).map(seq_body).collect();
        reader.publish(&name, &bodies);
        // Queue 0's handler is slow (300 ms a delivery, 6 s in all): it holds one thread.
        let sleep = if i == 0 {
            Duration::from_millis(300)
        } else {
            Duration::from_millis(1)
        };
        recs.push((name, q, Recorder::acking(sleep)));
    }
    for (_, q, rec) in &recs {
        consume(*q, rec, 1);
    }
    let begun = Instant::now();
    wait_for("the fast consumers' deliveries", T, || {
        recs[1..].iter().all(|(_, _, r)| r.finished() >= PER_QUEUE)
    });
    let slow_done = recs[0].2.finished();
    assert!(
        slow_done < PER_QUEUE,
        "the 79 fast consumers took {:?}, as long as the slow one (it did {slow_done})",
        begun.elapsed()
    );
    let threads = consumer_threads();
    // inline_delivery (the default) keeps one thread more, free to read
    // the link.
    let inline = !std::env::var("RA_TEST_CONNECTION_OPTIONS")
        .unwrap_or_default()
        .contains("inline_delivery=false");
    assert!(
        (1..=64 + usize::from(inline)).contains(&threads),
        "{threads} ramqp-consumer threads for {QUEUES} consumers (bound: 64, +1 with inline_delivery)"
    );
    wait_for("the slow consumer", T, || recs[0].2.finished() >= PER_QUEUE);
    // Every ack reached the broker: one rabbitmqctl call for all the queues.
    wait_for("the broker to show every queue empty", T, || {
        let listed = list_queues(&["messages"]);
        recs.iter()
            .all(|(name, _, _)| listed.get(name).is_some_and(|v| v[0] == "0"))
    });
    let mut seen_threads = HashSet::new();
    for (name, q, rec) in &recs {
        assert_eq!(qstats(*q).acked, PER_QUEUE, "{name}");
        rec.assert_no_panic();
        assert_eq!(
            rec.max_current(),
            1,
            "{name}: two callbacks of one consumer at once"
        );
        let ds = rec.deliveries();
        let seqs: Vec<u64> = ds.iter().map(|d| parse_seq(&d.body).unwrap()).collect();
        assert_eq!(
            seqs,
            (0..PER_QUEUE).collect::<Vec<_>>(),
            "{name}: out of order"
        );
        for d in &ds {
            assert_eq!(d.queue, *q);
            assert_eq!(d.thread_name.as_deref(), Some("ramqp-consumer"));
            assert!(!d.in_tokio);
            seen_threads.insert(d.thread);
        }
    }
    assert!(
        seen_threads.len() > 1 && seen_threads.len() <= 64,
        "callbacks ran on {} threads",
        seen_threads.len()
    );
    c_guard.close_ok();
    // The pool's threads end with the connection's consumers.
    wait_for("the pool's threads to end", T, || consumer_threads() == 0);
}

//! Limits on what the broker hands us, against the real broker: a delivery over the receive
//! limit (`max_message_bytes`) is rejected unread (dead-lettered), not a reason to drop the
//! connection or to loop; close keeps its timeout while a callback is still running.
#![allow(unused_unsafe)]

mod common;

use common::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// A policy that dead-letters `queue`'s rejected messages into `dead` (policies, unlike queue
/// arguments, do not make the library's own declare inequivalent); removed on drop.
struct DeadLetterPolicy(String);

impl DeadLetterPolicy {
    fn new(queue: &str, dead: &str) -> DeadLetterPolicy {
        let name = format!("dlx-{queue}");
        let definition =
            format!(r#"{{"dead-letter-exchange":"","dead-letter-routing-key":"{dead}"}}"#);
        ctl(&format!(
            "set_policy --apply-to queues {name} '^{queue}$' '{definition}'"
        ));
        DeadLetterPolicy(name)
    }
}

impl Drop for DeadLetterPolicy {
    fn drop(&mut self) {
        let _ = ctl_try(&format!("clear_policy {}", self.0));
    }
}

#[test]
fn a_delivery_over_max_message_bytes_is_dead_lettered_unread() {
    let name = unique_name("too-large");
    let dead = format!("{name}-dead");
    let reader = Reader::new();
    reader
        .declare(
            &dead,
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
        )
        .expect("declare the dead-letter queue");
    let _policy = DeadLetterPolicy::new(&name, &dead);
    let c_guard = ConnGuard::connect_ok(Some("max_message_bytes=1000"));
    let c = c_guard.h();
    let q = open_simple(c, &name);
    let big = vec![b'x'; 5000];
    reader.publish(&name, &[seq_body(0), big.clone(), seq_body(1)]);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    wait_for("2 callbacks", T, || rec.finished() >= 2);
    wait_for("the large message in the dead-letter queue", T, || {
        reader.count(&dead).map(|(n, _)| n) == Some(1)
    });
    std::thread::sleep(Duration::from_millis(300));
    let seqs: Vec<u64> = rec
        .deliveries()
        .iter()
        .map(|d| parse_seq(&d.body).expect("only the small messages reach the callback"))
        .collect();
    assert_eq!(seqs, vec![0, 1]);
    let s = qstats(q);
    assert_eq!(
        (s.delivered, s.acked, s.rejected),
        (2, 2, 1),
        "{}",
        fmt_qstats(&s)
    );
    let cs = cstats(c);
    assert_eq!(cs.connects, 1, "the connection was kept");
    assert_eq!(cs.protocol_errors, 0);
    let got = reader.drain(&dead);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, big, "the broker kept it whole");
    rec.assert_no_panic();
    c_guard.close_ok();
    reader.delete(&name);
    reader.delete(&dead);
}

#[test]
fn close_keeps_its_timeout_while_a_callback_runs() {
    let reader = Reader::new();
    for timeout_ms in [0u32, 150, 400] {
        let c_guard = ConnGuard::connect_ok(None);
        let name = unique_name("close-bound");
        let q = open_simple(c_guard.h(), &name);
        reader.publish(&name, &[seq_body(0)]);
        let rec = Recorder::acking(Duration::from_secs(2));
        consume(q, &rec, 1);
        wait_for("the callback to start", T, || rec.started() >= 1);
        let t = Instant::now();
        let (r, _) = c_guard.close(timeout_ms);
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(u64::from(timeout_ms) + 60),
            "close({timeout_ms} ms) took {took:?} ({})",
            result_str(r)
        );
        wait_for("the callback to end", T, || rec.finished() >= 1);
        reader.delete(&name);
    }
}

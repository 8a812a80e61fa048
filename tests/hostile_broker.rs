//! The hostile-broker suite (issue 19): the AMQP engine survives any bytes a server sends.
//!
//! A hostile proxy (`tests/hostile/proxy.rs`) sits between the library and the REAL private
//! broker: it forwards the library's bytes unchanged and parses the broker's into frames, which a
//! scenario forwards, replaces, mutates or adds to; after the hostile act the proxy is
//! transparent and the library must recover through it. What every scenario checks (process
//! alive, call bounds, memory, nothing lost, reconnect after a protocol violation) is in
//! `tests/hostile/harness.rs`.
//!
//! `violation()` marks what the library defines as a protocol violation (README, Security):
//! broken framing, content out of order, a delivery tag out of sequence, a confirm of a tag never
//! published, a method a server never sends or that answers another call, tables nested too
//! deep. There the library must close the connection (501-505), count it in
//! `amqp_connection_stats.protocol_errors` and connect again. What it may ignore or answer
//! (channel.close of a channel never opened, a rewritten tune, a nack storm) only has to leave
//! the process alive, the bounds kept and nothing lost; each scenario prints a `HOSTILE` line
//! with what the library did (connects, resends, ...).
//!
//! An abort kills the whole test binary, so every scenario is its own test with a plain name:
//!   cargo test --release --test hostile_broker -- --test-threads=1 oversized_frame_16mib
//! `bash scripts/hostile.sh` runs the whole suite with its own broker and a long mutation run.
#![allow(unused_unsafe)]

mod common;
#[path = "hostile/frames.rs"]
mod frames;
#[path = "hostile/harness.rs"]
mod harness;
#[path = "hostile/mutate.rs"]
mod mutate;
#[path = "hostile/proxy.rs"]
mod proxy;
#[path = "hostile/random.rs"]
mod random;
#[path = "hostile/tampers.rs"]
mod tampers;

use common::*;
use frames::Frame;
use harness::{run, Scenario};
use proxy::Act;
use resilient_amqp::testing::publish_window;
use resilient_amqp::*;
use tampers::*;

// --- frames the library cannot read ----------------------------------------------------------

/// A frame header announcing 16 MiB (above any frame_max), then a few bytes.
#[test]
fn oversized_frame_16mib() {
    run(Scenario::new(
        "oversized-16m",
        after_first_confirm(|_, _| {
            Frame::new(1, 0, b"hostile".to_vec()).encode_with(16 << 20, 0xCE)
        }),
    )
    .violation());
}

/// A frame header announcing u32::MAX bytes.
#[test]
fn oversized_frame_4gib() {
    run(Scenario::new(
        "oversized-4g",
        after_first_confirm(|_, _| {
            Frame::new(1, 0, b"hostile".to_vec()).encode_with(u32::MAX, 0xCE)
        }),
    )
    .violation());
}

/// A real ack whose size field is one short: the end byte is not where it should be.
#[test]
fn undersized_frame() {
    run(Scenario::new(
        "undersized",
        once(|f, _| {
            f.is(frames::BASIC_ACK)
                .then(|| Act::Replace(f.encode_with(f.payload.len() as u32 - 1, 0xCE)))
        }),
    )
    .violation());
}

/// A real ack with end byte 0x00.
#[test]
fn wrong_frame_end() {
    run(Scenario::new(
        "wrong-end",
        once(|f, _| {
            f.is(frames::BASIC_ACK)
                .then(|| Act::Replace(f.encode_with(f.payload.len() as u32, 0)))
        }),
    )
    .violation());
}

/// A frame of type 9 (no such type), well formed otherwise.
#[test]
fn unknown_frame_type() {
    run(Scenario::new(
        "unknown-type",
        after_first_confirm(|_, _| Frame::new(9, 0, b"hostile".to_vec()).encode()),
    )
    .violation());
}

// --- content out of order or out of bounds ---------------------------------------------------

/// A body frame on the publishing channel with no delivery or header before it.
#[test]
fn body_without_header() {
    run(Scenario::new(
        "body-no-header",
        after_first_confirm(|ch, _| frames::body(ch, b"hostile body").encode()),
    )
    .violation());
}

/// The same on a consuming channel.
#[test]
fn body_without_header_consuming() {
    run(Scenario::new(
        "body-no-header-c",
        before_first_delivery(|ch, _, _| frames::body(ch, b"hostile body").encode()),
    )
    .consuming()
    .violation());
}

#[test]
fn body_size_2_pow_62() {
    run(Scenario::new("size-2p62", huge_body_size(1 << 62))
        .consuming()
        .violation());
}

#[test]
fn body_size_2_pow_40() {
    run(Scenario::new("size-2p40", huge_body_size(1 << 40))
        .consuming()
        .violation());
}

#[test]
fn body_size_100_gib() {
    run(Scenario::new("size-100g", huge_body_size(100 << 30))
        .consuming()
        .violation());
}

#[test]
fn body_size_2_pow_63() {
    run(Scenario::new("size-2p63", huge_body_size(1 << 63))
        .consuming()
        .violation());
}

#[test]
fn body_size_u64_max() {
    run(Scenario::new("size-max", huge_body_size(u64::MAX))
        .consuming()
        .violation());
}

/// A forged delivery whose body frame is longer than its header announced.
#[test]
fn body_beyond_announced_size() {
    run(Scenario::new(
        "body-beyond",
        before_first_delivery(|ch, ctag, _| {
            let mut v = frames::deliver(ch, ctag, 1 << 20, "hostile").encode();
            v.extend(frames::content_header(ch, 4).encode());
            v.extend(frames::body(ch, b"hostile!").encode());
            v
        }),
    )
    .consuming()
    .violation());
}

// --- deliveries the library never asked for --------------------------------------------------

/// A well-formed delivery for a consumer tag that does not exist. Forged into a real stream, its
/// tag is out of sequence whatever it is (the real deliveries use the same numbers), so this is a
/// violation; the unknown-consumer path itself (basic.reject requeue) is checked frame by frame
/// in `src/wire/probe/tests.rs`.
#[test]
fn delivery_unknown_consumer_tag() {
    run(Scenario::new(
        "unknown-ctag",
        before_first_delivery(|ch, _, _| {
            frames::delivery(ch, b"nobody-consumes-this", 1_000_000, b"hostile-ctag")
        }),
    )
    .consuming()
    .violation());
}

#[test]
fn delivery_tag_2_pow_28() {
    run(Scenario::new("tag-2p28", forged_tag(1, |_| 1 << 28))
        .consuming()
        .violation());
}

#[test]
fn delivery_tag_2_pow_40() {
    run(Scenario::new("tag-2p40", forged_tag(1, |_| 1 << 40))
        .consuming()
        .violation());
}

#[test]
fn delivery_tag_2_pow_62() {
    run(Scenario::new("tag-2p62", forged_tag(1, |_| 1 << 62))
        .consuming()
        .violation());
}

#[test]
fn delivery_tag_u64_max() {
    run(Scenario::new("tag-max", forged_tag(1, |_| u64::MAX))
        .consuming()
        .violation());
}

/// At the 20th real delivery, a forged one with the tag of the 10th (going backwards).
#[test]
fn delivery_tag_out_of_sequence() {
    run(Scenario::new(
        "tag-backwards",
        forged_tag(20, |real| real.saturating_sub(10).max(1)),
    )
    .consuming()
    .violation());
}

// --- confirms the library never asked for ----------------------------------------------------

/// basic.ack for a tag far beyond anything published on the channel.
#[test]
fn ack_for_tag_never_published() {
    run(Scenario::new(
        "ack-unpublished",
        after_first_confirm(|ch, published| frames::ack(ch, published + 100_000, false).encode()),
    )
    .violation());
}

/// basic.ack multiple=true beyond the window: would confirm everything in flight at once.
#[test]
fn ack_multiple_beyond_window() {
    run(Scenario::new(
        "ack-multi-beyond",
        after_first_confirm(|ch, published| {
            frames::ack(ch, published + publish_window(true, true, false) + 1, true).encode()
        }),
    )
    .violation());
}

/// Every ack of the broker turned into a nack (requeue=false) for 3 s.
#[test]
fn nack_storm() {
    run(Scenario::new(
        "nack-storm",
        tampers::nack_storm(std::time::Duration::from_secs(3)),
    ));
}

/// One ack of the broker dropped: the message stays unconfirmed while later ones are acked, and
/// the window stops moving once it is full. With publish_timeout_ms the channel is replaced
/// when that message's time is up: it is reported EXPIRED (it did arrive), the rest go on.
#[test]
fn lost_ack_with_publish_timeout() {
    run(Scenario::new(
        "lost-ack",
        once(|f, _| f.is(frames::BASIC_ACK).then(|| Act::Replace(Vec::new()))),
    )
    .queue_options("&publish_timeout_ms=1500"));
}

/// The same without a publish timeout: later messages are confirmed while the oldest waits,
/// and after 5 s of that hole the channel is replaced and the message sent again (it arrives
/// twice; nothing fails).
#[test]
fn lost_ack_without_publish_timeout() {
    run(Scenario::new(
        "lost-ack-hole",
        once(|f, _| f.is(frames::BASIC_ACK).then(|| Act::Replace(Vec::new()))),
    ));
}

/// A transient queue (`extra` appended to its options) reached through a proxy that drops
/// the broker's first basic.ack, with its reports recorded.
fn queue_losing_first_ack(
    prefix: &str,
    extra: &str,
) -> (proxy::HostileProxy, ConnGuard, u64, std::sync::Arc<Reports>) {
    let proxy = proxy::HostileProxy::start(
        harness::upstream(),
        once(|f, _| f.is(frames::BASIC_ACK).then(|| Act::Replace(Vec::new()))),
    );
    let conn = ConnGuard::connect(&harness::uri_via(proxy.port, ""), Some(harness::FAST));
    let q = queue_open(
        conn.h(),
        &unique_name(prefix),
        None,
        None,
        Some(&format!("durable=false&persistent=false{extra}")),
    );
    let reports = Reports::attach(q);
    (proxy, conn, q, reports)
}

/// A lone message into an idle queue (sent by the publishing thread itself, the publisher
/// asleep) whose ack is lost: the publish timeout still ends it, reported EXPIRED.
#[test]
fn lone_message_with_a_lost_ack_expires() {
    let _g = harness::serial();
    let (proxy, conn, q, reports) =
        queue_losing_first_ack("lone-lost-ack", "&publish_timeout_ms=800");
    // Idle first: the publisher is asleep when the message comes.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let t0 = std::time::Instant::now();
    publish_tagged_ok(q, b"lone", 1);
    let all = reports.wait_for(1, std::time::Duration::from_secs(10));
    let took = t0.elapsed();
    assert_eq!(proxy.acts(), 1, "the ack was not dropped");
    assert_eq!(
        all[0].status,
        amqp_report_status::AMQP_REPORT_EXPIRED,
        "{all:?}"
    );
    assert!(
        took >= std::time::Duration::from_millis(800) && took < std::time::Duration::from_secs(5),
        "reported after {took:?}"
    );
    // The queue goes on: the next message is confirmed.
    publish_tagged_ok(q, b"next", 2);
    let all = reports.wait_for(2, std::time::Duration::from_secs(10));
    assert_eq!(
        all[1].status,
        amqp_report_status::AMQP_REPORT_CONFIRMED,
        "{all:?}"
    );
    conn.close_ok();
}

/// A burst into an idle queue, without a publish timeout, whose first ack is lost. The
/// publishing thread sends the first messages itself while the publisher task sleeps with
/// nothing in flight. The lost ack may settle all of them (RabbitMQ acks with `multiple`), so
/// no other ack comes until more is sent: once 4 are in flight the task must take over and
/// send the rest (whose acks settle the first ones too), or the window and the buffer behind
/// it wait forever. Failed before the task was woken at that hand-over: 0 of 50 confirmed.
#[test]
fn lost_first_ack_of_a_burst_into_an_idle_queue() {
    let _g = harness::serial();
    let (proxy, conn, q, reports) = queue_losing_first_ack("burst-lost-ack", "");
    std::thread::sleep(std::time::Duration::from_millis(200));
    const N: u64 = 50;
    for tag in 1..=N {
        publish_tagged_ok(q, b"burst", tag);
    }
    // A lost ack that settles only the first message leaves a hole: 5 s (`HOLE_TIMEOUT`).
    let all = reports.wait_for(N as usize, std::time::Duration::from_secs(15));
    assert_eq!(proxy.acts(), 1, "the ack was not dropped");
    assert!(
        all.iter()
            .all(|r| r.status == amqp_report_status::AMQP_REPORT_CONFIRMED),
        "{all:?}"
    );
    conn.close_ok();
}

// --- methods out of place --------------------------------------------------------------------

/// channel.close for channel 999, which was never opened.
#[test]
fn channel_close_never_opened() {
    run(Scenario::new(
        "close-unopened",
        after_first_confirm(|_, _| {
            frames::channel_close(999, 406, "hostile: never opened").encode()
        }),
    ));
}

/// The real confirm.select-ok replaced by basic.qos-ok.
#[test]
fn confirm_select_answered_wrongly() {
    run(Scenario::new(
        "select-wrong",
        once(|f, _| {
            f.is(frames::CONFIRM_SELECT_OK)
                .then(|| Act::Replace(Frame::method(f.channel, frames::BASIC_QOS_OK, &[]).encode()))
        }),
    )
    .violation());
}

// --- connection.tune rewritten (the library then talks to the real broker) -------------------

#[test]
fn tune_frame_max_0() {
    run(Scenario::new("tune-fm0", tune(None, Some(0), None)));
}

#[test]
fn tune_frame_max_1() {
    run(Scenario::new("tune-fm1", tune(None, Some(1), None)));
}

#[test]
fn tune_frame_max_4095() {
    run(Scenario::new("tune-fm4095", tune(None, Some(4095), None)));
}

#[test]
fn tune_channel_max_0() {
    run(Scenario::new("tune-cm0", tune(Some(0), None, None)));
}

#[test]
fn tune_channel_max_1() {
    run(Scenario::new("tune-cm1", tune(Some(1), None, None)));
}

/// heartbeat 1 s proposed, and none asked for in the URI (heartbeat=0: the broker's wins).
#[test]
fn tune_heartbeat_1() {
    run(Scenario::new("tune-hb1", tune(None, None, Some(1))).query("heartbeat=0"));
}

// --- field arrays nested 1,400 deep (~7 KB) --------------------------------------------------

/// In the server properties of the real connection.start.
#[test]
fn nested_arrays_in_connection_start() {
    run(Scenario::new(
        "deep-start",
        once(|f, _| {
            f.is(frames::CONNECTION_START).then(|| {
                let deep = frames::nested_array(DEEP);
                Act::Replace(frames::start_with_entry(f, "hostile", &deep).encode())
            })
        }),
    )
    .violation());
}

/// In an unsolicited connection.start on channel 0, while publishing. (A well-formed one is
/// ignored, by design; one whose table nests too deep is a violation.)
#[test]
fn nested_arrays_unsolicited_on_channel_0() {
    let mut start: Option<Frame> = None;
    run(Scenario::new(
        "deep-ch0",
        once(move |f, _| {
            if f.is(frames::CONNECTION_START) {
                start = Some(f.clone());
            }
            if !f.is(frames::BASIC_ACK) {
                return None;
            }
            let deep = frames::nested_array(DEEP);
            let mut out = f.encode();
            out.extend(frames::start_with_entry(start.as_ref()?, "hostile", &deep).encode());
            Some(Act::Replace(out))
        }),
    )
    .violation());
}

/// As the arguments of a queue.declare appended after the real queue.declare-ok.
#[test]
fn nested_arrays_in_method_on_channel() {
    run(Scenario::new(
        "deep-channel",
        once(|f, _| {
            f.is(frames::QUEUE_DECLARE_OK).then(|| {
                let args = frames::table_with("hostile", &frames::nested_array(DEEP));
                let mut out = f.encode();
                out.extend(frames::queue_declare(f.channel, "hostile", &args).encode());
                Act::Replace(out)
            })
        }),
    )
    .violation());
}

// --- random mutation -------------------------------------------------------------------------

/// `RA_HOSTILE_ITERATIONS` random mutations (default 150) of the broker's side of the
/// conversation after the handshake, seeded (`RA_HOSTILE_SEED`; the seed is printed), while the
/// library publishes to one queue and consumes (requeueing everything) from another that the
/// independent reader seeded. What is asserted and why: `tests/hostile/mutate.rs`.
#[test]
fn random_mutation() {
    random::random_mutation();
}

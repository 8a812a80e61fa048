//! The reader's limits, frame by frame: what a broker may not do ends the
//! connection with connection.close and the right code; nothing it
//! announces allocates by itself.

use super::*;
use crate::wire::Failure;
use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame};
use amq_protocol::protocol::{basic, channel, connection, queue, AMQPClass};

const FRAME_MAX: usize = 4096;

fn method(channel: u16, m: AMQPClass) -> Vec<u8> {
    cookie_factory::gen_simple(gen_frame(&AMQPFrame::Method(channel, m)), Vec::new()).unwrap()
}

fn raw(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

fn deliver(channel: u16, tag: u64) -> Vec<u8> {
    method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: PROBE_CONSUMER_TAG.into(),
            delivery_tag: tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "rk".into(),
        })),
    )
}

fn header(channel: u16, body_size: u64) -> Vec<u8> {
    let mut p = vec![0, 60, 0, 0];
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    raw(2, channel, &p)
}

fn body(channel: u16, bytes: &[u8]) -> Vec<u8> {
    raw(3, channel, bytes)
}

fn message(channel: u16, tag: u64, bytes: &[u8]) -> Vec<u8> {
    let mut v = deliver(channel, tag);
    v.extend(header(channel, bytes.len() as u64));
    if !bytes.is_empty() {
        v.extend(body(channel, bytes));
    }
    v
}

fn confirm(channel: u16, tag: u64, multiple: bool) -> Vec<u8> {
    method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: tag,
            multiple,
        })),
    )
}

/// The code of the connection.close the probe wrote back, if any.
fn close_code(p: &ReaderProbe) -> Option<u16> {
    let out = p.conn.output.appending().frames().clone();
    let mut rest = &out[..];
    while let Ok((r, f)) = parse_frame(rest) {
        if let AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c))) = f {
            return Some(c.reply_code);
        }
        rest = r;
    }
    None
}

fn broken(bytes: &[u8]) -> (String, Option<u16>) {
    let mut p = ReaderProbe::new(FRAME_MAX, 3);
    let why = p.feed(bytes).expect_err("the connection must end");
    assert!(p.feed(&[]).is_err(), "it stays ended");
    let code = close_code(&p);
    (why, code)
}

#[test]
fn well_formed_deliveries_and_confirms_pass() {
    let mut p = ReaderProbe::new(FRAME_MAX, 3);
    let mut bytes = message(1, 1, b"one");
    bytes.extend(message(1, 2, b"two"));
    bytes.extend(message(2, 1, b""));
    bytes.extend(confirm(3, 5, true));
    bytes.extend(confirm(3, PROBE_PUBLISHED, false));
    for chunk in bytes.chunks(7) {
        p.feed(chunk).unwrap();
    }
    assert_eq!(p.deliveries(), 3);
    assert_eq!(p.confirms(), 2);
    assert_eq!(close_code(&p), None);
}

#[test]
fn delivery_tags_must_count_up_from_one() {
    for tags in [&[2u64][..], &[1, 1], &[1, 3], &[1 << 40], &[u64::MAX]] {
        let mut bytes = Vec::new();
        for &t in tags {
            bytes.extend(message(1, t, b"x"));
        }
        let (why, code) = broken(&bytes);
        assert!(why.contains("delivery tag"), "{tags:?}: {why}");
        assert_eq!(code, Some(503));
    }
}

#[test]
fn a_confirm_of_a_tag_never_published_ends_the_connection() {
    for multiple in [false, true] {
        let (why, code) = broken(&confirm(1, PROBE_PUBLISHED + 1, multiple));
        assert!(why.contains("confirm of delivery tag"), "{why}");
        assert_eq!(code, Some(503));
    }
}

#[test]
fn announced_body_sizes_allocate_nothing_and_over_the_limit_is_marked() {
    for size in [1u64 << 40, 1 << 62, u64::MAX, 100 << 30] {
        let mut p = ReaderProbe::new(FRAME_MAX, 3);
        let mut bytes = deliver(1, 1);
        bytes.extend(header(1, size));
        for _ in 0..50 {
            bytes.extend(body(1, &[7; 4000]));
        }
        p.feed(&bytes).unwrap();
        assert_eq!(p.deliveries(), 0);
    }
    // Just over the limit: read, dropped, handed on (to be rejected).
    let mut p = ReaderProbe::new(FRAME_MAX, 3);
    let mut bytes = deliver(1, 1);
    bytes.extend(header(1, PROBE_MAX_BODY + 1));
    let mut left = PROBE_MAX_BODY + 1;
    while left > 0 {
        let n = left.min(4000);
        bytes.extend(body(1, &vec![1; n as usize]));
        left -= n;
    }
    p.feed(&bytes).unwrap();
    assert_eq!(p.deliveries(), 1);
}

#[test]
fn malformed_frames_end_the_connection_with_501() {
    let mut bad_end = message(1, 1, b"x");
    let n = bad_end.len();
    bad_end[n - 1] = 0;
    let over = raw(1, 1, &vec![0; FRAME_MAX]);
    let unknown_type = raw(9, 1, b"");
    for bytes in [bad_end, over, unknown_type] {
        let (_, code) = broken(&bytes);
        assert_eq!(code, Some(501));
    }
}

#[test]
fn frames_out_of_order_end_the_connection_with_505() {
    for bytes in [body(1, b"x"), header(1, 3), {
        let mut v = deliver(1, 1);
        v.extend(confirm(1, 1, false));
        v
    }] {
        let (_, code) = broken(&bytes);
        assert_eq!(code, Some(505));
    }
}

#[test]
fn methods_a_server_never_sends_end_the_connection_with_503() {
    let declare = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: "q".into(),
        ..Default::default()
    }));
    for bytes in [
        method(1, declare.clone()),
        method(0, declare),
        method(
            2,
            AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                reason: "x".into(),
            })),
        ),
    ] {
        let (_, code) = broken(&bytes);
        assert_eq!(code, Some(503));
    }
}

#[test]
fn deeply_nested_tables_are_refused_without_recursing() {
    // connection.start whose server properties nest arrays 1,400 deep
    // (amq-protocol's parser overflowed the stack on this).
    let mut value = vec![b'A', 0, 0, 0, 0];
    for _ in 1..1_400 {
        let inner = value.clone();
        value = vec![b'A'];
        value.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        value.extend_from_slice(&inner);
    }
    let mut table = vec![1, b'k'];
    table.extend_from_slice(&value);
    let mut payload = vec![0, 10, 0, 10, 0, 9];
    payload.extend_from_slice(&(table.len() as u32).to_be_bytes());
    payload.extend_from_slice(&table);
    payload.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    let bytes = raw(1, 0, &payload);
    // On a small stack, as on any thread of the host.
    let (_, code) = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut p = ReaderProbe::new(131_072, 3);
            let why = p.feed(&bytes).expect_err("refused");
            (why, close_code(&p))
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(code, Some(502));
}

#[test]
fn a_frame_for_a_channel_never_opened_is_a_channel_error() {
    // A reply garbled onto a channel id never opened would leave its call
    // waiting forever (the random-mutation run found a confirm.select-ok
    // moved from channel 1 to 6): 504, and the connection is replaced.
    let mut p = ReaderProbe::new(FRAME_MAX, 3);
    let close = AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
        reply_code: 406,
        reply_text: "x".into(),
        class_id: 0,
        method_id: 0,
    }));
    p.feed(&message(1, 1, b"fine")).unwrap();
    let err = p.feed(&method(4, close)).unwrap_err();
    assert!(err.contains("504") && err.contains("never opened"), "{err}");
    assert_eq!(p.demux_slots(), 2, "no slot for a channel never opened");
}

#[test]
fn a_late_frame_for_a_closed_channel_is_dropped() {
    let mut p = ReaderProbe::new(FRAME_MAX, 3);
    p.close_channel(2);
    p.feed(&message(2, 1, b"late")).unwrap();
    p.feed(&message(1, 1, b"still fine")).unwrap();
    assert_eq!(p.deliveries(), 1);
}

#[test]
fn a_delivery_for_an_unknown_consumer_goes_back_to_the_queue() {
    let mut p = ReaderProbe::new(FRAME_MAX, 3);
    let mut bytes = method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "nobody".into(),
            delivery_tag: 1,
            redelivered: false,
            exchange: "".into(),
            routing_key: "rk".into(),
        })),
    );
    bytes.extend(header(1, 1));
    bytes.extend(body(1, b"x"));
    bytes.extend(message(1, 2, b"for the probe"));
    p.feed(&bytes).unwrap();
    assert_eq!(p.deliveries(), 1);
    let out = p.conn.output.appending().frames().clone();
    let (_, f) = parse_frame(&out[..]).expect("a frame was written back");
    assert_eq!(
        f,
        AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
                delivery_tag: 1,
                requeue: true
            }))
        )
    );
}

#[test]
fn a_frame_beyond_channel_max_ends_the_connection() {
    // The probe's channel_max is 2047.
    let (why, code) = broken(&confirm(0x8001, 1, false));
    assert!(why.contains("beyond channel_max"), "{why}");
    assert_eq!(code, Some(501));
}

#[test]
fn a_connection_close_from_the_broker_fails_every_channel_with_its_refusal() {
    // An unknown exchange type: RabbitMQ closes the whole connection (503).
    // The pending call and every channel must learn the broker's code and
    // text (the owner attributes the close to the queue whose declare was
    // pending), not a lost link.
    let mut p = ReaderProbe::new(FRAME_MAX, 3);
    let (tx, rx) = tokio::sync::oneshot::channel();
    p.channels[0].receivers().reply = Some(tx);
    let close = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: 503,
        reply_text: "COMMAND_INVALID - invalid exchange type 'x-typo'".into(),
        class_id: 40,
        method_id: 10,
    }));
    let why = p.feed(&method(0, close)).expect_err("the connection ends");
    assert!(why.contains("x-typo"), "{why}");
    let expected = Failure::ConnectionRefused {
        code: 503,
        text: "503 COMMAND_INVALID - invalid exchange type 'x-typo'".into(),
    };
    let pending = rx.blocking_recv().expect("the pending call is answered");
    assert_eq!(pending.unwrap_err(), expected);
    for ch in &p.channels {
        assert_eq!(ch.receivers().close_reason, Some(expected.clone()));
    }
    // A channel asked for afterwards fails the same way.
    assert_eq!(p.conn.allocate_channel().err(), Some(expected));
}

#[test]
fn a_forced_close_naming_no_method_is_a_lost_link() {
    // 320 CONNECTION_FORCED (close_all_connections, a shutdown) refuses nothing of ours.
    let mut p = ReaderProbe::new(FRAME_MAX, 1);
    let close = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: 320,
        reply_text: "CONNECTION_FORCED - shutdown".into(),
        class_id: 0,
        method_id: 0,
    }));
    let why = p.feed(&method(0, close)).expect_err("the connection ends");
    assert!(matches!(
        p.channels[0].receivers().close_reason,
        Some(Failure::Link(ref t)) if *t == why
    ));
}

#[test]
fn a_lost_link_still_fails_channels_as_a_link_failure() {
    let p = ReaderProbe::new(FRAME_MAX, 1);
    p.conn.die("I/O error: reset".into());
    assert_eq!(
        p.channels[0].receivers().close_reason,
        Some(Failure::Link("I/O error: reset".into()))
    );
}

/// A content header announcing `body_size`, `payload` bytes long in all
/// (properties are not parsed: the padding stands for large headers).
fn big_header(channel: u16, body_size: u64, payload: usize) -> Vec<u8> {
    let mut p = vec![0, 60, 0, 0];
    p.extend_from_slice(&body_size.to_be_bytes());
    p.resize(payload, 0x55);
    raw(2, channel, &p)
}

#[test]
fn a_content_header_over_frame_max_is_taken_in_up_to_the_header_bound() {
    // RabbitMQ does not split content headers: 60 KB of headers (x-death,
    // application headers) with frame_max 4096 was a 501 and a loop.
    for payload in [
        4096,
        60_000,
        codec::HEADER_FRAME_MAX - codec::FRAME_OVERHEAD,
    ] {
        let mut p = ReaderProbe::new(FRAME_MAX, 3);
        let mut bytes = deliver(1, 1);
        bytes.extend(big_header(1, 3, payload));
        bytes.extend(body(1, b"abc"));
        bytes.extend(message(1, 2, b"next"));
        for chunk in bytes.chunks(1000) {
            p.feed(chunk).unwrap();
        }
        assert_eq!(p.deliveries(), 2, "header of {payload}");
        assert_eq!(p.too_large(), 0, "header of {payload}");
        assert_eq!(close_code(&p), None);
    }
    // Other frames still end at frame_max.
    let (_, code) = broken(&raw(3, 1, &vec![0; FRAME_MAX]));
    assert_eq!(code, Some(501));
}

#[test]
fn a_content_header_over_the_header_bound_is_skipped_and_its_delivery_rejected() {
    let payload = codec::HEADER_FRAME_MAX; // one over the bound, with the overhead
    for body_size in [0u64, 5] {
        let mut p = ReaderProbe::new(FRAME_MAX, 3);
        let mut bytes = deliver(1, 1);
        bytes.extend(big_header(1, body_size, payload));
        if body_size > 0 {
            bytes.extend(body(1, &vec![1; body_size as usize]));
        }
        bytes.extend(message(1, 2, b"next"));
        for chunk in bytes.chunks(64 * 1024) {
            p.feed(chunk).unwrap();
            assert!(p.pending() < 64 * 1024, "the header is never buffered");
        }
        assert_eq!(p.deliveries(), 2, "body {body_size}");
        assert_eq!(
            p.too_large(),
            1,
            "body {body_size}: marked, to be rejected unread"
        );
        assert_eq!(close_code(&p), None);
    }
}

#[test]
fn an_announced_header_of_gigabytes_allocates_nothing() {
    let mut p = ReaderProbe::new(FRAME_MAX, 3);
    let mut bytes = deliver(1, 1);
    let mut h = big_header(1, 1, 64);
    h[3..7].copy_from_slice(&(codec::HEADER_SKIP_MAX as u32).to_be_bytes());
    bytes.extend(h);
    p.feed(&bytes).unwrap();
    for _ in 0..100 {
        p.feed(&[0x55; 16 * 1024]).unwrap();
        assert!(p.pending() < 1024);
    }
    assert_eq!(p.deliveries(), 0);
    // Beyond any message RabbitMQ takes: a garbled size, not a header.
    let mut h = big_header(1, 1, 64);
    h[3..7].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut bytes = deliver(1, 1);
    bytes.extend(h);
    let (why, code) = broken(&bytes);
    assert!(why.contains("exceeds frame_max"), "{why}");
    assert_eq!(code, Some(501));
}

#[test]
fn heartbeats_swallowed_by_a_skipped_header_are_no_sign_of_life() {
    // A header whose size was garbled (over the header bound) swallows
    // what follows. The broker's heartbeats alone must not keep the
    // connection alive for the gigabytes announced: the heartbeat check
    // must see silence and end it.
    let mut p = ReaderProbe::new(FRAME_MAX, 3);
    let mut h = big_header(1, 1, 64);
    h[3..7].copy_from_slice(&(256u32 << 20).to_be_bytes());
    let mut bytes = deliver(1, 1);
    bytes.extend(&h[..7 + 12]);
    p.feed(&bytes).unwrap();
    let before = p.signs_of_life();
    let heartbeat = raw(8, 0, &[]);
    for _ in 0..1000 {
        p.feed(&heartbeat).unwrap();
    }
    assert_eq!(p.signs_of_life(), before, "8-byte heartbeats count as life");
    // A real header streaming at link speed still counts.
    for _ in 0..8 {
        p.feed(&[0x55; 16 * 1024]).unwrap();
    }
    assert!(
        p.signs_of_life() > before,
        "a header streaming in is no sign of life"
    );
}

#[test]
fn a_skipped_content_header_must_still_end_with_the_frame_end() {
    let mut bytes = deliver(1, 1);
    let mut h = big_header(1, 0, codec::HEADER_FRAME_MAX);
    let n = h.len();
    h[n - 1] = 0;
    bytes.extend(h);
    let (why, code) = broken(&bytes);
    assert!(why.contains("bad frame end"), "{why}");
    assert_eq!(code, Some(501));
    // Out of order (no basic.deliver before it) is still a 505.
    let (_, code) = broken(&big_header(1, 0, codec::HEADER_FRAME_MAX));
    assert_eq!(code, Some(505));
}

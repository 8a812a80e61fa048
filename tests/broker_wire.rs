//! The engine's limits against the real broker: what the broker's refusals look like at the wire
//! level (a connection.close reaches the pending call as the broker's refusal), content headers
//! larger than frame_max, and the negotiated channel_max.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::testing::{wire_channel_max, wire_exchange_declare, WireFailure};

#[test]
fn an_unknown_exchange_type_fails_the_pending_declare_with_the_brokers_connection_close() {
    let name = unique_name("x-typo");
    let (declared, reason) =
        wire_exchange_declare(&uri(), &name, "x-typo").expect("connect and open a channel");
    match declared {
        Err(WireFailure::ConnectionRefused { code: 503, text }) => {
            assert!(text.contains("x-typo"), "the text names the type: {text}");
            assert!(text.starts_with("503 COMMAND_INVALID"), "{text}");
            assert_eq!(
                reason,
                Some(WireFailure::ConnectionRefused { code: 503, text }),
                "the channel's close reason is the same refusal"
            );
        }
        other => panic!("expected ConnectionRefused {{ code: 503, .. }}, got {other:?}"),
    }
}

#[test]
fn channel_max_is_at_most_2047_unless_the_uri_says_otherwise() {
    assert_eq!(wire_channel_max(&uri()).unwrap(), 2047);
    let low = format!("{}?channel_max=20", uri());
    assert_eq!(wire_channel_max(&low).unwrap(), 20);
}

#[test]
fn a_content_header_over_frame_max_is_delivered_once_without_dropping_the_connection() {
    // RabbitMQ does not split content headers: with frame_max=4096 a message with 60 KB of
    // headers comes as one header frame of 60 KB. It was a 501, a reconnect and a redelivery,
    // forever.
    let name = unique_name("big-header");
    let c_guard = ConnGuard::connect(&format!("{}?frame_max=4096", uri()), None);
    let c = c_guard.h();
    assert_eq!(
        resilient_amqp::amqp_wait_connected(c, 10_000),
        resilient_amqp::amqp_result::AMQP_OK
    );
    let q = open_simple(c, &name);
    let mut headers = lapin::types::FieldTable::default();
    for i in 0..60 {
        headers.insert(
            format!("h{i:02}").into(),
            lapin::types::AMQPValue::LongString(vec![b'v'; 1000].into()),
        );
    }
    let reader = Reader::new();
    reader.publish_with_headers(&name, b"the body", headers);
    let rec = Recorder::acking(std::time::Duration::ZERO);
    consume(q, &rec, 1);
    let t = std::time::Duration::from_secs(20);
    wait_for("the delivery", t, || rec.finished() >= 1);
    wait_for("the ack", t, || qstats(q).acked == 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(rec.bodies(), vec![b"the body".to_vec()], "delivered once");
    let s = cstats(c);
    assert_eq!(
        (s.connects, s.protocol_errors),
        (1, 0),
        "the connection was kept"
    );
    assert_eq!(queue_messages(&name), 0, "acked");
    c_guard.close_ok();
}

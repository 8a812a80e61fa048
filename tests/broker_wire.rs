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

//! Our own AMQP 0-9-1 engine: the connection, its channels, and the frames
//! of the data path. The hot path writes frames straight into one output
//! buffer and parses deliveries and confirms straight out of one input
//! buffer (lapin's task hand-off and allocations per frame cost about twice
//! rabbitmq-c's CPU per message); amq-protocol (lapin's protocol crate)
//! encodes and parses the rare methods.
//!
//! The lowest layer: it knows nothing of queues, buffers or options; it is
//! configured by `WireConfig` alone.

mod codec;
mod conn;

pub(crate) use amq_protocol::auth::{Credentials, SASLMechanism};
pub(crate) use amq_protocol::types::{AMQPValue, FieldTable};
pub(crate) use codec::PublishTarget;
pub(crate) use conn::{Confirm, Delivery, DeliverySink, WireChannel, WireConnection};
use std::time::Duration;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub(crate) struct WireConfig {
    pub host: String,
    pub port: u16,
    pub vhost: String,
    pub credentials: Credentials,
    pub mechanism: SASLMechanism,
    /// What we ask for in tune-ok; `None`: the broker's proposal.
    pub heartbeat: Option<u16>,
    pub frame_max: Option<u32>,
    pub channel_max: Option<u16>,
    /// Bound on TCP connect + handshake.
    pub connect_timeout: Duration,
}

/// How a failure on the wire is seen by us: the broker refused something on
/// a channel (soft error: 403, 404, 405, 406), refused the connection, or the
/// link itself failed (I/O, heartbeat, closed connection) and will be retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A channel-level refusal; the connection stays up.
    Refused { code: u16, text: String },
    /// A connection-level refusal (e.g. 403 ACCESS_REFUSED at login, 530 NOT_ALLOWED).
    ConnectionRefused { code: u16, text: String },
    /// Anything else: the link is gone or going; reconnecting is the answer.
    Link(String),
}

impl Failure {
    pub fn text(&self) -> &str {
        match self {
            Failure::Refused { text, .. } | Failure::ConnectionRefused { text, .. } => text,
            Failure::Link(text) => text,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

/// The AMQP 0-9-1 reply code names, for messages like "406 PRECONDITION_FAILED".
fn code_name(code: u16) -> String {
    let name = match code {
        311 => "CONTENT_TOO_LARGE",
        312 => "NO_ROUTE",
        313 => "NO_CONSUMERS",
        320 => "CONNECTION_FORCED",
        402 => "INVALID_PATH",
        403 => "ACCESS_REFUSED",
        404 => "NOT_FOUND",
        405 => "RESOURCE_LOCKED",
        406 => "PRECONDITION_FAILED",
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        541 => "INTERNAL_ERROR",
        _ => "",
    };
    if name.is_empty() {
        code.to_string()
    } else {
        format!("{code} {name}")
    }
}

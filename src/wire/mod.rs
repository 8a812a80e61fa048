//! Our own AMQP 0-9-1 engine: the connection, its channels, and the frames
//! of the data path. The hot path writes frames straight into one output
//! buffer and parses deliveries and confirms straight out of one input
//! buffer (lapin's task hand-off and allocations per frame cost about twice
//! rabbitmq-c's CPU per message); amq-protocol (lapin's protocol crate)
//! encodes and parses the rare methods.
//!
//! The lowest layer: it knows nothing of queues, buffers or options; it is
//! configured by `WireConfig` alone.
//!
//! By job: `handshake` opens a connection; `connection` runs it (its task,
//! heartbeats, death, channel ids, close); `output` is the shared output
//! buffer and the writer; `reader` reads and dispatches frames; `socket`
//! is what they read from and write to (TCP, or `tls`'s stream);
//! `assembly` puts deliveries together from their frames; `channel` is a
//! channel's calls, consumers, acks, publishes and confirms; `codec` the
//! frames themselves.

mod assembly;
mod channel;
mod channel_state;
mod coalesce;
mod codec;
mod connection;
mod handshake;
mod inbound;
mod lazy_read;
mod link_reader;
mod output;
pub(crate) mod probe;
pub(crate) mod props;
mod reader;
mod shared;
mod socket;
mod timer_fd;
mod tls;

pub(crate) use amq_protocol::auth::{Credentials, SASLMechanism};
use amq_protocol::protocol::{connection as conn_methods, AMQPClass, AMQPErrorKind};
pub(crate) use amq_protocol::types::{AMQPValue, FieldTable};
pub(crate) use assembly::Delivery;
pub(crate) use channel::{QueueFlags, WireChannel};
pub(crate) use channel_state::{Confirm, DeliverySink};
pub(crate) use coalesce::LINGER;
pub(crate) use codec::{Outgoing, PublishTarget};
pub(crate) use connection::{LinkReading, WireConnection};
pub(crate) use link_reader::{LinkReader, ReadHost, Turn};
pub(crate) use timer_fd::TimerFd;
pub(crate) use tls::{Tls, TlsSettings};

use crate::sync::lock;
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
    /// Bound on TCP connect + handshake (TLS's included).
    pub connect_timeout: Duration,
    /// The largest message body we take in (a receive limit): a delivery
    /// whose header announces more is read, dropped and handed on marked
    /// `too_large`, without allocating for it.
    pub max_body: u64,
    /// TLS (amqps): None for plain TCP.
    pub tls: Option<Tls>,
}

impl WireConfig {
    /// The channel limit we ask for in tune-ok (the broker may agree to
    /// less): the URI's `channel_max`, else 2047 (0: the broker's).
    pub fn proposed_channel_max(&self) -> u16 {
        match self.channel_max {
            Some(n) if n > 0 => n,
            _ => handshake::DEFAULT_CHANNEL_MAX,
        }
    }
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
    /// The broker broke the protocol while the connection opened (a
    /// `Violation` in the handshake); reconnecting (with backoff) is the
    /// answer, and it is counted.
    Protocol(String),
}

impl Failure {
    pub fn text(&self) -> &str {
        match self {
            Failure::Refused { text, .. } | Failure::ConnectionRefused { text, .. } => text,
            Failure::Link(text) | Failure::Protocol(text) => text,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

/// The broker broke the protocol (or a limit of ours): the connection ends
/// with connection.close(`code`, `text`), is counted, and is reconnected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub code: u16,
    pub text: String,
}

impl Violation {
    /// 501 FRAME_ERROR: a malformed frame.
    fn frame(text: impl Into<String>) -> Violation {
        Violation {
            code: 501,
            text: text.into(),
        }
    }
    /// 502 SYNTAX_ERROR: a frame whose fields do not parse.
    fn syntax(text: impl Into<String>) -> Violation {
        Violation {
            code: 502,
            text: text.into(),
        }
    }
    /// 503 COMMAND_INVALID: a method that makes no sense here.
    fn command_invalid(text: impl Into<String>) -> Violation {
        Violation {
            code: 503,
            text: text.into(),
        }
    }
    /// 504 CHANNEL_ERROR: a frame for a channel that is not open.
    fn channel_error(text: impl Into<String>) -> Violation {
        Violation {
            code: 504,
            text: text.into(),
        }
    }
    /// 505 UNEXPECTED_FRAME: a frame out of order.
    fn unexpected_frame(text: impl Into<String>) -> Violation {
        Violation {
            code: 505,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.text, code_name(self.code))
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

/// "406 PRECONDITION_FAILED - text", without saying the name twice.
fn describe_close(code: u16, text: &str) -> String {
    let name = code_name(code);
    match name.split_once(' ') {
        Some((_, short)) if text.starts_with(short) => format!("{code} {text}"),
        _ => format!("{name} - {text}"),
    }
}

/// A channel.close from the broker: a soft error, or a hard one.
fn channel_failure(code: u16, text: &str) -> Failure {
    let text = describe_close(code, text);
    match AMQPErrorKind::from_id(code) {
        Some(AMQPErrorKind::Hard(_)) => Failure::ConnectionRefused { code, text },
        _ => Failure::Refused { code, text },
    }
}

/// A reply to a call that answers another question.
fn wrong_reply(m: &AMQPClass) -> Violation {
    let (class, method) = (m.get_amqp_class_id(), m.get_amqp_method_id());
    Violation::command_invalid(format!(
        "method {class}.{method} in reply to another method"
    ))
}

/// A reply we did not ask for; a connection.close is the broker's refusal.
fn unexpected(m: &AMQPClass) -> Failure {
    match m {
        AMQPClass::Connection(conn_methods::AMQPMethod::Close(c)) => {
            let text = describe_close(c.reply_code, c.reply_text.as_str());
            Failure::ConnectionRefused {
                code: c.reply_code,
                text,
            }
        }
        other => Failure::Link(format!("unexpected reply from the broker: {other:?}")),
    }
}

//! A message from `amqp_publish` until its report: the body and what the
//! outbox tracks about it, and the report that ends it.

use super::bodies::Body;
use super::window::ByteLen;
use std::sync::Arc;

/// A message taken from the buffer: its body (which carries the caller's
/// tag and its publish time) and what happened to it since.
pub(crate) struct Message {
    pub body: Body,
    /// Times sent to the broker.
    pub sends: u16,
    /// Times the broker nacked it.
    pub nacks: u16,
    /// A basic.return for its own routing key came on the current send:
    /// its ack ends it as `Unroutable` (reset when sent again).
    pub returned: Option<u16>,
}

impl Message {
    /// `tag`: the caller's (`amqp_publish_tagged`), handed back in the
    /// report. `born_ms`: when it was published, in ms since the outbox's
    /// epoch; 0 unless the queue has a publish timeout (reading the clock
    /// costs a publish).
    #[cfg(test)]
    pub fn new(body: &[u8], tag: u64, born_ms: u32) -> Message {
        Message::from(Body::with_meta(tag, born_ms, 0, &[], body))
    }

    pub fn tag(&self) -> u64 {
        self.body.tag()
    }

    pub fn born_ms(&self) -> u32 {
        self.body.born_ms()
    }

    /// Its own routing key (None: the queue's) and its encoded properties
    /// (empty: the queue's defaults).
    #[inline]
    pub fn meta(&self) -> (Option<&[u8]>, &[u8]) {
        parse_meta(self.body.meta())
    }
}

/// A message's metadata, stored in front of its body: a byte saying
/// whether a routing key of its own follows (1) or not (0), the key as a
/// short string, then the property bytes (`wire::props`: flags and
/// fields, written as they are). A plain publish stores none.
pub(crate) fn encode_meta(out: &mut Vec<u8>, routing_key: Option<&[u8]>) {
    match routing_key {
        Some(k) => {
            out.extend_from_slice(&[1, k.len().min(255) as u8]);
            out.extend_from_slice(&k[..k.len().min(255)]);
        }
        None => out.extend_from_slice(&[0, 0]),
    }
}

/// The routing key and property bytes of `encode_meta`'s output.
#[inline]
pub(crate) fn parse_meta(meta: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match meta {
        [1, n, rest @ ..] if rest.len() >= *n as usize => {
            let (k, props) = rest.split_at(*n as usize);
            (Some(k), props)
        }
        [_, n, rest @ ..] if rest.len() >= *n as usize => (None, &rest[*n as usize..]),
        _ => (None, &[]),
    }
}

impl From<Body> for Message {
    fn from(body: Body) -> Message {
        Message {
            body,
            sends: 0,
            nacks: 0,
            returned: None,
        }
    }
}

impl ByteLen for Message {
    fn byte_len(&self) -> u64 {
        self.body.stored_len() as u64
    }
}

/// How a message ended. Every message published ends in exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The broker confirmed it (basic.ack).
    Confirmed,
    /// The broker nacked it more often than `publish_retries` allows.
    Nacked,
    /// The broker refused it (closed the channel on it, or refused the
    /// queue); the report has the broker's code and text.
    Refused,
    /// Larger than the broker accepts (its `max_message_size`).
    TooLarge,
    /// Not confirmed within the queue's `publish_timeout_ms`. It may still
    /// have reached the queue (a confirm lost with its connection).
    Expired,
    /// Still unconfirmed when the connection closed.
    Unsent,
    /// Published with a routing key of its own that no queue is bound to:
    /// the broker returned it (basic.return, mandatory) and dropped it.
    Unroutable,
}

/// A message's end, as the report callback sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Report {
    pub tag: u64,
    pub outcome: Outcome,
    pub attempts: u16,
    /// The broker's reply code for `Refused` and `TooLarge`, else 0.
    pub code: u16,
    /// Why, for every outcome but `Confirmed`.
    pub reason: Option<Arc<str>>,
}

/// Why messages failed: one per incident, shared by its reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub outcome: Outcome,
    pub code: u16,
    pub reason: Arc<str>,
}

impl Failure {
    pub fn new(outcome: Outcome, code: u16, reason: impl Into<Arc<str>>) -> Failure {
        Failure {
            outcome,
            code,
            reason: reason.into(),
        }
    }

    pub fn report(&self, m: &Message) -> Report {
        Report {
            tag: m.tag(),
            outcome: self.outcome,
            attempts: m.sends,
            code: self.code,
            reason: Some(self.reason.clone()),
        }
    }
}

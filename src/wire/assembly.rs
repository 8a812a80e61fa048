//! Content assembly: the frames of one channel that make a message, in
//! order: a content-carrying method (basic.deliver, basic.return), its
//! content header (with the body size), then body frames until the body is
//! whole. A pure state machine: no I/O, no locks; the reader owns one per
//! channel and feeds it every frame of that channel.
//!
//! Out of order is a protocol error (the spec's 505 UNEXPECTED_FRAME) and
//! ends the connection: a header or body with no content method before it,
//! a method (any) while content is incomplete, a body longer than its header
//! announced. All of them are found in one place, the last arm of
//! [`Assembly::step`].
//!
//! basic.get-ok also carries content, but we never send basic.get: the
//! reader refuses it before it gets here, so there is no state for it.

use super::codec::Deliver;

/// Room for a small body in the delivery's first allocation, so a message of
/// up to this size costs one allocation.
const SMALL_BODY: usize = 256;

/// One delivery: consumer tag, exchange, routing key, property bytes and
/// body in one allocation.
pub struct Delivery {
    /// consumer tag, exchange, routing key, properties, body.
    data: Vec<u8>,
    consumer_tag_len: usize,
    exchange_len: usize,
    routing_key_len: usize,
    properties_len: usize,
    pub delivery_tag: u64,
    pub redelivered: bool,
    /// The body size its header announced when that was over our limit, or
    /// the header's and body's sizes together when the header itself was
    /// over the header bound: the message was read and dropped, and must be
    /// rejected.
    pub too_large: Option<u64>,
}

impl Delivery {
    pub(super) fn consumer_tag(&self) -> &[u8] {
        &self.data[..self.consumer_tag_len]
    }
    pub fn exchange(&self) -> &[u8] {
        &self.data[self.consumer_tag_len..self.consumer_tag_len + self.exchange_len]
    }
    pub fn routing_key(&self) -> &[u8] {
        let at = self.consumer_tag_len + self.exchange_len;
        &self.data[at..at + self.routing_key_len]
    }
    /// The content header's property bytes (flags, then fields), checked
    /// by `props::checked` (empty if they did not parse).
    pub fn properties(&self) -> &[u8] {
        let at = self.consumer_tag_len + self.exchange_len + self.routing_key_len;
        &self.data[at..at + self.properties_len]
    }
    pub fn body(&self) -> &[u8] {
        let at = self.consumer_tag_len + self.exchange_len + self.routing_key_len;
        &self.data[at + self.properties_len..]
    }
}

/// One frame of a channel, as the assembly sees it.
#[derive(Clone, Copy)]
pub(super) enum Event<'a> {
    /// basic.deliver: content follows.
    Deliver(&'a Deliver<'a>),
    /// basic.return: content follows, and is dropped.
    Return,
    /// Any other method on the channel (no content).
    Method,
    /// A content header, with the body size it announces, the largest
    /// body we take in and its property bytes (`props::checked`).
    Header {
        body_size: u64,
        limit: u64,
        properties: &'a [u8],
    },
    /// A content header over the header bound (`codec::HEADER_FRAME_MAX`),
    /// skipped unread but for the body size it announces: the body is read
    /// and dropped, and the delivery handed on `too_large`.
    HugeHeader { body_size: u64, header_bytes: u64 },
    /// A body frame.
    Body(&'a [u8]),
}

/// What a frame did.
pub(super) enum Step {
    /// A method without content, while no content was pending: handle it.
    Method,
    /// Part of a message; more frames must follow.
    Incomplete,
    /// The last frame of a delivery.
    Complete(Delivery),
    /// The last frame of a returned message, dropped.
    Returned,
}

/// A frame out of order: the connection must end.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct OutOfOrder {
    frame: &'static str,
    state: &'static str,
}

impl std::fmt::Display for OutOfOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected {} {}", self.frame, self.state)
    }
}

/// Whose content is being read.
pub(super) enum Content {
    Deliver(Partial),
    Return,
}

/// A delivery's fields, and its body as it arrives.
pub(super) struct Partial {
    /// consumer tag + exchange + routing key + properties, then the body.
    data: Vec<u8>,
    consumer_tag_len: usize,
    exchange_len: usize,
    routing_key_len: usize,
    properties_len: usize,
    delivery_tag: u64,
    redelivered: bool,
    too_large: Option<u64>,
}

impl Partial {
    fn new(d: &Deliver<'_>) -> Partial {
        let head = d.consumer_tag.len() + d.exchange.len() + d.routing_key.len();
        let mut data = Vec::with_capacity(head + SMALL_BODY);
        data.extend_from_slice(d.consumer_tag);
        data.extend_from_slice(d.exchange);
        data.extend_from_slice(d.routing_key);
        Partial {
            data,
            consumer_tag_len: d.consumer_tag.len(),
            exchange_len: d.exchange.len(),
            routing_key_len: d.routing_key.len(),
            properties_len: 0,
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            too_large: None,
        }
    }

    /// Keeps the content header's property bytes, before the body.
    fn properties(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.properties_len = bytes.len();
    }

    /// Appends body bytes, `remaining` being what is due with them. Grows
    /// by doubling, never past the announced size (a body that was not all
    /// reserved up front ends without spare capacity).
    fn append(&mut self, bytes: &[u8], remaining: u64) {
        if self.too_large.is_some() {
            return;
        }
        if bytes.len() > self.data.capacity() - self.data.len() {
            let grow = (self.data.len().max(bytes.len()) as u64).min(remaining);
            self.data.reserve_exact(grow as usize);
        }
        self.data.extend_from_slice(bytes);
    }

    fn finish(self) -> Delivery {
        Delivery {
            data: self.data,
            consumer_tag_len: self.consumer_tag_len,
            exchange_len: self.exchange_len,
            routing_key_len: self.routing_key_len,
            properties_len: self.properties_len,
            delivery_tag: self.delivery_tag,
            redelivered: self.redelivered,
            too_large: self.too_large,
        }
    }
}

impl Content {
    fn properties(&mut self, bytes: &[u8]) {
        if let Content::Deliver(p) = self {
            p.properties(bytes);
        }
    }

    fn done(self) -> Step {
        match self {
            Content::Deliver(p) => Step::Complete(p.finish()),
            Content::Return => Step::Returned,
        }
    }
}

/// The content assembly of one channel.
#[derive(Default)]
pub(super) enum Assembly {
    /// Between messages: any method may come.
    #[default]
    Idle,
    /// After a content method: its content header must come next.
    AwaitingHeader(Content),
    /// After the header: body frames until `remaining` more bytes arrived.
    Body { content: Content, remaining: u64 },
}

impl Assembly {
    /// Takes the channel's next frame. After an error the assembly is idle
    /// again (what was pending is dropped); the caller ends the connection.
    pub(super) fn step(&mut self, event: Event<'_>) -> Result<Step, OutOfOrder> {
        // Transitions happen in place: a delivery's partial message is
        // written once and moved out only when complete (this runs for
        // every frame of the data path).
        match (&mut *self, event) {
            (Assembly::Idle, Event::Method) => Ok(Step::Method),
            (Assembly::Idle, Event::Deliver(d)) => {
                *self = Assembly::AwaitingHeader(Content::Deliver(Partial::new(d)));
                Ok(Step::Incomplete)
            }
            (Assembly::Idle, Event::Return) => {
                *self = Assembly::AwaitingHeader(Content::Return);
                Ok(Step::Incomplete)
            }
            (
                Assembly::AwaitingHeader(content),
                Event::HugeHeader {
                    body_size,
                    header_bytes,
                },
            ) => {
                // Never taken in: rejected unread, like a body over the
                // limit, its size being the header's and the body's.
                admit_body(content, body_size.saturating_add(header_bytes.max(1)), 0);
                if body_size == 0 {
                    return Ok(self.finish());
                }
                let content = std::mem::replace(content, Content::Return);
                *self = Assembly::Body {
                    content,
                    remaining: body_size,
                };
                Ok(Step::Incomplete)
            }
            (
                Assembly::AwaitingHeader(content),
                Event::Header {
                    body_size,
                    limit,
                    properties,
                },
            ) => {
                content.properties(properties);
                if body_size == 0 {
                    return Ok(self.finish());
                }
                admit_body(content, body_size, limit);
                let content = std::mem::replace(content, Content::Return);
                *self = Assembly::Body {
                    content,
                    remaining: body_size,
                };
                Ok(Step::Incomplete)
            }
            (Assembly::Body { content, remaining }, Event::Body(bytes))
                if bytes.len() as u64 <= *remaining =>
            {
                if let Content::Deliver(p) = content {
                    p.append(bytes, *remaining);
                }
                *remaining -= bytes.len() as u64;
                if *remaining == 0 {
                    Ok(self.finish())
                } else {
                    Ok(Step::Incomplete)
                }
            }
            // Everything else is out of order, in every state.
            (_, event) => {
                let err = out_of_order(self, &event);
                *self = Assembly::Idle;
                Err(err)
            }
        }
    }

    /// The message is complete: back to idle, with what it gave.
    fn finish(&mut self) -> Step {
        match std::mem::take(self) {
            Assembly::AwaitingHeader(content) | Assembly::Body { content, .. } => content.done(),
            Assembly::Idle => Step::Incomplete,
        }
    }
}

fn out_of_order(state: &Assembly, event: &Event<'_>) -> OutOfOrder {
    let frame = match event {
        Event::Deliver(_) => "basic.deliver",
        Event::Return => "basic.return",
        Event::Method => "method",
        Event::Header { .. } | Event::HugeHeader { .. } => "content header",
        Event::Body(_) => "body frame",
    };
    let state = match (state, event) {
        (Assembly::Idle, _) => "with no content method before it",
        (Assembly::AwaitingHeader(_), _) => "where a content header was due",
        (Assembly::Body { .. }, Event::Body(_)) => "longer than the body its header announced",
        (Assembly::Body { .. }, _) => "in the middle of a message body",
    };
    OutOfOrder { frame, state }
}

/// The one place a header's body size is accepted. Nothing is reserved from
/// it: the body grows as its bytes arrive, so a size the broker claims
/// never allocates by itself. A body over `limit` is read and dropped.
fn admit_body(content: &mut Content, body_size: u64, limit: u64) {
    if let Content::Deliver(p) = content {
        if body_size > limit {
            p.too_large = Some(body_size);
        }
    }
}

#[cfg(test)]
mod tests;

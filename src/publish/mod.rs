//! The publish side of a queue: the bounded buffer `amqp_publish` copies
//! into, and the publisher that drains it over the queue's channel with
//! publisher confirms.
//!
//! Path of a message: `Outbox::publish` -> `PublishBuffer::push` (lock-free,
//! bounded) -> `Outbox::run` on the runtime sends up to a window of
//! messages ahead of their confirms -> a message leaves memory only when the
//! broker acks it. A nack or a lost channel puts unconfirmed messages back,
//! in their original order, ahead of everything not yet sent.

mod bodies;
mod buffer;
mod publisher;
mod window;

pub(crate) use buffer::PublishBuffer;
pub(crate) use publisher::{window_limits, PublisherEnd};

use crate::error::{Error, ErrorKind, Result};
use bodies::Body;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where and how a queue's messages are published.
#[derive(Clone, Debug)]
pub(crate) struct PublishSettings {
    pub exchange: String,
    /// The exchange's routing key (the queue's name on the default exchange).
    pub routing_key: String,
    /// Delivery mode 2.
    pub persistent: bool,
    /// A message that reaches no queue comes back (basic.return) and the
    /// queue is declared again, instead of being confirmed and dropped.
    pub mandatory: bool,
    /// Messages and body bytes sent ahead of their confirms.
    pub window: (usize, u64),
    pub max_buffered: u64,
    pub max_buffered_bytes: u64,
    pub max_message_bytes: u64,
}

/// Publish counters; all monotonic but `in_flight`.
#[derive(Default)]
pub(crate) struct PublishStats {
    pub published: AtomicU64,
    pub confirmed: AtomicU64,
    pub resent: AtomicU64,
    pub nacked: AtomicU64,
    /// Gauge: sent, confirm outstanding.
    pub in_flight: AtomicU64,
}

/// A queue's messages from `amqp_publish` until the broker confirmed them.
pub(crate) struct Outbox {
    settings: PublishSettings,
    pub buffer: PublishBuffer,
    pub stats: PublishStats,
    /// Unconfirmed messages from an earlier channel, to be sent first.
    retry: Mutex<VecDeque<Body>>,
    /// Held by the one running publisher: a new session's publisher waits
    /// until the previous one has put its unconfirmed messages back.
    running: tokio::sync::Mutex<()>,
    closed: AtomicBool,
}

impl Outbox {
    pub fn new(settings: PublishSettings) -> Self {
        Outbox {
            buffer: PublishBuffer::new(settings.max_buffered, settings.max_buffered_bytes),
            settings,
            stats: PublishStats::default(),
            retry: Mutex::new(VecDeque::new()),
            running: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
        }
    }

    /// Copies `body` into the buffer; never touches the network.
    pub fn publish(&self, body: &[u8]) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed(
                "the connection is closing or has failed for good",
            ));
        }
        let max = self.settings.max_message_bytes;
        if body.len() as u64 > max {
            return Err(Error::new(
                ErrorKind::MessageTooLarge,
                format!(
                    "body of {} bytes exceeds max_message_bytes {max}",
                    body.len()
                ),
            ));
        }
        self.buffer.push(body)?;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Like `publish`, but when the buffer is full it waits up to `timeout`
    /// (`None`: no limit) for confirms to make room, instead of failing at
    /// once. Still `BufferFull` after the timeout (nothing stored), `Closed`
    /// as soon as the queue closes while waiting.
    pub fn publish_wait(&self, body: &[u8], timeout: Option<Duration>) -> Result<()> {
        let first = match self.publish(body) {
            Err(e) if e.kind == ErrorKind::BufferFull => e,
            done => return done,
        };
        if timeout == Some(Duration::ZERO) {
            return Err(first);
        }
        if body.len() as u64 > self.buffer.max_bytes() {
            return Err(Error::new(
                ErrorKind::BufferFull,
                format!(
                    "a body of {} bytes never fits max_buffered_bytes {}",
                    body.len(),
                    self.buffer.max_bytes()
                ),
            ));
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let outcome = self
            .buffer
            .wait_for_room(deadline, || match self.publish(body) {
                Err(e) if e.kind == ErrorKind::BufferFull => None,
                done => Some(done),
            });
        outcome.unwrap_or_else(|| {
            let ms = timeout.map_or(0, |t| t.as_millis());
            Err(Error::new(
                ErrorKind::BufferFull,
                format!("publish buffer still full after {ms} ms"),
            ))
        })
    }

    /// From now on `publish` returns `Closed`; producers waiting for room
    /// are woken to see it.
    pub fn close_for_publishing(&self) {
        self.closed.store(true, Ordering::Release);
        self.buffer.wake_room_waiters();
    }

    /// Messages not confirmed yet (waiting, in flight or to be resent).
    pub fn unconfirmed(&self) -> u64 {
        self.buffer.count()
    }
}

//! The publish side of a queue: the bounded buffer `amqp_publish` copies
//! into, and the publisher that drains it over the queue's channel with
//! publisher confirms.
//!
//! Path of a message: `Outbox::publish` -> `PublishBuffer::push` (lock-free,
//! bounded) -> `Outbox::run` on the runtime sends up to a window of
//! messages ahead of their confirms -> a message leaves memory only when the
//! broker acks it. A nack or a lost channel puts unconfirmed messages back,
//! in their original order, ahead of everything not yet sent.

mod auto_id;
mod bodies;
mod buffer;
mod carry;
mod ends;
mod expiry;
mod message;
mod publisher;
mod report;
mod report_pull;
mod spooled;
mod window;

pub(crate) use buffer::PublishBuffer;
pub(crate) use message::{encode_meta, Failure, Outcome, Report};
pub(crate) use publisher::{window_limits, PublisherEnd};
pub(crate) use report::{ReportFn, ReportThread};
pub(crate) use report_pull::{Polled, ReportPull};

use crate::error::{Error, ErrorKind, Result};
use crate::sync::lock;
use carry::Carry;
use expiry::expired;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Where and how a queue's messages are published.
#[derive(Clone, Debug)]
pub(crate) struct PublishSettings {
    /// The queue's name, for the log.
    pub queue: String,
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
    /// Nacks a message survives (resent after each); one more fails it.
    pub publish_retries: u16,
    /// A message not confirmed this long after `amqp_publish` fails
    /// (`Expired`); `None`: no limit.
    pub publish_timeout: Option<Duration>,
    /// The backoff before resending nacked messages: first step and cap.
    pub retry_delay: Duration,
    pub retry_delay_max: Duration,
    /// Every message without a message_id gets one (`auto_id`).
    pub auto_message_id: bool,
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
    /// Messages that ended in a failure report (nacked too often, refused,
    /// too large, expired or unsent at close).
    pub failed: AtomicU64,
    /// ... of which expired (`publish_timeout_ms`).
    pub expired: AtomicU64,
    /// ... of which the broker refused (incl. too large).
    pub refused: AtomicU64,
    /// ... of which the broker returned: unroutable with their own key.
    pub unroutable: AtomicU64,
}

const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const FAILED: u8 = 2;

/// Where a queue's reports go: a report function on the connection's
/// report thread, or a queue of reports the application polls.
#[derive(Clone)]
pub(crate) enum Reporting {
    Thread {
        callback: ReportFn,
        thread: Arc<ReportThread>,
    },
    Pull(Arc<ReportPull>),
}

/// A queue's messages from `amqp_publish` until their report.
pub(crate) struct Outbox {
    settings: PublishSettings,
    pub buffer: Arc<PublishBuffer>,
    pub stats: PublishStats,
    carry: Mutex<Carry>,
    /// The running publisher's state (None between runs).
    live: Mutex<Option<publisher::Live>>,
    /// The publishing threads send, and read the confirms of their link
    /// themselves (`publisher::here`): they try to send at any depth.
    reads_here: AtomicBool,
    /// Held by the one running publisher: a new session's publisher waits
    /// until the previous one has put its unconfirmed messages back.
    running: tokio::sync::Mutex<()>,
    /// OPEN, CLOSED (for good) or FAILED (the broker refused the queue).
    state: AtomicU8,
    /// Why it FAILED: what `amqp_publish` says.
    failure: Mutex<String>,
    reporting: RwLock<Option<Reporting>>,
    /// `Body::born_ms` counts from here.
    epoch: Instant,
    /// The broker's `max_message_size` once a refusal named it.
    broker_max: AtomicU64,
    /// Failures logged in the current incident (bits of `Outcome`): one
    /// line per incident, not per message; a confirm ends the incident.
    logged: AtomicU8,
    /// The queue option auto_message_id's ids, if on.
    auto_ids: Option<auto_id::AutoIds>,
    /// The queue option spool_dir's log, if on (`spooled`).
    spool: Option<Arc<crate::spool::Spool>>,
}

impl Outbox {
    pub fn new(settings: PublishSettings) -> Self {
        Outbox {
            auto_ids: settings.auto_message_id.then(auto_id::AutoIds::new),
            buffer: Arc::new(PublishBuffer::new(
                settings.max_buffered,
                settings.max_buffered_bytes,
            )),
            settings,
            stats: PublishStats::default(),
            carry: Mutex::new(Carry::default()),
            live: Mutex::new(None),
            reads_here: AtomicBool::new(false),
            running: tokio::sync::Mutex::new(()),
            state: AtomicU8::new(OPEN),
            failure: Mutex::new(String::new()),
            reporting: RwLock::new(None),
            epoch: Instant::now(),
            broker_max: AtomicU64::new(u64::MAX),
            logged: AtomicU8::new(0),
            spool: None,
        }
    }

    fn now_ms(&self) -> u32 {
        self.epoch.elapsed().as_millis() as u32
    }

    /// Copies `body` into the buffer; never touches the network.
    pub fn publish(&self, body: &[u8]) -> Result<()> {
        self.publish_tagged(body, 0)
    }

    /// `publish` with the caller's tag for the report.
    pub fn publish_tagged(&self, body: &[u8], tag: u64) -> Result<()> {
        self.publish_message(body, tag, &[])
    }

    /// Whether a message without a delivery mode of its own is persistent.
    pub fn persistent(&self) -> bool {
        self.settings.persistent
    }

    /// `publish_tagged` with metadata (`message::encode_meta`: a routing key
    /// of its own, encoded properties), stored in front of the body.
    pub fn publish_message(&self, body: &[u8], tag: u64, meta: &[u8]) -> Result<()> {
        let stored = self.store_stamped(body, tag, meta);
        self.hand_over();
        stored
    }

    fn store_stamped(&self, body: &[u8], tag: u64, meta: &[u8]) -> Result<()> {
        match &self.auto_ids {
            Some(ids) => ids.stamp(meta, self.settings.persistent, |meta| {
                self.store(body, tag, meta)
            }),
            None => self.store(body, tag, meta),
        }
    }

    /// Copies the message in (and onto the spool); the caller then calls
    /// `hand_over`, holding no lock of the buffer's.
    fn store(&self, body: &[u8], tag: u64, meta: &[u8]) -> Result<()> {
        match self.state.load(Ordering::Acquire) {
            OPEN => {}
            CLOSED => {
                return Err(Error::closed(
                    "the connection is closing or has failed for good",
                ))
            }
            _ => return Err(Error::new(ErrorKind::Broker, lock(&self.failure).clone())),
        }
        self.check_size(body.len() as u64, meta.len() as u64)?;
        let born = match self.settings.publish_timeout {
            Some(_) => self.now_ms(),
            None => 0,
        };
        match &self.spool {
            None => self.buffer.push_message(body, tag, born, 0, meta)?,
            Some(spool) => spool.append(
                tag,
                meta,
                body,
                || self.buffer.check_room((body.len() + meta.len()) as u64),
                |seq| self.buffer.push_message(body, tag, born, seq, meta),
            )?,
        }
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// After a push (also a failed one: a spool's sync can fail with the
    /// message stored, and a wake-up taken must not be lost): with the
    /// publisher idle or few messages in flight, this thread sends
    /// (`send_now`); an idle publisher it could not send for is woken.
    fn hand_over(&self) {
        let idle = self.buffer.take_idle();
        let sent = (idle
            || self.stats.in_flight.load(Ordering::Relaxed) < publisher::SEND_NOW_BELOW
            || self.reads_here.load(Ordering::Relaxed))
            && self.send_now();
        if idle && !sent {
            self.buffer.wake.notify_one();
        }
    }

    /// A body that can never be sent is an error now, not a full buffer
    /// forever or a refusal later.
    fn check_size(&self, len: u64, meta: u64) -> Result<()> {
        let too_large = |why: String| {
            Err(Error::new(
                ErrorKind::MessageTooLarge,
                format!("body of {len} bytes exceeds {why}"),
            ))
        };
        let max = self.settings.max_message_bytes;
        if len > max {
            return too_large(format!("max_message_bytes {max}"));
        }
        let broker = self.broker_max.load(Ordering::Relaxed);
        if len > broker {
            return too_large(format!("the broker's max_message_size {broker}"));
        }
        if len + meta > self.buffer.max_bytes() {
            return too_large(format!(
                "max_buffered_bytes {} (it could never be buffered)",
                self.buffer.max_bytes()
            ));
        }
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
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let outcome =
            self.buffer
                .wait_for_room(deadline, || match self.store_stamped(body, 0, &[]) {
                    Err(e) if e.kind == ErrorKind::BufferFull => None,
                    done => Some(done),
                });
        // Not under the room lock: sending can end messages (expired, too
        // large), and their release wakes room waiters under that lock.
        self.hand_over();
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
        self.state.store(CLOSED, Ordering::Release);
        self.buffer.wake_room_waiters();
    }

    pub fn publish_timeout(&self) -> Option<Duration> {
        self.settings.publish_timeout
    }

    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSED
    }

    /// Messages not confirmed yet (waiting, in flight or to be resent).
    pub fn unconfirmed(&self) -> u64 {
        // Ended messages whose reports wait to be polled keep their room,
        // but are not unconfirmed.
        let reported = self.report_pull().map_or(0, |p| p.held());
        self.buffer.count().saturating_sub(reported)
    }

    /// Sends the reports of this queue's messages to `reporting` from now on.
    pub fn set_reporting(&self, reporting: Option<Reporting>) {
        *self.reporting.write().unwrap_or_else(|p| p.into_inner()) = reporting;
    }

    /// The queue's pull-mode reports, if that is where they go.
    pub fn report_pull(&self) -> Option<Arc<ReportPull>> {
        match &*self.reporting.read().unwrap_or_else(|p| p.into_inner()) {
            Some(Reporting::Pull(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// The connection closed or failed for good: pull-mode report pollers
    /// learn it once they took what waits.
    pub fn end_reports(&self) {
        if let Some(p) = self.report_pull() {
            p.end();
        }
    }

    fn ends(&self) -> ends::Ends {
        let reporting = self
            .reporting
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        ends::Ends::new(reporting)
    }

    /// Whether the broker refused the queue (`fail_all`) and no channel has
    /// worked since.
    pub fn is_failed(&self) -> bool {
        self.state.load(Ordering::Acquire) == FAILED
    }

    /// The broker refused the queue: every message held fails with
    /// `failure` and later publishes return `AMQP_ERR_BROKER` with its text,
    /// until `recover`. Call only while no publisher runs.
    pub fn fail_all(&self, failure: &Failure) {
        *lock(&self.failure) = format!("queue '{}': {}", self.settings.queue, failure.reason);
        let _ = self
            .state
            .compare_exchange(OPEN, FAILED, Ordering::AcqRel, Ordering::Acquire);
        let n = self.drain(failure);
        error!(
            "queue '{}': {}; {n} message(s) failed, publishes are refused until a channel works again",
            self.settings.queue, failure.reason
        );
    }

    /// A channel works again after `fail_all`: publishes are taken again.
    pub fn recover(&self) {
        if self
            .state
            .compare_exchange(FAILED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            warn!(
                "queue '{}': works again; publishes are taken",
                self.settings.queue
            );
        }
    }

    /// The connection closed: what is left fails as `Unsent` (reported),
    /// once the last publisher has stopped (waits up to `wait`). Returns
    /// how many.
    pub fn abandon(&self, wait: Duration) -> u64 {
        let deadline = Instant::now() + wait;
        let _running = loop {
            match self.running.try_lock() {
                Ok(held) => break Some(held),
                Err(_) if Instant::now() >= deadline => break None,
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        let failure = Failure::new(
            Outcome::Unsent,
            0,
            "not confirmed when the connection closed",
        );
        self.drain(&failure)
    }

    /// Fails every message held (`carry` and the buffer) with `failure`.
    fn drain(&self, failure: &Failure) -> u64 {
        let mut ends = self.ends();
        let mut carry = lock(&self.carry);
        carry.suspects = 0;
        for m in carry.retry.drain(..) {
            ends.failed(m, failure);
        }
        drop(carry);
        while let Some(m) = self.buffer.pop() {
            ends.failed(m, failure);
        }
        let n = ends.count();
        self.finish(ends);
        n
    }

    /// Counts, reports and releases messages that ended.
    fn finish(&self, mut ends: ends::Ends) {
        if let Some(spool) = &self.spool {
            spool.forget(&mut ends.spooled, ends.spooled_bytes);
        }
        let s = &self.stats;
        let t = ends.tally();
        if t.confirmed > 0 {
            s.confirmed.fetch_add(t.confirmed, Ordering::Relaxed);
            if self.logged.load(Ordering::Relaxed) != 0 {
                self.logged.store(0, Ordering::Relaxed);
            }
        }
        if t.expired > 0 && self.first_of_incident(Outcome::Expired) {
            warn!(
                "queue '{}': {} message(s) not confirmed within publish_timeout_ms {}: failed (expired)",
                self.settings.queue,
                t.expired,
                self.settings.publish_timeout.unwrap_or_default().as_millis()
            );
        }
        if t.failed > 0 {
            s.failed.fetch_add(t.failed, Ordering::Relaxed);
            s.expired.fetch_add(t.expired, Ordering::Relaxed);
            s.refused.fetch_add(t.refused, Ordering::Relaxed);
            s.unroutable.fetch_add(t.unroutable, Ordering::Relaxed);
        }
        ends.hand_on(&self.buffer);
    }
}

impl Outbox {
    /// True once per incident for `outcome` (until a confirm).
    fn first_of_incident(&self, outcome: Outcome) -> bool {
        let bit = 1u8 << (outcome as u8);
        self.logged.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
}

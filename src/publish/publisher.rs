//! The publisher: drains a queue's buffer over its channel, keeping a
//! window of messages ahead of their confirms.

use super::carry::{Carry, Verdict};
use super::message::{self, Message, Outcome};
use super::window::ConfirmWindow;
use super::{lock, Outbox};
use crate::backoff;
use crate::wire::{Confirm, Failure, Outgoing, PublishTarget, WireChannel};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Messages sent ahead of their confirms. Below RabbitMQ's credit-flow
/// allowance between its reader, channel and queue processes (400 by
/// default): more in flight makes the broker's reader block in flow control
/// (docs/bench/HISTORY.md has the window sweeps).
const PUBLISH_WINDOW: usize = 256;
/// ... and at most this many body bytes, so large bodies do not pile up in
/// the broker (its flow control would stall the connection).
const PUBLISH_WINDOW_BYTES: u64 = 1 << 20;
/// The window where the broker confirms only after writing to disk
/// (durable queue + persistent messages, or a quorum queue): a deeper
/// pipeline covers the fsync wait.
const DISK_PUBLISH_WINDOW: usize = 1024;
const DISK_PUBLISH_WINDOW_BYTES: u64 = 4 << 20;

/// The window for a queue, overridable for benchmarking
/// (RESILIENT_AMQP_WINDOW=count,bytes).
pub(crate) fn window_limits(to_disk: bool) -> (usize, u64) {
    let parsed = std::env::var("RESILIENT_AMQP_WINDOW").ok().and_then(|v| {
        let (c, b) = v.split_once(',')?;
        Some((c.parse().ok()?, b.parse().ok()?))
    });
    parsed.unwrap_or(if to_disk {
        (DISK_PUBLISH_WINDOW, DISK_PUBLISH_WINDOW_BYTES)
    } else {
        (PUBLISH_WINDOW, PUBLISH_WINDOW_BYTES)
    })
}

/// Why a publisher stopped.
pub(crate) enum PublisherEnd {
    /// `stop` resolved: the connection generation ended (lost, or closing).
    LinkDown,
    /// The queue disappeared (deleted by someone): reopen and declare again.
    TopologyLost(String),
    /// A publish or confirm failed: the channel (or the link) broke. A
    /// broker refusal says why (`Failure::Refused`).
    ChannelLost(Failure),
    /// The broker closed the channel on the one message in flight: it
    /// failed (reported) and the others go on at once on a new channel.
    Poisoned(String),
    /// The oldest message in flight had no confirm within the publish
    /// timeout: the channel is presumed stuck and replaced.
    Stuck(String),
}

/// While messages are in flight, pushes do not wake the publisher (the
/// next confirm does, and it sends what came meanwhile in one batch); if no
/// confirm comes, it looks at the buffer again after this long.
const NUDGE: Duration = Duration::from_millis(5);

/// RabbitMQ confirms a queue's messages in order: a message still waiting
/// this long while a later one was confirmed lost its confirm (the channel
/// is replaced and the message sent again). Without a publish timeout, a
/// lost confirm would otherwise hold the window forever.
const HOLE_TIMEOUT: Duration = Duration::from_secs(5);

/// One run's state besides the outbox: what it sends on and what it holds.
struct Run<'a> {
    ch: &'a WireChannel,
    target: PublishTarget<'a>,
    window: ConfirmWindow<Message>,
    carry: Carry,
    confirms: Vec<Confirm>,
    /// When the window's front last moved (or the run began): a channel
    /// whose front does not move for the publish timeout is stuck.
    progress: Instant,
}

impl Outbox {
    /// Drains the buffer over `ch` until the channel fails or `stop`
    /// resolves (this channel's connection generation is over).
    /// Unconfirmed messages are kept for the next run.
    ///
    /// Frames are appended to the connection's output in batches (one lock,
    /// one writer wake-up for up to the whole window), in buffer order, so
    /// the wire order is the publish order. The window (`ConfirmWindow`)
    /// keeps the delivery tags and what the broker settled; this loop only
    /// moves messages between the buffer, the carry and the window, and
    /// waits.
    pub async fn run(&self, ch: &WireChannel, stop: impl Future<Output = ()>) -> PublisherEnd {
        let _running = self.running.lock().await;
        let mut stop = std::pin::pin!(stop);
        let (max_count, max_bytes) = self.settings.window;
        let mut run = Run {
            ch,
            target: PublishTarget {
                exchange: self.settings.exchange.as_bytes(),
                routing_key: self.settings.routing_key.as_bytes(),
                persistent: self.settings.persistent,
                mandatory: self.settings.mandatory,
            },
            window: ConfirmWindow::new(max_count, max_bytes),
            carry: std::mem::take(&mut *lock(&self.carry)),
            confirms: Vec::new(),
            progress: Instant::now(),
        };
        let end = loop {
            if let Err(why) = self.fill(&mut run) {
                break PublisherEnd::ChannelLost(why);
            }
            ch.take_confirms(&mut run.confirms);
            if run.confirms.is_empty() {
                if let Some(end) = self.wait(&run, stop.as_mut()).await {
                    break end;
                }
                continue;
            }
            if let Some(why) = self.apply_confirms(&mut run) {
                break PublisherEnd::TopologyLost(why);
            }
        };
        self.put_back(run, end)
    }

    /// Sends what the window has room for, resends first, in one batch;
    /// nothing while a nack backoff runs, one at a time while isolating.
    /// Err: the channel is closed.
    fn fill(&self, run: &mut Run<'_>) -> Result<(), Failure> {
        let Run {
            ch,
            target,
            window,
            carry,
            progress,
            ..
        } = run;
        if carry.backing_off(Instant::now())
            || !carry.may_send(window)
            || (carry.retry.is_empty() && self.buffer.count() <= window.len() as u64)
        {
            return Ok(());
        }
        let timeout = self.settings.publish_timeout;
        let now = timeout.map_or(0, |_| self.now_ms());
        let broker_max = self.broker_max.load(Ordering::Relaxed);
        let mut ends = self.ends();
        let mut resent = 0u64;
        // The publish timeout of a message sent into an empty window counts
        // from now, not from the last confirm before an idle spell.
        if window.is_empty() {
            *progress = Instant::now();
        }
        let sent = ch.start_publish(*target).map(|mut batch| {
            let limits = (broker_max, batch.property_room());
            while carry.may_send(window) {
                let Some(mut msg) = carry.next(|| self.buffer.pop()) else {
                    break;
                };
                if let Some(f) = self.unsendable(&msg, now, limits) {
                    carry.dropped();
                    ends.failed(msg, &f);
                    continue;
                }
                if msg.sends > 0 {
                    resent += 1;
                }
                msg.sends = msg.sends.saturating_add(1);
                msg.returned = None;
                let (routing_key, properties) = msg.meta();
                let out = Outgoing {
                    routing_key,
                    properties,
                };
                batch.publish(out, &msg.body);
                window.push(msg);
            }
        });
        if resent > 0 {
            self.stats.resent.fetch_add(resent, Ordering::Relaxed);
        }
        self.finish(ends);
        sent?;
        self.stats
            .in_flight
            .store(window.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Why `msg` must not be sent: its publish timeout passed, it is
    /// larger than the broker said it takes, or its properties do not fit
    /// a content header frame of this connection.
    fn unsendable(
        &self,
        msg: &Message,
        now: u32,
        (broker_max, property_room): (u64, usize),
    ) -> Option<message::Failure> {
        if let Some(t) = self.settings.publish_timeout {
            if super::expired(msg, now, t) {
                return Some(self.expiry(t));
            }
        }
        let properties = msg.meta().1.len();
        if properties > property_room {
            return Some(message::Failure::new(
                Outcome::TooLarge,
                0,
                format!(
                    "its properties ({properties} bytes encoded) exceed what a content header \
                     frame holds on this connection ({property_room} bytes: frame_max)"
                ),
            ));
        }
        if msg.body.len() as u64 > broker_max {
            return Some(message::Failure::new(
                Outcome::TooLarge,
                406,
                format!(
                    "body of {} bytes exceeds the broker's max_message_size {broker_max}",
                    msg.body.len()
                ),
            ));
        }
        None
    }

    /// No confirms arrived: sleeps until a push, a confirm, the end of a
    /// nack backoff, the oldest message's publish timeout or `stop`.
    /// Some: the run is over.
    async fn wait(
        &self,
        run: &Run<'_>,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<PublisherEnd> {
        let ch = run.ch;
        if !ch.is_open() {
            let why = ch
                .close_reason()
                .unwrap_or_else(|| Failure::Link("channel closed".into()));
            return Some(PublisherEnd::ChannelLost(why));
        }
        let overdue = self.front_deadline(run);
        if let Some((at, why)) = &overdue {
            if *at <= Instant::now() {
                return Some(PublisherEnd::Stuck(why.clone()));
            }
        }
        let overdue = overdue.map(|(at, _)| at);
        let may_send = run.carry.resume_at.is_none() && run.carry.may_send(&run.window);
        // Pushes do not wake a publisher with messages in flight: a timer
        // does, if no confirm came first (a lost one, or one the broker
        // sends late), so new messages never wait for a confirm.
        let nudge = may_send.then(|| Instant::now() + NUDGE);
        let wake_at = [run.carry.resume_at, overdue, nudge]
            .into_iter()
            .flatten()
            .min();
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        if run.window.is_empty() && run.carry.resume_at.is_none() {
            // Nothing in flight: sleep until a push or a link change.
            if !self.buffer.set_idle_if_empty() {
                return None;
            }
            tokio::select! {
                _ = self.buffer.wake.notified() => {}
                _ = ch.confirms_changed() => {}
                _ = &mut stop => return Some(PublisherEnd::LinkDown),
            }
        } else {
            tokio::select! {
                biased;
                _ = ch.confirms_changed() => {}
                _ = self.buffer.wake.notified(), if may_send => {}
                _ = sleep => {}
                _ = &mut stop => return Some(PublisherEnd::LinkDown),
            }
        }
        None
    }

    /// When the channel counts as stuck, and why: messages in flight and no
    /// confirm moved the window's front for the publish timeout, or for
    /// `HOLE_TIMEOUT` while a later message was confirmed.
    fn front_deadline(&self, run: &Run<'_>) -> Option<(Instant, String)> {
        run.window.front()?;
        let timeout = self.settings.publish_timeout.map(|t| {
            let why = format!("no confirm within publish_timeout_ms {}", t.as_millis());
            (run.progress + t, why)
        });
        let hole = run.window.has_hole().then(|| {
            let why = format!(
                "a confirm is missing: later messages were confirmed, the oldest not within {HOLE_TIMEOUT:?}"
            );
            (run.progress + HOLE_TIMEOUT, why)
        });
        match (timeout, hole) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Applies the confirms taken, in arrival order, then releases the
    /// settled ones from the front of the window: acked ones are confirmed;
    /// nacked ones go to the front of the retry queue, in order, after a
    /// backoff, or fail once nacked more than `publish_retries` times.
    /// Some: a `TopologyLost`, with nothing after it applied.
    fn apply_confirms(&self, run: &mut Run<'_>) -> Option<String> {
        let (nacked, lost) = take_confirms(run);
        if nacked > 0 {
            self.stats.nacked.fetch_add(nacked, Ordering::Relaxed);
        }
        let mut ends = self.ends();
        let retries = self.settings.publish_retries;
        let too_often = || {
            message::Failure::new(
                Outcome::Nacked,
                0,
                format!("nacked by the broker {} times", u32::from(retries) + 1),
            )
        };
        let (mut resend, mut failed, mut acked) = (Vec::new(), None, false);
        let carry = &mut run.carry;
        let before = run.window.len();
        run.window.release_settled_with(|mut msg, ack| {
            match carry.released(&mut msg, ack, retries) {
                Verdict::Confirmed if msg.returned.is_some() => {
                    acked = true;
                    let f = unroutable(&msg);
                    ends.failed(msg, &f);
                }
                Verdict::Confirmed => {
                    acked = true;
                    ends.confirmed(msg);
                }
                Verdict::Failed => ends.failed(msg, failed.get_or_insert_with(too_often)),
                Verdict::Resend => resend.push(msg),
            }
        });
        if run.window.len() < before {
            run.progress = Instant::now();
        }
        if ends.tally().unroutable > 0 && self.first_of_incident(Outcome::Unroutable) {
            warn!(
                "queue '{}': {} message(s) published with a routing key of their own came back unroutable (reported, counted in unroutable)",
                self.settings.queue,
                ends.tally().unroutable
            );
        }
        if let Some(f) = failed
            .as_ref()
            .filter(|_| self.first_of_incident(Outcome::Nacked))
        {
            warn!(
                "queue '{}': {} message(s) {}: failed (publish_retries {})",
                self.settings.queue,
                ends.tally().failed,
                f.reason,
                retries
            );
        }
        let (base, max) = (self.settings.retry_delay, self.settings.retry_delay_max);
        let streak = carry.nack_streak;
        let nacked = resend.len();
        let began = carry.resend(resend, acked, Instant::now(), |step| {
            backoff::delay(base, max, step)
        });
        if let (Some(delay), 0) = (began, streak) {
            warn!(
                "queue '{}': the broker nacked {nacked} message(s); resending after {delay:?} (up to publish_retries {retries} times each)",
                self.settings.queue
            );
        }
        self.finish(ends);
        self.stats
            .in_flight
            .store(run.window.len() as u64, Ordering::Relaxed);
        lost
    }

    /// The run is over: confirmed ones behind an unconfirmed one are done;
    /// the rest go back in order, ahead of what was never sent. When the
    /// broker closed the channel on a publish, the messages in flight are
    /// suspects: alone in flight, the message is the culprit and fails;
    /// with several, they are sent one at a time next time.
    fn put_back(&self, mut run: Run<'_>, end: PublisherEnd) -> PublisherEnd {
        let mut ends = self.ends();
        let mut kept = Vec::new();
        run.window.take_all_with(|msg, acked| {
            if acked {
                ends.confirmed(msg)
            } else {
                kept.push(msg)
            }
        });
        let mut end = end;
        // 403: the queue is refused as a whole (the session fails it);
        // 404: its exchange is gone (declared again on the new channel).
        let refused = match &end {
            PublisherEnd::ChannelLost(Failure::Refused { code, text })
                if !matches!(code, 403 | 404) =>
            {
                Some((*code, text.clone()))
            }
            _ => None,
        };
        if let Some(culprit) = run.carry.channel_lost(kept, refused.is_some()) {
            if let Some((code, text)) = refused {
                ends.failed(culprit, &self.refusal(code, &text));
                end = PublisherEnd::Poisoned(text);
            }
        }
        self.finish(ends);
        self.stats.in_flight.store(0, Ordering::Relaxed);
        *lock(&self.carry) = std::mem::take(&mut run.carry);
        end
    }

    /// The failure of a message the broker closed the channel on; a size
    /// refusal teaches the broker's limit (RabbitMQ: "message size N is
    /// larger than configured max size M").
    fn refusal(&self, code: u16, text: &str) -> message::Failure {
        let max = text
            .split_once("max size ")
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok());
        match max {
            Some(max) => {
                self.broker_max.store(max, Ordering::Relaxed);
                message::Failure::new(Outcome::TooLarge, code, text)
            }
            None => message::Failure::new(Outcome::Refused, code, text),
        }
    }
}

/// The failure of a message the broker returned for its own routing key.
fn unroutable(m: &Message) -> message::Failure {
    let key = String::from_utf8_lossy(m.meta().0.unwrap_or_default()).into_owned();
    let code = m.returned.unwrap_or(312);
    message::Failure::new(
        Outcome::Unroutable,
        code,
        format!("returned by the broker ({code}): no queue is bound to routing key '{key}'"),
    )
}

/// A return for a message's own key: the first pending message sent with
/// that key and not returned yet is the one (the broker returns in publish
/// order, before the message's ack). Its ack then ends it as unroutable.
fn mark_returned(window: &mut ConfirmWindow<Message>, code: u16, routing_key: &[u8]) {
    let returned = window
        .pending_mut()
        .find(|m| m.returned.is_none() && m.meta().0 == Some(routing_key));
    if let Some(m) = returned {
        m.returned = Some(code);
    }
}

/// Marks the window by the confirms taken, in arrival order: (messages
/// nacked, the reason if the queue is gone, with nothing after it applied).
fn take_confirms(run: &mut Run<'_>) -> (u64, Option<String>) {
    let mut lost = None;
    let mut nacked = 0;
    for c in run.confirms.drain(..) {
        match c {
            Confirm::Settled {
                tag,
                multiple,
                nack,
            } => nacked += run.window.settle(tag, multiple, nack),
            Confirm::Returned {
                routing_key, code, ..
            } if routing_key != run.target.routing_key => {
                mark_returned(&mut run.window, code, &routing_key)
            }
            Confirm::Returned { text, .. } => {
                // The queue's own key: the queue is gone. Nothing after
                // this may be applied: the message's ack follows.
                lost = Some(format!(
                    "the broker returned a message: {text} (its queue was deleted?)"
                ));
                break;
            }
            Confirm::TopologyLost(why) => {
                lost = Some(why);
                break;
            }
        }
    }
    (nacked, lost)
}

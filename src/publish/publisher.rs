//! The publisher: drains a queue's buffer over its channel, keeping a
//! window of messages ahead of their confirms.

mod confirms;
mod here;

use super::carry::Carry;
use super::message::{self, Message, Outcome};
use super::window::ConfirmWindow;
use super::{lock, Outbox};
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

/// With fewer messages than this in flight, the publishing thread sends a
/// message itself (`Outbox::send_now`) instead of leaving it to the
/// publisher's next confirm: at low and moderate rates a message goes out
/// at once, one write per message; under load the window is fuller than
/// this and the publisher sends in batches as confirms arrive.
pub(super) const SEND_NOW_BELOW: u64 = 4;

/// RabbitMQ confirms a queue's messages in order: a message still waiting
/// this long while a later one was confirmed lost its confirm (the channel
/// is replaced and the message sent again). Without a publish timeout, a
/// lost confirm would otherwise hold the window forever.
const HOLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A run's state. It lives in the outbox (`Outbox::live`) while the run
/// lasts, so that the publisher task and a publishing thread that finds the
/// publisher idle (`Outbox::send_now`) can take turns on it.
pub(super) struct Live {
    ch: WireChannel,
    window: ConfirmWindow<Message>,
    carry: Carry,
    confirms: Vec<Confirm>,
    /// Confirms a publishing thread applied (`here`) ended the run: why.
    lost: Option<String>,
    /// When the window's front last moved (or a message went into an empty
    /// window): a channel whose front does not move for the publish
    /// timeout is stuck.
    progress: Instant,
}

/// What one step of the publisher found.
enum Step {
    /// Confirms were applied (or a push slipped in): step again.
    Again,
    End(PublisherEnd),
    /// Nothing to do until something happens.
    Wait(Wait),
}

/// What the publisher sleeps until.
struct Wait {
    /// Nothing in flight: only a push, a confirm or the link's end wake it.
    idle: bool,
    /// The window has room: a push may wake it.
    may_send: bool,
    /// The end of a nack backoff, the front's deadline or the nudge; idle:
    /// the publish timeout, if any.
    wake_at: Option<Instant>,
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
        // A run whose future was dropped before its end left its state:
        // its unconfirmed messages go back first, as at any end.
        let left = lock(&self.live).take();
        if let Some(left) = left {
            self.put_back(left, PublisherEnd::LinkDown);
        }
        let (max_count, max_bytes) = self.settings.window;
        *lock(&self.live) = Some(Live {
            ch: ch.clone(),
            window: ConfirmWindow::new(max_count, max_bytes),
            carry: std::mem::take(&mut *lock(&self.carry)),
            confirms: Vec::new(),
            lost: None,
            progress: Instant::now(),
        });
        let end = loop {
            let wait = match self.step() {
                Step::Again => continue,
                Step::End(end) => break end,
                Step::Wait(wait) => wait,
            };
            if let Some(end) = self.sleep(ch, wait, stop.as_mut()).await {
                break end;
            }
        };
        match lock(&self.live).take() {
            Some(run) => self.put_back(run, end),
            None => end,
        }
    }

    /// Sends, takes the confirms and applies them, under the run's lock.
    fn step(&self) -> Step {
        let mut live = lock(&self.live);
        let Some(run) = live.as_mut() else {
            return Step::End(PublisherEnd::LinkDown);
        };
        if let Some(why) = run.lost.take() {
            return Step::End(PublisherEnd::TopologyLost(why));
        }
        let before = run.window.len();
        if let Err(why) = self.fill(run) {
            return Step::End(PublisherEnd::ChannelLost(why));
        }
        if run.window.len() > before {
            // This task sends: it waits for the confirms as they come.
            self.reads_here.store(false, Ordering::Relaxed);
            run.ch.read_eagerly();
        }
        run.ch.take_confirms(&mut run.confirms);
        if run.confirms.is_empty() {
            return self.plan(run);
        }
        match self.apply_confirms(run) {
            Some(why) => Step::End(PublisherEnd::TopologyLost(why)),
            None => Step::Again,
        }
    }

    fn target(&self) -> PublishTarget<'_> {
        PublishTarget {
            exchange: self.settings.exchange.as_bytes(),
            routing_key: self.settings.routing_key.as_bytes(),
            persistent: self.settings.persistent,
            mandatory: self.settings.mandatory,
        }
    }

    /// Sends what the window has room for, resends first, in one batch;
    /// nothing while a nack backoff runs, one at a time while isolating.
    /// Err: the channel is closed.
    fn fill(&self, run: &mut Live) -> Result<(), Failure> {
        let Live {
            ch,
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
        let sent = ch.start_publish(self.target()).map(|mut batch| {
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

    /// No confirms arrived: what to sleep until (a push, a confirm, the
    /// end of a nack backoff, the oldest message's publish timeout or
    /// `stop`), or the run's end when the channel closed or is stuck.
    fn plan(&self, run: &Live) -> Step {
        if !run.ch.is_open() {
            let why = run
                .ch
                .close_reason()
                .unwrap_or_else(|| Failure::Link("channel closed".into()));
            return Step::End(PublisherEnd::ChannelLost(why));
        }
        let overdue = self.front_deadline(run);
        if let Some((at, why)) = &overdue {
            if *at <= Instant::now() {
                return Step::End(PublisherEnd::Stuck(why.clone()));
            }
        }
        let overdue = overdue.map(|(at, _)| at);
        let may_send = run.carry.resume_at.is_none() && run.carry.may_send(&run.window);
        let idle = run.window.is_empty() && run.carry.resume_at.is_none();
        let wake_at = if idle {
            // Nothing in flight: the next push wakes it, or sends itself and
            // leaves it asleep (the confirm wakes it). A message sent so has
            // a publish timeout that no deadline here covers: with one set,
            // an idle publisher looks again after that long; else never.
            if !self.buffer.set_idle_if_empty() {
                return Step::Again;
            }
            self.settings.publish_timeout.map(|t| Instant::now() + t)
        } else {
            // Pushes do not wake a publisher with messages in flight: a
            // timer does, if no confirm came first (a lost one, or one the
            // broker sends late), so new messages never wait for a confirm.
            let nudge = may_send.then(|| Instant::now() + NUDGE);
            [run.carry.resume_at, overdue, nudge]
                .into_iter()
                .flatten()
                .min()
        };
        Step::Wait(Wait {
            idle,
            may_send,
            wake_at,
        })
    }

    /// Sleeps as `wait` says. Some: the run is over.
    async fn sleep(
        &self,
        ch: &WireChannel,
        wait: Wait,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<PublisherEnd> {
        let sleep = async {
            match wait.wake_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        if wait.idle {
            tokio::select! {
                _ = self.buffer.wake.notified() => {}
                _ = ch.confirms_changed() => {}
                _ = sleep => {}
                _ = &mut stop => return Some(PublisherEnd::LinkDown),
            }
        } else {
            tokio::select! {
                biased;
                _ = ch.confirms_changed() => {}
                _ = self.buffer.wake.notified(), if wait.may_send => {}
                _ = sleep => {}
                _ = &mut stop => return Some(PublisherEnd::LinkDown),
            }
        }
        None
    }

    /// When the channel counts as stuck, and why: messages in flight and no
    /// confirm moved the window's front for the publish timeout, or for
    /// `HOLE_TIMEOUT` while a later message was confirmed.
    fn front_deadline(&self, run: &Live) -> Option<(Instant, String)> {
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

    /// The run is over: confirmed ones behind an unconfirmed one are done;
    /// the rest go back in order, ahead of what was never sent. When the
    /// broker closed the channel on a publish, the messages in flight are
    /// suspects: alone in flight, the message is the culprit and fails;
    /// with several, they are sent one at a time next time.
    fn put_back(&self, mut run: Live, end: PublisherEnd) -> PublisherEnd {
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

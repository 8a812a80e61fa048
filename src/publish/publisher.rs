//! The publisher: drains a queue's buffer over its channel, keeping a
//! window of messages ahead of their confirms.

use super::bodies::Body;
use super::window::{ByteLen, ConfirmWindow, Released};
use super::Outbox;
use crate::wire::{Confirm, PublishTarget, WireChannel};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;

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
    /// A publish or confirm failed: the channel (or the link) broke.
    ChannelLost(String),
}

impl ByteLen for Body {
    fn byte_len(&self) -> u64 {
        self.len() as u64
    }
}

/// One run's state besides the outbox: what it sends on and what it holds.
struct Run<'a> {
    ch: &'a WireChannel,
    target: PublishTarget<'a>,
    window: ConfirmWindow<Body>,
    /// Unconfirmed messages to send before anything new from the buffer.
    retry: VecDeque<Body>,
    confirms: Vec<Confirm>,
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
    /// moves messages between the buffer, `retry` and the window, and waits.
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
            retry: std::mem::take(&mut *self.retry.lock().unwrap_or_else(|p| p.into_inner())),
            confirms: Vec::new(),
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
        self.put_back(run);
        end
    }

    /// Sends what the window has room for, resends first, in one batch.
    /// Err: the channel is closed.
    fn fill(&self, run: &mut Run<'_>) -> Result<(), String> {
        let Run {
            ch,
            target,
            window,
            retry,
            ..
        } = run;
        if !window.has_room() || (retry.is_empty() && self.buffer.count() <= window.len() as u64) {
            return Ok(());
        }
        let mut resent = 0u64;
        let sent = match ch.start_publish(*target) {
            Ok(mut batch) => {
                while window.has_room() {
                    let body = match retry.pop_front() {
                        Some(b) => {
                            resent += 1;
                            b
                        }
                        None => match self.buffer.pop() {
                            Some(b) => b,
                            None => break,
                        },
                    };
                    batch.publish(&body);
                    window.push(body);
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        };
        if resent > 0 {
            self.stats.resent.fetch_add(resent, Ordering::Relaxed);
        }
        sent?;
        self.stats
            .in_flight
            .store(window.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// No confirms arrived: sleeps until a push, a confirm or `stop`.
    /// Some: the run is over.
    async fn wait(
        &self,
        run: &Run<'_>,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<PublisherEnd> {
        let ch = run.ch;
        if !ch.is_open() {
            let why = ch.close_reason().map(|f| f.to_string()).unwrap_or_default();
            return Some(PublisherEnd::ChannelLost(why));
        }
        if run.window.is_empty() {
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
                _ = self.buffer.wake.notified(), if run.window.has_room() => {}
                _ = &mut stop => return Some(PublisherEnd::LinkDown),
            }
        }
        None
    }

    /// Applies the confirms taken, in arrival order, then releases the
    /// settled ones from the front of the window (acked: the buffer frees
    /// them; nacked: to the front of `retry`, in order). Some: a
    /// `TopologyLost`, with nothing after it applied.
    fn apply_confirms(&self, run: &mut Run<'_>) -> Option<String> {
        let mut lost = None;
        let mut nacked = 0;
        for c in run.confirms.drain(..) {
            match c {
                Confirm::Settled {
                    tag,
                    multiple,
                    nack,
                } => nacked += run.window.settle(tag, multiple, nack),
                Confirm::TopologyLost(why) => {
                    // Nothing after this may be applied: the returned
                    // message's own ack follows its return.
                    lost = Some(why);
                    break;
                }
            }
        }
        if nacked > 0 {
            self.stats.nacked.fetch_add(nacked, Ordering::Relaxed);
        }
        let released = run.window.release_settled(&mut run.retry);
        self.confirmed(released);
        self.stats
            .in_flight
            .store(run.window.len() as u64, Ordering::Relaxed);
        lost
    }

    /// The run is over: confirmed ones behind an unconfirmed one are done;
    /// the rest go back in order, ahead of what was never sent.
    fn put_back(&self, mut run: Run<'_>) {
        let released = run.window.take_unconfirmed(&mut run.retry);
        self.confirmed(released);
        self.stats.in_flight.store(0, Ordering::Relaxed);
        let mut slot = self.retry.lock().unwrap_or_else(|p| p.into_inner());
        run.retry.extend(slot.drain(..));
        *slot = run.retry;
    }

    fn confirmed(&self, released: Released) {
        if released.count > 0 {
            self.buffer.release_many(released.count, released.bytes);
            self.stats
                .confirmed
                .fetch_add(released.count, Ordering::Relaxed);
        }
    }
}

//! The publisher: drains a queue's buffer over its channel, keeping a
//! window of messages ahead of their confirms.

use super::bodies::Body;
use super::Outbox;
use crate::wire::{Confirm, PublishTarget, WireChannel};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering;

/// Messages sent ahead of their confirms. Below RabbitMQ's credit-flow
/// allowance between its reader, channel and queue processes (400 by
/// default): more in flight makes the broker's reader block in flow control
/// (docs/bench/HISTORY.md has the window sweeps).
pub(crate) const PUBLISH_WINDOW: usize = 256;
/// ... and at most this many body bytes, so large bodies do not pile up in
/// the broker (its flow control would stall the connection).
const PUBLISH_WINDOW_BYTES: u64 = 1 << 20;
/// The window where the broker confirms only after writing to disk
/// (durable queue + persistent messages, or a quorum queue): a deeper
/// pipeline covers the fsync wait.
pub(crate) const DISK_PUBLISH_WINDOW: usize = 1024;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Pending,
    Acked,
    Nacked,
}

impl Outbox {
    /// Drains the buffer over `ch` until the channel fails or `stop`
    /// resolves (this channel's connection generation is over).
    /// Unconfirmed messages are kept for the next run.
    ///
    /// Frames are appended to the connection's output in batches (one lock,
    /// one writer wake-up for up to the whole window), in buffer order, so
    /// the wire order is the publish order. The broker numbers publishes on
    /// a confirm channel from 1, so the message at `window[i]` has delivery
    /// tag `base_tag + i`.
    pub async fn run(&self, ch: &WireChannel, stop: impl Future<Output = ()>) -> PublisherEnd {
        let _running = self.running.lock().await;
        let mut stop = std::pin::pin!(stop);
        let mut window: VecDeque<(Body, Slot)> = VecDeque::new();
        let mut base_tag: u64 = 1;
        let mut confirms: Vec<Confirm> = Vec::new();
        let mut retry = std::mem::take(&mut *self.retry.lock().unwrap_or_else(|p| p.into_inner()));
        let target = PublishTarget {
            exchange: self.settings.exchange.as_bytes(),
            routing_key: self.settings.routing_key.as_bytes(),
            persistent: self.settings.persistent,
            mandatory: self.settings.mandatory,
        };
        let mut window_bytes: u64 = 0;
        let (max_count, max_bytes) = self.settings.window;
        let end = loop {
            if window.len() < max_count
                && window_bytes < max_bytes
                && (!retry.is_empty() || self.buffer.count() > window.len() as u64)
            {
                let mut resent = 0u64;
                let sent = match ch.start_publish(target) {
                    Ok(mut batch) => {
                        while window.len() < max_count && window_bytes < max_bytes {
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
                            window_bytes += body.len() as u64;
                            window.push_back((body, Slot::Pending));
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                if resent > 0 {
                    self.stats.resent.fetch_add(resent, Ordering::Relaxed);
                }
                if let Err(e) = sent {
                    break PublisherEnd::ChannelLost(e.to_string());
                }
                self.stats
                    .in_flight
                    .store(window.len() as u64, Ordering::Relaxed);
            }

            ch.take_confirms(&mut confirms);
            if confirms.is_empty() {
                if !ch.is_open() {
                    let why = ch.close_reason().map(|f| f.to_string()).unwrap_or_default();
                    break PublisherEnd::ChannelLost(why);
                }
                if window.is_empty() {
                    // Nothing in flight: sleep until a push or a link change.
                    if !self.buffer.set_idle_if_empty() {
                        continue;
                    }
                    tokio::select! {
                        _ = self.buffer.wake.notified() => {}
                        _ = ch.confirms_changed() => {}
                        _ = &mut stop => break PublisherEnd::LinkDown,
                    }
                } else {
                    tokio::select! {
                        biased;
                        _ = ch.confirms_changed() => {}
                        _ = self.buffer.wake.notified(), if window.len() < max_count && window_bytes < max_bytes => {}
                        _ = &mut stop => break PublisherEnd::LinkDown,
                    }
                }
                continue;
            }
            let mut lost = None;
            for c in confirms.drain(..) {
                let (tag, multiple, nack) = match c {
                    Confirm::Settled {
                        tag,
                        multiple,
                        nack,
                    } => (tag, multiple, nack),
                    Confirm::TopologyLost(why) => {
                        // Nothing after this may be applied: the returned
                        // message's own ack follows its return.
                        lost = Some(why);
                        break;
                    }
                };
                if tag < base_tag {
                    continue;
                }
                let idx = (tag - base_tag) as usize;
                let mark = if nack { Slot::Nacked } else { Slot::Acked };
                let from = if multiple { 0 } else { idx };
                // A tag beyond the window (never sent) settles nothing.
                let to = idx.min(window.len().saturating_sub(1));
                if window.is_empty() || from > to {
                    continue;
                }
                for (_, slot) in window.range_mut(from..=to) {
                    if *slot == Slot::Pending {
                        if nack {
                            self.stats.nacked.fetch_add(1, Ordering::Relaxed);
                        }
                        *slot = mark;
                    }
                }
            }
            // Settle from the front so order is kept for anything resent.
            let mut nacked = Vec::new();
            let (mut released, mut count) = (0u64, 0u64);
            while matches!(window.front(), Some((_, slot)) if *slot != Slot::Pending) {
                let Some((b, slot)) = window.pop_front() else {
                    break;
                };
                window_bytes -= b.len() as u64;
                if slot == Slot::Acked {
                    released += b.len() as u64;
                    count += 1;
                } else {
                    nacked.push(b);
                }
                base_tag += 1;
            }
            if count > 0 {
                self.buffer.release_many(count, released);
                self.stats.confirmed.fetch_add(count, Ordering::Relaxed);
            }
            for b in nacked.into_iter().rev() {
                retry.push_front(b);
            }
            self.stats
                .in_flight
                .store(window.len() as u64, Ordering::Relaxed);
            if let Some(why) = lost {
                break PublisherEnd::TopologyLost(why);
            }
        };
        // Confirmed ones behind an unconfirmed one are done; the rest go back
        // in order, ahead of what was never sent.
        let mut keep: VecDeque<Body> = VecDeque::with_capacity(window.len() + retry.len());
        for (b, slot) in window {
            if slot == Slot::Acked {
                self.buffer.release(b.len());
                self.stats.confirmed.fetch_add(1, Ordering::Relaxed);
            } else {
                keep.push_back(b);
            }
        }
        keep.extend(retry);
        self.stats.in_flight.store(0, Ordering::Relaxed);
        let mut slot = self.retry.lock().unwrap_or_else(|p| p.into_inner());
        keep.extend(slot.drain(..));
        *slot = keep;
        end
    }
}

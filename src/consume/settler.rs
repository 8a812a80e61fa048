//! Settling deliveries on their channel with few frames.

use super::settle_book::{Due, Frame, Settle, SettleBook};
use crate::wire::WireChannel;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Held decisions go out at most this long after the first, so one frame
/// acks many deliveries.
const SETTLE_DELAY: Duration = Duration::from_millis(2);

/// Settles the deliveries of one channel: records decisions in a
/// [`SettleBook`] and sends the frames it asks for, counting them.
pub(super) struct Settler {
    channel: WireChannel,
    stats: Arc<ConsumeStats>,
    state: Mutex<SettleState>,
    wake: tokio::sync::Notify,
}

struct SettleState {
    book: SettleBook,
    /// Scratch space for the frames of one flush.
    frames: Vec<Frame>,
}

impl Settler {
    pub fn new(channel: WireChannel, prefetch: u16, stats: Arc<ConsumeStats>) -> Arc<Settler> {
        Arc::new(Settler {
            channel,
            stats,
            state: Mutex::new(SettleState {
                book: SettleBook::new(prefetch),
                frames: Vec::new(),
            }),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Resolves when held decisions are due: SETTLE_DELAY after the first
    /// one, or after a second without any.
    pub async fn wait_for_due(&self) {
        tokio::select! {
            _ = self.wake.notified() => {
                tokio::time::sleep(SETTLE_DELAY).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }

    pub fn channel_open(&self) -> bool {
        self.channel.is_open()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SettleState> {
        crate::sync::lock(&self.state)
    }

    /// Records a decision; sends now for a release or when a batch is full,
    /// else within SETTLE_DELAY (or at the end of the slice it was made in,
    /// `SliceHolds`).
    pub fn decide(self: &Arc<Self>, tag: u64, how: Settle) {
        let mut st = self.lock();
        match st.book.decide(tag, how) {
            Due::Now => self.flush_locked(&mut st),
            Due::Soon => {
                drop(st);
                let held = HELD.with(|h| h.borrow_mut().as_mut().map(|v| v.push(self.clone())));
                if held.is_none() {
                    self.wake.notify_one();
                }
            }
            Due::Later => {}
        }
    }

    pub fn flush(&self) {
        let mut st = self.lock();
        self.flush_locked(&mut st);
    }

    /// Sends under the lock: the frames of two flushes must not interleave
    /// (a multiple ack overtaking an earlier flush's reject of a lower tag
    /// would ack that delivery, and the reject would then close the channel).
    fn flush_locked(&self, st: &mut SettleState) {
        let SettleState { book, frames } = st;
        book.flush(frames);
        for frame in frames.drain(..) {
            self.send(frame);
        }
    }

    /// The channel refuses once it is closed, so a stale tag never reaches a
    /// new channel; such deliveries count as released (the broker
    /// redelivers them).
    fn send(&self, frame: Frame) {
        let (ch, stats) = (&self.channel, &self.stats);
        let (sent, counter, count) = match frame {
            Frame::Ack {
                tag,
                multiple,
                count,
            } => (ch.basic_ack(tag, multiple), &stats.acked, count),
            Frame::Reject { tag, how } => {
                let counter = match how {
                    Settle::Reject => &stats.rejected,
                    Settle::Requeue => &stats.requeued,
                    Settle::Release | Settle::Ack => &stats.released,
                };
                (ch.basic_reject(tag, how != Settle::Reject), counter, 1)
            }
        };
        let counter = if sent { counter } else { &stats.released };
        counter.fetch_add(count, Ordering::Relaxed);
    }
}

thread_local! {
    /// On a callback thread in a slice (`SliceHolds`): the settlers whose
    /// first held decision came in it.
    static HELD: RefCell<Option<Vec<Arc<Settler>>>> = const { RefCell::new(None) };
}

/// The decisions held back in a callback thread's slice of deliveries: at
/// its end they are sent at once (a quiet link: the ack leaves right after
/// the callback, as a single-threaded client's does, and no runtime thread
/// is woken for it), or within SETTLE_DELAY as usual (a busy link: one
/// frame acks many deliveries).
pub(super) struct SliceHolds(());

impl SliceHolds {
    pub fn start() -> SliceHolds {
        HELD.with(|h| *h.borrow_mut() = Some(Vec::new()));
        SliceHolds(())
    }

    pub fn end(self, send_now: bool) {
        for settler in Self::take() {
            if send_now {
                settler.flush();
            } else {
                settler.wake.notify_one();
            }
        }
    }

    fn take() -> Vec<Arc<Settler>> {
        HELD.with(|h| h.borrow_mut().take()).unwrap_or_default()
    }
}

impl Drop for SliceHolds {
    /// Also when the thread ends inside a callback (an unwind): the
    /// decisions held so far go out within SETTLE_DELAY.
    fn drop(&mut self) {
        for settler in Self::take() {
            settler.wake.notify_one();
        }
    }
}

/// Consume counters, all monotonic.
#[derive(Default)]
pub(crate) struct ConsumeStats {
    pub delivered: AtomicU64,
    pub acked: AtomicU64,
    pub rejected: AtomicU64,
    pub requeued: AtomicU64,
    pub released: AtomicU64,
    /// Deferred deliveries not settled yet (a gauge).
    pub unsettled: AtomicU64,
    /// Callback return values that were no disposition.
    pub invalid_dispositions: AtomicU64,
    /// Callback return values ignored: amqp_settle came first.
    pub returns_ignored: AtomicU64,
    /// basic.consume (or the consume channel's declares) refused.
    pub consume_refusals: AtomicU64,
    /// Deliveries acked unseen as duplicates (queue option dedupe).
    pub deduplicated: AtomicU64,
}

//! Settling deliveries on their channel with few frames.

use super::ConsumeStats;
use crate::wire::WireChannel;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a delivery was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Settle {
    Ack,
    Reject,
    Requeue,
    /// Given back without a callback (paused, or stale): basic.reject requeue.
    Release,
}

/// Acks held back at most this many (and at most half the prefetch, so the
/// broker never runs out of credit waiting for them) ...
const SETTLE_BATCH: usize = 64;
/// ... or this long, so one frame acks many deliveries.
const SETTLE_DELAY: Duration = Duration::from_millis(2);

/// Settles the deliveries of one channel with few frames. Tags are
/// per channel and every delivery of the channel passes through here, so the
/// acks of a contiguous run of settled tags go out as one
/// basic.ack(multiple) on the run's last ack, which is still unacked (a
/// multiple-ack on a settled tag would close the channel: "unknown delivery
/// tag"). Rejects are sent singly, before it. Decisions behind a gap (an
/// earlier delivery still in a callback) are sent singly at the flush, so a
/// slow callback never holds back the others' acks and prefetch.
pub(super) struct Settler {
    channel: WireChannel,
    stats: Arc<ConsumeStats>,
    /// Decisions held back at most: min(SETTLE_BATCH, prefetch / 2).
    batch: usize,
    state: Mutex<SettleState>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct SettleState {
    /// Every tag up to here is settled.
    floor: u64,
    /// Tag `floor + 1 + i` is at `slots[i]`: tags are dense per channel, so a
    /// ring replaces a map.
    slots: std::collections::VecDeque<Slot>,
    /// Slots in state `Decided`.
    decided: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Still with a callback (or not delivered yet).
    Open,
    /// Decided, not sent yet.
    Decided(Settle),
    /// Above `floor`, already sent singly.
    SentAhead,
}

impl Settler {
    pub fn new(channel: WireChannel, prefetch: u16, stats: Arc<ConsumeStats>) -> Arc<Settler> {
        let batch = match prefetch {
            0 => SETTLE_BATCH,
            p => (usize::from(p) / 2).clamp(1, SETTLE_BATCH),
        };
        Arc::new(Settler {
            channel,
            stats,
            batch,
            state: Mutex::new(SettleState::default()),
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
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a decision; sends now for a release or when a batch is full,
    /// else within SETTLE_DELAY.
    pub fn decide(&self, tag: u64, how: Settle) {
        let mut st = self.lock();
        if tag <= st.floor {
            return;
        }
        let idx = (tag - st.floor - 1) as usize;
        if st.slots.len() <= idx {
            st.slots.resize(idx + 1, Slot::Open);
        }
        if st.slots[idx] != Slot::Open {
            return;
        }
        st.slots[idx] = Slot::Decided(how);
        let was_empty = st.decided == 0;
        st.decided += 1;
        if how == Settle::Release || st.decided >= self.batch {
            self.flush_locked(&mut st);
        } else if was_empty {
            self.wake.notify_one();
        }
    }

    pub fn flush(&self) {
        let mut st = self.lock();
        self.flush_locked(&mut st);
    }

    fn flush_locked(&self, st: &mut SettleState) {
        if st.decided == 0 {
            return;
        }
        let (mut acks, mut last_ack) = (0u64, 0u64);
        while let Some(&slot) = st.slots.front() {
            match slot {
                Slot::Open => break,
                Slot::Decided(Settle::Ack) => {
                    acks += 1;
                    last_ack = st.floor + 1;
                    st.decided -= 1;
                }
                Slot::Decided(how) => {
                    self.send_single(st.floor + 1, how);
                    st.decided -= 1;
                }
                Slot::SentAhead => {}
            }
            st.slots.pop_front();
            st.floor += 1;
        }
        if acks > 0 {
            let sent = self.channel.basic_ack(last_ack, acks > 1);
            let counter = if sent {
                &self.stats.acked
            } else {
                &self.stats.released
            };
            counter.fetch_add(acks, Ordering::Relaxed);
        }
        if st.decided > 0 {
            let floor = st.floor;
            for (i, slot) in st.slots.iter_mut().enumerate() {
                if let Slot::Decided(how) = *slot {
                    self.send_single(floor + 1 + i as u64, how);
                    *slot = Slot::SentAhead;
                }
            }
            st.decided = 0;
        }
    }

    /// The channel refuses once it is closed, so a stale tag never reaches a
    /// new channel; such a delivery counts as released (the broker
    /// redelivers it).
    fn send_single(&self, tag: u64, how: Settle) {
        let ch = &self.channel;
        let (sent, counter) = match how {
            Settle::Ack => (ch.basic_ack(tag, false), &self.stats.acked),
            Settle::Reject => (ch.basic_reject(tag, false), &self.stats.rejected),
            Settle::Requeue => (ch.basic_reject(tag, true), &self.stats.requeued),
            Settle::Release => (ch.basic_reject(tag, true), &self.stats.released),
        };
        let counter = if sent { counter } else { &self.stats.released };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

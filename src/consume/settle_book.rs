//! The settler's bookkeeping, without the channel: which frames settle the
//! decided deliveries of one channel, with as few acks as possible.
//!
//! The broker keeps a channel's unacked delivery tags. basic.ack(tag) and
//! basic.reject(tag) must name a tag that is still unacked, and
//! basic.ack(tag, multiple) acks every unacked tag up to `tag`, `tag`
//! included and required (RabbitMQ's `collect_acks` walks the unacked queue
//! up to that exact tag, and answers 406 PRECONDITION_FAILED "unknown
//! delivery tag", closing the channel, if it is not there). So a multiple
//! ack is safe on `tag` only when every tag below it is either settled
//! already (sent earlier, in an earlier frame on the same channel) or an
//! ack going out now.

use std::collections::VecDeque;

/// How a delivery was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Settle {
    Ack,
    Reject,
    Requeue,
    /// Given back without a callback (paused, or stale): basic.reject requeue.
    Release,
}

/// One frame to send, in the order given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Frame {
    /// basic.ack(tag, multiple); it settles `count` deliveries (more than
    /// one only when `multiple`).
    Ack {
        tag: u64,
        multiple: bool,
        count: u64,
    },
    /// basic.reject(tag, requeue = how != Reject) of one delivery decided
    /// `how`: Reject, Requeue or Release, never Ack.
    Reject { tag: u64, how: Settle },
}

/// What a decision asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// Flush now: a release, or a full batch.
    Now,
    /// The first decision held since the last flush: flush within the
    /// settle delay.
    Soon,
    /// Nothing new: held with others already timed, or ignored (a
    /// duplicate, or a tag settled already).
    Later,
}

/// Acks held back at most this many (and at most half the prefetch, so the
/// broker never runs out of credit waiting for them).
const SETTLE_BATCH: usize = 64;

/// The decisions of one channel's deliveries, and what is sent of them.
/// Tags are per channel and every delivery of the channel is decided here.
/// The acks of the contiguous run of decided tags above `floor` leave as one
/// basic.ack(multiple) on the run's last ack, which is still unacked; the
/// rejects of the run leave singly, before it. Decisions behind a gap (an
/// earlier delivery still in a callback) leave singly at the flush, so a
/// slow callback never holds back the others' acks and prefetch.
#[derive(Debug)]
pub(super) struct SettleBook {
    /// Decisions held back at most: min(SETTLE_BATCH, prefetch / 2).
    batch: usize,
    /// Every tag up to here is sent.
    floor: u64,
    /// Tag `floor + 1 + i` is at `slots[i]`: tags are dense per channel, so a
    /// ring replaces a map.
    slots: VecDeque<TagState>,
    /// The tags of the slots in state `Decided`, in the order decided: at
    /// most a batch (the caller flushes when told `Due::Now`), so a flush behind a gap looks at these rather than at
    /// every slot (the ring grows with each delivery while an early one
    /// stays in its callback).
    decided: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TagState {
    /// Still with a callback (or not delivered yet).
    Open,
    /// Decided, not sent yet.
    Decided(Settle),
    /// Above `floor`, already sent singly.
    SentAhead,
}

impl SettleBook {
    pub fn new(prefetch: u16) -> SettleBook {
        let batch = match prefetch {
            0 => SETTLE_BATCH,
            p => (usize::from(p) / 2).clamp(1, SETTLE_BATCH),
        };
        SettleBook {
            batch,
            floor: 0,
            slots: VecDeque::new(),
            decided: Vec::new(),
        }
    }

    /// Records the decision on `tag`, unless it has one already or is at or
    /// below the floor (then ignored: `Due::Later`).
    pub fn decide(&mut self, tag: u64, how: Settle) -> Due {
        if tag <= self.floor {
            return Due::Later;
        }
        let idx = (tag - self.floor - 1) as usize;
        if self.slots.len() <= idx {
            self.slots.resize(idx + 1, TagState::Open);
        }
        if self.slots[idx] != TagState::Open {
            return Due::Later;
        }
        self.slots[idx] = TagState::Decided(how);
        self.decided.push(tag);
        if how == Settle::Release || self.decided.len() >= self.batch {
            Due::Now
        } else if self.decided.len() == 1 {
            Due::Soon
        } else {
            Due::Later
        }
    }

    /// Appends to `out` the frames that send every held decision, in the
    /// order they must be sent; they count as sent from here on.
    pub fn flush(&mut self, out: &mut Vec<Frame>) {
        if self.decided.is_empty() {
            return;
        }
        // The settled prefix: its rejects now, its acks in one frame after
        // them, on its last ack. Tags below that ack are either in this
        // prefix (acks, covered; rejects, sent just before) or at or below
        // the old floor or sent ahead (settled in earlier frames), so the
        // ack covers exactly this prefix's acks.
        let (mut acks, mut last_ack) = (0u64, 0u64);
        while let Some(&slot) = self.slots.front() {
            let tag = self.floor + 1;
            match slot {
                TagState::Open => break,
                TagState::Decided(Settle::Ack) => {
                    acks += 1;
                    last_ack = tag;
                }
                TagState::Decided(how) => out.push(Frame::Reject { tag, how }),
                TagState::SentAhead => {}
            }
            self.slots.pop_front();
            self.floor = tag;
        }
        if acks > 0 {
            out.push(Frame::Ack {
                tag: last_ack,
                multiple: acks > 1,
                count: acks,
            });
        }
        // Behind the gap: singly, each on its own tag, in tag order.
        self.decided.sort_unstable();
        for tag in self.decided.drain(..).filter(|&t| t > self.floor) {
            let slot = &mut self.slots[(tag - self.floor - 1) as usize];
            if let TagState::Decided(how) = *slot {
                out.push(match how {
                    Settle::Ack => Frame::Ack {
                        tag,
                        multiple: false,
                        count: 1,
                    },
                    how => Frame::Reject { tag, how },
                });
                *slot = TagState::SentAhead;
            }
        }
    }

    /// Decisions held, not sent yet.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.decided.len()
    }

    /// Every tag up to here is sent.
    #[cfg(test)]
    fn floor(&self) -> u64 {
        self.floor
    }
}

#[cfg(test)]
#[path = "settle_book_tests.rs"]
mod tests;

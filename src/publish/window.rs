//! The confirm window: the messages sent on one channel and not yet
//! settled, as pure state (no I/O, no locks, no atomics), so it is tested
//! on its own against a model.
//!
//! The broker numbers the publishes on a confirm channel from 1, so the
//! message at index `i` has delivery tag `front_tag + i`. The broker's
//! basic.ack / basic.nack mark messages; they leave the window from the
//! front only, so anything nacked comes out in send order.

use std::collections::VecDeque;

/// A message's body size, for the window's byte limit and the buffer's
/// release.
pub(crate) trait ByteLen {
    fn byte_len(&self) -> u64;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Acked,
    Nacked,
}

/// Acked messages that left the window: the buffer releases them and they
/// count as confirmed.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Released {
    pub count: u64,
    pub bytes: u64,
}

/// The messages in flight on one channel, in send order.
pub(crate) struct ConfirmWindow<T> {
    slots: VecDeque<(T, State)>,
    /// The delivery tag of `slots[0]`.
    front_tag: u64,
    /// Body bytes in `slots`.
    bytes: u64,
    /// Slots settled (acked or nacked) and still in the window: behind a
    /// pending one.
    settled: usize,
    max_count: usize,
    max_bytes: u64,
}

impl<T: ByteLen> ConfirmWindow<T> {
    /// An empty window for a new channel: the first push gets tag 1.
    /// It holds at most `max_count` messages, and takes one more only while
    /// below `max_bytes` (so it may go over by one message).
    pub fn new(max_count: usize, max_bytes: u64) -> Self {
        ConfirmWindow {
            slots: VecDeque::new(),
            front_tag: 1,
            bytes: 0,
            settled: 0,
            max_count,
            max_bytes,
        }
    }

    /// Messages sent and still in the window (settled ones behind an
    /// unsettled one included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Body bytes in the window.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The tag the next push gets.
    pub fn next_tag(&self) -> u64 {
        self.front_tag + self.slots.len() as u64
    }

    /// Whether another message may be sent.
    pub fn has_room(&self) -> bool {
        self.slots.len() < self.max_count && self.bytes < self.max_bytes
    }

    /// Records `msg` as sent; returns its delivery tag. The caller checks
    /// `has_room` first.
    pub fn push(&mut self, msg: T) -> u64 {
        debug_assert!(self.has_room(), "push into a full confirm window");
        let tag = self.next_tag();
        self.bytes += msg.byte_len();
        self.slots.push_back((msg, State::Pending));
        tag
    }

    /// Applies a basic.ack (`nack` false) or basic.nack from the broker:
    /// marks the message with `tag`, or with `multiple` every message up to
    /// `tag`, that is still pending. A tag below the front (already settled)
    /// or, without `multiple`, beyond what was sent settles nothing; with
    /// `multiple` a tag beyond what was sent settles the whole window.
    /// Returns how many messages this nacked. Nothing leaves the window
    /// until `release_settled`.
    pub fn settle(&mut self, tag: u64, multiple: bool, nack: bool) -> u64 {
        if tag < self.front_tag || self.slots.is_empty() {
            return 0;
        }
        let idx = (tag - self.front_tag) as usize;
        let from = if multiple { 0 } else { idx };
        let to = idx.min(self.slots.len() - 1);
        if from > to {
            return 0;
        }
        let mark = if nack { State::Nacked } else { State::Acked };
        let mut marked = 0;
        for (_, state) in self.slots.range_mut(from..=to) {
            if *state == State::Pending {
                *state = mark;
                marked += 1;
                self.settled += 1;
            }
        }
        if nack {
            marked
        } else {
            0
        }
    }

    /// Whether the oldest message waits for its confirm while a later one
    /// was settled: RabbitMQ confirms one queue's messages in order, so a
    /// hole that lasts means a confirm was lost.
    pub fn has_hole(&self) -> bool {
        self.settled > 0 && matches!(self.slots.front(), Some((_, State::Pending)))
    }

    /// The `i`th message in the window (0: the oldest).
    #[cfg(test)]
    pub fn peek(&self, i: usize) -> Option<&T> {
        self.slots.get(i).map(|(m, _)| m)
    }

    /// The messages sent and not settled yet, oldest first.
    pub fn pending_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots
            .iter_mut()
            .filter(|(_, s)| *s == State::Pending)
            .map(|(m, _)| m)
    }

    /// The oldest message in the window.
    pub fn front(&self) -> Option<&T> {
        self.slots.front().map(|(m, _)| m)
    }

    /// Takes the settled messages off the front, up to the first pending
    /// one, in send order: `ended(msg, acked)` for each.
    pub fn release_settled_with(&mut self, mut ended: impl FnMut(T, bool)) {
        while matches!(self.slots.front(), Some((_, s)) if *s != State::Pending) {
            let Some((msg, state)) = self.slots.pop_front() else {
                break;
            };
            self.bytes -= msg.byte_len();
            self.front_tag += 1;
            self.settled -= 1;
            ended(msg, state == State::Acked);
        }
    }

    /// The channel is gone: empties the window, in send order:
    /// `ended(msg, acked)` for each (acked: those that sat behind an
    /// unconfirmed one; the others were never confirmed). The window is
    /// then as new: the next push gets tag 1.
    pub fn take_all_with(&mut self, mut ended: impl FnMut(T, bool)) {
        for (msg, state) in self.slots.drain(..) {
            ended(msg, state == State::Acked);
        }
        self.front_tag = 1;
        self.bytes = 0;
        self.settled = 0;
    }

    /// Takes the settled messages off the front, up to the first pending
    /// one: acked ones are dropped and reported, nacked ones are put at the
    /// front of `resend`, in send order, ahead of what it held.
    #[cfg(test)]
    pub fn release_settled(&mut self, resend: &mut VecDeque<T>) -> Released {
        let mut released = Released::default();
        let mut nacked = Vec::new();
        self.release_settled_with(|msg, acked| {
            if acked {
                released.count += 1;
                released.bytes += msg.byte_len();
            } else {
                nacked.push(msg);
            }
        });
        for msg in nacked.into_iter().rev() {
            resend.push_front(msg);
        }
        released
    }

    /// The channel is gone: empties the window. Acked messages are done and
    /// reported; the rest go to the front of `resend`, in send order.
    #[cfg(test)]
    pub fn take_unconfirmed(&mut self, resend: &mut VecDeque<T>) -> Released {
        let mut released = Released::default();
        let mut kept = Vec::new();
        self.take_all_with(|msg, acked| {
            if acked {
                released.count += 1;
                released.bytes += msg.byte_len();
            } else {
                kept.push(msg);
            }
        });
        for msg in kept.into_iter().rev() {
            resend.push_front(msg);
        }
        released
    }
}

#[cfg(test)]
mod tests;

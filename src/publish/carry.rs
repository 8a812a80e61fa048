//! What a queue's publisher decides about messages, as pure state (no I/O,
//! no clock of its own, no locks), so it is tested against a model broker:
//! the order messages go out in, the nack retries and their backoff, and
//! the isolation of a message the broker closes the channel on.

use super::message::Message;
use super::window::ConfirmWindow;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What a publisher run leaves to the next: the messages to send first and
/// the state of the nack backoff and of an isolation.
#[derive(Default)]
pub(crate) struct Carry {
    /// Unconfirmed messages from an earlier channel or nacked ones, to be
    /// sent before anything new from the buffer.
    pub retry: VecDeque<Message>,
    /// The first `suspects` messages of `retry` were in flight when the
    /// broker closed the channel on a publish: they are sent one at a time
    /// until the one it refuses is known.
    pub suspects: usize,
    /// Nacked batches in a row (no ack between): the backoff's step.
    pub nack_streak: u32,
    /// Resends wait until then after a nack.
    pub resume_at: Option<Instant>,
}

/// What becomes of a message the window released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Confirmed,
    /// Nacked more than `publish_retries` times.
    Failed,
    /// Nacked: to be sent again (`Carry::resend`).
    Resend,
}

impl Carry {
    /// Whether the nack backoff still runs at `now` (it ends by itself).
    pub fn backing_off(&mut self, now: Instant) -> bool {
        match self.resume_at {
            Some(at) if now < at => true,
            Some(_) => {
                self.resume_at = None;
                false
            }
            None => false,
        }
    }

    /// Whether one more message may go out on `window` (the backoff is
    /// over): while isolating, one at a time.
    pub fn may_send(&self, window: &ConfirmWindow<Message>) -> bool {
        window.has_room() && (self.suspects == 0 || window.is_empty())
    }

    /// The next message to send: resends first, then `fresh` (the buffer).
    pub fn next(&mut self, fresh: impl FnOnce() -> Option<Message>) -> Option<Message> {
        self.retry.pop_front().or_else(fresh)
    }

    /// A message taken by `next` will not be sent (it failed: expired,
    /// too large): it leaves the suspects too.
    pub fn dropped(&mut self) {
        self.suspects = self.suspects.saturating_sub(1);
    }

    /// One message released from the window's front, in send order.
    pub fn released(&mut self, msg: &mut Message, acked: bool, retries: u16) -> Verdict {
        // Settled either way: it was not the message the broker refuses.
        self.suspects = self.suspects.saturating_sub(1);
        if acked {
            return Verdict::Confirmed;
        }
        msg.nacks = msg.nacks.saturating_add(1);
        if msg.nacks > retries {
            Verdict::Failed
        } else {
            Verdict::Resend
        }
    }

    /// After a release: nacked messages (in send order) go first again,
    /// after `delay(streak)` from `now`, a step longer for each nacked
    /// batch in a row; an ack ends the streak. Returns the delay when a
    /// backoff began.
    pub fn resend(
        &mut self,
        nacked: Vec<Message>,
        acked: bool,
        now: Instant,
        delay: impl FnOnce(u32) -> Duration,
    ) -> Option<Duration> {
        if nacked.is_empty() {
            if acked {
                self.nack_streak = 0;
            }
            return None;
        }
        let d = delay(self.nack_streak);
        self.nack_streak = self.nack_streak.saturating_add(1);
        self.resume_at = Some(now + d);
        for msg in nacked.into_iter().rev() {
            self.retry.push_front(msg);
        }
        Some(d)
    }

    /// The channel is gone with `unconfirmed` (in send order) in flight:
    /// they go first again. When the broker closed it on a publish
    /// (`refused_publish`), they are suspects: a message alone in flight is
    /// the culprit and is returned (it fails); several are sent one at a
    /// time from now on until the culprit is alone.
    pub fn channel_lost(
        &mut self,
        unconfirmed: Vec<Message>,
        refused_publish: bool,
    ) -> Option<Message> {
        let in_flight = unconfirmed.len();
        for msg in unconfirmed.into_iter().rev() {
            self.retry.push_front(msg);
        }
        if !refused_publish || in_flight == 0 {
            return None;
        }
        if in_flight == 1 {
            self.suspects = 0;
            return self.retry.pop_front();
        }
        self.suspects = in_flight;
        None
    }
}

#[cfg(test)]
mod tests;

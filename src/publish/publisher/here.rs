//! What a publishing thread does itself, under the run's lock, while the
//! publisher task is not running a step: it sends what the buffer holds
//! (`send_now`) and, on a link whose confirms are read late
//! (`wire`'s `lazy_read`), first reads and applies the confirms waiting
//! there, so that the publisher task is not woken for them.

use super::{Live, Outbox, SEND_NOW_BELOW};
use std::sync::atomic::Ordering;

impl Outbox {
    /// This thread pushed while the publisher was idle, had few messages
    /// in flight, or reads the confirms itself: it sends what the buffer
    /// holds, so that a message reaches the socket without waiting for the
    /// runtime (a wake-up, or the next confirm). Nothing when the
    /// publisher runs a step now or no channel is open. True: messages are
    /// in flight, so the publisher needs no wake-up (their confirms, or the
    /// channel's close, wake it; an idle one also wakes after
    /// publish_timeout_ms).
    pub(in crate::publish) fn send_now(&self) -> bool {
        let Ok(mut live) = self.live.try_lock() else {
            return false;
        };
        let Some(run) = live.as_mut() else {
            return false;
        };
        if run.window.len() as u64 >= SEND_NOW_BELOW && !self.read_here(run) {
            self.hand_to_publisher(run);
            return !run.window.is_empty();
        }
        let before = run.window.len();
        // A closed channel: the publisher sees it when woken.
        if self.fill(run).is_err() {
            return false;
        }
        if run.window.len() > before {
            let lazy = run.ch.sent_here();
            self.reads_here.store(lazy, Ordering::Relaxed);
            if !lazy && run.window.len() as u64 >= SEND_NOW_BELOW {
                // The next pushes leave the sending to the publisher.
                self.hand_to_publisher(run);
            }
        }
        !run.window.is_empty()
    }

    /// The publisher task sends the rest in batches as confirms come, and
    /// the link is read as soon as they do. The task is woken: it may be
    /// asleep in its idle wait, planned before this thread filled the
    /// window, with no deadline for a confirm that never comes (a hole
    /// whose `HOLE_TIMEOUT` nobody watches would hold the window, and the
    /// buffer behind it, forever).
    fn hand_to_publisher(&self, run: &Live) {
        self.reads_here.store(false, Ordering::Relaxed);
        run.ch.read_eagerly();
        run.ch.wake_publisher();
    }

    /// Reads the confirms waiting on a link read late and applies them.
    /// True: fewer than `SEND_NOW_BELOW` messages are still in flight.
    fn read_here(&self, run: &mut Live) -> bool {
        if !run.ch.read_here() {
            return false;
        }
        run.ch.take_confirms(&mut run.confirms);
        if !run.confirms.is_empty() {
            if let Some(why) = self.apply_confirms(run) {
                // Only the publisher task can end the run.
                run.lost = Some(why);
                run.ch.wake_publisher();
                return false;
            }
            // Nacks start a backoff and resends, a lost confirm a hole:
            // the task plans those, and may be asleep with nothing planned.
            if !run.carry.retry.is_empty() || run.carry.resume_at.is_some() || run.window.has_hole()
            {
                run.ch.wake_publisher();
            }
        }
        (run.window.len() as u64) < SEND_NOW_BELOW
    }
}

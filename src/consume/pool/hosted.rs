//! The pool's hosted link (`Pool::link`): who holds it, and its timer.

use super::events::Events;
use crate::wire::{LinkReader, LINGER};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The hosted link and who reads it. The thread its bytes woke *holds* it:
/// it reads, runs what it read, and reads again, as a single-threaded
/// client does, until the socket is empty or a turn was busy (`BUSY_TURN`;
/// then the link is watched again by every idle thread). Should the holder
/// not read for `STEAL_AFTER` (a callback that takes long), an idle thread
/// takes the link back, so the other consumers' deliveries and the broker's
/// heartbeats are read.
#[derive(Default)]
pub(super) struct Hosted {
    pub reader: Option<Arc<LinkReader>>,
    /// The holding thread (`THREAD_ID`), and when it last read. While
    /// there is one, the link's timer is set (at most `STEAL_AFTER` past
    /// that read: `on_timer` sets it again for what remains).
    pub holder: Option<(u64, Instant)>,
    /// The link's timer is set (a syscall is saved per read that finds it
    /// set, and per release that finds it stopped).
    pub timer_set: bool,
}

impl Hosted {
    pub fn set_timer(&mut self, events: &Events, after: Option<Duration>) {
        self.timer_set = after.is_some();
        events.arm_timer(after);
    }

    /// The holder runs what it read: an idle thread takes the link should
    /// it not read again within `STEAL_AFTER`.
    pub fn hold(&mut self, events: &Events) {
        if !self.timer_set {
            self.set_timer(events, Some(STEAL_AFTER));
        }
    }

    /// No thread holds the link any more: the socket is watched again by
    /// every idle thread, and the timer is set for a coalescing link (its
    /// bytes short of the low mark are read after `LINGER`), else stopped.
    pub fn release(&mut self, events: &Events) {
        self.holder = None;
        let linger = self.reader.as_ref().filter(|r| r.coalescing());
        if linger.is_some() || self.timer_set {
            self.set_timer(events, linger.map(|_| LINGER));
        }
        if let Some(reader) = &self.reader {
            events.rearm(reader.fd());
        }
    }
}

/// How long a holder may not read before an idle thread takes the link.
pub(super) const STEAL_AFTER: Duration = Duration::from_millis(5);

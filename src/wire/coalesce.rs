//! When a busy hosted link wakes its reader: at every write of the broker,
//! or once a few KiB wait.
//!
//! A consumer that reads faster than the broker writes finds the socket
//! empty after every few deliveries, and each time a thread sleeps and is
//! woken again: a context switch per broker write. While the link carries
//! more than `LOWAT` bytes per `LINGER`, the socket wakes its reader only
//! once `LOWAT` bytes wait (`SO_RCVLOWAT`), and a timer (`LINGER` after
//! the reader went back to waiting) reads whatever came short of that. A
//! delivery then waits at most `LINGER` more, and only on a link that
//! busy; on a quieter link every byte wakes the reader as before.
//!
//! A pure state type: the reader tells it what each turn read, and sets
//! the socket option and the timer as it answers.

use std::time::{Duration, Instant};

/// Bytes that wake the reader of a busy link.
pub(crate) const LOWAT: usize = 2048;

/// The longest a byte of a busy link waits for `LOWAT` more: after this,
/// a timer has it read.
pub(crate) const LINGER: Duration = Duration::from_micros(200);

/// The busy test looks at the bytes of one window this long (at least).
const WINDOW: Duration = LINGER;

/// Whether the socket should wait for `LOWAT` bytes, from what the link
/// carried in the last window.
#[derive(Debug, Default)]
pub(crate) struct Coalescer {
    /// The socket waits for `LOWAT` bytes (and the reader for the timer).
    on: bool,
    /// The current window: since when, and the bytes read in it.
    since: Option<Instant>,
    bytes: usize,
}

impl Coalescer {
    /// Whether the socket waits for `LOWAT` bytes now (so whoever waits on
    /// it must also set the `LINGER` timer). The reader mirrors it in an
    /// atomic (`LinkReader::coalescing`); the model tests look here.
    #[cfg(test)]
    pub(crate) fn on(&self) -> bool {
        self.on
    }

    /// A turn read `n` bytes (and drained the socket, or stopped at its
    /// share) at `now`; turns that found nothing are not counted. Returns
    /// the new setting when it changes.
    pub(crate) fn read(&mut self, n: usize, now: Instant) -> Option<bool> {
        let since = *self.since.get_or_insert(now);
        self.bytes = self.bytes.saturating_add(n);
        let elapsed = now.saturating_duration_since(since);
        if elapsed < WINDOW {
            return None;
        }
        // Busy: at least LOWAT bytes per LINGER over the window.
        let busy = self.bytes as u128 * LINGER.as_nanos() >= LOWAT as u128 * elapsed.as_nanos();
        self.since = Some(now);
        self.bytes = 0;
        self.set(busy)
    }

    /// The `LINGER` timer fired before `LOWAT` bytes came: the link is no
    /// longer that busy.
    pub(crate) fn lingered(&mut self, now: Instant) -> Option<bool> {
        self.since = Some(now);
        self.bytes = 0;
        self.set(false)
    }

    fn set(&mut self, on: bool) -> Option<bool> {
        if self.on == on {
            return None;
        }
        self.on = on;
        Some(on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A socket with SO_RCVLOWAT semantics and a reader that waits on it
    /// with the `LINGER` timer, in simulated time (µs). Returns per byte
    /// batch the delay until read, and the number of wake-ups.
    struct Sim {
        c: Coalescer,
        t0: Instant,
        /// (arrival µs, bytes) not read yet.
        waiting: Vec<(u64, usize)>,
        wakes: usize,
        worst_delay: u64,
        /// The reader waits; with the timer at this µs (when on).
        timer_at: Option<u64>,
    }

    impl Sim {
        fn new() -> Sim {
            Sim {
                c: Coalescer::default(),
                t0: Instant::now(),
                waiting: Vec::new(),
                wakes: 0,
                worst_delay: 0,
                timer_at: None,
            }
        }

        fn at(&self, us: u64) -> Instant {
            self.t0 + Duration::from_micros(us)
        }

        fn avail(&self) -> usize {
            self.waiting.iter().map(|w| w.1).sum()
        }

        /// The reader wakes at `now` (bytes or the timer) and drains.
        fn wake(&mut self, now: u64, by_timer: bool) {
            self.wakes += 1;
            let n = self.avail();
            for (arrived, _) in self.waiting.drain(..) {
                self.worst_delay = self.worst_delay.max(now - arrived);
            }
            let at = self.at(now);
            if by_timer && n < LOWAT {
                self.c.lingered(at);
            } else {
                self.c.read(n, at);
            }
            self.timer_at = self.c.on().then_some(now + LINGER.as_micros() as u64);
        }

        /// Bytes arrive at `now`; first the timer, if it was due.
        fn arrive(&mut self, now: u64, n: usize) {
            if let Some(t) = self.timer_at {
                if t <= now {
                    self.wake(t, true);
                }
            }
            self.waiting.push((now, n));
            let lowat = if self.c.on() { LOWAT } else { 1 };
            if self.avail() >= lowat {
                self.wake(now, false);
            }
        }

        fn finish(&mut self, now: u64) {
            while !self.waiting.is_empty() {
                let t = self
                    .timer_at
                    .expect("bytes below the low mark with no timer");
                self.wake(t.max(now), true);
            }
        }
    }

    #[test]
    fn a_quiet_link_wakes_the_reader_at_every_write() {
        // 10,000 writes of 150 bytes a second: 1.5 MB/s.
        let mut sim = Sim::new();
        for i in 0..5_000u64 {
            sim.arrive(i * 100, 150);
            assert!(!sim.c.on(), "coalescing at 1.5 MB/s (write {i})");
        }
        assert_eq!(sim.wakes, 5_000);
        assert_eq!(sim.worst_delay, 0);
    }

    #[test]
    fn a_busy_link_wakes_the_reader_once_per_lowat() {
        // A write of 900 bytes every 50 µs: 18 MB/s.
        let mut sim = Sim::new();
        let writes = 20_000u64;
        for i in 0..writes {
            sim.arrive(i * 50, 900);
        }
        sim.finish(writes * 50);
        assert!(sim.c.on());
        // 900 B per write and 2,048 B per wake: a wake per 3 writes.
        assert!(sim.wakes as u64 <= writes / 3 + 100, "{} wakes", sim.wakes);
        assert!(sim.worst_delay <= LINGER.as_micros() as u64);
    }

    #[test]
    fn the_end_of_a_burst_waits_at_most_linger() {
        let mut sim = Sim::new();
        for i in 0..1_000u64 {
            sim.arrive(i * 10, 600);
        }
        assert!(sim.c.on());
        // One last small write, then silence.
        sim.arrive(10_000, 100);
        sim.finish(10_000);
        assert!(sim.worst_delay <= LINGER.as_micros() as u64);
        assert!(!sim.c.on(), "still coalescing after the burst ended");
        // And the next lone write is read at once.
        sim.arrive(50_000, 100);
        assert_eq!(sim.avail(), 0);
    }

    proptest! {
        /// Whatever the pattern of writes, no byte waits longer than
        /// LINGER, and a link below LOWAT per LINGER never coalesces for
        /// long.
        #[test]
        fn no_byte_waits_longer_than_linger(
            gaps in prop::collection::vec((0u64..400, 1usize..3000), 1..2000)
        ) {
            let mut sim = Sim::new();
            let mut now = 0u64;
            for (gap, n) in gaps {
                now += gap;
                sim.arrive(now, n);
            }
            sim.finish(now);
            prop_assert!(sim.worst_delay <= LINGER.as_micros() as u64,
                "a byte waited {} µs", sim.worst_delay);
        }
    }
}

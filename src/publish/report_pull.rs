//! Delivery reports in pull mode (`amqp_reports_pull`, `amqp_poll_reports`):
//! for event-loop bindings, whose code must not run on a library thread.
//! Reports wait here until polled; each keeps its message's buffer room
//! until then, so an application that never polls gets
//! `AMQP_ERR_BUFFER_FULL` and memory stays bounded by the buffer's limits.

use super::buffer::PublishBuffer;
use super::message::Report;
use crate::notifier::Notifier;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The reports of one step of the outbox, and the room they hold.
struct Held {
    reports: VecDeque<Report>,
    /// Messages of this step not polled yet (their room is still held).
    count: u64,
    bytes: u64,
    buffer: Arc<PublishBuffer>,
}

#[derive(Default)]
struct State {
    held: VecDeque<Held>,
    /// The sum of `held`'s counts (read by the stats on every call).
    held_count: u64,
    /// The connection closed or failed: once empty, polls learn it.
    ended: bool,
    notifier: Option<Notifier>,
}

impl State {
    /// Keeps the descriptor readable exactly while reports wait (and for
    /// good once ended).
    fn signal(&mut self) {
        let on = self.ended || !self.held.is_empty();
        if let Some(n) = &mut self.notifier {
            n.show(on);
        }
    }
}

/// What a poll found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Polled {
    Reports(usize),
    TimedOut,
    Ended,
}

/// The reports of one queue waiting to be polled.
#[derive(Default)]
pub(crate) struct ReportPull {
    state: Mutex<State>,
    ready: Condvar,
}

impl ReportPull {
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// A new descriptor, readable while reports wait (the pipe is made by
    /// the first call).
    pub fn descriptor(&self) -> std::io::Result<OwnedFd> {
        let mut st = self.lock();
        if st.notifier.is_none() {
            st.notifier = Some(Notifier::new()?);
            st.signal();
        }
        st.notifier.as_ref().expect("made above").duplicate()
    }

    /// Keeps a step's reports (and their room) until polled.
    pub fn push(&self, reports: Vec<Report>, count: u64, bytes: u64, buffer: &Arc<PublishBuffer>) {
        if count == 0 {
            return;
        }
        let mut st = self.lock();
        st.held_count += count;
        st.held.push_back(Held {
            reports: reports.into(),
            count,
            bytes,
            buffer: buffer.clone(),
        });
        st.signal();
        drop(st);
        self.ready.notify_all();
    }

    /// Messages whose reports wait here.
    pub fn held(&self) -> u64 {
        self.lock().held_count
    }

    /// No more reports will come once what is held is polled.
    pub fn end(&self) {
        let mut st = self.lock();
        st.ended = true;
        st.signal();
        drop(st);
        self.ready.notify_all();
    }

    /// Moves up to `max` reports into `out`, waiting up to `timeout` for
    /// the first. The room of every report taken is freed.
    pub fn poll(&self, out: &mut Vec<Report>, max: usize, timeout: Duration) -> Polled {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while st.held.is_empty() {
            if st.ended {
                return Polled::Ended;
            }
            let now = Instant::now();
            if now >= deadline {
                return Polled::TimedOut;
            }
            st = self
                .ready
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let mut taken = 0;
        while taken < max {
            let Some(front) = st.held.front_mut() else {
                break;
            };
            let n = (max - taken).min(front.reports.len());
            out.extend(front.reports.drain(..n));
            taken += n;
            if front.reports.is_empty() {
                let done = st.held.pop_front().expect("the front");
                st.held_count -= done.count;
                done.buffer.release_many(done.count, done.bytes);
            } else {
                // Each report taken frees its message's place now; the
                // step's bytes go with its last report.
                let freed = (n as u64).min(front.count);
                front.count -= freed;
                front.buffer.release_many(freed, 0);
                st.held_count -= freed;
            }
        }
        st.signal();
        Polled::Reports(taken)
    }
}

impl Drop for ReportPull {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for h in st.held.drain(..) {
            h.buffer.release_many(h.count, h.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::message::Outcome;

    fn report(tag: u64) -> Report {
        Report {
            tag,
            outcome: Outcome::Confirmed,
            attempts: 1,
            code: 0,
            reason: None,
        }
    }

    #[test]
    fn reports_come_out_in_order_in_batches_and_free_their_room_when_taken() {
        let buffer = Arc::new(PublishBuffer::new(100, 1 << 20));
        for _ in 0..5 {
            buffer.push(&[0; 10]).unwrap();
        }
        let pull = ReportPull::default();
        pull.push(vec![report(1), report(2), report(3)], 3, 30, &buffer);
        pull.push(vec![report(4), report(5)], 2, 20, &buffer);
        let mut out = Vec::new();
        assert_eq!(pull.held(), 5);
        assert_eq!(pull.poll(&mut out, 2, Duration::ZERO), Polled::Reports(2));
        assert_eq!(pull.held(), 3);
        assert_eq!(buffer.count(), 3, "each report taken frees its place");
        assert_eq!(
            buffer.bytes(),
            50,
            "the bytes go with the step's last report"
        );
        assert_eq!(pull.poll(&mut out, 10, Duration::ZERO), Polled::Reports(3));
        let tags: Vec<u64> = out.iter().map(|r| r.tag).collect();
        assert_eq!(tags, vec![1, 2, 3, 4, 5]);
        assert_eq!(buffer.count(), 0);
        assert_eq!(pull.held(), 0);
        assert_eq!(pull.poll(&mut out, 10, Duration::ZERO), Polled::TimedOut);
        pull.end();
        assert_eq!(pull.poll(&mut out, 10, Duration::ZERO), Polled::Ended);
    }

    #[test]
    fn reports_held_at_the_end_are_still_polled_before_ended() {
        let buffer = Arc::new(PublishBuffer::new(100, 1 << 20));
        buffer.push(&[0; 10]).unwrap();
        let pull = ReportPull::default();
        pull.end();
        pull.push(vec![report(7)], 1, 10, &buffer);
        let mut out = Vec::new();
        assert_eq!(pull.poll(&mut out, 10, Duration::ZERO), Polled::Reports(1));
        assert_eq!(pull.poll(&mut out, 10, Duration::ZERO), Polled::Ended);
    }

    #[test]
    fn a_waiting_poll_wakes_on_a_push() {
        let buffer = Arc::new(PublishBuffer::new(100, 1 << 20));
        buffer.push(&[0; 10]).unwrap();
        let pull = Arc::new(ReportPull::default());
        let p = pull.clone();
        let t = std::thread::spawn(move || {
            let mut out = Vec::new();
            (p.poll(&mut out, 10, Duration::from_secs(10)), out.len())
        });
        std::thread::sleep(Duration::from_millis(20));
        pull.push(vec![report(1)], 1, 10, &buffer);
        assert_eq!(t.join().unwrap(), (Polled::Reports(1), 1));
    }
}

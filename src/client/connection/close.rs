//! `amqp_close_graceful` / `amqp_close_ex`: refuse publishes, stop the
//! consumers, wait for confirms, running callbacks and deferred deliveries,
//! close.

use super::{Connection, ConnectionState};
use crate::client::Queue;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a close left undone at its deadline (all 0: a clean close).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CloseReport {
    /// Publishes not confirmed.
    pub unsent: u64,
    /// Deliveries deferred (or polled) and not settled.
    pub unsettled: u64,
    /// Callbacks still running (the caller's own not counted).
    pub callbacks_running: u64,
}

impl CloseReport {
    fn of(queues: &[Arc<Queue>]) -> CloseReport {
        let mut r = CloseReport::default();
        for q in queues {
            r.unsent += q.outbox.unconfirmed();
            r.unsettled += q.consumers.stats.unsettled.load(Ordering::Relaxed);
            r.callbacks_running += q.consumers.callbacks_running();
        }
        r
    }

    pub fn clean(&self) -> bool {
        *self == CloseReport::default()
    }
}

impl Connection {
    /// Refuses publishes, stops consumers, waits up to `timeout` until every
    /// buffered and in-flight message is confirmed, no callback runs and
    /// every deferred delivery is settled; then closes. Reports what was
    /// left at the deadline.
    pub fn close(&self, timeout: Duration) -> CloseReport {
        let deadline = Instant::now() + timeout;
        let queues = {
            let s = self.lock();
            s.queues.clone()
        };
        for q in &queues {
            q.outbox.close_for_publishing();
        }
        // Closed from now on (publishes refused, state reported); the link
        // stays up until the buffers drained and the deferred deliveries
        // were settled.
        self.set_state(ConnectionState::Closed);
        for q in &queues {
            q.consumers.shutdown(deadline);
        }
        let mut report = CloseReport::of(&queues);
        while !report.clean() && Instant::now() < deadline {
            if self.failed.load(Ordering::SeqCst) {
                break; // nothing can drain any more
            }
            std::thread::sleep(Duration::from_millis(2));
            report = CloseReport::of(&queues);
        }
        await_polled_reports(&queues, deadline);
        // Settles made while we waited go out before the connection.
        for q in &queues {
            q.consumers.flush(Duration::from_millis(200));
        }
        self.shutdown.send_replace(true);
        for link in &self.links {
            link.env.link.send_modify(|l| l.up = false);
        }
        // What is left is reported (Unsent) once its publisher stopped.
        for q in &queues {
            q.outbox.abandon(Duration::from_millis(500));
            q.outbox.end_reports();
            // Free for the next user when this returns, whoever still holds
            // the outbox; what was unsent stays in it.
            if let Some(spool) = q.outbox.spool() {
                spool.close();
            }
        }
        let thread = self
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread {
            let wait = deadline.max(Instant::now() + Duration::from_secs(1));
            if !t.close(wait) {
                warn!("close: a delivery report function is still running");
            }
        }
        report
    }
}

/// Pull-mode reports still waiting: a polling application (an event loop
/// beside this close) gets them before the queues go, within `deadline`;
/// one that does not poll costs at most POLL_GRACE.
fn await_polled_reports(queues: &[Arc<Queue>], deadline: Instant) {
    const POLL_GRACE: Duration = Duration::from_millis(200);
    let held = || -> u64 {
        let pulls = queues.iter().filter_map(|q| q.outbox.report_pull());
        pulls.map(|p| p.held()).sum()
    };
    let (mut last, mut since) = (held(), Instant::now());
    while last > 0 && Instant::now() < deadline && since.elapsed() < POLL_GRACE {
        std::thread::sleep(Duration::from_millis(2));
        let now = held();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

//! Delivery reports and publish timeouts of a connection's queues.

use super::{Connection, ConnectionState};
use crate::client::Queue;
use crate::error::{Error, ErrorKind, Result};
use crate::publish::{Polled, Report, ReportFn, ReportPull, ReportThread, Reporting};
use crate::runtime;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

impl Connection {
    /// `amqp_set_report_callback`: `callback` gets the report of each of
    /// the queue's messages that ends from now on (`None`: no more).
    pub fn set_report_callback(&self, q: &Queue, callback: Option<ReportFn>) -> Result<()> {
        let Some(callback) = callback else {
            q.outbox.set_reporting(None);
            return Ok(());
        };
        let thread = {
            let mut slot = crate::sync::lock(&self.reports);
            match &*slot {
                Some(t) => t.clone(),
                None => {
                    let t = ReportThread::start().ok_or_else(|| {
                        Error::new(
                            ErrorKind::Internal,
                            "cannot start the delivery report thread",
                        )
                    })?;
                    *slot = Some(t.clone());
                    t
                }
            }
        };
        q.outbox
            .set_reporting(Some(Reporting::Thread { callback, thread }));
        Ok(())
    }
}

impl Connection {
    /// `amqp_reports_pull`: the queue's reports wait to be polled from now
    /// on (a report function set before is replaced); a new descriptor when
    /// `want_fd`.
    pub fn reports_pull(&self, q: &Queue, want_fd: bool) -> Result<Option<OwnedFd>> {
        let pull = match q.outbox.report_pull() {
            Some(p) => p,
            None => {
                let p = Arc::new(ReportPull::default());
                let s = self.lock().state;
                if matches!(s, ConnectionState::Closed | ConnectionState::Failed) {
                    p.end();
                }
                q.outbox.set_reporting(Some(Reporting::Pull(p.clone())));
                p
            }
        };
        if !want_fd {
            return Ok(None);
        }
        let fd = pull
            .descriptor()
            .map_err(|e| Error::internal(format!("cannot create a descriptor: {e}")))?;
        Ok(Some(fd))
    }

    /// `amqp_poll_reports`: up to `max` reports into `out`, waiting up to
    /// `timeout` for the first.
    pub fn poll_reports(
        &self,
        q: &Queue,
        out: &mut Vec<Report>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize> {
        let Some(pull) = q.outbox.report_pull() else {
            return Err(Error::invalid(
                "the queue's reports are not in pull mode (call amqp_reports_pull first)",
            ));
        };
        match pull.poll(out, max, timeout) {
            Polled::Reports(n) => Ok(n),
            Polled::TimedOut => Err(Error::new(ErrorKind::Timeout, String::new())),
            Polled::Ended => Err(Error::closed(
                "the connection is closed or failed for good (no reports wait)",
            )),
        }
    }
}

/// With a publish timeout, messages expire while no channel sends them
/// (the broker away): looked at every eighth of the timeout (10 ms to 1 s)
/// until the queue is gone.
pub(super) fn spawn_expiry(q: &Arc<Queue>) {
    let Some(timeout) = q.outbox.publish_timeout() else {
        return;
    };
    let every = (timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let weak = Arc::downgrade(q);
    runtime::spawn("publish expiry", async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(q) = weak.upgrade() else { break };
            if q.outbox.is_closed() {
                break;
            }
            q.outbox.sweep_expired();
        }
    });
}

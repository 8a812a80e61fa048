//! Delivery reports and publish timeouts of a connection's queues.

use super::Connection;
use crate::client::Queue;
use crate::error::{Error, ErrorKind, Result};
use crate::publish::{ReportFn, ReportThread, Reporting};
use crate::runtime;
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
            let mut slot = self.reports.lock().unwrap_or_else(|p| p.into_inner());
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
        q.outbox.set_reporting(Some(Reporting { callback, thread }));
        Ok(())
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

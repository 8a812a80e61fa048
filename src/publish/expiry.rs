//! A message's publish timeout (queue option publish_timeout_ms): while
//! no publisher runs, a sweep fails the messages whose time is up.

use super::message::{Failure, Message, Outcome};
use super::{lock, Outbox};
use std::time::Duration;

impl Outbox {
    /// Without a publisher running (no channel), fails the messages whose
    /// publish timeout passed, oldest first.
    pub fn sweep_expired(&self) {
        let Some(timeout) = self.settings.publish_timeout else {
            return;
        };
        let Ok(_running) = self.running.try_lock() else {
            return; // a publisher runs: it checks as it sends
        };
        let now = self.now_ms();
        let f = self.expiry(timeout);
        let mut ends = self.ends();
        let mut carry = lock(&self.carry);
        while carry
            .retry
            .front()
            .is_some_and(|m| expired(m, now, timeout))
        {
            if let Some(m) = carry.retry.pop_front() {
                carry.suspects = carry.suspects.saturating_sub(1);
                ends.failed(m, &f);
            }
        }
        if carry.retry.is_empty() {
            while let Some(m) = self.buffer.pop() {
                if expired(&m, now, timeout) {
                    ends.failed(m, &f);
                } else {
                    // Next in line either way: sent before the buffer.
                    carry.retry.push_back(m);
                    break;
                }
            }
        }
        drop(carry);
        self.finish(ends);
    }

    pub(super) fn expiry(&self, timeout: Duration) -> Failure {
        Failure::new(
            Outcome::Expired,
            0,
            format!(
                "not confirmed within publish_timeout_ms {}",
                timeout.as_millis()
            ),
        )
    }
}

/// Whether `m` was published more than `timeout` before `now_ms`. Both
/// times are whole milliseconds, rounded down: "more than" keeps a message
/// from expiring before its full timeout passed (it may expire up to 1 ms
/// after).
pub(super) fn expired(m: &Message, now_ms: u32, timeout: Duration) -> bool {
    u128::from(now_ms.wrapping_sub(m.born_ms())) > timeout.as_millis()
}

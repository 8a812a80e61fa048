//! Applying the broker's confirms to the window: acks end messages,
//! nacks send them again (or fail them), returns mark them unroutable.

use super::Live;
use crate::backoff;
use crate::publish::carry::Verdict;
use crate::publish::message::{self, Message, Outcome};
use crate::publish::window::ConfirmWindow;
use crate::publish::Outbox;
use crate::wire::Confirm;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Outbox {
    /// Applies the confirms taken, in arrival order, then releases the
    /// settled ones from the front of the window: acked ones are confirmed;
    /// nacked ones go to the front of the retry queue, in order, after a
    /// backoff, or fail once nacked more than `publish_retries` times.
    /// Some: a `TopologyLost`, with nothing after it applied.
    pub(super) fn apply_confirms(&self, run: &mut Live) -> Option<String> {
        let (nacked, lost) = take_confirms(run, self.settings.routing_key.as_bytes());
        if nacked > 0 {
            self.stats.nacked.fetch_add(nacked, Ordering::Relaxed);
        }
        let mut ends = self.ends();
        let retries = self.settings.publish_retries;
        let too_often = || {
            message::Failure::new(
                Outcome::Nacked,
                0,
                format!("nacked by the broker {} times", u32::from(retries) + 1),
            )
        };
        let (mut resend, mut failed, mut acked) = (Vec::new(), None, false);
        let carry = &mut run.carry;
        let before = run.window.len();
        run.window.release_settled_with(|mut msg, ack| {
            match carry.released(&mut msg, ack, retries) {
                Verdict::Confirmed if msg.returned.is_some() => {
                    acked = true;
                    let f = unroutable(&msg);
                    ends.failed(msg, &f);
                }
                Verdict::Confirmed => {
                    acked = true;
                    ends.confirmed(msg);
                }
                Verdict::Failed => ends.failed(msg, failed.get_or_insert_with(too_often)),
                Verdict::Resend => resend.push(msg),
            }
        });
        if run.window.len() < before {
            run.progress = Instant::now();
        }
        if ends.tally().unroutable > 0 && self.first_of_incident(Outcome::Unroutable) {
            warn!(
                "queue '{}': {} message(s) published with a routing key of their own came back unroutable (reported, counted in unroutable)",
                self.settings.queue,
                ends.tally().unroutable
            );
        }
        if let Some(f) = failed
            .as_ref()
            .filter(|_| self.first_of_incident(Outcome::Nacked))
        {
            warn!(
                "queue '{}': {} message(s) {}: failed (publish_retries {})",
                self.settings.queue,
                ends.tally().failed,
                f.reason,
                retries
            );
        }
        let (base, max) = (self.settings.retry_delay, self.settings.retry_delay_max);
        let streak = carry.nack_streak;
        let nacked = resend.len();
        let began = carry.resend(resend, acked, Instant::now(), |step| {
            backoff::delay(base, max, step)
        });
        if let (Some(delay), 0) = (began, streak) {
            warn!(
                "queue '{}': the broker nacked {nacked} message(s); resending after {delay:?} (up to publish_retries {retries} times each)",
                self.settings.queue
            );
        }
        self.finish(ends);
        self.stats
            .in_flight
            .store(run.window.len() as u64, Ordering::Relaxed);
        lost
    }
}

/// The failure of a message the broker returned for its own routing key.
fn unroutable(m: &Message) -> message::Failure {
    let key = String::from_utf8_lossy(m.meta().0.unwrap_or_default()).into_owned();
    let code = m.returned.unwrap_or(312);
    message::Failure::new(
        Outcome::Unroutable,
        code,
        format!("returned by the broker ({code}): no queue is bound to routing key '{key}'"),
    )
}

/// A return for a message's own key: the first pending message sent with
/// that key and not returned yet is the one (the broker returns in publish
/// order, before the message's ack). Its ack then ends it as unroutable.
fn mark_returned(window: &mut ConfirmWindow<Message>, code: u16, routing_key: &[u8]) {
    let returned = window
        .pending_mut()
        .find(|m| m.returned.is_none() && m.meta().0 == Some(routing_key));
    if let Some(m) = returned {
        m.returned = Some(code);
    }
}

/// Marks the window by the confirms taken, in arrival order: (messages
/// nacked, the reason if the queue is gone, with nothing after it applied).
fn take_confirms(run: &mut Live, own_key: &[u8]) -> (u64, Option<String>) {
    let mut lost = None;
    let mut nacked = 0;
    for c in run.confirms.drain(..) {
        match c {
            Confirm::Settled {
                tag,
                multiple,
                nack,
            } => nacked += run.window.settle(tag, multiple, nack),
            Confirm::Returned {
                routing_key, code, ..
            } if routing_key != own_key => mark_returned(&mut run.window, code, &routing_key),
            Confirm::Returned { text, .. } => {
                // The queue's own key: the queue is gone. Nothing after
                // this may be applied: the message's ack follows.
                lost = Some(format!(
                    "the broker returned a message: {text} (its queue was deleted?)"
                ));
                break;
            }
            Confirm::TopologyLost(why) => {
                lost = Some(why);
                break;
            }
        }
    }
    (nacked, lost)
}

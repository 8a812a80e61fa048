//! The topology check: while a queue's session publishes, a passive
//! queue.declare on its channel every `topology_check_ms` asks whether the
//! queue still exists. Mandatory publishes notice a deleted queue only when
//! a message comes back unroutable; with another queue bound to the same
//! (fanout, topic...) exchange the message is routed there, confirmed, and
//! nothing comes back. A 404 closes the channel (the broker's answer to a
//! passive declare of a missing queue): the publisher ends, and the session
//! reopens the channel and declares the queue, exchange and binding again.

use super::queue::Queue;
use crate::wire::{Failure, WireChannel};
use std::convert::Infallible;

/// Checks until the channel closes; never returns (the session's publisher
/// ends the run).
pub(super) async fn watch(q: &Queue, ch: &WireChannel) -> Infallible {
    let Some(every) = q.topology_check() else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !ch.is_open() {
            break;
        }
        let name = q.live_name();
        match ch.queue_exists(&name).await {
            Ok(()) => {}
            Err(Failure::Refused { text, .. }) => {
                warn!("queue '{name}' is gone at the broker ({text}); declaring it again");
                break;
            }
            // The channel or the link failed: the publisher sees it too.
            Err(_) => break,
        }
    }
    std::future::pending().await
}

//! Channels per connection: each queue uses one channel of the
//! connection's publish side, and the broker allows `channel_max` of them
//! (agreed in tune-ok; before the first connect, what we propose). A queue
//! too many is refused at open; queues beyond a lower limit agreed on a
//! reconnect get no session and say so once, at ERROR.

use crate::client::Queue;
use crate::error::{Error, ErrorKind, Result};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

pub(super) struct ChannelLimit {
    /// The last channel_max agreed, or the one we propose.
    limit: AtomicU32,
    /// (limit << 32 | queues) of the last ERROR about queues beyond the
    /// limit; 0 while none is beyond.
    reported: AtomicU64,
}

impl ChannelLimit {
    pub(super) fn new(proposed: u16) -> ChannelLimit {
        ChannelLimit {
            limit: AtomicU32::new(u32::from(proposed)),
            reported: AtomicU64::new(0),
        }
    }

    pub(super) fn set(&self, agreed: u16) {
        self.limit.store(u32::from(agreed), Ordering::Relaxed);
    }

    pub(super) fn get(&self) -> usize {
        self.limit.load(Ordering::Relaxed) as usize
    }

    /// Err when a connection with `queues` queues has no channel for one more.
    pub(super) fn check_room(&self, queues: usize) -> Result<()> {
        let limit = self.get();
        if queues < limit {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Broker,
            format!(
                "the broker allows {limit} channels per connection (channel_max); this \
                 connection has {queues} queues: open more on another connection"
            ),
        ))
    }

    /// How many of `queues` (the first ones) get a channel; the rest wait,
    /// buffering, for a connection that allows more. Logged at ERROR once
    /// per (limit, queue count), not per reconnect.
    pub(super) fn served(&self, queues: &[Arc<Queue>], on_error: impl FnOnce(String)) -> usize {
        let limit = self.get();
        if queues.len() <= limit {
            self.reported.store(0, Ordering::Relaxed);
            return queues.len();
        }
        let key = (limit as u64) << 32 | queues.len() as u64;
        if self.reported.swap(key, Ordering::Relaxed) != key {
            let beyond = &queues[limit..];
            let mut names: Vec<String> = beyond
                .iter()
                .take(5)
                .map(|q| format!("'{}'", q.name))
                .collect();
            if beyond.len() > 5 {
                names.push(format!("and {} more", beyond.len() - 5));
            }
            let msg = format!(
                "the broker allows {limit} channels per connection (channel_max); this \
                 connection has {} queues: {} of them ({}) get no channel and send nothing \
                 (their messages stay buffered) until a connection allows more; open them on \
                 another connection",
                queues.len(),
                beyond.len(),
                names.join(", ")
            );
            error!("{msg}");
            on_error(msg);
        }
        limit
    }
}

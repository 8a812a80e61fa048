//! A queue's spool (queue option `spool_dir`, `crate::spool`) as the outbox
//! uses it: `store` appends every message to it before `amqp_publish`
//! returns, `finish` forgets the ones that ended (all but `Unsent`: a
//! message still unconfirmed when the connection closes stays in the spool
//! for the next process), and a new outbox sends what an earlier process
//! left in it first.

use super::Outbox;
use crate::spool::{Record, Spool};
use std::sync::Arc;

impl Outbox {
    /// Keeps this queue's messages in `spool` from now on; `restored` (what
    /// an earlier process left, oldest first) goes into the buffer ahead of
    /// every new publish, whatever its bounds.
    pub fn with_spool(mut self, spool: Arc<Spool>, restored: Vec<Record>) -> Outbox {
        if !restored.is_empty() {
            warn!(
                "queue '{}': {} unconfirmed message(s) from {} are sent first",
                self.settings.queue,
                restored.len(),
                spool.dir().display()
            );
        }
        for r in restored {
            self.buffer.push_restored(&r.body, r.tag, r.seq, &r.meta);
        }
        self.spool = Some(spool);
        self
    }

    /// The spool's counters, if the queue has one.
    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }
}

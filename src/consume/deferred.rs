//! Settling by delivery id: a delivery's `Ticket` (what deciding it needs)
//! lives with its worker while the callback runs, and in a process-wide
//! table once the callback deferred it (or, in pull mode, once it was
//! polled) until `amqp_settle` decides it.
//!
//! Ids are unique in the process for its life: a 52-bit counter tagged with
//! bit 52, so every id is below 2^53 (exact in a double) and none is a
//! small number that a broker delivery tag or an accident would be.

use super::dedupe::Remember;
use super::settle_book::Settle;
use super::settler::Settler;
use crate::error::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const ID_TAG: u64 = 1 << 52;
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh delivery id.
pub(crate) fn next_id() -> u64 {
    ID_TAG | (NEXT_ID.fetch_add(1, Ordering::Relaxed) & (ID_TAG - 1))
}

/// Whether `id` was ever handed out (whatever became of it since).
fn was_issued(id: u64) -> bool {
    id & !(ID_TAG - 1) == ID_TAG && (id & (ID_TAG - 1)) < NEXT_ID.load(Ordering::Relaxed)
}

/// What settling one delivery needs: its channel's settler and its tag.
pub(super) struct Ticket {
    pub settler: Arc<Settler>,
    pub tag: u64,
    /// Its consumer's count of undecided deliveries (the prefetch check).
    pub unsettled: Arc<AtomicU64>,
    /// Its message_id, remembered when it is acked (queue option dedupe).
    pub remember: Option<Box<Remember>>,
}

impl Ticket {
    pub fn new(settler: &Arc<Settler>, tag: u64, unsettled: &Arc<AtomicU64>) -> Ticket {
        Ticket {
            settler: settler.clone(),
            tag,
            unsettled: unsettled.clone(),
            remember: None,
        }
    }

    /// Records the decision on the delivery's own channel.
    pub fn decide(self, how: Settle) {
        self.remember_if(how);
        self.unsettled.fetch_sub(1, Ordering::Relaxed);
        self.settler.decide(self.tag, how);
    }

    /// An ack remembers the message_id (queue option dedupe), also when its
    /// channel is gone: the application handled the message, and the
    /// broker's redelivery is a duplicate.
    fn remember_if(&self, how: Settle) {
        if let (Settle::Ack, Some(r)) = (how, &self.remember) {
            r.dedupe.remember(&r.id);
        }
    }

    /// Decides unless the channel is gone (then nothing is applied: the
    /// broker redelivers, and a tag is never acked on another channel).
    pub fn settle(self, how: Settle) -> Result<()> {
        if !self.settler.channel_open() {
            self.remember_if(how);
            self.unsettled.fetch_sub(1, Ordering::Relaxed);
            return Err(stale());
        }
        self.decide(how);
        Ok(())
    }
}

fn stale() -> Error {
    Error::new(
        ErrorKind::StaleDelivery,
        "the delivery's channel is gone (reconnect or channel closed); the broker redelivers it",
    )
}

pub(super) fn already_settled() -> Error {
    Error::new(
        ErrorKind::AlreadySettled,
        "the delivery was settled already",
    )
}

/// The delivery a worker's callback is running on, settleable by id from
/// any thread while it runs. `ticket` None: settled during the callback.
pub(super) struct Running {
    pub id: u64,
    pub ticket: Option<Ticket>,
}

/// A deferred (or polled) delivery waiting for `amqp_settle`; `ticket` None:
/// its channel is gone (a settle gets AMQP_ERR_STALE_DELIVERY once).
struct Parked {
    queue_id: u64,
    ticket: Option<Ticket>,
}

static PARKED: Mutex<Option<HashMap<u64, Parked>>> = Mutex::new(None);

fn parked() -> MutexGuard<'static, Option<HashMap<u64, Parked>>> {
    PARKED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps a delivery of queue `queue_id` for a later `amqp_settle`.
pub(super) fn park(id: u64, queue_id: u64, ticket: Ticket) {
    let mut p = parked();
    p.get_or_insert_with(HashMap::new).insert(
        id,
        Parked {
            queue_id,
            ticket: Some(ticket),
        },
    );
}

/// Keeps a batch of polled deliveries of queue `queue_id` (one lock).
pub(super) fn park_many(queue_id: u64, tickets: Vec<(u64, Ticket)>) {
    if tickets.is_empty() {
        return;
    }
    let mut p = parked();
    let map = p.get_or_insert_with(HashMap::new);
    for (id, ticket) in tickets {
        let ticket = Some(ticket);
        map.insert(id, Parked { queue_id, ticket });
    }
}

/// What a settle found in the parked table.
pub(super) enum Unparked {
    /// A parked delivery (of this queue, or refused as another queue's).
    /// `counted`: it was in this queue's `unsettled` count, and leaves it.
    Done { result: Result<()>, counted: bool },
    /// Not parked (maybe running in a callback, or settled already).
    Absent,
}

/// Settles the parked delivery `id` of queue `queue_id`, if it is parked.
pub(super) fn settle_parked(id: u64, queue_id: u64, how: Settle) -> Unparked {
    let entry = {
        let mut p = parked();
        let Some(map) = p.as_mut() else {
            return Unparked::Absent;
        };
        match map.get(&id) {
            None => return Unparked::Absent,
            Some(e) if e.queue_id != queue_id => {
                return Unparked::Done {
                    result: Err(Error::invalid(format!(
                        "delivery {id} belongs to another queue; nothing applied"
                    ))),
                    counted: false,
                }
            }
            Some(_) => map.remove(&id),
        }
    };
    match entry.and_then(|e| e.ticket) {
        Some(ticket) => Unparked::Done {
            result: ticket.settle(how),
            counted: true,
        },
        // Marked stale already, and uncounted then.
        None => Unparked::Done {
            result: Err(stale()),
            counted: false,
        },
    }
}

/// The channel `settler` settles on is gone: the parked deliveries of
/// queue `queue_id` on it become stale (they hold nothing of the old channel
/// any more). Returns how many.
pub(super) fn mark_stale(queue_id: u64, settler: &Arc<Settler>) -> u64 {
    let mut p = parked();
    let Some(map) = p.as_mut() else { return 0 };
    let mut n = 0;
    for e in map.values_mut().filter(|e| e.queue_id == queue_id) {
        if e.ticket
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(&t.settler, settler))
        {
            if let Some(t) = e.ticket.take() {
                t.unsettled.fetch_sub(1, Ordering::Relaxed);
            }
            n += 1;
        }
    }
    n
}

/// The error for an id that is neither parked nor running here.
pub(super) fn not_found(id: u64) -> Error {
    if was_issued(id) {
        already_settled()
    } else {
        Error::invalid(format!(
            "{id} is not a delivery id (delivery_id of an amqp_delivery)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_tagged_below_2_pow_53_and_unique() {
        let a = next_id();
        let b = next_id();
        assert_ne!(a, b);
        for id in [a, b] {
            assert!((ID_TAG..1 << 53).contains(&id));
            assert!(was_issued(id));
        }
        assert!(!was_issued(7), "a broker-sized tag is no id");
        assert!(!was_issued(ID_TAG | (ID_TAG - 1)), "not issued yet");
        assert!(matches!(not_found(7).kind, ErrorKind::InvalidArgument));
        assert!(matches!(not_found(a).kind, ErrorKind::AlreadySettled));
    }
}

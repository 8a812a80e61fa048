//! A channel's state as its handles and the reader share it: the waiting
//! call's reply slot, the consumers' sinks, the queue of confirms, and
//! whether it is closed. Knows nothing of the connection.

use super::assembly::Delivery;
use super::{lock, Failure};
use amq_protocol::protocol::AMQPClass;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::{oneshot, Notify};

/// Receives the deliveries of one consumer, on the connection's reader
/// (the runtime thread): it must only hand them on, never block.
pub trait DeliverySink: Send {
    /// Queues one delivery. Err: the broker broke a promise (more unsettled
    /// deliveries than the consumer's prefetch); the connection ends.
    fn deliver(&mut self, delivery: Delivery) -> Result<(), String>;
    /// The end of a burst of frames read at once that brought this
    /// consumer deliveries: wake the consumer.
    fn end_of_burst(&mut self);
}

/// What the broker said about the channel's publishes, in arrival order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// basic.ack / basic.nack.
    Settled {
        tag: u64,
        multiple: bool,
        nack: bool,
    },
    /// The queue is gone: the broker cancelled a consumer. The channel
    /// must be reopened so the topology is declared again; nothing
    /// unconfirmed may be taken as delivered.
    TopologyLost(String),
    /// A publish came back unroutable (basic.return, always before that
    /// message's ack). For the queue's own routing key the queue is gone
    /// (as `TopologyLost`); for a message's own key, that message is.
    Returned {
        code: u16,
        text: String,
        routing_key: Vec<u8>,
    },
}

/// A channel's consumers by tag. A handful per channel (`repeat`), so a
/// scan of short tags beats hashing each delivery's tag (SipHash cost ~130
/// instructions a delivery); lookups by a broker's tag cannot degrade it.
#[derive(Default)]
pub(super) struct Consumers(Vec<(Vec<u8>, Box<dyn DeliverySink>)>);

impl Consumers {
    /// Adds (or replaces) the consumer `tag`.
    pub(super) fn insert(&mut self, tag: Vec<u8>, sink: Box<dyn DeliverySink>) {
        match self.0.iter_mut().find(|(t, _)| *t == tag) {
            Some(slot) => slot.1 = sink,
            None => self.0.push((tag, sink)),
        }
    }

    fn get_mut(&mut self, tag: &[u8]) -> Option<&mut Box<dyn DeliverySink>> {
        self.0
            .iter_mut()
            .find(|(t, _)| t.as_slice() == tag)
            .map(|(_, s)| s)
    }

    fn remove(&mut self, tag: &[u8]) -> Option<Box<dyn DeliverySink>> {
        let at = self.0.iter().position(|(t, _)| t.as_slice() == tag)?;
        Some(self.0.swap_remove(at).1)
    }

    fn sinks_mut(&mut self) -> impl Iterator<Item = &mut Box<dyn DeliverySink>> {
        self.0.iter_mut().map(|(_, s)| s)
    }
}

/// Why a delivery did not reach a consumer.
pub(super) enum Undelivered {
    /// Its consumer is gone (cancelled): it goes back to the queue.
    NoConsumer(Delivery),
    /// Its consumer refused it: the broker broke the protocol.
    Refused(String),
}

/// What a channel's handles and the reader share.
pub(super) struct ChannelState {
    pub(super) id: u16,
    /// Set while holding the connection's output: once set, no frame of
    /// this channel is written, so a stale ack never reaches a reused id.
    pub(super) closed: AtomicBool,
    pub(super) receivers: Mutex<Receivers>,
    /// One call at a time.
    pub(super) rpc: tokio::sync::Mutex<()>,
    pub(super) confirms: Mutex<Vec<Confirm>>,
    /// Publishes sent since confirm.select: the highest tag a confirm may
    /// name. Counted as each is appended, before the broker can see it.
    pub(super) published: AtomicU64,
    pub(super) confirm_wake: Notify,
    /// The publishing thread reads the link itself (`lazy_read`) and takes
    /// this channel's confirms after: its publisher need not be woken.
    pub(super) taking: AtomicBool,
}

/// Where the reader hands what arrives on the channel.
#[derive(Default)]
pub(super) struct Receivers {
    /// The call waiting for its reply.
    pub(super) reply: Option<oneshot::Sender<Result<AMQPClass, Failure>>>,
    pub(super) consumers: Consumers,
    pub(super) close_reason: Option<Failure>,
}

impl ChannelState {
    pub(super) fn new(id: u16) -> ChannelState {
        ChannelState {
            id,
            closed: AtomicBool::new(false),
            receivers: Mutex::new(Receivers::default()),
            rpc: tokio::sync::Mutex::new(()),
            confirms: Mutex::new(Vec::new()),
            published: AtomicU64::new(0),
            confirm_wake: Notify::new(),
            taking: AtomicBool::new(false),
        }
    }

    pub(super) fn receivers(&self) -> MutexGuard<'_, Receivers> {
        lock(&self.receivers)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// The channel is gone (broker close, connection loss, our close):
    /// fail the waiting call, drop the consumers, wake the publisher.
    pub(super) fn close_local(&self, why: Failure) {
        self.closed.store(true, Ordering::Relaxed);
        let (reply, sinks) = {
            let mut r = self.receivers();
            if r.close_reason.is_none() {
                r.close_reason = Some(why.clone());
            }
            (r.reply.take(), std::mem::take(&mut r.consumers))
        };
        if let Some(reply) = reply {
            let _ = reply.send(Err(why));
        }
        drop(sinks);
        self.confirm_wake.notify_one();
    }

    pub(super) fn push_confirm(&self, c: Confirm) {
        let mut q = lock(&self.confirms);
        let was_empty = q.is_empty();
        q.push(c);
        drop(q);
        if was_empty && !self.taking.load(Ordering::Relaxed) {
            self.confirm_wake.notify_one();
        }
    }

    /// Hands a delivery to its consumer; gives it back when the consumer is
    /// gone (cancelled).
    pub(super) fn deliver(&self, delivery: Delivery) -> Result<(), Undelivered> {
        let mut r = self.receivers();
        match r.consumers.get_mut(delivery.consumer_tag()) {
            Some(sink) => sink.deliver(delivery).map_err(Undelivered::Refused),
            None => Err(Undelivered::NoConsumer(delivery)),
        }
    }

    /// After a burst of frames that brought deliveries: let the consumers run.
    pub(super) fn wake_consumers(&self) {
        for sink in self.receivers().consumers.sinks_mut() {
            sink.end_of_burst();
        }
    }

    /// Gives the reply to the waiting call; gives it back when none waits.
    pub(super) fn reply(&self, reply: AMQPClass) -> Result<(), AMQPClass> {
        let waiting = self.receivers().reply.take();
        match waiting {
            Some(w) => {
                let _ = w.send(Ok(reply));
                Ok(())
            }
            None => Err(reply),
        }
    }

    pub(super) fn remove_consumer(&self, tag: &[u8]) {
        let sink = self.receivers().consumers.remove(tag);
        drop(sink); // outside the lock: its drop wakes the consumer
    }
}

//! Pull mode (`amqp_consume_pull`, `amqp_poll`, `amqp_poll_wake`): one
//! broker consumer per queue whose deliveries wait in a `PullQueue` until
//! the application polls them, instead of going to a callback.
//!
//! - The broker's prefetch bounds the waiting queue: a waiting delivery
//!   counts in its consumer's `unsettled` (the prefetch check) from arrival
//!   until it is settled.
//! - Polling hands each delivery out with a fresh id and parks its ticket
//!   (`deferred`), so `amqp_settle` works on it as on a deferred one, stale
//!   after its channel is gone included.
//! - A delivery waits only for the broker consumer it came to: when that
//!   consumer ends (stop, channel lost, close) the ones still waiting are
//!   given back (a no-op on a dead channel: the broker redelivers), never
//!   handed out stale.
//! - The notifier descriptor is readable while deliveries wait, and for
//!   good once the queue has ended (close, failure).

use super::deferred::{self, Ticket};
use super::settle_book::Settle;
use super::settler::Settler;
use super::{ConsumerSet, DeliveryView};
use crate::error::{Error, ErrorKind, Result};
use crate::notifier::Notifier;
use crate::wire::{Delivery, DeliverySink};
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A delivery handed out by `amqp_poll`: the application owns it (the ffi
/// keeps it in the amqp_delivery it returns) and settles it by `id`.
pub(crate) struct Polled {
    delivery: Delivery,
    pub id: u64,
}

impl Polled {
    pub fn view(&self) -> DeliveryView<'_> {
        let d = &self.delivery;
        DeliveryView {
            body: d.body(),
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            exchange: d.exchange(),
            routing_key: d.routing_key(),
            properties: d.properties(),
            delivery_id: self.id,
        }
    }
}

/// A delivery waiting to be polled.
struct Waiting {
    delivery: Delivery,
    ticket: Ticket,
    /// The channel generation it came on.
    generation: u64,
    /// The broker consumer (`PullSink::serial`) it came to.
    sink: u64,
}

/// The deliveries of the queue's pull consumer, waiting to be polled.
pub(crate) struct PullQueue {
    state: Mutex<PullState>,
    ready: Condvar,
}

#[derive(Default)]
struct PullState {
    waiting: VecDeque<Waiting>,
    /// Ended for good (close, failure): polls get AMQP_ERR_CLOSED.
    ended: bool,
    /// Created by the first amqp_consume_pull that asks for a descriptor.
    notifier: Option<Notifier>,
    /// Polls waiting on `ready`.
    blocked: usize,
    /// Counts amqp_poll_wake calls: a blocked poll that sees it change
    /// returns AMQP_ERR_TIMEOUT.
    wakes: u64,
    /// A wake no poll has returned for yet: the next poll that would wait
    /// returns at once instead (a wake racing with the start of a poll is
    /// not lost).
    wake_kept: bool,
}

impl PullState {
    /// Keeps the notifier readable exactly while deliveries wait (and for
    /// good once ended).
    fn signal(&mut self) {
        let on = self.ended || !self.waiting.is_empty();
        if let Some(n) = &mut self.notifier {
            n.show(on);
        }
    }
}

impl PullQueue {
    fn lock(&self) -> MutexGuard<'_, PullState> {
        crate::sync::lock(&self.state)
    }

    /// Takes the waiting deliveries of broker consumer `sink` out.
    fn take_of(&self, sink: u64) -> Vec<Waiting> {
        let mut st = self.lock();
        let mut gone = Vec::new();
        for w in std::mem::take(&mut st.waiting) {
            if w.sink == sink {
                gone.push(w);
            } else {
                st.waiting.push_back(w);
            }
        }
        st.signal();
        gone
    }

    /// Ends the queue for good: pollers wake with AMQP_ERR_CLOSED, the
    /// descriptor stays readable; what waits goes back to the broker.
    fn end(&self) {
        let gone = {
            let mut st = self.lock();
            st.ended = true;
            st.signal();
            std::mem::take(&mut st.waiting)
        };
        self.ready.notify_all();
        for w in gone {
            w.ticket.decide(Settle::Release);
        }
    }
}

/// No error text for an empty poll: the message is an empty String, which
/// allocates nothing.
fn timed_out() -> Error {
    Error::new(ErrorKind::Timeout, String::new())
}

fn ended() -> Error {
    Error::closed("the connection is closed or failed for good")
}

fn no_pull_consumer() -> Error {
    Error::invalid("the queue has no pull consumer (call amqp_consume_pull first)")
}

impl ConsumerSet {
    /// `amqp_consume_pull`: starts the queue's pull consumer (once; later
    /// calls keep it) and, when `want_fd`, returns a new descriptor for it;
    /// and the id of the pull consumer's set when this call added it (for
    /// `await_start`).
    pub fn consume_pull(self: &Arc<Self>, want_fd: bool) -> Result<(Option<OwnedFd>, Option<u64>)> {
        let pull = self.pull.get_or_init(|| {
            Arc::new(PullQueue {
                state: Mutex::default(),
                ready: Condvar::new(),
            })
        });
        if self.ended.load(std::sync::atomic::Ordering::SeqCst) {
            // `end` may have run before the queue existed.
            pull.end();
            return Err(ended());
        }
        let fd = if want_fd {
            let mut st = pull.lock();
            if st.notifier.is_none() {
                let n = Notifier::new()
                    .map_err(|e| Error::internal(format!("cannot create a pipe: {e}")))?;
                st.notifier = Some(n);
                st.signal();
            }
            let n = st.notifier.as_ref().expect("created above");
            let fd = n
                .duplicate()
                .map_err(|e| Error::internal(format!("cannot duplicate a descriptor: {e}")))?;
            Some(fd)
        } else {
            None
        };
        // A refused pull consumer was taken back: the next call adds it again.
        let added = self.add_pull_group(pull.clone())?;
        Ok((fd, added))
    }

    /// The queue ended for good (close or failure): pollers wake with
    /// AMQP_ERR_CLOSED. Never blocks.
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        if let Some(pull) = self.pull.get() {
            pull.end();
        }
    }

    /// `amqp_poll_wake`.
    pub fn poll_wake(&self) -> Result<()> {
        let pull = self.pull.get().ok_or_else(no_pull_consumer)?;
        let mut st = pull.lock();
        st.wakes = st.wakes.wrapping_add(1);
        st.wake_kept = true;
        let blocked = st.blocked > 0;
        drop(st);
        if blocked {
            pull.ready.notify_all();
        }
        Ok(())
    }

    /// `amqp_consume_pull_cancel`: ends the queue's pull consumer, not its
    /// callback sets. Its broker consumer is cancelled; what still waits to
    /// be polled goes back to the broker when the broker consumer ends
    /// (`PullSink`'s drop); polled deliveries stay settleable. A later
    /// `consume_pull` adds a new one. `timeout` None: begins and returns;
    /// else waits that long for the broker's cancel-ok. InvalidArgument
    /// when no pull consumer runs. Blocks the caller briefly (a lock on the
    /// runtime), then up to `timeout`.
    pub fn cancel_pull(self: &Arc<Self>, timeout: Option<Duration>) -> Result<()> {
        if self.ended.load(Ordering::SeqCst) {
            return Err(ended());
        }
        if crate::runtime::inside_a_runtime() {
            return Err(Error::internal(
                "amqp_consume_pull_cancel was called on an async runtime's thread",
            ));
        }
        let (found_tx, found) = std::sync::mpsc::sync_channel(1);
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        let cs = self.clone();
        crate::runtime::spawn("pull consumer cancel", async move {
            let mut st = cs.state.lock().await;
            let Some(i) = st.groups.iter().position(|g| g.pull.is_some()) else {
                let _ = found_tx.send(false);
                return;
            };
            let group = st.groups.remove(i);
            let _ = found_tx.send(true);
            if let Some((_, ch, _)) = st.channel.clone() {
                super::cancel_tags(&ch, &group.tags, &cs.queue_name).await;
            }
            let _ = done_tx.send(());
        });
        match found.recv_timeout(super::STOP_WAIT) {
            Ok(true) => {}
            Ok(false) => return Err(no_pull_consumer()),
            Err(_) => return Err(Error::new(ErrorKind::Timeout, "timed out")),
        }
        let Some(timeout) = timeout else {
            return Ok(());
        };
        done.recv_timeout(timeout).map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                "consume_pull_cancel: no cancel-ok from the broker yet (the cancel goes on)",
            )
        })
    }

    /// `amqp_poll`: hands up to `max` deliveries to `emit`, waiting up to
    /// `timeout` for the first; the number handed out (>= 1), or
    /// Timeout / Closed / InvalidArgument. Blocks the caller up to
    /// `timeout` (an amqp_poll_wake ends the wait).
    pub fn poll(
        &self,
        max: usize,
        timeout: Duration,
        mut emit: impl FnMut(Polled),
    ) -> Result<usize> {
        let pull = self.pull.get().ok_or_else(no_pull_consumer)?;
        let mut deadline = None;
        loop {
            let batch = self.take_batch(pull, max, timeout, &mut deadline)?;
            let n = self.hand_out(batch, &mut emit);
            if n > 0 {
                return Ok(n);
            }
            // All were stale, paused or too large: wait on for the rest.
        }
    }

    /// Takes up to `max` waiting deliveries, waiting until `deadline`
    /// (computed on the first wait) for the first.
    fn take_batch(
        &self,
        pull: &PullQueue,
        max: usize,
        timeout: Duration,
        deadline: &mut Option<Instant>,
    ) -> Result<Vec<Waiting>> {
        let mut st = pull.lock();
        loop {
            if st.ended {
                return Err(ended());
            }
            if !st.waiting.is_empty() {
                let n = max.min(st.waiting.len());
                let batch: Vec<Waiting> = st.waiting.drain(..n).collect();
                st.wake_kept = false;
                st.signal();
                return Ok(batch);
            }
            if std::mem::take(&mut st.wake_kept) || timeout.is_zero() {
                return Err(timed_out());
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            let wakes = st.wakes;
            st.blocked += 1;
            st = pull
                .ready
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            st.blocked -= 1;
            if st.wakes != wakes && !st.ended {
                st.wake_kept = false;
                return Err(timed_out());
            }
        }
    }

    /// Parks each delivery's ticket under a fresh id and emits it; gives
    /// back those that arrived on a channel since lost or while paused.
    /// Counts as a running callback meanwhile, so a stop that returned
    /// hands nothing out after it.
    fn hand_out(&self, batch: Vec<Waiting>, emit: &mut impl FnMut(Polled)) -> usize {
        self.running.fetch_add(1, Ordering::SeqCst);
        let live = self.channel_generation.load(Ordering::SeqCst);
        let paused = self.paused.load(Ordering::SeqCst);
        let mut n = 0;
        let mut parked = Vec::with_capacity(batch.len());
        for w in batch {
            if paused || w.generation != live {
                w.ticket.decide(Settle::Release);
                continue;
            }
            if let Some(size) = w.delivery.too_large {
                warn!(
                    "queue '{}': rejected a message of {size} bytes, over max_message_bytes \
                     (dead-lettered if the queue has a dead-letter exchange)",
                    self.queue_name
                );
                w.ticket.decide(Settle::Reject);
                continue;
            }
            let Some(ticket) = self.screen(&w.delivery, w.ticket) else {
                continue; // a duplicate (queue option dedupe), acked
            };
            let id = deferred::next_id();
            parked.push((id, ticket));
            emit(Polled {
                delivery: w.delivery,
                id,
            });
            n += 1;
        }
        let count = parked.len() as u64;
        deferred::park_many(self.queue_id, parked);
        self.stats.delivered.fetch_add(count, Ordering::Relaxed);
        self.stats.unsettled.fetch_add(count, Ordering::Relaxed);
        self.running.fetch_sub(1, Ordering::SeqCst);
        if paused {
            self.notify();
        }
        n
    }

    /// The broker consumer of the pull queue on one channel.
    pub(super) fn pull_sink(
        self: &Arc<Self>,
        pull: &Arc<PullQueue>,
        settler: &Arc<Settler>,
        generation: u64,
        serial: u64,
    ) -> Box<dyn DeliverySink> {
        Box::new(PullSink {
            cs: self.clone(),
            pull: pull.clone(),
            settler: settler.clone(),
            generation,
            serial,
            queued: false,
            unsettled: Arc::default(),
        })
    }
}

/// Queues one broker consumer's deliveries for amqp_poll. Called on the
/// connection's reader (the runtime thread): it only queues and signals.
/// Dropped when the broker consumer ends; what still waits goes back then.
struct PullSink {
    cs: Arc<ConsumerSet>,
    pull: Arc<PullQueue>,
    settler: Arc<Settler>,
    generation: u64,
    serial: u64,
    /// Deliveries queued since the last end of burst.
    queued: bool,
    /// As `Forwarder::unsettled`: waiting and polled-not-settled deliveries.
    unsettled: Arc<AtomicU64>,
}

impl DeliverySink for PullSink {
    fn deliver(&mut self, delivery: Delivery) -> std::result::Result<(), String> {
        self.cs.count_unsettled(&self.unsettled)?;
        let ticket = Ticket::new(&self.settler, delivery.delivery_tag, &self.unsettled);
        let mut st = self.pull.lock();
        if st.ended {
            drop(st);
            ticket.decide(Settle::Release);
            return Ok(());
        }
        st.waiting.push_back(Waiting {
            delivery,
            ticket,
            generation: self.generation,
            sink: self.serial,
        });
        self.queued = true;
        Ok(())
    }

    fn end_of_burst(&mut self) {
        if !std::mem::take(&mut self.queued) {
            return;
        }
        let mut st = self.pull.lock();
        st.signal();
        let blocked = st.blocked > 0;
        drop(st);
        if blocked {
            self.pull.ready.notify_all();
        }
    }
}

impl Drop for PullSink {
    fn drop(&mut self) {
        for w in self.pull.take_of(self.serial) {
            w.ticket.decide(Settle::Release);
        }
        self.cs.forwarders.fetch_sub(1, Ordering::SeqCst);
        self.cs.notify();
    }
}

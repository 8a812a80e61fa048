//! The broker consumers' sinks of a consumer set: a `Forwarder` per worker
//! thread (callbacks), or the pull consumer's sink (`pull.rs`).

use super::dedupe::Remember;
use super::deferred::Ticket;
use super::settle_book::Settle;
use super::settler::Settler;
use super::worker::{Job, WorkQueue};
use super::{ConsumerSet, Group};
use crate::wire::{props, Delivery, DeliverySink};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

impl ConsumerSet {
    /// The broker consumers of a group: a `Forwarder` per worker, or the
    /// pull consumer's sink; each counted in `forwarders` until dropped.
    pub(super) fn sinks(
        self: &Arc<Self>,
        g: &Group,
        generation: u64,
        settler: &Arc<Settler>,
    ) -> Vec<(String, Box<dyn DeliverySink>)> {
        let count = g.shared.workers.len() + usize::from(g.pull.is_some());
        let mut sinks = Vec::with_capacity(count);
        for i in 0..count {
            let n = self.next_tag.fetch_add(1, Ordering::Relaxed);
            let tag = match &self.settings.name {
                Some(name) => format!("{name}-{n}"),
                None => format!("resilient-amqp.{}.{}", self.queue_id, n),
            };
            self.forwarders.fetch_add(1, Ordering::SeqCst);
            let sink: Box<dyn DeliverySink> = match (g.shared.workers.get(i), &g.pull) {
                (Some(work), _) => Box::new(Forwarder {
                    cs: self.clone(),
                    work: work.clone(),
                    settler: settler.clone(),
                    generation,
                    queued: false,
                    unsettled: Arc::default(),
                }),
                (None, Some(pull)) => self.pull_sink(pull, settler, generation, n),
                (None, None) => unreachable!("count covers the workers and the pull"),
            };
            sinks.push((tag, sink));
        }
        sinks
    }

    /// Before a delivery reaches the application: with dedupe on, one whose
    /// message_id was acked here already is acked now and counted (None);
    /// any other with a message_id gets it in its ticket, remembered when
    /// the ticket is acked. Without dedupe or a message_id: as it came.
    pub(super) fn screen(&self, d: &Delivery, mut ticket: Ticket) -> Option<Ticket> {
        let Some(dedupe) = &self.dedupe else {
            return Some(ticket);
        };
        let id = match props::message_id(d.properties()) {
            Some(id) if !id.is_empty() => id,
            _ => return Some(ticket),
        };
        if dedupe.seen(id) {
            self.stats.deduplicated.fetch_add(1, Ordering::Relaxed);
            ticket.decide(Settle::Ack);
            return None;
        }
        ticket.remember = Some(Box::new(Remember {
            dedupe: dedupe.clone(),
            id: id.into(),
        }));
        Some(ticket)
    }

    /// Counts a delivery against its consumer's prefetch; Err when the
    /// broker sent more than it promised (the connection ends).
    pub(super) fn count_unsettled(&self, unsettled: &AtomicU64) -> Result<(), String> {
        let n = unsettled.fetch_add(1, Ordering::Relaxed) + 1;
        if self.prefetch > 0 && n > u64::from(self.prefetch) {
            return Err(format!(
                "{n} unsettled deliveries to one consumer of queue '{}', whose prefetch is {}",
                self.queue_name, self.prefetch
            ));
        }
        Ok(())
    }
}

/// Hands one broker consumer's deliveries to its worker thread. Called on
/// the connection's reader (the runtime thread): it only queues. Dropped
/// when the consumer ends (cancel, channel closed).
struct Forwarder {
    cs: Arc<ConsumerSet>,
    work: Arc<WorkQueue>,
    settler: Arc<Settler>,
    generation: u64,
    /// Jobs queued since the last flush.
    queued: bool,
    /// Deliveries to this consumer not decided yet: never more than its
    /// prefetch from a broker that keeps its word (decisions count when made,
    /// before their ack is sent, so this errs low).
    unsettled: Arc<AtomicU64>,
}

impl DeliverySink for Forwarder {
    fn deliver(&mut self, delivery: Delivery) -> Result<(), String> {
        let cs = &self.cs;
        cs.count_unsettled(&self.unsettled)?;
        cs.queued.fetch_add(1, Ordering::SeqCst);
        let ticket = Ticket::new(&self.settler, delivery.delivery_tag, &self.unsettled);
        let job = Job {
            delivery,
            ticket,
            generation: self.generation,
        };
        match self.work.push(job) {
            Ok(()) => self.queued = true,
            Err(job) => {
                cs.queued.fetch_sub(1, Ordering::SeqCst);
                // The worker is gone (closing): give it back, and keep the
                // channel's settled prefix moving.
                job.ticket.decide(Settle::Release);
            }
        }
        Ok(())
    }

    fn end_of_burst(&mut self) {
        if std::mem::take(&mut self.queued) {
            self.work.wake();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.end_of_burst();
        self.cs.forwarders.fetch_sub(1, Ordering::SeqCst);
        self.cs.notify();
    }
}

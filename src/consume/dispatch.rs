//! A pool thread's turn on a mailbox, one delivery's callback, what its return
//! value means, settling by id (`amqp_settle`) during or after it, and what
//! happens when the application's runtime ends the thread in a callback.

use super::deferred::{self, Running, Ticket, Unparked};
use super::group::{SetShared, IN_SET};
use super::pool::{Mailbox, SLICE};
use super::settle_book::Settle;
use super::settler::SliceHolds;
use super::worker::{Job, Take, WorkQueue};
use super::{Callback, CallbackPool, ConsumerSet, DeliveryView, Disposition, Runner, IN_CALLBACK};
use crate::error::Result;
use crate::wire::Delivery;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Warnings about a queue's invalid dispositions: at most one per this
/// long, with the count so far (a failing handler is visible, the log is
/// not flooded).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// One turn of a pool thread on a mailbox (`pool.rs`): up to `SLICE` of its
/// deliveries, in order; or, closed and drained, its end.
///
/// The application's callback runs outside `catch_unwind`: a runtime that
/// ends the thread inside the callback (a forced unwind: `pthread_exit`
/// during Python's finalization, thread cancellation) must pass through, and
/// a `catch_unwind` would abort the process instead (`os_thread`). The
/// unwind drops `Worker` and `Gone`, which leave the mailbox and the pool
/// consistent; everything of ours runs inside `catch_unwind`.
impl Mailbox for WorkQueue {
    fn run(self: &Arc<Self>, pool: &Arc<CallbackPool>) {
        run_slice(self, pool);
    }
}

fn run_slice(work: &Arc<WorkQueue>, pool: &CallbackPool) {
    let mut batch = VecDeque::new();
    let took = work.take(&mut batch, SLICE);
    if let Take::Idle = took {
        return;
    }
    // Ours alone while the mailbox is scheduled: put back before it is
    // unscheduled (`after_slice`).
    let Some(runner) = work.runner().take() else {
        error!("internal error: a consumer's mailbox has no callback");
        batch
            .into_iter()
            .for_each(|j| j.ticket.decide(Settle::Release));
        return;
    };
    if let Take::Ended = took {
        end(work, pool, runner);
        return;
    }
    let mut worker = Worker {
        cs: runner.cs.clone(),
        work: work.clone(),
        batch,
        ended: false,
    };
    let holds = SliceHolds::start();
    while let Some(job) = worker.batch.pop_front() {
        (runner.cs).handle_job(work, &runner.set, &runner.cb, job);
    }
    holds.end(pool.link_quiet());
    worker.ended = true;
    *work.runner() = Some(runner);
    work.after_slice();
}

/// A mailbox closed and drained: no callback of it runs or can start. The
/// callback (with the application's userdata) is dropped first, so the
/// set's release (on its last mailbox) can follow.
fn end(work: &Arc<WorkQueue>, pool: &CallbackPool, runner: Runner) {
    let Runner { cs, set, cb } = runner;
    drop(cb);
    (crate::sync::lock(&cs.workers)).retain(|w| !Arc::ptr_eq(w, work));
    pool.consumer_ended();
    set.worker_ended();
}

impl ConsumerSet {
    /// Runs the callback on one delivery (or gives the delivery back when
    /// paused or stale) and applies what it returned.
    fn handle_job(&self, work: &WorkQueue, set: &SetShared, cb: &Callback, job: Job) {
        // A bug in our part must not end the thread (its later deliveries
        // would never be called back).
        let begun = catch_unwind(AssertUnwindSafe(|| self.begin(work, set, job)));
        let Ok(Some((id, d))) = begun else {
            if begun.is_err() {
                error!("internal error: a consumer's job panicked");
            }
            return;
        };
        let disposition = self.call(set, cb, &d, id);
        if catch_unwind(AssertUnwindSafe(|| self.finish(work, set, id, disposition))).is_err() {
            error!("internal error: a consumer's job panicked");
        }
    }

    /// Before the callback: the delivery (with its new id), or None when it
    /// was given back or rejected instead.
    fn begin(&self, work: &WorkQueue, set: &SetShared, job: Job) -> Option<(u64, Delivery)> {
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
        // Counted before `cancelled` is read: a cancel that sees no callback
        // running knows none starts.
        set.running.fetch_add(1, Ordering::SeqCst);
        let Job {
            delivery: d,
            ticket,
            generation,
        } = job;
        if self.paused.load(Ordering::SeqCst)
            || set.given_up()
            || generation != self.channel_generation.load(Ordering::SeqCst)
        {
            self.running.fetch_sub(1, Ordering::SeqCst);
            set.running.fetch_sub(1, Ordering::SeqCst);
            // Give it back now; on a dead channel this is a no-op and the
            // broker requeues it by itself.
            ticket.decide(Settle::Release);
            self.notify();
            return None;
        }
        if let Some(size) = d.too_large {
            self.running.fetch_sub(1, Ordering::SeqCst);
            set.running.fetch_sub(1, Ordering::SeqCst);
            // It can never be taken in: dead-lettered (or dropped) by the
            // broker, not redelivered to us forever.
            warn!(
                "queue '{}': rejected a message of {size} bytes, over max_message_bytes \
                 (dead-lettered if the queue has a dead-letter exchange)",
                self.queue_name
            );
            ticket.decide(Settle::Reject);
            return None;
        }
        let Some(ticket) = self.screen(&d, ticket) else {
            // A duplicate (queue option dedupe), acked.
            self.running.fetch_sub(1, Ordering::SeqCst);
            set.running.fetch_sub(1, Ordering::SeqCst);
            return None;
        };
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        let id = deferred::next_id();
        *work.running() = Some(Running {
            id,
            ticket: Some(ticket),
        });
        Some((id, d))
    }

    /// The application's callback; not inside `catch_unwind` (see
    /// `run_slice`).
    fn call(&self, set: &SetShared, cb: &Callback, d: &Delivery, id: u64) -> Disposition {
        let view = DeliveryView {
            body: d.body(),
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            exchange: d.exchange(),
            routing_key: d.routing_key(),
            properties: d.properties(),
            delivery_id: id,
        };
        let gone = Gone { cs: self, set };
        IN_CALLBACK.with(|c| c.set(self.queue_id));
        IN_SET.with(|c| c.set(set.id));
        let disposition = cb(&view);
        std::mem::forget(gone);
        IN_SET.with(|c| c.set(0));
        IN_CALLBACK.with(|c| c.set(0));
        disposition
    }

    /// After the callback returned: applies its disposition.
    fn finish(&self, work: &WorkQueue, set: &SetShared, id: u64, disposition: Disposition) {
        let ticket = work.running().take().and_then(|r| r.ticket);
        self.apply(id, ticket, disposition);
        self.running.fetch_sub(1, Ordering::SeqCst);
        set.running.fetch_sub(1, Ordering::SeqCst);
        if self.paused.load(Ordering::SeqCst) || set.cancelled.load(Ordering::SeqCst) {
            self.notify();
        }
    }

    /// Applies a callback's return value. `ticket` None: amqp_settle
    /// decided the delivery while the callback ran; its return is ignored.
    fn apply(&self, id: u64, ticket: Option<Ticket>, disposition: Disposition) {
        let Some(ticket) = ticket else {
            if disposition != Disposition::Defer {
                self.stats.returns_ignored.fetch_add(1, Ordering::Relaxed);
            }
            return;
        };
        // Decisions are held for a batch (or a short delay): acking each
        // burst as it ends kept the broker in lockstep with us.
        let how = match disposition {
            Disposition::Ack => Settle::Ack,
            Disposition::Reject => Settle::Reject,
            Disposition::Requeue => Settle::Requeue,
            Disposition::Defer => {
                self.stats.unsettled.fetch_add(1, Ordering::Relaxed);
                deferred::park(id, self.queue_id, ticket);
                return;
            }
            Disposition::Invalid(raw) => {
                self.invalid_disposition(raw);
                self.invalid_as
            }
        };
        ticket.decide(how);
    }

    fn invalid_disposition(&self, raw: i64) {
        let n = self
            .stats
            .invalid_dispositions
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        static START: OnceLock<Instant> = OnceLock::new();
        let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
        let last = self.invalid_warned_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .invalid_warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let what = if self.invalid_as == Settle::Reject {
                "rejected"
            } else {
                "requeued"
            };
            warn!(
                "queue '{}': a consume callback returned {raw}, which is no amqp_disposition \
                 (a handler that failed or threw?); {what} ({n} so far)",
                self.queue_name
            );
        }
    }

    /// `amqp_settle`: decides the delivery `id` of this queue (Ack, Reject
    /// or Requeue), whether its callback deferred it or still runs. Never
    /// blocks on a callback.
    pub fn settle(&self, id: u64, disposition: Disposition) -> Result<()> {
        let how = match disposition {
            Disposition::Ack => Settle::Ack,
            Disposition::Reject => Settle::Reject,
            Disposition::Requeue => Settle::Requeue,
            other => {
                return Err(crate::error::Error::invalid(format!(
                    "{other:?} cannot settle a delivery (AMQP_ACK, AMQP_REJECT or AMQP_REQUEUE)"
                )))
            }
        };
        if let Unparked::Done { result, counted } = deferred::settle_parked(id, self.queue_id, how)
        {
            if counted {
                self.stats.unsettled.fetch_sub(1, Ordering::Relaxed);
            }
            return result;
        }
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for w in &workers {
            let mut running = w.running();
            if let Some(r) = running.as_mut().filter(|r| r.id == id) {
                return match r.ticket.take() {
                    Some(ticket) => ticket.settle(how),
                    None => Err(deferred::already_settled()),
                };
            }
        }
        Err(deferred::not_found(id))
    }
}

/// Dropped only when the thread unwinds out of a callback (a forced unwind:
/// the application's runtime ended the thread). The callback no longer
/// runs, so stop and close must not wait for it. Its delivery stays in the
/// mailbox's running slot, unsettled: never acked by a return value (a
/// later `amqp_settle` by id still applies); the broker redelivers it when
/// the channel closes, at the latest when the process exits. No callback
/// of its set starts again, on any thread: the set's later deliveries are
/// given back (`SetShared::unwound`).
struct Gone<'a> {
    cs: &'a ConsumerSet,
    set: &'a SetShared,
}

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        // The runtime ends its threads (at Python's exit, one after another
        // as each takes the GIL): a callback started on another pool thread
        // now could find the interpreter gone, which is a crash.
        self.set.unwound.store(true, Ordering::SeqCst);
        let _ = IN_CALLBACK.try_with(|c| c.set(0));
        let _ = IN_SET.try_with(|c| c.set(0));
        self.cs.running.fetch_sub(1, Ordering::SeqCst);
        self.set.running.fetch_sub(1, Ordering::SeqCst);
        self.cs.notify();
    }
}

/// A mailbox's slice on a pool thread. Dropped without `ended` when the
/// thread unwinds out of a callback: no callback of this consumer will run
/// again (its callback went with the unwind), so its mailbox is closed (the
/// broker consumer's later deliveries are given back as they arrive) and
/// what waits in it goes back to the broker now, so that nothing (`queued`,
/// stop, close) waits for it. The pool counts the consumer out (and the
/// thread: `pool::Alive`). The set's release does not run.
struct Worker {
    cs: Arc<ConsumerSet>,
    work: Arc<WorkQueue>,
    batch: VecDeque<Job>,
    ended: bool,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let queued = self.work.close_and_drain();
        for job in self.batch.drain(..).chain(queued) {
            self.cs.queued.fetch_sub(1, Ordering::SeqCst);
            job.ticket.decide(Settle::Release);
        }
        self.work.pool().consumer_ended();
        self.cs.notify();
    }
}

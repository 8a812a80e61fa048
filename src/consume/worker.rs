//! A broker consumer's mailbox: its deliveries waiting for the callback,
//! run by the connection's pool threads (`pool.rs`).

use super::deferred::{Running, Ticket};
use super::{CallbackPool, Runner};
use crate::wire::Delivery;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

pub(super) struct Job {
    pub delivery: Delivery,
    /// Settles it on the channel it came from, where its disposition must go.
    pub ticket: Ticket,
    pub generation: u64,
}

/// The jobs of one broker consumer. The connection's reader queues a whole
/// burst of deliveries and schedules the mailbox once per burst (and only
/// if it is not scheduled already), not once per delivery.
pub(crate) struct WorkQueue {
    state: Mutex<WorkState>,
    /// The delivery whose callback runs now, settleable by id from other
    /// threads meanwhile.
    running: Mutex<Option<Running>>,
    /// Taken by the pool thread that runs the mailbox (and dropped, with
    /// the application's userdata, when the mailbox ends).
    runner: Mutex<Option<Runner>>,
    pool: Arc<CallbackPool>,
}

#[derive(Default)]
struct WorkState {
    jobs: VecDeque<Job>,
    /// On the pool's ready list or run by a pool thread.
    scheduled: bool,
    /// The mailbox ends once empty; nothing more is queued.
    closed: bool,
}

/// What `take` found.
pub(super) enum Take {
    Jobs,
    /// Closed and drained: the mailbox ends.
    Ended,
    /// Nothing to do (no longer scheduled).
    Idle,
}

impl WorkQueue {
    pub(super) fn new(pool: &Arc<CallbackPool>) -> WorkQueue {
        WorkQueue {
            state: Mutex::default(),
            running: Mutex::new(None),
            runner: Mutex::new(None),
            pool: pool.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WorkState> {
        crate::sync::lock(&self.state)
    }

    pub(super) fn pool(&self) -> &Arc<CallbackPool> {
        &self.pool
    }

    pub(super) fn runner(&self) -> MutexGuard<'_, Option<Runner>> {
        crate::sync::lock(&self.runner)
    }

    /// Queues a job; gives it back when the mailbox is closed. (The job is
    /// moved either way; boxing it to shrink the Err would cost an
    /// allocation per delivery.)
    #[allow(clippy::result_large_err)]
    pub(super) fn push(&self, job: Job) -> Result<(), Job> {
        let mut st = self.lock();
        if st.closed {
            return Err(job);
        }
        st.jobs.push_back(job);
        Ok(())
    }

    pub(super) fn running(&self) -> MutexGuard<'_, Option<Running>> {
        crate::sync::lock(&self.running)
    }

    /// Schedules the mailbox on the pool if it has work and is not
    /// scheduled yet.
    fn schedule(self: &Arc<Self>, mut st: MutexGuard<'_, WorkState>) {
        if !st.scheduled && (!st.jobs.is_empty() || st.closed) {
            st.scheduled = true;
            drop(st);
            self.pool.schedule(self.clone());
        }
    }

    pub(super) fn wake(self: &Arc<Self>) {
        let st = self.lock();
        self.schedule(st);
    }

    pub(super) fn close(self: &Arc<Self>) {
        let mut st = self.lock();
        st.closed = true;
        self.schedule(st);
    }

    /// Closes the mailbox and takes what is queued: its thread ended inside
    /// a callback (the application's runtime). It stays scheduled, so no
    /// thread takes it again.
    pub(super) fn close_and_drain(&self) -> VecDeque<Job> {
        let mut st = self.lock();
        st.closed = true;
        st.scheduled = true;
        std::mem::take(&mut st.jobs)
    }

    /// Takes up to `max` queued jobs, in order.
    pub(super) fn take(&self, into: &mut VecDeque<Job>, max: usize) -> Take {
        let mut st = self.lock();
        if !st.jobs.is_empty() {
            let n = st.jobs.len().min(max);
            into.extend(st.jobs.drain(..n));
            return Take::Jobs;
        }
        if st.closed {
            return Take::Ended;
        }
        st.scheduled = false;
        Take::Idle
    }

    /// After a slice: back on the ready list if more waits (or it closed),
    /// else no longer scheduled.
    pub(super) fn after_slice(self: &Arc<Self>) {
        let mut st = self.lock();
        if st.jobs.is_empty() && !st.closed {
            st.scheduled = false;
            return;
        }
        drop(st);
        self.pool.requeue(self.clone());
    }
}

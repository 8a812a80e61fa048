//! The worker threads' job queues.

use super::deferred::{Running, Ticket};
use crate::wire::Delivery;
use std::sync::{Condvar, Mutex, MutexGuard};

pub(super) struct Job {
    pub delivery: Delivery,
    /// Settles it on the channel it came from, where its disposition must go.
    pub ticket: Ticket,
    pub generation: u64,
}

/// The jobs of one worker thread. The connection's reader queues a whole
/// burst of deliveries and wakes the worker once per burst (and only if it
/// sleeps), not once per delivery.
#[derive(Default)]
pub(super) struct WorkQueue {
    state: Mutex<WorkState>,
    ready: Condvar,
    /// The delivery whose callback runs on this worker now, settleable by
    /// id from other threads meanwhile.
    running: Mutex<Option<Running>>,
}

#[derive(Default)]
struct WorkState {
    jobs: std::collections::VecDeque<Job>,
    sleeping: bool,
    /// The worker ends once the queue is empty; nothing more is queued.
    closed: bool,
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, WorkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job; gives it back when the worker is gone. (The job is
    /// moved either way; boxing it to shrink the Err would cost an
    /// allocation per delivery.)
    #[allow(clippy::result_large_err)]
    pub fn push(&self, job: Job) -> Result<(), Job> {
        let mut st = self.lock();
        if st.closed {
            return Err(job);
        }
        st.jobs.push_back(job);
        Ok(())
    }

    pub fn running(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn wake(&self) {
        let st = self.lock();
        if st.sleeping || st.closed {
            drop(st);
            self.ready.notify_one();
        }
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Closes the queue and takes what is queued: for a worker thread that
    /// is gone (ended inside a callback by the application's runtime).
    pub fn close_and_drain(&self) -> std::collections::VecDeque<Job> {
        let mut st = self.lock();
        st.closed = true;
        std::mem::take(&mut st.jobs)
    }

    /// Takes every queued job, sleeping while there are none; None once
    /// closed and drained.
    pub fn take(&self, into: &mut std::collections::VecDeque<Job>) -> bool {
        let mut st = self.lock();
        loop {
            if !st.jobs.is_empty() {
                std::mem::swap(&mut st.jobs, into);
                return true;
            }
            if st.closed {
                return false;
            }
            st.sleeping = true;
            st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
            st.sleeping = false;
        }
    }
}

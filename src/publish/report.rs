//! Delivery reports: the outbox hands every message's end here, and one
//! thread per connection calls the application's report function with it.
//! A message keeps its room in the buffer until its report was handed on,
//! so a slow report function slows publishing (`AMQP_ERR_BUFFER_FULL`)
//! instead of growing memory.

use super::buffer::PublishBuffer;
use super::message::Report;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// The application's report function (it runs on the report thread).
pub(crate) type ReportFn = Arc<dyn Fn(&Report) + Send + Sync>;

/// Reports of one queue, and the buffer room they hold.
pub(crate) struct Batch {
    pub reports: Vec<Report>,
    pub callback: ReportFn,
    pub buffer: Arc<PublishBuffer>,
    pub bytes: u64,
}

#[derive(Default)]
struct State {
    batches: VecDeque<Batch>,
    /// The thread runs a batch (outside the lock).
    busy: bool,
    /// No thread takes batches (closed, or it ended): pushes release at once.
    gone: bool,
    closing: bool,
}

/// The report queue of one connection and its thread.
#[derive(Default)]
pub(crate) struct ReportThread {
    state: Mutex<State>,
    changed: Condvar,
}

impl ReportThread {
    /// Starts the thread; `None` (logged) when the system refuses one.
    pub fn start() -> Option<Arc<ReportThread>> {
        let rt = Arc::new(ReportThread::default());
        let worker = rt.clone();
        match crate::os_thread::spawn(c"ramqp-reports", move || worker.serve()) {
            Ok(()) => Some(rt),
            Err(e) => {
                error!("cannot start the delivery report thread: {e}");
                None
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Queues a batch for the thread (or, with no thread, releases its
    /// room at once: reports are never a reason to hold messages forever).
    pub fn push(&self, batch: Batch) {
        let mut s = self.lock();
        if s.gone {
            drop(s);
            release(&batch);
            return;
        }
        s.batches.push_back(batch);
        drop(s);
        self.changed.notify_all();
    }

    /// The thread's loop: each batch's reports in order, then its room.
    fn serve(self: Arc<Self>) {
        // A forced unwind out of a report function ends the thread here:
        // what is left is released, later pushes release at once.
        let _ended = Ended(&self);
        let mut s = self.lock();
        loop {
            let Some(batch) = s.batches.pop_front() else {
                if s.closing {
                    return;
                }
                s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            s.busy = true;
            drop(s);
            // Released when dropped, also by an unwind out of a callback.
            let batch = Releasing(batch);
            for r in &batch.0.reports {
                (batch.0.callback)(r);
            }
            drop(batch);
            s = self.lock();
            s.busy = false;
            self.changed.notify_all();
        }
    }

    /// Lets the thread finish what is queued and end; waits until it did or
    /// `deadline` passes. False: still busy (a report function that does not
    /// return keeps its thread).
    pub fn close(&self, deadline: Instant) -> bool {
        let mut s = self.lock();
        s.closing = true;
        self.changed.notify_all();
        while !s.gone && (s.busy || !s.batches.is_empty()) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

fn release(batch: &Batch) {
    batch
        .buffer
        .release_many(batch.reports.len() as u64, batch.bytes);
}

struct Releasing(Batch);

impl Drop for Releasing {
    fn drop(&mut self) {
        release(&self.0);
    }
}

/// Marks the thread gone when it ends, however it ends.
struct Ended<'a>(&'a ReportThread);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.gone = true;
        s.busy = false;
        let left: Vec<Batch> = s.batches.drain(..).collect();
        drop(s);
        for b in &left {
            release(b);
        }
        self.0.changed.notify_all();
    }
}

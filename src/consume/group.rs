//! Consumer sets: the broker consumers and mailboxes of one
//! `amqp_consume_ex` call, their `release`, and cancelling one set.
//!
//! A set's `release` runs on the pool thread that ends the last of its
//! mailboxes: a mailbox ends once closed (cancel, close) and drained, so by
//! then no callback of the set runs and none can start; the callback (which
//! holds the application's userdata) is dropped with the mailboxes.

use super::worker::WorkQueue;
use super::{in_callback_of, Callback, ConsumerSet, Group, Runner, STOP_WAIT};
use crate::error::{Error, ErrorKind, Result};
use crate::runtime;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Called once when a consumer set has ended (its last callback returned).
pub(crate) type Release = Box<dyn FnOnce() + Send>;

/// Consumer set ids: unique in the process, never 0, below 2^53.
static NEXT_SET_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The consumer set whose callback runs on this thread (0 = none).
    pub(super) static IN_SET: Cell<u64> = const { Cell::new(0) };
}

/// What a consumer set's mailboxes share.
pub(super) struct SetShared {
    pub id: u64,
    pub workers: Vec<Arc<WorkQueue>>,
    /// amqp_consume_cancel: no callback of the set starts any more; its
    /// queued deliveries are given back.
    pub cancelled: AtomicBool,
    /// A callback of the set was ended by its runtime (a forced unwind:
    /// Python's finalization, thread cancellation): no other starts, its
    /// deliveries are given back (`dispatch::Gone`).
    pub unwound: AtomicBool,
    /// Callbacks of the set running now.
    pub running: AtomicUsize,
    /// Mailboxes not ended yet.
    live: AtomicUsize,
    release: Mutex<Option<Release>>,
}

impl SetShared {
    /// Cancelled, or its callback's runtime ends threads: not started again
    /// after a reconnect.
    pub fn given_up(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst) || self.unwound.load(Ordering::SeqCst)
    }

    /// The set of the pull consumer: no workers, no release.
    pub fn without_workers() -> Arc<SetShared> {
        Arc::new(SetShared {
            id: NEXT_SET_ID.fetch_add(1, Ordering::Relaxed),
            workers: Vec::new(),
            cancelled: AtomicBool::new(false),
            unwound: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            release: Mutex::new(None),
        })
    }

    /// Lets the workers end once their queues are drained.
    pub fn close_workers(&self) {
        for w in &self.workers {
            w.close();
        }
    }

    pub(super) fn take_release(&self) -> Option<Release> {
        self.release
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// A mailbox ended; the last one calls `release`.
    pub(super) fn worker_ended(&self) {
        if self.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(release) = self.take_release() {
                // Not inside catch_unwind: the application's function may be
                // ended by its runtime (a forced unwind, see `os_thread`);
                // our wrapper of it cannot panic.
                release();
            }
        }
    }
}

impl ConsumerSet {
    /// Adds a set of `repeat` consumers calling `cb`; they start now if the
    /// channel is up and the queue is not paused, otherwise on the next
    /// connect / start. Returns the set's id, which the caller must pass to
    /// `await_start` (it may take the set back); `release` runs once the
    /// set ended (never when this or `await_start` fails).
    pub fn add(
        self: &Arc<Self>,
        cb: Callback,
        repeat: u32,
        release: Option<Release>,
    ) -> Result<u64> {
        let repeat = repeat.max(1) as usize;
        let workers: Vec<Arc<WorkQueue>> = (0..repeat)
            .map(|_| Arc::new(WorkQueue::new(&self.pool)))
            .collect();
        let shared = Arc::new(SetShared {
            id: NEXT_SET_ID.fetch_add(1, Ordering::Relaxed),
            workers,
            cancelled: AtomicBool::new(false),
            unwound: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            release: Mutex::new(None),
        });
        // Threads for the new consumers (up to the pool's bound); nothing
        // to undo when this fails.
        self.pool.add_consumers(repeat)?;
        for work in &shared.workers {
            shared.live.fetch_add(1, Ordering::SeqCst);
            *work.runner() = Some(Runner {
                cs: self.clone(),
                set: shared.clone(),
                cb: cb.clone(),
            });
        }
        drop(cb);
        crate::sync::lock(&self.workers).extend(shared.workers.iter().cloned());
        // Before any reconcile can see the group, so its start is not missed.
        self.expect_start(shared.id);
        // Through the runtime rather than tokio's blocking_lock, which needs
        // thread-locals that are gone when called from an atexit handler.
        let (cs, group) = (self.clone(), Group::new(shared.clone()));
        let pushed = runtime::block_on(
            async move { cs.state.lock().await.groups.push(group) },
            STOP_WAIT,
        );
        if let Err(e) = pushed {
            self.forget_start(shared.id);
            shared.cancelled.store(true, Ordering::SeqCst);
            shared.close_workers();
            return Err(e);
        }
        {
            let mut sets = crate::sync::lock(&self.sets);
            if sets.is_none() {
                // Closed meanwhile: the set never starts, release never runs.
                self.forget_start(shared.id);
                shared.cancelled.store(true, Ordering::SeqCst);
                shared.close_workers();
                return Err(Error::closed("the connection is closing"));
            }
            *crate::sync::lock(&shared.release) = release;
            sets.get_or_insert_with(Vec::new).push(shared.clone());
        }
        let cs = self.clone();
        runtime::spawn("consumer start", async move {
            let _ = cs.reconcile().await;
        });
        Ok(shared.id)
    }

    /// `amqp_consume_cancel`: ends the consumer set `id` (basic.cancel, its
    /// queued deliveries given back); `timeout` None begins and returns,
    /// otherwise waits that long for its running callbacks (a caller inside
    /// one of them does not wait for itself).
    pub fn cancel(self: &Arc<Self>, id: u64, timeout: Option<Duration>) -> Result<()> {
        let shared = self.take_set(id).ok_or_else(|| {
            Error::invalid(format!(
                "{id} is not a consumer of this queue (or was cancelled already)"
            ))
        })?;
        shared.cancelled.store(true, Ordering::SeqCst);
        shared.close_workers();
        let cs = self.clone();
        runtime::spawn("consumer cancel", async move {
            let mut st = cs.state.lock().await;
            let Some(i) = st.groups.iter().position(|g| g.shared.id == id) else {
                return;
            };
            let group = st.groups.remove(i);
            if let Some((_, ch, _)) = st.channel.clone() {
                super::cancel_tags(&ch, &group.tags, &cs.queue_name).await;
            }
        });
        let Some(timeout) = timeout else {
            return Ok(());
        };
        let inside = usize::from(in_callback_of(self.queue_id) && IN_SET.with(Cell::get) == id);
        if !self.wait_until(timeout, || shared.running.load(Ordering::SeqCst) <= inside) {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("consume_cancel: a callback of consumer {id} is still running"),
            ));
        }
        Ok(())
    }

    /// Takes set `id` out of the live sets.
    pub(super) fn take_set(&self, id: u64) -> Option<Arc<SetShared>> {
        let mut sets = crate::sync::lock(&self.sets);
        let list = sets.as_mut()?;
        let i = list.iter().position(|s| s.id == id)?;
        Some(list.remove(i))
    }

    /// For close: no set starts any more and every mailbox ends once drained
    /// (each set's release follows its last callback).
    pub(super) fn close_sets(&self) {
        let sets = self
            .sets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        for s in sets {
            s.close_workers();
        }
    }

    /// Callbacks of this queue running now, not counting the caller's own.
    pub fn callbacks_running(&self) -> u64 {
        let inside = usize::from(in_callback_of(self.queue_id));
        self.running.load(Ordering::SeqCst).saturating_sub(inside) as u64
    }
}

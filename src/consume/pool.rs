//! A connection's callback threads: one bounded pool ("ramqp-consumer"
//! POSIX threads, `os_thread`) runs the callbacks of every consumer of the
//! connection.
//!
//! Each broker consumer has a `WorkQueue` (its mailbox). A mailbox with
//! deliveries (or closed) is *scheduled*: put once at the back of the
//! pool's ready list; a pool thread takes it, runs at most `SLICE` of its
//! deliveries in order, and puts it back at the end of the list if more
//! wait (or closes it out). A mailbox is on one thread at a time, so a
//! consumer's deliveries keep their order and its callback never runs on two
//! threads at once.
//!
//! The bound: `min(MAX_THREADS, consumers)` threads, consumers being the
//! connection's live broker consumers with callbacks (each set adds
//! `repeat`). Up to 64 consumers every consumer can have a thread (the same
//! concurrency as one thread per consumer); beyond that, a slow callback
//! holds its thread, and 64 slow callbacks at once hold every thread: the
//! other consumers' deliveries wait until one returns. Between slices a
//! busy consumer goes behind every other ready one (round robin, `SLICE`
//! deliveries per turn). Threads are started when consumers are added and
//! end (idle) once the connection has fewer consumers than threads.

use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// At most this many callback threads per connection.
pub(crate) const MAX_THREADS: usize = 64;

/// Deliveries a thread runs from one mailbox before it takes the next one.
pub(super) const SLICE: usize = 32;

/// What the pool runs: a consumer's mailbox (`worker::WorkQueue`, run by
/// `dispatch::run_slice`).
pub(crate) trait Mailbox: Send + Sync + Sized + 'static {
    /// One turn on a pool thread.
    fn run(self: &Arc<Self>, pool: &Arc<Pool<Self>>);
}

/// The callback threads of one connection.
pub(crate) struct Pool<M> {
    st: Mutex<PoolState<M>>,
    work: Condvar,
}

impl<M> Default for Pool<M> {
    fn default() -> Self {
        Pool {
            st: Mutex::new(PoolState {
                ready: VecDeque::new(),
                threads: 0,
                idle: 0,
                consumers: 0,
            }),
            work: Condvar::new(),
        }
    }
}

struct PoolState<M> {
    /// Scheduled mailboxes no thread runs yet, oldest first.
    ready: VecDeque<Arc<M>>,
    /// Threads started and not ended.
    threads: usize,
    /// Threads waiting for a mailbox.
    idle: usize,
    /// Mailboxes not ended (the bound's `consumers`).
    consumers: usize,
}

impl<M> PoolState<M> {
    fn target(&self) -> usize {
        self.consumers.min(MAX_THREADS)
    }
}

impl<M: Mailbox> Pool<M> {
    fn lock(&self) -> MutexGuard<'_, PoolState<M>> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `n` consumers more: starts threads up to the bound. Err (and
    /// nothing counted) when no thread could be started and none runs.
    pub(super) fn add_consumers(self: &Arc<Self>, n: usize) -> Result<()> {
        let mut st = self.lock();
        st.consumers += n;
        while st.threads < st.target() {
            st.threads += 1;
            drop(st);
            let spawned = self.spawn();
            st = self.lock();
            if let Err(e) = spawned {
                st.threads -= 1;
                if st.threads == 0 {
                    st.consumers -= n;
                    return Err(Error::internal(format!(
                        "cannot start a consumer thread: {e}"
                    )));
                }
                warn!(
                    "cannot start more consumer threads ({} run): {e}",
                    st.threads
                );
                break;
            }
        }
        Ok(())
    }

    /// A mailbox ended (closed and drained, or its thread ended inside a
    /// callback): idle threads over the bound end.
    pub(super) fn consumer_ended(&self) {
        let mut st = self.lock();
        st.consumers = st.consumers.saturating_sub(1);
        drop(st);
        self.work.notify_all();
    }

    /// Puts a mailbox (just marked scheduled) on the ready list.
    pub(super) fn schedule(self: &Arc<Self>, w: Arc<M>) {
        let mut st = self.lock();
        st.ready.push_back(w);
        // Only after a thread ended inside a callback (or could not start)
        // can threads be missing.
        let short = st.ready.len() > st.idle && st.threads < st.target().max(1);
        if short {
            st.threads += 1;
        }
        drop(st);
        self.work.notify_one();
        if short {
            if let Err(e) = self.spawn() {
                self.lock().threads -= 1;
                error!("cannot start a consumer thread: {e}");
            }
        }
    }

    fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let pool = self.clone();
        crate::os_thread::spawn(c"ramqp-consumer", move || pool.serve())
    }

    /// A pool thread: mailboxes until the pool has more threads than its
    /// bound.
    fn serve(self: Arc<Self>) {
        let mut alive = Alive {
            pool: &self,
            armed: true,
        };
        while let Some(w) = self.next() {
            w.run(&self);
        }
        alive.armed = false;
    }

    /// The next ready mailbox; None: this thread ends (counted out here,
    /// under the lock, so a schedule never counts on it).
    fn next(&self) -> Option<Arc<M>> {
        let mut st = self.lock();
        loop {
            if let Some(w) = st.ready.pop_front() {
                return Some(w);
            }
            if st.threads > st.target() {
                st.threads -= 1;
                return None;
            }
            st.idle += 1;
            st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle -= 1;
        }
    }

    /// Back of the ready list (more of its deliveries wait).
    pub(super) fn requeue(&self, w: Arc<M>) {
        self.lock().ready.push_back(w);
        self.work.notify_one();
    }

    /// (threads, consumers) now: for tests.
    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.threads, st.consumers)
    }
}

/// Dropped armed only when the application's runtime ends a pool thread
/// inside a callback (a forced unwind, `os_thread`): the thread is counted
/// out, and a replacement starts if mailboxes wait.
struct Alive<'a, M: Mailbox> {
    pool: &'a Arc<Pool<M>>,
    armed: bool,
}

impl<M: Mailbox> Drop for Alive<'_, M> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.pool.lock();
        st.threads -= 1;
        let short = !st.ready.is_empty() && st.idle == 0 && st.threads < st.target();
        if short {
            st.threads += 1;
        }
        drop(st);
        if short && self.pool.spawn().is_err() {
            self.pool.lock().threads -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Mailbox for Nothing {
        fn run(self: &Arc<Self>, _: &Arc<Pool<Self>>) {}
    }

    #[test]
    fn threads_follow_the_consumers_up_to_the_bound() {
        let pool = Arc::new(Pool::<Nothing>::default());
        pool.add_consumers(3).unwrap();
        assert_eq!(pool.counts(), (3, 3));
        pool.add_consumers(100).unwrap();
        assert_eq!(pool.counts(), (MAX_THREADS, 103));
        for _ in 0..103 {
            pool.consumer_ended();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pool.counts().0 > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(pool.counts(), (0, 0));
    }
}

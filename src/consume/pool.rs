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
//! The bound: `min(MAX_THREADS, consumers)` threads (one more while the
//! pool reads the consume link, `inline_delivery`), consumers being the
//! connection's live broker consumers with callbacks (each set adds
//! `repeat`). Up to 64 consumers every consumer can have a thread (the same
//! concurrency as one thread per consumer); beyond that, a slow callback
//! holds its thread, and 64 slow callbacks at once hold every thread: the
//! other consumers' deliveries wait until one returns. Between slices a
//! busy consumer goes behind every other ready one (round robin, `SLICE`
//! deliveries per turn). Threads are started when consumers are added and
//! end (idle) once the connection has fewer consumers than threads.

use crate::error::{Error, Result};
use crate::sync::lock;
use crate::wire::{LinkReader, ReadHost, Turn};
use events::{Event, Events};
use hosted::{Hosted, STEAL_AFTER};
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

mod events;
mod hosted;

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
    /// What idle threads wait on (made with the first thread).
    events: OnceLock<Events>,
    /// The consume link, read by these threads (`ReadHost`).
    link: Mutex<Hosted>,
}

/// A turn that read this much is a busy link: the thread lets go before it
/// runs what it read, so another thread reads the next bytes meanwhile
/// (reading and callbacks in parallel, as the runtime's reader did).
const BUSY_TURN: usize = 4096;

impl<M> Default for Pool<M> {
    fn default() -> Self {
        Pool {
            st: Mutex::new(PoolState {
                ready: VecDeque::new(),
                threads: 0,
                idle: 0,
                running: 0,
                consumers: 0,
                hosting: false,
            }),
            events: OnceLock::new(),
            link: Mutex::default(),
        }
    }
}

thread_local! {
    /// On a pool thread reading the link: mailboxes it scheduled and did
    /// not wake anyone for (it runs one itself).
    static DEFERRED: Cell<Option<usize>> = const { Cell::new(None) };
    /// This thread, for `Hosted::holder`.
    static THREAD_ID: u64 = NEXT_THREAD_ID.fetch_add(1, Ordering::Relaxed);
}

static NEXT_THREAD_ID: AtomicU64 = AtomicU64::new(1);

struct PoolState<M> {
    /// Scheduled mailboxes no thread runs yet, oldest first.
    ready: VecDeque<Arc<M>>,
    /// Threads started and not ended.
    threads: usize,
    /// Threads waiting for a mailbox.
    idle: usize,
    /// Threads running a mailbox.
    running: usize,
    /// Mailboxes not ended (the bound's `consumers`).
    consumers: usize,
    /// A link is attached: one thread more, which always stays free to
    /// read it.
    hosting: bool,
}

impl<M> PoolState<M> {
    fn target(&self) -> usize {
        self.consumers.min(MAX_THREADS) + usize::from(self.hosting)
    }

    /// Whether a thread may take a mailbox: while a link is hosted, one
    /// thread is left to read it (unless only one could be started).
    fn may_run(&self) -> bool {
        !self.hosting || self.running + 1 < self.threads || self.threads == 1
    }
}

impl<M: Mailbox> Pool<M> {
    fn lock(&self) -> MutexGuard<'_, PoolState<M>> {
        crate::sync::lock(&self.st)
    }

    /// `n` consumers more: starts threads up to the bound. Err (and
    /// nothing counted) when no thread could be started and none runs.
    pub(super) fn add_consumers(self: &Arc<Self>, n: usize) -> Result<()> {
        let mut st = self.lock();
        st.consumers += n;
        drop(st);
        if let Err(e) = self.grow() {
            self.lock().consumers -= n;
            return Err(Error::internal(format!(
                "cannot start a consumer thread: {e}"
            )));
        }
        Ok(())
    }

    /// Starts threads up to the bound. Err when none could be started and
    /// none runs.
    fn grow(self: &Arc<Self>) -> std::io::Result<()> {
        let mut st = self.lock();
        while st.threads < st.target() {
            st.threads += 1;
            drop(st);
            let spawned = self.spawn();
            st = self.lock();
            if let Err(e) = spawned {
                st.threads -= 1;
                if st.threads == 0 {
                    return Err(e);
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

    /// What idle threads wait on, made once.
    fn events(&self) -> std::io::Result<&Events> {
        if self.events.get().is_none() {
            let _ = self.events.set(Events::new()?);
        }
        self.events
            .get()
            .ok_or_else(|| std::io::Error::other("internal error: no pool events"))
    }

    /// Wakes one idle thread (or the next to wait).
    fn notify(&self) {
        if let Some(events) = self.events.get() {
            events.notify();
        }
    }

    /// A mailbox ended (closed and drained, or its thread ended inside a
    /// callback): idle threads over the bound end.
    pub(super) fn consumer_ended(&self) {
        let mut st = self.lock();
        st.consumers = st.consumers.saturating_sub(1);
        drop(st);
        self.notify();
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
        // The thread that read the delivery runs it; others are woken
        // after its read, for what it leaves.
        let deferred = DEFERRED.with(|d| d.get().map(|n| d.set(Some(n + 1))).is_some());
        if !deferred {
            self.notify();
        }
        if short {
            if let Err(e) = self.spawn() {
                self.lock().threads -= 1;
                error!("cannot start a consumer thread: {e}");
            }
        }
    }

    fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        self.events()?;
        let pool = self.clone();
        crate::os_thread::spawn(c"ramqp-consumer", move || pool.serve())
    }

    /// A pool thread: mailboxes (and the link's reads) until the pool has
    /// more threads than its bound.
    fn serve(self: Arc<Self>) {
        let mut alive = Alive {
            pool: &self,
            armed: true,
        };
        let mut ran = false;
        while let Some(w) = self.next(ran) {
            w.run(&self);
            ran = true;
        }
        alive.armed = false;
    }

    /// The next ready mailbox, reading the link while none is; None: this
    /// thread ends (counted out here, under the lock, so a schedule never
    /// counts on it). `ran`: the thread ran a mailbox since it last asked.
    fn next(&self, ran: bool) -> Option<Arc<M>> {
        let events = self.events.get()?;
        let mut st = self.lock();
        if ran {
            st.running -= 1;
        }
        loop {
            if st.may_run() {
                if let Some(w) = st.ready.pop_front() {
                    st.running += 1;
                    // Two schedules can make one wake-up: pass it on.
                    let more = !st.ready.is_empty() && st.idle > 0;
                    drop(st);
                    if more {
                        events.notify();
                    }
                    return Some(w);
                }
            }
            if st.threads > st.target() {
                st.threads -= 1;
                // The others over the bound end too.
                let more = st.threads > st.target() && st.idle > 0;
                drop(st);
                self.let_go(events);
                if more {
                    events.notify();
                }
                return None;
            }
            drop(st);
            // Holding the link: read on before waiting.
            if self.read_link(events, false) {
                st = self.lock();
                continue;
            }
            st = self.lock();
            st.idle += 1;
            drop(st);
            match events.wait() {
                Event::Readable => {
                    self.read_link(events, true);
                }
                Event::Timer => self.on_timer(events),
                Event::Notified => {}
            }
            st = self.lock();
            st.idle -= 1;
        }
    }

    /// The link's timer: a holder that stalled loses the link; bytes of a
    /// coalescing link that waited `LINGER` are read here.
    fn on_timer(&self, events: &Events) {
        let mut h = lock(&self.link);
        h.timer_set = false;
        let Some(reader) = h.reader.clone() else {
            return;
        };
        if let Some((_, since)) = h.holder {
            let idle = since.elapsed();
            if idle >= STEAL_AFTER {
                h.release(events);
            } else {
                h.set_timer(events, Some(STEAL_AFTER - idle));
            }
        } else if reader.coalescing() {
            drop(h);
            reader.lingered();
            self.read_link(events, true);
        }
    }

    /// This thread ends: a link it holds is watched again.
    fn let_go(&self, events: &Events) {
        let me = THREAD_ID.with(|t| *t);
        let mut h = lock(&self.link);
        if h.reader.is_some() && h.holder.map(|(id, _)| id) == Some(me) {
            h.release(events);
        }
    }

    /// One turn of reading the link on this thread: `woken` by its bytes
    /// (it takes the link), or as its holder. What it delivers is run here
    /// (one mailbox) or by threads woken for the rest. Returns whether it
    /// read anything; when the socket had nothing or the turn was busy
    /// (`lets_go`), the holder lets go.
    fn read_link(&self, events: &Events, woken: bool) -> bool {
        let me = THREAD_ID.with(|t| *t);
        let reader = {
            let mut h = lock(&self.link);
            let Some(reader) = h.reader.clone() else {
                return false;
            };
            if !woken && h.holder.map(|(id, _)| id) != Some(me) {
                return false;
            }
            // The timer is set after the read (off the delivery's path):
            // nothing here blocks, what was read runs after.
            h.holder = Some((me, Instant::now()));
            reader
        };
        DEFERRED.with(|d| d.set(Some(0)));
        let turn = reader.read_turn();
        let scheduled = DEFERRED.with(|d| d.take()).unwrap_or(0);
        let mut h = lock(&self.link);
        // Not after a new generation took its place, or an idle thread
        // took the link back.
        let current = h.reader.as_ref().is_some_and(|l| Arc::ptr_eq(l, &reader));
        let holding = h.holder.map(|(id, _)| id) == Some(me);
        if current && turn == Turn::Ended {
            h.reader = None;
            h.holder = None;
            h.set_timer(events, None);
            events.unwatch(reader.fd());
            drop(h);
            self.lock().hosting = false;
            // The spare reading thread may end.
            events.notify();
        } else if current && holding && lets_go(&turn) {
            h.release(events);
        } else if current && holding {
            h.hold(events);
        } else if !current && holding {
            h.holder = None;
        }
        // This thread takes one (if it may); the rest need others.
        for _ in 1..scheduled.min(self.lock().idle + 1) {
            events.notify();
        }
        matches!(turn, Turn::Drained(_) | Turn::More)
    }

    /// Back of the ready list (more of its deliveries wait). Called by the
    /// thread that ran it, which comes back for the front of the list: a
    /// thread is woken only when another mailbox is ahead of it.
    pub(super) fn requeue(&self, w: Arc<M>) {
        let mut st = self.lock();
        st.ready.push_back(w);
        let others = st.ready.len() > 1;
        drop(st);
        if others {
            self.notify();
        }
    }

    /// These threads read a link that is not busy (not coalescing): what
    /// they decide may be sent at once.
    pub(super) fn link_quiet(&self) -> bool {
        let reader = lock(&self.link).reader.clone();
        reader.is_some_and(|r| !r.coalescing())
    }

    /// (threads, consumers) now: for tests.
    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.threads, st.consumers)
    }
}

/// Whether the holder lets go of the link after a turn: the socket had
/// nothing, or the link is busy (`BUSY_TURN`).
fn lets_go(turn: &Turn) -> bool {
    match turn {
        Turn::Nothing | Turn::More => true,
        Turn::Drained(n) => *n >= BUSY_TURN,
        Turn::Ended => false,
    }
}

/// The connection's consume link is read by the pool's threads: the thread
/// woken by its bytes reads them and runs (one of) the mailboxes they
/// filled, so a delivery reaches its callback with no hand-off.
impl<M: Mailbox> ReadHost for Pool<M> {
    fn attach(self: Arc<Self>, reader: Arc<LinkReader>) -> std::io::Result<()> {
        let events = self.events()?;
        let mut h = lock(&self.link);
        if let Some(old) = h.reader.take() {
            // A generation whose end no thread saw yet.
            events.unwatch(old.fd());
        }
        h.holder = None;
        events.watch(reader.fd())?;
        h.reader = Some(reader);
        drop(h);
        self.lock().hosting = true;
        self.grow()
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
        st.running = st.running.saturating_sub(1);
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

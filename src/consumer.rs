//! Consumer dispatch: `repeat` broker consumers per `amqp_consume` call, each
//! feeding its own library-owned OS thread ("ramqp-consumer") that
//! runs the callback and applies its disposition on the channel the delivery
//! came from. Callbacks never run on the runtime thread.
//!
//! Stop/start: a queue-wide `paused` flag is checked by every worker right
//! before it would call back, so once `stop` has seen `running == 0` no
//! callback can start; deliveries that arrive paused are given back with
//! basic.reject(requeue=true).

use crate::queue::Queue;
use crate::runtime;
use crate::wire::{Delivery, DeliverySink, WireChannel};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the application decided about one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    Reject,
    Requeue,
}

/// One delivery as the callback sees it; borrowed for the callback only.
pub struct DeliveryView<'a> {
    pub body: &'a [u8],
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: &'a [u8],
    pub routing_key: &'a [u8],
}

pub type Callback = Arc<dyn Fn(&DeliveryView<'_>) -> Disposition + Send + Sync>;

/// How long `stop` waits for broker cancels and in-progress callbacks.
const STOP_WAIT: Duration = Duration::from_secs(30);

thread_local! {
    /// The queue whose callback runs on this thread (0 = none), so a stop
    /// from inside a callback does not wait for itself.
    static IN_CALLBACK: Cell<u64> = const { Cell::new(0) };
}

pub fn in_callback_of(queue_id: u64) -> bool {
    IN_CALLBACK.with(|c| c.get() == queue_id)
}

struct Job {
    delivery: Delivery,
    /// Settles on the channel the delivery came from, where its disposition must go.
    settler: Arc<Settler>,
    generation: u64,
}

/// How a delivery was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settle {
    Ack,
    Reject,
    Requeue,
    /// Given back without a callback (paused, or stale): basic.reject requeue.
    Release,
}

/// Acks held back at most this many (and at most half the prefetch, so the
/// broker never runs out of credit waiting for them) ...
const SETTLE_BATCH: usize = 64;
/// ... or this long, so one frame acks many deliveries.
const SETTLE_DELAY: Duration = Duration::from_millis(2);

/// Settles the deliveries of one channel with few frames. Tags are
/// per channel and every delivery of the channel passes through here, so the
/// acks of a contiguous run of settled tags go out as one
/// basic.ack(multiple) on the run's last ack, which is still unacked (a
/// multiple-ack on a settled tag would close the channel: "unknown delivery
/// tag"). Rejects are sent singly, before it. Decisions behind a gap (an
/// earlier delivery still in a callback) are sent singly at the flush, so a
/// slow callback never holds back the others' acks and prefetch.
pub(crate) struct Settler {
    channel: WireChannel,
    /// Decisions held back at most: min(SETTLE_BATCH, prefetch / 2).
    batch: usize,
    state: Mutex<SettleState>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct SettleState {
    /// Every tag up to here is settled.
    floor: u64,
    /// Tag `floor + 1 + i` is at `slots[i]`: tags are dense per channel, so a
    /// ring replaces a map.
    slots: std::collections::VecDeque<Slot>,
    /// Slots in state `Decided`.
    decided: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Still with a callback (or not delivered yet).
    Open,
    /// Decided, not sent yet.
    Decided(Settle),
    /// Above `floor`, already sent singly.
    SentAhead,
}

impl Settler {
    fn new(channel: WireChannel, q: &Arc<Queue>) -> Arc<Settler> {
        let batch = match q.options.prefetch {
            0 => SETTLE_BATCH,
            p => (usize::from(p) / 2).clamp(1, SETTLE_BATCH),
        };
        let settler = Arc::new(Settler {
            channel,
            batch,
            state: Mutex::new(SettleState::default()),
            wake: tokio::sync::Notify::new(),
        });
        let (s2, q2) = (settler.clone(), Arc::downgrade(q));
        // Sends what waits longer than SETTLE_DELAY; ends with the channel.
        runtime::spawn(async move {
            loop {
                tokio::select! {
                    _ = s2.wake.notified() => {
                        tokio::time::sleep(SETTLE_DELAY).await;
                    }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                match q2.upgrade() {
                    Some(q) => s2.flush(&q),
                    None => break,
                }
                if !s2.channel.is_open() {
                    break;
                }
            }
        });
        settler
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SettleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a decision; sends now for a release or when a batch is full,
    /// else within SETTLE_DELAY.
    fn decide(&self, q: &Queue, tag: u64, how: Settle) {
        let mut st = self.lock();
        if tag <= st.floor {
            return;
        }
        let idx = (tag - st.floor - 1) as usize;
        if st.slots.len() <= idx {
            st.slots.resize(idx + 1, Slot::Open);
        }
        if st.slots[idx] != Slot::Open {
            return;
        }
        st.slots[idx] = Slot::Decided(how);
        let was_empty = st.decided == 0;
        st.decided += 1;
        if how == Settle::Release || st.decided >= self.batch {
            self.flush_locked(&mut st, q);
        } else if was_empty {
            self.wake.notify_one();
        }
    }

    fn flush(&self, q: &Queue) {
        let mut st = self.lock();
        self.flush_locked(&mut st, q);
    }

    fn flush_locked(&self, st: &mut SettleState, q: &Queue) {
        if st.decided == 0 {
            return;
        }
        let (mut acks, mut last_ack) = (0u64, 0u64);
        while let Some(&slot) = st.slots.front() {
            match slot {
                Slot::Open => break,
                Slot::Decided(Settle::Ack) => {
                    acks += 1;
                    last_ack = st.floor + 1;
                    st.decided -= 1;
                }
                Slot::Decided(how) => {
                    self.send_single(q, st.floor + 1, how);
                    st.decided -= 1;
                }
                Slot::SentAhead => {}
            }
            st.slots.pop_front();
            st.floor += 1;
        }
        if acks > 0 {
            let sent = self.channel.basic_ack(last_ack, acks > 1);
            let counter = if sent {
                &q.stats.acked
            } else {
                &q.stats.released
            };
            counter.fetch_add(acks, Ordering::Relaxed);
        }
        if st.decided > 0 {
            let floor = st.floor;
            for (i, slot) in st.slots.iter_mut().enumerate() {
                if let Slot::Decided(how) = *slot {
                    self.send_single(q, floor + 1 + i as u64, how);
                    *slot = Slot::SentAhead;
                }
            }
            st.decided = 0;
        }
    }

    /// The channel refuses once it is closed, so a stale tag never reaches a
    /// new channel; such a delivery counts as released (the broker
    /// redelivers it).
    fn send_single(&self, q: &Queue, tag: u64, how: Settle) {
        let ch = &self.channel;
        let (sent, counter) = match how {
            Settle::Ack => (ch.basic_ack(tag, false), &q.stats.acked),
            Settle::Reject => (ch.basic_reject(tag, false), &q.stats.rejected),
            Settle::Requeue => (ch.basic_reject(tag, true), &q.stats.requeued),
            Settle::Release => (ch.basic_reject(tag, true), &q.stats.released),
        };
        let counter = if sent { counter } else { &q.stats.released };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The jobs of one worker thread. The connection's reader queues a whole
/// burst of deliveries and wakes the worker once per burst (and only if it
/// sleeps), not once per delivery.
#[derive(Default)]
struct WorkQueue {
    state: Mutex<WorkState>,
    ready: Condvar,
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

    /// Queues a job; gives it back when the worker is gone.
    fn push(&self, job: Job) -> Result<(), Job> {
        let mut st = self.lock();
        if st.closed {
            return Err(job);
        }
        st.jobs.push_back(job);
        Ok(())
    }

    fn wake(&self) {
        let st = self.lock();
        if st.sleeping || st.closed {
            drop(st);
            self.ready.notify_one();
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Takes every queued job, sleeping while there are none; None once
    /// closed and drained.
    fn take(&self, into: &mut std::collections::VecDeque<Job>) -> bool {
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

struct Group {
    workers: Vec<Arc<WorkQueue>>,
    /// The channel generation its broker consumers run on (0 = not running).
    started_on: u64,
}

#[derive(Default)]
struct State {
    groups: Vec<Group>,
    channel: Option<(u64, WireChannel, Arc<Settler>)>,
    tags: Vec<String>,
}

#[derive(Default)]
pub struct ConsumerSet {
    state: tokio::sync::Mutex<State>,
    paused: AtomicBool,
    /// Generation of the live channel; deliveries from another are stale.
    channel_generation: AtomicU64,
    running: AtomicUsize,
    /// Callbacks of this queue that are themselves waiting in `stop`: they
    /// must not wait for each other.
    stopping_inside: AtomicUsize,
    queued: AtomicUsize,
    forwarders: AtomicUsize,
    next_tag: AtomicU64,
    idle: (Mutex<()>, Condvar),
}

impl Drop for Group {
    fn drop(&mut self) {
        for w in &self.workers {
            w.close();
        }
    }
}

impl ConsumerSet {
    fn notify(&self) {
        let _g = self.idle.0.lock().unwrap_or_else(|p| p.into_inner());
        self.idle.1.notify_all();
    }

    /// Waits until `done()` or `limit`; false on timeout.
    fn wait_until(&self, limit: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut g = self.idle.0.lock().unwrap_or_else(|p| p.into_inner());
        while !done() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let slice = (deadline - now).min(Duration::from_millis(20));
            g = self
                .idle
                .1
                .wait_timeout(g, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// Adds `repeat` consumers calling `cb`; they start now if the channel is up
/// and the queue is not paused, otherwise on the next connect / start.
pub fn add(q: &Arc<Queue>, cb: Callback, repeat: u32) -> crate::Result<()> {
    let repeat = repeat.max(1) as usize;
    let mut workers = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let work = Arc::new(WorkQueue::default());
        let (q2, cb2, work2) = (q.clone(), cb.clone(), work.clone());
        std::thread::Builder::new()
            .name("ramqp-consumer".into())
            .spawn(move || {
                let mut batch = std::collections::VecDeque::new();
                while work2.take(&mut batch) {
                    while let Some(job) = batch.pop_front() {
                        handle_job(&q2, &cb2, job);
                    }
                }
            })
            .map_err(|e| crate::Error::internal(format!("cannot start a consumer thread: {e}")))?;
        workers.push(work);
    }
    // Through the runtime rather than tokio's blocking_lock, which needs
    // thread-locals that are gone when called from an atexit handler.
    let q2 = q.clone();
    runtime::block_on(
        async move {
            q2.consumers.state.lock().await.groups.push(Group {
                workers,
                started_on: 0,
            });
        },
        STOP_WAIT,
    )?;
    let q2 = q.clone();
    runtime::spawn(async move { reconcile(&q2).await });
    Ok(())
}

fn handle_job(q: &Arc<Queue>, cb: &Callback, job: Job) {
    let cs = &q.consumers;
    cs.queued.fetch_sub(1, Ordering::SeqCst);
    cs.running.fetch_add(1, Ordering::SeqCst);
    let d = &job.delivery;
    if cs.paused.load(Ordering::SeqCst)
        || job.generation != cs.channel_generation.load(Ordering::SeqCst)
    {
        cs.running.fetch_sub(1, Ordering::SeqCst);
        // Give it back now; on a dead channel this is a no-op and the broker
        // requeues it by itself.
        job.settler.decide(q, d.delivery_tag, Settle::Release);
        cs.notify();
        return;
    }
    q.stats.delivered.fetch_add(1, Ordering::Relaxed);
    let view = DeliveryView {
        body: d.body(),
        delivery_tag: d.delivery_tag,
        redelivered: d.redelivered,
        exchange: d.exchange(),
        routing_key: d.routing_key(),
    };
    IN_CALLBACK.with(|c| c.set(q.id));
    // A panicking Rust callback must not kill the thread: treat as requeue.
    let disposition = catch_unwind(AssertUnwindSafe(|| cb(&view))).unwrap_or(Disposition::Requeue);
    IN_CALLBACK.with(|c| c.set(0));
    let how = match disposition {
        Disposition::Ack => Settle::Ack,
        Disposition::Reject => Settle::Reject,
        Disposition::Requeue => Settle::Requeue,
    };
    // Held for a batch (or SETTLE_DELAY): acking each burst as it ends kept
    // the broker in lockstep with us, in bursts of a few deliveries, each
    // costing both threads a wake-up.
    job.settler.decide(q, d.delivery_tag, how);
    cs.running.fetch_sub(1, Ordering::SeqCst);
    if cs.paused.load(Ordering::SeqCst) {
        cs.notify();
    }
}

/// Brings the broker consumers in line with `paused` and the groups: starts
/// those not running on the live channel, or cancels all when paused.
pub async fn reconcile(q: &Arc<Queue>) {
    let cs = &q.consumers;
    let mut st = cs.state.lock().await;
    let Some((generation, ch, settler)) = st.channel.clone() else {
        return;
    };
    if cs.paused.load(Ordering::SeqCst) {
        let tags = std::mem::take(&mut st.tags);
        for tag in tags {
            if let Err(e) = ch.basic_cancel(&tag).await {
                debug!("queue '{}': cancel failed: {e}", q.name);
            }
        }
        for g in &mut st.groups {
            g.started_on = 0;
        }
        return;
    }
    let State { groups, tags, .. } = &mut *st;
    for g in groups.iter_mut().filter(|g| g.started_on != generation) {
        for work in &g.workers {
            let n = cs.next_tag.fetch_add(1, Ordering::Relaxed);
            let tag = format!("resilient-amqp.{}.{}", q.id, n);
            cs.forwarders.fetch_add(1, Ordering::SeqCst);
            let sink = Box::new(Sink {
                q: q.clone(),
                work: work.clone(),
                settler: settler.clone(),
                generation,
                queued: false,
            });
            if let Err(e) = ch.basic_consume(&q.name, &tag, sink).await {
                warn!("queue '{}': basic.consume failed: {e}", q.name);
                return;
            }
            tags.push(tag);
        }
        g.started_on = generation;
    }
}

/// Hands one broker consumer's deliveries to its worker thread. Called on
/// the connection's reader (the runtime thread): it only queues. Dropped
/// when the consumer ends (cancel, channel closed).
struct Sink {
    q: Arc<Queue>,
    work: Arc<WorkQueue>,
    settler: Arc<Settler>,
    generation: u64,
    /// Jobs queued since the last flush.
    queued: bool,
}

impl DeliverySink for Sink {
    fn deliver(&mut self, delivery: Delivery) {
        let cs = &self.q.consumers;
        cs.queued.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            delivery,
            settler: self.settler.clone(),
            generation: self.generation,
        };
        match self.work.push(job) {
            Ok(()) => self.queued = true,
            Err(job) => {
                cs.queued.fetch_sub(1, Ordering::SeqCst);
                // The worker is gone (closing): give it back, and keep the
                // channel's settled prefix moving.
                let tag = job.delivery.delivery_tag;
                self.settler.decide(&self.q, tag, Settle::Release);
            }
        }
    }

    fn flush(&mut self) {
        if std::mem::take(&mut self.queued) {
            self.work.wake();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.flush();
        self.q.consumers.forwarders.fetch_sub(1, Ordering::SeqCst);
        self.q.consumers.notify();
    }
}

/// A session has a fresh channel: consumers (re)start on it.
pub async fn attach(q: &Arc<Queue>, generation: u64, ch: WireChannel) {
    {
        let mut st = q.consumers.state.lock().await;
        let settler = Settler::new(ch.clone(), q);
        st.channel = Some((generation, ch, settler));
        st.tags.clear();
        for g in &mut st.groups {
            g.started_on = 0;
        }
        q.consumers
            .channel_generation
            .store(generation, Ordering::SeqCst);
    }
    reconcile(q).await;
}

/// The session's channel is gone: its consumers went with it.
pub async fn detach(q: &Arc<Queue>, generation: u64) {
    let mut st = q.consumers.state.lock().await;
    if matches!(st.channel, Some((g, _, _)) if g == generation) {
        st.channel = None;
        st.tags.clear();
        for g in &mut st.groups {
            g.started_on = 0;
        }
        q.consumers.channel_generation.store(0, Ordering::SeqCst);
    }
}

/// `amqp_consume_stop`: no callback runs or starts once this returns (a
/// caller inside a callback of this queue only excludes itself).
pub fn stop(q: &Arc<Queue>) -> crate::Result<()> {
    stop_until(q, Instant::now() + STOP_WAIT)
}

fn stop_until(q: &Arc<Queue>, deadline: Instant) -> crate::Result<()> {
    let cs = &q.consumers;
    cs.paused.store(true, Ordering::SeqCst);
    let q2 = q.clone();
    let left = || deadline.saturating_duration_since(Instant::now());
    // Cancel at the broker first so nothing new is prefetched.
    let _ = runtime::block_on(async move { reconcile(&q2).await }, left());
    let inside = in_callback_of(q.id);
    if inside {
        cs.stopping_inside.fetch_add(1, Ordering::SeqCst);
        cs.notify();
    }
    // Every callback still running must be one that is stopping from inside.
    let callbacks_done =
        || cs.running.load(Ordering::SeqCst) <= cs.stopping_inside.load(Ordering::SeqCst);
    let done = cs.wait_until(left(), || {
        callbacks_done()
            // From inside a callback, deliveries queued behind us on our own
            // worker cannot be given back until we return.
            && (inside
                || (cs.queued.load(Ordering::SeqCst) == 0
                    && cs.forwarders.load(Ordering::SeqCst) == 0))
    });
    let callbacks_stopped = callbacks_done();
    if inside {
        cs.stopping_inside.fetch_sub(1, Ordering::SeqCst);
    }
    // Send every decision still waiting for a batch before returning.
    let q2 = q.clone();
    let _ = runtime::block_on(
        async move {
            let settler = q2.consumers.state.lock().await.channel.clone();
            if let Some((_, _, settler)) = settler {
                settler.flush(&q2);
            }
        },
        left().max(Duration::from_millis(100)),
    );
    if !done && !callbacks_stopped {
        return Err(crate::Error::new(
            crate::ErrorKind::Timeout,
            "consume_stop: a callback is still running",
        ));
    }
    Ok(())
}

/// `amqp_consume_start`.
pub fn start(q: &Arc<Queue>) {
    q.consumers.paused.store(false, Ordering::SeqCst);
    let q2 = q.clone();
    runtime::spawn(async move { reconcile(&q2).await });
}

/// For close: stop (waiting for running callbacks only until `deadline`),
/// then let the worker threads end once drained.
pub fn shutdown(q: &Arc<Queue>, deadline: Instant) {
    let _ = stop_until(q, deadline);
    let q2 = q.clone();
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let _ = runtime::block_on(
        async move { drop(std::mem::take(&mut q2.consumers.state.lock().await.groups)) },
        left,
    );
}

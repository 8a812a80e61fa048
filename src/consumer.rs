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
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicRejectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::Channel;
use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
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
    pub exchange: &'a str,
    pub routing_key: &'a str,
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

pub fn in_any_callback() -> bool {
    IN_CALLBACK.with(|c| c.get() != 0)
}

struct Job {
    delivery: lapin::message::Delivery,
    /// The channel the delivery came from, where its disposition must go.
    channel: Arc<Channel>,
    generation: u64,
}

struct Group {
    workers: Vec<Sender<Job>>,
    /// The channel generation its broker consumers run on (0 = not running).
    started_on: u64,
}

#[derive(Default)]
struct State {
    groups: Vec<Group>,
    channel: Option<(u64, Channel)>,
    tags: Vec<ShortString>,
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

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
}

/// Adds `repeat` consumers calling `cb`; they start now if the channel is up
/// and the queue is not paused, otherwise on the next connect / start.
pub fn add(q: &Arc<Queue>, cb: Callback, repeat: u32) -> crate::Result<()> {
    let repeat = repeat.max(1) as usize;
    let mut workers = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let (tx, rx) = channel::<Job>();
        let (q2, cb2) = (q.clone(), cb.clone());
        std::thread::Builder::new()
            .name("ramqp-consumer".into())
            .spawn(move || {
                for job in rx {
                    handle_job(&q2, &cb2, job);
                }
            })
            .map_err(|e| crate::Error::internal(format!("cannot start a consumer thread: {e}")))?;
        workers.push(tx);
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
        let tag = d.delivery_tag;
        poll_once(
            job.channel
                .basic_reject(tag, BasicRejectOptions { requeue: true }),
        );
        q.stats.released.fetch_add(1, Ordering::Relaxed);
        cs.notify();
        return;
    }
    q.stats.delivered.fetch_add(1, Ordering::Relaxed);
    let view = DeliveryView {
        body: &d.data,
        delivery_tag: d.delivery_tag,
        redelivered: d.redelivered,
        exchange: d.exchange.as_str(),
        routing_key: d.routing_key.as_str(),
    };
    IN_CALLBACK.with(|c| c.set(q.id));
    // A panicking Rust callback must not kill the thread: treat as requeue.
    let disposition = catch_unwind(AssertUnwindSafe(|| cb(&view))).unwrap_or(Disposition::Requeue);
    IN_CALLBACK.with(|c| c.set(0));
    // Settled on the channel the delivery came from, which refuses once it
    // is closed: a stale tag never reaches a new channel, and such a
    // delivery counts as released (the broker redelivers it). Calling the
    // channel directly (not the Acker) keeps the runtime thread out of it.
    let (tag, ch) = (d.delivery_tag, &job.channel);
    let (sent, counter) = match disposition {
        Disposition::Ack => (
            poll_once(ch.basic_ack(tag, BasicAckOptions::default())),
            &q.stats.acked,
        ),
        Disposition::Reject => (
            poll_once(ch.basic_reject(tag, BasicRejectOptions { requeue: false })),
            &q.stats.rejected,
        ),
        Disposition::Requeue => (
            poll_once(ch.basic_reject(tag, BasicRejectOptions { requeue: true })),
            &q.stats.requeued,
        ),
    };
    if sent {
        counter.fetch_add(1, Ordering::Relaxed);
    } else {
        q.stats.released.fetch_add(1, Ordering::Relaxed);
    }
    cs.running.fetch_sub(1, Ordering::SeqCst);
    if cs.paused.load(Ordering::SeqCst) {
        cs.notify();
    }
}

/// lapin queues an ack's frame on the first poll and then only waits for the
/// write; polling once from the worker thread sends it without a hop through
/// the runtime, and in the order the worker decided. Returns whether the
/// frame was queued (false: the channel is closed).
fn poll_once<F: Future<Output = lapin::Result<()>>>(fut: F) -> bool {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    !matches!(fut.as_mut().poll(&mut cx), std::task::Poll::Ready(Err(_)))
}

/// Brings the broker consumers in line with `paused` and the groups: starts
/// those not running on the live channel, or cancels all when paused.
pub async fn reconcile(q: &Arc<Queue>) {
    let cs = &q.consumers;
    let mut st = cs.state.lock().await;
    let Some((generation, ch)) = st.channel.clone() else {
        return;
    };
    if cs.paused.load(Ordering::SeqCst) {
        let tags = std::mem::take(&mut st.tags);
        for tag in tags {
            if let Err(e) = ch.basic_cancel(tag, BasicCancelOptions::default()).await {
                debug!("queue '{}': cancel failed: {e}", q.name);
            }
        }
        for g in &mut st.groups {
            g.started_on = 0;
        }
        return;
    }
    let State { groups, tags, .. } = &mut *st;
    let shared_channel = Arc::new(ch.clone());
    for g in groups.iter_mut().filter(|g| g.started_on != generation) {
        for tx in &g.workers {
            let n = cs.next_tag.fetch_add(1, Ordering::Relaxed);
            let tag: ShortString = format!("resilient-amqp.{}.{}", q.id, n).into();
            let consumer = match ch
                .basic_consume(
                    q.name.as_str().into(),
                    tag.clone(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    warn!("queue '{}': basic.consume failed: {e}", q.name);
                    return;
                }
            };
            tags.push(tag);
            cs.forwarders.fetch_add(1, Ordering::SeqCst);
            let (q2, tx2, ch2) = (q.clone(), tx.clone(), shared_channel.clone());
            tokio::spawn(forward(q2, consumer, tx2, ch2, generation));
        }
        g.started_on = generation;
    }
}

async fn forward(
    q: Arc<Queue>,
    mut consumer: lapin::Consumer,
    tx: Sender<Job>,
    channel: Arc<Channel>,
    generation: u64,
) {
    let cs = &q.consumers;
    while let Some(Ok(delivery)) = consumer.next().await {
        cs.queued.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            delivery,
            channel: channel.clone(),
            generation,
        };
        if tx.send(job).is_err() {
            cs.queued.fetch_sub(1, Ordering::SeqCst);
            break;
        }
    }
    cs.forwarders.fetch_sub(1, Ordering::SeqCst);
    cs.notify();
}

/// A session has a fresh channel: consumers (re)start on it.
pub async fn attach(q: &Arc<Queue>, generation: u64, ch: Channel) {
    {
        let mut st = q.consumers.state.lock().await;
        st.channel = Some((generation, ch));
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
    if matches!(st.channel, Some((g, _)) if g == generation) {
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

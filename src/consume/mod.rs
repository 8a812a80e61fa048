//! Consumer dispatch: `repeat` broker consumers per `amqp_consume` call, each
//! feeding its own mailbox, which the connection's bounded pool of
//! library-owned OS threads ("ramqp-consumer", `pool.rs`: at most
//! min(64, consumers)) runs: the callback, one delivery at a time in order,
//! never on two threads at once, and its disposition applied on the channel
//! the delivery came from. Callbacks never run on the runtime thread.
//!
//! Stop/start: a queue-wide `paused` flag is checked by every mailbox right
//! before it would call back, so once `stop` has seen `running == 0` no
//! callback can start; deliveries that arrive paused are given back with
//! basic.reject(requeue=true).

mod dedupe;
mod deferred;
mod dispatch;
mod forwarder;
mod group;
mod pool;
mod pull;
mod settle_book;
mod settler;
mod start;
mod worker;

use crate::runtime;
use crate::wire::{Failure, FieldTable, WireChannel};
use dedupe::Dedupe;
pub(crate) use dedupe::MAX_DEDUPE;
pub(crate) use group::Release;
use group::SetShared;
/// The connection's callback threads (`pool.rs`).
pub(crate) type CallbackPool = pool::Pool<WorkQueue>;
pub(crate) use pull::Polled;
use pull::PullQueue;
use settler::{ConsumeStats, Settler};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use worker::WorkQueue;

/// What the application decided about one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    Ack,
    Reject,
    Requeue,
    /// Settled later, by id (`ConsumerSet::settle`).
    Defer,
    /// A value that is none of these (a handler that failed, an FFI's
    /// default return): applied as the queue's `invalid_disposition`.
    Invalid(i64),
}

use settle_book::Settle;

/// One delivery as the callback sees it; borrowed for the callback only.
pub(crate) struct DeliveryView<'a> {
    pub body: &'a [u8],
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: &'a [u8],
    pub routing_key: &'a [u8],
    /// The content header's property bytes (`wire::props`), checked.
    pub properties: &'a [u8],
    /// Unique in the process: settles it by `ConsumerSet::settle`.
    pub delivery_id: u64,
}

/// A consume callback. It runs outside `catch_unwind` (see
/// `dispatch::run_slice`), so it must catch its own Rust panics.
pub(crate) type Callback = Arc<dyn Fn(&DeliveryView<'_>) -> Disposition + Send + Sync>;

/// How long `stop` waits for broker cancels and in-progress callbacks.
const STOP_WAIT: Duration = Duration::from_secs(30);

thread_local! {
    /// The queue whose callback runs on this thread (0 = none), so a stop
    /// from inside a callback does not wait for itself.
    static IN_CALLBACK: Cell<u64> = const { Cell::new(0) };
}

fn in_callback_of(queue_id: u64) -> bool {
    IN_CALLBACK.with(|c| c.get() == queue_id)
}

/// What runs a mailbox's deliveries: the consumer's set and callback
/// (taken by the pool thread that runs the mailbox; dropped, with the
/// application's userdata, when the mailbox ends).
struct Runner {
    cs: Arc<ConsumerSet>,
    set: Arc<SetShared>,
    cb: Callback,
}

/// One consumer set as the broker sees it.
struct Group {
    shared: Arc<SetShared>,
    /// The pull consumer's queue (a group of its own, without workers).
    pull: Option<Arc<PullQueue>>,
    /// The channel generation its broker consumers run on (0 = not running).
    started_on: u64,
    /// Its broker consumers on that channel.
    tags: Vec<String>,
}

impl Group {
    fn new(shared: Arc<SetShared>) -> Group {
        Group {
            shared,
            pull: None,
            started_on: 0,
            tags: Vec::new(),
        }
    }

    /// Its broker consumers are gone (with their channel, or cancelled).
    fn stopped(&mut self) {
        self.started_on = 0;
        self.tags.clear();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.shared.close_workers();
    }
}

#[derive(Default)]
struct State {
    groups: Vec<Group>,
    channel: Option<(u64, WireChannel, Arc<Settler>)>,
    /// The queue's name on the live channel (a server-named queue's
    /// changes with every connection).
    queue: String,
}

/// How the queue's broker consumers are asked for.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConsumerSettings {
    /// Tags NAME-<n>; None: resilient-amqp.<queue id>.<n>.
    pub name: Option<String>,
    pub exclusive: bool,
    /// basic.consume's arguments (x-priority, x-stream-offset, ...).
    pub arguments: FieldTable,
    /// Queue option dedupe: the window of acked message ids (0 = off).
    pub dedupe: usize,
}

/// The consumers of one queue.
pub(crate) struct ConsumerSet {
    queue_id: u64,
    queue_name: String,
    settings: ConsumerSettings,
    prefetch: u16,
    /// How a return value that is no disposition settles.
    invalid_as: Settle,
    /// When the last invalid disposition was logged (ms since a process
    /// start; 0 never).
    invalid_warned_at: AtomicU64,
    /// Every mailbox of the queue, for settles by id while a callback runs.
    workers: Mutex<Vec<Arc<WorkQueue>>>,
    /// The connection's callback threads.
    pool: Arc<CallbackPool>,
    /// The consumer sets not cancelled; None once closing (no set is added).
    sets: Mutex<Option<Vec<Arc<SetShared>>>>,
    pub stats: Arc<ConsumeStats>,
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
    /// The pull consumer's waiting deliveries (`pull.rs`), once started.
    pull: OnceLock<Arc<PullQueue>>,
    /// Closed or failed for good (`end`).
    ended: AtomicBool,
    /// Starts callers wait for, and the refusal incident (`start.rs`).
    starts: Mutex<start::Starts>,
    /// The acked message ids (queue option dedupe), if on.
    dedupe: Option<Arc<Dedupe>>,
}

impl ConsumerSet {
    pub fn new(
        pool: &Arc<CallbackPool>,
        queue_id: u64,
        queue_name: &str,
        prefetch: u16,
        invalid_rejects: bool,
        settings: ConsumerSettings,
    ) -> Arc<ConsumerSet> {
        Arc::new(ConsumerSet {
            queue_id,
            queue_name: queue_name.to_string(),
            prefetch,
            invalid_as: if invalid_rejects {
                Settle::Reject
            } else {
                Settle::Requeue
            },
            invalid_warned_at: AtomicU64::new(0),
            workers: Mutex::new(Vec::new()),
            pool: pool.clone(),
            sets: Mutex::new(Some(Vec::new())),
            stats: Arc::default(),
            state: tokio::sync::Mutex::default(),
            paused: AtomicBool::new(false),
            channel_generation: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            stopping_inside: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            forwarders: AtomicUsize::new(0),
            next_tag: AtomicU64::new(0),
            idle: (Mutex::new(()), Condvar::new()),
            pull: OnceLock::new(),
            ended: AtomicBool::new(false),
            starts: Mutex::default(),
            dedupe: Dedupe::new(settings.dedupe),
            settings,
        })
    }

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

    /// The pull consumer's group (one broker consumer, no worker), unless
    /// the queue has one: the new set's id, for `await_start`.
    fn add_pull_group(self: &Arc<Self>, pull: Arc<PullQueue>) -> crate::Result<Option<u64>> {
        // Through the runtime rather than tokio's blocking_lock, which needs
        // thread-locals that are gone when called from an atexit handler.
        let cs = self.clone();
        let added = runtime::block_on(
            async move {
                let mut st = cs.state.lock().await;
                if st.groups.iter().any(|g| g.pull.is_some()) {
                    return None;
                }
                let mut group = Group::new(SetShared::without_workers());
                group.pull = Some(pull);
                let id = group.shared.id;
                st.groups.push(group);
                cs.expect_start(id);
                Some(id)
            },
            STOP_WAIT,
        )?;
        if added.is_some() {
            let cs = self.clone();
            runtime::spawn("consumer start", async move {
                let _ = cs.reconcile().await;
            });
        }
        Ok(added)
    }

    /// Brings the broker consumers in line with `paused` and the groups:
    /// starts those not running on the live channel, or cancels all when
    /// paused. Err when a basic.consume failed (the broker closes the
    /// channel on a refusal: the consume link's session reopens it).
    async fn reconcile(self: &Arc<Self>) -> Result<(), Failure> {
        let mut st = self.state.lock().await;
        let Some((generation, ch, settler)) = st.channel.clone() else {
            return Ok(());
        };
        if self.paused.load(Ordering::SeqCst) {
            for g in &mut st.groups {
                cancel_tags(&ch, &std::mem::take(&mut g.tags), &self.queue_name).await;
                g.stopped();
            }
            return Ok(());
        }
        let queue = st.queue.clone();
        let to_start = st
            .groups
            .iter_mut()
            .filter(|g| g.started_on != generation && !g.shared.given_up());
        for g in to_start {
            for (tag, sink) in self.sinks(g, generation, &settler) {
                let (exclusive, args) = (self.settings.exclusive, &self.settings.arguments);
                let consumed = ch.basic_consume(&queue, &tag, exclusive, args.clone(), sink);
                if let Err(e) = consumed.await {
                    match &e {
                        Failure::Refused { text, .. } | Failure::ConnectionRefused { text, .. } => {
                            self.refused(Some(g.shared.id), text)
                        }
                        _ => debug!("queue '{}': basic.consume failed: {e}", self.queue_name),
                    }
                    return Err(e);
                }
                g.tags.push(tag);
            }
            g.started_on = generation;
            self.set_started(g.shared.id);
        }
        self.all_started();
        Ok(())
    }

    /// The consume link's session has a fresh channel: consumers (re)start
    /// on it, consuming from `queue` (its name on that channel's
    /// connection). Err when the broker refused one (the channel is closing).
    pub async fn attach(
        self: &Arc<Self>,
        generation: u64,
        ch: WireChannel,
        queue: String,
    ) -> Result<(), Failure> {
        {
            let mut st = self.state.lock().await;
            st.queue = queue;
            let settler = Settler::new(ch.clone(), self.prefetch, self.stats.clone());
            spawn_flusher(&settler, Arc::downgrade(self));
            st.channel = Some((generation, ch, settler));
            st.groups.iter_mut().for_each(Group::stopped);
            self.channel_generation.store(generation, Ordering::SeqCst);
        }
        self.reconcile().await
    }

    /// The session's channel is gone: its consumers went with it.
    pub async fn detach(&self, generation: u64) {
        let mut st = self.state.lock().await;
        if matches!(st.channel, Some((g, _, _)) if g == generation) {
            // Deferred deliveries of the lost channel: a settle now gets
            // AMQP_ERR_STALE_DELIVERY (the broker redelivers them).
            if let Some((_, _, settler)) = &st.channel {
                let stale = deferred::mark_stale(self.queue_id, settler);
                self.stats.unsettled.fetch_sub(stale, Ordering::Relaxed);
            }
            st.channel = None;
            st.groups.iter_mut().for_each(Group::stopped);
            self.channel_generation.store(0, Ordering::SeqCst);
        }
    }

    /// `amqp_consume_stop`: no callback runs or starts once this returns (a
    /// caller inside a callback of this queue only excludes itself);
    /// AMQP_ERR_TIMEOUT when one still runs after 30 s.
    pub fn stop(self: &Arc<Self>) -> crate::Result<()> {
        self.stop_until(Instant::now() + STOP_WAIT)
    }

    /// `amqp_consume_stop_timeout`: `stop` bounded by `timeout`; zero
    /// begins the stop and returns.
    pub fn stop_timeout(self: &Arc<Self>, timeout: Duration) -> crate::Result<()> {
        if timeout.is_zero() {
            self.paused.store(true, Ordering::SeqCst);
            let cs = self.clone();
            runtime::spawn("consumer stop", async move {
                let _ = cs.reconcile().await;
            });
            return Ok(());
        }
        self.stop_until(Instant::now() + timeout)
    }

    fn stop_until(self: &Arc<Self>, deadline: Instant) -> crate::Result<()> {
        self.paused.store(true, Ordering::SeqCst);
        let left = || deadline.saturating_duration_since(Instant::now());
        // Cancel at the broker first so nothing new is prefetched.
        let cs = self.clone();
        let _ = runtime::block_on(async move { cs.reconcile().await }, left());
        let inside = in_callback_of(self.queue_id);
        if inside {
            self.stopping_inside.fetch_add(1, Ordering::SeqCst);
            self.notify();
        }
        // Every callback still running must be one that is stopping from inside.
        let callbacks_done =
            || self.running.load(Ordering::SeqCst) <= self.stopping_inside.load(Ordering::SeqCst);
        let done = self.wait_until(left(), || {
            callbacks_done()
                // From inside a callback, deliveries queued behind us on our
                // own worker cannot be given back until we return.
                && (inside
                    || (self.queued.load(Ordering::SeqCst) == 0
                        && self.forwarders.load(Ordering::SeqCst) == 0))
        });
        let callbacks_stopped = callbacks_done();
        if inside {
            self.stopping_inside.fetch_sub(1, Ordering::SeqCst);
        }
        // Send every decision still waiting for a batch before returning
        // (not waited for past the deadline: the flush still runs).
        self.flush(left());
        if !done && !callbacks_stopped {
            return Err(crate::Error::new(
                crate::ErrorKind::Timeout,
                "consume_stop: a callback is still running",
            ));
        }
        Ok(())
    }

    /// `amqp_consume_start`.
    pub fn start(self: &Arc<Self>) {
        self.paused.store(false, Ordering::SeqCst);
        let cs = self.clone();
        runtime::spawn("consumer start", async move {
            let _ = cs.reconcile().await;
        });
    }

    /// For close: stop (waiting for running callbacks only until
    /// `deadline`), then let the mailboxes end once drained (each
    /// set's release follows its last callback).
    pub fn shutdown(self: &Arc<Self>, deadline: Instant) {
        self.end();
        let _ = self.stop_until(deadline);
        self.close_sets();
        let cs = self.clone();
        // Not waited for past the deadline: the workers still end.
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = runtime::block_on(
            async move { drop(std::mem::take(&mut cs.state.lock().await.groups)) },
            left,
        );
    }

    /// Sends every decision still held for a batch (close: before the
    /// connection goes).
    pub fn flush(self: &Arc<Self>, timeout: Duration) {
        let cs = self.clone();
        let _ = runtime::block_on(
            async move {
                let settler = cs.state.lock().await.channel.clone();
                if let Some((_, _, settler)) = settler {
                    settler.flush();
                }
            },
            timeout,
        );
    }
}

/// Sends the decisions that waited longer than the settle delay; ends with
/// the channel or the consumer set.
/// basic.cancel for each of a set's broker consumers. A failure is only
/// logged: the channel is going, and its consumers with it.
async fn cancel_tags(ch: &WireChannel, tags: &[String], queue: &str) {
    for tag in tags {
        if let Err(e) = ch.basic_cancel(tag).await {
            debug!("queue '{queue}': cancel of consumer {tag} failed: {e}");
        }
    }
}

fn spawn_flusher(settler: &Arc<Settler>, cs: Weak<ConsumerSet>) {
    let settler = settler.clone();
    runtime::spawn("settle flusher", async move {
        loop {
            settler.wait_for_due().await;
            if cs.strong_count() == 0 {
                break;
            }
            settler.flush();
            if !settler.channel_open() {
                break;
            }
        }
    });
}

//! A connection as the application sees it: up to two links (TCP
//! connections, `link.rs`), each replaced after every loss with exponential
//! backoff + jitter, until `max_reconnects` consecutive failures (then
//! failed for good; the process lives on).
//!
//! The publish link: on connect, every queue gets a session task for that
//! generation (`session.rs`): it opens the queue's channel, declares the
//! topology and runs its publisher; when the generation ends, sessions end
//! and keep their unconfirmed messages for the next one. The consume link
//! (`consume_link.rs`), opened with the first consumer: a channel per queue
//! with consumers, where its consumer sets start. A publish-only
//! application uses one TCP connection.

use super::address::BrokerAddress;
use super::options::{ConnectionOptions, QueueOptions};
use super::queue::Queue;
use super::session::{session, SessionEnv};
use crate::consume::CallbackPool;
use crate::error::{Error, ErrorKind, Result};
use crate::publish::ReportThread;
use crate::runtime;
use crate::wire::{WireConfig, WireConnection};
use link::{Link, LinkKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod channels;
mod close;
mod consume_link;
mod link;
mod reports;
use channels::ChannelLimit;
pub(crate) use close::CloseReport;
use reports::spawn_expiry;

/// Where a connection is in its life. The C API's `amqp_connection_state`
/// mirrors it one to one (src/ffi/connection.rs; exhaustive matches both
/// ways and a unit test keep the two in step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectionState {
    Connecting = 0,
    Connected = 1,
    Reconnecting = 2,
    Failed = 3,
    Closed = 4,
}

/// A connection's state and counters at one moment. `amqp_connection_stats`
/// is built from it field by field with exhaustive destructuring, so a field
/// added here or there does not compile until both agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnectionStatsSnapshot {
    pub state: ConnectionState,
    pub connects: u64,
    pub failed_attempts: u64,
    pub consecutive_failures: u64,
    pub queues: u64,
    pub protocol_errors: u64,
    pub consume_connects: u64,
    pub consume_failed_attempts: u64,
}

/// How long `open_queue` waits for the broker to answer the declares.
const DECLARE_TIMEOUT: Duration = Duration::from_secs(30);

struct Shared {
    /// The publish link's state (the consume link's is its `LinkState`).
    state: ConnectionState,
    /// Each link's live connection and its generation (by `LinkKind`).
    current: [Option<(u64, WireConnection)>; 2],
    queues: Vec<Arc<Queue>>,
    /// The queues with consumers: each has a session on the consume link.
    consuming: Vec<Arc<Queue>>,
    /// The consume link's supervisor was started.
    consume_link: bool,
}

pub(crate) struct Connection {
    /// The brokers (several for a cluster: `address_list.rs`), in order.
    addresses: Vec<BrokerAddress>,
    /// What the engine needs to connect to each, by index.
    wires: Vec<WireConfig>,
    pub options: ConnectionOptions,
    shared: Mutex<Shared>,
    state_changed: Condvar,
    /// By `LinkKind`: publish, consume.
    links: [Link; 2],
    /// Ends both links: close, or given up for good.
    shutdown: watch::Sender<bool>,
    protocol_errors: AtomicU64,
    next_queue_id: AtomicU64,
    /// Gave up for good (the state may since have moved on to Closed).
    failed: AtomicBool,
    /// Calls the queues' report functions; started with the first one.
    reports: Mutex<Option<Arc<ReportThread>>>,
    /// One channel per queue, at most channel_max.
    channels: ChannelLimit,
    /// The threads that call every consume callback of the connection.
    pool: Arc<CallbackPool>,
}

impl Connection {
    /// What reads the consume link: the callback threads.
    pub(super) fn read_host(&self) -> Arc<dyn crate::wire::ReadHost> {
        self.pool.clone()
    }

    /// Starts connecting in the background and returns at once.
    /// `addresses`: at least one (`parse_addresses` never returns none).
    pub fn connect(
        addresses: Vec<BrokerAddress>,
        options: ConnectionOptions,
    ) -> Result<Arc<Connection>> {
        // The runtime must start, or connecting is an error now.
        runtime::handle()?;
        if addresses.is_empty() {
            return Err(Error::invalid("no broker address"));
        }
        let (delay, delay_max) = (options.reconnect_delay, options.reconnect_delay_max);
        let wires: Vec<WireConfig> = (addresses.iter())
            .map(|a| a.wire_config(options.max_message_bytes))
            .collect();
        // Every address shares the query, so channel_max too.
        let channels = ChannelLimit::new(wires[0].proposed_channel_max());
        let conn = Arc::new(Connection {
            wires,
            addresses,
            options,
            shared: Mutex::new(Shared {
                state: ConnectionState::Connecting,
                current: [None, None],
                queues: Vec::new(),
                consuming: Vec::new(),
                consume_link: false,
            }),
            state_changed: Condvar::new(),
            links: [Link::new(delay, delay_max), Link::new(delay, delay_max)],
            shutdown: watch::channel(false).0,
            protocol_errors: AtomicU64::new(0),
            next_queue_id: AtomicU64::new(1),
            failed: AtomicBool::new(false),
            reports: Mutex::new(None),
            channels,
            pool: Arc::default(),
        });
        conn.spawn_supervisor(LinkKind::Publish);
        Ok(conn)
    }

    /// How errors name the brokers: the address (without the password),
    /// or the list of them.
    fn shown(&self) -> String {
        let shown: Vec<&str> = self.addresses.iter().map(|a| a.display.as_str()).collect();
        shown.join(", ")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        crate::sync::lock(&self.shared)
    }

    /// The publish link's session environment (the connection's last error).
    fn env(&self) -> &Arc<SessionEnv> {
        &self.link(LinkKind::Publish).env
    }

    pub fn stats(&self) -> ConnectionStatsSnapshot {
        let shared = self.lock();
        let (p, c) = (self.link(LinkKind::Publish), self.link(LinkKind::Consume));
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConnectionStatsSnapshot {
            state: shared.state,
            connects: r(&p.connects),
            failed_attempts: r(&p.failed_attempts),
            consecutive_failures: r(&p.consecutive_failures),
            queues: shared.queues.len() as u64,
            protocol_errors: r(&self.protocol_errors),
            consume_connects: r(&c.connects),
            consume_failed_attempts: r(&c.failed_attempts),
        }
    }

    fn set_state(&self, state: ConnectionState) {
        let mut s = self.lock();
        // Closed and Failed are final; only close may move Failed to Closed.
        if s.state == ConnectionState::Closed
            || (s.state == ConnectionState::Failed && state != ConnectionState::Closed)
        {
            return;
        }
        s.state = state;
        drop(s);
        self.state_changed.notify_all();
    }

    /// `amqp_wait_connected`.
    pub fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            match s.state {
                ConnectionState::Connected => return Ok(()),
                ConnectionState::Failed => {
                    let why = self.env().last_error().unwrap_or_default();
                    return Err(Error::closed(format!(
                        "the connection to {} failed for good: {why}",
                        self.shown()
                    )));
                }
                ConnectionState::Closed => return Err(Error::closed("the connection is closed")),
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                let why = self
                    .env()
                    .last_error()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("not connected to {} after {timeout:?}{why}", self.shown()),
                ));
            }
            s = self
                .state_changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn closing(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Starts a queue's session on a generation. Should it panic (a bug),
    /// the connection is dropped, so that every queue reconnects (a queue
    /// must never stop silently).
    fn spawn_session(
        &self,
        q: Arc<Queue>,
        generation: u64,
        conn: WireConnection,
        ch: Option<crate::wire::WireChannel>,
    ) {
        let wire = conn.clone();
        let fut = session(self.env().clone(), q, generation, conn, ch);
        runtime::spawn_guarded("queue session", fut, move || {
            wire.abandon("internal error: a queue's session panicked");
        });
    }

    /// Gave up for good (either link): publishes are refused, what is
    /// buffered stays for `close_graceful` to report, both links end.
    fn fail(&self) {
        if self.failed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shutdown.send_replace(true);
        let queues = self.lock().queues.clone();
        for q in &queues {
            q.outbox.close_for_publishing();
        }
        self.set_state(ConnectionState::Failed);
        // Pollers learn AMQP_ERR_CLOSED; notify descriptors stay readable.
        for q in &queues {
            q.consumers.end();
            q.outbox.end_reports();
        }
    }

    /// `amqp_queue_open`: while connected, declares now and reports a broker
    /// refusal; otherwise registers the queue to be declared on connect.
    pub fn open_queue(
        self: &Arc<Self>,
        name: &str,
        exchange: &str,
        routing_key: &str,
        options: QueueOptions,
    ) -> Result<Arc<Queue>> {
        let id = self.next_queue_id.fetch_add(1, Ordering::Relaxed);
        let q = Arc::new(Queue::new(
            id,
            name,
            exchange,
            routing_key,
            options,
            &self.options,
            &self.pool,
        )?);
        let current = {
            let s = self.lock();
            match s.state {
                ConnectionState::Closed => return Err(Error::closed("the connection is closed")),
                ConnectionState::Failed => {
                    return Err(Error::closed("the connection has failed for good"))
                }
                _ => s.current[LinkKind::Publish as usize].clone(),
            }
        };
        self.channels.check_room(self.lock().queues.len())?;
        let mut prepared = None;
        if let Some((generation, conn)) = current {
            let q2 = q.clone();
            let opened = runtime::block_on(
                async move { q2.open_channel(&conn, generation).await },
                DECLARE_TIMEOUT,
            );
            match opened {
                Ok(Ok(ch)) => prepared = Some((generation, ch)),
                Ok(Err(e)) => {
                    if let Some(err) = q.declare_error(&e, true) {
                        return Err(err);
                    }
                    debug!("queue '{name}': declare deferred, link failed: {e}");
                }
                Err(e) if e.kind == ErrorKind::Timeout => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!("queue '{name}': the broker did not answer the declares in {DECLARE_TIMEOUT:?}"),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        let mut s = self.lock();
        if matches!(s.state, ConnectionState::Closed | ConnectionState::Failed) {
            return Err(Error::closed(
                "the connection closed while the queue was opening",
            ));
        }
        if let Err(e) = self.channels.check_room(s.queues.len()) {
            if let Some((_, ch)) = prepared {
                runtime::spawn("close a refused queue's channel", async move {
                    ch.close().await
                });
            }
            return Err(e);
        }
        s.queues.push(q.clone());
        if let Some((generation, conn)) = s.current[LinkKind::Publish as usize].clone() {
            // Use the prepared channel only if it belongs to the live generation.
            let ch = prepared.filter(|(g, _)| *g == generation).map(|(_, ch)| ch);
            self.spawn_session(q.clone(), generation, conn, ch);
        }
        drop(s);
        spawn_expiry(&q);
        Ok(q)
    }
}

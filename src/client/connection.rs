//! The connection supervisor: one AMQP connection at a time, replaced after
//! every loss with exponential backoff + jitter, until `max_reconnects`
//! consecutive failures (then failed for good; the process lives on).
//!
//! Each connection is a *generation*. On connect, every queue gets a session
//! task for that generation: it opens the queue's channel, declares the
//! topology, restarts its consumers and runs its publisher. When the
//! generation ends, sessions end and keep their unconfirmed messages for the
//! next one.

use super::address::BrokerAddress;
use super::options::{ConnectionOptions, QueueOptions};
use super::queue::Queue;
use super::session::{session, LinkState, SessionEnv};
use crate::error::{Error, ErrorKind, Result};
use crate::publish::ReportThread;
use crate::runtime;
use crate::wire::{Failure, WireConfig, WireConnection};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod close;
mod reports;
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
}

/// A connection lost sooner than this after it opened (or on a protocol
/// error) does not reset the reconnect backoff: a broker (or a message)
/// that breaks every connection at once is retried ever more slowly, not
/// in a loop.
const STABLE_AFTER: Duration = Duration::from_secs(5);

/// How long `open_queue` waits for the broker to answer the declares.
const DECLARE_TIMEOUT: Duration = Duration::from_secs(30);

struct Shared {
    state: ConnectionState,
    /// The live connection and its generation.
    current: Option<(u64, WireConnection)>,
    queues: Vec<Arc<Queue>>,
}

pub(crate) struct Connection {
    pub address: BrokerAddress,
    wire: WireConfig,
    pub options: ConnectionOptions,
    shared: Mutex<Shared>,
    state_changed: Condvar,
    env: Arc<SessionEnv>,
    shutdown: watch::Sender<bool>,
    connects: AtomicU64,
    failed_attempts: AtomicU64,
    consecutive_failures: AtomicU64,
    protocol_errors: AtomicU64,
    /// The last connection generation started.
    generation: AtomicU64,
    next_queue_id: AtomicU64,
    /// Gave up for good (the state may since have moved on to Closed).
    failed: std::sync::atomic::AtomicBool,
    /// Calls the queues' report functions; started with the first one.
    reports: Mutex<Option<Arc<ReportThread>>>,
}

impl Connection {
    /// Starts connecting in the background and returns at once.
    pub fn connect(address: BrokerAddress, options: ConnectionOptions) -> Result<Arc<Connection>> {
        // The runtime must start, or connecting is an error now.
        runtime::handle()?;
        let env = Arc::new(SessionEnv::new(
            options.reconnect_delay,
            options.reconnect_delay_max,
        ));
        let conn = Arc::new(Connection {
            wire: address.wire_config(options.max_message_bytes),
            address,
            options,
            shared: Mutex::new(Shared {
                state: ConnectionState::Connecting,
                current: None,
                queues: Vec::new(),
            }),
            state_changed: Condvar::new(),
            env,
            shutdown: watch::channel(false).0,
            connects: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            next_queue_id: AtomicU64::new(1),
            failed: std::sync::atomic::AtomicBool::new(false),
            reports: Mutex::new(None),
        });
        conn.spawn_supervisor();
        Ok(conn)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> ConnectionStatsSnapshot {
        let shared = self.lock();
        ConnectionStatsSnapshot {
            state: shared.state,
            connects: self.connects.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            queues: shared.queues.len() as u64,
            protocol_errors: self.protocol_errors.load(Ordering::Relaxed),
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
                    let why = self.env.last_error().unwrap_or_default();
                    return Err(Error::closed(format!(
                        "the connection to {} failed for good: {why}",
                        self.address.display
                    )));
                }
                ConnectionState::Closed => return Err(Error::closed("the connection is closed")),
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                let why = self
                    .env
                    .last_error()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "not connected to {} after {timeout:?}{why}",
                        self.address.display
                    ),
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

    /// Starts the supervisor. Should it panic (a bug), the live connection
    /// is dropped and a new supervisor starts after the longest reconnect
    /// delay: a reconnect, not a connection that silently stops.
    fn spawn_supervisor(self: &Arc<Self>) {
        let conn = self.clone();
        runtime::spawn_guarded(
            "connection supervisor",
            self.clone().supervise(),
            move || {
                runtime::spawn("supervisor restart", async move {
                    let current = conn.lock().current.clone();
                    if let Some((generation, wire)) = current {
                        conn.uninstall(generation);
                        wire.abandon("internal error: the connection supervisor panicked");
                    }
                    tokio::time::sleep(conn.options.reconnect_delay_max).await;
                    if !conn.closing() && !conn.failed.load(Ordering::SeqCst) {
                        conn.set_state(ConnectionState::Reconnecting);
                        conn.spawn_supervisor();
                    }
                });
            },
        );
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
        let fut = session(self.env.clone(), q, generation, conn, ch);
        runtime::spawn_guarded("queue session", fut, move || {
            wire.abandon("internal error: a queue's session panicked");
        });
    }

    /// The supervisor task: connect, serve the generation until it is lost,
    /// back off, again; until closed or given up.
    async fn supervise(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        // Consecutive failed attempts (for max_reconnects), and the backoff
        // step, which short-lived connections keep climbing too.
        let mut failures: u32 = 0;
        let mut step: u32 = 0;
        while !self.closing() {
            match WireConnection::connect(&self.wire).await {
                Ok(conn) => {
                    failures = 0;
                    let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                    let opened = Instant::now();
                    if !self.serve(generation, conn.clone(), &mut shutdown).await {
                        break;
                    }
                    let stable = opened.elapsed() >= STABLE_AFTER && !conn.broke_protocol();
                    step = if stable { 0 } else { step.saturating_add(1) };
                }
                Err(failure) => {
                    failures = failures.saturating_add(1);
                    step = step.saturating_add(1);
                    if self.attempt_failed(failure, failures) {
                        self.fail();
                        return;
                    }
                }
            }
            let delay = self.env.backoff(step.saturating_sub(1));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
    }

    /// One connection generation: sessions run on `conn` until it is lost
    /// (true: reconnect) or the connection closes (false).
    async fn serve(
        self: &Arc<Self>,
        generation: u64,
        conn: WireConnection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.connects.fetch_add(1, Ordering::Relaxed);
        self.install(generation, conn.clone());
        info!(
            "connected to {} (generation {generation})",
            self.address.display
        );
        let why = tokio::select! {
            why = conn.lost() => Some(why),
            _ = shutdown.wait_for(|s| *s) => None,
        };
        self.uninstall(generation);
        let Some(why) = why else {
            // Closing: say goodbye properly, briefly.
            conn.close(200, "closing").await;
            return false;
        };
        if conn.broke_protocol() {
            self.protocol_errors.fetch_add(1, Ordering::Relaxed);
            error!("connection to {} closed: {why}", self.address.display);
        } else {
            warn!("connection to {} lost: {why}", self.address.display);
        }
        self.env.set_last_error(why);
        self.set_state(ConnectionState::Reconnecting);
        // Make sure the old connection's task is gone.
        tokio::spawn(async move { conn.close(320, "lost").await });
        true
    }

    /// Counts and reports a failed connect attempt; true when it is time
    /// to give up for good.
    fn attempt_failed(&self, failure: Failure, failures: u32) -> bool {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        let (text, permanent) = match failure {
            // The broker said no to this login (403) or vhost (530):
            // retrying with the same credentials cannot succeed. Others
            // (e.g. 320 CONNECTION_FORCED while it shuts down) are transient.
            Failure::ConnectionRefused { code, text } | Failure::Refused { code, text } => {
                (text, matches!(code, 403 | 530))
            }
            Failure::Link(text) => (text, false),
            Failure::Protocol(text) => {
                self.protocol_errors.fetch_add(1, Ordering::Relaxed);
                (text, false)
            }
        };
        let msg = format!("connect to {} failed: {text}", self.address.display);
        self.env.set_last_error(msg.clone());
        let exhausted = self.options.max_reconnects > 0 && failures >= self.options.max_reconnects;
        if permanent || exhausted {
            error!("{msg}; giving up after {failures} attempt(s)");
            return true;
        }
        warn!("{msg} (attempt {failures})");
        if self.lock().state == ConnectionState::Connected {
            self.set_state(ConnectionState::Reconnecting);
        }
        false
    }

    fn install(self: &Arc<Self>, generation: u64, conn: WireConnection) {
        let mut s = self.lock();
        s.current = Some((generation, conn.clone()));
        for q in &s.queues {
            self.spawn_session(q.clone(), generation, conn.clone(), None);
        }
        drop(s);
        self.env.link.send_replace(LinkState {
            generation,
            up: true,
        });
        self.set_state(ConnectionState::Connected);
    }

    fn uninstall(&self, generation: u64) {
        let mut s = self.lock();
        if matches!(s.current, Some((g, _)) if g == generation) {
            s.current = None;
        }
        drop(s);
        self.env.link.send_replace(LinkState {
            generation,
            up: false,
        });
    }

    /// Gave up for good: publishes are refused, what is buffered stays for
    /// `close_graceful` to report.
    fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        let queues = self.lock().queues.clone();
        for q in &queues {
            q.outbox.close_for_publishing();
        }
        self.set_state(ConnectionState::Failed);
        // Pollers learn AMQP_ERR_CLOSED; notify descriptors stay readable.
        for q in &queues {
            q.consumers.end();
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
        ));
        let current = {
            let s = self.lock();
            match s.state {
                ConnectionState::Closed => return Err(Error::closed("the connection is closed")),
                ConnectionState::Failed => {
                    return Err(Error::closed("the connection has failed for good"))
                }
                _ => s.current.clone(),
            }
        };
        let mut prepared = None;
        if let Some((generation, conn)) = current {
            let q2 = q.clone();
            let opened =
                runtime::block_on(async move { q2.open_channel(&conn).await }, DECLARE_TIMEOUT);
            match opened {
                Ok(Ok(ch)) => prepared = Some((generation, ch)),
                Ok(Err(e)) => {
                    if let Some(err) = q.declare_error(&e) {
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
        s.queues.push(q.clone());
        if let Some((generation, conn)) = s.current.clone() {
            // Use the prepared channel only if it belongs to the live generation.
            let ch = prepared.filter(|(g, _)| *g == generation).map(|(_, ch)| ch);
            self.spawn_session(q.clone(), generation, conn, ch);
        }
        drop(s);
        spawn_expiry(&q);
        Ok(q)
    }
}

//! A link: one of the connection's two TCP connections to the broker, kept
//! alive by its own supervisor task. The publish link is opened by
//! `amqp_connect` and carries every queue's publish channel; the consume
//! link is opened when the first consumer is added and carries one channel
//! per queue with consumers, so that consumers keep flowing while the broker
//! blocks publishers (a memory or disk alarm blocks a connection that
//! publishes, and all of it). Each link connects, serves a *generation*
//! until it is lost, backs off (exponential with jitter, not reset by
//! connections that die young) and connects again, until closed or until
//! it gives up (403/530 at login, `max_reconnects` consecutive failures):
//! then the whole connection has failed for good, and both links end.

use super::super::session::{LinkState, SessionEnv};
use super::{Connection, ConnectionState};
use crate::client::address_list::Rotation;
use crate::client::queue::Queue;
use crate::runtime;
use crate::wire::{Failure, LinkReading, WireConnection};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A connection lost sooner than this after it opened (or on a protocol
/// error) does not reset the reconnect backoff: a broker (or a message)
/// that breaks every connection at once is retried ever more slowly, not
/// in a loop.
const STABLE_AFTER: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkKind {
    Publish = 0,
    Consume = 1,
}

impl LinkKind {
    /// What log lines put after the broker's address.
    fn label(self) -> &'static str {
        match self {
            LinkKind::Publish => "",
            LinkKind::Consume => " (consume link)",
        }
    }
}

/// One link's supervisor state and counters.
pub(super) struct Link {
    /// What its sessions share: the live generation, backoff, last error.
    pub env: Arc<SessionEnv>,
    pub connects: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub consecutive_failures: AtomicU64,
    /// Generations that ended with the connection lost.
    pub losses: AtomicU64,
    /// The last generation started.
    generation: AtomicU64,
    /// The index of the address in use or being tried (`Rotation`).
    pub address: AtomicUsize,
}

impl Link {
    pub fn new(delay: Duration, delay_max: Duration) -> Link {
        Link {
            env: Arc::new(SessionEnv::new(delay, delay_max)),
            connects: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            address: AtomicUsize::new(0),
        }
    }

    pub fn is_up(&self) -> bool {
        self.env.link.borrow().up
    }

    /// Changes whenever an attempt fails or a generation is lost.
    pub fn setbacks(&self) -> u64 {
        self.failed_attempts.load(Ordering::SeqCst) + self.losses.load(Ordering::SeqCst)
    }
}

impl Connection {
    pub(super) fn link(&self, kind: LinkKind) -> &Link {
        &self.links[kind as usize]
    }

    /// Starts a link's supervisor. Should it panic (a bug), the live
    /// connection is dropped and a new supervisor starts after the longest
    /// reconnect delay: a reconnect, not a link that silently stops.
    pub(super) fn spawn_supervisor(self: &Arc<Self>, kind: LinkKind) {
        let conn = self.clone();
        runtime::spawn_guarded(
            "connection supervisor",
            self.clone().supervise(kind),
            move || {
                runtime::spawn("supervisor restart", async move {
                    let current = conn.lock().current[kind as usize].clone();
                    if let Some((generation, wire)) = current {
                        conn.uninstall(kind, generation);
                        wire.abandon("internal error: the connection supervisor panicked");
                    }
                    tokio::time::sleep(conn.options.reconnect_delay_max).await;
                    if !conn.closing() && !conn.failed.load(Ordering::SeqCst) {
                        if kind == LinkKind::Publish {
                            conn.set_state(ConnectionState::Reconnecting);
                        }
                        conn.spawn_supervisor(kind);
                    }
                });
            },
        );
    }

    /// The supervisor task: connect, serve the generation until it is lost,
    /// back off, again; until closed or given up. With several addresses,
    /// each failed attempt moves on to the next at once, and the backoff
    /// runs between full rounds (`Rotation`).
    async fn supervise(self: Arc<Self>, kind: LinkKind) {
        let link = self.link(kind);
        let mut shutdown = self.shutdown.subscribe();
        // The consume link starts where the publish link is.
        let start = self.link(LinkKind::Publish).address.load(Ordering::Relaxed);
        let mut rotation = Rotation::new(self.wires.len(), start);
        // Consecutive failed rounds (for max_reconnects), and the backoff
        // step, which short-lived connections keep climbing too.
        let mut failures: u32 = 0;
        let mut step: u32 = 0;
        while !self.closing() {
            let at = rotation.current();
            link.address.store(at, Ordering::Relaxed);
            // inline_delivery: the consume link is read by the callback
            // threads; the publish link's confirms are read late.
            let host = (kind == LinkKind::Consume && self.options.inline_delivery)
                .then(|| self.read_host());
            let reading = match (&host, kind) {
                (Some(host), _) => LinkReading::Host(host),
                (None, LinkKind::Publish) => LinkReading::Lazy,
                (None, LinkKind::Consume) => LinkReading::Runtime,
            };
            match WireConnection::connect(&self.wires[at], reading).await {
                Ok(conn) => {
                    rotation.connected();
                    failures = 0;
                    let generation = link.generation.fetch_add(1, Ordering::SeqCst) + 1;
                    let opened = Instant::now();
                    if !self
                        .serve(kind, generation, conn.clone(), &mut shutdown)
                        .await
                    {
                        break;
                    }
                    rotation.lost();
                    let stable = opened.elapsed() >= STABLE_AFTER && !conn.broke_protocol();
                    step = if stable { 0 } else { step.saturating_add(1) };
                }
                Err(failure) => {
                    let round = rotation.failed();
                    if round {
                        failures = failures.saturating_add(1);
                        step = step.saturating_add(1);
                    }
                    if self.attempt_failed(kind, at, failure, failures, round) {
                        self.fail();
                        return;
                    }
                    if !round {
                        continue; // the next address, at once
                    }
                }
            }
            let delay = link.env.backoff(step.saturating_sub(1));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
    }

    /// One generation of a link: sessions run on `conn` until it is lost
    /// (true: reconnect) or the connection closes (false).
    async fn serve(
        self: &Arc<Self>,
        kind: LinkKind,
        generation: u64,
        conn: WireConnection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let link = self.link(kind);
        link.consecutive_failures.store(0, Ordering::Relaxed);
        link.connects.fetch_add(1, Ordering::Relaxed);
        self.install(kind, generation, conn.clone());
        let what = kind.label();
        let at = link.address.load(Ordering::Relaxed);
        info!(
            "connected to {}{what} (generation {generation}{})",
            self.addresses[at].display,
            self.which(at)
        );
        let why = tokio::select! {
            why = conn.lost() => Some(why),
            _ = shutdown.wait_for(|s| *s) => None,
        };
        self.uninstall(kind, generation);
        let Some(why) = why else {
            // Closing: say goodbye properly, briefly.
            conn.close(200, "closing").await;
            return false;
        };
        link.losses.fetch_add(1, Ordering::SeqCst);
        if conn.broke_protocol() {
            self.protocol_errors.fetch_add(1, Ordering::Relaxed);
            error!(
                "connection to {}{what} closed: {why}",
                self.addresses[at].display
            );
        } else {
            warn!(
                "connection to {}{what} lost: {why}",
                self.addresses[at].display
            );
        }
        link.env.set_last_error(why);
        if kind == LinkKind::Publish {
            self.set_state(ConnectionState::Reconnecting);
        }
        // Make sure the old connection's task is gone.
        tokio::spawn(async move { conn.close(320, "lost").await });
        true
    }

    /// ", address 2 of 3" with several addresses, "" with one.
    fn which(&self, at: usize) -> String {
        match self.addresses.len() {
            1 => String::new(),
            n => format!(", address {} of {n}", at + 1),
        }
    }

    /// Counts and reports a failed connect attempt on address `at`; true
    /// when it is time to give up for good. `failures`: failed rounds in a
    /// row; `round`: this attempt ended one (every address failed).
    fn attempt_failed(
        &self,
        kind: LinkKind,
        at: usize,
        failure: Failure,
        failures: u32,
        round: bool,
    ) -> bool {
        let link = self.link(kind);
        link.failed_attempts.fetch_add(1, Ordering::SeqCst);
        link.consecutive_failures.fetch_add(1, Ordering::Relaxed);
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
        let what = kind.label();
        let msg = format!(
            "connect to {}{what} failed: {text}",
            self.addresses[at].display
        );
        link.env.set_last_error(msg.clone());
        let exhausted =
            round && self.options.max_reconnects > 0 && failures >= self.options.max_reconnects;
        if permanent || exhausted {
            // The connection's last error says why it failed for good.
            self.env().set_last_error(msg.clone());
            let n = self.addresses.len();
            if n > 1 {
                error!(
                    "{msg}; giving up after {} round(s) of {n} addresses",
                    failures.max(1)
                );
            } else {
                error!("{msg}; giving up after {failures} attempt(s)");
            }
            return true;
        }
        if round {
            warn!("{msg} (attempt {failures})");
        } else {
            warn!("{msg}; trying the next address");
        }
        if kind == LinkKind::Publish && self.lock().state == ConnectionState::Connected {
            self.set_state(ConnectionState::Reconnecting);
        }
        false
    }

    fn install(self: &Arc<Self>, kind: LinkKind, generation: u64, conn: WireConnection) {
        let mut s = self.lock();
        s.current[kind as usize] = Some((generation, conn.clone()));
        let queues = match kind {
            LinkKind::Publish => {
                // Queues beyond the channel_max agreed now get no session.
                self.channels.set(conn.channel_max());
                let served = (self.channels).served(&s.queues, |e| self.env().set_last_error(e));
                &s.queues[..served]
            }
            LinkKind::Consume => &[],
        };
        for q in queues {
            self.spawn_session(q.clone(), generation, conn.clone(), None);
        }
        // The queues with consumers on this link (`consumers_link`).
        for q in s.consuming.iter().filter(|q| consumers_link(q) == kind) {
            self.spawn_consume_session(kind, q.clone(), generation, conn.clone());
        }
        drop(s);
        self.link(kind).env.link.send_replace(LinkState {
            generation,
            up: true,
        });
        if kind == LinkKind::Publish {
            self.set_state(ConnectionState::Connected);
        }
    }

    fn uninstall(&self, kind: LinkKind, generation: u64) {
        let mut s = self.lock();
        if matches!(s.current[kind as usize], Some((g, _)) if g == generation) {
            s.current[kind as usize] = None;
        }
        drop(s);
        self.link(kind).env.link.send_replace(LinkState {
            generation,
            up: false,
        });
    }
}

/// Where a queue's consumers run: the consume link, but an exclusive
/// queue's (server-named ones included) on the publish link, which declares
/// and owns it (RabbitMQ refuses any other connection with 405
/// RESOURCE_LOCKED).
pub(super) fn consumers_link(q: &Queue) -> LinkKind {
    if q.is_exclusive() {
        LinkKind::Publish
    } else {
        LinkKind::Consume
    }
}

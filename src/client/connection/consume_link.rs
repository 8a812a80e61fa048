//! Consumers on their own link: the consume link opens when the first
//! consumer is added to any queue of the connection; each queue with
//! consumers gets a session per consume-link generation: its own channel
//! (QoS and the queue's topology declared there too), where its consumer
//! sets start. A publisher the broker blocks (memory or disk alarm) blocks
//! only the publish link, so deliveries keep flowing.
//!
//! `amqp_consume` / `_ex` / `amqp_consume_pull` wait (up to 30 s) while
//! connected for the broker's consume-ok and report a refusal as
//! AMQP_ERR_BROKER (the set is taken back); a refusal later costs the
//! queue's consume channel and is retried with backoff.

use super::super::session::SessionEnv;
use super::link::{consumers_link, LinkKind};
use super::{Connection, ConnectionState};
use crate::client::queue::Queue;
use crate::consume::{Callback, Release};
use crate::error::Result;
use crate::runtime;
use crate::wire::{Confirm, Failure, WireChannel, WireConnection};
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long adding a consumer waits for the broker's consume-ok.
const CONSUME_WAIT: Duration = Duration::from_secs(30);

/// A consume channel lost sooner than this after it opened backs off.
const QUICK_LOSS: Duration = Duration::from_secs(1);

impl Connection {
    /// `amqp_consume_ex`: adds a consumer set to `q` and, while connected,
    /// waits for its consume-ok (a refusal is `AMQP_ERR_BROKER`).
    pub fn consume(
        self: &Arc<Self>,
        q: &Arc<Queue>,
        cb: Callback,
        repeat: u32,
        release: Option<Release>,
    ) -> Result<u64> {
        if q.consumer_exclusive() && repeat > 1 {
            return Err(crate::Error::invalid(format!(
                "repeat is {repeat} but queue '{}' has consumer_exclusive=true: the broker \
                 allows one exclusive consumer",
                q.name
            )));
        }
        self.add_consuming(q)?;
        let id = q.consumers.add(cb, repeat, release)?;
        self.await_start(q, id)?;
        Ok(id)
    }

    /// `amqp_consume_pull`: as `consume`, for the queue's pull consumer.
    pub fn consume_pull(
        self: &Arc<Self>,
        q: &Arc<Queue>,
        want_fd: bool,
    ) -> Result<Option<OwnedFd>> {
        self.add_consuming(q)?;
        let (fd, added) = q.consumers.consume_pull(want_fd)?;
        if let Some(id) = added {
            self.await_start(q, id)?;
        }
        Ok(fd)
    }

    /// Waits for set `id` to start while the broker can be asked: the
    /// publish link is up or the consume link is, and the consume link has
    /// not failed an attempt or lost a generation since (then the set
    /// starts on connect).
    fn await_start(&self, q: &Arc<Queue>, id: u64) -> Result<()> {
        let link = self.link(consumers_link(q));
        let setbacks = link.setbacks();
        let give_up = || {
            self.closing()
                || self.failed.load(Ordering::SeqCst)
                || link.setbacks() != setbacks
                || (!link.is_up() && self.lock().state != ConnectionState::Connected)
        };
        q.consumers.await_start(id, CONSUME_WAIT, &give_up)
    }

    /// Registers `q` as a queue with consumers: it gets a session on the
    /// live consume link; the link starts with the first such queue.
    fn add_consuming(self: &Arc<Self>, q: &Arc<Queue>) -> Result<()> {
        let mut s = self.lock();
        if matches!(s.state, ConnectionState::Closed | ConnectionState::Failed) {
            return Err(crate::Error::closed(
                "the connection is closed or failed for good",
            ));
        }
        if !s.consuming.iter().any(|c| Arc::ptr_eq(c, q)) {
            s.consuming.push(q.clone());
            let kind = consumers_link(q);
            if let Some((generation, conn)) = s.current[kind as usize].clone() {
                self.spawn_consume_session(kind, q.clone(), generation, conn);
            }
        }
        if q.is_exclusive() {
            return Ok(()); // its consumers run on the publish link
        }
        let start = !std::mem::replace(&mut s.consume_link, true);
        drop(s);
        if start {
            self.spawn_supervisor(LinkKind::Consume);
        }
        Ok(())
    }

    /// Starts a queue's consume session on a generation of link `kind`
    /// (`consumers_link`). Should it panic (a bug), that link is dropped and
    /// reconnects.
    pub(super) fn spawn_consume_session(
        &self,
        kind: LinkKind,
        q: Arc<Queue>,
        generation: u64,
        conn: WireConnection,
    ) {
        let wire = conn.clone();
        let env = self.link(kind).env.clone();
        let fut = consume_session(env, q, generation, conn);
        runtime::spawn_guarded("consume session", fut, move || {
            wire.abandon("internal error: a queue's consume session panicked");
        });
    }
}

/// One queue on one consume-link generation: open its channel and declare
/// (retrying with backoff while the broker refuses), start its consumers,
/// keep them until the channel or the generation ends; a refused consumer,
/// a refused declare or a channel lost young backs off (capped at
/// `reconnect_delay_max`) before the channel is reopened.
async fn consume_session(
    env: Arc<SessionEnv>,
    q: Arc<Queue>,
    generation: u64,
    conn: WireConnection,
) {
    let mut link = env.link.subscribe();
    // Refusals and young losses in a row: the backoff step.
    let mut setbacks: u32 = 0;
    while link.borrow().is(generation) {
        let backoff = match q.open_consume_channel(&conn, generation).await {
            Ok((ch, name)) => {
                let opened_at = Instant::now();
                let started = q.consumers.attach(generation, ch.clone(), name).await;
                let why = match &started {
                    Err(e) => Some(e.to_string()),
                    Ok(()) => tokio::select! {
                        why = channel_ended(&ch) => Some(why),
                        _ = link.wait_for(|l| !l.is(generation)) => None,
                    },
                };
                q.consumers.detach(generation).await;
                let Some(why) = why else { break };
                if !conn.is_connected() {
                    break;
                }
                if started.is_ok() {
                    warn!(
                        "queue '{}': consume channel lost ({why}); reopening",
                        q.name
                    );
                } else {
                    // Counted and logged (once per incident) by the consumers.
                    debug!("queue '{}': consumer refused ({why}); reopening", q.name);
                }
                ch.close().await;
                started.is_err() || opened_at.elapsed() < QUICK_LOSS
            }
            Err(e) => {
                if let Some(err) = q.declare_error(&e, false) {
                    q.consumers.refused(None, &err.message);
                } else if !conn.is_connected() {
                    break; // the link is gone; its supervisor reconnects
                } else {
                    warn!(
                        "queue '{}': cannot open its consume channel: {e}; retrying",
                        q.name
                    );
                }
                true
            }
        };
        if !backoff {
            setbacks = 0;
            continue;
        }
        let delay = env.backoff(setbacks);
        setbacks = setbacks.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = link.wait_for(|l| !l.is(generation)) => break,
        }
    }
}

/// Resolves when the consume channel closed, or the broker cancelled a
/// consumer (its queue was deleted: reopen to declare it again).
async fn channel_ended(ch: &WireChannel) -> String {
    let mut events = Vec::new();
    loop {
        if !ch.is_open() {
            return ch
                .close_reason()
                .as_ref()
                .map_or_else(|| "channel closed".into(), Failure::to_string);
        }
        ch.take_confirms(&mut events);
        for e in events.drain(..) {
            if let Confirm::TopologyLost(why) = e {
                return why;
            }
        }
        ch.confirms_changed().await;
    }
}

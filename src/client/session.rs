//! A queue's session: its life on one connection generation.

use super::queue::Queue;
use crate::backoff;
use crate::publish::{self, Outcome, PublisherEnd};
use crate::wire::{Failure, WireChannel, WireConnection};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the supervisor tells sessions: which connection generation is live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkState {
    pub generation: u64,
    pub up: bool,
}

impl LinkState {
    pub fn is(&self, generation: u64) -> bool {
        self.up && self.generation == generation
    }
}

/// What sessions share with their connection's supervisor.
pub(super) struct SessionEnv {
    /// The live generation, set by the supervisor.
    pub link: watch::Sender<LinkState>,
    /// The connection's last error; sessions report refused declares here.
    last_error: Mutex<Option<String>>,
    /// The connection's backoff: between reconnects, refused declares and
    /// quick channel losses.
    delay: Duration,
    delay_max: Duration,
}

impl SessionEnv {
    pub fn new(delay: Duration, delay_max: Duration) -> SessionEnv {
        SessionEnv {
            link: watch::channel(LinkState {
                generation: 0,
                up: false,
            })
            .0,
            last_error: Mutex::new(None),
            delay,
            delay_max,
        }
    }

    pub fn set_last_error(&self, message: String) {
        *crate::sync::lock(&self.last_error) = Some(message);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The delay before retry `attempt` (0 = the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        backoff::delay(self.delay, self.delay_max, attempt)
    }

    /// How long a refused queue waits before it tries again.
    pub fn refused_retry(&self) -> Duration {
        self.delay_max.max(Duration::from_millis(100))
    }
}

/// One queue on one connection generation: open the channel (retrying while
/// the broker refuses, e.g. a 406 after someone redeclared the queue),
/// publish until the channel or the generation ends. (Consumers run on the
/// consume link: `connection/consume_link.rs`.)
pub(super) async fn session(
    env: Arc<SessionEnv>,
    q: Arc<Queue>,
    generation: u64,
    conn: WireConnection,
    mut prepared: Option<WireChannel>,
) {
    let mut link = env.link.subscribe();
    let mut refusals: u32 = 0;
    // Channels lost within a second of opening, in a row: back off, so a
    // queue that keeps failing (deleted again and again, a channel error on
    // every publish) does not spin.
    let mut quick_losses: u32 = 0;
    loop {
        if !link.borrow().is(generation) || q.refused_for_good() {
            break;
        }
        let ch = match prepared.take() {
            Some(ch) => ch,
            None => match q.open_channel(&conn, generation).await {
                Ok(ch) => ch,
                Err(e) => {
                    let delay = match retry_open(&env, &q, &e, conn.is_connected()) {
                        Retry::No => break, // the link is gone; the supervisor reconnects
                        Retry::Refused => env.refused_retry(),
                        Retry::Soon => env.backoff(refusals),
                    };
                    refusals = refusals.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = link.wait_for(|l| !l.is(generation)) => break,
                    }
                }
            },
        };
        refusals = 0;
        q.outbox.recover();
        let opened_at = std::time::Instant::now();
        let link_over = async {
            let _ = link.wait_for(|l| !l.is(generation)).await;
        };
        let end = tokio::select! {
            end = q.outbox.run(&ch, link_over) => end,
            never = super::topology::watch(&q, &ch) => match never {},
        };
        let (why, mut pause) = match ended(&env, &q, end) {
            After::Stop => break,
            After::ReopenNow => {
                ch.close().await;
                continue;
            }
            After::Reopen { why, pause } => (why, pause),
        };
        if !conn.is_connected() {
            break;
        }
        warn!("queue '{}': {why}", q.name);
        ch.close().await;
        if pause.is_none() && opened_at.elapsed() < Duration::from_secs(1) {
            pause = Some(env.backoff(quick_losses));
            quick_losses = quick_losses.saturating_add(1);
        } else {
            quick_losses = 0;
        }
        if let Some(delay) = pause {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = link.wait_for(|l| !l.is(generation)) => break,
            }
        }
    }
}

/// What a session does once its publisher ended.
enum After {
    /// The generation is over.
    Stop,
    /// At once, without backoff (a message failed; the others go on).
    ReopenNow,
    /// After `pause` (or the quick-loss backoff), with `why` logged.
    Reopen {
        why: String,
        pause: Option<Duration>,
    },
}

fn ended(env: &SessionEnv, q: &Queue, end: PublisherEnd) -> After {
    let why = match end {
        PublisherEnd::LinkDown => return After::Stop,
        PublisherEnd::ChannelLost(Failure::Refused { code: 403, text }) => {
            // Publishing itself is refused (no write permission): a state,
            // retried slowly, not a loop.
            let text = format!("the broker refused publishing: {text}");
            env.set_last_error(format!("queue '{}': {text}", q.name));
            q.outbox
                .fail_all(&publish::Failure::new(Outcome::Refused, 403, text.clone()));
            let pause = env.refused_retry();
            return After::Reopen {
                why: format!("{text}; trying again in {pause:?}"),
                pause: Some(pause),
            };
        }
        PublisherEnd::ChannelLost(e) => format!("channel lost ({e}); reopening"),
        PublisherEnd::TopologyLost(e) => format!("{e}; reopening its channel to declare it again"),
        PublisherEnd::Poisoned(e) => {
            warn!(
                "queue '{}': the broker refused a message ({e}); it failed, the others go on",
                q.name
            );
            return After::ReopenNow;
        }
        PublisherEnd::Stuck(e) => format!("{e}; replacing its channel"),
    };
    After::Reopen { why, pause: None }
}

enum Retry {
    /// The link is gone.
    No,
    /// The broker refused the queue: slowly.
    Refused,
    /// With the usual backoff.
    Soon,
}

/// Reports a failure to open a queue's channel; says whether and how soon
/// the session retries on the same connection.
fn retry_open(env: &SessionEnv, q: &Queue, e: &Failure, connected: bool) -> Retry {
    if let Some(err) = q.declare_error(e, false) {
        // The broker refuses our topology: the queue fails (its messages
        // are reported), publishes are refused; tried again slowly (or
        // never, when it broke the connection).
        env.set_last_error(err.message.clone());
        if !q.outbox.is_failed() {
            let code = match e {
                Failure::Refused { code, .. } | Failure::ConnectionRefused { code, .. } => *code,
                _ => 0,
            };
            q.outbox
                .fail_all(&publish::Failure::new(Outcome::Refused, code, err.message));
        } else {
            debug!("queue '{}': still refused: {e}", q.name);
        }
        return if q.refused_for_good() {
            Retry::No
        } else {
            Retry::Refused
        };
    }
    if !connected {
        return Retry::No;
    }
    // The connection lives on but gave no channel (e.g. all channel ids in
    // use): never stop silently.
    warn!("queue '{}': cannot open its channel: {e}; retrying", q.name);
    env.set_last_error(format!("queue '{}': {e}", q.name));
    Retry::Soon
}

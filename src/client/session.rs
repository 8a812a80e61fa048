//! A queue's session: its life on one connection generation.

use super::queue::{declare_error, Queue};
use crate::backoff;
use crate::publish::PublisherEnd;
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
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
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
}

/// One queue on one connection generation: open the channel (retrying while
/// the broker refuses, e.g. a 406 after someone redeclared the queue), attach
/// consumers, publish until the channel or the generation ends.
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
        if !link.borrow().is(generation) {
            break;
        }
        let ch = match prepared.take() {
            Some(ch) => ch,
            None => match q.open_channel(&conn).await {
                Ok(ch) => ch,
                Err(e) => {
                    if !retry_open(&env, &q.name, &e, conn.is_connected()) {
                        break; // the link is gone; the supervisor reconnects
                    }
                    let delay = env.backoff(refusals);
                    refusals = refusals.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = link.wait_for(|l| !l.is(generation)) => break,
                    }
                }
            },
        };
        refusals = 0;
        let opened_at = std::time::Instant::now();
        q.consumers.attach(generation, ch.clone()).await;
        let link_over = async {
            let _ = link.wait_for(|l| !l.is(generation)).await;
        };
        let end = q.outbox.run(&ch, link_over).await;
        q.consumers.detach(generation).await;
        let why = match end {
            PublisherEnd::LinkDown => break,
            PublisherEnd::ChannelLost(e) => format!("channel lost ({e}); reopening"),
            PublisherEnd::TopologyLost(e) => {
                format!("{e}; reopening its channel to declare it again")
            }
        };
        if !conn.is_connected() {
            break;
        }
        warn!("queue '{}': {why}", q.name);
        ch.close().await;
        if opened_at.elapsed() < Duration::from_secs(1) {
            let delay = env.backoff(quick_losses);
            quick_losses = quick_losses.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = link.wait_for(|l| !l.is(generation)) => break,
            }
        } else {
            quick_losses = 0;
        }
    }
}

/// Reports a failure to open a queue's channel; true when the session must
/// retry (with backoff) on the same connection.
fn retry_open(env: &SessionEnv, queue: &str, e: &Failure, connected: bool) -> bool {
    if let Some(err) = declare_error(queue, e) {
        // The connection is fine but the broker refuses our topology: say so
        // loudly and retry.
        error!("{err}; retrying");
        env.set_last_error(err.message);
        return true;
    }
    if !connected {
        return false;
    }
    // The connection lives on but gave no channel (e.g. all channel ids in
    // use): never stop silently.
    warn!("queue '{queue}': cannot open its channel: {e}; retrying");
    env.set_last_error(format!("queue '{queue}': {e}"));
    true
}

//! Whether a consumer set's broker consumers started: `amqp_consume`,
//! `amqp_consume_ex` and `amqp_consume_pull` wait for the broker's
//! consume-ok (or its refusal) while connected, and a refused set is taken
//! back whole (nothing stays registered, its release never runs). A refusal
//! later (after a reconnect, or of the consume channel's declares) is
//! counted in `consume_refusals` every time, logged at ERROR once per
//! incident (until every set started again), and retried by the consume
//! link's session with backoff.

use super::{ConsumerSet, Group};
use crate::error::{Error, ErrorKind, Result};
use crate::runtime;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Where the start of a set that a caller waits for stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Pending,
    Started,
    /// The broker's text.
    Refused(String),
}

/// The starts callers wait for, and the refusal incident.
#[derive(Default)]
pub(super) struct Starts {
    /// Sets whose caller waits for their start, by id.
    waiting: Vec<(u64, Outcome)>,
    /// A refusal was logged and no full start followed yet.
    refusing: bool,
}

impl ConsumerSet {
    fn starts(&self) -> std::sync::MutexGuard<'_, Starts> {
        crate::sync::lock(&self.starts)
    }

    /// A caller will wait for set `id` to start (`await_start`).
    pub(super) fn expect_start(&self, id: u64) {
        self.starts().waiting.push((id, Outcome::Pending));
    }

    /// No caller will wait for set `id` (adding it failed).
    pub(super) fn forget_start(&self, id: u64) {
        self.starts().waiting.retain(|(set, _)| *set != id);
    }

    /// Set `id`'s broker consumers all got their consume-ok.
    pub(super) fn set_started(&self, id: u64) {
        self.set_outcome(|set| set == id, Outcome::Started);
    }

    fn set_outcome(&self, which: impl Fn(u64) -> bool, outcome: Outcome) {
        let mut st = self.starts();
        for (id, o) in st.waiting.iter_mut() {
            if which(*id) && *o == Outcome::Pending {
                *o = outcome.clone();
            }
        }
        drop(st);
        self.notify();
    }

    /// The broker refused set `id`'s basic.consume, or (`None`) the consume
    /// channel's declares: counted every time, logged once per incident;
    /// the waiting callers learn it.
    pub fn refused(&self, id: Option<u64>, text: &str) {
        self.stats.consume_refusals.fetch_add(1, Ordering::Relaxed);
        let first = !std::mem::replace(&mut self.starts().refusing, true);
        if first {
            error!(
                "queue '{}': the broker refused its consumers: {text}; retrying with backoff \
                 (counted in consume_refusals; logged once until they start)",
                self.queue_name
            );
        }
        let text = text.to_string();
        self.set_outcome(|set| id.is_none_or(|i| i == set), Outcome::Refused(text));
    }

    /// Every set not paused or cancelled runs on the live channel.
    pub(super) fn all_started(&self) {
        if std::mem::take(&mut self.starts().refusing) {
            info!(
                "queue '{}': its consumers started again after a refusal",
                self.queue_name
            );
        }
    }

    /// Waits up to `timeout` for set `id`'s consume-ok. `Err(Broker)` when
    /// refused, `Err(Timeout)` when no answer came: in both cases the set is
    /// taken back (nothing stays registered, its release never runs). Ok
    /// when started, or as soon as `give_up()` says the consume link is not
    /// there to ask (then the set starts on connect), or the queue is
    /// stopped (it starts on amqp_consume_start).
    pub fn await_start(
        self: &Arc<Self>,
        id: u64,
        timeout: Duration,
        give_up: &dyn Fn() -> bool,
    ) -> Result<()> {
        let outcome = |cs: &Self| {
            (cs.starts().waiting.iter())
                .find(|(set, _)| *set == id)
                .map_or(Outcome::Started, |(_, o)| o.clone())
        };
        let paused = || self.paused.load(Ordering::SeqCst);
        self.wait_until(timeout, || {
            give_up() || paused() || outcome(self) != Outcome::Pending
        });
        let last = outcome(self);
        self.forget_start(id);
        match last {
            Outcome::Started => Ok(()),
            Outcome::Pending if give_up() || paused() => Ok(()),
            Outcome::Pending => {
                self.withdraw(id);
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "queue '{}': the broker did not answer basic.consume in {timeout:?}",
                        self.queue_name
                    ),
                ))
            }
            Outcome::Refused(text) => {
                self.withdraw(id);
                Err(Error::new(
                    ErrorKind::Broker,
                    format!(
                        "queue '{}': the broker refused the consumer: {text}",
                        self.queue_name
                    ),
                ))
            }
        }
    }

    /// Takes back a set that never started: no release, no callback, no
    /// broker consumer left (its channel was closed by the refusal).
    fn withdraw(self: &Arc<Self>, id: u64) {
        if let Some(shared) = self.take_set(id) {
            drop(shared.take_release());
            shared.cancelled.store(true, Ordering::SeqCst);
            shared.close_workers();
        }
        let cs = self.clone();
        let removed = runtime::block_on(
            async move {
                let mut st = cs.state.lock().await;
                let (gone, kept): (Vec<Group>, Vec<Group>) = std::mem::take(&mut st.groups)
                    .into_iter()
                    .partition(|g| g.shared.id == id);
                st.groups = kept;
                let ch = st.channel.clone();
                drop(st);
                for g in &gone {
                    g.shared.cancelled.store(true, Ordering::SeqCst);
                    if let Some((_, ch, _)) = &ch {
                        for tag in &g.tags {
                            let _ = ch.basic_cancel(tag).await;
                        }
                    }
                }
            },
            super::STOP_WAIT,
        );
        if let Err(e) = removed {
            warn!(
                "queue '{}': taking back consumer {id}: {e}",
                self.queue_name
            );
        }
    }
}

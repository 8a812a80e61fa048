//! The publish link's confirms, read late (plain TCP).
//!
//! RabbitMQ sends a message's confirm just before its delivery. A thread
//! woken by the confirm takes a CPU from the broker right then, and the
//! delivery goes out after it (docs/bench/2026-12-01-e2e-confirm-wake.md).
//! So while publishing threads send their messages themselves (moderate
//! rates), the link is *lazy*:
//! - the socket wakes no one for a few bytes (`SO_RCVLOWAT`);
//! - a publishing thread reads what waits before it sends again (as
//!   rabbitmq-c's publisher does), taking its own channel's confirms;
//! - the runtime reads about `LINGER` after the last such send, and makes
//!   the link eager again (a confirm is read late by at most that much).
//!
//! A call, or the publisher sending batches itself, makes the link eager
//! at once. The runtime reads an eager link as soon as bytes arrive.

use super::link_reader::{LinkReader, Turn};
use super::lock;
use super::shared::LateReads;
use super::timer_fd::TimerFd;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How long after a publishing thread's last send the runtime reads a lazy
/// link (and makes it eager). Above the time between sends at the rates
/// where the publishing thread sends itself (1,000 msg/s and more), so a
/// steady stream never wakes the runtime.
const LINGER: Duration = Duration::from_millis(2);

/// A lazy link still wakes the runtime once this much waits (returned
/// messages, a burst of confirms).
const LAZY_LOWAT: usize = 1024;

/// A send re-sets the timer only when it was set longer ago than this: one
/// syscall per this long instead of one per message. So the runtime reads
/// between `LINGER - REARM_AFTER` and `LINGER` after the last send.
const REARM_AFTER: Duration = Duration::from_micros(500);

pub(super) struct LazyReads {
    reader: Arc<LinkReader>,
    timer: Arc<TimerFd>,
    /// The low mark is up: changed only under `switching`, with the socket
    /// option, so the two never disagree (a link lazy without a timer set
    /// after its last send would leave the broker's heartbeats unread).
    lazy: AtomicBool,
    switching: Mutex<()>,
    /// The link went lazy once (logged once per link: it may switch at
    /// every message).
    went_lazy: AtomicBool,
    /// When the timer was last set, in ns from `started`.
    armed_at: AtomicU64,
    started: Instant,
}

impl LazyReads {
    /// Reads `reader`'s link on the runtime (a task that ends with the
    /// reading), eagerly until a publishing thread sends.
    pub(super) fn start(reader: Arc<LinkReader>) -> std::io::Result<Arc<LazyReads>> {
        // SAFETY: dup(2) of the reader's open descriptor; the new one is
        // owned here (the watch registered on it goes with it).
        let watch = unsafe {
            let fd = libc::dup(reader.fd());
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        let timer = Arc::new(TimerFd::new()?);
        // SAFETY: each AsyncFd owns what keeps its descriptor open (the
        // dup, a reference to the timer) until it is dropped.
        let (link, fired) = unsafe {
            (
                AsyncFd::register_with_interest(watch, Interest::READABLE)?,
                AsyncFd::register_with_interest(timer.clone(), Interest::READABLE)?,
            )
        };
        let lazy = Arc::new(LazyReads {
            reader,
            timer,
            lazy: AtomicBool::new(false),
            switching: Mutex::new(()),
            went_lazy: AtomicBool::new(false),
            armed_at: AtomicU64::new(0),
            started: Instant::now(),
        });
        tokio::spawn(lazy.clone().run(link, fired));
        Ok(lazy)
    }

    fn set_lazy(&self, on: bool) {
        let _switching = lock(&self.switching);
        if self.lazy.load(Ordering::Relaxed) == on {
            return;
        }
        let bytes = if on { LAZY_LOWAT } else { 1 };
        match self.reader.set_low_mark(bytes) {
            Ok(()) => {
                self.lazy.store(on, Ordering::Relaxed);
                if on && !self.went_lazy.swap(true, Ordering::Relaxed) {
                    debug!("publish link: confirms read late while the publishing threads send");
                }
            }
            // The link stays eager (or lazy with its timer set).
            Err(e) => warn!("cannot set the publish link's low mark: {e}"),
        }
    }

    async fn run(self: Arc<Self>, link: AsyncFd<OwnedFd>, fired: AsyncFd<Arc<TimerFd>>) {
        let reader = self.reader.clone();
        let mut ended = std::pin::pin!(reader.ended());
        loop {
            tokio::select! {
                _ = &mut ended => return,
                ready = link.readable() => {
                    let Ok(mut guard) = ready else { return };
                    if self.read_all().await {
                        guard.clear_ready();
                    }
                }
                ready = fired.readable() => {
                    let Ok(mut guard) = ready else { return };
                    self.timer.clear();
                    guard.clear_ready();
                    self.eager();
                    self.read_all().await;
                }
            }
        }
    }

    /// Reads until the socket is drained (true) or the link ended.
    async fn read_all(&self) -> bool {
        loop {
            match self.reader.read_turn() {
                Turn::Nothing | Turn::Drained(_) => return true,
                Turn::More => tokio::task::yield_now().await,
                Turn::Ended => return false,
            }
        }
    }
}

impl LateReads for LazyReads {
    /// A publishing thread sent on the link itself: the link goes lazy, and
    /// the runtime reads about `LINGER` after the last such send.
    fn sent_here(&self) {
        let was_lazy = self.lazy.load(Ordering::Relaxed);
        if !was_lazy {
            self.set_lazy(true);
        }
        let now = self.started.elapsed().as_nanos() as u64;
        let since = now.saturating_sub(self.armed_at.load(Ordering::Relaxed));
        // A link that just went lazy needs the timer whenever it was set.
        if !was_lazy || since >= REARM_AFTER.as_nanos() as u64 {
            self.armed_at.store(now, Ordering::Relaxed);
            self.timer.arm(Some(LINGER));
        }
    }

    /// Someone waits for what the broker sends: read it when it arrives.
    fn eager(&self) {
        if self.lazy.load(Ordering::Relaxed) {
            self.set_lazy(false);
        }
    }

    /// A lazy link's waiting bytes, read on this thread; `taking` is set
    /// while they are dispatched. False: the link is eager, or another
    /// thread reads it now.
    fn read_here(&self, taking: &AtomicBool) -> bool {
        self.lazy.load(Ordering::Relaxed) && self.reader.try_read_turn(taking).is_some()
    }
}

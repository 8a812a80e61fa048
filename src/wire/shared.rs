//! What a connection's handles, channels, reader and task share: the
//! output, the table of open channels, and whether (and why) it died.

use super::channel_state::ChannelState;
use super::codec;
use super::output::Output;
use super::socket::TryWrite;
use super::{lock, Failure, Violation};
use amq_protocol::protocol::{connection, AMQPClass};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How long we wait for close-ok / to flush the last frames.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What a connection's handles, channels and task share.
pub(super) struct ConnShared {
    pub(super) output: Output,
    /// Set by the reader when whole frames arrived; the heartbeat loop
    /// declares the link dead after 1.5-2 heartbeat intervals without it
    /// (no timer per read).
    pub(super) read_recently: AtomicBool,
    pub(super) channels: Mutex<ChannelTable>,
    pub(super) frame_max: usize,
    /// The highest channel id agreed in tune: a frame beyond it is for no
    /// channel that can ever exist.
    pub(super) channel_max: u16,
    /// The largest message body we take in; a larger one is dropped as it
    /// arrives and rejected.
    pub(super) max_body: u64,
    /// The connection ended on a protocol violation by the broker.
    pub(super) broken: AtomicBool,
    /// The reason the connection ended, once it has.
    pub(super) dead: watch::Sender<Option<String>>,
    /// The broker closed the connection (connection.close): what every
    /// channel and pending call fails with, instead of a link failure, so
    /// the owner can tell a refusal (e.g. 503 for an unknown exchange type)
    /// from a lost link.
    refusal: Mutex<Option<Failure>>,
    /// Asks the driver task to stop (after close-ok, or at once).
    pub(super) stop: Notify,
    /// The broker blocked publishing (connection.blocked until
    /// connection.unblocked): it may not read what we send meanwhile.
    pub(super) blocked: AtomicBool,
    /// A publish link read late (`lazy_read`); weak: its task holds the
    /// reader, which holds this.
    pub(super) lazy: OnceLock<Weak<dyn LateReads>>,
}

/// A publish link read late (`lazy_read::LazyReads`), as its channels use
/// it.
pub(super) trait LateReads: Send + Sync {
    /// A publishing thread sent on the link itself.
    fn sent_here(&self);
    /// Reads what waits, on this thread, with `taking` set meanwhile.
    /// False: the link is read eagerly, or by another thread now.
    fn read_here(&self, taking: &AtomicBool) -> bool;
    /// Someone waits for what the broker sends.
    fn eager(&self);
}

/// The open channels, by id, and where the search for a free id starts.
pub(super) struct ChannelTable {
    pub(super) open: HashMap<u16, Arc<ChannelState>>,
    pub(super) next: u16,
    pub(super) max: u16,
    /// The highest id ever allocated on this connection (ids are handed out
    /// upwards from 1 until they wrap): a frame beyond it is for a channel
    /// that was never opened.
    pub(super) highest: u16,
}

impl ConnShared {
    /// The publish link's late reading, if this link is read so.
    pub(super) fn lazy(&self) -> Option<Arc<dyn LateReads>> {
        self.lazy.get().and_then(Weak::upgrade)
    }

    pub(super) fn new(
        stream: Option<Arc<dyn TryWrite>>,
        channel_max: u16,
        frame_max: usize,
        max_body: u64,
    ) -> ConnShared {
        ConnShared {
            output: Output::new(stream),
            read_recently: AtomicBool::new(false),
            channels: Mutex::new(ChannelTable {
                open: HashMap::new(),
                next: 1,
                max: channel_max.max(1),
                highest: 0,
            }),
            frame_max,
            channel_max: channel_max.max(1),
            max_body,
            broken: AtomicBool::new(false),
            dead: watch::channel(None).0,
            refusal: Mutex::new(None),
            stop: Notify::new(),
            blocked: AtomicBool::new(false),
            lazy: OnceLock::new(),
        }
    }

    /// The broker closed the connection with `code` and `text` (the
    /// broker's words, described): channels fail with
    /// `Failure::ConnectionRefused` from now on.
    pub(super) fn refused(&self, code: u16, text: String) {
        let mut r = lock(&self.refusal);
        if r.is_none() {
            *r = Some(Failure::ConnectionRefused { code, text });
        }
    }

    /// What a channel of this connection fails with once the connection
    /// is going: the broker's refusal if it closed it, else a link failure.
    pub(super) fn failure(&self, why: &str) -> Failure {
        lock(&self.refusal)
            .clone()
            .unwrap_or_else(|| Failure::Link(why.to_string()))
    }

    pub(super) fn is_dead(&self) -> bool {
        self.dead.borrow().is_some()
    }

    /// The connection is over: refuse writes, close every channel.
    pub(super) fn die(&self, why: String) {
        self.output.close();
        self.dead.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(why.clone());
                true
            } else {
                false
            }
        });
        let chans: Vec<_> = lock(&self.channels).open.drain().map(|(_, c)| c).collect();
        let failure = self.failure(&why);
        for c in chans {
            c.close_local(failure.clone());
        }
    }

    /// The broker broke the protocol: connection.close with the violation's
    /// code (not waited for), and the connection ends. Returns why, for the
    /// connection's end.
    pub(super) fn broke_protocol(&self, v: &Violation) -> String {
        self.broken.store(true, Ordering::Relaxed);
        let close = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: v.code,
            reply_text: v.text.chars().take(200).collect::<String>().into(),
            class_id: 0,
            method_id: 0,
        }));
        self.output
            .append(None, |o| codec::encode_method(o, 0, close));
        self.output.close();
        format!("protocol error by the broker: {v}")
    }

    /// The broker left a call unanswered (a reply lost or garbled on the
    /// way): the connection ends now, without a word to the broker.
    pub(super) fn give_up(&self, why: String) -> Failure {
        self.die(why.clone());
        self.stop.notify_one();
        Failure::Link(why)
    }

    /// A violation found outside the reader (a reply that answers another
    /// question): the connection ends now, with connection.close.
    pub(super) fn abort(&self, v: &Violation) -> Failure {
        let why = self.broke_protocol(v);
        self.die(why.clone());
        self.stop.notify_one();
        Failure::Link(why)
    }

    pub(super) fn channel(&self, id: u16) -> Option<Arc<ChannelState>> {
        lock(&self.channels).open.get(&id).cloned()
    }

    /// No channel ever had this id on this connection.
    pub(super) fn never_opened(&self, id: u16) -> bool {
        id > lock(&self.channels).highest
    }

    pub(super) fn remove_channel(&self, id: u16) {
        lock(&self.channels).open.remove(&id);
    }

    /// A new channel on the first free id from where the last search ended.
    pub(super) fn allocate_channel(&self) -> Result<Arc<ChannelState>, Failure> {
        let mut chans = lock(&self.channels);
        if self.is_dead() {
            return Err(self.failure("connection closed"));
        }
        let max = chans.max;
        let mut id = chans.next;
        let mut tries = 0u32;
        while chans.open.contains_key(&id) {
            id = if id >= max { 1 } else { id + 1 };
            tries += 1;
            if tries > u32::from(max) {
                return Err(Failure::Link(format!("all {max} channels in use")));
            }
        }
        chans.next = if id >= max { 1 } else { id + 1 };
        chans.highest = chans.highest.max(id);
        let ch = Arc::new(ChannelState::new(id));
        chans.open.insert(id, ch.clone());
        Ok(ch)
    }
}

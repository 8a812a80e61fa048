//! One AMQP 0-9-1 connection and its channels, on the library's runtime.
//!
//! A single task per connection drives three loops: the reader parses every
//! frame from a large read buffer and dispatches it (confirms to the
//! channel's publisher, deliveries straight to the consumer's sink, replies
//! to the waiting call); the writer sends whatever frames were appended to
//! the shared output buffer while it was busy, in one `write`; the
//! heartbeat loop fills idle periods. Any thread may append frames (acks
//! come from consumer threads); the thread that appends to an empty buffer
//! while the writer is idle writes it to the socket itself (`Out::kick`), so
//! neither a batch of publishes nor a batch of acks needs a task hand-off.

use super::codec::{self, PublishTarget, RawFrame};
use super::{code_name, Failure, WireConfig};
use amq_protocol::protocol::{
    basic, channel, confirm, connection, exchange, queue, AMQPClass, AMQPErrorKind,
};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch, Notify};

/// We propose this frame size; RabbitMQ's default is the same.
const CLIENT_FRAME_MAX: u32 = 131_072;
/// The read buffer holds many frames, so one read syscall serves many.
const READ_BUFFER: usize = 256 * 1024;
/// A write buffer that grew past this (a burst of large bodies) is not kept.
const KEEP_WRITE_BUFFER: usize = 4 * 1024 * 1024;
/// How long we wait for close-ok / to flush the last frames.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Receives the deliveries of one consumer, on the connection's reader
/// (the runtime thread): it must only hand them on, never block.
pub trait DeliverySink: Send {
    /// Queues one delivery.
    fn deliver(&mut self, delivery: Delivery);
    /// Called after each burst of frames read at once: wake the consumer.
    fn flush(&mut self);
}

/// One delivery: exchange, routing key and body in one allocation.
pub struct Delivery {
    /// consumer tag, exchange, routing key, body.
    data: Vec<u8>,
    head: usize,
    exchange_len: usize,
    routing_key_len: usize,
    pub delivery_tag: u64,
    pub redelivered: bool,
}

impl Delivery {
    pub fn exchange(&self) -> &[u8] {
        &self.data[self.head..self.head + self.exchange_len]
    }
    pub fn routing_key(&self) -> &[u8] {
        let at = self.head + self.exchange_len;
        &self.data[at..at + self.routing_key_len]
    }
    pub fn body(&self) -> &[u8] {
        &self.data[self.head + self.exchange_len + self.routing_key_len..]
    }
}

/// What the broker said about the channel's publishes, in arrival order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// basic.ack / basic.nack.
    Settled {
        tag: u64,
        multiple: bool,
        nack: bool,
    },
    /// The queue is gone: a publish came back unroutable (basic.return,
    /// always before that message's ack) or the broker cancelled a
    /// consumer. The channel must be reopened so the topology is declared
    /// again; nothing unconfirmed may be taken as delivered.
    TopologyLost(String),
}

struct Out {
    buf: Vec<u8>,
    /// No more frames: the connection is gone or closing.
    closed: bool,
    /// The writer task holds bytes taken from `buf` that are not all
    /// written yet: nobody else may write to the socket now.
    writing: bool,
    /// For writes straight from the appending thread (None once closed).
    stream: Option<Arc<TcpStream>>,
}

impl Out {
    /// After appending to a `buf` that was empty: if the writer task is not
    /// busy, write now from this thread (a consumer thread's acks, a batch
    /// of publishes), with no wake-up of the runtime; what the socket does
    /// not take is left for the writer. Returns whether the writer must be
    /// woken. The caller holds the lock, so bytes keep their order.
    fn kick(&mut self, wrote: &AtomicBool) -> bool {
        if self.buf.is_empty() {
            return false;
        }
        if self.writing {
            return true;
        }
        let Some(stream) = &self.stream else {
            return true;
        };
        match stream.try_write(&self.buf) {
            Ok(n) => {
                wrote.store(true, Ordering::Relaxed);
                if n == self.buf.len() {
                    self.buf.clear();
                    false
                } else {
                    self.buf.drain(..n);
                    true
                }
            }
            // Not writable now, or failing: the writer task takes over
            // (and reports the error).
            Err(_) => true,
        }
    }
}

struct Inner {
    out: Mutex<Out>,
    out_wake: Notify,
    /// Set by the writer; the heartbeat loop sends only on a quiet link.
    wrote: AtomicBool,
    /// Set by the reader; the heartbeat loop declares the link dead after
    /// two heartbeat intervals without it (no timer per read).
    read: AtomicBool,
    channels: Mutex<Channels>,
    frame_max: usize,
    /// The reason the connection ended, once it has.
    dead: watch::Sender<Option<String>>,
    /// Asks the driver task to stop (after close-ok, or at once).
    kill: Notify,
    /// A delivery reached a sink in this read burst.
    delivered: AtomicBool,
}

struct Channels {
    map: HashMap<u16, Arc<ChanInner>>,
    next: u16,
    max: u16,
}

/// A live connection; clones share it.
#[derive(Clone)]
pub struct WireConnection {
    inner: Arc<Inner>,
}

struct ChanInner {
    id: u16,
    /// Set while holding the connection's `out` lock: once set, no frame of
    /// this channel is written, so a stale ack never reaches a reused id.
    closed: AtomicBool,
    state: Mutex<ChanState>,
    rpc: tokio::sync::Mutex<()>,
    confirms: Mutex<Vec<Confirm>>,
    confirm_wake: Notify,
}

#[derive(Default)]
struct ChanState {
    reply: Option<oneshot::Sender<Result<AMQPClass, Failure>>>,
    consumers: HashMap<Vec<u8>, Box<dyn DeliverySink>>,
    incoming: Option<Incoming>,
    close_reason: Option<Failure>,
}

struct Incoming {
    consumer_tag_len: usize,
    /// consumer tag + exchange + routing key, then the body as it arrives.
    data: Vec<u8>,
    exchange_len: usize,
    routing_key_len: usize,
    delivery_tag: u64,
    redelivered: bool,
    body_size: Option<u64>,
}

/// One channel; clones share it.
#[derive(Clone)]
pub struct WireChannel {
    ch: Arc<ChanInner>,
    conn: Arc<Inner>,
}

impl Inner {
    fn new(stream: Arc<TcpStream>, channel_max: u16, frame_max: usize) -> Inner {
        Inner {
            out: Mutex::new(Out {
                buf: Vec::with_capacity(64 * 1024),
                closed: false,
                writing: false,
                stream: Some(stream),
            }),
            out_wake: Notify::new(),
            wrote: AtomicBool::new(false),
            read: AtomicBool::new(false),
            channels: Mutex::new(Channels {
                map: HashMap::new(),
                next: 1,
                max: channel_max.max(1),
            }),
            frame_max,
            dead: watch::channel(None).0,
            kill: Notify::new(),
            delivered: AtomicBool::new(false),
        }
    }

    /// Appends frames unless the connection (or `ch`) is closed; wakes the
    /// writer if it may be idle. False when nothing was written.
    fn write(&self, ch: Option<&ChanInner>, f: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut o = lock(&self.out);
        if o.closed || ch.is_some_and(|c| c.closed.load(Ordering::Relaxed)) {
            return false;
        }
        self.append(&mut o, f);
        true
    }

    /// Appends frames under the held output lock; writes them at once or
    /// wakes the writer when they are the first in the buffer.
    fn append(&self, o: &mut Out, f: impl FnOnce(&mut Vec<u8>)) {
        let was_empty = o.buf.is_empty();
        f(&mut o.buf);
        if was_empty && o.kick(&self.wrote) {
            self.out_wake.notify_one();
        }
    }

    fn is_dead(&self) -> bool {
        self.dead.borrow().is_some()
    }

    /// The connection is over: refuse writes, close every channel.
    fn die(&self, why: String) {
        lock(&self.out).closed = true;
        self.dead.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(why.clone());
                true
            } else {
                false
            }
        });
        let chans: Vec<_> = lock(&self.channels).map.drain().map(|(_, c)| c).collect();
        for c in chans {
            c.close_local(Failure::Link(why.clone()));
        }
    }

    /// After a burst of frames: let the consumers that got deliveries run.
    fn flush_sinks(&self) {
        let chans: Vec<_> = lock(&self.channels).map.values().cloned().collect();
        for c in chans {
            for sink in c.state().consumers.values_mut() {
                sink.flush();
            }
        }
    }

    fn channel(&self, id: u16) -> Option<Arc<ChanInner>> {
        lock(&self.channels).map.get(&id).cloned()
    }

    fn remove_channel(&self, id: u16) {
        lock(&self.channels).map.remove(&id);
    }

    /// Handles one frame on the reader; Err ends the connection.
    fn handle_frame(
        &self,
        f: RawFrame<'_>,
        last: &mut Option<Arc<ChanInner>>,
    ) -> Result<(), String> {
        match f.kind {
            codec::FRAME_HEARTBEAT => Ok(()),
            codec::FRAME_METHOD if f.channel == 0 => self.connection_method(f.payload),
            codec::FRAME_METHOD | codec::FRAME_HEADER | codec::FRAME_BODY => {
                // The channel of the previous frame, if still open (an id
                // is reused only after its channel closed).
                let hit = matches!(last, Some(c) if c.id == f.channel && !c.closed.load(Ordering::Relaxed));
                if !hit {
                    // Frames for a channel we already closed are dropped.
                    match self.channel(f.channel) {
                        Some(ch) => *last = Some(ch),
                        None => return Ok(()),
                    }
                }
                let Some(ch) = last.as_ref() else {
                    return Ok(());
                };
                match f.kind {
                    codec::FRAME_METHOD => ch.method(self, f.payload),
                    _ => ch.content(self, f.kind, f.payload),
                }
            }
            other => Err(format!("unexpected frame type {other} from the broker")),
        }
    }

    fn connection_method(&self, payload: &[u8]) -> Result<(), String> {
        use connection::AMQPMethod as M;
        match codec::parse_method(payload) {
            Some(AMQPClass::Connection(M::Close(c))) => {
                self.write(None, |o| {
                    codec::encode_method(
                        o,
                        0,
                        AMQPClass::Connection(M::CloseOk(connection::CloseOk {})),
                    )
                });
                lock(&self.out).closed = true;
                Err(format!(
                    "the broker closed the connection: {}",
                    describe_close(c.reply_code, c.reply_text.as_str())
                ))
            }
            Some(AMQPClass::Connection(M::CloseOk(_))) => Err("connection closed".into()),
            Some(AMQPClass::Connection(M::Blocked(b))) => {
                warn!("the broker blocked publishing: {}", b.reason.as_str());
                Ok(())
            }
            Some(AMQPClass::Connection(M::Unblocked(_))) => {
                info!("the broker unblocked publishing");
                Ok(())
            }
            Some(other) => {
                debug!("ignored connection method {other:?}");
                Ok(())
            }
            None => Err("unparsable connection method from the broker".into()),
        }
    }
}

impl ChanInner {
    fn state(&self) -> MutexGuard<'_, ChanState> {
        lock(&self.state)
    }

    /// The channel is gone (broker close, connection loss, our close):
    /// fail the waiting call, drop the consumers, wake the publisher.
    fn close_local(&self, why: Failure) {
        self.closed.store(true, Ordering::Relaxed);
        let (reply, sinks) = {
            let mut st = self.state();
            if st.close_reason.is_none() {
                st.close_reason = Some(why.clone());
            }
            st.incoming = None;
            (st.reply.take(), std::mem::take(&mut st.consumers))
        };
        if let Some(r) = reply {
            let _ = r.send(Err(why));
        }
        drop(sinks);
        self.confirm_wake.notify_one();
    }

    fn push_confirm(&self, c: Confirm) {
        let mut q = lock(&self.confirms);
        let was_empty = q.is_empty();
        q.push(c);
        drop(q);
        if was_empty {
            self.confirm_wake.notify_one();
        }
    }

    fn method(&self, conn: &Inner, payload: &[u8]) -> Result<(), String> {
        match codec::method_ids(payload) {
            Some((codec::CLASS_BASIC, codec::METHOD_BASIC_ACK)) => {
                let (tag, multiple) = codec::parse_confirm(payload).ok_or("bad basic.ack")?;
                self.push_confirm(Confirm::Settled {
                    tag,
                    multiple,
                    nack: false,
                });
                return Ok(());
            }
            Some((codec::CLASS_BASIC, codec::METHOD_BASIC_NACK)) => {
                let (tag, multiple) = codec::parse_confirm(payload).ok_or("bad basic.nack")?;
                self.push_confirm(Confirm::Settled {
                    tag,
                    multiple,
                    nack: true,
                });
                return Ok(());
            }
            Some((codec::CLASS_BASIC, codec::METHOD_BASIC_DELIVER)) => {
                let d = codec::parse_deliver(payload).ok_or("bad basic.deliver")?;
                let mut data = Vec::with_capacity(
                    d.consumer_tag.len() + d.exchange.len() + d.routing_key.len() + 256,
                );
                data.extend_from_slice(d.consumer_tag);
                data.extend_from_slice(d.exchange);
                data.extend_from_slice(d.routing_key);
                self.state().incoming = Some(Incoming {
                    consumer_tag_len: d.consumer_tag.len(),
                    data,
                    exchange_len: d.exchange.len(),
                    routing_key_len: d.routing_key.len(),
                    delivery_tag: d.delivery_tag,
                    redelivered: d.redelivered,
                    body_size: None,
                });
                return Ok(());
            }
            _ => {}
        }
        use basic::AMQPMethod as B;
        use channel::AMQPMethod as C;
        match codec::parse_method(payload) {
            Some(AMQPClass::Channel(C::Close(c))) => {
                let why = channel_failure(c.reply_code, c.reply_text.as_str());
                {
                    // close-ok, and closed for everything else, atomically.
                    let mut o = lock(&conn.out);
                    if !o.closed {
                        conn.append(&mut o, |b| {
                            let ok = AMQPClass::Channel(C::CloseOk(channel::CloseOk {}));
                            codec::encode_method(b, self.id, ok)
                        });
                    }
                    self.closed.store(true, Ordering::Relaxed);
                }
                conn.remove_channel(self.id);
                self.close_local(why);
            }
            Some(AMQPClass::Channel(C::Flow(f))) => {
                conn.write(Some(self), |o| {
                    codec::encode_method(
                        o,
                        self.id,
                        AMQPClass::Channel(C::FlowOk(channel::FlowOk { active: f.active })),
                    )
                });
            }
            Some(AMQPClass::Basic(B::Cancel(c))) => {
                // The broker cancelled a consumer (its queue was deleted).
                warn!(
                    "the broker cancelled consumer {} (queue deleted?)",
                    c.consumer_tag.as_str()
                );
                let sink = self
                    .state()
                    .consumers
                    .remove(c.consumer_tag.as_str().as_bytes());
                drop(sink);
                // Reopen the channel: the queue is declared again and the
                // consumers restart.
                self.push_confirm(Confirm::TopologyLost(format!(
                    "the broker cancelled consumer {} (its queue was deleted?)",
                    c.consumer_tag.as_str()
                )));
            }
            Some(AMQPClass::Basic(B::Return(r))) => {
                // In order with the confirms: before this message's ack.
                self.push_confirm(Confirm::TopologyLost(format!(
                    "the broker returned a message: {} (its queue was deleted?)",
                    describe_close(r.reply_code, r.reply_text.as_str())
                )));
                // Its content follows; read and drop it.
                self.state().incoming = Some(Incoming {
                    consumer_tag_len: 0,
                    data: Vec::new(),
                    exchange_len: 0,
                    routing_key_len: 0,
                    delivery_tag: 0,
                    redelivered: false,
                    body_size: None,
                });
            }
            Some(reply) => {
                let waiting = self.state().reply.take();
                match waiting {
                    Some(w) => {
                        let _ = w.send(Ok(reply));
                    }
                    None => debug!("channel {}: unexpected {reply:?}", self.id),
                }
            }
            None => return Err(format!("unparsable method on channel {}", self.id)),
        }
        Ok(())
    }

    fn content(&self, conn: &Inner, kind: u8, payload: &[u8]) -> Result<(), String> {
        let mut st = self.state();
        let Some(inc) = st.incoming.as_mut() else {
            return Err(format!(
                "content frame without a method on channel {}",
                self.id
            ));
        };
        if kind == codec::FRAME_HEADER {
            let size = codec::parse_header_body_size(payload).ok_or("bad content header")?;
            inc.body_size = Some(size);
            inc.data.reserve_exact(size as usize);
        } else {
            inc.data.extend_from_slice(payload);
        }
        let Some(size) = inc.body_size else {
            return Ok(());
        };
        let head = inc.consumer_tag_len + inc.exchange_len + inc.routing_key_len;
        if ((inc.data.len() - head) as u64) < size {
            return Ok(());
        }
        let Some(inc) = st.incoming.take() else {
            return Ok(());
        };
        if inc.consumer_tag_len == 0 {
            return Ok(()); // a basic.return
        }
        // Tags are short strings: a copy on the stack, not an allocation.
        let mut tag_buf = [0u8; 256];
        let tag = &mut tag_buf[..inc.consumer_tag_len];
        tag.copy_from_slice(&inc.data[..inc.consumer_tag_len]);
        let delivery = Delivery {
            data: inc.data,
            head: inc.consumer_tag_len,
            exchange_len: inc.exchange_len,
            routing_key_len: inc.routing_key_len,
            delivery_tag: inc.delivery_tag,
            redelivered: inc.redelivered,
        };
        match st.consumers.get_mut(&*tag) {
            Some(sink) => {
                sink.deliver(delivery);
                conn.delivered.store(true, Ordering::Relaxed);
            }
            None => {
                // Its consumer is cancelled: give it back.
                drop(st);
                conn.write(Some(self), |o| {
                    codec::encode_reject(o, self.id, delivery.delivery_tag, true)
                });
            }
        }
        Ok(())
    }
}

fn describe_close(code: u16, text: &str) -> String {
    let name = code_name(code);
    match name.split_once(' ') {
        Some((_, short)) if text.starts_with(short) => format!("{code} {text}"),
        _ => format!("{name} - {text}"),
    }
}

fn channel_failure(code: u16, text: &str) -> Failure {
    let text = describe_close(code, text);
    match AMQPErrorKind::from_id(code) {
        Some(AMQPErrorKind::Hard(_)) => Failure::ConnectionRefused { code, text },
        _ => Failure::Refused { code, text },
    }
}

impl WireConnection {
    /// TCP connect, handshake (PLAIN), tune, open the vhost; then the
    /// connection runs on its own task. Bounded by the connect timeout.
    pub async fn connect(config: &WireConfig) -> Result<WireConnection, Failure> {
        let timeout = config.connect_timeout;
        match tokio::time::timeout(timeout, Self::connect_inner(config)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Link(format!(
                "connect timed out after {timeout:?}"
            ))),
        }
    }

    async fn connect_inner(config: &WireConfig) -> Result<WireConnection, Failure> {
        let io = |e: std::io::Error| Failure::Link(format!("I/O error: {e}"));
        let mut stream = TcpStream::connect((config.host.as_str(), config.port))
            .await
            .map_err(io)?;
        // With the broker down, a connect to a port in the ephemeral range
        // can be given that very port and connect to itself.
        let own = stream.local_addr().ok();
        if own.is_some() && own == stream.peer_addr().ok() {
            #[allow(deprecated)] // zero linger: leave no TIME_WAIT on the broker's port
            let _ = stream.set_linger(Some(Duration::ZERO));
            return Err(Failure::Link(
                "connection refused (the socket connected to itself)".into(),
            ));
        }
        let _ = stream.set_nodelay(true);
        stream.write_all(codec::PROTOCOL_HEADER).await.map_err(io)?;
        let mut hs = Handshake {
            buf: Vec::with_capacity(4096),
        };
        use connection::AMQPMethod as M;
        let start = match hs.method(&mut stream).await? {
            AMQPClass::Connection(M::Start(s)) => s,
            other => return Err(unexpected(&other)),
        };
        let mechanism = config.mechanism;
        let offered = String::from_utf8_lossy(start.mechanisms.as_bytes()).to_string();
        if !offered.split(' ').any(|m| m == mechanism.name()) {
            return Err(Failure::ConnectionRefused {
                code: 403,
                text: format!(
                    "the broker does not offer SASL mechanism {} (it offers: {offered})",
                    mechanism.name()
                ),
            });
        }
        let credentials = &config.credentials;
        let start_ok = connection::StartOk {
            client_properties: client_properties(),
            mechanism: mechanism.name().into(),
            response: credentials.sasl_auth_string(mechanism),
            locale: "en_US".into(),
        };
        hs.send(&mut stream, AMQPClass::Connection(M::StartOk(start_ok)))
            .await?;
        let tune = match hs.method(&mut stream).await? {
            AMQPClass::Connection(M::Tune(t)) => t,
            other => return Err(unexpected(&other)),
        };
        let pick = |ours: Option<u32>, theirs: u32, default: u32| match (ours, theirs) {
            (Some(o), 0) if o > 0 => o,
            (Some(o), t) if o > 0 => o.min(t),
            (_, 0) => default,
            (_, t) => t,
        };
        let channel_max = pick(
            config.channel_max.map(u32::from),
            u32::from(tune.channel_max),
            2047,
        ) as u16;
        let frame_max = pick(
            config.frame_max.or(Some(CLIENT_FRAME_MAX)),
            tune.frame_max,
            CLIENT_FRAME_MAX,
        )
        .max(4096);
        let heartbeat = config.heartbeat.unwrap_or(tune.heartbeat);
        hs.send(
            &mut stream,
            AMQPClass::Connection(M::TuneOk(connection::TuneOk {
                channel_max,
                frame_max,
                heartbeat,
            })),
        )
        .await?;
        hs.send(
            &mut stream,
            AMQPClass::Connection(M::Open(connection::Open {
                virtual_host: config.vhost.as_str().into(),
            })),
        )
        .await?;
        match hs.method(&mut stream).await? {
            AMQPClass::Connection(M::OpenOk(_)) => {}
            other => return Err(unexpected(&other)),
        }
        let stream = Arc::new(stream);
        let inner = Arc::new(Inner::new(stream.clone(), channel_max, frame_max as usize));
        let heartbeat = (heartbeat > 0).then(|| Duration::from_secs(u64::from(heartbeat)));
        tokio::spawn(drive(inner.clone(), stream, hs.buf, heartbeat));
        Ok(WireConnection { inner })
    }

    pub fn is_connected(&self) -> bool {
        !self.inner.is_dead()
    }

    /// Resolves when the connection is gone, with the reason.
    pub async fn lost(&self) -> String {
        let mut rx = self.inner.dead.subscribe();
        let why = match rx.wait_for(|d| d.is_some()).await {
            Ok(d) => d.clone().unwrap_or_default(),
            Err(_) => "connection closed".into(),
        };
        why
    }

    pub async fn create_channel(&self) -> Result<WireChannel, Failure> {
        let ch = {
            let mut chans = lock(&self.inner.channels);
            if self.inner.is_dead() {
                return Err(Failure::Link("connection closed".into()));
            }
            let max = chans.max;
            let mut id = chans.next;
            let mut tries = 0u32;
            while chans.map.contains_key(&id) {
                id = if id >= max { 1 } else { id + 1 };
                tries += 1;
                if tries > u32::from(max) {
                    return Err(Failure::Link(format!("all {max} channels in use")));
                }
            }
            chans.next = if id >= max { 1 } else { id + 1 };
            let ch = Arc::new(ChanInner {
                id,
                closed: AtomicBool::new(false),
                state: Mutex::new(ChanState::default()),
                rpc: tokio::sync::Mutex::new(()),
                confirms: Mutex::new(Vec::new()),
                confirm_wake: Notify::new(),
            });
            chans.map.insert(id, ch.clone());
            ch
        };
        let ch = WireChannel {
            ch,
            conn: self.inner.clone(),
        };
        let open = AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}));
        match ch.call(open).await {
            Ok(AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) => Ok(ch),
            Ok(other) => {
                self.inner.remove_channel(ch.ch.id);
                Err(unexpected(&other))
            }
            Err(e) => {
                self.inner.remove_channel(ch.ch.id);
                Err(e)
            }
        }
    }

    /// connection.close, waiting briefly for close-ok; then the task ends.
    pub async fn close(&self, code: u16, text: &str) {
        let close = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: code,
            reply_text: text.into(),
            class_id: 0,
            method_id: 0,
        }));
        if self
            .inner
            .write(None, |o| codec::encode_method(o, 0, close))
        {
            let _ = tokio::time::timeout(CLOSE_WAIT, self.lost()).await;
        }
        self.inner.kill.notify_one();
        let _ = tokio::time::timeout(CLOSE_WAIT, self.lost()).await;
    }
}

fn unexpected(m: &AMQPClass) -> Failure {
    match m {
        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
            let text = describe_close(c.reply_code, c.reply_text.as_str());
            Failure::ConnectionRefused {
                code: c.reply_code,
                text,
            }
        }
        other => Failure::Link(format!("unexpected reply from the broker: {other:?}")),
    }
}

fn client_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut t = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    t.insert("product".into(), s("resilient-amqp"));
    t.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    t.insert("platform".into(), s("Rust"));
    t.insert("connection_name".into(), s("resilient-amqp"));
    t.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    t
}

/// Frame reading during the handshake, before the connection's task runs.
struct Handshake {
    buf: Vec<u8>,
}

impl Handshake {
    async fn method(&mut self, s: &mut TcpStream) -> Result<AMQPClass, Failure> {
        loop {
            match codec::parse_frame(&self.buf, CLIENT_FRAME_MAX as usize) {
                Ok((f, n)) => {
                    let parsed = (f.kind == codec::FRAME_METHOD && f.channel == 0)
                        .then(|| codec::parse_method(f.payload));
                    self.buf.drain(..n);
                    match parsed {
                        Some(Some(m)) => return Ok(m),
                        Some(None) => {
                            return Err(Failure::Link("unparsable method from the broker".into()))
                        }
                        None => continue, // heartbeat
                    }
                }
                Err(codec::ParseError::Incomplete(_)) => {}
                Err(codec::ParseError::Invalid(e)) => {
                    // A broker speaking another protocol version answers
                    // with its own header.
                    return Err(Failure::Link(format!("not an AMQP 0-9-1 broker: {e}")));
                }
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) => {
                    return Err(Failure::Link(
                        "the broker closed the connection during the handshake".into(),
                    ))
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(Failure::Link(format!("I/O error: {e}"))),
            }
        }
    }

    async fn send(&mut self, s: &mut TcpStream, m: AMQPClass) -> Result<(), Failure> {
        let mut out = Vec::new();
        codec::encode_method(&mut out, 0, m);
        s.write_all(&out)
            .await
            .map_err(|e| Failure::Link(format!("I/O error: {e}")))
    }
}

/// The connection's task: reader, writer and heartbeats until one ends.
async fn drive(
    inner: Arc<Inner>,
    stream: Arc<TcpStream>,
    leftover: Vec<u8>,
    heartbeat: Option<Duration>,
) {
    // However this task ends, a panic included, the connection is marked
    // dead, so the supervisor reconnects rather than waiting on a zombie.
    let _dead_on_exit = DieOnExit(inner.clone());
    let mut writer = std::pin::pin!(write_loop(inner.clone(), stream.clone()));
    let mut writer_done = false;
    let why = tokio::select! {
        why = read_loop(inner.clone(), stream, leftover) => why,
        why = &mut writer => {
            writer_done = true;
            why
        }
        why = heartbeat_loop(inner.clone(), heartbeat) => why,
        _ = inner.kill.notified() => "connection closed".to_string(),
    };
    // Flush what is queued (a close-ok) before the socket goes. A writer that
    // already ended (a failed write: the broker went first) must not be
    // polled again: an async fn polled after completion panics.
    lock(&inner.out).closed = true;
    inner.out_wake.notify_one();
    if !writer_done {
        let _ = tokio::time::timeout(Duration::from_millis(200), &mut writer).await;
    }
    // The last reference to the socket goes with the reader and writer.
    lock(&inner.out).stream = None;
    inner.die(why);
}

/// Marks the connection dead when the connection task ends without doing it
/// itself (only a bug can do that: a panic).
struct DieOnExit(Arc<Inner>);

impl Drop for DieOnExit {
    fn drop(&mut self) {
        if !self.0.is_dead() {
            let why = "internal error: the connection task ended unexpectedly";
            error!("{why}; reconnecting");
            lock(&self.0.out).stream = None;
            self.0.die(why.to_string());
        }
    }
}

async fn read_loop(inner: Arc<Inner>, stream: Arc<TcpStream>, leftover: Vec<u8>) -> String {
    let frame_max = inner.frame_max;
    let mut buf = vec![0u8; READ_BUFFER.max(frame_max + codec::FRAME_OVERHEAD)];
    buf[..leftover.len()].copy_from_slice(&leftover);
    let (mut start, mut end) = (0usize, leftover.len());
    let mut last = None;
    loop {
        loop {
            match codec::parse_frame(&buf[start..end], frame_max) {
                Ok((f, n)) => {
                    if let Err(why) = inner.handle_frame(f, &mut last) {
                        return why;
                    }
                    start += n;
                }
                Err(codec::ParseError::Incomplete(need)) => {
                    if start + need > buf.len() {
                        buf.copy_within(start..end, 0);
                        end -= start;
                        start = 0;
                    }
                    break;
                }
                Err(codec::ParseError::Invalid(e)) => return e,
            }
        }
        if inner.delivered.swap(false, Ordering::Relaxed) {
            inner.flush_sinks();
        }
        if start == end {
            start = 0;
            end = 0;
        }
        // Read what is there before waiting for readiness: a busy link is
        // read again at once, without a trip through epoll.
        let got = loop {
            match stream.try_read(&mut buf[end..]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = stream.readable().await {
                        break Err(e);
                    }
                }
                other => break other,
            }
        };
        match got {
            Ok(0) => return "the broker closed the connection (EOF)".into(),
            Ok(n) => {
                end += n;
                inner.read.store(true, Ordering::Relaxed);
            }
            Err(e) => return format!("I/O error: {e}"),
        }
    }
}

async fn write_loop(inner: Arc<Inner>, stream: Arc<TcpStream>) -> String {
    let mut chunk: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let idle = {
            let mut o = lock(&inner.out);
            if o.buf.is_empty() {
                Some(o.closed)
            } else {
                std::mem::swap(&mut o.buf, &mut chunk);
                o.writing = true;
                None
            }
        };
        match idle {
            Some(true) => return "connection closed".into(),
            Some(false) => {
                inner.out_wake.notified().await;
                continue;
            }
            None => {}
        }
        let mut at = 0;
        while at < chunk.len() {
            match stream.try_write(&chunk[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = stream.writable().await {
                        return format!("I/O error: {e}");
                    }
                }
                Err(e) => return format!("I/O error: {e}"),
            }
        }
        lock(&inner.out).writing = false;
        inner.wrote.store(true, Ordering::Relaxed);
        chunk.clear();
        if chunk.capacity() > KEEP_WRITE_BUFFER {
            chunk = Vec::with_capacity(64 * 1024);
        }
    }
}

async fn heartbeat_loop(inner: Arc<Inner>, heartbeat: Option<Duration>) -> String {
    let Some(h) = heartbeat else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(h / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The broker sends a heartbeat every interval/2 when idle; three ticks (1.5-2
    // intervals at the least) of silence mean the link is dead.
    let mut quiet_ticks = 0u32;
    loop {
        tick.tick().await;
        if !inner.wrote.swap(false, Ordering::Relaxed) {
            inner.write(None, codec::encode_heartbeat);
        }
        if inner.read.swap(false, Ordering::Relaxed) {
            quiet_ticks = 0;
        } else {
            quiet_ticks += 1;
            if quiet_ticks >= 3 {
                return "missed heartbeats from the broker".into();
            }
        }
    }
}

impl WireChannel {
    pub fn is_open(&self) -> bool {
        !self.ch.closed.load(Ordering::Relaxed)
    }

    /// Why the channel closed, once it has.
    pub fn close_reason(&self) -> Option<Failure> {
        self.ch.state().close_reason.clone()
    }

    /// One synchronous method and its reply; one at a time per channel.
    async fn call(&self, method: AMQPClass) -> Result<AMQPClass, Failure> {
        let _one = self.ch.rpc.lock().await;
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.ch.state();
            if let Some(why) = &st.close_reason {
                return Err(why.clone());
            }
            st.reply = Some(tx);
        }
        let id = self.ch.id;
        if !self
            .conn
            .write(Some(&self.ch), |o| codec::encode_method(o, id, method))
        {
            self.ch.state().reply = None;
            return Err(self
                .close_reason()
                .unwrap_or_else(|| Failure::Link("connection closed".into())));
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(self
                .close_reason()
                .unwrap_or_else(|| Failure::Link("channel closed".into()))),
        }
    }

    async fn call_expect(
        &self,
        method: AMQPClass,
        ok: impl Fn(&AMQPClass) -> bool,
    ) -> Result<(), Failure> {
        let r = self.call(method).await?;
        if ok(&r) {
            Ok(())
        } else {
            Err(unexpected(&r))
        }
    }

    pub async fn confirm_select(&self) -> Result<(), Failure> {
        let m = AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        }));
        self.call_expect(m, |r| {
            matches!(r, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)))
        })
        .await
    }

    pub async fn basic_qos(&self, prefetch: u16) -> Result<(), Failure> {
        let m = AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: prefetch,
            global: false,
        }));
        self.call_expect(m, |r| {
            matches!(r, AMQPClass::Basic(basic::AMQPMethod::QosOk(_)))
        })
        .await
    }

    pub async fn exchange_declare(
        &self,
        name: &str,
        kind: &str,
        durable: bool,
    ) -> Result<(), Failure> {
        let m = AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
            exchange: name.into(),
            kind: kind.into(),
            passive: false,
            durable,
            auto_delete: false,
            internal: false,
            nowait: false,
            arguments: FieldTable::default(),
        }));
        self.call_expect(m, |r| {
            matches!(r, AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_)))
        })
        .await
    }

    pub async fn queue_declare(
        &self,
        name: &str,
        durable: bool,
        arguments: FieldTable,
    ) -> Result<(), Failure> {
        let m = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: false,
            durable,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments,
        }));
        self.call_expect(m, |r| {
            matches!(r, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))
        })
        .await
    }

    pub async fn queue_bind(
        &self,
        queue_name: &str,
        exchange_name: &str,
        routing_key: &str,
    ) -> Result<(), Failure> {
        let m = AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
            queue: queue_name.into(),
            exchange: exchange_name.into(),
            routing_key: routing_key.into(),
            nowait: false,
            arguments: FieldTable::default(),
        }));
        self.call_expect(m, |r| {
            matches!(r, AMQPClass::Queue(queue::AMQPMethod::BindOk(_)))
        })
        .await
    }

    /// basic.consume with manual acks; `sink` receives the deliveries on the
    /// reader until the consumer is cancelled or the channel closes (then
    /// it is dropped).
    pub async fn basic_consume(
        &self,
        queue_name: &str,
        tag: &str,
        sink: Box<dyn DeliverySink>,
    ) -> Result<(), Failure> {
        {
            let mut st = self.ch.state();
            if let Some(why) = &st.close_reason {
                return Err(why.clone());
            }
            st.consumers.insert(tag.as_bytes().to_vec(), sink);
        }
        let m = AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: queue_name.into(),
            consumer_tag: ShortString::from(tag),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        }));
        let r = self
            .call_expect(m, |r| {
                matches!(r, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)))
            })
            .await;
        if r.is_err() {
            let sink = self.ch.state().consumers.remove(tag.as_bytes());
            drop(sink);
        }
        r
    }

    /// basic.cancel; deliveries that arrive until the broker's cancel-ok
    /// still reach the sink, which is dropped after it.
    pub async fn basic_cancel(&self, tag: &str) -> Result<(), Failure> {
        let m = AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: tag.into(),
            nowait: false,
        }));
        let r = self
            .call_expect(m, |r| {
                matches!(r, AMQPClass::Basic(basic::AMQPMethod::CancelOk(_)))
            })
            .await;
        let sink = self.ch.state().consumers.remove(tag.as_bytes());
        drop(sink);
        r
    }

    /// Sends basic.ack now (from any thread). False when the channel is
    /// closed: the broker requeues the delivery by itself.
    pub fn basic_ack(&self, tag: u64, multiple: bool) -> bool {
        let id = self.ch.id;
        self.conn
            .write(Some(&self.ch), |o| codec::encode_ack(o, id, tag, multiple))
    }

    pub fn basic_reject(&self, tag: u64, requeue: bool) -> bool {
        let id = self.ch.id;
        self.conn.write(Some(&self.ch), |o| {
            codec::encode_reject(o, id, tag, requeue)
        })
    }

    /// Holds the output lock to append publishes in one go (call
    /// `publish` for each, then drop). Fails when the channel is closed.
    pub fn start_publish<'a>(
        &'a self,
        target: PublishTarget<'a>,
    ) -> Result<PublishBatch<'a>, Failure> {
        let out = lock(&self.conn.out);
        if out.closed || self.ch.closed.load(Ordering::Relaxed) {
            drop(out);
            return Err(self
                .close_reason()
                .unwrap_or_else(|| Failure::Link("channel closed".into())));
        }
        let was_empty = out.buf.is_empty();
        Ok(PublishBatch {
            out,
            conn: &self.conn,
            channel: self.ch.id,
            target,
            was_empty,
        })
    }

    /// Confirms received since the last call, in arrival order.
    pub fn take_confirms(&self, into: &mut Vec<Confirm>) {
        let mut q = lock(&self.ch.confirms);
        std::mem::swap(&mut *q, into);
    }

    /// Resolves after new confirms arrive or the channel closes.
    pub async fn confirms_changed(&self) {
        self.ch.confirm_wake.notified().await
    }

    /// channel.close, waiting briefly for close-ok.
    pub async fn close(&self) {
        if self.ch.closed.load(Ordering::Relaxed) {
            return;
        }
        let m = AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "closing".into(),
            class_id: 0,
            method_id: 0,
        }));
        let _ = tokio::time::timeout(CLOSE_WAIT, self.call(m)).await;
        self.conn.remove_channel(self.ch.id);
        self.ch
            .close_local(Failure::Link("channel closed by us".into()));
    }
}

/// Publishes appended under one hold of the output lock.
pub struct PublishBatch<'a> {
    out: MutexGuard<'a, Out>,
    conn: &'a Inner,
    channel: u16,
    target: PublishTarget<'a>,
    was_empty: bool,
}

impl PublishBatch<'_> {
    pub fn publish(&mut self, body: &[u8]) {
        codec::encode_publish(
            &mut self.out.buf,
            self.channel,
            &self.target,
            body,
            self.conn.frame_max,
        );
    }
}

impl Drop for PublishBatch<'_> {
    fn drop(&mut self) {
        if self.was_empty && self.out.kick(&self.conn.wrote) {
            self.conn.out_wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected socket pair on loopback (the peer end is returned to
    /// keep it open).
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, peer) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (ours.unwrap(), peer.unwrap().0)
    }

    #[tokio::test]
    async fn the_connection_dies_cleanly_when_the_writer_ends_first() {
        // The writer ends before the reader (here: output closed while the
        // peer stays silent; live: a write fails as the broker goes). The
        // connection task must still end and mark the connection dead, not
        // poll the finished writer again (that panicked and left a zombie
        // connection that looked connected).
        let (ours, _peer) = socket_pair().await;
        let stream = Arc::new(ours);
        let inner = Arc::new(Inner::new(stream.clone(), 16, 4096));
        let task = tokio::spawn(drive(inner.clone(), stream, Vec::new(), None));
        lock(&inner.out).closed = true;
        inner.out_wake.notify_one();
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        let joined = ended.expect("the connection task ends");
        assert!(joined.is_ok(), "the connection task panicked: {joined:?}");
        assert_eq!(
            inner.dead.borrow().as_deref(),
            Some("connection closed"),
            "marked dead with the writer's reason"
        );
    }
}

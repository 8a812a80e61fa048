//! One channel: its synchronous calls (one at a time, the reader hands over
//! the reply), its consumers, acks and rejects, publish batches and the
//! queue of confirms the reader fills.

use super::channel_state::{ChannelState, Confirm, DeliverySink};
use super::codec::{self, Outgoing, PublishTarget};
use super::output::Appending;
use super::shared::{ConnShared, CLOSE_WAIT};
use super::{lock, wrong_reply, Failure};
use amq_protocol::protocol::{basic, channel, confirm, exchange, queue, AMQPClass};
use amq_protocol::types::{FieldTable, ShortString};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The flags of a queue.declare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueFlags {
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
}

/// How long a call waits for its reply before the connection is given up
/// (a reply lost or garbled on the way would leave it waiting forever
/// while heartbeats keep the connection alive). Not while the broker
/// blocks the connection.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// One channel; clones share it.
#[derive(Clone)]
pub struct WireChannel {
    ch: Arc<ChannelState>,
    conn: Arc<ConnShared>,
}

impl WireChannel {
    pub(super) fn new(ch: Arc<ChannelState>, conn: Arc<ConnShared>) -> WireChannel {
        WireChannel { ch, conn }
    }

    pub(super) fn id(&self) -> u16 {
        self.ch.id
    }

    pub fn is_open(&self) -> bool {
        !self.ch.is_closed()
    }

    /// Why the channel closed, once it has.
    pub fn close_reason(&self) -> Option<Failure> {
        self.ch.receivers().close_reason.clone()
    }

    fn closed_failure(&self, what: &str) -> Failure {
        self.close_reason()
            .unwrap_or_else(|| self.conn.failure(what))
    }

    /// One synchronous method and its reply; one at a time per channel.
    pub(super) async fn call(&self, method: AMQPClass) -> Result<AMQPClass, Failure> {
        let _one = self.ch.rpc.lock().await;
        self.read_eagerly();
        let (tx, rx) = oneshot::channel();
        {
            let mut r = self.ch.receivers();
            if let Some(why) = &r.close_reason {
                return Err(why.clone());
            }
            r.reply = Some(tx);
        }
        let id = self.ch.id;
        let sent = (self.conn.output).append(Some(&self.ch.closed), |o| {
            codec::encode_method(o, id, method)
        });
        if !sent {
            self.ch.receivers().reply = None;
            return Err(self.closed_failure("connection closed"));
        }
        let mut rx = rx;
        loop {
            match tokio::time::timeout(CALL_TIMEOUT, &mut rx).await {
                Ok(Ok(r)) => return r,
                Ok(Err(_)) => return Err(self.closed_failure("channel closed")),
                // A blocked broker may not read our call until it unblocks.
                Err(_) if self.conn.blocked.load(Ordering::Relaxed) => continue,
                Err(_) => {
                    return Err(self.conn.give_up(format!(
                        "no reply on channel {id} within {CALL_TIMEOUT:?} (the broker's answer was lost)"
                    )))
                }
            }
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
            Err(self.conn.abort(&wrong_reply(&r)))
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

    /// queue.declare; returns the queue's name from the declare-ok (the
    /// broker's for a server-named queue, `name` ""). A passive declare
    /// only checks that the queue exists (404 otherwise), whatever its
    /// arguments.
    pub async fn queue_declare(
        &self,
        name: &str,
        flags: QueueFlags,
        arguments: FieldTable,
    ) -> Result<String, Failure> {
        let m = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: flags.passive,
            durable: flags.durable,
            exclusive: flags.exclusive,
            auto_delete: flags.auto_delete,
            nowait: false,
            arguments,
        }));
        match self.call(m).await? {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => Ok(ok.queue.to_string()),
            r => Err(self.conn.abort(&wrong_reply(&r))),
        }
    }

    /// A passive queue.declare: Ok while the queue exists. A missing queue
    /// is `Failure::Refused` 404, and the broker closes the channel.
    pub async fn queue_exists(&self, name: &str) -> Result<(), Failure> {
        let m = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: true,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
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
        exclusive: bool,
        arguments: FieldTable,
        sink: Box<dyn DeliverySink>,
    ) -> Result<(), Failure> {
        {
            let mut r = self.ch.receivers();
            if let Some(why) = &r.close_reason {
                return Err(why.clone());
            }
            r.consumers.insert(tag.as_bytes().to_vec(), sink);
        }
        let m = AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: queue_name.into(),
            consumer_tag: ShortString::from(tag),
            no_local: false,
            no_ack: false,
            exclusive,
            nowait: false,
            arguments,
        }));
        let r = self
            .call_expect(m, |r| {
                matches!(r, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)))
            })
            .await;
        if r.is_err() {
            self.ch.remove_consumer(tag.as_bytes());
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
        self.ch.remove_consumer(tag.as_bytes());
        r
    }

    /// Sends basic.ack now (from any thread). False when the channel is
    /// closed: the broker requeues the delivery by itself.
    pub fn basic_ack(&self, tag: u64, multiple: bool) -> bool {
        let id = self.ch.id;
        (self.conn.output).append(Some(&self.ch.closed), |o| {
            codec::encode_ack(o, id, tag, multiple)
        })
    }

    pub fn basic_reject(&self, tag: u64, requeue: bool) -> bool {
        let id = self.ch.id;
        (self.conn.output).append(Some(&self.ch.closed), |o| {
            codec::encode_reject(o, id, tag, requeue)
        })
    }

    /// Holds the output to append publishes in one go (call `publish` for
    /// each, then drop). Fails when the channel is closed.
    pub fn start_publish<'a>(
        &'a self,
        target: PublishTarget<'a>,
    ) -> Result<PublishBatch<'a>, Failure> {
        let out = self.conn.output.appending();
        if out.is_closed() || self.ch.is_closed() {
            drop(out);
            return Err(self.closed_failure("channel closed"));
        }
        Ok(PublishBatch {
            out,
            ch: &self.ch,
            target,
            frame_max: self.conn.frame_max,
        })
    }

    /// Confirms received since the last call, in arrival order.
    pub fn take_confirms(&self, into: &mut Vec<Confirm>) {
        let mut q = lock(&self.ch.confirms);
        std::mem::swap(&mut *q, into);
    }

    /// This thread sent publishes itself: the link may read their confirms
    /// late (`lazy_read`). True: it does (plain TCP publish links), and
    /// `read_here` reads them.
    pub fn sent_here(&self) -> bool {
        self.conn.lazy().map(|lazy| lazy.sent_here()).is_some()
    }

    /// Wakes the task waiting in `confirms_changed`.
    pub fn wake_publisher(&self) {
        self.ch.confirm_wake.notify_one();
    }

    /// Reads what waits on a link read late, on this thread, without
    /// waking this channel's publisher for its confirms (the caller takes
    /// them). False: the link is read eagerly, or by another thread now.
    pub fn read_here(&self) -> bool {
        self.conn
            .lazy()
            .is_some_and(|lazy| lazy.read_here(&self.ch.taking))
    }

    /// From now on the link is read as soon as bytes arrive (someone waits
    /// for them).
    pub fn read_eagerly(&self) {
        if let Some(lazy) = self.conn.lazy() {
            lazy.eager();
        }
    }

    /// Resolves after new confirms arrive or the channel closes.
    pub async fn confirms_changed(&self) {
        self.ch.confirm_wake.notified().await
    }

    /// channel.close, waiting briefly for close-ok.
    pub async fn close(&self) {
        if self.ch.is_closed() {
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

/// Publishes appended under one hold of the output; written (or handed to
/// the writer) when dropped.
pub struct PublishBatch<'a> {
    out: Appending<'a>,
    ch: &'a ChannelState,
    target: PublishTarget<'a>,
    frame_max: usize,
}

impl PublishBatch<'_> {
    /// The most property bytes a content header can carry on this
    /// connection (the header frame must fit the negotiated frame_max, or
    /// the broker closes the connection).
    pub fn property_room(&self) -> usize {
        // class (2), weight (2), body size (8), the frame's own 8 bytes.
        self.frame_max.saturating_sub(codec::FRAME_OVERHEAD + 12)
    }

    pub fn publish(&mut self, msg: Outgoing<'_>, body: &[u8]) {
        // Before the broker can see it (the output is held), so its confirm
        // never looks like one for a publish never sent.
        self.ch.published.fetch_add(1, Ordering::Release);
        codec::encode_publish(
            self.out.frames(),
            self.ch.id,
            &self.target,
            msg,
            body,
            self.frame_max,
        );
    }
}

//! A queue: its topology, its publish buffer and the publisher that drains it
//! over the queue's one channel, with publisher confirms.
//!
//! Publish path: `amqp_publish` -> `PublishBuffer::push` (lock-free, bounded)
//! -> the queue's session task on the runtime sends up to `PUBLISH_WINDOW`
//! messages ahead of their confirms -> a message is released only when the
//! broker acks it. A nack or a lost channel puts unconfirmed messages back,
//! in their original order, ahead of everything not yet sent.

use crate::buffer::{Body, PublishBuffer};
use crate::consumer::ConsumerSet;
use crate::error::{classify, Error, ErrorKind, LapinFailure, Result};
use crate::options::{QueueOptions, QueueType};
use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::Poll;
use tokio::sync::watch;

/// Messages sent ahead of their confirms. LAPIN-NOTES: 256-512 is the sweet
/// spot; much larger windows slow down multiple-ack settlement.
pub const PUBLISH_WINDOW: usize = 512;

/// Per-queue counters, all monotonic except the gauges noted.
#[derive(Default)]
pub struct QueueStats {
    pub published: AtomicU64,
    pub confirmed: AtomicU64,
    pub resent: AtomicU64,
    pub nacked: AtomicU64,
    /// Gauge: sent, confirm outstanding.
    pub in_flight: AtomicU64,
    pub delivered: AtomicU64,
    pub acked: AtomicU64,
    pub rejected: AtomicU64,
    pub requeued: AtomicU64,
    pub released: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStatsSnapshot {
    pub buffered: u64,
    pub buffered_bytes: u64,
    pub in_flight: u64,
    pub published: u64,
    pub confirmed: u64,
    pub resent: u64,
    pub nacked: u64,
    pub delivered: u64,
    pub acked: u64,
    pub rejected: u64,
    pub requeued: u64,
    pub released: u64,
}

pub struct Queue {
    pub id: u64,
    pub name: String,
    pub exchange: String,
    pub routing_key: String,
    pub options: QueueOptions,
    pub buffer: PublishBuffer,
    pub stats: QueueStats,
    pub consumers: ConsumerSet,
    max_message_bytes: u64,
    /// Unconfirmed messages from an earlier channel, to be sent first.
    retry: Mutex<VecDeque<Body>>,
    /// Held by the one running publisher: a new session's publisher waits
    /// until the previous one has put its unconfirmed messages back.
    publisher: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    publish_exchange: ShortString,
    publish_routing_key: ShortString,
    properties: BasicProperties,
}

impl Queue {
    pub fn new(
        id: u64,
        name: &str,
        exchange: &str,
        routing_key: &str,
        options: QueueOptions,
        max_message_bytes: u64,
    ) -> Self {
        // Default exchange: route by queue name. Otherwise by the routing key.
        let publish_routing_key = if exchange.is_empty() {
            name
        } else {
            routing_key
        };
        let mut properties = BasicProperties::default();
        if options.persistent {
            properties = properties.with_delivery_mode(2);
        }
        Queue {
            id,
            name: name.to_string(),
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            buffer: PublishBuffer::new(options.max_buffered, options.max_buffered_bytes),
            options,
            stats: QueueStats::default(),
            consumers: ConsumerSet::default(),
            max_message_bytes,
            retry: Mutex::new(VecDeque::new()),
            publisher: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            publish_exchange: exchange.into(),
            publish_routing_key: publish_routing_key.into(),
            properties,
        }
    }

    /// Copies `body` into the buffer; never touches the network.
    pub fn publish(&self, body: &[u8]) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed(
                "the connection is closing or has failed for good",
            ));
        }
        if body.len() as u64 > self.max_message_bytes {
            return Err(Error::new(
                ErrorKind::MessageTooLarge,
                format!(
                    "body of {} bytes exceeds max_message_bytes {}",
                    body.len(),
                    self.max_message_bytes
                ),
            ));
        }
        self.buffer.push(body)?;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// From now on `publish` returns `Closed`.
    pub fn close_for_publishing(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn unconfirmed(&self) -> u64 {
        self.buffer.count()
    }

    pub fn stats(&self) -> QueueStatsSnapshot {
        let s = &self.stats;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        QueueStatsSnapshot {
            buffered: self.buffer.count(),
            buffered_bytes: self.buffer.bytes(),
            in_flight: r(&s.in_flight),
            published: r(&s.published),
            confirmed: r(&s.confirmed),
            resent: r(&s.resent),
            nacked: r(&s.nacked),
            delivered: r(&s.delivered),
            acked: r(&s.acked),
            rejected: r(&s.rejected),
            requeued: r(&s.requeued),
            released: r(&s.released),
        }
    }

    /// Opens the queue's channel and declares its topology: confirm mode,
    /// QoS, exchange, queue, binding. Run on open and after every reconnect.
    pub async fn open_channel(
        &self,
        conn: &lapin::Connection,
    ) -> std::result::Result<Channel, lapin::Error> {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        ch.basic_qos(self.options.prefetch, BasicQosOptions { global: false })
            .await?;
        if !self.exchange.is_empty() {
            let kind = match self.options.exchange_type.as_str() {
                "direct" => ExchangeKind::Direct,
                "fanout" => ExchangeKind::Fanout,
                "topic" => ExchangeKind::Topic,
                "headers" => ExchangeKind::Headers,
                other => ExchangeKind::Custom(other.to_string()),
            };
            ch.exchange_declare(
                self.exchange.as_str().into(),
                kind,
                ExchangeDeclareOptions {
                    durable: self.options.durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        }
        let mut args = FieldTable::default();
        if self.options.queue_type == QueueType::Quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        ch.queue_declare(
            self.name.as_str().into(),
            QueueDeclareOptions {
                durable: self.options.durable,
                ..Default::default()
            },
            args,
        )
        .await?;
        if !self.exchange.is_empty() {
            ch.queue_bind(
                self.name.as_str().into(),
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(ch)
    }

    /// Drains the buffer over `ch` until the channel fails or `link` says
    /// this channel's generation is over. Unconfirmed messages are kept.
    pub async fn run_publisher(
        &self,
        ch: &Channel,
        link: &mut watch::Receiver<LinkState>,
        generation: u64,
    ) -> PublisherEnd {
        let _running = self.publisher.lock().await;
        let mut window: VecDeque<(Body, Slot)> = VecDeque::new();
        let mut base_seq: u64 = 0;
        let mut futs: FuturesUnordered<ConfirmFuture> = FuturesUnordered::new();
        let mut retry = std::mem::take(&mut *self.retry.lock().unwrap_or_else(|p| p.into_inner()));
        let end = loop {
            // Fill the window. Each publish future is polled once right here,
            // in order: that first poll assigns the delivery tag and queues
            // the frames, so the wire order is the publish order.
            // Unique borrows keep the future Send (FuturesUnordered is not Sync).
            let (futs_mut, window_mut, retry_mut) = (&mut futs, &mut window, &mut retry);
            let filled = std::future::poll_fn(move |cx| {
                let (futs, window, retry) = (&mut *futs_mut, &mut *window_mut, &mut *retry_mut);
                while window.len() < PUBLISH_WINDOW {
                    let (body, resend) = match retry.pop_front() {
                        Some(b) => (b, true),
                        None => match self.buffer.pop() {
                            Some(b) => (b, false),
                            None => break,
                        },
                    };
                    if resend {
                        self.stats.resent.fetch_add(1, Ordering::Relaxed);
                    }
                    let seq = base_seq + window.len() as u64;
                    let mut fut = self.publish_future(ch, body.clone(), seq);
                    match fut.as_mut().poll(cx) {
                        Poll::Ready(out) => futs.push(Box::pin(std::future::ready(out))),
                        Poll::Pending => futs.push(fut),
                    }
                    window.push_back((body, Slot::Pending));
                }
                Poll::Ready(())
            });
            filled.await;
            self.stats
                .in_flight
                .store(window.len() as u64, Ordering::Relaxed);

            let idle = window.is_empty();
            let next = if idle {
                // Nothing in flight: sleep until a push or a link change.
                if !self.buffer.set_idle_if_empty() {
                    continue;
                }
                // The periodic check notices a channel closed by the broker
                // (e.g. a consumer's channel error) while nothing is published.
                tokio::select! {
                    _ = self.buffer.wake.notified() => continue,
                    r = link.changed() => { if r.is_err() || !link.borrow().is(generation) { break PublisherEnd::LinkDown } continue }
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                        if !ch.status().connected() {
                            break PublisherEnd::ChannelLost(format!("channel is {:?}", ch.status()));
                        }
                        continue
                    }
                }
            } else {
                tokio::select! {
                    biased;
                    r = futs.next() => r,
                    _ = self.buffer.wake.notified(), if window.len() < PUBLISH_WINDOW => continue,
                    r = link.changed() => { if r.is_err() || !link.borrow().is(generation) { break PublisherEnd::LinkDown } continue }
                }
            };
            let Some((seq, result)) = next else { continue };
            let idx = (seq - base_seq) as usize;
            match result {
                Ok(Confirmation::Nack(_)) => {
                    self.stats.nacked.fetch_add(1, Ordering::Relaxed);
                    window[idx].1 = Slot::Nacked;
                }
                Ok(_) => window[idx].1 = Slot::Acked,
                Err(e) => break PublisherEnd::ChannelLost(e.to_string()),
            }
            // Settle from the front so order is kept for anything resent.
            let mut nacked = Vec::new();
            while matches!(window.front(), Some((_, slot)) if *slot != Slot::Pending) {
                let Some((b, slot)) = window.pop_front() else {
                    break;
                };
                if slot == Slot::Acked {
                    self.buffer.release(b.len());
                    self.stats.confirmed.fetch_add(1, Ordering::Relaxed);
                } else {
                    nacked.push(b);
                }
                base_seq += 1;
            }
            for b in nacked.into_iter().rev() {
                retry.push_front(b);
            }
        };
        // Confirmed ones behind an unconfirmed one are done; the rest go back
        // in order, ahead of what was never sent.
        let mut keep: VecDeque<Body> = VecDeque::with_capacity(window.len() + retry.len());
        for (b, slot) in window {
            if slot == Slot::Acked {
                self.buffer.release(b.len());
                self.stats.confirmed.fetch_add(1, Ordering::Relaxed);
            } else {
                keep.push_back(b);
            }
        }
        keep.extend(retry);
        self.stats.in_flight.store(0, Ordering::Relaxed);
        let mut slot = self.retry.lock().unwrap_or_else(|p| p.into_inner());
        keep.extend(slot.drain(..));
        *slot = keep;
        end
    }

    /// The future borrows the channel (cloning a lapin Channel per message
    /// costs a dozen atomic increments and decrements).
    fn publish_future<'c>(&self, ch: &'c Channel, body: Body, seq: u64) -> ConfirmFuture<'c> {
        let exchange = self.publish_exchange.clone();
        let routing_key = self.publish_routing_key.clone();
        let properties = self.properties.clone();
        Box::pin(async move {
            let res = async {
                ch.basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await?
                .await
            }
            .await;
            (seq, res)
        })
    }
}

type ConfirmFuture<'c> = Pin<
    Box<dyn Future<Output = (u64, std::result::Result<Confirmation, lapin::Error>)> + Send + 'c>,
>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Pending,
    Acked,
    Nacked,
}

pub enum PublisherEnd {
    /// The connection generation ended (lost, or closing).
    LinkDown,
    /// A publish or confirm failed: the channel (or the link) broke.
    ChannelLost(String),
}

/// What the supervisor tells sessions: which connection generation is live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub generation: u64,
    pub up: bool,
}

impl LinkState {
    pub fn is(&self, generation: u64) -> bool {
        self.up && self.generation == generation
    }
}

/// Maps a failed declare to what `amqp_queue_open` returns.
pub fn declare_error(queue: &str, e: &lapin::Error) -> Option<Error> {
    match classify(e) {
        LapinFailure::Refused { text, .. } | LapinFailure::ConnectionRefused { text, .. } => {
            Some(Error::new(
                ErrorKind::Broker,
                format!("broker refused queue '{queue}': {text}"),
            ))
        }
        LapinFailure::Link(_) => None,
    }
}

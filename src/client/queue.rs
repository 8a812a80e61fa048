//! A queue as the application opened it: its topology (declared again on
//! every channel), its outbox (publish side) and its consumers.

use super::options::{ArgValue, Arguments, ConnectionOptions, QueueOptions, QueueType};
use crate::consume::{CallbackPool, ConsumerSet, ConsumerSettings};
use crate::error::{Error, ErrorKind};
use crate::publish::{window_limits, Outbox, PublishSettings};
use crate::spool::{Spool, SpoolConfig, SEGMENT_BYTES};
use crate::wire::{AMQPValue, Failure, FieldTable, QueueFlags, WireChannel, WireConnection};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueStatsSnapshot {
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
    pub unsettled: u64,
    pub invalid_dispositions: u64,
    pub returns_ignored: u64,
    pub failed: u64,
    pub expired: u64,
    pub refused: u64,
    pub queue_failed: bool,
    pub consume_refusals: u64,
    pub unroutable: u64,
    pub deduplicated: u64,
    pub spooled: u64,
    pub spool_restored: u64,
    pub spool_dropped_bytes: u64,
}

pub(crate) struct Queue {
    pub name: String,
    exchange: String,
    routing_key: String,
    options: QueueOptions,
    pub outbox: Outbox,
    pub consumers: Arc<ConsumerSet>,
    /// Its topology broke the whole connection (e.g. an exchange type the
    /// broker does not know): it is never declared again.
    refused_for_good: AtomicBool,
    /// The name the broker gave (a server-named queue: `name` ""), and the
    /// publish-link generation it belongs to; `name` for the others.
    live: Mutex<(u64, String)>,
    /// One declare at a time of a server-named queue, so the publish and
    /// the consume session of a generation share one queue.
    naming: tokio::sync::Mutex<()>,
    /// Declared once already: after a reconnect, a durable queue that is
    /// missing was lost by the broker (see `lost_by_broker`).
    declared: AtomicBool,
}

/// A field table of `args`, in order.
fn field_table(args: &Arguments) -> FieldTable {
    let mut t = FieldTable::default();
    for (name, v) in args {
        let v = match v {
            ArgValue::Int(n) => AMQPValue::LongLongInt(*n),
            ArgValue::Str(s) => AMQPValue::LongString(s.as_str().into()),
            ArgValue::Bool(b) => AMQPValue::Boolean(*b),
        };
        t.insert(name.as_str().into(), v);
    }
    t
}

/// The queue option spool_dir's spool and what an earlier process left in
/// it, if the option is set.
fn open_spool(name: &str, options: &QueueOptions) -> crate::error::Result<Option<SpoolOpened>> {
    if options.spool_dir.is_empty() {
        return Ok(None);
    }
    let max_bytes = match options.spool_max_bytes {
        0 => options.max_buffered_bytes,
        n => n,
    };
    Spool::open(SpoolConfig {
        dir: options.spool_dir.clone().into(),
        sync: options.spool_sync,
        max_bytes,
        segment_bytes: SEGMENT_BYTES,
        queue: name.to_string(),
    })
    .map(Some)
    // A directory that cannot be used is a bad option value.
    .map_err(|e| match e.kind {
        ErrorKind::Internal => Error::invalid(format!("spool_dir: {}", e.message)),
        _ => e,
    })
}

type SpoolOpened = (Arc<Spool>, Vec<crate::spool::Record>);

impl Queue {
    pub fn new(
        id: u64,
        name: &str,
        exchange: &str,
        routing_key: &str,
        options: QueueOptions,
        conn: &ConnectionOptions,
        pool: &Arc<CallbackPool>,
    ) -> crate::error::Result<Self> {
        // Default exchange: route by queue name. Otherwise by the routing key.
        let publish_routing_key = if exchange.is_empty() {
            name
        } else {
            routing_key
        };
        let outbox = Outbox::new(PublishSettings {
            queue: name.to_string(),
            exchange: exchange.to_string(),
            routing_key: publish_routing_key.to_string(),
            persistent: options.persistent,
            mandatory: options.mandatory,
            window: window_limits(options.confirmed_after_disk_write()),
            max_buffered: options.max_buffered,
            max_buffered_bytes: options.max_buffered_bytes,
            max_message_bytes: conn.max_message_bytes,
            publish_retries: options.publish_retries,
            publish_timeout: (options.publish_timeout_ms > 0)
                .then(|| Duration::from_millis(options.publish_timeout_ms)),
            retry_delay: conn.reconnect_delay.max(Duration::from_millis(10)),
            retry_delay_max: conn.reconnect_delay_max.max(Duration::from_millis(10)),
            auto_message_id: options.auto_message_id,
        });
        let outbox = match open_spool(name, &options)? {
            Some((spool, restored)) => outbox.with_spool(spool, restored),
            None => outbox,
        };
        Ok(Queue {
            name: name.to_string(),
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            consumers: ConsumerSet::new(
                pool,
                id,
                name,
                options.prefetch,
                options.invalid_disposition_rejects,
                ConsumerSettings {
                    name: options.consumer_name.clone(),
                    exclusive: options.consumer_exclusive,
                    dedupe: options.dedupe as usize,
                    arguments: field_table(&options.consumer_arguments),
                },
            ),
            options,
            outbox,
            refused_for_good: AtomicBool::new(false),
            live: Mutex::new((0, name.to_string())),
            naming: tokio::sync::Mutex::new(()),
            declared: AtomicBool::new(false),
        })
    }

    /// The queue's name at the broker now: a server-named queue's latest
    /// (empty until first declared).
    pub fn live_name(&self) -> String {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Exclusive (server-named queues too): it lives on the publish link,
    /// its consumers with it (another connection may not consume from it).
    pub fn is_exclusive(&self) -> bool {
        self.options.exclusive
    }

    /// The consumers' settings are checked against `repeat`.
    pub fn consumer_exclusive(&self) -> bool {
        self.options.consumer_exclusive
    }

    /// How often the session checks that the queue still exists.
    pub fn topology_check(&self) -> Option<std::time::Duration> {
        self.options.topology_check
    }

    pub fn stats(&self) -> QueueStatsSnapshot {
        let p = &self.outbox.stats;
        let c = &self.consumers.stats;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        QueueStatsSnapshot {
            buffered: self.outbox.buffer.count(),
            buffered_bytes: self.outbox.buffer.bytes(),
            in_flight: r(&p.in_flight),
            published: r(&p.published),
            confirmed: r(&p.confirmed),
            resent: r(&p.resent),
            nacked: r(&p.nacked),
            delivered: r(&c.delivered),
            acked: r(&c.acked),
            rejected: r(&c.rejected),
            requeued: r(&c.requeued),
            released: r(&c.released),
            unsettled: r(&c.unsettled),
            invalid_dispositions: r(&c.invalid_dispositions),
            returns_ignored: r(&c.returns_ignored),
            failed: r(&p.failed),
            expired: r(&p.expired),
            refused: r(&p.refused),
            queue_failed: self.outbox.is_failed(),
            consume_refusals: r(&c.consume_refusals),
            unroutable: r(&p.unroutable),
            deduplicated: r(&c.deduplicated),
            spooled: self.outbox.spool().map_or(0, |s| r(&s.stats.live)),
            spool_restored: self.outbox.spool().map_or(0, |s| r(&s.stats.restored)),
            spool_dropped_bytes: self.outbox.spool().map_or(0, |s| r(&s.stats.dropped_bytes)),
        }
    }

    /// Opens the queue's channel and declares its topology: confirm mode,
    /// QoS, exchange, queue, binding. Run on open and after every reconnect
    /// (`generation`: the publish link's).
    pub async fn open_channel(
        &self,
        conn: &WireConnection,
        generation: u64,
    ) -> Result<WireChannel, Failure> {
        Ok(self.open_with(conn, generation, true).await?.0)
    }

    /// Opens the queue's channel on the consume link (the publish link for
    /// an exclusive queue, `generation` then its): QoS and the topology (so
    /// consumers work whichever link comes up first), no confirm mode. With
    /// the queue's name there.
    pub async fn open_consume_channel(
        &self,
        conn: &WireConnection,
        generation: u64,
    ) -> Result<(WireChannel, String), Failure> {
        self.open_with(conn, generation, false).await
    }

    async fn open_with(
        &self,
        conn: &WireConnection,
        generation: u64,
        confirm: bool,
    ) -> Result<(WireChannel, String), Failure> {
        let mut ch = conn.create_channel().await?;
        if self.lost_by_broker(&ch).await? {
            // the refusal closed the channel
            ch.close().await;
            ch = conn.create_channel().await?;
        }
        let declared = async {
            if confirm {
                ch.confirm_select().await?;
            }
            ch.basic_qos(self.options.prefetch).await?;
            if !self.exchange.is_empty() {
                ch.exchange_declare(
                    &self.exchange,
                    &self.options.exchange_type,
                    self.options.durable,
                )
                .await?;
            }
            let name = self.declare_queue(&ch, generation).await?;
            if !self.exchange.is_empty() {
                ch.queue_bind(&name, &self.exchange, &self.routing_key)
                    .await?;
            }
            Ok(name)
        };
        match declared.await {
            Ok(name) => {
                self.declared.store(true, Ordering::Relaxed);
                Ok((ch, name))
            }
            Err(e) => {
                ch.close().await;
                Err(e)
            }
        }
    }
}

impl Queue {
    /// Whether a durable queue this handle declared before is missing now
    /// (on `ch`, before it is declared again after a reconnect). A broker
    /// that crashed can lose a queue declared just before (RabbitMQ 3.10
    /// did, with the messages it had confirmed into it: docs/STATUS.md),
    /// and a node can come back without its data; the messages are gone
    /// with the queue, and the library no longer holds them (confirmed).
    /// It cannot bring them back, but it says so. True: the check closed
    /// `ch` (a refusal). Err: the link failed.
    async fn lost_by_broker(&self, ch: &WireChannel) -> Result<bool, Failure> {
        let o = &self.options;
        let durable_named = o.durable && !o.passive && !o.exclusive && !o.auto_delete;
        if !durable_named || self.name.is_empty() || !self.declared.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match ch.queue_exists(&self.name).await {
            Ok(()) => Ok(false),
            Err(Failure::Refused { code: 404, .. }) => {
                warn!(
                    "queue '{}' was missing after the reconnect: the broker lost it (a crash \
                     soon after it was declared, or a node without its data); messages it had \
                     confirmed into it are lost with it; declaring it again",
                    self.name
                );
                Ok(true)
            }
            Err(Failure::Refused { text, .. }) => {
                // not ours to judge (e.g. permissions): the declare says
                debug!("queue '{}': passive check refused: {text}", self.name);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// queue.declare as the options say; the queue's name. A server-named
    /// queue is declared anew ("") once per publish-link generation, and by
    /// its name again within it.
    async fn declare_queue(&self, ch: &WireChannel, generation: u64) -> Result<String, Failure> {
        let o = &self.options;
        if o.passive {
            let flags = QueueFlags {
                passive: true,
                ..QueueFlags::default()
            };
            return ch
                .queue_declare(&self.name, flags, FieldTable::default())
                .await;
        }
        let flags = QueueFlags {
            passive: false,
            durable: o.durable,
            exclusive: o.exclusive,
            auto_delete: o.auto_delete,
        };
        let mut args = field_table(&o.arguments);
        let kind = match o.queue_type {
            QueueType::Classic => None,
            QueueType::Quorum => Some("quorum"),
            QueueType::Stream => Some("stream"),
        };
        if let Some(kind) = kind {
            args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        }
        if !self.name.is_empty() {
            return ch.queue_declare(&self.name, flags, args).await;
        }
        let _one = self.naming.lock().await;
        let known = {
            let live = crate::sync::lock(&self.live);
            (live.0 == generation && !live.1.is_empty()).then(|| live.1.clone())
        };
        // Within the generation, passively by its name (RabbitMQ refuses a
        // declare of a name starting with amq.: 403).
        let name = match &known {
            Some(name) => {
                let passive = QueueFlags {
                    passive: true,
                    ..QueueFlags::default()
                };
                let found = ch.queue_declare(name, passive, FieldTable::default());
                match found.await {
                    Err(e @ Failure::Refused { code: 404, .. }) => {
                        // Deleted (by an operator): a new one next time.
                        *crate::sync::lock(&self.live) = (0, String::new());
                        return Err(e);
                    }
                    found => found?,
                }
            }
            None => ch.queue_declare("", flags, args).await?,
        };
        if known.is_none() {
            info!("server-named queue: the broker named it '{name}'");
        }
        *crate::sync::lock(&self.live) = (generation, name.clone());
        Ok(name)
    }

    /// Maps a failed declare to what `amqp_queue_open` returns: `Some` when
    /// the broker refused this queue's topology; `None` when the link
    /// failed (then the declare is retried on the next connection). A
    /// connection closed by the broker is this queue's doing only when the
    /// broker's text names its exchange type (an unknown or disabled
    /// type: RabbitMQ closes the connection, not the channel); it is then
    /// refused for good, so it does not break the connection again. After
    /// a reconnect (`at_open` false) an exclusive queue's 405
    /// RESOURCE_LOCKED is the old connection's queue lingering: retried.
    pub fn declare_error(&self, e: &Failure, at_open: bool) -> Option<Error> {
        let text = match e {
            Failure::Refused { code: 405, .. } if self.is_exclusive() && !at_open => return None,
            Failure::Refused { text, .. } => text,
            Failure::ConnectionRefused { text, .. } if self.broke_connection(text) => {
                self.refused_for_good.store(true, Ordering::SeqCst);
                text
            }
            _ => return None,
        };
        Some(Error::new(
            ErrorKind::Broker,
            format!("broker refused queue '{}': {text}", self.name),
        ))
    }

    fn broke_connection(&self, text: &str) -> bool {
        !self.exchange.is_empty() && text.contains(&format!("'{}'", self.options.exchange_type))
    }

    /// Its topology broke a connection: no session declares it again.
    pub fn refused_for_good(&self) -> bool {
        self.refused_for_good.load(Ordering::SeqCst)
    }
}

//! A queue as the application opened it: its topology (declared again on
//! every channel), its outbox (publish side) and its consumers.

use super::options::{ConnectionOptions, QueueOptions, QueueType};
use crate::consume::ConsumerSet;
use crate::error::{Error, ErrorKind};
use crate::publish::{window_limits, Outbox, PublishSettings};
use crate::wire::{AMQPValue, Failure, FieldTable, WireChannel, WireConnection};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
}

impl Queue {
    pub fn new(
        id: u64,
        name: &str,
        exchange: &str,
        routing_key: &str,
        options: QueueOptions,
        conn: &ConnectionOptions,
    ) -> Self {
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
        });
        Queue {
            name: name.to_string(),
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            consumers: ConsumerSet::new(
                id,
                name,
                options.prefetch,
                options.invalid_disposition_rejects,
            ),
            options,
            outbox,
            refused_for_good: AtomicBool::new(false),
        }
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
        }
    }

    /// Opens the queue's channel and declares its topology: confirm mode,
    /// QoS, exchange, queue, binding. Run on open and after every reconnect.
    pub async fn open_channel(&self, conn: &WireConnection) -> Result<WireChannel, Failure> {
        self.open_with(conn, true).await
    }

    /// Opens the queue's channel on the consume link: QoS and the topology
    /// (so consumers work whichever link comes up first), no confirm mode.
    pub async fn open_consume_channel(
        &self,
        conn: &WireConnection,
    ) -> Result<WireChannel, Failure> {
        self.open_with(conn, false).await
    }

    async fn open_with(
        &self,
        conn: &WireConnection,
        confirm: bool,
    ) -> Result<WireChannel, Failure> {
        let ch = conn.create_channel().await?;
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
            let mut args = FieldTable::default();
            if self.options.queue_type == QueueType::Quorum {
                args.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("quorum".into()),
                );
            }
            ch.queue_declare(&self.name, self.options.durable, args)
                .await?;
            if !self.exchange.is_empty() {
                ch.queue_bind(&self.name, &self.exchange, &self.routing_key)
                    .await?;
            }
            Ok(())
        };
        match declared.await {
            Ok(()) => Ok(ch),
            Err(e) => {
                ch.close().await;
                Err(e)
            }
        }
    }
}

impl Queue {
    /// Maps a failed declare to what `amqp_queue_open` returns: `Some` when
    /// the broker refused this queue's topology; `None` when the link
    /// failed (then the declare is retried on the next connection). A
    /// connection closed by the broker is this queue's doing only when the
    /// broker's text names its exchange type (an unknown or disabled
    /// type: RabbitMQ closes the connection, not the channel); it is then
    /// refused for good, so it does not break the connection again.
    pub fn declare_error(&self, e: &Failure) -> Option<Error> {
        let text = match e {
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

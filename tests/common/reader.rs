//! An independent reader/writer on plain lapin (no resilient-amqp code): drains queues, seeds
//! them with confirmed messages, declares and deletes them.

use super::uri;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// An independent reader/writer on plain lapin
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Got {
    pub body: Vec<u8>,
    pub redelivered: bool,
    pub delivery_mode: Option<u8>,
    pub exchange: String,
    pub routing_key: String,
    /// Every property, headers included, as lapin read them.
    pub properties: lapin::BasicProperties,
}

pub struct Reader {
    rt: tokio::runtime::Runtime,
    conn: lapin::Connection,
    ch: lapin::Channel,
}

impl Reader {
    pub fn new() -> Reader {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-reader")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let u = uri();
        let (conn, ch) = rt.block_on(async {
            let mut last = None;
            // the broker may just be coming back (start_app): retry for a while
            for _ in 0..100 {
                match lapin::Connection::connect(&u, lapin::ConnectionProperties::default()).await {
                    Ok(conn) => {
                        let ch = conn.create_channel().await.expect("reader: create_channel");
                        ch.confirm_select(Default::default())
                            .await
                            .expect("reader: confirm_select");
                        return (conn, ch);
                    }
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("reader: cannot connect to {u}: {last:?}");
        });
        Reader { rt, conn, ch }
    }

    /// Takes every message currently ready in `queue` (basic.get, no-ack).
    pub fn drain(&self, queue: &str) -> Vec<Got> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            loop {
                let m = self
                    .ch
                    .basic_get(
                        queue.into(),
                        lapin::options::BasicGetOptions { no_ack: true },
                    )
                    .await
                    .unwrap_or_else(|e| panic!("reader: basic_get {queue}: {e}"));
                match m {
                    None => return out,
                    Some(m) => {
                        let d = m.delivery;
                        out.push(Got {
                            body: d.data,
                            redelivered: d.redelivered,
                            delivery_mode: *d.properties.delivery_mode(),
                            exchange: d.exchange.to_string(),
                            routing_key: d.routing_key.to_string(),
                            properties: d.properties,
                        });
                    }
                }
            }
        })
    }

    /// Drains until at least `n` messages were taken or `timeout` passed.
    pub fn drain_at_least(&self, queue: &str, n: usize, timeout: Duration) -> Vec<Got> {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            all.extend(self.drain(queue));
            if all.len() >= n || Instant::now() >= deadline {
                return all;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Publishes to the default exchange with publisher confirms (waits for each confirm).
    pub fn publish(&self, queue: &str, bodies: &[Vec<u8>]) {
        self.rt.block_on(async {
            let mut confirms = Vec::new();
            for b in bodies {
                let c = self
                    .ch
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        Default::default(),
                        b,
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .expect("reader: basic_publish");
                confirms.push(c);
            }
            for c in confirms {
                let conf = c.await.expect("reader: confirm");
                assert!(conf.is_ack(), "reader: publish nacked");
            }
        })
    }

    /// `publish`, each message with its body as message_id.
    pub fn publish_with_ids(&self, queue: &str, bodies: &[Vec<u8>]) {
        self.rt.block_on(async {
            let mut confirms = Vec::new();
            for b in bodies {
                let id = String::from_utf8_lossy(b).into_owned();
                let props = lapin::BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(id.into());
                let c = self
                    .ch
                    .basic_publish("".into(), queue.into(), Default::default(), b, props)
                    .await
                    .expect("reader: basic_publish");
                confirms.push(c);
            }
            for c in confirms {
                let conf = c.await.expect("reader: confirm");
                assert!(conf.is_ack(), "reader: publish nacked");
            }
        })
    }

    /// Publishes one confirmed persistent message with these headers to `queue` (default
    /// exchange).
    pub fn publish_with_headers(
        &self,
        queue: &str,
        body: &[u8],
        headers: lapin::types::FieldTable,
    ) {
        self.rt.block_on(async {
            let props = lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(headers);
            let conf = self
                .ch
                .basic_publish("".into(), queue.into(), Default::default(), body, props)
                .await
                .expect("reader: basic_publish")
                .await
                .expect("reader: confirm");
            assert!(conf.is_ack(), "reader: publish nacked");
        })
    }

    /// Publishes one confirmed message with these properties to `exchange` / `routing_key`.
    pub fn publish_props(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: lapin::BasicProperties,
    ) {
        self.rt.block_on(async {
            let conf = self
                .ch
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    Default::default(),
                    body,
                    props,
                )
                .await
                .expect("reader: basic_publish")
                .await
                .expect("reader: confirm");
            assert!(conf.is_ack(), "reader: publish nacked");
        })
    }

    pub fn declare(
        &self,
        queue: &str,
        opts: lapin::options::QueueDeclareOptions,
    ) -> std::result::Result<(), String> {
        self.rt.block_on(async {
            let ch = self
                .conn
                .create_channel()
                .await
                .map_err(|e| e.to_string())?;
            let r = ch
                .queue_declare(queue.into(), opts, Default::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            let _ = ch.close(200, "OK".into()).await;
            r
        })
    }

    /// Ready messages and consumers (passive declare), None when the queue does not exist.
    pub fn count(&self, queue: &str) -> Option<(u32, u32)> {
        self.rt.block_on(async {
            let ch = self.conn.create_channel().await.ok()?;
            let q = ch
                .queue_declare(
                    queue.into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .ok()?;
            let _ = ch.close(200, "OK".into()).await;
            Some((q.message_count(), q.consumer_count()))
        })
    }

    /// Takes every message of `queue` with a no-ack consumer (much faster than `drain` for large
    /// queues): stops once nothing arrived for `idle` and the broker reports the queue empty
    /// (or after `timeout`).
    pub fn drain_fast(&self, queue: &str, idle: Duration, timeout: Duration) -> Vec<Got> {
        use futures_util::StreamExt;
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let got: Vec<Got> = self.rt.block_on(async {
                let ch = self
                    .conn
                    .create_channel()
                    .await
                    .expect("reader: create_channel");
                let mut consumer = ch
                    .basic_consume(
                        queue.into(),
                        "".into(),
                        lapin::options::BasicConsumeOptions {
                            no_ack: true,
                            ..Default::default()
                        },
                        Default::default(),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("reader: basic_consume {queue}: {e}"));
                let mut got = Vec::new();
                while let Ok(Some(d)) = tokio::time::timeout(idle, consumer.next()).await {
                    let d = d.unwrap_or_else(|e| panic!("reader: delivery from {queue}: {e}"));
                    got.push(Got {
                        body: d.data,
                        redelivered: d.redelivered,
                        delivery_mode: *d.properties.delivery_mode(),
                        exchange: d.exchange.to_string(),
                        routing_key: d.routing_key.to_string(),
                        properties: d.properties,
                    });
                }
                let _ = ch.close(200, "OK".into()).await;
                got
            });
            out.extend(got);
            let left = self.count(queue).map_or(0, |(n, _)| n);
            if left == 0 || Instant::now() >= deadline {
                return out;
            }
        }
    }

    pub fn delete(&self, queue: &str) {
        self.rt.block_on(async {
            if let Ok(ch) = self.conn.create_channel().await {
                let _ = ch.queue_delete(queue.into(), Default::default()).await;
                let _ = ch.close(200, "OK".into()).await;
            }
        })
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), self.conn.close(200, "OK".into())).await
        });
    }
}

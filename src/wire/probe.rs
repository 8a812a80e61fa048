//! The frame reader without a socket: bytes in, what the reader did out.
//! The fuzz targets and the stable property tests drive the reader through
//! this (via `crate::testing`); the library itself never uses it.

use super::assembly::Delivery;
use super::channel_state::{ChannelState, DeliverySink};
use super::codec;
use super::lock;
use super::reader::{Demux, End};
use super::shared::ConnShared;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The probe's receive limit (what `max_message_bytes` sets in the library).
pub const PROBE_MAX_BODY: u64 = 1 << 20;

/// Publishes each probe channel counts as sent (confirms up to this tag are
/// valid).
pub const PROBE_PUBLISHED: u64 = 1 << 20;

/// The consumer tag every probe channel has a consumer for.
pub const PROBE_CONSUMER_TAG: &str = "probe";

/// A connection's reader with channels 1..=`channels` open, each with one
/// consumer (tag [`PROBE_CONSUMER_TAG`]) that counts its deliveries.
pub struct ReaderProbe {
    conn: ConnShared,
    channels: Vec<Arc<ChannelState>>,
    demux: Demux,
    pending: Vec<u8>,
    deliveries: Arc<AtomicU64>,
    too_large: Arc<AtomicU64>,
    ended: Option<String>,
    /// Feeds that showed the broker lives (what the heartbeat check sees).
    signs_of_life: u64,
}

/// Counts deliveries, and those marked `too_large`.
struct CountingSink(Arc<AtomicU64>, Arc<AtomicU64>);

impl DeliverySink for CountingSink {
    fn deliver(&mut self, delivery: Delivery) -> Result<(), String> {
        self.0.fetch_add(1, Ordering::Relaxed);
        if delivery.too_large.is_some() {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
    fn end_of_burst(&mut self) {}
}

impl ReaderProbe {
    pub fn new(frame_max: usize, channels: u16) -> ReaderProbe {
        // RabbitMQ's channel_max; channels 1..=`channels` are opened.
        let conn = ConnShared::new(None, 2047, frame_max, PROBE_MAX_BODY);
        let deliveries = Arc::new(AtomicU64::new(0));
        let too_large = Arc::new(AtomicU64::new(0));
        let mut open = Vec::new();
        for _ in 0..channels {
            let Ok(ch) = conn.allocate_channel() else {
                break;
            };
            // Confirms of tags up to here are valid.
            ch.published.store(PROBE_PUBLISHED, Ordering::Relaxed);
            let sink = Box::new(CountingSink(deliveries.clone(), too_large.clone()));
            ch.receivers()
                .consumers
                .insert(PROBE_CONSUMER_TAG.as_bytes().to_vec(), sink);
            open.push(ch);
        }
        ReaderProbe {
            conn,
            channels: open,
            demux: Demux::default(),
            pending: Vec::new(),
            deliveries,
            too_large,
            ended: None,
            signs_of_life: 0,
        }
    }

    /// Closes channel `id` as our channel.close does (its id stays known).
    pub fn close_channel(&mut self, id: u16) {
        self.conn.remove_channel(id);
        if let Some(ch) = self.channels.iter().find(|c| c.id == id) {
            ch.close_local(super::Failure::Link("closed by the probe".into()));
        }
    }

    /// Feeds bytes as the socket would give them. Err once the reader
    /// would have ended the connection (and for every later call).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        if let Some(why) = &self.ended {
            return Err(why.clone());
        }
        self.pending.extend_from_slice(bytes);
        match self.demux.feed(&self.conn, &self.pending) {
            Ok(fed) => {
                self.pending.drain(..fed.used);
                self.signs_of_life += u64::from(fed.alive);
                Ok(())
            }
            Err(end) => {
                let why = match end {
                    End::Closed(why) => why,
                    End::Broken(v) => self.conn.broke_protocol(&v),
                };
                // As the connection's task does once its reader ended.
                self.conn.die(why.clone());
                self.ended = Some(why.clone());
                Err(why)
            }
        }
    }

    /// Deliveries handed to the consumers so far.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Of those, deliveries marked `too_large` (to be rejected unread).
    pub fn too_large(&self) -> u64 {
        self.too_large.load(Ordering::Relaxed)
    }

    /// Feeds that counted as a sign of life for the heartbeat check.
    pub fn signs_of_life(&self) -> u64 {
        self.signs_of_life
    }

    /// Bytes held for an incomplete frame.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Confirms (acks, nacks, returns) queued for the publishers so far.
    pub fn confirms(&self) -> usize {
        let queued: usize = self.channels.iter().map(|c| lock(&c.confirms).len()).sum();
        queued
    }

    /// The reader's channel slots (for tests: a frame for a channel never
    /// opened must not allocate one).
    #[cfg(test)]
    fn demux_slots(&self) -> usize {
        self.demux.slots()
    }

    /// Bytes the reader wrote back (close-ok, rejects of unknown consumers...).
    pub fn output_len(&self) -> usize {
        self.conn.output.appending().frames().len()
    }
}

/// Runs every parser of the codec over `bytes`: split into frames at
/// `frame_max`, then each payload through each method and header parser,
/// whatever its type. Returns how many frames were whole.
pub fn parse_with_every_parser(mut bytes: &[u8], frame_max: usize) -> usize {
    let mut frames = 0;
    while let Ok((f, n)) = codec::parse_frame(bytes, frame_max) {
        frames += 1;
        let p = f.payload;
        let _ = codec::method_ids(p);
        let _ = codec::parse_confirm(p);
        let _ = codec::parse_deliver(p);
        let _ = codec::parse_header_body_size(p);
        let _ = codec::parse_method(p);
        bytes = &bytes[n..];
    }
    frames
}

#[cfg(test)]
mod tests;

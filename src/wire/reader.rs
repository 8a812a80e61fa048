//! The reader: reads many frames at once into a large buffer, parses them
//! in place, and dispatches each by channel. Connection-level methods are
//! handled here; a channel's frames go through its content assembly first
//! (`assembly.rs`), then to the channel: confirms to its queue, deliveries
//! to the consumer's sink, replies to the waiting call.

use super::assembly::{Assembly, Delivery, Event, Step};
use super::channel_state::{ChannelState, Confirm, Undelivered};
use super::codec::{self, RawFrame};
use super::props;
use super::shared::ConnShared;
use super::{channel_failure, describe_close, Violation};
use huge_header::Skip;
mod buffer;
mod slots;
pub(super) use buffer::ReadBuf;

mod huge_header;
use super::socket::Source;
use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The read buffer holds many frames, so one read syscall serves many.
const READ_BUFFER: usize = 256 * 1024;
/// A link that always has bytes would never give the runtime thread back
/// (reads that succeed do not wait): after this many bytes read without a
/// wait, the reader yields, so the publishers drain their confirms and the
/// writer and heartbeats run while a broker floods us.
pub(super) const YIELD_AFTER_BYTES: usize = 4 * READ_BUFFER;
/// Output waiting for the socket beyond the largest message: the broker
/// stopped reading.
const OUTPUT_BACKLOG: u64 = 64 << 20;

/// Reads and dispatches frames until the link fails or a frame ends it;
/// returns why.
pub(super) async fn read_loop(
    conn: &ConnShared,
    mut stream: impl Source,
    leftover: Vec<u8>,
) -> String {
    let mut rb = ReadBuf::new(conn, &leftover);
    // Bytes read since the last yield.
    let mut unyielded = 0usize;
    loop {
        if let Err(why) = rb.handle(conn) {
            return why;
        }
        if unyielded >= YIELD_AFTER_BYTES {
            unyielded = 0;
            tokio::task::yield_now().await;
        }
        let mut waited = false;
        let got = stream.read_some(rb.space(), &mut waited).await;
        if waited {
            unyielded = 0;
        }
        match got {
            Ok(0) => return "the broker closed the connection (EOF)".into(),
            Ok(n) => {
                rb.filled(n);
                unyielded += n;
            }
            Err(e) => return format!("I/O error: {e}"),
        }
    }
}

/// The reader's own view of the channels, by id: the channel (no lookup in
/// the connection's table per frame) and its content assembly (touched by
/// the reader alone, so no lock). A slot is refreshed when its channel
/// closed; the slot of a closed channel that gets no more frames keeps it
/// until its id is reused or the connection ends (at most channel_max).
#[derive(Default)]
pub(super) struct Demux {
    channels: Vec<Option<ChannelReader>>,
    /// Channels that got deliveries in this burst.
    delivered: Vec<u16>,
    /// A content header over the header bound, being skipped.
    skipping: Option<Skip>,
}

struct ChannelReader {
    ch: Arc<ChannelState>,
    assembly: Assembly,
    /// The tag of the channel's last delivery (0: none yet).
    last_delivery_tag: u64,
    /// In `Demux::delivered`.
    delivered: bool,
}

/// Why the reader ends the connection.
#[derive(Debug)]
pub(super) enum End {
    /// The broker closed it (answered with close-ok), or confirmed our close.
    Closed(String),
    /// The broker broke the protocol or one of our limits.
    Broken(Violation),
}

impl From<Violation> for End {
    fn from(v: Violation) -> End {
        End::Broken(v)
    }
}

/// What [`Demux::feed`] did with the bytes it was given.
pub(super) struct Fed {
    /// Bytes of whole frames, handled.
    pub(super) used: usize,
    /// The broker showed it lives: a whole frame, or a stretch of a skipped
    /// header (see `huge_header::ALIVE_EVERY`).
    pub(super) alive: bool,
    /// The length the incomplete frame after them needs, counted from its
    /// start (what to have in the buffer before feeding again).
    pub(super) need: usize,
}

impl Demux {
    /// Handles the whole frames at the start of `buf`, then lets the
    /// consumers that got deliveries run. Err ends the connection.
    pub(super) fn feed(&mut self, conn: &ConnShared, buf: &[u8]) -> Result<Fed, End> {
        let (mut used, mut alive) = (0, false);
        let result = loop {
            if self.skipping.is_some() {
                match self.skip(conn, &buf[used..]) {
                    Ok(skipped) => {
                        used += skipped.used;
                        alive |= skipped.alive;
                    }
                    Err(why) => break Err(why),
                }
                if self.skipping.is_some() {
                    break Ok(Fed {
                        used,
                        alive,
                        need: 1,
                    });
                }
            }
            match codec::parse_frame(&buf[used..], conn.frame_max) {
                Ok((f, n)) => {
                    if let Err(why) = self.frame(conn, f) {
                        break Err(why);
                    }
                    used += n;
                    alive = true;
                }
                Err(codec::ParseError::Incomplete(need)) => break Ok(Fed { used, alive, need }),
                Err(codec::ParseError::Invalid(e)) => break Err(Violation::frame(e).into()),
                Err(codec::ParseError::HugeHeader {
                    channel,
                    total,
                    body_size,
                }) => {
                    self.skipping = Some(Skip {
                        channel,
                        left: total,
                        total,
                        body_size,
                        unproven: 0,
                    });
                }
            }
        };
        self.end_of_burst();
        result
    }

    /// Handles one frame; Err ends the connection.
    fn frame(&mut self, conn: &ConnShared, f: RawFrame<'_>) -> Result<(), End> {
        match f.kind {
            codec::FRAME_HEARTBEAT => Ok(()),
            codec::FRAME_METHOD if f.channel == 0 => connection_method(conn, f.payload),
            codec::FRAME_METHOD | codec::FRAME_HEADER | codec::FRAME_BODY => {
                let id = f.channel;
                let Some(slot) = self.frame_target(conn, id)? else {
                    return Ok(());
                };
                if slot.channel_frame(conn, f)? && !slot.delivered {
                    slot.delivered = true;
                    self.delivered.push(id);
                }
                Ok(())
            }
            other => Err(Violation::frame(format!("unknown frame type {other}")).into()),
        }
    }

    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.channels.len()
    }

    /// After a burst of frames: let the consumers that got deliveries run.
    fn end_of_burst(&mut self) {
        for id in self.delivered.drain(..) {
            if let Some(Some(slot)) = self.channels.get_mut(usize::from(id)) {
                slot.delivered = false;
                slot.ch.wake_consumers();
            }
        }
    }
}

impl ChannelReader {
    /// One frame of this channel; true when it completed a delivery.
    fn channel_frame(&mut self, conn: &ConnShared, f: RawFrame<'_>) -> Result<bool, End> {
        let id = self.ch.id;
        let syntax = |what: &str| Violation::syntax(format!("a bad {what} on channel {id}"));
        let step = match f.kind {
            codec::FRAME_METHOD => match codec::method_ids(f.payload) {
                Some((codec::CLASS_BASIC, m @ codec::METHOD_BASIC_ACK))
                | Some((codec::CLASS_BASIC, m @ codec::METHOD_BASIC_NACK)) => {
                    self.step(Event::Method)?;
                    let (tag, multiple) =
                        codec::parse_confirm(f.payload).ok_or_else(|| syntax("basic.ack"))?;
                    self.check_confirm(tag)?;
                    let nack = m == codec::METHOD_BASIC_NACK;
                    self.ch.push_confirm(Confirm::Settled {
                        tag,
                        multiple,
                        nack,
                    });
                    return Ok(false);
                }
                Some((codec::CLASS_BASIC, codec::METHOD_BASIC_DELIVER)) => {
                    let d =
                        codec::parse_deliver(f.payload).ok_or_else(|| syntax("basic.deliver"))?;
                    self.check_delivery_tag(d.delivery_tag)?;
                    self.step(Event::Deliver(&d))?
                }
                _ => return self.other_method(conn, f.payload).map(|()| false),
            },
            codec::FRAME_HEADER => {
                let body_size = codec::parse_header_body_size(f.payload)
                    .ok_or_else(|| syntax("content header"))?;
                self.step(Event::Header {
                    body_size,
                    limit: conn.max_body,
                    properties: props::checked(f.payload.get(12..).unwrap_or_default()),
                })?
            }
            _ => self.step(Event::Body(f.payload))?,
        };
        Ok(match step {
            Step::Complete(delivery) => deliver(conn, &self.ch, delivery)?,
            Step::Method | Step::Incomplete | Step::Returned => false,
        })
    }

    fn step(&mut self, event: Event<'_>) -> Result<Step, Violation> {
        self.assembly
            .step(event)
            .map_err(|e| Violation::unexpected_frame(format!("{e} on channel {}", self.ch.id)))
    }

    /// A confirm names a publish we sent: the confirm window must never
    /// settle a message the broker never saw.
    fn check_confirm(&self, tag: u64) -> Result<(), Violation> {
        let published = self.ch.published.load(Ordering::Acquire);
        if tag > published {
            return Err(Violation::command_invalid(format!(
                "a confirm of delivery tag {tag} on channel {}, which has published {published}",
                self.ch.id
            )));
        }
        Ok(())
    }

    /// A channel's delivery tags count up from 1 (the settle book relies on
    /// it and keeps a slot per tag).
    fn check_delivery_tag(&mut self, tag: u64) -> Result<(), Violation> {
        let expected = self.last_delivery_tag.wrapping_add(1);
        if tag != expected {
            return Err(Violation::command_invalid(format!(
                "delivery tag {tag} on channel {} where {expected} was due",
                self.ch.id
            )));
        }
        self.last_delivery_tag = tag;
        Ok(())
    }

    /// The rare methods, parsed by amq-protocol.
    fn other_method(&mut self, conn: &ConnShared, payload: &[u8]) -> Result<(), End> {
        use basic::AMQPMethod as B;
        let ch = self.ch.clone();
        let method = codec::parse_method(payload)?;
        match method {
            AMQPClass::Basic(B::Return(r)) => {
                self.step(Event::Return)?;
                // In order with the confirms: before this message's ack.
                // Its content follows, read and dropped by the assembly.
                ch.push_confirm(Confirm::Returned {
                    code: r.reply_code,
                    text: describe_close(r.reply_code, r.reply_text.as_str()),
                    routing_key: r.routing_key.as_str().as_bytes().to_vec(),
                });
                Ok(())
            }
            AMQPClass::Basic(B::GetOk(_)) => Err(Violation::command_invalid(format!(
                "basic.get-ok on channel {} (we never send basic.get)",
                ch.id
            ))
            .into()),
            AMQPClass::Connection(_) => Err(Violation::command_invalid(format!(
                "a connection method on channel {}",
                ch.id
            ))
            .into()),
            method => {
                self.step(Event::Method)?;
                channel_method(conn, &ch, method);
                Ok(())
            }
        }
    }
}

/// Hands a whole delivery to its consumer; one whose consumer is cancelled
/// goes back to the queue. True when a consumer got it.
fn deliver(conn: &ConnShared, ch: &ChannelState, delivery: Delivery) -> Result<bool, End> {
    match ch.deliver(delivery) {
        Ok(()) => Ok(true),
        Err(Undelivered::NoConsumer(delivery)) => {
            let (id, tag) = (ch.id, delivery.delivery_tag);
            (conn.output).append(Some(&ch.closed), |o| codec::encode_reject(o, id, tag, true));
            Ok(false)
        }
        Err(Undelivered::Refused(why)) => Err(Violation::command_invalid(why).into()),
    }
}

/// A method on a channel, other than the data path's: a close, a flow, a
/// consumer cancelled by the broker, or the reply to the waiting call.
fn channel_method(conn: &ConnShared, ch: &ChannelState, method: AMQPClass) {
    use basic::AMQPMethod as B;
    use channel::AMQPMethod as C;
    match method {
        AMQPClass::Channel(C::Close(c)) => {
            let why = channel_failure(c.reply_code, c.reply_text.as_str());
            {
                // close-ok, and closed for everything else, atomically.
                let mut out = conn.output.appending();
                if !out.is_closed() {
                    let ok = AMQPClass::Channel(C::CloseOk(channel::CloseOk {}));
                    codec::encode_method(out.frames(), ch.id, ok);
                }
                ch.closed.store(true, Ordering::Relaxed);
            }
            conn.remove_channel(ch.id);
            ch.close_local(why);
        }
        AMQPClass::Channel(C::Flow(f)) => {
            let ok = AMQPClass::Channel(C::FlowOk(channel::FlowOk { active: f.active }));
            (conn.output).append(Some(&ch.closed), |o| codec::encode_method(o, ch.id, ok));
        }
        AMQPClass::Basic(B::Cancel(c)) => {
            // The broker cancelled a consumer (its queue was deleted).
            let tag = c.consumer_tag.as_str();
            warn!("the broker cancelled consumer {tag} (queue deleted?)");
            ch.remove_consumer(tag.as_bytes());
            // Reopen the channel: the queue is declared again and the
            // consumers restart.
            ch.push_confirm(Confirm::TopologyLost(format!(
                "the broker cancelled consumer {tag} (its queue was deleted?)"
            )));
        }
        reply => {
            if let Err(reply) = ch.reply(reply) {
                debug!("channel {}: unexpected {reply:?}", ch.id);
            }
        }
    }
}

fn connection_method(conn: &ConnShared, payload: &[u8]) -> Result<(), End> {
    use connection::AMQPMethod as M;
    match codec::parse_method(payload)? {
        AMQPClass::Connection(M::Close(c)) => {
            let text = describe_close(c.reply_code, c.reply_text.as_str());
            // Before anything can fail: when the close names the method
            // that caused it (e.g. 503 for an unknown exchange type), pending
            // calls and channels learn the broker's refusal, not a lost
            // link. A close that names none (320 CONNECTION_FORCED by an
            // operator or a shutdown) stays a lost link: retried, never
            // reported as a refusal of what was pending.
            if c.class_id != 0 {
                conn.refused(c.reply_code, text.clone());
            }
            let ok = AMQPClass::Connection(M::CloseOk(connection::CloseOk {}));
            conn.output.append(None, |o| codec::encode_method(o, 0, ok));
            conn.output.close();
            Err(End::Closed(format!(
                "the broker closed the connection: {text}"
            )))
        }
        AMQPClass::Connection(M::CloseOk(_)) => Err(End::Closed("connection closed".into())),
        AMQPClass::Connection(M::Blocked(b)) => {
            warn!("the broker blocked publishing: {}", b.reason.as_str());
            conn.blocked.store(true, Ordering::Relaxed);
            Ok(())
        }
        AMQPClass::Connection(M::Unblocked(_)) => {
            info!("the broker unblocked publishing");
            conn.blocked.store(false, Ordering::Relaxed);
            Ok(())
        }
        AMQPClass::Connection(other) => {
            debug!("ignored connection method {other:?}");
            Ok(())
        }
        _ => Err(Violation::command_invalid("a channel's method on channel 0").into()),
    }
}

//! AMQP 0-9-1 frames. The frames of the data path (basic.publish with its
//! header and body, basic.ack/nack/reject, basic.deliver) are encoded and
//! parsed by hand, straight from and into byte buffers, with no allocation
//! but the delivery's own. Every other method goes through amq-protocol's
//! generated codec (lapin's protocol crate), which is exact but allocates.

use amq_protocol::frame::{gen_frame, AMQPFrame};
use amq_protocol::protocol::AMQPClass;

use super::{inbound, Violation};

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Type, channel, size before the payload; the end octet after it.
pub const FRAME_OVERHEAD: usize = 8;

pub const CLASS_BASIC: u16 = 60;
const METHOD_BASIC_PUBLISH: u16 = 40;
pub const METHOD_BASIC_DELIVER: u16 = 60;
pub const METHOD_BASIC_ACK: u16 = 80;
const METHOD_BASIC_REJECT: u16 = 90;
pub const METHOD_BASIC_NACK: u16 = 120;

pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// One frame borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    pub kind: u8,
    pub channel: u16,
    pub payload: &'a [u8],
}

/// The largest content header frame taken in whole, whatever frame_max
/// says (or frame_max, if larger). RabbitMQ never splits a content header:
/// headers grown in the broker (x-death after dead-lettering, large
/// application headers) can exceed the frame_max it agreed to. A larger
/// header is skipped as it arrives (never buffered) and its delivery
/// rejected unread.
pub const HEADER_FRAME_MAX: usize = 1 << 20;

/// The largest content header frame skipped: RabbitMQ's own ceiling on a
/// message (`max_message_size` cannot exceed 512 MiB). Larger is a
/// garbled size, not a header.
pub const HEADER_SKIP_MAX: usize = 512 << 20;

/// A content header frame's payload starts with class (2), weight (2) and
/// body size (8).
const HEADER_PREFIX: usize = 12;

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not a whole frame yet; this many bytes are needed in all.
    Incomplete(usize),
    /// The stream is not AMQP (bad frame end, size over the limit...).
    Invalid(String),
    /// A content header frame over [`HEADER_FRAME_MAX`] (and frame_max):
    /// `total` bytes in all (the end octet included), announcing
    /// `body_size`. To be skipped as it arrives, never buffered.
    HugeHeader {
        channel: u16,
        total: usize,
        body_size: u64,
    },
}

/// Splits the next frame off `buf`; returns it and its total length.
/// Content headers may exceed `frame_max` up to [`HEADER_FRAME_MAX`].
pub fn parse_frame(buf: &[u8], frame_max: usize) -> Result<(RawFrame<'_>, usize), ParseError> {
    if buf.len() < 7 {
        return Err(ParseError::Incomplete(7));
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let limit = match kind {
        FRAME_HEADER => frame_max.max(HEADER_FRAME_MAX),
        _ => frame_max.max(4096),
    };
    if size.saturating_add(FRAME_OVERHEAD) > limit {
        if kind == FRAME_HEADER && (HEADER_PREFIX..=HEADER_SKIP_MAX).contains(&size) {
            let Some(prefix) = buf.get(7..7 + HEADER_PREFIX) else {
                return Err(ParseError::Incomplete(7 + HEADER_PREFIX));
            };
            return Err(ParseError::HugeHeader {
                channel,
                total: size + FRAME_OVERHEAD,
                body_size: u64::from_be_bytes(prefix[4..12].try_into().unwrap_or([0; 8])),
            });
        }
        return Err(ParseError::Invalid(format!(
            "frame of {size} bytes exceeds frame_max {frame_max}"
        )));
    }
    let total = 7 + size + 1;
    if buf.len() < total {
        return Err(ParseError::Incomplete(total));
    }
    if buf[total - 1] != FRAME_END {
        return Err(ParseError::Invalid(format!(
            "bad frame end 0x{:02x} (frame type {kind}, channel {channel})",
            buf[total - 1]
        )));
    }
    Ok((
        RawFrame {
            kind,
            channel,
            payload: &buf[7..7 + size],
        },
        total,
    ))
}

/// A big-endian reader over a method payload.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|s| u64::from_be_bytes(s.try_into().unwrap_or([0; 8])))
    }
    pub fn short_str(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
}

/// The class and method ids of a method frame's payload.
pub fn method_ids(payload: &[u8]) -> Option<(u16, u16)> {
    let mut c = Cursor::new(payload);
    Some((c.u16()?, c.u16()?))
}

/// basic.ack / basic.nack from the broker: (delivery tag, multiple).
pub fn parse_confirm(payload: &[u8]) -> Option<(u64, bool)> {
    let mut c = Cursor::new(payload.get(4..)?);
    let tag = c.u64()?;
    let bits = c.u8()?;
    Some((tag, bits & 1 != 0))
}

/// basic.deliver, borrowed from the frame.
pub struct Deliver<'a> {
    pub consumer_tag: &'a [u8],
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: &'a [u8],
    pub routing_key: &'a [u8],
}

pub fn parse_deliver(payload: &[u8]) -> Option<Deliver<'_>> {
    let mut c = Cursor::new(payload.get(4..)?);
    let consumer_tag = c.short_str()?;
    let delivery_tag = c.u64()?;
    let redelivered = c.u8()? & 1 != 0;
    let exchange = c.short_str()?;
    let routing_key = c.short_str()?;
    Some(Deliver {
        consumer_tag,
        delivery_tag,
        redelivered,
        exchange,
        routing_key,
    })
}

/// The body size announced by a content header frame.
pub fn parse_header_body_size(payload: &[u8]) -> Option<u64> {
    let mut c = Cursor::new(payload.get(4..)?);
    c.u64()
}

fn frame_start(out: &mut Vec<u8>, kind: u8, channel: u16) -> usize {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

fn frame_end(out: &mut Vec<u8>, size_at: usize) {
    let size = (out.len() - size_at - 4) as u32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out.push(FRAME_END);
}

fn short_str(out: &mut Vec<u8>, s: &[u8]) {
    // Callers validate names to at most 255 bytes.
    let n = s.len().min(255);
    out.push(n as u8);
    out.extend_from_slice(&s[..n]);
}

/// Where and how a queue's messages are published.
#[derive(Clone, Copy, Debug)]
pub struct PublishTarget<'a> {
    pub exchange: &'a [u8],
    pub routing_key: &'a [u8],
    /// delivery-mode 2, the only property we send.
    pub persistent: bool,
    /// A message that reaches no queue comes back as basic.return (before
    /// its confirm) instead of being confirmed and dropped.
    pub mandatory: bool,
}

/// What one message adds to its queue's `PublishTarget`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outgoing<'a> {
    /// Its own routing key (None: the target's).
    pub routing_key: Option<&'a [u8]>,
    /// Its property bytes as encoded by `props::Encoder` (flags, then
    /// fields), written as they are; empty: the target's defaults.
    pub properties: &'a [u8],
}

/// basic.publish + content header + body frames (split at `frame_max`).
pub fn encode_publish(
    out: &mut Vec<u8>,
    channel: u16,
    target: &PublishTarget,
    msg: Outgoing<'_>,
    body: &[u8],
    frame_max: usize,
) {
    let at = frame_start(out, FRAME_METHOD, channel);
    out.extend_from_slice(&CLASS_BASIC.to_be_bytes());
    out.extend_from_slice(&METHOD_BASIC_PUBLISH.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // reserved (ticket)
    short_str(out, target.exchange);
    short_str(out, msg.routing_key.unwrap_or(target.routing_key));
    out.push(target.mandatory as u8); // bit 0 mandatory; immediate (bit 1) off
    frame_end(out, at);

    let at = frame_start(out, FRAME_HEADER, channel);
    out.extend_from_slice(&CLASS_BASIC.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // weight
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    if !msg.properties.is_empty() {
        out.extend_from_slice(msg.properties);
    } else if target.persistent {
        out.extend_from_slice(&0x1000u16.to_be_bytes()); // delivery-mode present
        out.push(2);
    } else {
        out.extend_from_slice(&[0, 0]);
    }
    frame_end(out, at);

    let chunk = frame_max.saturating_sub(FRAME_OVERHEAD).max(1);
    for part in body.chunks(chunk) {
        let at = frame_start(out, FRAME_BODY, channel);
        out.extend_from_slice(part);
        frame_end(out, at);
    }
}

/// basic.ack (`multiple` settles every tag up to `tag`).
pub fn encode_ack(out: &mut Vec<u8>, channel: u16, tag: u64, multiple: bool) {
    encode_tag_method(out, channel, METHOD_BASIC_ACK, tag, multiple as u8);
}

/// basic.reject; `requeue` false dead-letters (or drops) the message.
pub fn encode_reject(out: &mut Vec<u8>, channel: u16, tag: u64, requeue: bool) {
    encode_tag_method(out, channel, METHOD_BASIC_REJECT, tag, requeue as u8);
}

fn encode_tag_method(out: &mut Vec<u8>, channel: u16, method: u16, tag: u64, bits: u8) {
    let at = frame_start(out, FRAME_METHOD, channel);
    out.extend_from_slice(&CLASS_BASIC.to_be_bytes());
    out.extend_from_slice(&method.to_be_bytes());
    out.extend_from_slice(&tag.to_be_bytes());
    out.push(bits);
    frame_end(out, at);
}

pub fn encode_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// Any other method, through amq-protocol's generated encoder.
pub fn encode_method(out: &mut Vec<u8>, channel: u16, method: AMQPClass) {
    let frame = AMQPFrame::Method(channel, method);
    // Into a fresh Vec (which cannot fail), so `out` is never disturbed.
    if let Ok(v) = cookie_factory::gen_simple(gen_frame(&frame), Vec::new()) {
        out.extend_from_slice(&v);
    }
}

/// Any other method, through amq-protocol's generated parser, once
/// `inbound` has checked that a server may send it and that its tables are
/// within our limits.
pub fn parse_method(payload: &[u8]) -> Result<AMQPClass, Violation> {
    inbound::check_server_method(payload)?;
    match amq_protocol::protocol::parse_class(payload) {
        Ok((_, m)) => Ok(m),
        Err(_) => Err(Violation::syntax(match method_ids(payload) {
            Some((c, m)) => format!("method {c}.{m} does not parse"),
            None => "a method that does not parse".into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::{parse_frame as ap_parse, AMQPContentHeader};
    use amq_protocol::protocol::{basic, BasicProperties};

    fn all_frames(mut buf: &[u8]) -> Vec<AMQPFrame> {
        let mut v = Vec::new();
        while !buf.is_empty() {
            let (rest, f) = ap_parse(buf).expect("amq-protocol parses our frame");
            v.push(f);
            buf = rest;
        }
        v
    }

    #[test]
    fn publish_frames_match_amq_protocol() {
        for (persistent, mandatory, len, frame_max) in [
            (false, true, 0usize, 4096usize),
            (true, true, 64, 4096),
            (false, false, 4088, 4096),
            (true, false, 10_000, 4096),
        ] {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            let target = PublishTarget {
                exchange: b"ex",
                routing_key: b"rk",
                persistent,
                mandatory,
            };
            encode_publish(&mut out, 7, &target, Outgoing::default(), &body, frame_max);
            let frames = all_frames(&out);
            assert_eq!(
                frames[0],
                AMQPFrame::Method(
                    7,
                    AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                        exchange: "ex".into(),
                        routing_key: "rk".into(),
                        mandatory,
                        immediate: false,
                    }))
                )
            );
            let mut props = BasicProperties::default();
            if persistent {
                props = props.with_delivery_mode(2);
            }
            assert_eq!(
                frames[1],
                AMQPFrame::Header(
                    7,
                    AMQPContentHeader {
                        class_id: 60,
                        body_size: len as u64,
                        properties: props,
                    }
                )
            );
            let mut got = Vec::new();
            for f in &frames[2..] {
                match f {
                    AMQPFrame::Body(7, d) => {
                        assert!(d.len() + FRAME_OVERHEAD <= frame_max);
                        got.extend_from_slice(d)
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(got, body);
        }
    }

    #[test]
    fn ack_reject_match_amq_protocol() {
        let mut out = Vec::new();
        encode_ack(&mut out, 3, 1 << 40, true);
        encode_reject(&mut out, 3, 9, false);
        encode_heartbeat(&mut out);
        let frames = all_frames(&out);
        assert_eq!(
            frames[0],
            AMQPFrame::Method(
                3,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: 1 << 40,
                    multiple: true
                }))
            )
        );
        assert_eq!(
            frames[1],
            AMQPFrame::Method(
                3,
                AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
                    delivery_tag: 9,
                    requeue: false
                }))
            )
        );
        assert_eq!(frames[2], AMQPFrame::Heartbeat);
    }

    #[test]
    fn inbound_hot_frames_parse_like_amq_protocol() {
        let mut out = Vec::new();
        let deliver = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "ctag".into(),
            delivery_tag: 77,
            redelivered: true,
            exchange: "e".into(),
            routing_key: "key".into(),
        }));
        encode_method(&mut out, 5, deliver);
        let nack = AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: 12,
            multiple: true,
            requeue: true,
        }));
        encode_method(&mut out, 5, nack);
        let (f, n) = parse_frame(&out, 4096).unwrap();
        assert_eq!((f.kind, f.channel), (FRAME_METHOD, 5));
        assert_eq!(
            method_ids(f.payload),
            Some((CLASS_BASIC, METHOD_BASIC_DELIVER))
        );
        let d = parse_deliver(f.payload).unwrap();
        assert_eq!(d.consumer_tag, b"ctag");
        assert_eq!((d.delivery_tag, d.redelivered), (77, true));
        assert_eq!((d.exchange, d.routing_key), (&b"e"[..], &b"key"[..]));
        let (f2, _) = parse_frame(&out[n..], 4096).unwrap();
        assert_eq!(
            method_ids(f2.payload),
            Some((CLASS_BASIC, METHOD_BASIC_NACK))
        );
        assert_eq!(parse_confirm(f2.payload), Some((12, true)));
        // Incomplete and corrupt input.
        assert_eq!(parse_frame(&out[..3], 4096), Err(ParseError::Incomplete(7)));
        assert!(
            matches!(parse_frame(&out[..n - 1], 4096), Err(ParseError::Incomplete(t)) if t == n)
        );
        let mut bad = out[..n].to_vec();
        bad[n - 1] = 0;
        assert!(matches!(
            parse_frame(&bad, 4096),
            Err(ParseError::Invalid(_))
        ));
        assert!(parse_deliver(&[0, 60]).is_none());
    }
}

//! AMQP 0-9-1 frames, by hand: splitting a byte stream into frames, and encoding the methods the
//! hostile proxy forges (deliveries, content headers, acks, closes, nested field arrays).
//! By hand rather than with amq-protocol so that the proxy can write what no encoder would:
//! wrong sizes, wrong end bytes, unknown types, absurd body sizes, 1,400-deep nesting.

pub const METHOD: u8 = 1;
pub const HEADER: u8 = 2;
pub const BODY: u8 = 3;
pub const FRAME_END: u8 = 0xCE;

pub type MethodId = (u16, u16);
pub const CONNECTION_START: MethodId = (10, 10);
pub const CONNECTION_TUNE: MethodId = (10, 30);
pub const CONNECTION_OPEN_OK: MethodId = (10, 41);
pub const CHANNEL_OPEN: MethodId = (20, 10);
pub const CHANNEL_CLOSE: MethodId = (20, 40);
pub const QUEUE_DECLARE: MethodId = (50, 10);
pub const QUEUE_DECLARE_OK: MethodId = (50, 11);
pub const BASIC_QOS_OK: MethodId = (60, 11);
pub const BASIC_PUBLISH: MethodId = (60, 40);
pub const BASIC_DELIVER: MethodId = (60, 60);
pub const BASIC_ACK: MethodId = (60, 80);
pub const BASIC_NACK: MethodId = (60, 120);
pub const CONFIRM_SELECT: MethodId = (85, 10);
pub const CONFIRM_SELECT_OK: MethodId = (85, 11);

#[derive(Clone, Debug)]
pub struct Frame {
    pub typ: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(typ: u8, channel: u16, payload: Vec<u8>) -> Frame {
        Frame {
            typ,
            channel,
            payload,
        }
    }

    /// A method frame: class and method id, then `args`.
    pub fn method(channel: u16, m: MethodId, args: &[u8]) -> Frame {
        let mut p = Vec::with_capacity(4 + args.len());
        p.extend_from_slice(&m.0.to_be_bytes());
        p.extend_from_slice(&m.1.to_be_bytes());
        p.extend_from_slice(args);
        Frame::new(METHOD, channel, p)
    }

    /// (class, method) of a method frame.
    pub fn method_id(&self) -> Option<MethodId> {
        (self.typ == METHOD && self.payload.len() >= 4).then(|| {
            (
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                u16::from_be_bytes([self.payload[2], self.payload[3]]),
            )
        })
    }

    pub fn is(&self, m: MethodId) -> bool {
        self.method_id() == Some(m)
    }

    /// The frame as on the wire.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with(self.payload.len() as u32, FRAME_END)
    }

    /// The frame with a size field and end byte of our choosing (the payload as it is).
    pub fn encode_with(&self, size: u32, end: u8) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + self.payload.len());
        v.push(self.typ);
        v.extend_from_slice(&self.channel.to_be_bytes());
        v.extend_from_slice(&size.to_be_bytes());
        v.extend_from_slice(&self.payload);
        v.push(end);
        v
    }
}

/// The first whole frame of `buf` and the bytes it used, or None if it is not all there.
/// Only for well-formed streams (the real broker's and the library's).
pub fn split(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 7 {
        return None;
    }
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let total = 7 + size + 1;
    if buf.len() < total {
        return None;
    }
    assert_eq!(
        buf[total - 1],
        FRAME_END,
        "the proxy's peer sent a malformed frame"
    );
    let f = Frame::new(
        buf[0],
        u16::from_be_bytes([buf[1], buf[2]]),
        buf[7..7 + size].to_vec(),
    );
    Some((f, total))
}

pub fn shortstr(v: &mut Vec<u8>, s: &[u8]) {
    v.push(s.len() as u8);
    v.extend_from_slice(s);
}

/// (delivery tag, multiple) of basic.ack / basic.nack.
pub fn ack_fields(f: &Frame) -> Option<(u64, bool)> {
    let p = f.payload.get(4..13)?;
    Some((
        u64::from_be_bytes(p[..8].try_into().unwrap()),
        p[8] & 1 != 0,
    ))
}

pub fn ack(channel: u16, tag: u64, multiple: bool) -> Frame {
    let mut a = tag.to_be_bytes().to_vec();
    a.push(multiple as u8);
    Frame::method(channel, BASIC_ACK, &a)
}

pub fn nack(channel: u16, tag: u64, multiple: bool, requeue: bool) -> Frame {
    let mut a = tag.to_be_bytes().to_vec();
    a.push(multiple as u8 | (requeue as u8) << 1);
    Frame::method(channel, BASIC_NACK, &a)
}

/// (consumer tag, delivery tag) of a basic.deliver.
pub fn deliver_fields(f: &Frame) -> Option<(Vec<u8>, u64)> {
    let n = *f.payload.get(4)? as usize;
    let tag = f.payload.get(5..5 + n)?.to_vec();
    let dt = f.payload.get(5 + n..13 + n)?;
    Some((tag, u64::from_be_bytes(dt.try_into().unwrap())))
}

pub fn deliver(channel: u16, consumer_tag: &[u8], delivery_tag: u64, routing_key: &str) -> Frame {
    let mut a = Vec::new();
    shortstr(&mut a, consumer_tag);
    a.extend_from_slice(&delivery_tag.to_be_bytes());
    a.push(0); // redelivered
    shortstr(&mut a, b""); // exchange
    shortstr(&mut a, routing_key.as_bytes());
    Frame::method(channel, BASIC_DELIVER, &a)
}

/// A content header of class basic with no properties.
pub fn content_header(channel: u16, body_size: u64) -> Frame {
    let mut p = Vec::new();
    p.extend_from_slice(&60u16.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes()); // weight
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes()); // property flags
    Frame::new(HEADER, channel, p)
}

pub fn body(channel: u16, bytes: &[u8]) -> Frame {
    Frame::new(BODY, channel, bytes.to_vec())
}

/// A whole forged delivery: deliver + header + one body frame.
pub fn delivery(
    channel: u16,
    consumer_tag: &[u8],
    delivery_tag: u64,
    body_bytes: &[u8],
) -> Vec<u8> {
    let mut v = deliver(channel, consumer_tag, delivery_tag, "hostile").encode();
    v.extend(content_header(channel, body_bytes.len() as u64).encode());
    v.extend(body(channel, body_bytes).encode());
    v
}

pub fn channel_close(channel: u16, code: u16, text: &str) -> Frame {
    let mut a = code.to_be_bytes().to_vec();
    shortstr(&mut a, text.as_bytes());
    a.extend_from_slice(&[0, 0, 0, 0]); // class, method
    Frame::method(channel, CHANNEL_CLOSE, &a)
}

/// A field value 'A' (field array) nested `depth` deep, the innermost empty: 5 bytes a level.
pub fn nested_array(depth: usize) -> Vec<u8> {
    let mut v = vec![b'A', 0, 0, 0, 0];
    for _ in 1..depth {
        let mut outer = Vec::with_capacity(v.len() + 5);
        outer.push(b'A');
        outer.extend_from_slice(&(v.len() as u32).to_be_bytes());
        outer.extend_from_slice(&v);
        v = outer;
    }
    v
}

/// A field table with one entry, `key` -> `value` (an encoded field value).
pub fn table_with(key: &str, value: &[u8]) -> Vec<u8> {
    let mut entries = Vec::new();
    shortstr(&mut entries, key.as_bytes());
    entries.extend_from_slice(value);
    let mut t = (entries.len() as u32).to_be_bytes().to_vec();
    t.extend(entries);
    t
}

/// connection.start with `deep` added to the server properties (a real start frame rewritten).
pub fn start_with_entry(real: &Frame, key: &str, value: &[u8]) -> Frame {
    // class, method, version major, minor, then the server-properties table
    let p = &real.payload;
    let tlen = u32::from_be_bytes(p[6..10].try_into().unwrap()) as usize;
    let mut entry = Vec::new();
    shortstr(&mut entry, key.as_bytes());
    entry.extend_from_slice(value);
    let mut out = p[..6].to_vec();
    out.extend_from_slice(&((tlen + entry.len()) as u32).to_be_bytes());
    out.extend_from_slice(&p[10..10 + tlen]);
    out.extend(entry);
    out.extend_from_slice(&p[10 + tlen..]);
    Frame::new(METHOD, real.channel, out)
}

/// connection.tune with (channel_max, frame_max, heartbeat) replaced where Some.
pub fn tune_rewritten(
    real: &Frame,
    channel_max: Option<u16>,
    frame_max: Option<u32>,
    heartbeat: Option<u16>,
) -> Frame {
    let mut f = real.clone();
    let p = &mut f.payload;
    if let Some(c) = channel_max {
        p[4..6].copy_from_slice(&c.to_be_bytes());
    }
    if let Some(m) = frame_max {
        p[6..10].copy_from_slice(&m.to_be_bytes());
    }
    if let Some(h) = heartbeat {
        p[10..12].copy_from_slice(&h.to_be_bytes());
    }
    f
}

/// queue.declare (a client method) with `arguments` as its table.
pub fn queue_declare(channel: u16, queue: &str, arguments: &[u8]) -> Frame {
    let mut a = vec![0, 0]; // reserved
    shortstr(&mut a, queue.as_bytes());
    a.push(0); // bits
    a.extend_from_slice(arguments);
    Frame::method(channel, QUEUE_DECLARE, &a)
}

//! Message properties (basic class): the content header's property flags
//! and fields. Encoded once at publish time (`Encoder`, then stored with
//! the body and written by `codec::encode_publish` as they are) and parsed
//! on delivery (`decode`), header tables walked first by
//! `inbound::check_field_table` (iterative, depth-limited), so the
//! recursive decoder here never sees more than `MAX_TABLE_DEPTH` levels.

use super::inbound::{check_field_table, MAX_TABLE_DEPTH};

/// Property flag bits, in field order (AMQP 0-9-1 basic class).
pub const CONTENT_TYPE: u16 = 1 << 15;
pub const CONTENT_ENCODING: u16 = 1 << 14;
pub const HEADERS: u16 = 1 << 13;
pub const DELIVERY_MODE: u16 = 1 << 12;
pub const PRIORITY: u16 = 1 << 11;
pub const CORRELATION_ID: u16 = 1 << 10;
pub const REPLY_TO: u16 = 1 << 9;
pub const EXPIRATION: u16 = 1 << 8;
pub const MESSAGE_ID: u16 = 1 << 7;
pub const TIMESTAMP: u16 = 1 << 6;
pub const TYPE: u16 = 1 << 5;
pub const USER_ID: u16 = 1 << 4;
pub const APP_ID: u16 = 1 << 3;
pub const CLUSTER_ID: u16 = 1 << 2;

/// The short-string properties after delivery_mode/priority, in order
/// (timestamp sits between message_id and type).
const STR_FIELDS: [u16; 10] = [
    CONTENT_TYPE,
    CONTENT_ENCODING,
    CORRELATION_ID,
    REPLY_TO,
    EXPIRATION,
    MESSAGE_ID,
    TYPE,
    USER_ID,
    APP_ID,
    CLUSTER_ID,
];

/// A field value, as encoded or decoded (strings and bytes borrowed).
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    Void,
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// scale, value.
    Decimal(u8, u32),
    /// A long string ('S'): text by convention, not checked on read.
    Str(&'a [u8]),
    /// A byte array ('x').
    Bytes(&'a [u8]),
    /// Seconds since the epoch ('T').
    Timestamp(u64),
    Table(Vec<(&'a [u8], Value<'a>)>),
    Array(Vec<Value<'a>>),
}

/// The properties of a delivered message, borrowed from its header bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties<'a> {
    /// Which are present (the flag bits above).
    pub flags: u16,
    /// The short strings by flag, in `STR_FIELDS` order.
    strs: [&'a [u8]; 10],
    pub headers: Vec<(&'a [u8], Value<'a>)>,
    pub delivery_mode: u8,
    pub priority: u8,
    pub timestamp: u64,
}

impl<'a> Properties<'a> {
    /// A short-string property (`CONTENT_TYPE`, ...), if present.
    pub fn str(&self, flag: u16) -> Option<&'a [u8]> {
        let i = STR_FIELDS.iter().position(|&f| f == flag)?;
        (self.flags & flag != 0).then_some(self.strs[i])
    }
}

type Res<T> = Result<T, &'static str>;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or("truncated properties")?;
        let s = self.b.get(self.at..end).ok_or("truncated properties")?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }
    fn arr<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    fn short(&mut self) -> Res<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn long(&mut self) -> Res<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Parses the property part of a content header (flags, then fields).
/// Any header table that `check_field_table` accepts is read; the rest is
/// an error (the caller keeps the delivery and drops its properties).
pub fn decode(bytes: &[u8]) -> Res<Properties<'_>> {
    let mut r = Reader { b: bytes, at: 0 };
    let mut p = Properties::default();
    if bytes.is_empty() {
        return Ok(p);
    }
    let mut word = u16::from_be_bytes(r.arr()?);
    p.flags = word & !1;
    // Continuation words name no basic property: skipped.
    while word & 1 != 0 {
        word = u16::from_be_bytes(r.arr()?);
    }
    let mut next_str = 0;
    for flag in [CONTENT_TYPE, CONTENT_ENCODING] {
        read_str(&mut r, &mut p, flag, &mut next_str)?;
    }
    if p.flags & HEADERS != 0 {
        let len = check_field_table(&bytes[r.at..])?;
        let table = r.take(len)?;
        p.headers = decode_table(&table[4..], 0)?;
    }
    if p.flags & DELIVERY_MODE != 0 {
        p.delivery_mode = r.u8()?;
    }
    if p.flags & PRIORITY != 0 {
        p.priority = r.u8()?;
    }
    for flag in [CORRELATION_ID, REPLY_TO, EXPIRATION, MESSAGE_ID] {
        read_str(&mut r, &mut p, flag, &mut next_str)?;
    }
    if p.flags & TIMESTAMP != 0 {
        p.timestamp = u64::from_be_bytes(r.arr()?);
    }
    for flag in [TYPE, USER_ID, APP_ID, CLUSTER_ID] {
        read_str(&mut r, &mut p, flag, &mut next_str)?;
    }
    Ok(p)
}

/// How each property is laid out, in field order.
#[derive(Clone, Copy)]
enum Shape {
    Short,
    Table,
    Fixed(usize),
}

const LAYOUT: [(u16, Shape); 14] = [
    (CONTENT_TYPE, Shape::Short),
    (CONTENT_ENCODING, Shape::Short),
    (HEADERS, Shape::Table),
    (DELIVERY_MODE, Shape::Fixed(1)),
    (PRIORITY, Shape::Fixed(1)),
    (CORRELATION_ID, Shape::Short),
    (REPLY_TO, Shape::Short),
    (EXPIRATION, Shape::Short),
    (MESSAGE_ID, Shape::Short),
    (TIMESTAMP, Shape::Fixed(8)),
    (TYPE, Shape::Short),
    (USER_ID, Shape::Short),
    (APP_ID, Shape::Short),
    (CLUSTER_ID, Shape::Short),
];

/// Checks property bytes from the broker without allocating (tables by
/// `check_field_table`: iterative, depth-limited): what passes, `decode`
/// reads. Returns them, or nothing when they do not parse: the delivery is
/// kept (a WARN, once), never a reason to end the connection.
pub fn checked(bytes: &[u8]) -> &[u8] {
    match check(bytes) {
        Ok(()) => bytes,
        Err(e) => {
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                warn!("a delivery's properties do not parse ({e}): delivered without them (logged once)");
            }
            &[]
        }
    }
}

fn check(bytes: &[u8]) -> Res<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut r = Reader { b: bytes, at: 0 };
    let mut word = u16::from_be_bytes(r.arr()?);
    let flags = word;
    while word & 1 != 0 {
        word = u16::from_be_bytes(r.arr()?);
    }
    for (flag, shape) in LAYOUT {
        if flags & flag == 0 {
            continue;
        }
        match shape {
            Shape::Short => {
                r.short()?;
            }
            Shape::Table => {
                let n = check_field_table(&bytes[r.at..])?;
                r.take(n)?;
            }
            Shape::Fixed(n) => {
                r.take(n)?;
            }
        }
    }
    Ok(())
}

/// The message_id of property bytes that passed `checked`, without
/// decoding the rest: the fields before it are skipped by their lengths
/// (a header table by its size field). None when absent or unreadable.
pub fn message_id(bytes: &[u8]) -> Option<&[u8]> {
    let mut r = Reader { b: bytes, at: 0 };
    let mut word = u16::from_be_bytes(r.arr().ok()?);
    let flags = word;
    if flags & MESSAGE_ID == 0 {
        return None;
    }
    while word & 1 != 0 {
        word = u16::from_be_bytes(r.arr().ok()?);
    }
    for (flag, shape) in LAYOUT {
        if flags & flag == 0 {
            continue;
        }
        let field = match shape {
            Shape::Short => r.short(),
            Shape::Table => r.long(),
            Shape::Fixed(n) => r.take(n),
        }
        .ok()?;
        if flag == MESSAGE_ID {
            return Some(field);
        }
    }
    None
}

fn read_str<'a>(r: &mut Reader<'a>, p: &mut Properties<'a>, flag: u16, i: &mut usize) -> Res<()> {
    if p.flags & flag != 0 {
        p.strs[*i] = r.short()?;
    }
    *i += 1;
    Ok(())
}

/// A table's entries (without its size field). Depth is bounded by the
/// caller's `check_field_table` (this never goes deeper than it allowed).
fn decode_table(b: &[u8], depth: usize) -> Res<Vec<(&[u8], Value<'_>)>> {
    let mut r = Reader { b, at: 0 };
    let mut out = Vec::new();
    while r.at < b.len() {
        let key = r.short()?;
        out.push((key, decode_value(&mut r, depth)?));
    }
    Ok(out)
}

fn decode_value<'a>(r: &mut Reader<'a>, depth: usize) -> Res<Value<'a>> {
    if depth >= MAX_TABLE_DEPTH {
        return Err("tables nested too deep");
    }
    Ok(match r.u8()? {
        b'V' => Value::Void,
        b't' => Value::Bool(r.u8()? != 0),
        b'b' => Value::I8(r.u8()? as i8),
        b'B' => Value::U8(r.u8()?),
        // 'U' is what some clients write for a signed 16-bit integer.
        b's' | b'U' => Value::I16(i16::from_be_bytes(r.arr()?)),
        b'u' => Value::U16(u16::from_be_bytes(r.arr()?)),
        b'I' => Value::I32(i32::from_be_bytes(r.arr()?)),
        b'i' => Value::U32(r.u32()?),
        // 'L' (u64) is no AMQP 0-9-1 type RabbitMQ writes; read as signed.
        b'l' | b'L' => Value::I64(i64::from_be_bytes(r.arr()?)),
        b'f' => Value::F32(f32::from_be_bytes(r.arr()?)),
        b'd' => Value::F64(f64::from_be_bytes(r.arr()?)),
        b'D' => Value::Decimal(r.u8()?, r.u32()?),
        b'T' => Value::Timestamp(u64::from_be_bytes(r.arr()?)),
        b'S' => Value::Str(r.long()?),
        b'x' => Value::Bytes(r.long()?),
        b'F' => Value::Table(decode_table(r.long()?, depth + 1)?),
        b'A' => {
            let b = r.long()?;
            let mut ar = Reader { b, at: 0 };
            let mut v = Vec::new();
            while ar.at < b.len() {
                v.push(decode_value(&mut ar, depth + 1)?);
            }
            Value::Array(v)
        }
        _ => return Err("an unknown field value type"),
    })
}

/// Writes properties in field order: call the setters in the order of the
/// flag bits (`CONTENT_TYPE` first), then `finish`. Checks what AMQP
/// requires (short strings at most 255 bytes and UTF-8, nesting at most
/// `MAX_TABLE_DEPTH`) and says what was wrong.
pub struct Encoder<'o> {
    out: &'o mut Vec<u8>,
    flags_at: usize,
    flags: u16,
    /// Where each open table's or array's size field is.
    open: Vec<usize>,
}

impl<'o> Encoder<'o> {
    pub fn new(out: &'o mut Vec<u8>) -> Encoder<'o> {
        let flags_at = out.len();
        out.extend_from_slice(&[0, 0]);
        Encoder {
            out,
            flags_at,
            flags: 0,
            open: Vec::new(),
        }
    }

    fn short(&mut self, s: &[u8], what: &str) -> Result<(), String> {
        if s.len() > 255 {
            return Err(format!("{what} is {} bytes (at most 255)", s.len()));
        }
        if !utf8(s) {
            return Err(format!("{what} is not valid UTF-8"));
        }
        self.out.push(s.len() as u8);
        self.out.extend_from_slice(s);
        Ok(())
    }

    /// A short-string property (`CONTENT_TYPE`, `MESSAGE_ID`, ...).
    pub fn str(&mut self, flag: u16, s: &[u8], what: &str) -> Result<(), String> {
        self.flags |= flag;
        self.short(s, what)
    }

    pub fn u8(&mut self, flag: u16, v: u8) {
        self.flags |= flag;
        self.out.push(v);
    }

    pub fn timestamp(&mut self, v: u64) {
        self.flags |= TIMESTAMP;
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Opens the headers table; `key` and the values follow, then
    /// `end_table`.
    pub fn begin_headers(&mut self) {
        self.flags |= HEADERS;
        self.open.push(self.out.len());
        self.out.extend_from_slice(&[0; 4]);
    }

    /// A table entry's name.
    pub fn key(&mut self, k: &[u8]) -> Result<(), String> {
        self.short(k, "a header key")
    }

    /// A value (a table or array: `begin_table` / `begin_array` instead).
    pub fn value(&mut self, v: &Value<'_>) -> Result<(), String> {
        let o = &mut *self.out;
        match v {
            Value::Void => o.push(b'V'),
            Value::Bool(b) => o.extend_from_slice(&[b't', *b as u8]),
            Value::I8(x) => o.extend_from_slice(&[b'b', *x as u8]),
            Value::U8(x) => o.extend_from_slice(&[b'B', *x]),
            Value::I16(x) => tagged(o, b's', &x.to_be_bytes()),
            Value::U16(x) => tagged(o, b'u', &x.to_be_bytes()),
            Value::I32(x) => tagged(o, b'I', &x.to_be_bytes()),
            Value::U32(x) => tagged(o, b'i', &x.to_be_bytes()),
            Value::I64(x) => tagged(o, b'l', &x.to_be_bytes()),
            Value::F32(x) => tagged(o, b'f', &x.to_be_bytes()),
            Value::F64(x) => tagged(o, b'd', &x.to_be_bytes()),
            Value::Decimal(s, x) => {
                o.extend_from_slice(&[b'D', *s]);
                o.extend_from_slice(&x.to_be_bytes());
            }
            Value::Timestamp(x) => tagged(o, b'T', &x.to_be_bytes()),
            Value::Str(s) => {
                if !utf8(s) {
                    return Err("a string value is not valid UTF-8 (use bytes)".into());
                }
                long(o, b'S', s)?
            }
            Value::Bytes(s) => long(o, b'x', s)?,
            Value::Table(t) => {
                self.begin(b'F')?;
                for (k, v) in t {
                    self.key(k)?;
                    self.value(v)?;
                }
                self.end()?;
            }
            Value::Array(a) => {
                self.begin(b'A')?;
                for v in a {
                    self.value(v)?;
                }
                self.end()?;
            }
        }
        Ok(())
    }

    /// Opens a nested table ('F') or array ('A') value.
    pub fn begin(&mut self, kind: u8) -> Result<(), String> {
        if self.open.len() >= MAX_TABLE_DEPTH {
            return Err(format!(
                "headers nested more than {MAX_TABLE_DEPTH} levels deep"
            ));
        }
        self.out.push(kind);
        self.open.push(self.out.len());
        self.out.extend_from_slice(&[0; 4]);
        Ok(())
    }

    /// Closes the innermost open table or array (the headers too).
    pub fn end(&mut self) -> Result<(), String> {
        let at = self.open.pop().ok_or("nothing open")?;
        let len = u32::try_from(self.out.len() - at - 4).map_err(|_| "a table over 4 GiB")?;
        self.out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Writes the flags; the bytes are complete.
    pub fn finish(self) -> u16 {
        let f = self.flags.to_be_bytes();
        self.out[self.flags_at..self.flags_at + 2].copy_from_slice(&f);
        self.flags
    }
}

/// Valid UTF-8: the ASCII check first (word at a time: most properties are
/// ASCII, and `from_utf8` costs several instructions a byte on short ones).
#[inline]
pub fn utf8(s: &[u8]) -> bool {
    s.is_ascii() || std::str::from_utf8(s).is_ok()
}

fn tagged(o: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    o.push(kind);
    o.extend_from_slice(bytes);
}

fn long(o: &mut Vec<u8>, kind: u8, s: &[u8]) -> Result<(), String> {
    let n = u32::try_from(s.len()).map_err(|_| "a value over 4 GiB".to_string())?;
    o.push(kind);
    o.extend_from_slice(&n.to_be_bytes());
    o.extend_from_slice(s);
    Ok(())
}

mod stamp;
pub use stamp::with_message_id;

#[cfg(test)]
mod tests;

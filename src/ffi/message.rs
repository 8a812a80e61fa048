//! Message properties and headers (issue 12): `amqp_message` describes a
//! message to publish (`amqp_publish_message`) and a delivered one
//! (`amqp_delivery.message`); header tables are arrays of `amqp_field`.

use super::{amqp_queue_handle, amqp_result, check_sized, lookup_queue};
use crate::client::encode_meta;
use crate::client::props::{self, Encoder, Value};
use crate::error::Error;
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};

/// The type of an `amqp_value` (its `kind`). Publishing accepts every kind;
/// a delivery's values are read as the type the publisher wrote.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum amqp_value_kind {
    /// No value ('V').
    AMQP_VALUE_VOID = 0,
    /// `integer` 0 or 1 ('t').
    AMQP_VALUE_BOOL = 1,
    /// Signed 64-bit `integer` ('l').
    AMQP_VALUE_INT = 2,
    /// `number` ('d').
    AMQP_VALUE_DOUBLE = 3,
    /// UTF-8 text: `bytes`, `len` ('S'; not NUL-terminated). Checked when
    /// published; a delivery's is not checked.
    AMQP_VALUE_STRING = 4,
    /// Any bytes: `bytes`, `len` ('x').
    AMQP_VALUE_BYTES = 5,
    /// Seconds since the epoch in `integer`, as uint64_t bits ('T').
    AMQP_VALUE_TIMESTAMP = 6,
    /// A nested table: `bytes` points to `len` amqp_field ('F').
    AMQP_VALUE_TABLE = 7,
    /// An array: `bytes` points to `len` amqp_value ('A').
    AMQP_VALUE_ARRAY = 8,
    /// Narrower integers in `integer` ('b', 'B', 's', 'u', 'I', 'i').
    AMQP_VALUE_INT8 = 9,
    AMQP_VALUE_UINT8 = 10,
    AMQP_VALUE_INT16 = 11,
    AMQP_VALUE_UINT16 = 12,
    AMQP_VALUE_INT32 = 13,
    AMQP_VALUE_UINT32 = 14,
    /// A 32-bit float in `number` ('f').
    AMQP_VALUE_FLOAT = 15,
    /// A decimal: `integer` (unsigned 32-bit) * 10^-`len` ('D').
    AMQP_VALUE_DECIMAL = 16,
}

/// One value of a header table. Which fields mean something depends on
/// `kind` (an amqp_value_kind; any other number is AMQP_ERR_INVALID_ARGUMENT
/// when published); the others are ignored.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct amqp_value {
    pub kind: u32,
    pub integer: i64,
    pub number: f64,
    pub bytes: *const c_void,
    pub len: usize,
}

/// One entry of a header table: a NUL-terminated key (1..255 bytes of UTF-8
/// when published) and its value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct amqp_field {
    pub key: *const c_char,
    pub value: amqp_value,
}

/// A message's properties (AMQP 0-9-1 basic properties) and routing key.
///
/// Publishing (amqp_publish_message): set `size` to sizeof(amqp_message)
/// and the rest to zero (`amqp_message m = { .size = sizeof m };`), then what you
/// need; a zero or NULL field means "not set". The library reads only the
/// first `size` bytes, so a program built against an older, smaller struct
/// keeps working: the struct only grows at the end, and a field added in
/// ABI version N is read iff amqp_abi_version() >= N (an older library
/// ignores fields it does not know). `size` below sizeof(size_t) is
/// AMQP_ERR_INVALID_ARGUMENT (a forgotten size, not "nothing set").
/// Strings are NUL-terminated UTF-8, at most 255 bytes; everything is
/// copied before the call returns.
///
/// Delivered (amqp_delivery.message, ABI 3): filled by the library,
/// `present` says which properties the message carried; strings are
/// NUL-terminated copies (a property with a NUL byte in it ends there);
/// `routing_key` is NULL (the delivery's own routing_key has it) and `tag`
/// 0. Valid as long as the delivery.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct amqp_message {
    pub size: usize,
    /// Overrides the queue's binding key for this message (NULL: the
    /// queue's). A message that no queue takes comes back as
    /// AMQP_REPORT_UNROUTABLE.
    pub routing_key: *const c_char,
    pub content_type: *const c_char,
    pub content_encoding: *const c_char,
    /// `header_count` entries (NULL with a count is
    /// AMQP_ERR_INVALID_ARGUMENT; non-NULL with 0: an empty table).
    pub headers: *const amqp_field,
    pub header_count: usize,
    /// 1 transient, 2 persistent; 0: the queue's `persistent` option.
    pub delivery_mode: u8,
    /// 0..255 (RabbitMQ honours up to the queue's x-max-priority); set if
    /// not 0 or if `present` has AMQP_PROP_PRIORITY.
    pub priority: u8,
    /// AMQP_PROP_* bits: on a delivery, the properties it carried; when
    /// publishing, AMQP_PROP_PRIORITY and AMQP_PROP_TIMESTAMP send a 0.
    pub present: u16,
    pub correlation_id: *const c_char,
    pub reply_to: *const c_char,
    /// Milliseconds as decimal digits (per-message TTL), e.g. "60000".
    pub expiration: *const c_char,
    pub message_id: *const c_char,
    /// Seconds since the epoch; set if not 0 or if `present` has
    /// AMQP_PROP_TIMESTAMP.
    pub timestamp: u64,
    /// The AMQP `type` property.
    pub message_type: *const c_char,
    /// RabbitMQ refuses a user_id other than the connection's user
    /// (reported as AMQP_REPORT_REFUSED).
    pub user_id: *const c_char,
    pub app_id: *const c_char,
    /// Handed back in the message's delivery report (as amqp_publish_tagged).
    pub tag: u64,
}

impl amqp_message {
    pub(super) fn zeroed() -> amqp_message {
        let null = std::ptr::null();
        amqp_message {
            size: std::mem::size_of::<amqp_message>(),
            routing_key: null,
            content_type: null,
            content_encoding: null,
            headers: std::ptr::null(),
            header_count: 0,
            delivery_mode: 0,
            priority: 0,
            present: 0,
            correlation_id: null,
            reply_to: null,
            expiration: null,
            message_id: null,
            timestamp: 0,
            message_type: null,
            user_id: null,
            app_id: null,
            tag: 0,
        }
    }
}

/// amqp_message.present bits (the AMQP property flags; the header has
/// them as macros).
pub const AMQP_PROP_CONTENT_TYPE: u16 = props::CONTENT_TYPE;
pub const AMQP_PROP_CONTENT_ENCODING: u16 = props::CONTENT_ENCODING;
pub const AMQP_PROP_HEADERS: u16 = props::HEADERS;
pub const AMQP_PROP_DELIVERY_MODE: u16 = props::DELIVERY_MODE;
pub const AMQP_PROP_PRIORITY: u16 = props::PRIORITY;
pub const AMQP_PROP_CORRELATION_ID: u16 = props::CORRELATION_ID;
pub const AMQP_PROP_REPLY_TO: u16 = props::REPLY_TO;
pub const AMQP_PROP_EXPIRATION: u16 = props::EXPIRATION;
pub const AMQP_PROP_MESSAGE_ID: u16 = props::MESSAGE_ID;
pub const AMQP_PROP_TIMESTAMP: u16 = props::TIMESTAMP;
pub const AMQP_PROP_TYPE: u16 = props::TYPE;
pub const AMQP_PROP_USER_ID: u16 = props::USER_ID;
pub const AMQP_PROP_APP_ID: u16 = props::APP_ID;
pub const AMQP_PROP_CLUSTER_ID: u16 = props::CLUSTER_ID;

/// Encoded properties larger than this are refused: the content header
/// must fit in one frame (RabbitMQ's frame_max is 128 KiB by default).
const MAX_PROPERTIES: usize = 64 << 10;

thread_local! {
    /// The metadata being encoded (reused: no allocation per publish).
    static META: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// amqp_publish with properties, headers and a routing key of its own,
/// described by `m` (see amqp_message; NULL: as amqp_publish). Everything
/// is copied into the queue's buffer before it returns, kept across
/// reconnects and resent byte-identical. A message published with its own
/// routing key that no queue takes ends as AMQP_REPORT_UNROUTABLE (counted
/// in `unroutable`), not resent. Errors as amqp_publish, and
/// AMQP_ERR_INVALID_ARGUMENT (nothing stored) for: `size` below
/// sizeof(size_t), a string or header key over 255 bytes, not UTF-8 or
/// (keys) empty, a NULL key, an unknown value kind, a NULL table or array
/// or bytes with a count, tables nested over 32 deep, delivery_mode over 2,
/// an expiration that is not decimal digits, or properties over 64 KiB
/// encoded. Callable from any thread, including a consume callback.
/// Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_publish_message(
    queue: amqp_queue_handle,
    body: *const c_void,
    len: usize,
    m: *const amqp_message,
) -> amqp_result {
    ffi_boundary!({
        // SAFETY: the caller promises `body` points to `len` bytes, valid
        // for this call; publish copies them.
        let bytes = unsafe { super::publish::body_slice(body, len) }?;
        let entry = lookup_queue(queue)?;
        let outbox = &entry.queue.outbox;
        if m.is_null() {
            return outbox.publish(bytes);
        }
        // SAFETY: non-NULL; by the contract it points to an amqp_message of
        // at least its `size` bytes, valid during the call.
        let m = unsafe { read_message(m) }?;
        META.with(|meta| {
            let mut meta = meta.borrow_mut();
            meta.clear();
            // SAFETY: the pointers in `m` are the caller's, valid during
            // the call (the header's promise).
            unsafe { encode(&m, outbox.persistent(), &mut meta) }?;
            outbox.publish_message(bytes, m.tag, &meta)
        })
    })
}

/// The caller's amqp_message, its first `size` bytes (the rest zero).
///
/// # Safety
/// `m` is non-NULL and points to at least `(*m).size` readable bytes.
unsafe fn read_message(m: *const amqp_message) -> crate::Result<amqp_message> {
    // SAFETY: the contract covers check_sized's.
    let declared = unsafe { check_sized(m as *mut amqp_message, "m") }?;
    let mut out = amqp_message::zeroed();
    let n = declared.min(std::mem::size_of::<amqp_message>());
    // SAFETY: `n` bytes of `*m` are readable (the contract); `out` is a
    // local of at least `n` bytes; every bit pattern is a valid value of
    // each field (integers and raw pointers).
    unsafe { std::ptr::copy_nonoverlapping(m as *const u8, &mut out as *mut _ as *mut u8, n) };
    out.size = declared;
    Ok(out)
}

/// A C string field: None for NULL.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid during the call.
unsafe fn cstr<'a>(p: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: by the contract.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// Writes `m`'s routing key and properties as metadata (nothing but the
/// routing key byte when no property is set).
///
/// # Safety
/// Every pointer in `m` is NULL or valid as the header says, during the call.
unsafe fn encode(m: &amqp_message, persistent: bool, meta: &mut Vec<u8>) -> crate::Result<()> {
    // SAFETY: the contract.
    let rk = unsafe { cstr(m.routing_key) };
    if let Some(k) = rk {
        if k.len() > 255 || !props::utf8(k) {
            return Err(inv("m->routing_key is over 255 bytes or not UTF-8"));
        }
    }
    encode_meta(meta, rk);
    if m.delivery_mode > 2 {
        return Err(inv(format!(
            "m->delivery_mode is {} (0, 1 or 2)",
            m.delivery_mode
        )));
    }
    // SAFETY: the contract (for each string below).
    let s = |p| unsafe { cstr(p) };
    let strs1 = [
        (props::CONTENT_TYPE, s(m.content_type), "m->content_type"),
        (
            props::CONTENT_ENCODING,
            s(m.content_encoding),
            "m->content_encoding",
        ),
    ];
    let strs2 = [
        (
            props::CORRELATION_ID,
            s(m.correlation_id),
            "m->correlation_id",
        ),
        (props::REPLY_TO, s(m.reply_to), "m->reply_to"),
        (props::EXPIRATION, s(m.expiration), "m->expiration"),
        (props::MESSAGE_ID, s(m.message_id), "m->message_id"),
    ];
    let strs3 = [
        (props::TYPE, s(m.message_type), "m->message_type"),
        (props::USER_ID, s(m.user_id), "m->user_id"),
        (props::APP_ID, s(m.app_id), "m->app_id"),
    ];
    if let Some(e) = strs2[2].1 {
        if e.is_empty() || !e.iter().all(u8::is_ascii_digit) {
            return Err(inv("m->expiration must be milliseconds in decimal digits"));
        }
    }
    if m.headers.is_null() && m.header_count > 0 {
        return Err(inv(format!(
            "m->headers is NULL but header_count is {}",
            m.header_count
        )));
    }
    // SAFETY: the contract.
    unsafe { properties(m, mode_of(m, persistent), (strs1, strs2, strs3), meta) }
}

/// The delivery mode to send: the message's, else the queue's (0: none).
fn mode_of(m: &amqp_message, persistent: bool) -> u8 {
    match (m.delivery_mode, persistent) {
        (0, true) => 2,
        (mode, _) => mode,
    }
}

type StrProps<'a, const N: usize> = [(u16, Option<&'a [u8]>, &'static str); N];

/// The property bytes, unless no property is set.
///
/// # Safety
/// As `encode`.
unsafe fn properties(
    m: &amqp_message,
    mode: u8,
    (strs1, strs2, strs3): (StrProps<'_, 2>, StrProps<'_, 4>, StrProps<'_, 3>),
    meta: &mut Vec<u8>,
) -> crate::Result<()> {
    let priority = m.priority != 0 || m.present & props::PRIORITY != 0;
    let timestamp = m.timestamp != 0 || m.present & props::TIMESTAMP != 0;
    let any = strs1
        .iter()
        .chain(&strs2)
        .chain(&strs3)
        .any(|f| f.1.is_some())
        || !m.headers.is_null()
        || priority
        || timestamp
        || m.delivery_mode != 0;
    if !any {
        return Ok(());
    }
    let start = meta.len();
    let mut e = Encoder::new(meta);
    for (flag, v, what) in strs1 {
        if let Some(v) = v {
            e.str(flag, v, what).map_err(inv)?;
        }
    }
    if !m.headers.is_null() {
        e.begin_headers();
        // SAFETY: `headers` points to `header_count` fields (the contract).
        unsafe { fields(&mut e, m.headers, m.header_count) }?;
        e.end().map_err(inv)?;
    }
    if mode != 0 {
        e.u8(props::DELIVERY_MODE, mode);
    }
    if priority {
        e.u8(props::PRIORITY, m.priority);
    }
    for (flag, v, what) in strs2 {
        if let Some(v) = v {
            e.str(flag, v, what).map_err(inv)?;
        }
    }
    if timestamp {
        e.timestamp(m.timestamp);
    }
    for (flag, v, what) in strs3 {
        if let Some(v) = v {
            e.str(flag, v, what).map_err(inv)?;
        }
    }
    e.finish();
    if meta.len() - start > MAX_PROPERTIES {
        return Err(inv(format!(
            "the properties take {} bytes encoded (at most {MAX_PROPERTIES})",
            meta.len() - start
        )));
    }
    Ok(())
}

/// Encodes `n` table entries from C.
///
/// # Safety
/// `f` points to `n` valid amqp_field (their pointers as the header says).
unsafe fn fields(e: &mut Encoder<'_>, f: *const amqp_field, n: usize) -> crate::Result<()> {
    if n == 0 {
        return Ok(());
    }
    // SAFETY: by the contract; n > 0 so `f` is non-NULL (checked by callers).
    let fields = unsafe { std::slice::from_raw_parts(f, n) };
    for field in fields {
        // SAFETY: by the contract.
        let key =
            unsafe { cstr(field.key) }.ok_or_else(|| Error::invalid("a header key is NULL"))?;
        if key.is_empty() {
            return Err(Error::invalid("a header key is empty"));
        }
        e.key(key).map_err(Error::invalid)?;
        // SAFETY: by the contract.
        unsafe { value(e, &field.value) }.map_err(|err| {
            let name = String::from_utf8_lossy(&key[..key.len().min(40)]);
            Error::invalid(format!("header '{name}': {}", err.message))
        })?;
    }
    Ok(())
}

/// Encodes one value from C.
///
/// # Safety
/// `v`'s pointer is valid for its kind and `len` (the header's promise).
unsafe fn value(e: &mut Encoder<'_>, v: &amqp_value) -> crate::Result<()> {
    use amqp_value_kind as K;
    let raw = |what: &str| -> crate::Result<&[u8]> {
        match (v.bytes.is_null(), v.len) {
            (_, 0) => Ok(&[]),
            (true, n) => Err(inv(format!("{what} is NULL with len {n}"))),
            // SAFETY: non-NULL and `len` bytes readable (the contract).
            (false, n) => Ok(unsafe { std::slice::from_raw_parts(v.bytes as *const u8, n) }),
        }
    };
    let i = v.integer;
    let simple = match v.kind {
        k if k == K::AMQP_VALUE_VOID as u32 => Value::Void,
        k if k == K::AMQP_VALUE_BOOL as u32 => Value::Bool(i != 0),
        k if k == K::AMQP_VALUE_INT as u32 => Value::I64(i),
        k if k == K::AMQP_VALUE_DOUBLE as u32 => Value::F64(v.number),
        k if k == K::AMQP_VALUE_STRING as u32 => Value::Str(raw("a string")?),
        k if k == K::AMQP_VALUE_BYTES as u32 => Value::Bytes(raw("bytes")?),
        k if k == K::AMQP_VALUE_TIMESTAMP as u32 => Value::Timestamp(i as u64),
        k if k == K::AMQP_VALUE_INT8 as u32 => Value::I8(i as i8),
        k if k == K::AMQP_VALUE_UINT8 as u32 => Value::U8(i as u8),
        k if k == K::AMQP_VALUE_INT16 as u32 => Value::I16(i as i16),
        k if k == K::AMQP_VALUE_UINT16 as u32 => Value::U16(i as u16),
        k if k == K::AMQP_VALUE_INT32 as u32 => Value::I32(i as i32),
        k if k == K::AMQP_VALUE_UINT32 as u32 => Value::U32(i as u32),
        k if k == K::AMQP_VALUE_FLOAT as u32 => Value::F32(v.number as f32),
        k if k == K::AMQP_VALUE_DECIMAL as u32 => Value::Decimal(v.len.min(255) as u8, i as u32),
        k if k == K::AMQP_VALUE_TABLE as u32 || k == K::AMQP_VALUE_ARRAY as u32 => {
            if v.bytes.is_null() && v.len > 0 {
                return Err(inv(format!("a table or array is NULL with len {}", v.len)));
            }
            let table = k == K::AMQP_VALUE_TABLE as u32;
            e.begin(if table { b'F' } else { b'A' }).map_err(inv)?;
            if table {
                // SAFETY: `bytes` points to `len` fields (the contract).
                unsafe { fields(e, v.bytes as *const amqp_field, v.len) }?;
            } else if v.len > 0 {
                // SAFETY: `bytes` points to `len` values (the contract).
                let items =
                    unsafe { std::slice::from_raw_parts(v.bytes as *const amqp_value, v.len) };
                for item in items {
                    // SAFETY: the contract, for each element.
                    unsafe { value(e, item) }?;
                }
            }
            return e.end().map_err(inv);
        }
        other => return Err(inv(format!("unknown value kind {other}"))),
    };
    e.value(&simple).map_err(inv)
}

/// AMQP_ERR_INVALID_ARGUMENT with this message.
fn inv(message: impl Into<String>) -> Error {
    Error::invalid(message)
}

//! amqp_message and header tables to and from lapin's types, so that a test can publish the
//! same properties through the library and through lapin and compare what each side reads.

use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::BasicProperties;
use resilient_amqp::*;
use std::ffi::{c_char, c_void, CStr, CString};

/// An amqp_message and everything its pointers point into.
pub struct CMessage {
    pub m: amqp_message,
    strings: Vec<CString>,
    bytes: Vec<Vec<u8>>,
    tables: Vec<Vec<amqp_field>>,
    arrays: Vec<Vec<amqp_value>>,
}

fn zero_value() -> amqp_value {
    amqp_value {
        kind: amqp_value_kind::AMQP_VALUE_VOID as u32,
        integer: 0,
        number: 0.0,
        bytes: std::ptr::null(),
        len: 0,
    }
}

/// A zeroed amqp_message with its size set.
pub fn empty_message() -> amqp_message {
    // SAFETY: integers and raw pointers: all-zero is a valid value of each.
    let mut m: amqp_message = unsafe { std::mem::zeroed() };
    m.size = std::mem::size_of::<amqp_message>();
    m
}

impl CMessage {
    pub fn new() -> CMessage {
        CMessage {
            m: empty_message(),
            strings: Vec::new(),
            bytes: Vec::new(),
            tables: Vec::new(),
            arrays: Vec::new(),
        }
    }

    pub fn s(&mut self, s: &str) -> *const c_char {
        let c = CString::new(s).expect("no NUL");
        let p = c.as_ptr();
        self.strings.push(c);
        p
    }

    /// Every property of `p` (cluster_id aside), and `routing_key` if any.
    pub fn from_lapin(p: &BasicProperties, routing_key: Option<&str>) -> CMessage {
        let mut c = CMessage::new();
        let opt = |c: &mut CMessage, v: Option<String>| match v {
            Some(v) => c.s(&v),
            None => std::ptr::null(),
        };
        let st = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.to_string());
        c.m.routing_key = opt(&mut c, routing_key.map(str::to_string));
        c.m.content_type = opt(&mut c, st(p.content_type()));
        c.m.content_encoding = opt(&mut c, st(p.content_encoding()));
        c.m.correlation_id = opt(&mut c, st(p.correlation_id()));
        c.m.reply_to = opt(&mut c, st(p.reply_to()));
        c.m.expiration = opt(&mut c, st(p.expiration()));
        c.m.message_id = opt(&mut c, st(p.message_id()));
        c.m.message_type = opt(&mut c, st(p.kind()));
        c.m.user_id = opt(&mut c, st(p.user_id()));
        c.m.app_id = opt(&mut c, st(p.app_id()));
        c.m.delivery_mode = p.delivery_mode().unwrap_or(0);
        if let Some(x) = *p.priority() {
            c.m.priority = x;
            c.m.present |= AMQP_PROP_PRIORITY;
        }
        if let Some(x) = *p.timestamp() {
            c.m.timestamp = x;
            c.m.present |= AMQP_PROP_TIMESTAMP;
        }
        if let Some(h) = p.headers() {
            let (ptr, n) = c.table(h);
            c.m.headers = ptr;
            c.m.header_count = n;
        }
        c
    }

    fn table(&mut self, t: &FieldTable) -> (*const amqp_field, usize) {
        let mut fields = Vec::new();
        for (k, v) in t {
            let key = self.s(k.as_str());
            let value = self.value(v);
            fields.push(amqp_field { key, value });
        }
        let out = (fields.as_ptr(), fields.len());
        self.tables.push(fields);
        out
    }

    fn value(&mut self, v: &AMQPValue) -> amqp_value {
        use amqp_value_kind as K;
        let mut out = zero_value();
        let (kind, i) = match v {
            AMQPValue::Void => (K::AMQP_VALUE_VOID, 0),
            AMQPValue::Boolean(b) => (K::AMQP_VALUE_BOOL, *b as i64),
            AMQPValue::ShortShortInt(x) => (K::AMQP_VALUE_INT8, *x as i64),
            AMQPValue::ShortShortUInt(x) => (K::AMQP_VALUE_UINT8, *x as i64),
            AMQPValue::ShortInt(x) => (K::AMQP_VALUE_INT16, *x as i64),
            AMQPValue::ShortUInt(x) => (K::AMQP_VALUE_UINT16, *x as i64),
            AMQPValue::LongInt(x) => (K::AMQP_VALUE_INT32, *x as i64),
            AMQPValue::LongUInt(x) => (K::AMQP_VALUE_UINT32, *x as i64),
            AMQPValue::LongLongInt(x) => (K::AMQP_VALUE_INT, *x),
            AMQPValue::Timestamp(x) => (K::AMQP_VALUE_TIMESTAMP, *x as i64),
            AMQPValue::Float(x) => {
                out.number = *x as f64;
                (K::AMQP_VALUE_FLOAT, 0)
            }
            AMQPValue::Double(x) => {
                out.number = *x;
                (K::AMQP_VALUE_DOUBLE, 0)
            }
            AMQPValue::DecimalValue(d) => {
                out.len = d.scale as usize;
                (K::AMQP_VALUE_DECIMAL, d.value as i64)
            }
            AMQPValue::LongString(s) => {
                self.raw(&mut out, s.as_bytes());
                (K::AMQP_VALUE_STRING, 0)
            }
            AMQPValue::ByteArray(b) => {
                self.raw(&mut out, b.as_slice());
                (K::AMQP_VALUE_BYTES, 0)
            }
            AMQPValue::FieldTable(t) => {
                let (p, n) = self.table(t);
                out.bytes = p as *const c_void;
                out.len = n;
                (K::AMQP_VALUE_TABLE, 0)
            }
            AMQPValue::FieldArray(a) => {
                let items: Vec<amqp_value> = a.as_slice().iter().map(|x| self.value(x)).collect();
                out.bytes = items.as_ptr() as *const c_void;
                out.len = items.len();
                self.arrays.push(items);
                (K::AMQP_VALUE_ARRAY, 0)
            }
            other => panic!("no C kind for {other:?}"),
        };
        out.kind = kind as u32;
        out.integer = i;
        out
    }

    fn raw(&mut self, out: &mut amqp_value, b: &[u8]) {
        let v = b.to_vec();
        out.bytes = v.as_ptr() as *const c_void;
        out.len = v.len();
        self.bytes.push(v);
    }
}

/// A delivered amqp_message as lapin's properties (what `present` says it carried).
///
/// # Safety
/// `m` is a delivery's message, valid for the call.
pub unsafe fn message_to_lapin(m: &amqp_message) -> BasicProperties {
    let s = |p: *const c_char| -> Option<lapin::types::ShortString> {
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().unwrap().into())
    };
    let mut p = BasicProperties::default();
    let has = |bit: u16| m.present & bit != 0;
    if let Some(v) = s(m.content_type) {
        p = p.with_content_type(v);
    }
    if let Some(v) = s(m.content_encoding) {
        p = p.with_content_encoding(v);
    }
    if has(AMQP_PROP_HEADERS) {
        p = p.with_headers(unsafe { table_to_lapin(m.headers, m.header_count) });
    }
    if has(AMQP_PROP_DELIVERY_MODE) {
        p = p.with_delivery_mode(m.delivery_mode);
    }
    if has(AMQP_PROP_PRIORITY) {
        p = p.with_priority(m.priority);
    }
    if let Some(v) = s(m.correlation_id) {
        p = p.with_correlation_id(v);
    }
    if let Some(v) = s(m.reply_to) {
        p = p.with_reply_to(v);
    }
    if let Some(v) = s(m.expiration) {
        p = p.with_expiration(v);
    }
    if let Some(v) = s(m.message_id) {
        p = p.with_message_id(v);
    }
    if has(AMQP_PROP_TIMESTAMP) {
        p = p.with_timestamp(m.timestamp);
    }
    if let Some(v) = s(m.message_type) {
        p = p.with_type(v);
    }
    if let Some(v) = s(m.user_id) {
        p = p.with_user_id(v);
    }
    if let Some(v) = s(m.app_id) {
        p = p.with_app_id(v);
    }
    p
}

/// # Safety
/// `f` points to `n` fields of a delivery.
pub unsafe fn table_to_lapin(f: *const amqp_field, n: usize) -> FieldTable {
    let mut t = FieldTable::default();
    if n == 0 {
        return t;
    }
    for field in unsafe { std::slice::from_raw_parts(f, n) } {
        let k = unsafe { CStr::from_ptr(field.key) }.to_str().unwrap();
        t.insert(k.into(), unsafe { value_to_lapin(&field.value) });
    }
    t
}

/// # Safety
/// `v` is a delivery's value.
pub unsafe fn value_to_lapin(v: &amqp_value) -> AMQPValue {
    use amqp_value_kind as K;
    let bytes = || -> Vec<u8> {
        if v.len == 0 {
            Vec::new()
        } else {
            unsafe { std::slice::from_raw_parts(v.bytes as *const u8, v.len) }.to_vec()
        }
    };
    let i = v.integer;
    match v.kind {
        k if k == K::AMQP_VALUE_VOID as u32 => AMQPValue::Void,
        k if k == K::AMQP_VALUE_BOOL as u32 => AMQPValue::Boolean(i != 0),
        k if k == K::AMQP_VALUE_INT8 as u32 => AMQPValue::ShortShortInt(i as i8),
        k if k == K::AMQP_VALUE_UINT8 as u32 => AMQPValue::ShortShortUInt(i as u8),
        k if k == K::AMQP_VALUE_INT16 as u32 => AMQPValue::ShortInt(i as i16),
        k if k == K::AMQP_VALUE_UINT16 as u32 => AMQPValue::ShortUInt(i as u16),
        k if k == K::AMQP_VALUE_INT32 as u32 => AMQPValue::LongInt(i as i32),
        k if k == K::AMQP_VALUE_UINT32 as u32 => AMQPValue::LongUInt(i as u32),
        k if k == K::AMQP_VALUE_INT as u32 => AMQPValue::LongLongInt(i),
        k if k == K::AMQP_VALUE_TIMESTAMP as u32 => AMQPValue::Timestamp(i as u64),
        k if k == K::AMQP_VALUE_FLOAT as u32 => AMQPValue::Float(v.number as f32),
        k if k == K::AMQP_VALUE_DOUBLE as u32 => AMQPValue::Double(v.number),
        k if k == K::AMQP_VALUE_DECIMAL as u32 => AMQPValue::DecimalValue(DecimalValue {
            scale: v.len as u8,
            value: i as u32,
        }),
        k if k == K::AMQP_VALUE_STRING as u32 => AMQPValue::LongString(LongString::from(bytes())),
        k if k == K::AMQP_VALUE_BYTES as u32 => AMQPValue::ByteArray(ByteArray::from(bytes())),
        k if k == K::AMQP_VALUE_TABLE as u32 => {
            AMQPValue::FieldTable(unsafe { table_to_lapin(v.bytes as *const amqp_field, v.len) })
        }
        k if k == K::AMQP_VALUE_ARRAY as u32 => {
            let items = if v.len == 0 {
                &[][..]
            } else {
                unsafe { std::slice::from_raw_parts(v.bytes as *const amqp_value, v.len) }
            };
            AMQPValue::FieldArray(FieldArray::from(
                items
                    .iter()
                    .map(|x| unsafe { value_to_lapin(x) })
                    .collect::<Vec<_>>(),
            ))
        }
        other => panic!("unknown kind {other} in a delivery"),
    }
}

/// Headers with every value type RabbitMQ keeps, nested tables and arrays included.
pub fn every_header_type() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert("depth".into(), AMQPValue::LongLongInt(2));
    inner.insert(
        "list".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongString("a".into()),
            AMQPValue::Boolean(false),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Void])),
        ])),
    );
    let mut t = FieldTable::default();
    t.insert(
        "traceparent".into(),
        AMQPValue::LongString("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    );
    t.insert(
        "utf8".into(),
        AMQPValue::LongString("h\u{e9}llo \u{1F600}".into()),
    );
    t.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 255, 0])),
    );
    t.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    t.insert("u8".into(), AMQPValue::ShortShortUInt(250));
    t.insert("i16".into(), AMQPValue::ShortInt(-1600));
    t.insert("u16".into(), AMQPValue::ShortUInt(65000));
    t.insert("i32".into(), AMQPValue::LongInt(-320_000));
    t.insert("u32".into(), AMQPValue::LongUInt(4_000_000_000));
    t.insert("i64".into(), AMQPValue::LongLongInt(i64::MIN));
    t.insert("f32".into(), AMQPValue::Float(1.5));
    t.insert("f64".into(), AMQPValue::Double(-2.25e300));
    t.insert(
        "decimal".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 3,
            value: 123_456,
        }),
    );
    t.insert("timestamp".into(), AMQPValue::Timestamp(1_764_460_800));
    t.insert("yes".into(), AMQPValue::Boolean(true));
    t.insert("void".into(), AMQPValue::Void);
    t.insert("nested".into(), AMQPValue::FieldTable(inner));
    t.insert("empty".into(), AMQPValue::FieldTable(FieldTable::default()));
    t
}

/// Every property (cluster_id is deprecated and not sent by the library).
pub fn every_property(user: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(every_header_type())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-42".into())
        .with_reply_to("replies.q".into())
        .with_expiration("600000".into())
        .with_message_id("msg-\u{e9}-1".into())
        .with_timestamp(1_764_460_801)
        .with_type("order.created".into())
        .with_user_id(user.into())
        .with_app_id("resilient-amqp-tests".into())
}

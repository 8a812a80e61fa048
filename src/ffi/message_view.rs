//! A delivery's properties as C reads them (amqp_delivery.message).

use super::message::{amqp_field, amqp_message, amqp_value, amqp_value_kind};
use crate::client::props::{self, Value};
use std::ffi::{c_void, CString};

/// A delivery's properties as C sees them: the amqp_message and what its
/// pointers point into (strings copied with a NUL; header strings and bytes
/// point into the delivery's own property bytes, which outlive this).
pub(crate) struct MessageView {
    pub message: amqp_message,
    strings: Vec<CString>,
    tables: Vec<Box<[amqp_field]>>,
    arrays: Vec<Box<[amqp_value]>>,
}

impl MessageView {
    /// Decodes checked property bytes (no allocation when there are no
    /// string properties and no headers).
    pub(crate) fn new(properties: &[u8]) -> MessageView {
        let mut v = MessageView {
            message: amqp_message::zeroed(),
            strings: Vec::new(),
            tables: Vec::new(),
            arrays: Vec::new(),
        };
        let Ok(p) = props::decode(properties) else {
            return v;
        };
        let m = &mut v.message;
        m.present = p.flags;
        m.delivery_mode = p.delivery_mode;
        m.priority = p.priority;
        m.timestamp = p.timestamp;
        let strings = &mut v.strings;
        let mut s = |flag| match p.str(flag) {
            Some(b) => {
                let c = c_string(b);
                let ptr = c.as_ptr();
                strings.push(c);
                ptr
            }
            None => std::ptr::null(),
        };
        m.content_type = s(props::CONTENT_TYPE);
        m.content_encoding = s(props::CONTENT_ENCODING);
        m.correlation_id = s(props::CORRELATION_ID);
        m.reply_to = s(props::REPLY_TO);
        m.expiration = s(props::EXPIRATION);
        m.message_id = s(props::MESSAGE_ID);
        m.message_type = s(props::TYPE);
        m.user_id = s(props::USER_ID);
        m.app_id = s(props::APP_ID);
        if p.flags & props::HEADERS != 0 {
            let (ptr, n) = v.table(&p.headers);
            v.message.headers = ptr;
            v.message.header_count = n;
        }
        v
    }

    fn table(&mut self, t: &[(&[u8], Value<'_>)]) -> (*const amqp_field, usize) {
        let fields: Box<[amqp_field]> = t
            .iter()
            .map(|(k, val)| {
                let key = c_string(k);
                let ptr = key.as_ptr();
                self.strings.push(key);
                amqp_field {
                    key: ptr,
                    value: self.value(val),
                }
            })
            .collect();
        let out = (fields.as_ptr(), fields.len());
        self.tables.push(fields);
        out
    }

    fn value(&mut self, v: &Value<'_>) -> amqp_value {
        use amqp_value_kind as K;
        let mut out = amqp_value {
            kind: 0,
            integer: 0,
            number: 0.0,
            bytes: std::ptr::null(),
            len: 0,
        };
        let (kind, integer) = match *v {
            Value::Void => (K::AMQP_VALUE_VOID, 0),
            Value::Bool(b) => (K::AMQP_VALUE_BOOL, i64::from(b)),
            Value::I8(x) => (K::AMQP_VALUE_INT8, i64::from(x)),
            Value::U8(x) => (K::AMQP_VALUE_UINT8, i64::from(x)),
            Value::I16(x) => (K::AMQP_VALUE_INT16, i64::from(x)),
            Value::U16(x) => (K::AMQP_VALUE_UINT16, i64::from(x)),
            Value::I32(x) => (K::AMQP_VALUE_INT32, i64::from(x)),
            Value::U32(x) => (K::AMQP_VALUE_UINT32, i64::from(x)),
            Value::I64(x) => (K::AMQP_VALUE_INT, x),
            Value::Timestamp(x) => (K::AMQP_VALUE_TIMESTAMP, x as i64),
            Value::Decimal(scale, x) => {
                out.len = usize::from(scale);
                (K::AMQP_VALUE_DECIMAL, i64::from(x))
            }
            Value::F32(x) => {
                out.number = f64::from(x);
                (K::AMQP_VALUE_FLOAT, 0)
            }
            Value::F64(x) => {
                out.number = x;
                (K::AMQP_VALUE_DOUBLE, 0)
            }
            Value::Str(b) | Value::Bytes(b) => {
                out.bytes = b.as_ptr() as *const c_void;
                out.len = b.len();
                let k = match v {
                    Value::Str(_) => K::AMQP_VALUE_STRING,
                    _ => K::AMQP_VALUE_BYTES,
                };
                (k, 0)
            }
            Value::Table(ref t) => {
                let (ptr, n) = self.table(t);
                out.bytes = ptr as *const c_void;
                out.len = n;
                (K::AMQP_VALUE_TABLE, 0)
            }
            Value::Array(ref a) => {
                let items: Box<[amqp_value]> = a.iter().map(|x| self.value(x)).collect();
                out.bytes = items.as_ptr() as *const c_void;
                out.len = items.len();
                self.arrays.push(items);
                (K::AMQP_VALUE_ARRAY, 0)
            }
        };
        out.kind = kind as u32;
        out.integer = integer;
        out
    }
}

/// A NUL-terminated copy, up to a NUL byte inside.
fn c_string(b: &[u8]) -> CString {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    CString::new(&b[..end]).unwrap_or_default()
}

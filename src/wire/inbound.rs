//! What the broker may send us, checked before amq-protocol parses it.
//!
//! amq-protocol's parser is exact but trusting: it parses any method, in
//! either direction, and recurses into nested field tables and arrays with no
//! depth limit (a 7 KB frame of arrays nested 1,400 deep overflows the
//! stack). So a method reaches it only when it is one a server sends, and
//! the one such method that carries a field table (connection.start) has its
//! table's shape checked first, iteratively bounded by `MAX_TABLE_DEPTH`.

use super::Violation;

/// Nesting of field tables and arrays we accept. RabbitMQ's own tables
/// (server properties, capabilities) nest 2 deep.
pub(super) const MAX_TABLE_DEPTH: usize = 32;

/// The methods a server sends in AMQP 0-9-1, by (class, method).
const SERVER_METHODS: &[(u16, &[u16])] = &[
    // connection: start, secure, tune, open-ok, close, close-ok, blocked,
    // unblocked, update-secret-ok
    (10, &[10, 20, 30, 41, 50, 51, 60, 61, 71]),
    // channel: open-ok, flow, flow-ok, close, close-ok
    (20, &[11, 20, 21, 40, 41]),
    // exchange: declare-ok, delete-ok, bind-ok, unbind-ok
    (40, &[11, 21, 31, 51]),
    // queue: declare-ok, bind-ok, purge-ok, delete-ok, unbind-ok
    (50, &[11, 21, 31, 41, 51]),
    // basic: qos-ok, consume-ok, cancel, cancel-ok, return, deliver, get-ok,
    // get-empty, ack, recover-ok, nack
    (60, &[11, 21, 30, 31, 50, 60, 71, 72, 80, 111, 120]),
    // tx: select-ok, commit-ok, rollback-ok
    (90, &[11, 21, 31]),
    // confirm: select-ok
    (85, &[11]),
];

/// Checks that `payload` is a method a server sends and, for
/// connection.start, that its field table is well formed within our limits.
pub(super) fn check_server_method(payload: &[u8]) -> Result<(), Violation> {
    let (class, method) = match payload {
        [a, b, c, d, ..] => (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])),
        _ => return Err(Violation::syntax("a method frame shorter than its ids")),
    };
    let known = SERVER_METHODS
        .iter()
        .any(|(c, ms)| *c == class && ms.contains(&method));
    if !known {
        return Err(Violation::command_invalid(format!(
            "method {class}.{method}, which a server never sends"
        )));
    }
    if (class, method) == (10, 10) {
        // version-major, version-minor, then server-properties.
        let table = payload.get(6..).unwrap_or_default();
        check_field_table(table)
            .map_err(|e| Violation::syntax(format!("connection.start's server properties: {e}")))?;
    }
    Ok(())
}

/// Checks the field table at the start of `bytes` (a u32 size, then
/// name/value pairs): sizes within bounds, known value types, nesting at most
/// `MAX_TABLE_DEPTH`. Returns the table's length, size field included.
pub(crate) fn check_field_table(bytes: &[u8]) -> Result<usize, &'static str> {
    let size = read_u32(bytes, 0)? as usize;
    let end = 4usize.checked_add(size).ok_or("table too long")?;
    if end > bytes.len() {
        return Err("a table longer than its frame");
    }
    // An explicit stack of the open tables and arrays: (end, is_table).
    let mut open: Vec<(usize, bool)> = vec![(end, true)];
    let mut at = 4;
    while let Some(&(end, is_table)) = open.last() {
        if at == end {
            open.pop();
            continue;
        }
        if is_table {
            let name_len = usize::from(*bytes.get(at).ok_or("truncated table")?);
            at += 1 + name_len;
            if at > end {
                return Err("a field name past its table's end");
            }
        }
        let kind = *bytes.get(at).ok_or("truncated table")?;
        at += 1;
        let fixed = match kind {
            b'V' => 0,
            b't' | b'b' | b'B' => 1,
            b's' | b'u' | b'U' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'l' | b'L' | b'd' | b'T' => 8,
            b'S' | b'x' | b'A' | b'F' => {
                let len = read_u32(bytes, at)? as usize;
                at += 4;
                let inner_end = at.checked_add(len).ok_or("value too long")?;
                if inner_end > end {
                    return Err("a value longer than its table");
                }
                if kind == b'A' || kind == b'F' {
                    if open.len() >= MAX_TABLE_DEPTH {
                        return Err("tables nested too deep");
                    }
                    open.push((inner_end, kind == b'F'));
                    continue;
                }
                len
            }
            _ => return Err("an unknown field value type"),
        };
        at += fixed;
        if at > end {
            return Err("a value past its table's end");
        }
    }
    Ok(end)
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, &'static str> {
    match bytes.get(at..at + 4) {
        Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err("truncated table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{
        generation::gen_field_table, AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable,
        LongString,
    };

    fn encode(t: &FieldTable) -> Vec<u8> {
        cookie_factory::gen_simple(gen_field_table(t), Vec::new()).unwrap()
    }

    fn nested(depth: usize) -> Vec<u8> {
        // Arrays nested `depth` deep inside one table entry, by hand (the
        // generator recurses too).
        let mut value = vec![b'A', 0, 0, 0, 0];
        for _ in 1..depth {
            let inner = value.clone();
            value = vec![b'A'];
            value.extend_from_slice(&(inner.len() as u32).to_be_bytes());
            value.extend_from_slice(&inner);
        }
        let mut entry = vec![1, b'k'];
        entry.extend_from_slice(&value);
        let mut t = (entry.len() as u32).to_be_bytes().to_vec();
        t.extend_from_slice(&entry);
        t
    }

    #[test]
    fn every_value_type_amq_protocol_writes_is_accepted() {
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::LongLongInt(-5));
        let mut arr = FieldArray::default();
        arr.push(AMQPValue::Boolean(true));
        arr.push(AMQPValue::FieldTable(inner.clone()));
        let mut t = FieldTable::default();
        let values = [
            AMQPValue::Boolean(false),
            AMQPValue::ShortShortInt(-1),
            AMQPValue::ShortShortUInt(1),
            AMQPValue::ShortInt(-2),
            AMQPValue::ShortUInt(2),
            AMQPValue::LongInt(-3),
            AMQPValue::LongUInt(3),
            AMQPValue::LongLongInt(-4),
            AMQPValue::Float(1.5),
            AMQPValue::Double(2.5),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 314,
            }),
            AMQPValue::LongString(LongString::from("text")),
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2])),
            AMQPValue::Timestamp(1_700_000_000),
            AMQPValue::FieldArray(arr),
            AMQPValue::FieldTable(inner),
            AMQPValue::Void,
        ];
        for (i, v) in values.into_iter().enumerate() {
            t.insert(format!("k{i}").into(), v);
        }
        let bytes = encode(&t);
        assert_eq!(check_field_table(&bytes), Ok(bytes.len()));
        assert_eq!(check_field_table(&encode(&FieldTable::default())), Ok(4));
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        assert!(check_field_table(&nested(MAX_TABLE_DEPTH - 1)).is_ok());
        assert_eq!(
            check_field_table(&nested(MAX_TABLE_DEPTH)),
            Err("tables nested too deep")
        );
        // Far deeper than any stack would take recursively.
        assert!(check_field_table(&nested(100_000)).is_err());
    }

    #[test]
    fn sizes_are_checked_against_the_bytes_there() {
        let good = encode(&{
            let mut t = FieldTable::default();
            t.insert("key".into(), AMQPValue::LongString(LongString::from("v")));
            t
        });
        for cut in 0..good.len() {
            assert!(check_field_table(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(check_field_table(&huge).is_err());
        let mut bad_type = good.clone();
        bad_type[4 + 1 + 3] = b'?';
        assert_eq!(
            check_field_table(&bad_type),
            Err("an unknown field value type")
        );
    }

    #[test]
    fn only_server_methods_pass() {
        assert!(check_server_method(&[0, 60, 0, 80, 0, 0]).is_ok()); // basic.ack
        let declare = [0, 50, 0, 10]; // queue.declare: client to server
        let e = check_server_method(&declare).unwrap_err();
        assert_eq!(e.code, 503);
        assert!(check_server_method(&[0, 60]).is_err());
        let mut start = vec![0, 10, 0, 10, 0, 9];
        start.extend_from_slice(&nested(2_000));
        assert!(check_server_method(&start).is_err());
        let mut start = vec![0, 10, 0, 10, 0, 9];
        start.extend_from_slice(&nested(3));
        assert!(check_server_method(&start).is_ok());
    }
}

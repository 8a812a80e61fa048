use super::*;
use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use proptest::prelude::*;

/// amq-protocol's reading of our bytes.
fn theirs(bytes: &[u8]) -> BasicProperties {
    // A content header payload: class, weight, body size, then ours.
    let mut h = vec![0, 60, 0, 0];
    h.extend_from_slice(&0u64.to_be_bytes());
    h.extend_from_slice(bytes);
    let mut frame = vec![2, 0, 1];
    frame.extend_from_slice(&(h.len() as u32).to_be_bytes());
    frame.extend_from_slice(&h);
    frame.push(0xCE);
    match amq_protocol::frame::parse_frame(&frame[..]) {
        Ok((_, amq_protocol::frame::AMQPFrame::Header(_, h))) => h.properties,
        other => panic!("amq-protocol does not read our header: {other:?}"),
    }
}

fn every_type() -> Vec<(&'static [u8], Value<'static>)> {
    vec![
        (b"void", Value::Void),
        (b"bool", Value::Bool(true)),
        (b"i8", Value::I8(-8)),
        (b"u8", Value::U8(200)),
        (b"i16", Value::I16(-1600)),
        (b"u16", Value::U16(60000)),
        (b"i32", Value::I32(-32)),
        (b"u32", Value::U32(4_000_000_000)),
        (b"i64", Value::I64(i64::MIN)),
        (b"f32", Value::F32(1.5)),
        (b"f64", Value::F64(-2.25)),
        (b"dec", Value::Decimal(2, 12345)),
        (b"ts", Value::Timestamp(1_700_000_000)),
        (b"str", Value::Str("h\u{e9}llo".as_bytes())),
        (b"bytes", Value::Bytes(&[0, 255, 1])),
        (
            b"table",
            Value::Table(vec![(b"a", Value::I64(1)), (b"b", Value::Table(vec![]))]),
        ),
        (
            b"array",
            Value::Array(vec![Value::Str(b"x"), Value::Array(vec![Value::Void])]),
        ),
    ]
}

/// Every property but message_id (and cluster_id), headers of every type.
pub(super) fn encode_all_but_message_id() -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    e.str(CONTENT_TYPE, b"text/plain", "ct").unwrap();
    e.begin_headers();
    for (k, v) in every_type() {
        e.key(k).unwrap();
        e.value(&v).unwrap();
    }
    e.end().unwrap();
    e.u8(DELIVERY_MODE, 1);
    e.u8(PRIORITY, 3);
    e.str(EXPIRATION, b"5000", "e").unwrap();
    e.timestamp(1_700_000_002);
    e.str(APP_ID, b"app", "a").unwrap();
    e.finish();
    out
}

fn encode_all(headers: &[(&[u8], Value<'_>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    e.str(CONTENT_TYPE, b"application/json", "ct").unwrap();
    e.str(CONTENT_ENCODING, b"gzip", "ce").unwrap();
    e.begin_headers();
    for (k, v) in headers {
        e.key(k).unwrap();
        e.value(v).unwrap();
    }
    e.end().unwrap();
    e.u8(DELIVERY_MODE, 2);
    e.u8(PRIORITY, 7);
    e.str(CORRELATION_ID, b"corr", "c").unwrap();
    e.str(REPLY_TO, b"replies", "r").unwrap();
    e.str(EXPIRATION, b"60000", "e").unwrap();
    e.str(MESSAGE_ID, b"id-1", "m").unwrap();
    e.timestamp(1_700_000_001);
    e.str(TYPE, b"t", "t").unwrap();
    e.str(USER_ID, b"guest", "u").unwrap();
    e.str(APP_ID, b"app", "a").unwrap();
    e.finish();
    out
}

#[test]
fn every_property_and_type_round_trips_and_amq_protocol_agrees() {
    let headers = every_type();
    let bytes = encode_all(&headers);
    let p = decode(&bytes).unwrap();
    assert_eq!(p.headers, headers);
    assert_eq!(p.str(CONTENT_TYPE), Some(&b"application/json"[..]));
    assert_eq!(p.str(CLUSTER_ID), None);
    assert_eq!(
        (p.delivery_mode, p.priority, p.timestamp),
        (2, 7, 1_700_000_001)
    );
    assert_eq!(p.str(APP_ID), Some(&b"app"[..]));
    assert_eq!(message_id(&bytes), Some(&b"id-1"[..]));
    assert_eq!(message_id(&[]), None);
    let t = theirs(&bytes);
    assert_eq!(
        t.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(t.message_id().as_ref().map(|s| s.as_str()), Some("id-1"));
    assert_eq!(*t.priority(), Some(7));
    assert_eq!(*t.timestamp(), Some(1_700_000_001));
    assert_eq!(t.app_id().as_ref().map(|s| s.as_str()), Some("app"));
    let h = t.headers().clone().unwrap();
    let h = h.inner();
    assert_eq!(h.len(), headers.len());
    assert_eq!(
        h.get(&ShortString::from("str")),
        Some(&AMQPValue::LongString(LongString::from("h\u{e9}llo")))
    );
    assert_eq!(
        h.get(&ShortString::from("u32")),
        Some(&AMQPValue::LongUInt(4_000_000_000))
    );
    assert_eq!(
        h.get(&ShortString::from("dec")),
        Some(&AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345
        }))
    );
}

#[test]
fn what_amq_protocol_writes_we_read() {
    let mut inner = FieldTable::default();
    inner.insert("n".into(), AMQPValue::LongLongInt(-5));
    let mut t = FieldTable::default();
    t.insert("t".into(), AMQPValue::FieldTable(inner));
    t.insert(
        "a".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(false)])),
    );
    t.insert(
        "x".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![1u8, 2])),
    );
    t.insert("v".into(), AMQPValue::Void);
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_headers(t)
        .with_correlation_id("c".into())
        .with_timestamp(9)
        .with_cluster_id("cl".into());
    let mut bytes = Vec::new();
    let gen = amq_protocol::protocol::basic::gen_properties(&props);
    let (buf, _) = cookie_factory::gen(gen, Vec::new()).unwrap();
    bytes.extend_from_slice(&buf);
    let p = decode(&bytes).unwrap();
    assert_eq!(p.str(CONTENT_TYPE), Some(&b"text/plain"[..]));
    assert_eq!(p.str(CORRELATION_ID), Some(&b"c"[..]));
    assert_eq!(p.str(CLUSTER_ID), Some(&b"cl"[..]));
    assert_eq!(p.timestamp, 9);
    let keys: Vec<&[u8]> = p.headers.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, [&b"a"[..], b"t", b"v", b"x"]);
    assert_eq!(p.headers[1].1, Value::Table(vec![(b"n", Value::I64(-5))]));
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    assert!(e
        .str(CONTENT_TYPE, &[b'a'; 256], "content_type")
        .unwrap_err()
        .contains("255"));
    assert!(e.str(TYPE, &[0xff], "type").unwrap_err().contains("UTF-8"));
    e.begin_headers();
    assert!(e.key(&[b'k'; 300]).is_err());
    assert!(e.value(&Value::Str(&[0xc3])).is_err());
    let mut deep = Value::Void;
    for _ in 0..40 {
        deep = Value::Array(vec![deep]);
    }
    assert!(e.value(&deep).unwrap_err().contains("nested"));
    // Truncated and unknown input never panics.
    let good = encode_all(&every_type());
    for n in 0..good.len() {
        let _ = decode(&good[..n]);
    }
    assert!(decode(&[0x20, 0, 0, 0, 0, 3, 1, b'k', b'?']).is_err());
}

fn arb_value() -> impl Strategy<Value = Value<'static>> {
    fn leak(v: Vec<u8>) -> &'static [u8] {
        Box::leak(v.into_boxed_slice())
    }
    let leaf = prop_oneof![
        Just(Value::Void),
        any::<bool>().prop_map(Value::Bool),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i32>().prop_map(Value::I32),
        any::<i64>().prop_map(Value::I64),
        any::<u32>().prop_map(|x| Value::F32(f32::from_bits(x & 0x7f7f_ffff))),
        any::<i64>().prop_map(|x| Value::F64(x as f64)),
        any::<u64>().prop_map(Value::Timestamp),
        ".{0,8}".prop_map(|s| Value::Str(leak(s.into_bytes()))),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|b| Value::Bytes(leak(b))),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(("[a-z]{0,6}", inner), 0..6).prop_map(|v| {
                Value::Table(
                    v.into_iter()
                        .map(|(k, v)| (leak(k.into_bytes()), v))
                        .collect(),
                )
            }),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_tables_round_trip(v in proptest::collection::vec(("[a-z]{0,10}", arb_value()), 0..8)) {
        let headers: Vec<(&[u8], Value<'_>)> = v.iter().map(|(k, v)| (k.as_bytes(), v.clone())).collect();
        let bytes = encode_all(&headers);
        let p = decode(&bytes).unwrap();
        prop_assert_eq!(&p.headers, &headers);
        // amq-protocol reads them too.
        let t = theirs(&bytes);
        prop_assert!(t.headers().is_some());
    }
}

proptest! {
    /// Any bytes: `checked` never panics, and what it passes `decode` reads (the broker's
    /// property bytes are never a reason to drop a delivery or the connection).
    #[test]
    fn what_check_passes_decode_reads(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let kept = checked(&bytes);
        prop_assert!(kept.is_empty() || kept.len() == bytes.len());
        prop_assert!(decode(kept).is_ok());
        prop_assert_eq!(message_id(kept), decode(kept).unwrap().str(MESSAGE_ID));
    }

    /// Valid encodings with a byte flipped: the same holds.
    #[test]
    fn corrupted_encodings_are_checked_or_read(
        v in proptest::collection::vec(("[a-z]{0,4}", arb_value()), 0..4),
        at in any::<usize>(),
        x in any::<u8>(),
    ) {
        let headers: Vec<(&[u8], Value<'_>)> = v.iter().map(|(k, v)| (k.as_bytes(), v.clone())).collect();
        let mut bytes = encode_all(&headers);
        let i = at % bytes.len();
        bytes[i] ^= x;
        let kept = checked(&bytes);
        prop_assert!(decode(kept).is_ok());
        prop_assert_eq!(message_id(kept), decode(kept).unwrap().str(MESSAGE_ID));
    }
}

//! Message properties (issue 12) against the real broker: what the library publishes
//! (amqp_publish_message) is read back by an independent client (lapin), property by property
//! and header by header; what lapin publishes with every property and value type the library
//! reads back, in a callback, from pull mode and from a dup. A per-message routing key that no
//! queue takes is reported UNROUTABLE, not taken for a deleted queue.
#![allow(unused_unsafe)]

mod common;

use common::*;
use lapin::BasicProperties;
use resilient_amqp::*;
use std::ffi::c_void;
use std::sync::Mutex;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Tests that stop the broker run alone.
static BROKER: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    BROKER.read().unwrap_or_else(|p| p.into_inner())
}

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    BROKER.write().unwrap_or_else(|p| p.into_inner())
}

fn publish_message_ok(q: u64, body: &[u8], m: &amqp_message) {
    let r = unsafe { amqp_publish_message(q, body.as_ptr() as *const c_void, body.len(), m) };
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_publish_message: {}",
        last_error()
    );
}

/// What a callback saw of one delivery.
#[derive(Debug, Clone)]
struct Seen {
    body: Vec<u8>,
    routing_key: String,
    exchange: String,
    props: BasicProperties,
    raw: Vec<u8>,
}

unsafe fn seen(d: &amqp_delivery) -> Seen {
    let bytes = |p: *const u8, n: usize| {
        if n == 0 {
            Vec::new()
        } else {
            unsafe { std::slice::from_raw_parts(p, n) }.to_vec()
        }
    };
    assert!(!d.message.is_null(), "amqp_delivery.message is never NULL");
    Seen {
        body: bytes(d.body, d.body_len),
        routing_key: String::from_utf8(bytes(d.routing_key as *const u8, d.routing_key_len))
            .unwrap(),
        exchange: String::from_utf8(bytes(d.exchange as *const u8, d.exchange_len)).unwrap(),
        props: unsafe { message_to_lapin(&*d.message) },
        raw: bytes(d.properties, d.properties_len),
    }
}

unsafe extern "C-unwind" fn collect_cb(
    d: *const amqp_delivery,
    userdata: *mut c_void,
) -> amqp_disposition_raw {
    let out = unsafe { &*(userdata as *const Mutex<Vec<Seen>>) };
    let s = std::panic::catch_unwind(|| unsafe { seen(&*d) });
    match s {
        Ok(s) => {
            out.lock().unwrap().push(s);
            amqp_disposition::AMQP_ACK as amqp_disposition_raw
        }
        Err(_) => amqp_disposition::AMQP_REJECT as amqp_disposition_raw,
    }
}

#[test]
fn every_property_and_header_type_published_is_read_back_by_lapin() {
    let _broker = shared();
    let c = ConnGuard::connect_ok(None);
    let name = unique_name("props-pub");
    let q = queue_open(
        c.h(),
        &name,
        None,
        None,
        Some("durable=false&persistent=false"),
    );
    let want = every_property("guest");
    let cm = CMessage::from_lapin(&want, None);
    publish_message_ok(q, b"with everything", &cm.m);
    // Only a content type and one header: the others stay unset.
    let mut small = CMessage::new();
    small.m.content_type = small.s("text/plain");
    let one = lapin::types::FieldTable::from(std::collections::BTreeMap::from([(
        "traceparent".into(),
        lapin::types::AMQPValue::LongString("00-aa-bb-01".into()),
    )]));
    let with_one =
        CMessage::from_lapin(&BasicProperties::default().with_headers(one.clone()), None);
    small.m.headers = with_one.m.headers;
    small.m.header_count = with_one.m.header_count;
    publish_message_ok(q, b"small", &small.m);
    // NULL: as amqp_publish.
    let r =
        unsafe { amqp_publish_message(q, b"plain".as_ptr() as *const c_void, 5, std::ptr::null()) };
    assert_eq!(r, amqp_result::AMQP_OK);
    wait_drained(q, T);
    let got = Reader::new().drain_at_least(&name, 3, T);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].body, b"with everything");
    assert_eq!(
        got[0].properties, want,
        "every property and header, as lapin reads them"
    );
    assert_eq!(
        got[1].properties,
        BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_headers(one),
        "a queue with persistent=false sends no delivery mode of its own"
    );
    assert_eq!(got[2].properties, BasicProperties::default());
    c.close_ok();
}

#[test]
fn every_property_and_type_lapin_publishes_is_read_in_the_callback_pull_mode_and_a_dup() {
    let _broker = shared();
    let c = ConnGuard::connect_ok(None);
    let name = unique_name("props-read");
    let q = queue_open(c.h(), &name, None, None, Some("durable=false"));
    let want = every_property("guest");
    let reader = Reader::new();
    reader.publish_props("", &name, b"one", want.clone());
    reader.publish_props("", &name, b"two", BasicProperties::default());
    let seen: &'static Mutex<Vec<Seen>> = Box::leak(Box::new(Mutex::new(Vec::new())));
    let r = unsafe { amqp_consume(q, Some(collect_cb), seen as *const _ as *mut c_void, 1) };
    assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
    wait_for("two deliveries", T, || seen.lock().unwrap().len() == 2);
    let all = seen.lock().unwrap().clone();
    assert_eq!(all[0].body, b"one");
    assert_eq!(
        all[0].props, want,
        "every property and header, read from the callback"
    );
    assert_eq!(all[0].routing_key, name);
    assert_eq!(all[0].exchange, "");
    assert!(!all[0].raw.is_empty(), "the raw property bytes");
    assert_eq!(all[1].props, BasicProperties::default());
    assert_eq!(unsafe { amqp_consume_stop(q) }, amqp_result::AMQP_OK);

    // Pull mode (another queue), and a dup that outlives the delivery it copied.
    let name = unique_name("props-pull");
    let q = queue_open(c.h(), &name, None, None, Some("durable=false"));
    reader.publish_props("", &name, b"three", want.clone());
    let r = unsafe { amqp_consume_pull(q, std::ptr::null_mut()) };
    assert_eq!(r, amqp_result::AMQP_OK, "{}", last_error());
    let mut out = [std::ptr::null::<amqp_delivery>(); 4];
    let mut n = 0usize;
    wait_for("a polled delivery", T, || {
        let r = unsafe { amqp_poll(q, out.as_mut_ptr(), 4, 100, &mut n) };
        r == amqp_result::AMQP_OK && n > 0
    });
    let d = out[0];
    let dup = unsafe { amqp_delivery_dup(d) };
    let polled = unsafe { seen_of(d) };
    assert_eq!(polled.props, want, "read from pull mode");
    assert_eq!(
        unsafe { amqp_settle(q, (*d).delivery_id, amqp_disposition::AMQP_ACK as i32) },
        amqp_result::AMQP_OK
    );
    unsafe { amqp_delivery_free(d) };
    let copied = unsafe { seen_of(dup) };
    assert_eq!(
        copied.props, want,
        "read from a dup after the original was freed"
    );
    assert_eq!(copied.raw, polled.raw);
    unsafe { amqp_delivery_free(dup) };
    c.close_ok();
}

unsafe fn seen_of(d: *const amqp_delivery) -> Seen {
    unsafe { seen(&*d) }
}

#[test]
fn a_per_message_routing_key_no_queue_takes_is_reported_unroutable_not_resent() {
    let _broker = shared();
    let c = ConnGuard::connect_ok(None);
    let name = unique_name("props-topic");
    let x = format!("ra-x-{name}");
    let q = queue_open(
        c.h(),
        &name,
        Some(&x),
        Some("orders.*"),
        Some("exchange_type=topic&durable=false"),
    );
    let reports = Reports::attach(q);
    let connects = cstats(c.h()).connects;
    let keys = [
        "orders.created",
        "invoices.paid",
        "orders.paid",
        "nobody.home",
    ];
    for (i, k) in keys.iter().enumerate() {
        let mut m = CMessage::new();
        m.m.routing_key = m.s(k);
        m.m.tag = i as u64 + 1;
        publish_message_ok(q, k.as_bytes(), &m.m);
    }
    let all = reports.wait_for(4, T);
    let status: Vec<(u64, amqp_report_status)> = all.iter().map(|r| (r.tag, r.status)).collect();
    use amqp_report_status::*;
    assert_eq!(
        status,
        [
            (1, AMQP_REPORT_CONFIRMED),
            (2, AMQP_REPORT_UNROUTABLE),
            (3, AMQP_REPORT_CONFIRMED),
            (4, AMQP_REPORT_UNROUTABLE)
        ]
    );
    assert_eq!(all[1].code, 312, "NO_ROUTE");
    assert!(all[1].reason.contains("invoices.paid"), "{}", all[1].reason);
    let s = qstats(q);
    assert_eq!(
        (s.unroutable, s.failed, s.resent, s.confirmed),
        (2, 2, 0, 2),
        "{}",
        fmt_qstats(&s)
    );
    assert_eq!(cstats(c.h()).connects, connects, "no reconnect");
    let got = Reader::new().drain_at_least(&name, 2, T);
    let rks: Vec<&str> = got.iter().map(|g| g.routing_key.as_str()).collect();
    assert_eq!(rks, ["orders.created", "orders.paid"]);
    assert!(got.iter().all(|g| g.exchange == x));
    c.close_ok();
}

#[test]
fn properties_survive_a_reconnect_and_are_resent_byte_identical() {
    let _broker = alone();
    let c = ConnGuard::connect_ok(Some("reconnect_delay_ms=50&reconnect_delay_max_ms=500"));
    let name = unique_name("props-reconnect");
    let q = queue_open(
        c.h(),
        &name,
        None,
        None,
        Some("durable=true&persistent=true"),
    );
    let want = every_property("guest");
    let mut app = AppStopped::stop();
    for i in 0..50u64 {
        let mut m = CMessage::from_lapin(&want, None);
        m.m.delivery_mode = 0; // the queue's: persistent
        publish_message_ok(q, &seq_body(i), &m.m);
    }
    app.start();
    assert_eq!(
        unsafe { amqp_wait_connected(c.h(), 30_000) },
        amqp_result::AMQP_OK
    );
    wait_drained(q, T);
    let got = Reader::new().drain_at_least(&name, 50, T);
    assert_eq!(got.len(), 50);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.body, seq_body(i as u64));
        assert_eq!(g.properties, want, "message {i}");
    }
    Reader::new().delete(&name);
    c.close_ok();
}

#[test]
fn properties_too_large_for_the_frame_max_are_reported_and_the_link_stays() {
    // A content header is one frame: properties over the negotiated frame_max would make
    // the broker close the connection on every resend. Such a message is reported
    // TOO_LARGE instead, and the messages around it go through on the same connection.
    let _broker = shared();
    let c = ConnGuard::connect(&format!("{}?frame_max=4096", uri()), None);
    let name = unique_name("props-framemax");
    let q = queue_open(c.h(), &name, None, None, Some("durable=false"));
    let reports = Reports::attach(q);
    wait_for("connected", T, || cstats(c.h()).connects >= 1);
    let connects = cstats(c.h()).connects;
    let big = "x".repeat(6000);
    for (i, id) in ["small-1", big.as_str(), "small-2"].iter().enumerate() {
        let mut m = CMessage::new();
        m.m.message_id = std::ptr::null();
        m.m.correlation_id = m.s(id);
        m.m.tag = i as u64 + 1;
        // a short string holds 255 bytes: the big one goes in a header
        if id.len() > 255 {
            m.m.correlation_id = std::ptr::null();
            let key = m.s("big");
            let value = m.s(id);
            let field = amqp_field {
                key,
                value: amqp_value {
                    kind: amqp_value_kind::AMQP_VALUE_STRING as u32,
                    integer: 0,
                    number: 0.0,
                    bytes: value as *const c_void,
                    len: id.len(),
                },
            };
            let fields = Box::leak(Box::new([field]));
            m.m.headers = fields.as_ptr();
            m.m.header_count = 1;
        }
        publish_message_ok(q, b"body", &m.m);
    }
    let all = reports.wait_for(3, T);
    let mut status: Vec<(u64, amqp_report_status)> =
        all.iter().map(|r| (r.tag, r.status)).collect();
    use amqp_report_status::*;
    status.sort_by_key(|s| s.0);
    assert_eq!(
        status,
        [
            (1, AMQP_REPORT_CONFIRMED),
            (2, AMQP_REPORT_TOO_LARGE),
            (3, AMQP_REPORT_CONFIRMED)
        ]
    );
    let big_report = all.iter().find(|r| r.tag == 2).unwrap();
    assert!(
        big_report.reason.contains("frame_max"),
        "{}",
        big_report.reason
    );
    assert_eq!(
        cstats(c.h()).connects,
        connects,
        "the connection was not lost"
    );
    assert_eq!(queue_messages(&name), 2);
    c.close_ok();
}

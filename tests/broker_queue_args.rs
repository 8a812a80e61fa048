//! Issue 12, queue and consumer half, against the real broker:
//! - every named argument option, and `arg.NAME=TYPE:VALUE`, reaches the broker
//!   (`list_queues arguments`), as do exclusive / auto_delete / durable;
//! - a queue that another client (lapin) declared with arguments opens with passive=true,
//!   and with the same arguments given as options; different ones are the broker's 406;
//! - a server-named exclusive queue: its name is readable (amqp_queue_name), it survives
//!   close_all_connections with a new name and a redone binding, its consumer follows it,
//!   and messages published after the reconnect reach it;
//! - a named exclusive queue with consumers works across a reconnect (its 405 while the old
//!   one lingers is retried);
//! - consumer tags NAME-<n>, consumer priority and exclusive consumers (list_consumers);
//! - a stream queue: publish + consume from the first offset.
//!
//! The tests run one at a time (`serial`): one closes every connection on the broker.
#![allow(unused_unsafe)]

mod common;

use common::*;
use lapin::types::{AMQPValue, FieldTable};
use resilient_amqp::*;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// amqp_queue_name, with the length check.
fn queue_name(q: u64) -> String {
    let mut buf = [0u8; 300];
    let mut len = 0usize;
    let r = unsafe { amqp_queue_name(q, buf.as_mut_ptr().cast(), buf.len(), &mut len) };
    assert_eq!(r, amqp_result::AMQP_OK, "amqp_queue_name: {}", last_error());
    let name = std::ffi::CStr::from_bytes_until_nul(&buf)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(name.len(), len);
    name
}

/// `list_consumers` rows of `queue`: (tag, arguments).
fn consumers_of(queue: &str) -> Vec<(String, String)> {
    let out = ctl("-q list_consumers --no-table-headers queue_name consumer_tag arguments");
    out.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols.len() == 3 && cols[0] == queue).then(|| (cols[1].into(), cols[2].into()))
        })
        .collect()
}

fn wait_bodies(rec: &Arc<Recorder>, n: usize) {
    let ok = poll(T, Duration::from_millis(20), || rec.unique_bodies() >= n);
    assert!(ok, "got {} of {n} messages", rec.unique_bodies());
}

/// A lapin client declaring a queue with arguments, as another application would.
fn lapin_declare(queue: &str, args: FieldTable) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = lapin::Connection::connect(&uri(), Default::default())
            .await
            .expect("lapin connect");
        let ch = conn.create_channel().await.unwrap();
        let opts = lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(queue.into(), opts, args)
            .await
            .expect("lapin declare");
        let _ = conn.close(200, "done".into()).await;
    });
}

#[test]
fn every_argument_reaches_the_broker() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("args");
    let q = queue_open(
        conn.h(),
        &name,
        None,
        None,
        Some(
            "message_ttl_ms=60000&expires_ms=600000&max_length=10&max_length_bytes=1048576\
             &overflow=reject-publish&dead_letter_exchange=ra-dlx\
             &dead_letter_routing_key=dead&max_priority=5&single_active_consumer=true\
             &arg.x-queue-mode=str:lazy&arg.x-custom=int:-3&arg.x-flag=bool:false",
        ),
    );
    publish_ok(q, b"one");
    wait_drained(q, T);
    let info = queue_info(&name, &["arguments", "durable", "auto_delete", "exclusive"]).unwrap();
    let args = &info[0];
    for needle in [
        "{\"x-message-ttl\",60000}",
        "{\"x-expires\",600000}",
        "{\"x-max-length\",10}",
        "{\"x-max-length-bytes\",1048576}",
        "{\"x-overflow\",\"reject-publish\"}",
        "{\"x-dead-letter-exchange\",\"ra-dlx\"}",
        "{\"x-dead-letter-routing-key\",\"dead\"}",
        "{\"x-max-priority\",5}",
        "{\"x-single-active-consumer\",true}",
        "{\"x-queue-mode\",\"lazy\"}",
        "{\"x-custom\",-3}",
        "{\"x-flag\",false}",
    ] {
        assert!(args.contains(needle), "{needle} not in {args}");
    }
    assert_eq!(&info[1..], ["true", "false", "false"]);

    // exclusive, auto_delete, durable=false reach the broker too.
    let name2 = unique_name("flags");
    let _q2 = queue_open(
        conn.h(),
        &name2,
        None,
        None,
        Some("durable=false&exclusive=true&auto_delete=true"),
    );
    let info = queue_info(&name2, &["durable", "auto_delete", "exclusive"]).unwrap();
    assert_eq!(info, ["false", "true", "true"]);
    conn.close_ok();
    Reader::new().delete(&name);
}

#[test]
fn a_queue_declared_by_another_client_opens_passive_or_with_the_same_arguments() {
    let _s = serial();
    let name = unique_name("predeclared");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1000));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("ra-dlx".into()),
    );
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    lapin_declare(&name, args);

    let conn = ConnGuard::connect_ok(None);
    // Without the arguments: the broker's 406, as the issue reports.
    let (r, _) = try_queue_open(conn.h(), &name, None, None, None);
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER);
    assert!(
        last_error().contains("inequivalent arg"),
        "{}",
        last_error()
    );
    // passive=true: whatever its arguments.
    let q = queue_open(conn.h(), &name, None, None, Some("passive=true"));
    publish_ok(q, b"passive");
    wait_drained(q, T);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    wait_bodies(&rec, 1);
    // The same arguments as options (integer widths differ: RabbitMQ compares values).
    let q2 = queue_open(
        conn.h(),
        &name,
        None,
        None,
        Some("max_length=1000&dead_letter_exchange=ra-dlx&queue_type=quorum"),
    );
    publish_ok(q2, b"same");
    wait_bodies(&rec, 2);
    // A passive open of a queue that does not exist is the broker's 404.
    let (r, _) = try_queue_open(
        conn.h(),
        &unique_name("absent"),
        None,
        None,
        Some("passive=true"),
    );
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER);
    assert!(last_error().contains("NOT_FOUND"), "{}", last_error());
    conn.close_ok();
    rec.assert_no_panic();
    Reader::new().delete(&name);
}

#[test]
fn a_server_named_queue_follows_reconnects() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let exchange = unique_name("sn-ex");
    let q = queue_open(
        conn.h(),
        "",
        Some(&exchange),
        Some("rk"),
        Some("durable=false&exchange_type=direct"),
    );
    let first = queue_name(q);
    assert!(first.starts_with("amq.gen-"), "{first}");
    let info = queue_info(&first, &["exclusive", "durable"]).unwrap();
    assert_eq!(info, ["true", "false"]);
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 2);
    for i in 0..5 {
        publish_ok(q, format!("before-{i}").as_bytes());
    }
    wait_bodies(&rec, 5);

    let connects = cstats(conn.h()).connects;
    close_all_connections();
    // Published while the connection is down or coming back: buffered, sent to the new queue.
    for i in 0..5 {
        publish_ok(q, format!("during-{i}").as_bytes());
    }
    wait_reconnected(conn.h(), connects + 1, T);
    let renamed = poll(T, Duration::from_millis(20), || {
        let n = queue_name(q);
        !n.is_empty() && n != first
    });
    assert!(renamed, "the queue kept its name {first}");
    let second = queue_name(q);
    let ok = poll(T, Duration::from_millis(100), || {
        let queues = list_queues(&["exclusive"]);
        queues.contains_key(&second) && !queues.contains_key(&first)
    });
    assert!(ok, "{second} not listed or {first} still there");
    for i in 0..5 {
        publish_ok(q, format!("after-{i}").as_bytes());
    }
    wait_bodies(&rec, 15);
    wait_drained(q, T);
    // Its consumers restarted on the new name, on the publish link (the consume link
    // never opened: the queue is exclusive to the publish link's connection).
    assert_eq!(consumers_of(&second).len(), 2);
    assert_eq!(cstats(conn.h()).consume_connects, 0);
    conn.close_ok();
    rec.assert_no_panic();
}

#[test]
fn a_named_exclusive_queue_with_consumers_survives_a_reconnect() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("excl");
    // durable (the default) and exclusive: RabbitMQ 3.10 accepts both, and makes the
    // queue transient (an exclusive queue dies with its connection anyway).
    let q = queue_open(conn.h(), &name, None, None, Some("exclusive=true"));
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    publish_ok(q, b"a");
    wait_bodies(&rec, 1);
    let connects = cstats(conn.h()).connects;
    close_all_connections();
    wait_reconnected(conn.h(), connects + 1, T);
    publish_ok(q, b"b");
    wait_bodies(&rec, 2);
    wait_drained(q, T);
    assert_eq!(
        queue_info(&name, &["exclusive", "durable"]).unwrap(),
        ["true", "false"]
    );
    assert_eq!(queue_stats_failed(q), 0);
    conn.close_ok();
    rec.assert_no_panic();
}

/// Another client holding an exclusive queue `queue` until dropped.
struct ExclusiveOwner {
    rt: tokio::runtime::Runtime,
    conn: Option<lapin::Connection>,
}

impl ExclusiveOwner {
    fn take(queue: &str) -> ExclusiveOwner {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let conn = rt.block_on(async {
            let conn = lapin::Connection::connect(&uri(), Default::default())
                .await
                .expect("owner: connect");
            let ch = conn.create_channel().await.unwrap();
            let opts = lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            };
            ch.queue_declare(queue.into(), opts, Default::default())
                .await
                .expect("owner: exclusive declare");
            conn
        });
        ExclusiveOwner {
            rt,
            conn: Some(conn),
        }
    }
}

impl Drop for ExclusiveOwner {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = self.rt.block_on(conn.close(200, "done".into()));
        }
    }
}

/// A 405 RESOURCE_LOCKED on an exclusive queue: at open it is the call's AMQP_ERR_BROKER;
/// after a reconnect (the old connection's queue lingering; here another client holding
/// the name meanwhile) it is retried with backoff, and the queue does not fail.
#[test]
fn an_exclusive_queue_locked_after_a_reconnect_is_retried() {
    let _s = serial();
    let name = unique_name("locked");
    {
        let _owner = ExclusiveOwner::take(&name);
        let conn = ConnGuard::connect_ok(None);
        let opts = Some("durable=false&exclusive=true");
        let (r, _) = try_queue_open(conn.h(), &name, None, None, opts);
        assert_eq!(r, amqp_result::AMQP_ERR_BROKER);
        assert!(last_error().contains("RESOURCE_LOCKED"), "{}", last_error());
        conn.close_ok();
    }
    let conn = ConnGuard::connect_ok(Some("reconnect_delay_ms=1500&reconnect_delay_max_ms=1500"));
    let q = queue_open(
        conn.h(),
        &name,
        None,
        None,
        Some("durable=false&exclusive=true"),
    );
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    let connects = cstats(conn.h()).connects;
    close_all_connections();
    let owner = ExclusiveOwner::take(&name);
    publish_ok(q, b"held while locked");
    wait_reconnected(conn.h(), connects + 1, T);
    std::thread::sleep(Duration::from_millis(1000));
    let s = qstats(q);
    assert_eq!((s.failed, s.queue_failed), (0, 0), "{}", fmt_qstats(&s));
    assert_eq!(rec.started(), 0);
    drop(owner);
    wait_bodies(&rec, 1);
    wait_drained(q, T);
    assert_eq!(queue_stats_failed(q), 0);
    conn.close_ok();
    rec.assert_no_panic();
}

fn queue_stats_failed(q: u64) -> u64 {
    let s = qstats(q);
    s.failed + s.queue_failed
}

#[test]
fn consumer_names_priority_and_exclusive_reach_the_broker() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("consumers");
    let q = queue_open(
        conn.h(),
        &name,
        None,
        None,
        Some("consumer_name=billing&consumer_priority=7"),
    );
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 3);
    let mut rows = consumers_of(&name);
    rows.sort();
    let tags: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tags, ["billing-0", "billing-1", "billing-2"]);
    for (_, args) in &rows {
        assert!(args.contains("{\"x-priority\",7}"), "{args}");
    }

    // An exclusive consumer blocks a second one, from another connection too.
    let name2 = unique_name("excl-consumer");
    let q2 = queue_open(
        conn.h(),
        &name2,
        None,
        None,
        Some("consumer_exclusive=true"),
    );
    assert_eq!(
        try_consume(q2, &rec, 2),
        amqp_result::AMQP_ERR_INVALID_ARGUMENT,
        "repeat 2 with an exclusive consumer"
    );
    consume(q2, &rec, 1);
    let other = ConnGuard::connect_ok(None);
    let q3 = queue_open(other.h(), &name2, None, None, None);
    let rec2 = Recorder::acking(Duration::ZERO);
    assert_eq!(try_consume(q3, &rec2, 1), amqp_result::AMQP_ERR_BROKER);
    assert!(last_error().contains("ACCESS_REFUSED"), "{}", last_error());
    publish_ok(q3, b"to the exclusive one");
    wait_bodies(&rec, 1);
    assert_eq!(rec2.started(), 0);
    other.close_ok();
    conn.close_ok();
    let r = Reader::new();
    r.delete(&name);
    r.delete(&name2);
}

#[test]
fn a_stream_queue_publishes_and_consumes() {
    let _s = serial();
    let conn = ConnGuard::connect_ok(None);
    let name = unique_name("stream");
    let q = queue_open(
        conn.h(),
        &name,
        None,
        None,
        Some("queue_type=stream&prefetch=50&consumer_arg.x-stream-offset=str:first"),
    );
    for i in 0..20 {
        publish_ok(q, format!("s-{i}").as_bytes());
    }
    wait_drained(q, T);
    assert_eq!(queue_info(&name, &["type"]).unwrap(), ["stream"]);
    // From the first offset: the messages published before the consumer too.
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    wait_bodies(&rec, 20);
    publish_ok(q, b"s-late");
    wait_bodies(&rec, 21);
    conn.close_ok();
    rec.assert_no_panic();
    Reader::new().delete(&name);
}

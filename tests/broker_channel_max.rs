//! One channel per queue, at most channel_max per connection: a queue too many is refused at
//! open with AMQP_ERR_BROKER (before the first connect too, against the limit we propose), and
//! queues beyond a lower limit agreed on a reconnect wait, buffering, with one ERROR (not one per
//! reconnect) and no spinning.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// The broker tests here run one at a time: one lowers the broker's channel_max and closes every
/// connection, which the others must not see.
static BROKER: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    BROKER.lock().unwrap_or_else(|p| p.into_inner())
}

fn opened(conn: u64, names: &[String]) -> Vec<u64> {
    names
        .iter()
        .map(|n| queue_open(conn, n, None, None, Some("durable=false&persistent=false")))
        .collect()
}

fn refused_one_too_many(conn: u64, limit: usize) {
    let (r, _) = try_queue_open(conn, &unique_name("one-too-many"), None, None, None);
    assert_eq!(r, amqp_result::AMQP_ERR_BROKER);
    let e = last_error();
    let expected = format!(
        "the broker allows {limit} channels per connection (channel_max); this connection has \
         {limit} queues: open more on another connection"
    );
    assert_eq!(e, expected);
}

#[test]
fn before_the_first_connect_the_proposed_limit_counts() {
    let c = ConnGuard::connect(&format!("{DEAD_URI}?channel_max=5"), None);
    let names: Vec<String> = (0..5).map(|_| unique_name("cm-dead")).collect();
    opened(c.h(), &names);
    refused_one_too_many(c.h(), 5);
    assert_eq!(cstats(c.h()).queues, 5);
}

#[test]
fn a_queue_beyond_channel_max_is_refused_and_the_others_all_send() {
    let _serial = one_at_a_time();
    let c = ConnGuard::connect(&format!("{}?channel_max=20", uri()), None);
    assert_eq!(amqp_wait_connected(c.h(), 10_000), amqp_result::AMQP_OK);
    let names: Vec<String> = (0..20).map(|_| unique_name("cm-20")).collect();
    let qs = opened(c.h(), &names);
    refused_one_too_many(c.h(), 20);
    for &q in &qs {
        publish_ok(q, b"x");
    }
    let (r, unsent) = c.close(10_000);
    assert_eq!((r, unsent), (amqp_result::AMQP_OK, 0));
    let reader = Reader::new();
    for n in &names {
        assert_eq!(reader.count(n), Some((1, 0)), "{n}");
        reader.delete(n);
    }
}

#[test]
fn at_rabbitmqs_2047() {
    let _serial = one_at_a_time();
    let c = ConnGuard::connect_ok(None);
    let started = Instant::now();
    let names: Vec<String> = (0..2047).map(|_| unique_name("cm-2047")).collect();
    let qs = opened(c.h(), &names);
    let took = started.elapsed();
    refused_one_too_many(c.h(), 2047);
    publish_ok(qs[2046], b"last");
    let (r, unsent) = c.close(30_000);
    assert_eq!((r, unsent), (amqp_result::AMQP_OK, 0));
    assert_eq!(queue_messages(&names[2046]), 1);
    println!("2047 queues opened in {took:?}");
    let reader = Reader::new();
    names.iter().for_each(|n| reader.delete(n));
}

/// Sets the broker's channel_max for new connections; back to 2047 on drop.
struct BrokerChannelMax;

impl BrokerChannelMax {
    fn set(n: u16) -> BrokerChannelMax {
        ctl(&format!(
            "eval 'application:set_env(rabbit, channel_max, {n}).'"
        ));
        BrokerChannelMax
    }
}

impl Drop for BrokerChannelMax {
    fn drop(&mut self) {
        let _ = ctl_try("eval 'application:set_env(rabbit, channel_max, 2047).'");
    }
}

#[test]
fn queues_beyond_a_lower_limit_after_a_reconnect_wait_with_one_error() {
    let _serial = one_at_a_time();
    let logs = LogLines::capture(amqp_log_level::AMQP_LOG_WARN);
    let c = ConnGuard::connect(
        &format!("{}?channel_max=20", uri()),
        Some("reconnect_delay_max_ms=500"),
    );
    assert_eq!(amqp_wait_connected(c.h(), 10_000), amqp_result::AMQP_OK);
    let names: Vec<String> = (0..15).map(|_| unique_name("cm-lower")).collect();
    let qs = opened(c.h(), &names);
    let lower = BrokerChannelMax::set(10);
    let reconnects = 3;
    for i in 0..reconnects {
        let before = cstats(c.h()).connects;
        close_all_connections();
        wait_reconnected(c.h(), before + 1, T);
        if i == 0 {
            for &q in &qs {
                publish_ok(q, b"while limited");
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The first 10 send; the 5 beyond wait, buffered.
    wait_for("the first 10 queues' confirms", T, || {
        qs[..10].iter().all(|&q| qstats(q).buffered == 0)
    });
    std::thread::sleep(Duration::from_secs(1));
    for &q in &qs[10..] {
        assert_eq!(qstats(q).buffered, 1, "waits for a channel");
    }
    let errors: Vec<String> = logs
        .lines()
        .iter()
        .filter(|(l, m)| *l == amqp_log_level::AMQP_LOG_ERROR as i32 && m.contains(&names[10]))
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one ERROR, not one per reconnect: {errors:#?}"
    );
    assert!(
        errors[0].contains("allows 10 channels") && errors[0].contains(&names[10]),
        "{}",
        errors[0]
    );
    let s = cstats(c.h());
    assert_eq!(s.connects, 1 + reconnects, "no reconnect loop: {s:?}");
    // A connection that allows them all: everything is sent.
    drop(lower);
    let before = cstats(c.h()).connects;
    close_all_connections();
    wait_reconnected(c.h(), before + 1, T);
    let (r, unsent) = c.close(10_000);
    assert_eq!((r, unsent), (amqp_result::AMQP_OK, 0));
    let _ = unsafe { amqp_set_log_callback(None, 0, std::ptr::null_mut()) };
    let reader = Reader::new();
    names.iter().for_each(|n| reader.delete(n));
}

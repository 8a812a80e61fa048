//! Contract v2's pull mode against the real broker: amqp_consume_pull, amqp_poll in batches,
//! the notify descriptor (level-triggered readiness seen with poll(2) and epoll, a new
//! descriptor per call), timeouts and amqp_poll_wake, settling polled deliveries (stale after
//! a reconnect), the prefetch bound, stop/start, close and failure waking a blocked poll with
//! AMQP_ERR_CLOSED, and invalid arguments.
//!
//! The tests of this file run one at a time (`serial`): one of them closes every connection
//! on the broker, and the others count deliveries exactly.
#![allow(unused_unsafe)]

mod common;

use common::*;
use resilient_amqp::*;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn seed(queue: &str, range: std::ops::Range<u64>) {
    let bodies: Vec<Vec<u8>> = range.map(seq_body).collect();
    Reader::new().publish(queue, &bodies);
}

/// amqp_consume_pull, asserting AMQP_OK; the new descriptor.
fn pull(q: u64) -> i32 {
    let mut fd: i32 = -1;
    let r = unsafe { amqp_consume_pull(q, &mut fd) };
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_consume_pull: {}",
        last_error()
    );
    assert!(fd > 2, "a new descriptor, got {fd}");
    fd
}

/// One polled delivery, copied out and freed.
#[derive(Debug, Clone)]
struct Got {
    body: Vec<u8>,
    id: u64,
    redelivered: bool,
    queue: u64,
    routing_key: Vec<u8>,
}

/// amqp_poll: the result and what it handed out (each freed after copying).
fn poll_batch(q: u64, max: usize, timeout_ms: u32) -> (amqp_result, Vec<Got>) {
    let mut out = vec![std::ptr::null::<amqp_delivery>(); max];
    let mut count: usize = 999;
    let r = unsafe { amqp_poll(q, out.as_mut_ptr(), max, timeout_ms, &mut count) };
    if r != amqp_result::AMQP_OK {
        assert_eq!(count, 0, "*count is written on failure too");
        return (r, Vec::new());
    }
    assert!((1..=max).contains(&count), "count {count}");
    let got = out[..count]
        .iter()
        .map(|&p| {
            assert!(!p.is_null());
            let d = unsafe { &*p };
            let bytes = |p: *const u8, n: usize| {
                if n == 0 {
                    Vec::new()
                } else {
                    unsafe { std::slice::from_raw_parts(p, n) }.to_vec()
                }
            };
            let g = Got {
                body: bytes(d.body, d.body_len),
                id: d.delivery_id,
                redelivered: d.redelivered,
                queue: d.queue,
                routing_key: bytes(d.routing_key as *const u8, d.routing_key_len),
            };
            unsafe { amqp_delivery_free(p) };
            g
        })
        .collect();
    (r, got)
}

/// Polls with timeout 0 until AMQP_ERR_TIMEOUT (what an event loop does on readiness).
fn drain(q: u64, max: usize) -> Vec<Got> {
    let mut all = Vec::new();
    loop {
        let (r, got) = poll_batch(q, max, 0);
        if r == amqp_result::AMQP_ERR_TIMEOUT {
            return all;
        }
        assert_eq!(r, amqp_result::AMQP_OK, "amqp_poll: {}", last_error());
        all.extend(got);
    }
}

/// Polls (blocking up to 1 s each) until `n` deliveries were handed out.
fn poll_until(q: u64, n: usize) -> Vec<Got> {
    let mut all = Vec::new();
    let deadline = Instant::now() + T;
    while all.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} polled",
            all.len()
        );
        let (r, got) = poll_batch(q, 16, 1000);
        assert!(
            matches!(r, amqp_result::AMQP_OK | amqp_result::AMQP_ERR_TIMEOUT),
            "{r:?}"
        );
        all.extend(got);
    }
    all
}

fn settle_all(q: u64, got: &[Got], d: amqp_disposition) -> Vec<amqp_result> {
    let ids: Vec<u64> = got.iter().map(|g| g.id).collect();
    let mut results = vec![amqp_result::AMQP_ERR_INTERNAL; ids.len()];
    unsafe {
        amqp_settle_many(
            q,
            ids.as_ptr(),
            ids.len(),
            d as amqp_disposition_raw,
            results.as_mut_ptr(),
        )
    };
    results
}

/// The descriptor is readable within `timeout_ms` (poll(2)).
fn readable(fd: i32, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    assert!(n >= 0, "poll(2) failed");
    n == 1 && p.revents & libc::POLLIN != 0
}

fn close_fd(fd: i32) {
    assert_eq!(unsafe { libc::close(fd) }, 0);
}

/// Batches, readiness (poll(2) and epoll), the prefetch bound while nothing is settled,
/// settle_many of polled deliveries, a new descriptor per call.
#[test]
fn poll_batches_readiness_prefetch_and_settle() {
    let _s = serial();
    let c_guard = ConnGuard::connect_ok(None);
    let name = unique_name("pull-batches");
    let q = queue_open(c_guard.h(), &name, None, None, Some("prefetch=10"));
    let fd = pull(q);
    let fd2 = pull(q);
    assert_ne!(fd, fd2, "a new descriptor per call");
    for f in [fd, fd2] {
        let fd_flags = unsafe { libc::fcntl(f, libc::F_GETFD) };
        let fl_flags = unsafe { libc::fcntl(f, libc::F_GETFL) };
        assert!(fd_flags & libc::FD_CLOEXEC != 0 && fl_flags & libc::O_NONBLOCK != 0);
    }
    close_fd(fd); // the caller's to close: the library keeps working
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 7,
    };
    assert_eq!(
        unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd2, &mut ev) },
        0
    );
    let epoll_ready = |ms: i32| {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        unsafe { libc::epoll_wait(epfd, evs.as_mut_ptr(), 4, ms) }
    };
    assert!(!readable(fd2, 200), "nothing waits yet");
    assert_eq!(epoll_ready(0), 0);
    seed(&name, 0..25);
    assert!(readable(fd2, 10_000), "readable once deliveries wait");
    assert_eq!(epoll_ready(1000), 1, "epoll sees it too");
    // Let the whole prefetch arrive, then take it in batches of 4.
    wait_for("10 unacked at the broker", T, || {
        queue_counts(&name).is_some_and(|c| c.unacked == 10)
    });
    let (r, first) = poll_batch(q, 4, 0);
    assert_eq!(r, amqp_result::AMQP_OK);
    assert_eq!(first.len(), 4, "a full batch");
    let mut got = first;
    got.extend(drain(q, 4));
    assert_eq!(got.len(), 10, "the prefetch bounds what waits");
    assert!(!readable(fd2, 0), "not readable once drained");
    assert_eq!(epoll_ready(0), 0, "level-triggered: epoll is quiet too");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        drain(q, 8).len(),
        0,
        "nothing beyond the prefetch while unsettled"
    );
    let s = qstats(q);
    assert_eq!((s.unsettled, s.delivered), (10, 10), "{}", fmt_qstats(&s));
    for g in &got {
        assert_eq!(g.queue, q);
        assert_eq!(g.routing_key, name.as_bytes());
        assert!(g.id >= 1 << 52 && g.id < 1 << 53);
    }
    // Settle in batches until all 25 came.
    let mut all = got.clone();
    let mut to_settle = got;
    while !to_settle.is_empty() {
        let results = settle_all(q, &to_settle, amqp_disposition::AMQP_ACK);
        assert!(
            results.iter().all(|r| *r == amqp_result::AMQP_OK),
            "{results:?}"
        );
        to_settle = if all.len() < 25 {
            poll_until(q, 1)
        } else {
            Vec::new()
        };
        to_settle.extend(drain(q, 16));
        all.extend(to_settle.iter().cloned());
    }
    let (missing, dups, foreign) = check_seqs(all.iter().map(|g| g.body.as_slice()), 25);
    assert_eq!((missing, dups, foreign), (vec![], 0, 0));
    wait_queue_messages(&name, 0, T);
    assert_eq!(
        settle_all(q, &all[..1], amqp_disposition::AMQP_ACK),
        [amqp_result::AMQP_ERR_ALREADY_SETTLED]
    );
    let s = qstats(q);
    assert_eq!((s.unsettled, s.acked), (0, 25), "{}", fmt_qstats(&s));
    unsafe { libc::close(epfd) };
    close_fd(fd2);
    c_guard.close_ok();
}

/// An empty poll times out with *count = 0 and no error text; amqp_poll_wake ends a blocked
/// poll from another thread, and a wake with no poll blocked is kept for the next one.
#[test]
fn poll_timeout_and_wake() {
    let _s = serial();
    let c_guard = ConnGuard::connect_ok(None);
    let name = unique_name("pull-wake");
    let q = open_simple(c_guard.h(), &name);
    assert_eq!(
        unsafe { amqp_consume_pull(q, std::ptr::null_mut()) },
        amqp_result::AMQP_OK,
        "notify_fd may be NULL"
    );
    let (r, _) = poll_batch(q, 8, 0);
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    assert_eq!(last_error(), "", "no error text for an empty poll");
    let t0 = Instant::now();
    let (r, _) = poll_batch(q, 8, 300);
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    assert!(
        t0.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t0.elapsed()
    );
    // A blocked poll, woken from another thread.
    let poller = std::thread::spawn(move || {
        let t0 = Instant::now();
        let (r, _) = poll_batch(q, 8, 20_000);
        (r, t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(amqp_poll_wake(q), amqp_result::AMQP_OK);
    let (r, took) = poller.join().unwrap();
    assert_eq!(r, amqp_result::AMQP_ERR_TIMEOUT);
    assert!(
        took < Duration::from_secs(5),
        "woken at once, took {took:?}"
    );
    // A kept wake: the next poll that would wait returns at once, and only that one.
    assert_eq!(amqp_poll_wake(q), amqp_result::AMQP_OK);
    let t0 = Instant::now();
    assert_eq!(poll_batch(q, 8, 20_000).0, amqp_result::AMQP_ERR_TIMEOUT);
    assert!(t0.elapsed() < Duration::from_secs(5));
    let t0 = Instant::now();
    assert_eq!(poll_batch(q, 8, 200).0, amqp_result::AMQP_ERR_TIMEOUT);
    assert!(
        t0.elapsed() >= Duration::from_millis(190),
        "the wake was used up"
    );
    // A poll that is waiting gets a delivery as soon as it arrives.
    let poller = std::thread::spawn(move || poll_batch(q, 8, 20_000));
    std::thread::sleep(Duration::from_millis(200));
    seed(&name, 0..1);
    let (r, got) = poller.join().unwrap();
    assert_eq!(r, amqp_result::AMQP_OK);
    assert_eq!(
        settle_all(q, &got, amqp_disposition::AMQP_ACK),
        [amqp_result::AMQP_OK]
    );
    wait_queue_messages(&name, 0, T);
    c_guard.close_ok();
}

/// Polled deliveries of a lost connection are stale (the broker redelivers them); those
/// still waiting in the library when it was lost are never handed out.
#[test]
fn polled_deliveries_are_stale_after_a_reconnect() {
    let _s = serial();
    let c_guard = ConnGuard::connect_ok(Some("reconnect_delay_ms=50"));
    let c = c_guard.h();
    let name = unique_name("pull-stale");
    let q = queue_open(c, &name, None, None, Some("prefetch=5"));
    let fd = pull(q);
    seed(&name, 0..5);
    wait_for("5 unacked at the broker", T, || {
        queue_counts(&name).is_some_and(|c| c.unacked == 5)
    });
    let (r, old) = poll_batch(q, 2, 0);
    assert_eq!((r, old.len()), (amqp_result::AMQP_OK, 2), "3 stay waiting");
    let connects = cstats(c).connects;
    close_all_connections();
    wait_reconnected(c, connects, T);
    assert_eq!(
        settle_all(q, &old, amqp_disposition::AMQP_ACK),
        [amqp_result::AMQP_ERR_STALE_DELIVERY; 2]
    );
    assert_eq!(qstats(q).unsettled, 0, "stale ones leave the count");
    let new = poll_until(q, 5);
    assert_eq!(new.len(), 5, "every message once, from the new channel");
    let results = settle_all(q, &new, amqp_disposition::AMQP_ACK);
    assert_eq!(results, [amqp_result::AMQP_OK; 5], "none stale");
    assert!(new.iter().all(|g| g.redelivered));
    let (missing, dups, _) = check_seqs(new.iter().map(|g| g.body.as_slice()), 5);
    assert_eq!((missing, dups), (vec![], 0));
    wait_queue_messages(&name, 0, T);
    assert!(!readable(fd, 300));
    close_fd(fd);
    c_guard.close_ok();
}

/// amqp_consume_stop gives waiting deliveries back (nothing is handed out while stopped);
/// amqp_consume_start resumes; polled ones stay settleable across the stop.
#[test]
fn stop_and_start_apply_to_the_pull_consumer() {
    let _s = serial();
    let c_guard = ConnGuard::connect_ok(None);
    let name = unique_name("pull-stop");
    let q = queue_open(c_guard.h(), &name, None, None, Some("prefetch=10"));
    let fd = pull(q);
    seed(&name, 0..6);
    wait_for("6 unacked at the broker", T, || {
        queue_counts(&name).is_some_and(|c| c.unacked == 6)
    });
    let (r, kept) = poll_batch(q, 1, 0);
    assert_eq!((r, kept.len()), (amqp_result::AMQP_OK, 1));
    assert_eq!(amqp_consume_stop(q), amqp_result::AMQP_OK);
    wait_for("5 ready again at the broker", T, || {
        queue_counts(&name).is_some_and(|c| c.ready == 5 && c.unacked == 1 && c.consumers == 0)
    });
    assert!(!readable(fd, 0), "nothing waits while stopped");
    assert_eq!(poll_batch(q, 8, 300).0, amqp_result::AMQP_ERR_TIMEOUT);
    assert_eq!(
        settle_all(q, &kept, amqp_disposition::AMQP_ACK),
        [amqp_result::AMQP_OK],
        "a polled delivery stays settleable after stop"
    );
    assert_eq!(amqp_consume_start(q), amqp_result::AMQP_OK);
    assert!(readable(fd, 10_000));
    let rest = poll_until(q, 5);
    assert_eq!(
        settle_all(q, &rest, amqp_disposition::AMQP_ACK),
        [amqp_result::AMQP_OK; 5]
    );
    let mut bodies: HashSet<Vec<u8>> = rest.iter().map(|g| g.body.clone()).collect();
    bodies.insert(kept[0].body.clone());
    assert_eq!(bodies.len(), 6);
    wait_queue_messages(&name, 0, T);
    close_fd(fd);
    c_guard.close_ok();
}

/// amqp_consume_pull_cancel ends the pull consumer alone: what waits goes back to the broker,
/// a polled delivery stays settleable, a second cancel is refused, the queue's callback
/// consumer goes on, and a later amqp_consume_pull starts a new pull consumer.
#[test]
fn cancel_ends_the_pull_consumer_alone() {
    let _s = serial();
    let c_guard = ConnGuard::connect_ok(None);
    let name = unique_name("pull-cancel");
    let q = queue_open(c_guard.h(), &name, None, None, Some("prefetch=10"));
    let fd = pull(q);
    seed(&name, 0..6);
    wait_for("6 unacked at the broker", T, || {
        queue_counts(&name).is_some_and(|c| c.unacked == 6)
    });
    let (r, kept) = poll_batch(q, 1, 0);
    assert_eq!((r, kept.len()), (amqp_result::AMQP_OK, 1));
    assert_eq!(
        amqp_consume_pull_cancel(q, 10_000),
        amqp_result::AMQP_OK,
        "{}",
        last_error()
    );
    wait_for("5 ready again, no consumer", T, || {
        queue_counts(&name).is_some_and(|c| c.ready == 5 && c.unacked == 1 && c.consumers == 0)
    });
    assert_eq!(poll_batch(q, 8, 300).0, amqp_result::AMQP_ERR_TIMEOUT);
    assert!(!readable(fd, 0), "nothing waits after the cancel");
    assert_eq!(
        settle_all(q, &kept, amqp_disposition::AMQP_ACK),
        [amqp_result::AMQP_OK],
        "a polled delivery stays settleable after the cancel"
    );
    assert_eq!(
        amqp_consume_pull_cancel(q, 0),
        amqp_result::AMQP_ERR_INVALID_ARGUMENT,
        "a second cancel"
    );

    // A callback consumer beside a new pull consumer: cancelling the pull one leaves it.
    let rec = Recorder::acking(Duration::ZERO);
    consume(q, &rec, 1);
    let fd2 = pull(q);
    wait_for("two consumers", T, || {
        queue_counts(&name).is_some_and(|c| c.consumers == 2)
    });
    assert_eq!(amqp_consume_pull_cancel(q, 10_000), amqp_result::AMQP_OK);
    wait_for("one consumer", T, || {
        queue_counts(&name).is_some_and(|c| c.consumers == 1)
    });
    seed(&name, 6..10);
    wait_queue_messages(&name, 0, T);
    wait_for("the callback took the rest", T, || rec.bodies().len() >= 9);
    assert_eq!(poll_batch(q, 8, 0).0, amqp_result::AMQP_ERR_TIMEOUT);
    close_fd(fd);
    close_fd(fd2);
    c_guard.close_ok();
}

/// No pull consumer: amqp_consume_pull_cancel is refused; a bad handle too.
#[test]
fn cancel_without_a_pull_consumer_is_refused() {
    let _s = serial();
    let c_guard = ConnGuard::connect_ok(None);
    let q = open_simple(c_guard.h(), &unique_name("pull-cancel-none"));
    assert_eq!(
        amqp_consume_pull_cancel(q, 1000),
        amqp_result::AMQP_ERR_INVALID_ARGUMENT
    );
    assert!(
        last_error().contains("no pull consumer"),
        "{}",
        last_error()
    );
    assert_eq!(
        amqp_consume_pull_cancel(0, 0),
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
    c_guard.close_ok();
}

/// A close wakes a blocked poll with AMQP_ERR_CLOSED; the descriptor stays readable.
#[test]
fn close_wakes_a_blocked_poll_and_the_descriptor_stays_readable() {
    let _s = serial();
    let c_guard = ConnGuard::connect_ok(None);
    let name = unique_name("pull-close");
    let q = open_simple(c_guard.h(), &name);
    let fd = pull(q);
    let poller = std::thread::spawn(move || {
        let t0 = Instant::now();
        let (r, _) = poll_batch(q, 8, 20_000);
        (r, t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!readable(fd, 0));
    c_guard.close_ok();
    let (r, took) = poller.join().unwrap();
    assert_eq!(r, amqp_result::AMQP_ERR_CLOSED);
    assert!(took < Duration::from_secs(10), "{took:?}");
    for _ in 0..3 {
        assert!(readable(fd, 0), "readable for good after close");
    }
    assert_eq!(poll_batch(q, 8, 0).0, amqp_result::AMQP_ERR_INVALID_HANDLE);
    close_fd(fd);
}

/// A connection that fails for good wakes a blocked poll with AMQP_ERR_CLOSED, and a later
/// amqp_consume_pull is refused. (No broker needed: nothing listens at DEAD_URI.)
#[test]
fn failure_for_good_wakes_a_blocked_poll() {
    let _s = serial();
    let c_guard = ConnGuard::connect(
        DEAD_URI,
        Some("max_reconnects=5&reconnect_delay_ms=200&reconnect_delay_max_ms=400"),
    );
    let q = open_simple(c_guard.h(), "ra-test-pull-dead");
    let fd = pull(q);
    let (r, _) = poll_batch(q, 8, 20_000);
    assert_eq!(r, amqp_result::AMQP_ERR_CLOSED, "{}", last_error());
    assert!(readable(fd, 0));
    let mut fd2 = -1;
    assert_eq!(
        unsafe { amqp_consume_pull(q, &mut fd2) },
        amqp_result::AMQP_ERR_CLOSED
    );
    assert_eq!(fd2, -1, "not written on failure");
    close_fd(fd);
    let _ = c_guard.close(0);
}

#[test]
fn invalid_arguments() {
    let _s = serial();
    let c_guard = ConnGuard::connect_ok(None);
    let name = unique_name("pull-invalid");
    let q = open_simple(c_guard.h(), &name);
    assert_eq!(
        poll_batch(q, 8, 0).0,
        amqp_result::AMQP_ERR_INVALID_ARGUMENT,
        "no pull consumer"
    );
    assert_eq!(amqp_poll_wake(q), amqp_result::AMQP_ERR_INVALID_ARGUMENT);
    let mut fd = -1;
    assert_eq!(
        unsafe { amqp_consume_pull(0, &mut fd) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
    assert_eq!(fd, -1);
    assert_eq!(amqp_poll_wake(0), amqp_result::AMQP_ERR_INVALID_HANDLE);
    assert_eq!(
        unsafe { amqp_consume_pull(q, std::ptr::null_mut()) },
        amqp_result::AMQP_OK
    );
    let mut out = [std::ptr::null::<amqp_delivery>(); 2];
    let mut count = 5usize;
    let cases: [(*mut *const amqp_delivery, usize, *mut usize); 3] = [
        (std::ptr::null_mut(), 2, &mut count),
        (out.as_mut_ptr(), 0, &mut count),
        (out.as_mut_ptr(), 2, std::ptr::null_mut()),
    ];
    for (o, max, cnt) in cases {
        let r = unsafe { amqp_poll(q, o, max, 0, cnt) };
        assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT);
        assert!(!last_error().is_empty());
    }
    assert_eq!(count, 0, "*count written on failure");
    assert_eq!(poll_batch(0, 2, 0).0, amqp_result::AMQP_ERR_INVALID_HANDLE);
    c_guard.close_ok();
}

/// amqp_poll_e: the error text goes to the caller's buffer on failure (a Node worker or a
/// goroutine cannot read amqp_last_error on the calling thread); untouched on success.
#[test]
fn poll_e_writes_the_error_to_the_buffer() {
    let _s = serial();
    let c_guard = ConnGuard::connect_ok(None);
    let name = unique_name("pull-e");
    let q = open_simple(c_guard.h(), &name);
    let mut out = [std::ptr::null::<amqp_delivery>(); 4];
    let mut count = 7usize;
    let mut buf = [b'#' as std::ffi::c_char; 128];
    let poll_e = |out: &mut [*const amqp_delivery; 4],
                  count: &mut usize,
                  buf: &mut [std::ffi::c_char; 128]| unsafe {
        amqp_poll_e(
            q,
            out.as_mut_ptr(),
            4,
            0,
            count,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    let r = poll_e(&mut out, &mut count, &mut buf);
    assert_eq!(
        r,
        amqp_result::AMQP_ERR_INVALID_ARGUMENT,
        "no pull consumer yet"
    );
    let text = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    assert!(text.contains("pull"), "errbuf: {text:?}");
    assert_eq!(count, 0);
    assert_eq!(
        unsafe { amqp_consume_pull(q, std::ptr::null_mut()) },
        amqp_result::AMQP_OK
    );
    seed(&name, 0..1);
    let mut buf = [b'#' as std::ffi::c_char; 128];
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = poll_e(&mut out, &mut count, &mut buf);
        if r != amqp_result::AMQP_ERR_TIMEOUT || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r, amqp_result::AMQP_OK);
    assert_eq!(count, 1);
    assert_eq!(
        buf[0], b'#' as std::ffi::c_char,
        "errbuf untouched on success"
    );
    let id = unsafe { (*out[0]).delivery_id };
    assert_eq!(
        amqp_settle(q, id, amqp_disposition::AMQP_ACK as amqp_disposition_raw),
        amqp_result::AMQP_OK
    );
    unsafe { amqp_delivery_free(out[0]) };
    c_guard.close_ok();
}

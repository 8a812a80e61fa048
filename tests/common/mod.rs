//! Shared helpers for the broker integration tests (`tests/broker_*.rs`).
//!
//! The tests need a real RabbitMQ node. `bash scripts/test.sh` starts a private one and exports:
//! - `RESILIENT_AMQP_TEST_URI`  e.g. `amqp://guest:guest@127.0.0.1:31720/%2f`
//! - `RESILIENT_AMQP_TEST_CTL`  a shell command prefix that runs rabbitmqctl against that node
//!
//! Without them every broker test panics (it never passes silently).
//!
//! Two independent views of the broker are used to judge the library:
//! - `ctl(..)`/`queue_counts(..)`: rabbitmqctl, i.e. what the broker itself says;
//! - `Reader`: a plain lapin connection (no resilient-amqp code) that drains queues with
//!   `basic.get` (no-ack), publishes seed messages with confirms and declares queues.
#![allow(dead_code, unused_unsafe)]

use resilient_amqp::*;
use std::collections::{BTreeMap, HashSet};
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::AssertUnwindSafe;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Prefix of the names of the threads on which the library runs consume callbacks.
pub const LIB_THREAD_PREFIX: &str = "ramqp-consumer";

/// A URI where nothing listens: connecting is refused at once, forever.
pub const DEAD_URI: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

pub fn uri() -> String {
    match std::env::var("RESILIENT_AMQP_TEST_URI") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "RESILIENT_AMQP_TEST_URI is not set: these tests need a RabbitMQ node; \
             run bash scripts/test.sh (it starts a private broker and exports the variables)"
        ),
    }
}

pub fn ctl_prefix() -> String {
    match std::env::var("RESILIENT_AMQP_TEST_CTL") {
        Ok(c) if !c.is_empty() => c,
        _ => panic!(
            "RESILIENT_AMQP_TEST_CTL is not set: these tests need rabbitmqctl on the test node; \
             run bash scripts/test.sh"
        ),
    }
}

/// Runs `$RESILIENT_AMQP_TEST_CTL <args>`; returns (success, stdout, stderr).
pub fn ctl_try(args: &str) -> (bool, String, String) {
    let cmd = format!("{} {}", ctl_prefix(), args);
    let out = Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cmd}`: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs rabbitmqctl and returns its stdout; panics when it fails.
pub fn ctl(args: &str) -> String {
    // rabbitmqctl very rarely fails transiently under load (e.g. right after start_app);
    // every command the tests use is idempotent, so try again a few times
    let (mut ok, mut out, mut err) = ctl_try(args);
    for _ in 0..3 {
        if ok {
            break;
        }
        eprintln!("rabbitmqctl {args} failed, retrying:\nstdout: {out}\nstderr: {err}");
        std::thread::sleep(Duration::from_millis(500));
        (ok, out, err) = ctl_try(args);
    }
    assert!(
        ok,
        "rabbitmqctl {args} failed:\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// `list_queues name <fields...>` as a map name -> field values.
pub fn list_queues(fields: &[&str]) -> BTreeMap<String, Vec<String>> {
    let out = ctl(&format!(
        "-q list_queues --no-table-headers name {}",
        fields.join(" ")
    ));
    let mut map = BTreeMap::new();
    for line in out.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != fields.len() + 1 {
            continue; // e.g. a "Timeout" notice or an empty line
        }
        map.insert(
            cols[0].to_string(),
            cols[1..].iter().map(|s| s.trim().to_string()).collect(),
        );
    }
    map
}

/// The values of `fields` of one queue, or None when the broker does not list it.
pub fn queue_info(queue: &str, fields: &[&str]) -> Option<Vec<String>> {
    list_queues(fields).remove(queue)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    pub messages: u64,
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u64,
}

/// What the broker says about a queue (rabbitmqctl), or None when it does not exist.
pub fn queue_counts(queue: &str) -> Option<QueueCounts> {
    let v = queue_info(
        queue,
        &[
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ],
    )?;
    let n = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|_| panic!("bad number {s:?} in list_queues"))
    };
    Some(QueueCounts {
        messages: n(&v[0]),
        ready: n(&v[1]),
        unacked: n(&v[2]),
        consumers: n(&v[3]),
    })
}

pub fn queue_messages(queue: &str) -> u64 {
    queue_counts(queue)
        .map(|c| c.messages)
        .unwrap_or_else(|| panic!("queue {queue} does not exist"))
}

/// Waits until rabbitmqctl reports the queue with exactly `n` messages; panics with the last
/// seen counts otherwise.
pub fn wait_queue_messages(queue: &str, n: u64, timeout: Duration) {
    let mut last = None;
    let ok = poll(timeout, Duration::from_millis(200), || {
        last = queue_counts(queue);
        matches!(last, Some(c) if c.messages == n)
    });
    assert!(
        ok,
        "queue {queue}: expected {n} messages within {timeout:?}, broker says {last:?}"
    );
}

pub fn exchange_type(exchange: &str) -> Option<String> {
    let out = ctl("-q list_exchanges --no-table-headers name type");
    out.lines().find_map(|l| {
        let mut it = l.split('\t');
        (it.next()? == exchange).then(|| it.next().unwrap_or("").trim().to_string())
    })
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A queue name unique to this test, this process and this call.
pub fn unique_name(test: &str) -> String {
    format!(
        "ra-test-{}-{}-{}",
        test,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Polls `f` every `every` until it is true or `timeout` passed; returns whether it became true.
pub fn poll(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// `poll` that panics with `what` on timeout.
pub fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(
        poll(timeout, Duration::from_millis(20), f),
        "timed out after {timeout:?} waiting for {what}"
    );
}

// ---------------------------------------------------------------------------------------------
// Library wrappers (thin, so that each test reads like the C API)
// ---------------------------------------------------------------------------------------------

pub fn cs(s: &str) -> CString {
    CString::new(s).expect("no NUL in test strings")
}

fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// The message of the last failed call on this thread.
pub fn last_error() -> String {
    let mut buf = vec![0u8; 1024];
    let n = unsafe { amqp_last_error(buf.as_mut_ptr() as *mut c_char, buf.len()) };
    if n >= buf.len() {
        buf = vec![0u8; n + 1];
        unsafe { amqp_last_error(buf.as_mut_ptr() as *mut c_char, buf.len()) };
    }
    let s = unsafe { CStr::from_ptr(buf.as_ptr() as *const c_char) };
    s.to_string_lossy().into_owned()
}

pub fn result_str(r: amqp_result) -> String {
    raw_result_str(r as i32)
}

pub fn raw_result_str(r: i32) -> String {
    let p = unsafe { amqp_result_str(r as _) };
    assert!(!p.is_null());
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

pub fn try_connect(uri: &str, options: Option<&str>) -> (amqp_result, u64) {
    let u = cs(uri);
    let o = options.map(cs);
    let mut out: u64 = 0;
    let r = unsafe { amqp_connect(u.as_ptr(), opt_ptr(&o), &mut out) };
    (r, out)
}

/// Connects (asserting AMQP_OK) and returns the handle; does not wait for the connection.
pub fn connect(uri: &str, options: Option<&str>) -> u64 {
    let (r, h) = try_connect(uri, options);
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_connect({uri}, {options:?}): {}",
        last_error()
    );
    assert_ne!(h, 0);
    h
}

/// Connects to the test broker and waits (10 s) until connected.
pub fn connect_ok(options: Option<&str>) -> u64 {
    let c = connect(&uri(), options);
    let r = unsafe { amqp_wait_connected(c, 10_000) };
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_wait_connected: {}",
        last_error()
    );
    c
}

pub fn try_queue_open(
    conn: u64,
    queue: &str,
    exchange: Option<&str>,
    routing_key: Option<&str>,
    options: Option<&str>,
) -> (amqp_result, u64) {
    let q = cs(queue);
    let e = exchange.map(cs);
    let k = routing_key.map(cs);
    let o = options.map(cs);
    let mut out: u64 = 0;
    let r = unsafe {
        amqp_queue_open(
            conn,
            q.as_ptr(),
            opt_ptr(&e),
            opt_ptr(&k),
            opt_ptr(&o),
            &mut out,
        )
    };
    (r, out)
}

pub fn queue_open(
    conn: u64,
    queue: &str,
    exchange: Option<&str>,
    routing_key: Option<&str>,
    options: Option<&str>,
) -> u64 {
    let (r, h) = try_queue_open(conn, queue, exchange, routing_key, options);
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_queue_open({queue}, {options:?}): {}",
        last_error()
    );
    assert_ne!(h, 0);
    h
}

/// Opens a queue on the default exchange with default options.
pub fn open_simple(conn: u64, queue: &str) -> u64 {
    queue_open(conn, queue, None, None, None)
}

pub fn publish(q: u64, body: &[u8]) -> amqp_result {
    unsafe { amqp_publish(q, body.as_ptr() as *const c_void, body.len()) }
}

pub fn publish_ok(q: u64, body: &[u8]) {
    let r = publish(q, body);
    assert_eq!(r, amqp_result::AMQP_OK, "amqp_publish: {}", last_error());
}

pub fn qstats(q: u64) -> amqp_queue_stats {
    let mut s: amqp_queue_stats = unsafe { std::mem::zeroed() };
    let r = unsafe { amqp_queue_get_stats(q, &mut s) };
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_queue_get_stats: {}",
        last_error()
    );
    s
}

pub fn cstats(c: u64) -> amqp_connection_stats {
    let mut s: amqp_connection_stats = unsafe { std::mem::zeroed() };
    let r = unsafe { amqp_connection_get_stats(c, &mut s) };
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_connection_get_stats: {}",
        last_error()
    );
    s
}

pub fn conn_state(c: u64) -> amqp_connection_state {
    cstats(c).state
}

/// amqp_close_graceful with an `unsent` out-parameter.
pub fn close(conn: u64, timeout_ms: u32) -> (amqp_result, u64) {
    let mut unsent: u64 = u64::MAX;
    let r = unsafe { amqp_close_graceful(conn, timeout_ms, &mut unsent) };
    (r, unsent)
}

/// Closes and asserts that everything was confirmed.
pub fn close_ok(conn: u64) {
    let (r, unsent) = close(conn, 20_000);
    assert_eq!(
        r,
        amqp_result::AMQP_OK,
        "amqp_close_graceful: {} (unsent {unsent})",
        last_error()
    );
    assert_eq!(unsent, 0);
}

/// Waits until the library holds nothing for this queue (everything confirmed).
pub fn wait_drained(q: u64, timeout: Duration) {
    let mut last = qstats(q);
    let ok = poll(timeout, Duration::from_millis(20), || {
        last = qstats(q);
        last.buffered == 0
    });
    assert!(
        ok,
        "queue handle {q}: buffer not drained within {timeout:?}: {}",
        fmt_qstats(&last)
    );
}

pub fn fmt_qstats(s: &amqp_queue_stats) -> String {
    format!(
        "buffered={} bytes={} in_flight={} published={} confirmed={} resent={} nacked={} \
         delivered={} acked={} rejected={} requeued={} released={}",
        s.buffered,
        s.buffered_bytes,
        s.in_flight,
        s.published,
        s.confirmed,
        s.resent,
        s.nacked,
        s.delivered,
        s.acked,
        s.rejected,
        s.requeued,
        s.released
    )
}

// ---------------------------------------------------------------------------------------------
// Sequenced bodies
// ---------------------------------------------------------------------------------------------

pub fn seq_body(n: u64) -> Vec<u8> {
    format!("seq-{n:08}").into_bytes()
}

pub fn parse_seq(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(body)
        .ok()?
        .strip_prefix("seq-")?
        .parse()
        .ok()
}

/// (missing sequence numbers among 0..n, number of duplicate deliveries, bodies not of the form)
pub fn check_seqs<'a>(
    bodies: impl IntoIterator<Item = &'a [u8]>,
    n: u64,
) -> (Vec<u64>, usize, usize) {
    let mut seen = HashSet::new();
    let mut dups = 0;
    let mut foreign = 0;
    for b in bodies {
        match parse_seq(b) {
            Some(s) if s < n => {
                if !seen.insert(s) {
                    dups += 1
                }
            }
            _ => foreign += 1,
        }
    }
    let missing = (0..n).filter(|s| !seen.contains(s)).collect();
    (missing, dups, foreign)
}

// ---------------------------------------------------------------------------------------------
// Consume callbacks: a recorder with counters, passed as userdata
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Delivered {
    pub body: Vec<u8>,
    pub redelivered: bool,
    pub delivery_tag: u64,
    pub exchange: String,
    pub routing_key: String,
    pub queue: u64,
    pub thread: ThreadId,
    pub thread_name: Option<String>,
    /// the callback ran inside a tokio runtime context (it must not: never a tokio worker)
    pub in_tokio: bool,
}

/// Decides the disposition; returns a raw value so that tests can return invalid ones.
pub type Hook = Box<dyn Fn(&Delivered, &Recorder) -> amqp_disposition_raw + Send + Sync>;

pub fn raw(d: amqp_disposition) -> amqp_disposition_raw {
    d as amqp_disposition_raw
}

pub struct Recorder {
    /// callbacks entered
    pub started: AtomicU64,
    /// callbacks returned
    pub finished: AtomicU64,
    /// callbacks running right now
    pub current: AtomicUsize,
    pub max_current: AtomicUsize,
    pub log: Mutex<Vec<Delivered>>,
    /// how long each callback sleeps before deciding
    pub sleep: Duration,
    pub hook: Hook,
    /// a callback panicked (the panic was caught so it could not cross the C boundary)
    pub panicked: AtomicBool,
}

impl Recorder {
    pub fn new(sleep: Duration, hook: Hook) -> Arc<Recorder> {
        Arc::new(Recorder {
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            current: AtomicUsize::new(0),
            max_current: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            sleep,
            hook,
            panicked: AtomicBool::new(false),
        })
    }

    /// A recorder that acks everything.
    pub fn acking(sleep: Duration) -> Arc<Recorder> {
        Self::new(sleep, Box::new(|_, _| raw(amqp_disposition::AMQP_ACK)))
    }

    /// A recorder that always returns `d`.
    pub fn always(sleep: Duration, d: amqp_disposition) -> Arc<Recorder> {
        Self::new(sleep, Box::new(move |_, _| raw(d)))
    }

    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::SeqCst)
    }
    pub fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }
    pub fn max_current(&self) -> usize {
        self.max_current.load(Ordering::SeqCst)
    }
    pub fn deliveries(&self) -> Vec<Delivered> {
        self.log.lock().unwrap().clone()
    }
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.body.clone())
            .collect()
    }
    pub fn unique_bodies(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.body.clone())
            .collect::<HashSet<_>>()
            .len()
    }
    pub fn assert_no_panic(&self) {
        assert!(
            !self.panicked.load(Ordering::SeqCst),
            "a consume callback panicked (see stderr)"
        );
    }

    unsafe fn handle(&self, d: *const amqp_delivery) -> amqp_disposition_raw {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_current.fetch_max(now, Ordering::SeqCst);
        self.started.fetch_add(1, Ordering::SeqCst);
        assert!(!d.is_null(), "delivery pointer is NULL");
        let d = &*d;
        let bytes = |p: *const u8, n: usize| -> Vec<u8> {
            if n == 0 {
                Vec::new()
            } else {
                assert!(!p.is_null(), "NULL pointer with length {n}");
                std::slice::from_raw_parts(p, n).to_vec()
            }
        };
        let rec = Delivered {
            body: bytes(d.body, d.body_len),
            redelivered: d.redelivered,
            delivery_tag: d.delivery_tag,
            exchange: String::from_utf8_lossy(&bytes(d.exchange as *const u8, d.exchange_len))
                .into_owned(),
            routing_key: String::from_utf8_lossy(&bytes(
                d.routing_key as *const u8,
                d.routing_key_len,
            ))
            .into_owned(),
            queue: d.queue,
            thread: std::thread::current().id(),
            thread_name: std::thread::current().name().map(str::to_string),
            in_tokio: tokio::runtime::Handle::try_current().is_ok(),
        };
        self.log.lock().unwrap().push(rec.clone());
        if !self.sleep.is_zero() {
            std::thread::sleep(self.sleep);
        }
        let disp = (self.hook)(&rec, self);
        self.current.fetch_sub(1, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
        disp
    }
}

/// The `amqp_consume_fn` used by all tests: userdata is a leaked `Arc<Recorder>`.
pub unsafe extern "C" fn record_cb(
    d: *const amqp_delivery,
    userdata: *mut c_void,
) -> amqp_disposition_raw {
    let rec = &*(userdata as *const Recorder);
    match std::panic::catch_unwind(AssertUnwindSafe(|| rec.handle(d))) {
        Ok(disp) => disp,
        Err(_) => {
            rec.panicked.store(true, Ordering::SeqCst);
            rec.current.fetch_sub(1, Ordering::SeqCst);
            raw(amqp_disposition::AMQP_REQUEUE)
        }
    }
}

/// Starts `repeat` consumers delivering to `rec`. The Arc is leaked on purpose: a failing test
/// must never leave the library calling into freed memory.
pub fn try_consume(q: u64, rec: &Arc<Recorder>, repeat: u32) -> amqp_result {
    let ud = Arc::into_raw(rec.clone()) as *mut c_void;
    unsafe { amqp_consume(q, Some(record_cb), ud, repeat) }
}

pub fn consume(q: u64, rec: &Arc<Recorder>, repeat: u32) {
    let r = try_consume(q, rec, repeat);
    assert_eq!(r, amqp_result::AMQP_OK, "amqp_consume: {}", last_error());
}

// ---------------------------------------------------------------------------------------------
// An independent reader/writer on plain lapin
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Got {
    pub body: Vec<u8>,
    pub redelivered: bool,
    pub delivery_mode: Option<u8>,
    pub exchange: String,
    pub routing_key: String,
}

pub struct Reader {
    rt: tokio::runtime::Runtime,
    conn: lapin::Connection,
    ch: lapin::Channel,
}

impl Reader {
    pub fn new() -> Reader {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-reader")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let u = uri();
        let (conn, ch) = rt.block_on(async {
            let mut last = None;
            // the broker may just be coming back (start_app): retry for a while
            for _ in 0..100 {
                match lapin::Connection::connect(&u, lapin::ConnectionProperties::default()).await {
                    Ok(conn) => {
                        let ch = conn.create_channel().await.expect("reader: create_channel");
                        ch.confirm_select(Default::default())
                            .await
                            .expect("reader: confirm_select");
                        return (conn, ch);
                    }
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("reader: cannot connect to {u}: {last:?}");
        });
        Reader { rt, conn, ch }
    }

    /// Takes every message currently ready in `queue` (basic.get, no-ack).
    pub fn drain(&self, queue: &str) -> Vec<Got> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            loop {
                let m = self
                    .ch
                    .basic_get(
                        queue.into(),
                        lapin::options::BasicGetOptions { no_ack: true },
                    )
                    .await
                    .unwrap_or_else(|e| panic!("reader: basic_get {queue}: {e}"));
                match m {
                    None => return out,
                    Some(m) => {
                        let d = m.delivery;
                        out.push(Got {
                            body: d.data,
                            redelivered: d.redelivered,
                            delivery_mode: *d.properties.delivery_mode(),
                            exchange: d.exchange.to_string(),
                            routing_key: d.routing_key.to_string(),
                        });
                    }
                }
            }
        })
    }

    /// Drains until at least `n` messages were taken or `timeout` passed.
    pub fn drain_at_least(&self, queue: &str, n: usize, timeout: Duration) -> Vec<Got> {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            all.extend(self.drain(queue));
            if all.len() >= n || Instant::now() >= deadline {
                return all;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Publishes to the default exchange with publisher confirms (waits for each confirm).
    pub fn publish(&self, queue: &str, bodies: &[Vec<u8>]) {
        self.rt.block_on(async {
            let mut confirms = Vec::new();
            for b in bodies {
                let c = self
                    .ch
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        Default::default(),
                        b,
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .expect("reader: basic_publish");
                confirms.push(c);
            }
            for c in confirms {
                let conf = c.await.expect("reader: confirm");
                assert!(conf.is_ack(), "reader: publish nacked");
            }
        })
    }

    pub fn declare(
        &self,
        queue: &str,
        opts: lapin::options::QueueDeclareOptions,
    ) -> std::result::Result<(), String> {
        self.rt.block_on(async {
            let ch = self
                .conn
                .create_channel()
                .await
                .map_err(|e| e.to_string())?;
            let r = ch
                .queue_declare(queue.into(), opts, Default::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            let _ = ch.close(200, "OK".into()).await;
            r
        })
    }

    /// Ready messages and consumers (passive declare), None when the queue does not exist.
    pub fn count(&self, queue: &str) -> Option<(u32, u32)> {
        self.rt.block_on(async {
            let ch = self.conn.create_channel().await.ok()?;
            let q = ch
                .queue_declare(
                    queue.into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .ok()?;
            let _ = ch.close(200, "OK".into()).await;
            Some((q.message_count(), q.consumer_count()))
        })
    }

    /// Takes every message of `queue` with a no-ack consumer (much faster than `drain` for large
    /// queues): stops once nothing arrived for `idle` and the broker reports the queue empty
    /// (or after `timeout`).
    pub fn drain_fast(&self, queue: &str, idle: Duration, timeout: Duration) -> Vec<Got> {
        use futures_util::StreamExt;
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let got: Vec<Got> = self.rt.block_on(async {
                let ch = self
                    .conn
                    .create_channel()
                    .await
                    .expect("reader: create_channel");
                let mut consumer = ch
                    .basic_consume(
                        queue.into(),
                        "".into(),
                        lapin::options::BasicConsumeOptions {
                            no_ack: true,
                            ..Default::default()
                        },
                        Default::default(),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("reader: basic_consume {queue}: {e}"));
                let mut got = Vec::new();
                while let Ok(Some(d)) = tokio::time::timeout(idle, consumer.next()).await {
                    let d = d.unwrap_or_else(|e| panic!("reader: delivery from {queue}: {e}"));
                    got.push(Got {
                        body: d.data,
                        redelivered: d.redelivered,
                        delivery_mode: *d.properties.delivery_mode(),
                        exchange: d.exchange.to_string(),
                        routing_key: d.routing_key.to_string(),
                    });
                }
                let _ = ch.close(200, "OK".into()).await;
                got
            });
            out.extend(got);
            let left = self.count(queue).map_or(0, |(n, _)| n);
            if left == 0 || Instant::now() >= deadline {
                return out;
            }
        }
    }

    pub fn delete(&self, queue: &str) {
        self.rt.block_on(async {
            if let Ok(ch) = self.conn.create_channel().await {
                let _ = ch.queue_delete(queue.into(), Default::default()).await;
                let _ = ch.close(200, "OK".into()).await;
            }
        })
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), self.conn.close(200, "OK".into())).await
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Broker disruption (only for tests/broker_faults.rs, serialized there)
// ---------------------------------------------------------------------------------------------

/// Stops the rabbit application (the node stays up, every connection drops, the listener
/// closes); restarts it when dropped, so a failing test never leaves the broker down.
pub struct AppStopped {
    running: bool,
}

impl AppStopped {
    pub fn stop() -> AppStopped {
        ctl("stop_app");
        AppStopped { running: false }
    }
    pub fn start(&mut self) {
        if !self.running {
            ctl("start_app");
            self.running = true;
            wait_broker_up(Duration::from_secs(60));
        }
    }
}

impl Drop for AppStopped {
    fn drop(&mut self) {
        if !self.running {
            let _ = ctl_try("start_app");
            self.running = true;
        }
    }
}

/// Waits until an AMQP connection to the broker can be opened.
pub fn wait_broker_up(timeout: Duration) {
    let u = uri();
    let addr = u
        .split('@')
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or("127.0.0.1:5672")
        .to_string();
    let ok = poll(timeout, Duration::from_millis(100), || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    assert!(
        ok,
        "broker at {addr} not accepting connections within {timeout:?}"
    );
}

/// Closes every client connection on the broker (the library must reconnect).
pub fn close_all_connections() {
    ctl("close_all_connections --global \"resilient-amqp test\"");
}

/// Waits until the connection is CONNECTED and has connected at least `connects` times.
pub fn wait_reconnected(conn: u64, connects: u64, timeout: Duration) {
    let mut last = cstats(conn);
    let ok = poll(timeout, Duration::from_millis(20), || {
        last = cstats(conn);
        last.connects >= connects && last.state == amqp_connection_state::AMQP_STATE_CONNECTED
    });
    assert!(
        ok,
        "connection {conn}: not reconnected ({connects} connects) within {timeout:?}: state {:?} connects {} failed {}",
        last.state as u32, last.connects, last.failed_attempts
    );
}

//! Consume callbacks: `record_cb` and a `Recorder` with counters, passed as userdata.

use resilient_amqp::*;
use std::collections::HashSet;
use std::ffi::c_void;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use super::last_error;

// ---------------------------------------------------------------------------------------------
// Consume callbacks: a recorder with counters, passed as userdata
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Delivered {
    pub body: Vec<u8>,
    pub redelivered: bool,
    pub delivery_tag: u64,
    /// For amqp_settle.
    pub delivery_id: u64,
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
            delivery_id: d.delivery_id,
            exchange: String::from_utf8_lossy(&bytes(d.exchange as *const u8, d.exchange_len))
                .into_owned(),
            routing_key: String::from_utf8_lossy(&bytes(
                d.routing_key as *const u8,
                d.routing_key_len,
            ))
            .into_owned(),
            queue: d.queue,
            thread: std::thread::current().id(),
            thread_name: crate::common::os_thread_name(),
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
pub unsafe extern "C-unwind" fn record_cb(
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

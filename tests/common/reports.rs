//! `Reports`: records the delivery reports of a queue (amqp_set_report_callback).

use resilient_amqp::*;
use std::ffi::{c_void, CStr};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One report as the callback saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rep {
    pub tag: u64,
    pub status: amqp_report_status,
    pub attempts: u32,
    pub code: u32,
    pub reason: String,
    pub thread: String,
}

#[derive(Default)]
pub struct Reports {
    list: Mutex<Vec<Rep>>,
    changed: Condvar,
}

unsafe extern "C-unwind" fn record_report(r: *const amqp_delivery_report, ud: *mut c_void) {
    let reports = unsafe { &*(ud as *const Reports) };
    let r = unsafe { &*r };
    assert_eq!(r.size, std::mem::size_of::<amqp_delivery_report>());
    let reason = if r.reason.is_null() {
        String::new()
    } else {
        unsafe { CStr::from_ptr(r.reason) }
            .to_string_lossy()
            .into_owned()
    };
    let rep = Rep {
        tag: r.tag,
        status: r.status,
        attempts: r.attempts,
        code: r.reply_code,
        reason,
        thread: std::thread::current().name().unwrap_or("").to_string(),
    };
    // Never a panic here, on a library thread: it would abort the whole test binary.
    reports
        .list
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(rep);
    reports.changed.notify_all();
}

impl Reports {
    /// Sets a recording report function on queue `q`. The callback's
    /// reference is never released: a test that panics drops its Arc
    /// before its connection guard closes the connection (which reports).
    pub fn attach(q: u64) -> Arc<Reports> {
        let reports = Arc::new(Reports::default());
        std::mem::forget(reports.clone());
        let r = unsafe {
            amqp_set_report_callback(q, Some(record_report), Arc::as_ptr(&reports) as *mut c_void)
        };
        assert_eq!(r, amqp_result::AMQP_OK, "{}", crate::common::last_error());
        reports
    }

    pub fn all(&self) -> Vec<Rep> {
        self.list.lock().unwrap().clone()
    }

    /// Waits until `n` reports arrived (panics after `timeout` with what came).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Rep> {
        let deadline = Instant::now() + timeout;
        let mut list = self.list.lock().unwrap();
        while list.len() < n {
            let now = Instant::now();
            if now >= deadline {
                // Not while holding the lock: the report thread takes it.
                let (got, first) = (list.len(), list.iter().take(5).cloned().collect::<Vec<_>>());
                drop(list);
                panic!("{got} of {n} reports after {timeout:?}: {first:?}");
            }
            list = self.changed.wait_timeout(list, deadline - now).unwrap().0;
        }
        list.clone()
    }

    pub fn count(&self, status: amqp_report_status) -> usize {
        self.all().iter().filter(|r| r.status == status).count()
    }
}

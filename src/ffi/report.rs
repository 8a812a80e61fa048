//! Delivery reports: one per published message, confirmed or failed.

use super::{amqp_queue_handle, amqp_result, lookup_queue, UserData};
use crate::client::{Outcome, Report, ReportFn};
use std::ffi::{c_char, c_int, c_void, CString};
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::time::Duration;

/// How a published message ended (amqp_delivery_report.status).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum amqp_report_status {
    /// The broker confirmed it: it is in the queue (or routed by the exchange).
    AMQP_REPORT_CONFIRMED = 0,
    /// The broker nacked it publish_retries + 1 times (e.g. a full queue
    /// with x-overflow=reject-publish).
    AMQP_REPORT_NACKED = 1,
    /// The broker refused it: it closed the channel on this message alone
    /// (reply_code, reason), or it refuses the queue (no write permission,
    /// a declare it rejects).
    AMQP_REPORT_REFUSED = 2,
    /// Larger than the broker's max_message_size.
    AMQP_REPORT_TOO_LARGE = 3,
    /// Not confirmed within the queue's publish_timeout_ms. It may still
    /// have reached the queue (a confirm lost with its connection).
    AMQP_REPORT_EXPIRED = 4,
    /// Still unconfirmed when the connection closed (amqp_close_graceful
    /// counted it in `unsent`).
    AMQP_REPORT_UNSENT = 5,
    /// Published with a routing key of its own (amqp_publish_message) that
    /// no queue is bound to: the broker returned it (reply_code 312
    /// NO_ROUTE) and dropped it. Not resent. Needs mandatory=true (the
    /// default); a return for the queue's own key means the queue was
    /// deleted, and is declared again and resent instead. (ABI 3)
    AMQP_REPORT_UNROUTABLE = 6,
}

impl From<Outcome> for amqp_report_status {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Confirmed => amqp_report_status::AMQP_REPORT_CONFIRMED,
            Outcome::Nacked => amqp_report_status::AMQP_REPORT_NACKED,
            Outcome::Refused => amqp_report_status::AMQP_REPORT_REFUSED,
            Outcome::TooLarge => amqp_report_status::AMQP_REPORT_TOO_LARGE,
            Outcome::Expired => amqp_report_status::AMQP_REPORT_EXPIRED,
            Outcome::Unsent => amqp_report_status::AMQP_REPORT_UNSENT,
            Outcome::Unroutable => amqp_report_status::AMQP_REPORT_UNROUTABLE,
        }
    }
}

/// The end of one published message, handed to the queue's report function.
/// Valid only during the call (copy what you keep).
#[repr(C)]
pub struct amqp_delivery_report {
    /// sizeof(amqp_delivery_report) as the library knows it: fields are
    /// only ever appended, so read a field only if `size` covers it.
    pub size: usize,
    /// The tag given to amqp_publish_tagged (0 for amqp_publish).
    pub tag: u64,
    pub status: amqp_report_status,
    /// Times the message was sent to the broker (0 if it never was).
    pub attempts: u32,
    /// The broker's reply code for REFUSED and TOO_LARGE (e.g. 403, 406); 0 otherwise.
    pub reply_code: u32,
    /// Why it failed, NUL-terminated; NULL for CONFIRMED.
    pub reason: *const c_char,
}

/// A queue's report function: called once for every message published on
/// the queue after amqp_set_report_callback, when it ends (confirmed, or
/// failed for good), with the userdata given there. Called on the
/// connection's report thread (one per connection, started by the first
/// amqp_set_report_callback), one report at a time, in the order the
/// messages ended (for one queue: confirms in publish order; a failed
/// message may be reported before earlier ones still in flight). A message
/// keeps its place in the buffer (max_buffered, max_buffered_bytes) until
/// its report returned, so a slow report function slows amqp_publish
/// (AMQP_ERR_BUFFER_FULL) rather than growing memory. It may call any
/// function of the library except amqp_close_graceful / amqp_close_ex on
/// its own connection (they wait for this thread). A runtime that ends the
/// thread inside it (pthread_exit) ends reporting for the connection: later
/// messages end unreported (still counted in the stats).
pub type amqp_report_fn =
    Option<unsafe extern "C-unwind" fn(report: *const amqp_delivery_report, userdata: *mut c_void)>;

/// Sets the queue's report function (NULL: no reports from now on).
/// Reports cover the messages that end after this call, whenever they were
/// published. Without a report function the outcomes are only counted
/// (amqp_queue_stats: confirmed, failed, expired, refused) and failures
/// logged at WARN or ERROR once per incident.
/// Errors: AMQP_ERR_INVALID_HANDLE; AMQP_ERR_INTERNAL if the report thread
/// cannot be started. Blocks: never (starting the thread the first time).
#[no_mangle]
pub unsafe extern "C" fn amqp_set_report_callback(
    queue: amqp_queue_handle,
    cb: amqp_report_fn,
    userdata: *mut c_void,
) -> amqp_result {
    ffi_boundary!({
        let entry = lookup_queue(queue)?;
        let callback = cb.map(|cb| report_fn(cb, UserData(userdata)));
        entry.conn.conn.set_report_callback(&entry.queue, callback)
    })
}

/// A report's C view and the reason string it points to.
fn view(r: &Report) -> (amqp_delivery_report, Option<CString>) {
    let reason = r
        .reason
        .as_ref()
        .map(|t| CString::new(t.replace('\0', " ")).unwrap_or_default());
    let report = amqp_delivery_report {
        size: std::mem::size_of::<amqp_delivery_report>(),
        tag: r.tag,
        status: r.outcome.into(),
        attempts: u32::from(r.attempts),
        reply_code: u32::from(r.code),
        reason: reason.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
    };
    (report, reason)
}

fn report_fn(
    cb: unsafe extern "C-unwind" fn(*const amqp_delivery_report, *mut c_void),
    user: UserData,
) -> ReportFn {
    Arc::new(move |r: &Report| {
        let (report, _reason) = view(r);
        let user = &user;
        // Not inside catch_unwind: a forced unwind out of `cb` must pass
        // (see amqp_report_fn).
        // SAFETY: the application's non-NULL function of this type; the
        // header lets it run on the report thread with this userdata, and
        // `report` (and `reason`) stay valid for the whole call.
        unsafe { cb(&report, user.0) }
    })
}

/// (ABI 4) Switches the queue's delivery reports to pull mode, for event loops
/// (Node, Python asyncio, Ruby) whose code must not run on a library
/// thread: the report of every message that ends from now on waits in the
/// library until amqp_poll_reports takes it (a report function set before
/// is replaced; amqp_set_report_callback switches back). Each waiting
/// report keeps its message's place in the buffer (max_buffered,
/// max_buffered_bytes) until polled, so an application that stops polling
/// gets AMQP_ERR_BUFFER_FULL and memory stays bounded; such messages do not
/// count as unsent. amqp_close_graceful waits, within its timeout, while
/// waiting reports are being polled (an event loop polling beside the
/// close gets them all), and stops waiting after 200 ms in which none was
/// taken. A message not reported when it returns was not confirmed, or
/// its report was not polled in time (the queue handle is gone).
///
/// `notify_fd` (may be NULL): as amqp_consume_pull's, a NEW descriptor on
/// every call, the caller's to close; readable while reports wait, and for
/// good once the connection closed or failed. Only wait on it for
/// readability. Errors: AMQP_ERR_INVALID_HANDLE; AMQP_ERR_INTERNAL when no
/// descriptor could be made. Any thread. Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_reports_pull(
    queue: amqp_queue_handle,
    notify_fd: *mut c_int,
) -> amqp_result {
    ffi_boundary!({
        let entry = lookup_queue(queue)?;
        let fd = (entry.conn.conn).reports_pull(&entry.queue, !notify_fd.is_null())?;
        if let Some(fd) = fd {
            // SAFETY: non-NULL (a descriptor is made only then), and the
            // caller promises an int we may write.
            unsafe { *notify_fd = fd.into_raw_fd() };
        }
        Ok(())
    })
}

/// (ABI 4) Takes up to `max` waiting delivery reports of the queue (after
/// amqp_reports_pull), oldest first: fills `out` (a caller array of `max`
/// pointers) and `*count`, waiting up to `timeout_ms` for the first (0:
/// never waits). Each report, its `reason` included, is the caller's until
/// amqp_reports_free.
///
/// AMQP_OK with `*count` >= 1; AMQP_ERR_TIMEOUT with `*count` 0 when none
/// came in time (amqp_last_error is then empty); AMQP_ERR_CLOSED once the
/// connection is closing, closed or failed and no report waits;
/// AMQP_ERR_INVALID_ARGUMENT when the queue's reports are not in pull
/// mode, `out` or `count` is NULL, or `max` is 0. `*count` is written (0)
/// on every failure too. Any thread. Blocks: up to timeout_ms (a close or a
/// failure ends the wait); never call it with a timeout from an event
/// loop's thread.
#[no_mangle]
pub unsafe extern "C" fn amqp_poll_reports(
    queue: amqp_queue_handle,
    out: *mut *const amqp_delivery_report,
    max: usize,
    timeout_ms: u32,
    count: *mut usize,
) -> amqp_result {
    ffi_boundary!({
        // SAFETY: the caller's promise for `count` (the header).
        let count = unsafe { super::pull::batch_args(out, max, count) }?;
        let entry = lookup_queue(queue)?;
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let mut reports = Vec::new();
        let n = (entry.conn.conn).poll_reports(&entry.queue, &mut reports, max, timeout)?;
        for (i, r) in reports.iter().enumerate().take(n.min(max)) {
            let (report, reason) = view(r);
            let owned = Box::new(OwnedReport {
                report,
                _reason: reason,
            });
            // SAFETY: `out` is non-NULL with `max` writable pointers (the
            // caller's promise) and i < max.
            unsafe {
                out.add(i)
                    .write(Box::into_raw(owned) as *const amqp_delivery_report)
            };
        }
        *count = n.min(max);
        Ok(())
    })
}

/// A polled report: the C view first, so a pointer to it is a pointer to
/// the whole.
#[repr(C)]
struct OwnedReport {
    report: amqp_delivery_report,
    _reason: Option<CString>,
}

/// (ABI 4) Frees `count` reports returned by amqp_poll_reports (NULL entries are
/// skipped; `reports` NULL frees nothing). Each report must be freed once.
/// Any thread. Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_reports_free(
    reports: *const *const amqp_delivery_report,
    count: usize,
) {
    ffi_boundary!(value(), {
        // SAFETY: the caller passes NULL or an array of `count` pointers,
        // each NULL or from amqp_poll_reports (boxed OwnedReport) and not
        // freed before (the header).
        unsafe { super::free_batch::<_, OwnedReport>(reports, count) }
    })
}

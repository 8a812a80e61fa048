//! Queues: open (declare + bind) and stats.

use super::{amqp_connection_handle, amqp_queue_handle, amqp_result, QueueEntry, QUEUES};
use super::{lookup_connection, lookup_queue, optional_str, out_param, out_sized, required_str};
use crate::client::options::{check_name, check_server_named, parse_queue_options};
use crate::client::QueueStatsSnapshot;
use crate::error::Error;
use std::ffi::c_char;
use std::sync::Arc;

/// A snapshot of a queue's buffer and counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct amqp_queue_stats {
    /// sizeof(amqp_queue_stats), set by the caller (the library writes only
    /// what fits; ABI rules in the header's introduction).
    pub size: usize,
    /// Messages held until confirmed: waiting + in flight.
    pub buffered: u64,
    /// Their body bytes (with their properties and own routing key, if any).
    pub buffered_bytes: u64,
    /// Sent, confirm not yet received.
    pub in_flight: u64,
    /// amqp_publish calls that returned AMQP_OK.
    pub published: u64,
    /// Confirmed by the broker (and so gone from memory).
    pub confirmed: u64,
    /// Sent again after a nack or a lost channel.
    pub resent: u64,
    /// Nacks received from the broker.
    pub nacked: u64,
    /// Deliveries handed to a callback.
    pub delivered: u64,
    /// AMQP_ACK applied.
    pub acked: u64,
    /// AMQP_REJECT applied, and deliveries over max_message_bytes (rejected
    /// unread: dead-lettered if the queue has a dead-letter exchange).
    pub rejected: u64,
    /// AMQP_REQUEUE applied.
    pub requeued: u64,
    /// Prefetched deliveries given back without a callback (stop, close, stale channel).
    pub released: u64,
    /// Deliveries deferred (AMQP_DEFER) and not settled yet; they count
    /// against the prefetch. (ABI 2)
    pub unsettled: u64,
    /// Callback return values that were no amqp_disposition, applied as the
    /// queue's invalid_disposition. (ABI 2)
    pub invalid_dispositions: u64,
    /// Callback return values ignored because amqp_settle settled the
    /// delivery while its callback ran. (ABI 2)
    pub returns_ignored: u64,
    /// Messages that ended in a failure report: nacked more than
    /// publish_retries times, refused or too large for the broker, expired
    /// (publish_timeout_ms), or unsent at close. (ABI 2)
    pub failed: u64,
    /// Of `failed`: expired. (ABI 2)
    pub expired: u64,
    /// Of `failed`: refused by the broker (incl. too large). (ABI 2)
    pub refused: u64,
    /// 1 while the broker refuses the queue (its declare, or publishing:
    /// amqp_publish returns AMQP_ERR_BROKER), else 0. (ABI 2)
    pub queue_failed: u64,
    /// Refusals of the queue's consumers (basic.consume refused: another
    /// client's exclusive consumer, no read permission, 404/405; or the
    /// consume channel's declares refused), each retry counted. A refusal
    /// while amqp_consume waits is its AMQP_ERR_BROKER; a later one is
    /// logged at ERROR once per incident and retried with backoff (up to
    /// reconnect_delay_max). (ABI 2)
    pub consume_refusals: u64,
    /// Of `failed`: returned by the broker as unroutable, published with a
    /// routing key of their own (amqp_publish_message) that no queue is
    /// bound to (AMQP_REPORT_UNROUTABLE). (ABI 3)
    pub unroutable: u64,
    /// Deliveries acked without reaching the application because their
    /// message_id was acked on this queue handle already (queue option
    /// dedupe; docs/DEDUPE.md). (ABI 4)
    pub deduplicated: u64,
    /// Messages in the queue's spool (queue option spool_dir) not confirmed
    /// or failed yet, those from an earlier process included; 0 without a
    /// spool. (ABI 5)
    pub spooled: u64,
    /// Messages an earlier process left unconfirmed in the spool, found when
    /// the queue was opened and sent before any new publish. (ABI 5)
    pub spool_restored: u64,
    /// Bytes of damaged or torn record tails dropped from the spool when the
    /// queue was opened (checksum mismatch, truncated last record; logged
    /// at WARN with the file and offset; the records before them are
    /// sent). (ABI 5)
    pub spool_dropped_bytes: u64,
}

impl From<QueueStatsSnapshot> for amqp_queue_stats {
    /// Field by field, with no `..` on either side: a counter added to one
    /// struct and not the other does not compile.
    fn from(s: QueueStatsSnapshot) -> Self {
        let QueueStatsSnapshot {
            buffered,
            buffered_bytes,
            in_flight,
            published,
            confirmed,
            resent,
            nacked,
            delivered,
            acked,
            rejected,
            requeued,
            released,
            unsettled,
            invalid_dispositions,
            returns_ignored,
            failed,
            expired,
            refused,
            queue_failed,
            consume_refusals,
            unroutable,
            deduplicated,
            spooled,
            spool_restored,
            spool_dropped_bytes,
        } = s;
        amqp_queue_stats {
            size: std::mem::size_of::<amqp_queue_stats>(),
            buffered,
            buffered_bytes,
            in_flight,
            published,
            confirmed,
            resent,
            nacked,
            delivered,
            acked,
            rejected,
            requeued,
            released,
            unsettled,
            invalid_dispositions,
            returns_ignored,
            failed,
            expired,
            refused,
            queue_failed: u64::from(queue_failed),
            consume_refusals,
            unroutable,
            deduplicated,
            spooled,
            spool_restored,
            spool_dropped_bytes,
        }
    }
}

/// Opens `queue` on its own channel. `exchange` NULL or "" is the default
/// exchange (no bind); otherwise the exchange is declared (`exchange_type`,
/// default direct) and the queue bound with `routing_key` (NULL = "").
/// `options`: durable (true), persistent (true), mandatory (true: a deleted
/// queue is noticed and declared again), exchange_type (direct; or fanout,
/// topic, headers, x-...), queue_type (classic; or quorum, stream), prefetch (100),
/// invalid_disposition (requeue; or reject: what a callback's return value
/// that is no amqp_disposition does), publish_retries (3: times a nacked
/// message is sent again, after a backoff), publish_timeout_ms (0: no
/// limit; a message not confirmed this long fails as AMQP_REPORT_EXPIRED),
/// topology_check_ms (5000: how often a passive declare checks that the
/// queue still exists, so a queue deleted while another queue takes its
/// messages is declared again; 0 = never), max_buffered (the connection's),
/// max_buffered_bytes (the connection's), dedupe (0: off; N: a delivery
/// whose message_id this queue handle acked among its last N acks is acked
/// without reaching the callback or amqp_poll, counted in `deduplicated`;
/// docs/DEDUPE.md says what it cannot promise), auto_message_id (false:
/// true gives every message published without a message_id a unique one),
/// spool_dir ("": none; a directory where every message amqp_publish
/// accepts is written before it returns and forgotten once confirmed or
/// failed; the next amqp_queue_open with it sends the unconfirmed ones
/// first, in order; a directory in use by another queue handle or process,
/// or another queue's, is AMQP_ERR_INVALID_ARGUMENT; amqp_close releases
/// it before it returns; docs/SPOOL.md),
/// spool_sync (batch: fdatasync every 10 ms; always: before amqp_publish
/// returns; none: page cache only, survives the process's death but not a
/// power cut), spool_max_bytes (0: max_buffered_bytes; a full spool is
/// AMQP_ERR_BUFFER_FULL).
/// Queue declare: passive (false: true only checks that the queue exists,
/// whatever its arguments, and declares nothing on it), exclusive (false:
/// the connection's own queue; its consumers run on the publish link),
/// auto_delete (false). Queue arguments, sent only when given (not sent):
/// message_ttl_ms (not sent: x-message-ttl), expires_ms (not sent:
/// x-expires), max_length (not sent: x-max-length), max_length_bytes (not
/// sent: x-max-length-bytes), overflow (not sent: x-overflow, drop-head,
/// reject-publish or reject-publish-dlx), dead_letter_exchange (not sent),
/// dead_letter_routing_key (not sent), max_priority (not sent: 1 to 255),
/// single_active_consumer (not sent), and any other as
/// arg.NAME=int:N|str:TEXT|bool:true|false (e.g. arg.x-queue-mode=str:lazy;
/// no '&' in TEXT). Consumers: consumer_name (not sent: tags NAME-<n>
/// instead of resilient-amqp.<queue id>.<n>), consumer_priority (not sent:
/// x-priority), consumer_exclusive (false: repeat must be 1), and any
/// consumer argument as consumer_arg.NAME=TYPE:VALUE (e.g.
/// consumer_arg.x-stream-offset=str:first for queue_type=stream).
/// A bad key or value is AMQP_ERR_INVALID_ARGUMENT naming the key.
/// `queue` "" is a server-named queue: exclusive, published to through
/// `exchange` (required) and `routing_key`; amqp_queue_name reads the name
/// the broker gave, a new one after every reconnect (binding redone,
/// buffered messages go to the new queue).
/// Each queue uses one channel: AMQP_ERR_BROKER when the connection already
/// has channel_max queues (the limit agreed with the broker, or before the
/// first connect the one asked for: the URI's channel_max, default 2047).
/// While connected it declares now: AMQP_ERR_BROKER when the broker refuses
/// (e.g. 406 PRECONDITION_FAILED). While disconnected it returns AMQP_OK and
/// declares on connect. The topology is declared again after every reconnect.
/// Blocks: up to 30 s for the declares while connected (AMQP_ERR_TIMEOUT if
/// the broker does not answer); never while disconnected.
#[no_mangle]
pub unsafe extern "C" fn amqp_queue_open(
    conn: amqp_connection_handle,
    queue: *const c_char,
    exchange: *const c_char,
    routing_key: *const c_char,
    options: *const c_char,
    out: *mut amqp_queue_handle,
) -> amqp_result {
    // SAFETY: the caller's promises are queue_open's.
    ffi_boundary!({ unsafe { queue_open(conn, queue, exchange, routing_key, options, out) } })
}

/// amqp_queue_open, and on failure the error message also goes to `errbuf`
/// (like snprintf: at most `errcap` bytes, NUL-terminated when `errcap` > 0;
/// untouched on success), e.g. the broker's 406 text.
/// Blocks: up to 30 s for the declares while connected.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn amqp_queue_open_e(
    conn: amqp_connection_handle,
    queue: *const c_char,
    exchange: *const c_char,
    routing_key: *const c_char,
    options: *const c_char,
    out: *mut amqp_queue_handle,
    errbuf: *mut c_char,
    errcap: usize,
) -> amqp_result {
    ffi_boundary!(errbuf errbuf, errcap, {
        // SAFETY: the caller's promises are queue_open's.
        unsafe { queue_open(conn, queue, exchange, routing_key, options, out) }
    })
}

/// # Safety
/// `out` is NULL or writable, the strings NULL or NUL-terminated, all valid
/// for the duration of the call.
unsafe fn queue_open(
    conn: amqp_connection_handle,
    queue: *const c_char,
    exchange: *const c_char,
    routing_key: *const c_char,
    options: *const c_char,
    out: *mut amqp_queue_handle,
) -> crate::Result<()> {
    // The header's contract for `amqp_queue_open`: `out` is NULL or
    // writable, the strings NULL or NUL-terminated, all valid for the
    // duration of this call, which no borrow below outlives (the queue
    // copies the names).
    // SAFETY: `out` as the contract says; written only on success.
    let out = unsafe { out_param(out, "out") }?;
    // SAFETY: `queue` as the contract says.
    let name = unsafe { required_str(queue, "queue") }?;
    // SAFETY: `exchange` as the contract says.
    let exchange = unsafe { optional_str(exchange, "exchange") }?.unwrap_or("");
    // SAFETY: `routing_key` as the contract says.
    let routing_key = unsafe { optional_str(routing_key, "routing_key") }?.unwrap_or("");
    // SAFETY: `options` as the contract says; parsed into owned values.
    let options = unsafe { optional_str(options, "options") }?;
    check_name("queue name", name)?;
    check_name("exchange name", exchange)?;
    check_name("routing key", routing_key)?;
    let entry = lookup_connection(conn)?;
    entry.check_open()?;
    let mut options = parse_queue_options(options, &entry.conn.options)?;
    if name.is_empty() {
        check_server_named(&mut options, exchange)?;
    }
    let q = entry
        .conn
        .open_queue(name, exchange, routing_key, options)?;
    let mut handles = entry
        .queue_handles
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let handle = QUEUES
        .insert_with(|handle| {
            Arc::new(QueueEntry {
                queue: q.clone(),
                handle,
                conn: entry.clone(),
            })
        })
        .ok_or_else(|| Error::internal("too many open queues"))?;
    handles.push(handle);
    *out = handle;
    Ok(())
}

/// Writes a snapshot of the queue's buffer and counters to `out`.
/// Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_queue_get_stats(
    queue: amqp_queue_handle,
    out: *mut amqp_queue_stats,
) -> amqp_result {
    ffi_boundary!({
        let stats = lookup_queue(queue)?.queue.stats().into();
        // SAFETY: the caller promises `out` is NULL or an amqp_queue_stats
        // of at least its declared `size`, writable for this call.
        unsafe { out_sized(out, stats, "out") }
    })
}

/// Copies the queue's name at the broker into `buf` like snprintf (at most
/// `cap` bytes, NUL-terminated when `cap` > 0; `buf` may be NULL when `cap`
/// is 0) and writes its full length to `len` (NULL: not wanted). For a
/// server-named queue (opened with name "") the name the broker gave, which
/// changes after every reconnect (the queue dies with its connection): ""
/// until it was first declared (amqp_queue_open while disconnected).
/// AMQP_ERR_INVALID_HANDLE for a bad handle; AMQP_ERR_INVALID_ARGUMENT for
/// `buf` NULL with `cap` > 0.
/// Blocks: never.
#[no_mangle]
pub unsafe extern "C" fn amqp_queue_name(
    queue: amqp_queue_handle,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> amqp_result {
    ffi_boundary!({
        if buf.is_null() && cap > 0 {
            return Err(Error::invalid("buf is NULL but cap is not 0"));
        }
        let name = lookup_queue(queue)?.queue.live_name();
        let bytes = name.as_bytes();
        if cap > 0 {
            let n = bytes.len().min(cap - 1);
            // SAFETY: the caller promises `buf` points to `cap` writable
            // bytes; we write `n + 1 <= cap`, from our own String.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, n);
                *buf.add(n) = 0;
            }
        }
        if !len.is_null() {
            // SAFETY: the caller promises `len` is NULL or writable.
            unsafe { *len = bytes.len() };
        }
        Ok(())
    })
}

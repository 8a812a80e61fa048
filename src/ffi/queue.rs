//! Queues: open (declare + bind) and stats.

use super::{amqp_connection_handle, amqp_queue_handle, amqp_result, QueueEntry, QUEUES};
use super::{lookup_connection, lookup_queue, optional_str, out_param, required_str};
use crate::client::options::{check_name, parse_queue_options};
use crate::error::Error;
use std::ffi::c_char;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A snapshot of a queue's buffer and counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct amqp_queue_stats {
    /// Messages held until confirmed: waiting + in flight.
    pub buffered: u64,
    /// Their body bytes.
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
    /// AMQP_REJECT applied.
    pub rejected: u64,
    /// AMQP_REQUEUE applied.
    pub requeued: u64,
    /// Prefetched deliveries given back without a callback (stop, close, stale channel).
    pub released: u64,
}

/// Opens `queue` on its own channel. `exchange` NULL or "" is the default
/// exchange (no bind); otherwise the exchange is declared (`exchange_type`,
/// default direct) and the queue bound with `routing_key` (NULL = "").
/// `options`: durable (true), persistent (true), mandatory (true: a deleted
/// queue is noticed and declared again), exchange_type, queue_type
/// (classic|quorum), prefetch (100), max_buffered, max_buffered_bytes.
/// While connected it declares now: AMQP_ERR_BROKER when the broker refuses
/// (e.g. 406 PRECONDITION_FAILED). While disconnected it returns AMQP_OK and
/// declares on connect. The topology is declared again after every reconnect.
#[no_mangle]
pub unsafe extern "C" fn amqp_queue_open(
    conn: amqp_connection_handle,
    queue: *const c_char,
    exchange: *const c_char,
    routing_key: *const c_char,
    options: *const c_char,
    out: *mut amqp_queue_handle,
) -> amqp_result {
    ffi_boundary!({
        let out = out_param(out, "out")?;
        let name = required_str(queue, "queue")?;
        let exchange = optional_str(exchange, "exchange")?.unwrap_or("");
        let routing_key = optional_str(routing_key, "routing_key")?.unwrap_or("");
        let options = optional_str(options, "options")?;
        if name.is_empty() {
            return Err(Error::invalid(
                "queue name is empty (server-named queues cannot survive a reconnect)",
            ));
        }
        check_name("queue name", name)?;
        check_name("exchange name", exchange)?;
        check_name("routing key", routing_key)?;
        let entry = lookup_connection(conn)?;
        if entry.closing.load(Ordering::SeqCst) {
            return Err(Error::closed("the connection is closing"));
        }
        let options = parse_queue_options(options, &entry.conn.options)?;
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
    })
}

/// Writes a snapshot of the queue's buffer and counters to `out`.
#[no_mangle]
pub unsafe extern "C" fn amqp_queue_get_stats(
    queue: amqp_queue_handle,
    out: *mut amqp_queue_stats,
) -> amqp_result {
    ffi_boundary!({
        let out = out_param(out, "out")?;
        let s = lookup_queue(queue)?.queue.stats();
        *out = amqp_queue_stats {
            buffered: s.buffered,
            buffered_bytes: s.buffered_bytes,
            in_flight: s.in_flight,
            published: s.published,
            confirmed: s.confirmed,
            resent: s.resent,
            nacked: s.nacked,
            delivered: s.delivered,
            acked: s.acked,
            rejected: s.rejected,
            requeued: s.requeued,
            released: s.released,
        };
        Ok(())
    })
}

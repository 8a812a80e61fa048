//! The client layer: connections as the application sees them. A
//! connection supervisor keeps one AMQP connection alive across losses; each
//! queue gets a session per connection generation that declares its
//! topology, attaches its consumers and runs its publisher.

pub(crate) mod address;
pub(crate) mod address_list;
mod connection;
pub(crate) mod options;
mod queue;
mod session;
mod topology;

/// What the C API hands a consumer.
pub(crate) use crate::consume::{Callback, DeliveryView, Disposition, Polled, Release};
/// What the C API hands a report function.
pub(crate) use crate::publish::{encode_meta, Outcome, Report, ReportFn};
/// Message properties, encoded for amqp_publish_message and decoded for
/// deliveries.
pub(crate) use crate::wire::props;
pub(crate) use connection::{CloseReport, Connection, ConnectionState, ConnectionStatsSnapshot};
pub(crate) use queue::{Queue, QueueStatsSnapshot};

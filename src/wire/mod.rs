//! Our own AMQP 0-9-1 engine: the connection, its channels, and the frames
//! of the data path. lapin costs about twice rabbitmq-c's CPU per message
//! (one task hand-off and several allocations per frame; see
//! docs/DESIGN.md), so the hot path writes frames straight into one output
//! buffer and parses deliveries and confirms straight out of one input
//! buffer. amq-protocol (lapin's protocol crate) encodes and parses the
//! rare methods.

pub mod codec;
mod conn;

pub use codec::PublishTarget;
pub use conn::{Confirm, Delivery, DeliverySink, PublishBatch, WireChannel, WireConnection};

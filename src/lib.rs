//! resilient-amqp: a RabbitMQ (AMQP 0-9-1) client with a C ABI that keeps
//! every message until the broker confirmed it, across broker outages.
//!
//! Layers, each using only those below it (checked by tests/architecture.rs):
//! - `ffi`: the C API (`include/resilient_amqp.h`), thin;
//! - `client`: connection supervisor, per-queue sessions, options;
//! - `publish` (buffer, confirm window, publisher) and `consume` (consumer
//!   threads, settling);
//! - `wire`: our AMQP 0-9-1 engine;
//! - and beside them all: `error`, `log`, `runtime`, `backoff`, `registry`.
//!
//! The rlib re-exports every C export at the crate root for Rust tests;
//! `testing` holds the few internals the integration tests check.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod log;
mod backoff;
mod client;
mod consume;
mod error;
mod notifier;
mod os_thread;
mod publish;
mod registry;
mod runtime;
mod spool;
mod sync;
mod wire;

pub mod ffi;
#[doc(hidden)]
pub mod testing;

pub use error::{Error, ErrorKind, Result};
pub use ffi::*;

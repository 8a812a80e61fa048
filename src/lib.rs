//! resilient-amqp: a RabbitMQ (AMQP 0-9-1) client with a C ABI that keeps
//! every message until the broker confirmed it, across broker outages.
//!
//! Layout: a pure-Rust core (`connection`, `queue`, `buffer`, `bodies`, `consumer`,
//! `options`, `error`, `registry`, `backoff`, `log`, `runtime`) with no FFI
//! types, and a thin `ffi` layer that is the C API (`include/resilient_amqp.h`).
//! The rlib re-exports every C export at the crate root for Rust tests.

#[macro_use]
pub mod log;
pub mod backoff;
pub mod bodies;
pub mod buffer;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod options;
pub mod queue;
pub mod registry;
pub mod runtime;
pub mod wire;

pub mod ffi;

pub use error::{Error, ErrorKind, Result};
pub use ffi::*;

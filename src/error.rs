//! Errors of the core: a kind that maps one to one onto the C `amqp_result`
//! codes, and a message for `amqp_last_error`.

use std::fmt;

/// What went wrong, in the contract's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    InvalidHandle,
    BufferFull,
    MessageTooLarge,
    Closed,
    Timeout,
    NotConnected,
    Broker,
    Internal,
    /// The delivery's channel is gone: nothing applied, the broker redelivers.
    StaleDelivery,
    /// The delivery was settled already.
    AlreadySettled,
}

/// An error with the context a user needs (which option, the broker's reply).
/// Messages never contain credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn closed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Closed, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

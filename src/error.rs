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

/// How a failure on the wire is seen by us: the broker refused something on
/// a channel (soft error: 403, 404, 405, 406), refused the connection, or the
/// link itself failed (I/O, heartbeat, closed connection) and will be retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A channel-level refusal; the connection stays up.
    Refused { code: u16, text: String },
    /// A connection-level refusal (e.g. 403 ACCESS_REFUSED at login, 530 NOT_ALLOWED).
    ConnectionRefused { code: u16, text: String },
    /// Anything else: the link is gone or going; reconnecting is the answer.
    Link(String),
}

impl Failure {
    pub fn text(&self) -> &str {
        match self {
            Failure::Refused { text, .. } | Failure::ConnectionRefused { text, .. } => text,
            Failure::Link(text) => text,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

/// The AMQP 0-9-1 reply code names, for messages like "406 PRECONDITION_FAILED".
pub fn code_name(code: u16) -> String {
    let name = match code {
        311 => "CONTENT_TOO_LARGE",
        312 => "NO_ROUTE",
        313 => "NO_CONSUMERS",
        320 => "CONNECTION_FORCED",
        402 => "INVALID_PATH",
        403 => "ACCESS_REFUSED",
        404 => "NOT_FOUND",
        405 => "RESOURCE_LOCKED",
        406 => "PRECONDITION_FAILED",
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        541 => "INTERNAL_ERROR",
        _ => "",
    };
    if name.is_empty() {
        code.to_string()
    } else {
        format!("{code} {name}")
    }
}

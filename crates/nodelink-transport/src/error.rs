//! The crate's error type.

use std::fmt;

/// What went wrong, as a caller can match it. Mirrors network-transport's error codes.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The remote endpoint does not exist, or its host cannot be reached.
    ConnectNotFound,
    /// No socket could be created.
    ConnectInsufficientResources,
    /// The connect did not complete within the connect timeout.
    ConnectTimeout,
    /// Any other connect failure (bad address, handshake failure, closed endpoint...).
    ConnectFailed,
    /// Send on a connection this side closed.
    SendClosed,
    /// Send on a connection whose socket or endpoint is gone.
    SendFailed,
    /// No resources for a new endpoint.
    NewEndPointInsufficientResources,
    /// A new endpoint could not be created (the transport is closed).
    NewEndPointFailed,
    /// The endpoint was closed and its `EndPointClosed` event already delivered.
    EndPointClosed,
    /// Binding the listening socket failed.
    Bind,
    /// The operation is not supported by this transport (multicast).
    Unsupported,
}

/// An error with a matchable [`ErrorKind`], a message, and possibly an I/O cause.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Same, keeping the underlying cause.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The kind, for matching.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message alone.
    pub fn message(&self) -> &str {
        &self.message
    }
}

//! The crate's error type: one [`Error`] carrying an [`ErrorKind`] a caller can match on.

use std::fmt;
use std::io;
use std::sync::Arc;

/// What went wrong, coarse enough to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The session is closed (locally, by the peer closing the connection, or after an error).
    SessionClosed,
    /// The stream was already shut down for writing, or the operation needs an open stream.
    StreamClosed,
    /// The stream was reset locally because its peer sent more data than its buffer allows
    /// (see the crate documentation for the policy). The peer got a FIN.
    StreamReset,
    /// No frame arrived from the peer within the keepalive timeout.
    Timeout,
    /// The peer broke the smux protocol (wrong version, unknown command, malformed frame).
    Protocol,
    /// The underlying connection failed.
    Io,
    /// A [`Config`](crate::Config) value is out of range.
    InvalidConfig,
    /// Every stream id of this side has been used; open a new session.
    StreamIdsExhausted,
    /// The session was created outside a tokio runtime.
    NoRuntime,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::SessionClosed => "session closed",
            ErrorKind::StreamClosed => "stream closed",
            ErrorKind::StreamReset => "stream reset",
            ErrorKind::Timeout => "keepalive timeout",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::Io => "i/o error",
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::StreamIdsExhausted => "stream ids exhausted",
            ErrorKind::NoRuntime => "no tokio runtime",
        })
    }
}

/// An smux error: a [`kind`](Error::kind), a human-readable detail and, for I/O failures,
/// the underlying [`io::Error`] as its [`source`](std::error::Error::source) (not repeated
/// in the message). Cheap to clone, because a session's death reason is handed
/// to every stream and waiter.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct Error {
    kind: ErrorKind,
    detail: String,
    #[source]
    source: Option<Arc<io::Error>>,
}

impl Error {
    /// Builds an error of `kind` with a detail message.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Error {
        Error {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    /// A failed read or write of the connection: `context` says which, the cause is
    /// chained (not repeated in the message).
    pub(crate) fn io(context: &str, source: io::Error) -> Error {
        Error {
            kind: ErrorKind::Io,
            detail: context.to_string(),
            source: Some(Arc::new(source)),
        }
    }

    /// The same failure under another kind and detail, keeping the cause.
    pub(crate) fn rekind(&self, kind: ErrorKind, detail: String) -> Error {
        Error {
            kind,
            detail,
            source: self.source.clone(),
        }
    }

    pub(crate) fn protocol(detail: impl Into<String>) -> Error {
        Error::new(ErrorKind::Protocol, detail)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The detail message, without the kind.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

/// Streams report failures through `std::io::Error` (they implement tokio's `AsyncRead` and
/// `AsyncWrite`); the smux [`Error`] stays inside, reachable with
/// `io_error.get_ref().and_then(|e| e.downcast_ref::<nodelink_smux::Error>())`.
impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err.kind {
            ErrorKind::SessionClosed => io::ErrorKind::ConnectionAborted,
            ErrorKind::StreamClosed => io::ErrorKind::BrokenPipe,
            ErrorKind::StreamReset => io::ErrorKind::ConnectionReset,
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::Protocol => io::ErrorKind::InvalidData,
            ErrorKind::Io => err
                .source
                .as_ref()
                .map_or(io::ErrorKind::Other, |e| e.kind()),
            ErrorKind::InvalidConfig => io::ErrorKind::InvalidInput,
            ErrorKind::StreamIdsExhausted | ErrorKind::NoRuntime => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn an_io_cause_is_chained_once_and_survives_the_session_closing() {
        let cause = io::Error::from(io::ErrorKind::ConnectionReset);
        let err = Error::io("reading the connection", cause);
        assert_eq!(err.to_string(), "i/o error: reading the connection");
        assert_eq!(err.source().unwrap().to_string(), "connection reset");
        let closed = crate::core::closed_error(&err);
        assert_eq!(closed.kind(), ErrorKind::SessionClosed);
        assert_eq!(
            closed.to_string(),
            "session closed: i/o error: reading the connection"
        );
        assert_eq!(closed.source().unwrap().to_string(), "connection reset");
        // Through a stream's io::Error: the message once, then the cause.
        let as_io = io::Error::from(closed);
        assert_eq!(as_io.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(as_io.source().unwrap().to_string(), "connection reset");
    }
}

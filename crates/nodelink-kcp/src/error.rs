//! The crate's error type: one [`Error`] with a matchable [`ErrorKind`] (see
//! docs/CONVENTIONS.md, rule 3).
//!
//! Datagram-level problems (a bad checksum, another session's conv, a malformed segment)
//! are errors of the cores' `input` calls, which the session layer counts and drops; they
//! never take a session down, and building one allocates nothing (a flood of bad datagrams
//! costs no memory). The session API ([`crate::KcpStream`], [`crate::KcpListener`])
//! returns the same type; its `AsyncRead`/`AsyncWrite` impls return an `io::Error` that
//! wraps it (`io::Error::get_ref` then downcasts to [`Error`]).

use std::fmt;
use std::io;
use std::sync::Arc;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as a caller can match it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A datagram or segment is malformed (too short, bad length, unknown command).
    Malformed,
    /// A segment carries another session's conversation id.
    WrongConv,
    /// A datagram failed its checksum or authentication (wrong key, corruption).
    Checksum,
    /// A message is too large for message mode (more fragments than allowed).
    MessageTooLarge,
    /// A buffer given to a receive is too small for the next message (message mode).
    BufferTooSmall,
    /// An invalid setting (MTU out of range, window of zero, unknown cipher, FEC shards).
    Config,
    /// The peer stopped acknowledging: the session is dead.
    DeadLink,
    /// The listener replaced or dropped the session (a new conv from the same address, or
    /// the listener went away).
    Reset,
    /// A read, write or close did not complete within its configured time.
    TimedOut,
    /// The session or listener was closed by this side (a write after `shutdown`). An
    /// `accept` after the listener's socket failed is [`ErrorKind::Io`], with that failure
    /// as its source.
    Closed,
    /// A socket or name-resolution failure; the `io::Error` is the source.
    Io,
}

/// An error of this crate: a [`kind`](Error::kind), a message saying what failed, and for
/// [`ErrorKind::Io`] the I/O error as its `source()`.
#[derive(Clone, Debug)]
pub struct Error {
    kind: ErrorKind,
    message: Message,
    source: Option<Arc<io::Error>>,
}

/// The message, kept structured so that the hot paths never format (or allocate) unless
/// someone displays the error.
#[derive(Clone, Debug)]
enum Message {
    Static(&'static str),
    Owned(String),
    WrongConv { got: u32, expected: u32 },
    TooLarge { len: usize, max: usize },
    TooSmall { got: usize, need: usize },
}

impl Error {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: Message::Owned(message.into()),
            source: None,
        }
    }

    /// An [`ErrorKind::Io`] error: `what` failed because of `source`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error {
            kind: ErrorKind::Io,
            message: Message::Owned(what.into()),
            source: Some(Arc::new(source)),
        }
    }

    /// [`Error::io`] with a cause already shared (reported to every caller that asks).
    pub(crate) fn io_shared(what: &'static str, source: Arc<io::Error>) -> Error {
        Error {
            kind: ErrorKind::Io,
            message: Message::Static(what),
            source: Some(source),
        }
    }

    pub(crate) const fn fixed(kind: ErrorKind, message: &'static str) -> Error {
        Error {
            kind,
            message: Message::Static(message),
            source: None,
        }
    }

    pub(crate) const fn malformed(what: &'static str) -> Error {
        Error::fixed(ErrorKind::Malformed, what)
    }

    pub(crate) const fn checksum() -> Error {
        Error::fixed(ErrorKind::Checksum, "checksum or authentication failed")
    }

    pub(crate) fn config(what: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config, what)
    }

    pub(crate) const fn dead_link() -> Error {
        Error::fixed(
            ErrorKind::DeadLink,
            "dead link: the peer stopped acknowledging",
        )
    }

    pub(crate) const fn wrong_conv(got: u32, expected: u32) -> Error {
        Error {
            kind: ErrorKind::WrongConv,
            message: Message::WrongConv { got, expected },
            source: None,
        }
    }

    pub(crate) const fn message_too_large(len: usize, max: usize) -> Error {
        Error {
            kind: ErrorKind::MessageTooLarge,
            message: Message::TooLarge { len, max },
            source: None,
        }
    }

    pub(crate) const fn buffer_too_small(got: usize, need: usize) -> Error {
        Error {
            kind: ErrorKind::BufferTooSmall,
            message: Message::TooSmall { got, need },
            source: None,
        }
    }

    /// The kind, for matching.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The `io::Error` kind this error becomes in `AsyncRead`/`AsyncWrite` (and through
    /// `From<Error> for io::Error`).
    pub fn io_kind(&self) -> io::ErrorKind {
        match self.kind {
            ErrorKind::Malformed | ErrorKind::WrongConv | ErrorKind::Checksum => {
                io::ErrorKind::InvalidData
            }
            ErrorKind::MessageTooLarge | ErrorKind::BufferTooSmall | ErrorKind::Config => {
                io::ErrorKind::InvalidInput
            }
            ErrorKind::DeadLink => io::ErrorKind::ConnectionAborted,
            ErrorKind::Reset => io::ErrorKind::ConnectionReset,
            ErrorKind::TimedOut => io::ErrorKind::TimedOut,
            ErrorKind::Closed => io::ErrorKind::BrokenPipe,
            ErrorKind::Io => self
                .source
                .as_ref()
                .map_or(io::ErrorKind::Other, |e| e.kind()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Message::Static(s) => f.write_str(s),
            Message::Owned(s) => f.write_str(s),
            Message::WrongConv { got, expected } => write!(
                f,
                "conversation id mismatch: got {got:#x}, expected {expected:#x}"
            ),
            Message::TooLarge { len, max } => write!(
                f,
                "message of {len} bytes is too large (at most {max} in message mode)"
            ),
            Message::TooSmall { got, need } => write!(
                f,
                "buffer of {got} bytes is too small for the next message of {need} bytes"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    /// Keeps the error inside (`get_ref()` downcasts to [`Error`]) with the matching
    /// [`io_kind`](Error::io_kind).
    fn from(e: Error) -> io::Error {
        io::Error::new(e.io_kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_chain_their_cause_and_keep_its_kind() {
        let e = Error::io(
            "cannot bind 127.0.0.1:1",
            io::Error::new(io::ErrorKind::AddrInUse, "in use"),
        );
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.to_string(), "cannot bind 127.0.0.1:1");
        let source = std::error::Error::source(&e).expect("chained");
        assert_eq!(source.to_string(), "in use");
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::AddrInUse);
        let inner = io.get_ref().and_then(|e| e.downcast_ref::<Error>());
        assert_eq!(inner.map(Error::kind), Some(ErrorKind::Io));
    }

    #[test]
    fn structured_messages_render_their_numbers() {
        assert_eq!(
            Error::wrong_conv(0x4c, 0x4d).to_string(),
            "conversation id mismatch: got 0x4c, expected 0x4d"
        );
        assert_eq!(
            io::Error::from(Error::dead_link()).kind(),
            io::ErrorKind::ConnectionAborted
        );
        assert!(Error::buffer_too_small(3, 4)
            .to_string()
            .contains("3 bytes"));
        assert!(std::error::Error::source(&Error::checksum()).is_none());
    }
}

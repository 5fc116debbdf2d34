//! The crate's error type.
//!
//! Every failing call returns an [`Error`]: a matchable [`ErrorKind`] plus where it happened,
//! printed NEO-style as `<local addr> - <remote addr> .<conn id>: <operation>: <cause>`.

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::message::ErrorMessage;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong. Match on this to decide what to do.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The link was closed by this side.
    #[error("link is closed")]
    LinkClosed,
    /// The link failed earlier (I/O error or protocol violation); the cause is kept.
    #[error("link is down: {0}")]
    LinkDown(Arc<io::Error>),
    /// The I/O error that took the link down, reported once to the first receiver.
    #[error("{0}")]
    Io(Arc<io::Error>),
    /// The link does not accept incoming connections (accept was closed).
    #[error("link is not listening for incoming connections")]
    NotListening,
    /// No connection id is free, or the connection table is full.
    #[error("too many open connections")]
    TooManyConnections,
    /// The connection was closed (by this side, or its receive side was closed).
    #[error("connection is closed")]
    ConnectionClosed,
    /// The connection's receive queue exceeded its budget on a link without flow control,
    /// so the connection's receive side was closed.
    #[error("receive budget exceeded: the application did not keep up, connection closed")]
    RecvBudgetExceeded,
    /// A message would not fit in one packet.
    #[error("packet too big: {len} payload bytes, the limit is {limit}")]
    PacketTooBig {
        /// Payload length that was attempted.
        len: usize,
        /// The largest payload allowed.
        limit: usize,
    },
    /// The version handshake failed.
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    /// A received message could not be decoded or was not one of the expected types.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The peer answered with an Error message.
    #[error("peer error: {0}")]
    Peer(ErrorMessage),
    /// The operation does not exist in this link's dialect (for example a full
    /// connection in the NEO/py dialect).
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// Establishing the underlying stream failed (connect, bind, TLS setup).
    #[error("{0}")]
    Connect(Arc<io::Error>),
}

/// Why the version handshake failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: peer = {peer:08x} ; our side = {ours:08x}")]
    VersionMismatch {
        /// The peer's version word.
        peer: u32,
        /// Our version word.
        ours: u32,
    },
    /// The peer closed the stream before sending its version. NEO/py closes without a word
    /// when the version words differ, so this is often a version mismatch.
    #[error(
        "peer closed during handshake (a version mismatch on the peer's side closes without a word)"
    )]
    PeerClosed,
    /// The peer did not complete the handshake in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The stream failed during the handshake.
    #[error("{0}")]
    Io(Arc<io::Error>),
    /// The TLS handshake failed.
    #[error("tls: {0}")]
    Tls(Arc<io::Error>),
}

/// Why a received message could not be turned into the expected value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A message with another code arrived.
    #[error("unexpected message: code {code:#06x} (expected one of {expected:04x?})")]
    Unexpected {
        /// The code that arrived.
        code: u16,
        /// The codes that would have been accepted.
        expected: Vec<u16>,
    },
    /// The payload does not follow the message's encoding.
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
    /// A codec (for example serde) rejected the payload.
    #[error("malformed payload: {0}")]
    Codec(String),
}

/// An error from a link or connection operation, with the place it happened.
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    place: Place,
    op: &'static str,
}

/// Where an error happened: the link's two addresses and, for connection operations, the
/// connection id.
#[derive(Clone, Debug)]
pub(crate) struct Place {
    pub(crate) link: Arc<str>,
    pub(crate) conn: Option<u32>,
}

impl Place {
    pub(crate) fn link(link: &Arc<str>) -> Place {
        Place {
            link: link.clone(),
            conn: None,
        }
    }

    pub(crate) fn conn(link: &Arc<str>, id: u32) -> Place {
        Place {
            link: link.clone(),
            conn: Some(id),
        }
    }
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, place: Place, op: &'static str) -> Error {
        Error {
            inner: Box::new(Inner { kind, place, op }),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.inner.kind
    }

    /// The operation that failed, such as `"recv"` or `"accept"`.
    pub fn op(&self) -> &'static str {
        self.inner.op
    }

    /// The connection id, for errors of connection operations.
    pub fn conn_id(&self) -> Option<u32> {
        self.inner.place.conn
    }

    /// The Error message the peer answered with, if that is what this is.
    pub fn peer_error(&self) -> Option<&ErrorMessage> {
        match &self.inner.kind {
            ErrorKind::Peer(m) => Some(m),
            _ => None,
        }
    }

    /// True when the link can no longer be used (closed, down, or its I/O failed).
    pub fn is_link_gone(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::LinkClosed | ErrorKind::LinkDown(_) | ErrorKind::Io(_)
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.place.link)?;
        if let Some(id) = self.inner.place.conn {
            write!(f, " .{id}")?;
        }
        write!(f, ": {}: {}", self.inner.op, self.inner.kind)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("place", &self.inner.place)
            .field("op", &self.inner.op)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.inner.kind)
    }
}

/// Lets an error be turned into an `io::Error`, for use behind `AsyncRead`-style APIs.
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.kind() {
            ErrorKind::LinkClosed | ErrorKind::ConnectionClosed => io::ErrorKind::NotConnected,
            ErrorKind::LinkDown(_) | ErrorKind::Io(_) => io::ErrorKind::ConnectionAborted,
            ErrorKind::Handshake(HandshakeError::Timeout(_)) => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// A TCP connect (or a socket option on the new stream) failed.
pub(crate) fn connect_error(e: std::io::Error) -> Error {
    net_error("dial", "connect", e)
}

/// Binding a listener failed.
pub(crate) fn listen_error(e: std::io::Error) -> Error {
    net_error("listen", "bind", e)
}

pub(crate) fn net_error(place: &str, op: &'static str, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Connect(Arc::new(e)),
        Place::link(&Arc::from(place)),
        op,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_place() {
        let link: Arc<str> = Arc::from("127.0.0.1:1 - 127.0.0.1:2");
        let e = Error::new(ErrorKind::ConnectionClosed, Place::conn(&link, 7), "recv");
        assert_eq!(
            e.to_string(),
            "127.0.0.1:1 - 127.0.0.1:2 .7: recv: connection is closed"
        );
        let e = Error::new(
            ErrorKind::Handshake(HandshakeError::VersionMismatch { peer: 2, ours: 1 }),
            Place::link(&link),
            "handshake",
        );
        assert_eq!(
            e.to_string(),
            "127.0.0.1:1 - 127.0.0.1:2: handshake: protocol version mismatch: peer = 00000002 ; our side = 00000001"
        );
    }
}

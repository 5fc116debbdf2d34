//! The crate's error type.
//!
//! Every failing call returns an [`Error`]: a matchable [`ErrorKind`] plus where it happened,
//! printed NEO-style as `<local addr> - <remote addr> .<conn id>: <operation>: <what>`; the
//! I/O error behind it, if any, is its [`source`](std::error::Error::source).

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::message::ErrorMessage;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong: match on it to decide what to do. The details (the peer's Error
/// message, the handshake's or the decoder's reason, the I/O error) are on the [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The link was closed by this side.
    LinkClosed,
    /// The link failed earlier (I/O error or protocol violation); the cause is the
    /// error's [`source`](std::error::Error::source).
    LinkDown,
    /// The I/O error that took the link down, reported once to the first receiver.
    Io,
    /// The link does not accept incoming connections (accept was closed).
    NotListening,
    /// No connection id is free, or the connection table is full.
    TooManyConnections,
    /// The connection was closed (by this side, or its receive side was closed).
    ConnectionClosed,
    /// The connection's receive queue exceeded its budget on a link without flow control,
    /// so the connection's receive side was closed.
    RecvBudgetExceeded,
    /// A message would not fit in one packet ([`Error::packet_too_big`]).
    PacketTooBig,
    /// The version handshake failed ([`Error::handshake_error`]).
    Handshake,
    /// A received message could not be decoded or was not one of the expected types
    /// ([`Error::decode_error`]).
    Decode,
    /// The peer answered with an application Error message ([`Error::peer_error`]): the
    /// request reached the peer's application, which said no.
    Peer,
    /// The peer refused the connection with NEO's "connection refused" Error: it is not
    /// accepting connections (it closed accept, it is shutting down, or its connection
    /// table is full). Nothing was processed; the request may be retried elsewhere.
    Refused,
    /// The peer closed the connection with NEO's "connection closed" Error: the request was
    /// released without an answer (its handler dropped it, closed it or panicked), or the
    /// peer's connection was closed. Whether it was processed is unknown.
    ClosedByPeer,
    /// The call's deadline passed before the answer came ([`Config::ask_timeout`], or a
    /// `*_within` call). The request was abandoned on our side; a late answer is dropped.
    ///
    /// [`Config::ask_timeout`]: crate::Config::ask_timeout
    DeadlineExceeded,
    /// The peer stopped answering at the transport level: TCP timed out, KCP gave up
    /// retransmitting, or the link's idle timeout passed without a packet. The link is
    /// down, as for [`ErrorKind::LinkDown`].
    DeadPeer,
    /// The operation does not exist in this link's dialect (for example a full
    /// connection in the NEO/py dialect).
    Unsupported,
    /// Establishing the underlying stream failed (connect, bind, TLS setup); the cause is
    /// the error's [`source`](std::error::Error::source).
    Connect,
}

/// What went wrong, with its details (the crate's own; callers see [`ErrorKind`] and
/// the accessors of [`Error`]).
#[derive(Clone, Debug)]
pub(crate) enum Cause {
    LinkClosed,
    LinkDown(Arc<io::Error>),
    Io(Arc<io::Error>),
    NotListening,
    TooManyConnections,
    ConnectionClosed,
    RecvBudgetExceeded,
    PacketTooBig {
        len: usize,
        limit: usize,
    },
    Handshake(HandshakeError),
    Decode(DecodeError),
    Peer(ErrorMessage),
    Deadline(std::time::Duration),
    Unsupported(&'static str),
    Connect(Arc<io::Error>),
    /// A setup step failed for a reason said in our own words (a bad setting, a file that
    /// cannot be read, an address that resolves to nothing), with the I/O error behind it
    /// if there is one. Kind `Connect`.
    Setup {
        what: String,
        cause: Option<Arc<io::Error>>,
    },
}

impl Cause {
    fn kind(&self) -> ErrorKind {
        match self {
            Cause::LinkClosed => ErrorKind::LinkClosed,
            Cause::LinkDown(e) | Cause::Io(e) if is_dead_peer(e) => ErrorKind::DeadPeer,
            Cause::LinkDown(_) => ErrorKind::LinkDown,
            Cause::Io(_) => ErrorKind::Io,
            Cause::NotListening => ErrorKind::NotListening,
            Cause::TooManyConnections => ErrorKind::TooManyConnections,
            Cause::ConnectionClosed => ErrorKind::ConnectionClosed,
            Cause::RecvBudgetExceeded => ErrorKind::RecvBudgetExceeded,
            Cause::PacketTooBig { .. } => ErrorKind::PacketTooBig,
            Cause::Handshake(_) => ErrorKind::Handshake,
            Cause::Decode(_) => ErrorKind::Decode,
            Cause::Peer(m) => peer_kind(m),
            Cause::Deadline(_) => ErrorKind::DeadlineExceeded,
            Cause::Unsupported(_) => ErrorKind::Unsupported,
            Cause::Connect(_) | Cause::Setup { .. } => ErrorKind::Connect,
        }
    }

    /// What went wrong, in words; a chained cause is not repeated.
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::LinkClosed => f.write_str("link is closed"),
            Cause::LinkDown(_) => f.write_str("link is down"),
            Cause::Io(_) => f.write_str("link failed"),
            Cause::NotListening => f.write_str("link is not listening for incoming connections"),
            Cause::TooManyConnections => f.write_str("too many open connections"),
            Cause::ConnectionClosed => f.write_str("connection is closed"),
            Cause::RecvBudgetExceeded => f.write_str(
                "receive budget exceeded: the application did not keep up, connection closed",
            ),
            Cause::PacketTooBig { len, limit } => write!(
                f,
                "packet too big: {len} payload bytes, the limit is {limit}"
            ),
            Cause::Handshake(h) => write!(f, "{h}"),
            Cause::Decode(d) => write!(f, "decode: {d}"),
            Cause::Peer(m) => match peer_kind(m) {
                ErrorKind::Refused => {
                    f.write_str("refused by the peer (not accepting connections)")
                }
                ErrorKind::ClosedByPeer => {
                    f.write_str("closed by the peer (the request was released unanswered)")
                }
                _ => write!(f, "peer error: {m}"),
            },
            Cause::Deadline(d) => write!(f, "deadline exceeded: no answer within {d:?}"),
            Cause::Unsupported(what) => write!(f, "not supported: {what}"),
            Cause::Connect(_) => f.write_str("failed"),
            Cause::Setup { what, .. } => f.write_str(what),
        }
    }
}

/// The text of the link's own Error replies (`docs/protocols/link.md`, "Packets"): NEO
/// sends them with code `PROTOCOL_ERROR`.
pub(crate) const CONN_CLOSED_TEXT: &str = "connection closed";
/// See [`CONN_CLOSED_TEXT`].
pub(crate) const CONN_REFUSED_TEXT: &str = "connection refused";

/// Tells the link's own replies ("connection refused", "connection closed") from an
/// application's Error.
fn peer_kind(m: &ErrorMessage) -> ErrorKind {
    if m.code != crate::message::ErrorCode::PROTOCOL_ERROR {
        return ErrorKind::Peer;
    }
    match m.message.as_str() {
        CONN_REFUSED_TEXT => ErrorKind::Refused,
        CONN_CLOSED_TEXT => ErrorKind::ClosedByPeer,
        _ => ErrorKind::Peer,
    }
}

/// Whether the I/O failure that ended a link means the peer went silent: a timeout (TCP
/// retransmission or keepalive, our idle timeout) or a KCP session found dead.
fn is_dead_peer(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::TimedOut {
        return true;
    }
    #[cfg(feature = "kcp")]
    if let Some(k) = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<nodelink_kcp::Error>())
    {
        return matches!(
            k.kind(),
            nodelink_kcp::ErrorKind::DeadLink | nodelink_kcp::ErrorKind::TimedOut
        );
    }
    false
}

impl From<HandshakeError> for Cause {
    fn from(h: HandshakeError) -> Cause {
        Cause::Handshake(h)
    }
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
    /// Over a datagram transport (KCP), nothing usable came back within the handshake
    /// timeout; `likely` names the probable causes, from what the session saw.
    #[error("no answer within {after:?}: {likely}")]
    Unanswered {
        /// How long we waited.
        after: std::time::Duration,
        /// The probable causes, in words.
        likely: &'static str,
    },
    /// The stream failed during the handshake (the cause is the error's source).
    #[error("the stream failed during the handshake")]
    Io(#[source] Arc<io::Error>),
    /// The TLS handshake failed (the cause is the error's source).
    #[error("TLS handshake failed")]
    Tls(#[source] Arc<io::Error>),
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
    cause: Cause,
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
    pub(crate) fn new(cause: Cause, place: Place, op: &'static str) -> Error {
        Error {
            inner: Box::new(Inner { cause, place, op }),
        }
    }

    /// The same error with another handshake failure (a more precise diagnosis).
    #[cfg(feature = "kcp")]
    pub(crate) fn with_handshake_error(mut self, h: HandshakeError) -> Error {
        self.inner.cause = Cause::Handshake(h);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.cause.kind()
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
        match &self.inner.cause {
            Cause::Peer(m) => Some(m),
            _ => None,
        }
    }

    /// Why the version handshake failed, if that is what this is.
    pub fn handshake_error(&self) -> Option<&HandshakeError> {
        match &self.inner.cause {
            Cause::Handshake(h) => Some(h),
            _ => None,
        }
    }

    /// Why a received message could not be decoded, if that is what this is.
    pub fn decode_error(&self) -> Option<&DecodeError> {
        match &self.inner.cause {
            Cause::Decode(d) => Some(d),
            _ => None,
        }
    }

    /// The payload length that was attempted and the limit, for [`ErrorKind::PacketTooBig`].
    pub fn packet_too_big(&self) -> Option<(usize, usize)> {
        match self.inner.cause {
            Cause::PacketTooBig { len, limit } => Some((len, limit)),
            _ => None,
        }
    }

    /// The I/O error behind this one, if any (a failed link, connect or handshake).
    pub fn io_error(&self) -> Option<&io::Error> {
        match &self.inner.cause {
            Cause::LinkDown(e) | Cause::Io(e) | Cause::Connect(e) => Some(e),
            Cause::Setup { cause: Some(e), .. } => Some(e),
            Cause::Handshake(HandshakeError::Io(e) | HandshakeError::Tls(e)) => Some(e),
            _ => None,
        }
    }

    /// True when the link can no longer be used (closed, down, its I/O failed, or its
    /// peer went silent).
    pub fn is_link_gone(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::LinkClosed | ErrorKind::LinkDown | ErrorKind::Io | ErrorKind::DeadPeer
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.place.link)?;
        if let Some(id) = self.inner.place.conn {
            write!(f, " .{id}")?;
        }
        write!(f, ": {}: ", self.inner.op)?;
        self.inner.cause.describe(f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("cause", &self.inner.cause)
            .field("place", &self.inner.place)
            .field("op", &self.inner.op)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.inner.cause {
            Cause::LinkDown(e) | Cause::Io(e) | Cause::Connect(e) => Some(&**e),
            Cause::Setup { cause: Some(e), .. } => Some(&**e),
            Cause::Handshake(h) => std::error::Error::source(h),
            _ => None,
        }
    }
}

/// Lets an error be turned into an `io::Error`, for use behind `AsyncRead`-style APIs.
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e.inner.cause {
            Cause::LinkClosed | Cause::ConnectionClosed => io::ErrorKind::NotConnected,
            Cause::LinkDown(e) | Cause::Io(e) if is_dead_peer(e) => io::ErrorKind::TimedOut,
            Cause::LinkDown(_) | Cause::Io(_) => io::ErrorKind::ConnectionAborted,
            Cause::Handshake(HandshakeError::Timeout(_) | HandshakeError::Unanswered { .. })
            | Cause::Deadline(_) => io::ErrorKind::TimedOut,
            Cause::Setup { cause: None, .. } => io::ErrorKind::InvalidInput,
            // A failed connect, bind or handshake keeps the kind of the I/O error behind it
            // (connection refused, address in use, ...).
            _ => e.io_error().map_or(io::ErrorKind::Other, io::Error::kind),
        };
        io::Error::new(kind, e)
    }
}

/// A TCP connect (or a socket option on the new stream) failed.
pub(crate) fn connect_error(e: std::io::Error) -> Error {
    net_error("dial", "connect", e)
}

/// Dialling `addr` failed: the error names the address.
pub(crate) fn dial_error(addr: std::net::SocketAddr, e: std::io::Error) -> Error {
    net_error(&format!("dial {addr}"), "connect", e)
}

/// Binding `addr` failed: the error names the address.
pub(crate) fn bind_error(addr: std::net::SocketAddr, e: std::io::Error) -> Error {
    net_error(&format!("listen {addr}"), "bind", e)
}

/// The addresses `addr` resolves to (at least one), for `place` ("dial", "listen").
pub(crate) async fn resolve(
    addr: impl tokio::net::ToSocketAddrs,
    place: &str,
) -> Result<Vec<std::net::SocketAddr>> {
    let addrs: Vec<_> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| net_error(place, "resolve", e))?
        .collect();
    if addrs.is_empty() {
        return Err(Error::new(
            Cause::Setup {
                what: "the address resolved to nothing".into(),
                cause: None,
            },
            Place::link(&Arc::from(place)),
            "resolve",
        ));
    }
    Ok(addrs)
}

/// Binding a listener failed.
pub(crate) fn net_error(place: &str, op: &'static str, e: std::io::Error) -> Error {
    Error::new(
        Cause::Connect(Arc::new(e)),
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
        let e = Error::new(Cause::ConnectionClosed, Place::conn(&link, 7), "recv");
        assert_eq!(
            e.to_string(),
            "127.0.0.1:1 - 127.0.0.1:2 .7: recv: connection is closed"
        );
        let e = Error::new(
            Cause::Handshake(HandshakeError::VersionMismatch { peer: 2, ours: 1 }),
            Place::link(&link),
            "handshake",
        );
        assert_eq!(
            e.to_string(),
            "127.0.0.1:1 - 127.0.0.1:2: handshake: protocol version mismatch: peer = 00000002 ; our side = 00000001"
        );
    }

    #[test]
    fn the_io_cause_is_chained_not_repeated() {
        use std::error::Error as _;
        let link: Arc<str> = Arc::from("a - b");
        let reset = Arc::new(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "reset by peer",
        ));
        let e = Error::new(Cause::LinkDown(reset), Place::link(&link), "recv");
        assert_eq!(e.kind(), ErrorKind::LinkDown);
        assert_eq!(e.to_string(), "a - b: recv: link is down");
        assert_eq!(e.source().unwrap().to_string(), "reset by peer");
        assert_eq!(e.io_error().unwrap().kind(), io::ErrorKind::ConnectionReset);
        let tls = Arc::new(io::Error::other("bad certificate"));
        let e = Error::new(
            Cause::Handshake(HandshakeError::Tls(tls)),
            Place::link(&link),
            "handshake",
        );
        assert_eq!(e.kind(), ErrorKind::Handshake);
        assert_eq!(e.to_string(), "a - b: handshake: TLS handshake failed");
        assert_eq!(e.source().unwrap().to_string(), "bad certificate");
        assert!(e.handshake_error().is_some() && e.peer_error().is_none());
    }
}

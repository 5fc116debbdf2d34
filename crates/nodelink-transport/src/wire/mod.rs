//! Sans-IO codecs for protocol version 0 of network-transport-tcp.
//!
//! Nothing here touches a socket: every codec works on a [`BytesMut`](bytes::BytesMut)
//! that the caller fills. Decoders return `Ok(None)` while more bytes are needed, and
//! `Err` as soon as the bytes already seen are hostile (a length beyond the configured
//! limit, an unknown control code...). A decoder never reserves memory for a length it
//! is about to reject, so a peer cannot make us allocate by announcing a huge frame.
//!
//! Every integer on the wire is a big-endian `u32`; every string is preceded by its
//! byte length as such an integer.
//!
//! * [`ConnectionRequest`] — the first bytes a connecting socket sends.
//! * [`HandshakeResponse`] — the server's one-word answer (plus extra bytes for
//!   `HostMismatch` and `UnsupportedVersion`).
//! * [`Frame`] / [`FrameDecoder`] — everything exchanged after `Accepted`.

mod error;
mod frame;
mod request;
mod response;

pub use error::WireError;
pub use frame::{encode_data_header, Frame, FrameDecoder};
pub use request::ConnectionRequest;
pub use response::HandshakeResponse;

/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 0;

/// The first lightweight connection id a sender hands out; smaller values on the wire are
/// control codes.
pub const FIRST_LCID: u32 = 1024;

/// Control code: the sender opened a lightweight connection (`u32 0 | u32 lcid`).
pub const CREATED_NEW_CONNECTION: u32 = 0;
/// Control code: the sender closed a lightweight connection (`u32 1 | u32 lcid`).
pub const CLOSE_CONNECTION: u32 = 1;
/// Control code: the sender wants to close the socket (`u32 2 | u32 lastReceivedId`).
pub const CLOSE_SOCKET: u32 = 2;
/// Control code: the sender's endpoint is closing (`u32 3`).
pub const CLOSE_END_POINT: u32 = 3;
/// Control code: is this socket still alive? (`u32 4`).
pub const PROBE_SOCKET: u32 = 4;
/// Control code: answer to [`PROBE_SOCKET`] (`u32 5`).
pub const PROBE_SOCKET_ACK: u32 = 5;

/// Response word: the socket is now the heavyweight connection.
pub const RESPONSE_ACCEPTED: u32 = 0;
/// Response word: the requested endpoint does not exist.
pub const RESPONSE_INVALID: u32 = 1;
/// Response word: the request crossed one going the other way.
pub const RESPONSE_CROSSED: u32 = 2;
/// Response word: the claimed host does not match the socket's peer.
pub const RESPONSE_HOST_MISMATCH: u32 = 3;
/// Response word: the server wants another protocol version.
pub const RESPONSE_UNSUPPORTED_VERSION: u32 = 0xFFFF_FFFF;

/// Reads a big-endian u32 at `at` without consuming; the caller checked the length.
pub(crate) fn peek_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

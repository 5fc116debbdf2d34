//! Messages: typed payloads identified by a 16-bit code.
//!
//! A [`Message`] knows its code and how to encode and decode its payload. The link adds the
//! header. Users with their own codecs can skip this trait entirely and work with raw
//! [`Packet`](crate::Packet)s and [`bytes::Bytes`] payloads.
//!
//! The only message the link itself needs is [`ErrorMessage`] (code 0x8000): the peer uses
//! it to refuse or close connections, and [`Conn::ask`](crate::Conn::ask) turns it into an
//! error value. [`Ping`] and [`Pong`] are NEO's empty request/answer pair.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

use crate::DecodeError;

/// A message type: a code and a payload encoding.
///
/// Answer codes are the request code with the 0x8000 bit set.
///
/// ```
/// use bytes::{Buf, BufMut, Bytes, BytesMut};
/// use nodelink::{DecodeError, Message};
///
/// /// A request carrying one object id.
/// struct GetObject { oid: u64 }
///
/// impl Message for GetObject {
///     const CODE: u16 = 0x0011;
///     fn encode(&self, dst: &mut BytesMut) { dst.put_u64(self.oid) }
///     fn decode(mut payload: Bytes) -> Result<Self, DecodeError> {
///         if payload.len() != 8 { return Err(DecodeError::Malformed("GetObject is 8 bytes")) }
///         Ok(GetObject { oid: payload.get_u64() })
///     }
/// }
/// ```
pub trait Message: Sized {
    /// The message code that identifies this type on the wire.
    const CODE: u16;
    /// Appends the payload to `dst`.
    fn encode(&self, dst: &mut BytesMut);
    /// Decodes a payload received with [`Self::CODE`].
    fn decode(payload: Bytes) -> Result<Self, DecodeError>;
}

/// A request that declares the type of its answer, for [`Link::call`](crate::Link::call)
/// and [`Handlers::on`](crate::Handlers::on).
///
/// NEO's rule: a request's code has the answer bit (`0x8000`) clear and its answer's code
/// has it set. `call` and `Handlers::on` check it when they are compiled; the two-type form
/// of [`serde_message!`](crate::serde_message) checks it where the pair is declared.
///
/// ```
/// # use bytes::{Bytes, BytesMut};
/// # use nodelink::{Ask, DecodeError, Message};
/// struct GetLastTid;
/// struct AnswerLastTid(u64);
/// # impl Message for GetLastTid { const CODE: u16 = 0x0015;
/// #     fn encode(&self, _: &mut BytesMut) {}
/// #     fn decode(_: Bytes) -> Result<Self, DecodeError> { Ok(GetLastTid) } }
/// # impl Message for AnswerLastTid { const CODE: u16 = 0x8015;
/// #     fn encode(&self, _: &mut BytesMut) {}
/// #     fn decode(_: Bytes) -> Result<Self, DecodeError> { Ok(AnswerLastTid(0)) } }
/// impl Ask for GetLastTid {
///     type Answer = AnswerLastTid;
/// }
/// ```
pub trait Ask: Message {
    /// The message the peer answers with.
    type Answer: Message;
}

/// Compile-time check of an [`Ask`] pair (used in `const` blocks, so a pair that breaks
/// the answer-bit rule fails the build where it is used).
pub(crate) const fn check_pair<R: Ask>() {
    check_codes(R::CODE, <R::Answer as Message>::CODE)
}

/// The answer-bit rule on two codes, for [`serde_message!`](crate::serde_message)'s pair
/// form (evaluated in a `const` item, so a wrong pair fails the build).
#[doc(hidden)]
pub const fn check_codes(request: u16, answer: u16) {
    assert!(
        request & crate::frame::ANSWER_BIT == 0,
        "a request's code must not have the answer bit (0x8000)"
    );
    assert!(
        answer & crate::frame::ANSWER_BIT != 0,
        "an answer's code must have the answer bit (0x8000)"
    );
}

/// Compile-time check that `M` can be an answer (its code has the answer bit): the
/// untyped `ask1`/`ask` use it, so asking for a request type back does not build.
pub(crate) const fn check_answer<M: Message>() {
    assert!(
        M::CODE & crate::frame::ANSWER_BIT != 0,
        "an answer's code must have the answer bit (0x8000)"
    );
}

/// The error for an Error packet received where an answer was expected.
pub(crate) fn peer_cause(payload: Bytes) -> crate::error::Cause {
    match ErrorMessage::decode(payload) {
        Ok(m) => crate::error::Cause::Peer(m),
        Err(e) => crate::error::Cause::Decode(e),
    }
}

/// NEO's error codes, carried by [`ErrorMessage`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// Not an error: an acknowledgement.
    pub const ACK: ErrorCode = ErrorCode(0);
    /// The request was denied.
    pub const DENIED: ErrorCode = ErrorCode(1);
    /// The node is not ready.
    pub const NOT_READY: ErrorCode = ErrorCode(2);
    /// Object id not found.
    pub const OID_NOT_FOUND: ErrorCode = ErrorCode(3);
    /// Transaction id not found.
    pub const TID_NOT_FOUND: ErrorCode = ErrorCode(4);
    /// Object does not exist.
    pub const OID_DOES_NOT_EXIST: ErrorCode = ErrorCode(5);
    /// Protocol violation; the link's own "connection closed/refused" replies use it.
    pub const PROTOCOL_ERROR: ErrorCode = ErrorCode(6);
    /// Replication error.
    pub const REPLICATION_ERROR: ErrorCode = ErrorCode(7);
    /// Checking error.
    pub const CHECKING_ERROR: ErrorCode = ErrorCode(8);
    /// Backend does not implement the operation.
    pub const BACKEND_NOT_IMPLEMENTED: ErrorCode = ErrorCode(9);
    /// Cell is not readable.
    pub const NON_READABLE_CELL: ErrorCode = ErrorCode(10);
    /// Read-only access.
    pub const READ_ONLY_ACCESS: ErrorCode = ErrorCode(11);
    /// Incomplete transaction.
    pub const INCOMPLETE_TRANSACTION: ErrorCode = ErrorCode(12);

    /// The symbolic name, if the code is one NEO defines.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 13] = [
            "ACK",
            "DENIED",
            "NOT_READY",
            "OID_NOT_FOUND",
            "TID_NOT_FOUND",
            "OID_DOES_NOT_EXIST",
            "PROTOCOL_ERROR",
            "REPLICATION_ERROR",
            "CHECKING_ERROR",
            "BACKEND_NOT_IMPLEMENTED",
            "NON_READABLE_CELL",
            "READ_ONLY_ACCESS",
            "INCOMPLETE_TRANSACTION",
        ];
        NAMES.get(self.0 as usize).copied()
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ErrorCode({})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// NEO's Error message (code 0x8000): `u32 code | u32 len | len bytes of UTF-8 text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorMessage {
    /// What kind of error.
    pub code: ErrorCode,
    /// Human-readable text.
    pub message: String,
}

impl ErrorMessage {
    /// Builds an error message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorMessage {
            code,
            message: message.into(),
        }
    }

    /// Appends the payload of an Error message to `dst` without building a `String`.
    pub(crate) fn encode_parts(code: ErrorCode, text: &str, dst: &mut BytesMut) {
        dst.put_u32(code.0);
        dst.put_u32(text.len() as u32);
        dst.put_slice(text.as_bytes());
    }
}

impl fmt::Display for ErrorMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorMessage {}

impl Message for ErrorMessage {
    const CODE: u16 = 0x8000;

    fn encode(&self, dst: &mut BytesMut) {
        Self::encode_parts(self.code, &self.message, dst)
    }

    fn decode(mut payload: Bytes) -> Result<Self, DecodeError> {
        if payload.len() < 8 {
            return Err(DecodeError::Malformed("Error message shorter than 8 bytes"));
        }
        let code = ErrorCode(payload.get_u32());
        let len = payload.get_u32() as usize;
        if payload.len() != len {
            return Err(DecodeError::Malformed(
                "Error message text length does not match the payload",
            ));
        }
        let message = String::from_utf8(payload.to_vec())
            .map_err(|_| DecodeError::Malformed("Error message text is not UTF-8"))?;
        Ok(ErrorMessage { code, message })
    }
}

/// NEO's Ping request (code 2, empty payload).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ping;

/// NEO's Pong answer (code 0x8002, empty payload).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pong;

fn decode_empty(payload: &Bytes, what: &'static str) -> Result<(), DecodeError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::Malformed(what))
    }
}

impl Message for Ping {
    const CODE: u16 = 2;
    fn encode(&self, _dst: &mut BytesMut) {}
    fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        decode_empty(&payload, "Ping has an empty payload").map(|()| Ping)
    }
}

impl Message for Pong {
    const CODE: u16 = 0x8002;
    fn encode(&self, _dst: &mut BytesMut) {}
    fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        decode_empty(&payload, "Pong has an empty payload").map(|()| Pong)
    }
}

impl Ask for Ping {
    type Answer = Pong;
}

/// A message whose payload is an opaque byte string, for tools that only echo or measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raw<const CODE: u16>(pub Bytes);

impl<const C: u16> Message for Raw<C> {
    const CODE: u16 = C;
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_slice(&self.0)
    }
    fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        Ok(Raw(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_round_trip_and_bytes() {
        let m = ErrorMessage::new(ErrorCode::PROTOCOL_ERROR, "connection closed");
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        let mut expected = vec![0, 0, 0, 6, 0, 0, 0, 0x11];
        expected.extend_from_slice(b"connection closed");
        assert_eq!(&buf[..], &expected[..]);
        assert_eq!(ErrorMessage::decode(buf.freeze()).unwrap(), m);
    }

    #[test]
    fn error_message_rejects_bad_payloads() {
        assert!(ErrorMessage::decode(Bytes::from_static(b"\0\0\0\x06")).is_err());
        assert!(ErrorMessage::decode(Bytes::from_static(b"\0\0\0\x06\0\0\0\x05abc")).is_err());
        assert!(ErrorMessage::decode(Bytes::from_static(b"\0\0\0\x06\0\0\0\x01\xff")).is_err());
        assert!(ErrorMessage::decode(Bytes::from_static(b"\0\0\0\x06\xff\xff\xff\xff")).is_err());
    }

    #[test]
    fn error_code_names() {
        assert_eq!(ErrorCode::PROTOCOL_ERROR.to_string(), "PROTOCOL_ERROR");
        assert_eq!(ErrorCode(99).to_string(), "ErrorCode(99)");
    }
}

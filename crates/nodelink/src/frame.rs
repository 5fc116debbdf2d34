//! The packet header and the incremental packet decoder.
//!
//! Every packet on a link is a 10-byte header followed by the payload:
//!
//! ```text
//! offset 0..3   u32 BE  connection id
//! offset 4..5   u16 BE  message code   (0x8000 = "answer" bit)
//! offset 6..9   u32 BE  payload length (header not included)
//! offset 10..   payload
//! ```
//!
//! A whole packet, header included, may not exceed [`MAX_PACKET_SIZE`]. The decoder checks the
//! declared length *before* reserving room for the payload, so a hostile length never makes
//! us allocate.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of the packet header in bytes.
pub const HEADER_LEN: usize = 10;
/// Largest packet, header included (64 MiB), as in NEO.
pub const MAX_PACKET_SIZE: usize = 0x400_0000;
/// Largest payload a packet can carry.
pub const MAX_PAYLOAD_LEN: usize = MAX_PACKET_SIZE - HEADER_LEN;
/// The bit that marks a message code as an answer (and the code of the Error message).
pub const ANSWER_BIT: u16 = 0x8000;

/// Returns true when `code` is an answer code (its 0x8000 bit is set).
///
/// The link never sends an automatic reply to such a packet, so two peers can never bounce
/// Error messages at each other forever.
pub fn is_answer(code: u16) -> bool {
    code & ANSWER_BIT != 0
}

/// The fixed-size header in front of every packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Connection the packet belongs to.
    pub conn_id: u32,
    /// Message code.
    pub code: u16,
    /// Payload length in bytes.
    pub len: u32,
}

impl Header {
    /// The header as it appears on the wire.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.conn_id.to_be_bytes());
        out[4..6].copy_from_slice(&self.code.to_be_bytes());
        out[6..10].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Appends the header to `dst`.
    pub fn put(&self, dst: &mut impl BufMut) {
        dst.put_slice(&self.to_bytes());
    }

    /// Parses a header and checks the declared length against [`MAX_PAYLOAD_LEN`].
    pub fn parse(src: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
        Self::parse_with_limit(src, MAX_PAYLOAD_LEN)
    }

    /// Parses a header and checks the declared length against `max_payload` (NEO/py 1.12
    /// accepts up to [`MAX_PACKET_SIZE`] bytes of payload, see
    /// [`Dialect::max_recv_payload`](crate::Dialect::max_recv_payload)).
    pub fn parse_with_limit(
        src: &[u8; HEADER_LEN],
        max_payload: usize,
    ) -> Result<Header, FrameError> {
        let header = Self::read(src);
        // Compare against the payload bound rather than adding the header length to `len`,
        // so the check cannot overflow.
        if header.len as usize > max_payload {
            return Err(FrameError::TooBig {
                len: header.len,
                limit: max_payload,
            });
        }
        Ok(header)
    }

    /// The three fields, unchecked (for bytes already validated, or by the caller).
    fn read(src: &[u8; HEADER_LEN]) -> Header {
        Header {
            conn_id: u32::from_be_bytes([src[0], src[1], src[2], src[3]]),
            code: u16::from_be_bytes([src[4], src[5]]),
            len: u32::from_be_bytes([src[6], src[7], src[8], src[9]]),
        }
    }
}

/// A framing violation: the byte stream can no longer be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announced a payload longer than the protocol allows.
    #[error("packet too big: header announces {len} payload bytes, the limit is {limit}")]
    TooBig {
        /// The announced payload length.
        len: u32,
        /// The largest payload accepted.
        limit: usize,
    },
}

/// One packet received from the peer. The payload is a zero-copy slice of the read buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Connection the packet arrived on.
    pub conn_id: u32,
    /// Message code.
    pub code: u16,
    /// Raw payload bytes.
    pub payload: Bytes,
}

impl Packet {
    /// Whether the message code has the answer bit.
    pub fn is_answer(&self) -> bool {
        is_answer(self.code)
    }

    /// Decodes the payload as message type `M`, checking the code first.
    pub fn decode<M: crate::Message>(&self) -> Result<M, crate::DecodeError> {
        if self.code != M::CODE {
            return Err(crate::DecodeError::Unexpected {
                code: self.code,
                expected: vec![M::CODE],
            });
        }
        M::decode(self.payload.clone())
    }

    /// Length of the packet on the wire, header included.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// Takes one complete packet off the front of `buf`, if it holds one.
///
/// Returns `Ok(None)` when more bytes are needed; in that case room for the rest of the
/// packet has been reserved (only after the length was validated), so the next read can
/// fetch the remainder in one system call.
pub fn decode_packet(buf: &mut BytesMut) -> Result<Option<Packet>, FrameError> {
    decode_packet_with_limit(buf, MAX_PAYLOAD_LEN)
}

/// [`decode_packet`] with another payload limit (the dialect's, see
/// [`Dialect::max_recv_payload`](crate::Dialect::max_recv_payload)).
pub fn decode_packet_with_limit(
    buf: &mut BytesMut,
    max_payload: usize,
) -> Result<Option<Packet>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let mut raw = [0u8; HEADER_LEN];
    raw.copy_from_slice(&buf[..HEADER_LEN]);
    let header = Header::parse_with_limit(&raw, max_payload)?;
    let total = HEADER_LEN + header.len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut packet = buf.split_to(total).freeze();
    packet.advance(HEADER_LEN);
    Ok(Some(Packet {
        conn_id: header.conn_id,
        code: header.code,
        payload: packet,
    }))
}

/// What [`scan`] found at the front of a read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Leading bytes that are whole packets with valid headers.
    pub(crate) whole: usize,
    /// Bytes still missing for the packet after them, when its header is there and valid
    /// (0 when the header is incomplete too, or when there is nothing after them).
    pub(crate) missing: usize,
    /// The header right after the whole packets is invalid: the stream is broken there.
    pub(crate) error: Option<FrameError>,
}

/// Finds how many leading bytes of `buf` are whole packets, so that the reader can cut them
/// off in one step and hand each packet out as a slice of that block: one reference-counted
/// block per read rather than one split of the read buffer per packet.
pub(crate) fn scan(buf: &[u8], max_payload: usize) -> Scan {
    let mut at = 0;
    while let Some(raw) = buf[at..].first_chunk::<HEADER_LEN>() {
        let header = match Header::parse_with_limit(raw, max_payload) {
            Ok(header) => header,
            Err(e) => {
                return Scan {
                    whole: at,
                    missing: 0,
                    error: Some(e),
                }
            }
        };
        let end = at + HEADER_LEN + header.len as usize;
        if end > buf.len() {
            return Scan {
                whole: at,
                missing: end - buf.len(),
                error: None,
            };
        }
        at = end;
    }
    Scan {
        whole: at,
        missing: 0,
        error: None,
    }
}

/// Takes the first packet off `block`, a run of whole packets that [`scan`] validated.
pub(crate) fn next_whole(block: &mut Bytes) -> Option<Packet> {
    let header = Header::read(block.first_chunk::<HEADER_LEN>()?);
    let end = (HEADER_LEN + header.len as usize).min(block.len());
    let mut payload = block.split_to(end);
    payload.advance(HEADER_LEN);
    Some(Packet {
        conn_id: header.conn_id,
        code: header.code,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_are_big_endian() {
        let h = Header {
            conn_id: 0x0102_0304,
            code: 0x8002,
            len: 0x0003_0c0d,
        };
        assert_eq!(
            h.to_bytes(),
            [1, 2, 3, 4, 0x80, 0x02, 0x00, 0x03, 0x0c, 0x0d]
        );
        assert_eq!(Header::parse(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn size_limit_at_and_just_over_the_bound() {
        let at = Header {
            conn_id: 1,
            code: 2,
            len: (MAX_PACKET_SIZE - HEADER_LEN) as u32,
        };
        assert!(Header::parse(&at.to_bytes()).is_ok());
        let over = Header {
            len: at.len + 1,
            ..at
        };
        assert_eq!(
            Header::parse(&over.to_bytes()),
            Err(FrameError::TooBig {
                len: at.len + 1,
                limit: MAX_PAYLOAD_LEN
            })
        );
        let max = Header {
            len: u32::MAX,
            ..at
        };
        assert!(Header::parse(&max.to_bytes()).is_err());
        // NEO/py 1.12 counts the payload alone: 10 bytes more pass with its limit.
        let py = Header {
            len: MAX_PACKET_SIZE as u32,
            ..at
        };
        assert!(Header::parse(&py.to_bytes()).is_err());
        assert!(Header::parse_with_limit(&py.to_bytes(), MAX_PACKET_SIZE).is_ok());
        let over_py = Header {
            len: MAX_PACKET_SIZE as u32 + 1,
            ..at
        };
        assert!(Header::parse_with_limit(&over_py.to_bytes(), MAX_PACKET_SIZE).is_err());
    }

    #[test]
    fn oversized_length_allocates_nothing() {
        let mut buf = BytesMut::with_capacity(16);
        buf.put_slice(&[0, 0, 0, 1, 0, 2, 0xff, 0xff, 0xff, 0xff]);
        let cap = buf.capacity();
        assert!(decode_packet(&mut buf).is_err());
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn decodes_back_to_back_packets_and_waits_for_partial_ones() {
        let mut buf = BytesMut::new();
        Header {
            conn_id: 1,
            code: 2,
            len: 3,
        }
        .put(&mut buf);
        buf.put_slice(b"abc");
        Header {
            conn_id: 3,
            code: 0x8002,
            len: 0,
        }
        .put(&mut buf);
        Header {
            conn_id: 5,
            code: 7,
            len: 4,
        }
        .put(&mut buf);
        buf.put_slice(b"xy");
        let p = decode_packet(&mut buf).unwrap().unwrap();
        assert_eq!((p.conn_id, p.code, &p.payload[..]), (1, 2, &b"abc"[..]));
        let p = decode_packet(&mut buf).unwrap().unwrap();
        assert_eq!((p.conn_id, p.code, p.payload.len()), (3, 0x8002, 0));
        assert!(decode_packet(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= HEADER_LEN + 4);
        buf.put_slice(b"zw");
        let p = decode_packet(&mut buf).unwrap().unwrap();
        assert_eq!(&p.payload[..], b"xyzw");
        assert!(buf.is_empty());
    }

    #[test]
    fn scan_counts_whole_packets_and_stops_at_a_partial_or_invalid_one() {
        let mut buf = BytesMut::new();
        for (id, payload) in [(1u32, &b"abc"[..]), (3, b""), (5, b"xyzw")] {
            Header {
                conn_id: id,
                code: 2,
                len: payload.len() as u32,
            }
            .put(&mut buf);
            buf.put_slice(payload);
        }
        let whole = buf.len();
        // All whole.
        assert_eq!(
            scan(&buf, 16),
            Scan {
                whole,
                missing: 0,
                error: None
            }
        );
        // A partial header, then a header whose payload is 2 bytes short.
        buf.put_slice(&[0, 0]);
        assert_eq!(scan(&buf, 16).whole, whole);
        buf.truncate(whole);
        let mut partial = buf.clone();
        Header {
            conn_id: 7,
            code: 2,
            len: 5,
        }
        .put(&mut partial);
        partial.put_slice(b"abc");
        assert_eq!(scan(&partial, 16).missing, 2);
        // An invalid header after the whole ones is reported there, not before.
        Header {
            conn_id: 9,
            code: 2,
            len: 17,
        }
        .put(&mut buf);
        let s = scan(&buf, 16);
        assert_eq!(s.whole, whole);
        assert!(matches!(s.error, Some(FrameError::TooBig { len: 17, .. })));
        // The block is cut back into the same packets.
        let mut block = buf.split_to(whole).freeze();
        let got: Vec<(u32, Bytes)> = std::iter::from_fn(|| next_whole(&mut block))
            .map(|p| (p.conn_id, p.payload))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, Bytes::from_static(b"abc")),
                (3, Bytes::new()),
                (5, Bytes::from_static(b"xyzw"))
            ]
        );
    }
}

//! The server's answer to a connection request.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::*;

/// What the server says to a [`ConnectionRequest`](super::ConnectionRequest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeResponse {
    /// `u32 0`: the socket is now the heavyweight connection.
    Accepted,
    /// `u32 1`: no such endpoint; the socket is closed.
    InvalidEndPoint,
    /// `u32 2`: the request crossed one going the other way; the socket is closed.
    Crossed,
    /// `u32 3` and three length-prefixed strings; the socket is closed.
    HostMismatch {
        /// The host the client claimed in its address.
        claimed: Bytes,
        /// The numeric host of the socket's peer.
        numeric: Bytes,
        /// What the server resolved the claimed host to.
        resolved: Bytes,
    },
    /// `u32 0xFFFFFFFF | u32 version`: the server wants `version`; it discards the request
    /// and waits for a new one on the same socket.
    UnsupportedVersion(u32),
}

impl HandshakeResponse {
    /// Appends the response's bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            HandshakeResponse::Accepted => out.put_u32(RESPONSE_ACCEPTED),
            HandshakeResponse::InvalidEndPoint => out.put_u32(RESPONSE_INVALID),
            HandshakeResponse::Crossed => out.put_u32(RESPONSE_CROSSED),
            HandshakeResponse::HostMismatch {
                claimed,
                numeric,
                resolved,
            } => {
                out.put_u32(RESPONSE_HOST_MISMATCH);
                for s in [claimed, numeric, resolved] {
                    out.put_u32(s.len() as u32);
                    out.put_slice(s);
                }
            }
            HandshakeResponse::UnsupportedVersion(v) => {
                out.put_u32(RESPONSE_UNSUPPORTED_VERSION);
                out.put_u32(*v);
            }
        }
    }

    /// Decodes one response from the front of `buf`, consuming it; `Ok(None)` = need more.
    /// Each `HostMismatch` string may be at most `max_len` bytes.
    pub fn decode(buf: &mut BytesMut, max_len: usize) -> Result<Option<Self>, WireError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let word = peek_u32(buf, 0);
        let simple = match word {
            RESPONSE_ACCEPTED => Some(HandshakeResponse::Accepted),
            RESPONSE_INVALID => Some(HandshakeResponse::InvalidEndPoint),
            RESPONSE_CROSSED => Some(HandshakeResponse::Crossed),
            RESPONSE_HOST_MISMATCH | RESPONSE_UNSUPPORTED_VERSION => None,
            other => return Err(WireError::UnknownResponse(other)),
        };
        if let Some(r) = simple {
            buf.advance(4);
            return Ok(Some(r));
        }
        if word == RESPONSE_UNSUPPORTED_VERSION {
            if buf.len() < 8 {
                return Ok(None);
            }
            let v = peek_u32(buf, 4);
            buf.advance(8);
            return Ok(Some(HandshakeResponse::UnsupportedVersion(v)));
        }
        // HostMismatch: walk the three strings without consuming until all are present.
        let mut at = 4;
        let mut spans = [(0usize, 0usize); 3];
        for span in &mut spans {
            if buf.len() < at + 4 {
                return Ok(None);
            }
            let n = peek_u32(buf, at);
            if n as u64 > max_len as u64 {
                return Err(WireError::TooLong {
                    what: "host name",
                    len: n.into(),
                    max: max_len as u64,
                });
            }
            at += 4;
            *span = (at, n as usize);
            at += n as usize;
        }
        if buf.len() < at {
            return Ok(None);
        }
        let all = buf.split_to(at).freeze();
        let s = |(start, n): (usize, usize)| all.slice(start..start + n);
        Ok(Some(HandshakeResponse::HostMismatch {
            claimed: s(spans[0]),
            numeric: s(spans[1]),
            resolved: s(spans[2]),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_response_round_trips_byte_at_a_time() {
        let all = [
            (HandshakeResponse::Accepted, vec![0, 0, 0, 0]),
            (HandshakeResponse::InvalidEndPoint, vec![0, 0, 0, 1]),
            (HandshakeResponse::Crossed, vec![0, 0, 0, 2]),
            (
                HandshakeResponse::UnsupportedVersion(0),
                vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            ),
            (
                HandshakeResponse::HostMismatch {
                    claimed: Bytes::from_static(b"a"),
                    numeric: Bytes::from_static(b"bc"),
                    resolved: Bytes::new(),
                },
                vec![
                    0, 0, 0, 3, 0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'c', 0, 0, 0, 0,
                ],
            ),
        ];
        for (r, bytes) in all {
            let mut enc = BytesMut::new();
            r.encode(&mut enc);
            assert_eq!(&enc[..], &bytes[..], "{r:?}");
            let mut buf = BytesMut::new();
            for (i, b) in bytes.iter().enumerate() {
                buf.put_u8(*b);
                let got = HandshakeResponse::decode(&mut buf, 8).unwrap();
                assert_eq!(got.is_some(), i == bytes.len() - 1, "{r:?} at {i}");
                if let Some(got) = got {
                    assert_eq!(got, r);
                }
            }
        }
    }

    #[test]
    fn unknown_words_and_long_names_are_rejected() {
        let mut b = BytesMut::from(&[0u8, 0, 0, 4][..]);
        assert_eq!(
            HandshakeResponse::decode(&mut b, 8),
            Err(WireError::UnknownResponse(4))
        );
        let mut b = BytesMut::from(&[0u8, 0, 0, 3, 0, 0, 0, 9][..]);
        assert!(matches!(
            HandshakeResponse::decode(&mut b, 8),
            Err(WireError::TooLong { .. })
        ));
    }
}

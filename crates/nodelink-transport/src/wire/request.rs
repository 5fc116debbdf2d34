//! The connection request: `u32 version | u32 len | u32 target | u32 N | N bytes origin`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{peek_u32, WireError, PROTOCOL_VERSION};
use crate::address::EndPointAddress;

/// The first message on a new socket: "I am `origin`, connect me to your endpoint
/// `target_endpoint`".
///
/// For a version other than [`PROTOCOL_VERSION`] the body layout is unknown: `decode`
/// discards the announced `handshakeLength` bytes and returns `target_endpoint = 0` and
/// `origin = None`; only `version` is meaningful then (the server answers
/// `UnsupportedVersion` and waits for a new request on the same socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRequest {
    /// Protocol version the client speaks.
    pub version: u32,
    /// Endpoint id on the server the client wants.
    pub target_endpoint: u32,
    /// The client's address; `None` for an unaddressable client (sent as N = 0).
    pub origin: Option<EndPointAddress>,
}

impl ConnectionRequest {
    /// A version-0 request from `origin` to endpoint `target_endpoint`.
    pub fn new(target_endpoint: u32, origin: Option<EndPointAddress>) -> Self {
        ConnectionRequest {
            version: PROTOCOL_VERSION,
            target_endpoint,
            origin,
        }
    }

    /// Appends the request's bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let origin: &[u8] = self.origin.as_ref().map(|a| a.as_bytes()).unwrap_or(&[]);
        out.reserve(16 + origin.len());
        out.put_u32(self.version);
        out.put_u32(8 + origin.len() as u32);
        out.put_u32(self.target_endpoint);
        out.put_u32(origin.len() as u32);
        out.put_slice(origin);
    }

    /// Decodes one request from the front of `buf`, consuming it.
    ///
    /// `Ok(None)`: more bytes are needed (nothing consumed). The handshake length may not
    /// exceed `8 + max_address_length`, for any version, so a hostile client cannot make
    /// us buffer or skip an unbounded amount.
    pub fn decode(
        buf: &mut BytesMut,
        max_address_length: usize,
    ) -> Result<Option<Self>, WireError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let version = peek_u32(buf, 0);
        let len = peek_u32(buf, 4);
        let max = 8u64 + max_address_length as u64;
        if u64::from(len) > max {
            return Err(WireError::TooLong {
                what: "connection request",
                len: len.into(),
                max,
            });
        }
        let total = 8 + len as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        if version != PROTOCOL_VERSION {
            buf.advance(total);
            return Ok(Some(ConnectionRequest {
                version,
                target_endpoint: 0,
                origin: None,
            }));
        }
        if len < 8 {
            return Err(WireError::BadRequestLength {
                handshake: len,
                address: 0,
            });
        }
        let target_endpoint = peek_u32(buf, 8);
        let n = peek_u32(buf, 12);
        if u64::from(n) + 8 != u64::from(len) {
            return Err(WireError::BadRequestLength {
                handshake: len,
                address: n,
            });
        }
        buf.advance(16);
        let origin: Bytes = buf.split_to(n as usize).freeze();
        let origin = if origin.is_empty() {
            None
        } else {
            Some(EndPointAddress::from_bytes(origin))
        };
        Ok(Some(ConnectionRequest {
            version,
            target_endpoint,
            origin,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(r: &ConnectionRequest) -> BytesMut {
        let mut b = BytesMut::new();
        r.encode(&mut b);
        b
    }

    #[test]
    fn round_trip_byte_at_a_time() {
        let r = ConnectionRequest::new(3, Some("127.0.0.1:40477:0".parse().unwrap()));
        let whole = encoded(&r);
        assert_eq!(
            &whole[..16],
            &[0, 0, 0, 0, 0, 0, 0, 0x19, 0, 0, 0, 3, 0, 0, 0, 0x11]
        );
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            buf.put_u8(*b);
            let got = ConnectionRequest::decode(&mut buf, 64).unwrap();
            assert_eq!(got.is_some(), i == whole.len() - 1);
            if let Some(got) = got {
                assert_eq!(got, r);
            }
        }
        assert!(buf.is_empty());
        let anon = ConnectionRequest::new(0, None);
        let mut b = encoded(&anon);
        assert_eq!(&b[..], &[0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ConnectionRequest::decode(&mut b, 64).unwrap(), Some(anon));
    }

    #[test]
    fn hostile_lengths_are_rejected_before_buffering() {
        let mut b = BytesMut::from(&[0u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff][..]);
        let cap = b.capacity();
        assert!(matches!(
            ConnectionRequest::decode(&mut b, 1024),
            Err(WireError::TooLong { .. })
        ));
        assert_eq!(b.capacity(), cap);
        // Address length disagreeing with the handshake length.
        let mut b = BytesMut::new();
        for w in [0u32, 12, 0, 1, 0x4141_4141] {
            b.put_u32(w);
        }
        assert!(matches!(
            ConnectionRequest::decode(&mut b, 1024),
            Err(WireError::BadRequestLength { .. })
        ));
        // Too short to hold the target and N.
        let mut b = BytesMut::new();
        for w in [0u32, 4, 0] {
            b.put_u32(w);
        }
        assert!(ConnectionRequest::decode(&mut b, 1024).is_err());
    }

    #[test]
    fn other_versions_are_skipped_whole() {
        let mut b = BytesMut::new();
        b.put_u32(7);
        b.put_u32(3);
        b.put_slice(b"xyz");
        b.put_u32(0);
        let r = ConnectionRequest::decode(&mut b, 16).unwrap().unwrap();
        assert_eq!((r.version, r.target_endpoint, r.origin), (7, 0, None));
        assert_eq!(&b[..], &[0, 0, 0, 0]);
    }
}

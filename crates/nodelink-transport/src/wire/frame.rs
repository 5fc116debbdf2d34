//! Frames exchanged on an accepted socket, in both directions.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::*;

/// One unit on an accepted socket. Words below [`FIRST_LCID`] are control codes; anything
/// else starts a data frame for that lightweight connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `u32 lcid | u32 len | len bytes`.
    Data {
        /// The sender's lightweight connection id (>= 1024).
        lcid: u32,
        /// The payload; a multi-chunk send arrives as one payload.
        payload: Bytes,
    },
    /// `u32 0 | u32 lcid`: the sender opened lightweight connection `lcid`.
    CreatedNewConnection(u32),
    /// `u32 1 | u32 lcid`: the sender closed lightweight connection `lcid`.
    CloseConnection(u32),
    /// `u32 2 | u32 lastReceivedId`: the sender has nothing open and wants to close.
    CloseSocket(u32),
    /// `u32 3`: the sender's endpoint is closing.
    CloseEndPoint,
    /// `u32 4`: liveness check.
    ProbeSocket,
    /// `u32 5`: answer to a probe.
    ProbeSocketAck,
}

/// Appends the 8-byte header of a data frame carrying `len` payload bytes.
pub fn encode_data_header(lcid: u32, len: u32, out: &mut BytesMut) {
    out.put_u32(lcid);
    out.put_u32(len);
}

impl Frame {
    /// Appends the frame's bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Data { lcid, payload } => {
                out.reserve(8 + payload.len());
                encode_data_header(*lcid, payload.len() as u32, out);
                out.put_slice(payload);
            }
            Frame::CreatedNewConnection(id) => {
                out.put_u32(CREATED_NEW_CONNECTION);
                out.put_u32(*id);
            }
            Frame::CloseConnection(id) => {
                out.put_u32(CLOSE_CONNECTION);
                out.put_u32(*id);
            }
            Frame::CloseSocket(id) => {
                out.put_u32(CLOSE_SOCKET);
                out.put_u32(*id);
            }
            Frame::CloseEndPoint => out.put_u32(CLOSE_END_POINT),
            Frame::ProbeSocket => out.put_u32(PROBE_SOCKET),
            Frame::ProbeSocketAck => out.put_u32(PROBE_SOCKET_ACK),
        }
    }
}

/// Splits a byte stream into [`Frame`]s, refusing data frames longer than a limit.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_receive_length: u32,
}

impl FrameDecoder {
    /// A decoder accepting data payloads of at most `max_receive_length` bytes.
    pub fn new(max_receive_length: u32) -> Self {
        FrameDecoder { max_receive_length }
    }

    /// Decodes one frame from the front of `buf`, consuming it. `Ok(None)` = need more
    /// bytes; then `buf` has been given enough capacity for the frame in progress (only
    /// once its length passed the limit check).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let word = peek_u32(buf, 0);
        let frame = match word {
            CLOSE_END_POINT | PROBE_SOCKET | PROBE_SOCKET_ACK => {
                buf.advance(4);
                return Ok(Some(match word {
                    CLOSE_END_POINT => Frame::CloseEndPoint,
                    PROBE_SOCKET => Frame::ProbeSocket,
                    _ => Frame::ProbeSocketAck,
                }));
            }
            CREATED_NEW_CONNECTION | CLOSE_CONNECTION | CLOSE_SOCKET => {
                if buf.len() < 8 {
                    return Ok(None);
                }
                let arg = peek_u32(buf, 4);
                buf.advance(8);
                match word {
                    CREATED_NEW_CONNECTION => Frame::CreatedNewConnection(arg),
                    CLOSE_CONNECTION => Frame::CloseConnection(arg),
                    _ => Frame::CloseSocket(arg),
                }
            }
            w if w < FIRST_LCID => return Err(WireError::InvalidControl(w)),
            lcid => {
                if buf.len() < 8 {
                    return Ok(None);
                }
                let len = peek_u32(buf, 4);
                if len > self.max_receive_length {
                    return Err(WireError::TooLong {
                        what: "data frame",
                        len: len.into(),
                        max: self.max_receive_length.into(),
                    });
                }
                let total = 8 + len as usize;
                if buf.len() < total {
                    buf.reserve(total - buf.len());
                    return Ok(None);
                }
                buf.advance(8);
                Frame::Data {
                    lcid,
                    payload: buf.split_to(len as usize).freeze(),
                }
            }
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_frame() {
        let frames = [
            Frame::Data {
                lcid: 1024,
                payload: Bytes::from_static(b"abc"),
            },
            Frame::CreatedNewConnection(1025),
            Frame::CloseConnection(1026),
            Frame::CloseSocket(0),
            Frame::CloseEndPoint,
            Frame::ProbeSocket,
            Frame::ProbeSocketAck,
        ];
        let mut buf = BytesMut::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        let mut d = FrameDecoder::new(16);
        for f in &frames {
            assert_eq!(d.decode(&mut buf).unwrap().as_ref(), Some(f));
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn byte_at_a_time_and_limits() {
        let mut whole = BytesMut::new();
        Frame::Data {
            lcid: 2000,
            payload: Bytes::from_static(b"hello"),
        }
        .encode(&mut whole);
        let mut d = FrameDecoder::new(5);
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            buf.put_u8(*b);
            let r = d.decode(&mut buf).unwrap();
            assert_eq!(r.is_some(), i == whole.len() - 1);
        }
        let mut big = BytesMut::new();
        encode_data_header(1024, 6, &mut big);
        let cap = big.capacity();
        assert!(matches!(d.decode(&mut big), Err(WireError::TooLong { .. })));
        assert_eq!(big.capacity(), cap);
        let mut bad = BytesMut::from(&[0u8, 0, 0, 6][..]);
        assert_eq!(d.decode(&mut bad), Err(WireError::InvalidControl(6)));
        let mut bad = BytesMut::from(&[0u8, 0, 3, 0xff][..]);
        assert_eq!(d.decode(&mut bad), Err(WireError::InvalidControl(1023)));
    }
}

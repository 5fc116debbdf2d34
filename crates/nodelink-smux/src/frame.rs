//! The smux wire format, without any I/O: [`Frame`] encoding and a [`FrameDecoder`] that
//! takes frames off the front of a receive buffer.
//!
//! Every frame starts with an eight-byte header, integers little-endian:
//!
//! ```text
//! +---------+---------+-------------+---------------+----------------+
//! | ver u8  | cmd u8  | length u16  | stream id u32 | payload ...    |
//! +---------+---------+-------------+---------------+----------------+
//! ```
//!
//! SYN, FIN and NOP never carry a payload, and Go smux does not even read one: it ignores
//! their length field, so a non-zero length there would desynchronise a Go peer. This
//! decoder therefore rejects such frames instead of skipping the payload. UPD (version 2
//! only) carries exactly eight bytes: the number of bytes the sender has consumed on the
//! stream, then its window, both `u32` little-endian.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::Error;

/// Size of the frame header.
pub const HEADER_LEN: usize = 8;
/// Size of a UPD frame's payload.
pub const UPD_PAYLOAD_LEN: usize = 8;
/// Largest payload the 16-bit length field can describe.
pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize;

/// Frame commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cmd {
    /// Opens a stream.
    Syn = 0,
    /// Ends the sender's half of a stream (EOF mark).
    Fin = 1,
    /// Carries stream data.
    Psh = 2,
    /// Keepalive; carries nothing and is ignored on receipt.
    Nop = 3,
    /// Version 2 window update: consumed byte count and receive window.
    Upd = 4,
}

impl Cmd {
    /// The command for a wire byte, or `None` for an unknown one.
    pub fn from_u8(byte: u8) -> Option<Cmd> {
        match byte {
            0 => Some(Cmd::Syn),
            1 => Some(Cmd::Fin),
            2 => Some(Cmd::Psh),
            3 => Some(Cmd::Nop),
            4 => Some(Cmd::Upd),
            _ => None,
        }
    }
}

/// One decoded or to-be-encoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Protocol version byte.
    pub version: u8,
    /// The command.
    pub cmd: Cmd,
    /// Stream id (0 for NOP).
    pub sid: u32,
    /// Payload: data for PSH, the eight UPD bytes for UPD, empty otherwise.
    pub payload: Bytes,
}

impl Frame {
    fn bare(version: u8, cmd: Cmd, sid: u32) -> Frame {
        Frame {
            version,
            cmd,
            sid,
            payload: Bytes::new(),
        }
    }

    /// A SYN opening stream `sid`.
    pub fn syn(version: u8, sid: u32) -> Frame {
        Frame::bare(version, Cmd::Syn, sid)
    }

    /// A FIN closing the sender's half of stream `sid`.
    pub fn fin(version: u8, sid: u32) -> Frame {
        Frame::bare(version, Cmd::Fin, sid)
    }

    /// A keepalive NOP (stream id 0, as Go smux sends it).
    pub fn nop(version: u8) -> Frame {
        Frame::bare(version, Cmd::Nop, 0)
    }

    /// A PSH carrying `payload` on stream `sid`; fails if the payload exceeds
    /// [`MAX_PAYLOAD_LEN`].
    pub fn psh(version: u8, sid: u32, payload: Bytes) -> Result<Frame, Error> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(Error::new(
                crate::ErrorKind::InvalidConfig,
                format!("PSH payload of {} bytes exceeds 65535", payload.len()),
            ));
        }
        Ok(Frame {
            version,
            cmd: Cmd::Psh,
            sid,
            payload,
        })
    }

    /// A version 2 window update for stream `sid`.
    pub fn upd(version: u8, sid: u32, consumed: u32, window: u32) -> Frame {
        let mut payload = BytesMut::with_capacity(UPD_PAYLOAD_LEN);
        payload.put_u32_le(consumed);
        payload.put_u32_le(window);
        Frame {
            version,
            cmd: Cmd::Upd,
            sid,
            payload: payload.freeze(),
        }
    }

    /// For a UPD frame, its `(consumed, window)` pair.
    pub fn upd_fields(&self) -> Option<(u32, u32)> {
        if self.cmd != Cmd::Upd {
            return None;
        }
        upd_fields(&self.payload)
    }

    /// Bytes this frame occupies on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends the wire form to `dst`. Constructors guarantee the payload fits the length
    /// field; a hand-built frame with a longer payload is cut to [`MAX_PAYLOAD_LEN`].
    pub fn encode(&self, dst: &mut BytesMut) {
        let len = self.payload.len().min(MAX_PAYLOAD_LEN);
        encode_header(dst, self.version, self.cmd, len as u16, self.sid);
        dst.extend_from_slice(&self.payload[..len]);
    }
}

/// Reads a UPD payload: `(consumed, window)`, or `None` if it is not eight bytes long.
pub fn upd_fields(payload: &[u8]) -> Option<(u32, u32)> {
    if payload.len() != UPD_PAYLOAD_LEN {
        return None;
    }
    let mut p = payload;
    Some((p.get_u32_le(), p.get_u32_le()))
}

/// A validated frame header, as [`FrameDecoder::peek`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version byte.
    pub version: u8,
    /// The command.
    pub cmd: Cmd,
    /// Payload length.
    pub len: usize,
    /// Stream id.
    pub sid: u32,
}

impl Header {
    /// Bytes the whole frame (header and payload) occupies on the wire.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len
    }
}

/// Appends a bare header; used by the session writer to avoid building a [`Frame`] for data
/// it copies straight from a stream's send buffer.
pub(crate) fn encode_header(dst: &mut BytesMut, version: u8, cmd: Cmd, len: u16, sid: u32) {
    dst.reserve(HEADER_LEN);
    dst.put_u8(version);
    dst.put_u8(cmd as u8);
    dst.put_u16_le(len);
    dst.put_u32_le(sid);
}

/// Takes whole frames off the front of a buffer, validating them for one protocol version.
///
/// Errors are fatal for a session: after one, the byte stream can no longer be trusted.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    version: u8,
}

impl FrameDecoder {
    /// A decoder for frames of `version` (1 or 2).
    pub fn new(version: u8) -> FrameDecoder {
        FrameDecoder { version }
    }

    /// Returns the next frame if `src` holds a whole one, `Ok(None)` if more bytes are
    /// needed (nothing is consumed then), or a [`Protocol`](crate::ErrorKind::Protocol)
    /// error.
    ///
    /// The payload is copied out of `src`, so a returned frame never keeps the caller's
    /// buffer alive (a slice of it would pin the whole allocation for as long as the frame
    /// is queued somewhere). Use [`peek`](FrameDecoder::peek) to look at a payload in place.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let Some((header, payload)) = self.peek(src)? else {
            return Ok(None);
        };
        let payload = Bytes::copy_from_slice(payload);
        src.advance(header.frame_len());
        Ok(Some(Frame {
            version: header.version,
            cmd: header.cmd,
            sid: header.sid,
            payload,
        }))
    }

    /// Validates the frame at the front of `src` without consuming or copying anything:
    /// returns its header and its payload borrowed from `src` once the whole frame is
    /// there, `Ok(None)` while more bytes are needed, or a
    /// [`Protocol`](crate::ErrorKind::Protocol) error as soon as the header is bad. The
    /// caller removes the frame with `advance(header.frame_len())`. A frame is at most
    /// 8 + 65535 bytes, so waiting for a whole one never needs an unbounded buffer.
    pub fn peek<'a>(&self, src: &'a [u8]) -> Result<Option<(Header, &'a [u8])>, Error> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let version = src[0];
        let cmd_byte = src[1];
        let len = u16::from_le_bytes([src[2], src[3]]) as usize;
        let sid = u32::from_le_bytes([src[4], src[5], src[6], src[7]]);
        if version != self.version {
            return Err(Error::protocol(format!(
                "frame version {version}, session version {}",
                self.version
            )));
        }
        let cmd = Cmd::from_u8(cmd_byte)
            .ok_or_else(|| Error::protocol(format!("unknown command {cmd_byte}")))?;
        match cmd {
            Cmd::Syn | Cmd::Fin | Cmd::Nop if len != 0 => {
                return Err(Error::protocol(format!(
                    "{cmd:?} frame with a length of {len} (must be 0)"
                )));
            }
            Cmd::Upd if self.version < 2 => {
                return Err(Error::protocol("UPD frame in a version 1 session"));
            }
            Cmd::Upd if len != UPD_PAYLOAD_LEN => {
                return Err(Error::protocol(format!(
                    "UPD frame with a length of {len} (must be 8)"
                )));
            }
            _ => {}
        }
        let header = Header {
            version,
            cmd,
            len,
            sid,
        };
        match src.get(HEADER_LEN..header.frame_len()) {
            Some(payload) => Ok(Some((header, payload))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        buf.to_vec()
    }

    #[test]
    fn control_frames_are_byte_exact() {
        assert_eq!(encoded(&Frame::syn(1, 3)), [1, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(
            encoded(&Frame::fin(2, 0x0102_0304)),
            [2, 1, 0, 0, 4, 3, 2, 1]
        );
        assert_eq!(encoded(&Frame::nop(1)), [1, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            encoded(&Frame::upd(2, 5, 0x10, 65536)),
            [2, 4, 8, 0, 5, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 1, 0]
        );
    }

    #[test]
    fn psh_is_byte_exact_and_round_trips() {
        let frame = Frame::psh(1, 4, Bytes::from_static(b"abc")).unwrap();
        let wire = encoded(&frame);
        assert_eq!(wire, [1, 2, 3, 0, 4, 0, 0, 0, b'a', b'b', b'c']);
        let mut buf = BytesMut::from(&wire[..]);
        let mut dec = FrameDecoder::new(1);
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(frame));
        assert!(buf.is_empty());
        assert!(Frame::psh(1, 4, Bytes::from(vec![0; 65536])).is_err());
    }

    #[test]
    fn partial_input_waits_without_consuming() {
        let wire = encoded(&Frame::upd(2, 7, 1, 2));
        let mut dec = FrameDecoder::new(2);
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(dec.decode(&mut buf).unwrap(), None);
            assert_eq!(buf.len(), cut);
        }
        let mut buf = BytesMut::from(&wire[..]);
        let frame = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.upd_fields(), Some((1, 2)));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let cases: &[(u8, &[u8])] = &[
            (1, &[2, 0, 0, 0, 3, 0, 0, 0]),    // wrong version
            (1, &[1, 9, 0, 0, 3, 0, 0, 0]),    // unknown command
            (1, &[1, 0, 1, 0, 3, 0, 0, 0, 0]), // SYN with a length
            (1, &[1, 1, 4, 0, 3, 0, 0, 0]),    // FIN with a length
            (1, &[1, 3, 0, 1, 0, 0, 0, 0]),    // NOP with a length
            (1, &[1, 4, 8, 0, 3, 0, 0, 0]),    // UPD in v1
            (2, &[2, 4, 9, 0, 3, 0, 0, 0]),    // UPD of the wrong size
        ];
        for (version, wire) in cases {
            let mut buf = BytesMut::from(*wire);
            let err = FrameDecoder::new(*version).decode(&mut buf).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Protocol, "{wire:?}");
        }
    }

    #[test]
    fn decoded_payloads_do_not_share_the_buffer() {
        let mut buf = BytesMut::with_capacity(4096);
        for sid in [3u32, 5] {
            Frame::psh(1, sid, Bytes::from_static(b"payload"))
                .unwrap()
                .encode(&mut buf);
        }
        let start = buf.as_ptr();
        let mut dec = FrameDecoder::new(1);
        let first = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&first.payload[..], b"payload");
        // Held while the buffer is emptied and refilled: the buffer must still be the only
        // owner of its allocation, so reserving reuses it in place.
        let second = dec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        buf.reserve(4090);
        assert_eq!(buf.as_ptr(), start);
        drop((first, second));
    }

    #[test]
    fn peek_borrows_without_consuming() {
        let wire = encoded(&Frame::psh(2, 9, Bytes::from_static(b"abc")).unwrap());
        let dec = FrameDecoder::new(2);
        let (header, payload) = dec.peek(&wire).unwrap().unwrap();
        assert_eq!(header.cmd, Cmd::Psh);
        assert_eq!((header.sid, header.len, header.frame_len()), (9, 3, 11));
        assert_eq!(payload, b"abc");
        assert_eq!(dec.peek(&wire[..10]).unwrap(), None);
        assert_eq!(upd_fields(&[1, 0, 0, 0, 2, 0, 0, 0]), Some((1, 2)));
        assert_eq!(upd_fields(&[1, 0, 0]), None);
    }

    #[test]
    fn largest_psh_decodes() {
        let mut buf = BytesMut::new();
        encode_header(&mut buf, 1, Cmd::Psh, u16::MAX, 9);
        buf.extend_from_slice(&vec![7u8; MAX_PAYLOAD_LEN]);
        let frame = FrameDecoder::new(1).decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.payload.len(), MAX_PAYLOAD_LEN);
    }
}

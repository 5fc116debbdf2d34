//! The KCP segment header: 24 bytes, every integer little-endian.
//!
//! ```text
//! offset  0      4     5     6      8     12    16     20     24
//!         | conv | cmd | frg | wnd  | ts   | sn  | una  | len  | data[len] ...
//!           u32    u8    u8    u16    u32    u32   u32    u32
//! ```
//!
//! A datagram carries one or more segments back to back; a receiver keeps decoding while
//! at least [`HEADER_LEN`] bytes remain (fewer trailing bytes are ignored, as kcp-go does).

use crate::{Error, Result};

/// Size of a segment header on the wire (KCP's per-segment overhead).
pub const HEADER_LEN: usize = 24;

/// What a segment asks the receiver to do (the `cmd` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    /// 81: carries data (`sn`, `frg`, `len` and the payload are meaningful).
    Push = 81,
    /// 82: acknowledges the segment `sn` whose timestamp was `ts`.
    Ack = 82,
    /// 83: window probe: "tell me your receive window" (sent when the peer advertised 0).
    WindowAsk = 83,
    /// 84: window report, the answer to a probe (the information is in `wnd`).
    WindowTell = 84,
}

impl Command {
    /// The byte on the wire.
    pub fn to_byte(self) -> u8 {
        self as u8
    }

    /// Parses the `cmd` byte; anything outside 81..=84 is rejected.
    pub fn from_byte(b: u8) -> Result<Command> {
        match b {
            81 => Ok(Command::Push),
            82 => Ok(Command::Ack),
            83 => Ok(Command::WindowAsk),
            84 => Ok(Command::WindowTell),
            _ => Err(Error::malformed("unknown KCP command")),
        }
    }
}

/// A decoded segment header. `len` is the payload length that follows the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Conversation id; both ends of a session use the same one.
    pub conv: u32,
    /// The command.
    pub cmd: Command,
    /// Fragment countdown in message mode (0 = last fragment of a message); 0 in stream mode.
    pub frg: u8,
    /// The sender's free receive window, in segments.
    pub wnd: u16,
    /// Sender's clock (ms) when sent; an ACK echoes the acknowledged segment's `ts`.
    pub ts: u32,
    /// Sequence number (of the data, or of the acknowledged segment for an ACK).
    pub sn: u32,
    /// Cumulative acknowledgement: the sender has received every `sn` below this.
    pub una: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl SegmentHeader {
    /// Writes the header into a 24-byte array.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&self.conv.to_le_bytes());
        out[4] = self.cmd.to_byte();
        out[5] = self.frg;
        out[6..8].copy_from_slice(&self.wnd.to_le_bytes());
        out[8..12].copy_from_slice(&self.ts.to_le_bytes());
        out[12..16].copy_from_slice(&self.sn.to_le_bytes());
        out[16..20].copy_from_slice(&self.una.to_le_bytes());
        out[20..24].copy_from_slice(&self.len.to_le_bytes());
    }

    /// Appends the header to `out`.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        let mut raw = [0u8; HEADER_LEN];
        self.encode(&mut raw);
        out.extend_from_slice(&raw);
    }

    /// Decodes the header at the start of `bytes` (which must hold at least 24 bytes).
    /// Validates the command; does not check `len` against the remaining bytes nor the conv.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader> {
        let raw: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::malformed("truncated KCP segment header"))?;
        let u32_at = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        Ok(SegmentHeader {
            conv: u32_at(0),
            cmd: Command::from_byte(raw[4])?,
            frg: raw[5],
            wnd: u16::from_le_bytes([raw[6], raw[7]]),
            ts: u32_at(8),
            sn: u32_at(12),
            una: u32_at(16),
            len: u32_at(20),
        })
    }
}

/// The conversation id of the first segment of a datagram, if it is long enough to hold a
/// header (what a listener needs to route or create a session).
pub fn peek_conv(datagram: &[u8]) -> Option<u32> {
    if datagram.len() < HEADER_LEN {
        return None;
    }
    Some(u32::from_le_bytes([
        datagram[0],
        datagram[1],
        datagram[2],
        datagram[3],
    ]))
}

/// Iterates over the segments of a datagram: yields each header with its payload, stops
/// when fewer than [`HEADER_LEN`] bytes remain, and stops after the first error (unknown
/// command, or a `len` running past the end of the datagram).
pub fn segments(datagram: &[u8]) -> Segments<'_> {
    Segments {
        rest: datagram,
        failed: false,
    }
}

/// Iterator returned by [`segments`].
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for Segments<'a> {
    type Item = Result<(SegmentHeader, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.len() < HEADER_LEN {
            return None;
        }
        let item = split_segment(self.rest);
        match item {
            Ok((hdr, payload, rest)) => {
                self.rest = rest;
                Some(Ok((hdr, payload)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Splits one segment off the front of `bytes`: (header, payload, remaining bytes).
pub(crate) fn split_segment(bytes: &[u8]) -> Result<(SegmentHeader, &[u8], &[u8])> {
    // Length before command, as kcp-go checks them.
    let len_field = bytes
        .get(20..24)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(Error::malformed("truncated KCP segment header"))?;
    let body = &bytes[HEADER_LEN..];
    let len = usize::try_from(len_field).unwrap_or(usize::MAX);
    if len > body.len() {
        return Err(Error::malformed("KCP segment length exceeds the datagram"));
    }
    let hdr = SegmentHeader::decode(bytes)?;
    let (payload, rest) = body.split_at(len);
    Ok((hdr, payload, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentHeader {
        SegmentHeader {
            conv: 0x1122_3344,
            cmd: Command::Push,
            frg: 3,
            wnd: 0xBEEF,
            ts: 0xA1B2_C3D4,
            sn: 0x0102_0304,
            una: 0xFFFF_FFFE,
            len: 5,
        }
    }

    #[test]
    fn encode_is_byte_exact() {
        let mut raw = [0u8; HEADER_LEN];
        sample().encode(&mut raw);
        let expected: [u8; 24] = [
            0x44, 0x33, 0x22, 0x11, // conv
            81,   // cmd
            3,    // frg
            0xEF, 0xBE, // wnd
            0xD4, 0xC3, 0xB2, 0xA1, // ts
            0x04, 0x03, 0x02, 0x01, // sn
            0xFE, 0xFF, 0xFF, 0xFF, // una
            5, 0, 0, 0, // len
        ];
        assert_eq!(raw, expected);
        assert_eq!(SegmentHeader::decode(&raw).unwrap(), sample());
    }

    #[test]
    fn command_bytes() {
        for (b, c) in [
            (81, Command::Push),
            (82, Command::Ack),
            (83, Command::WindowAsk),
            (84, Command::WindowTell),
        ] {
            assert_eq!(Command::from_byte(b).unwrap(), c);
            assert_eq!(c.to_byte(), b);
        }
        for b in [0u8, 80, 85, 0xF1, 0xF2, 255] {
            assert!(Command::from_byte(b).is_err());
        }
    }

    #[test]
    fn several_segments_per_datagram() {
        let mut dgram = Vec::new();
        let a = sample();
        a.append_to(&mut dgram);
        dgram.extend_from_slice(b"hello");
        let b = SegmentHeader {
            cmd: Command::Ack,
            frg: 0,
            len: 0,
            sn: 7,
            ts: 99,
            ..sample()
        };
        b.append_to(&mut dgram);
        let c = SegmentHeader {
            cmd: Command::WindowTell,
            len: 2,
            ..b
        };
        c.append_to(&mut dgram);
        dgram.extend_from_slice(b"xy");
        dgram.extend_from_slice(&[1, 2, 3]); // trailing bytes shorter than a header: ignored
        assert_eq!(dgram.len(), 24 * 3 + 5 + 2 + 3);
        let got: Vec<_> = segments(&dgram).map(|r| r.unwrap()).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (a, &b"hello"[..]));
        assert_eq!(got[1], (b, &b""[..]));
        assert_eq!(got[2], (c, &b"xy"[..]));
        assert_eq!(peek_conv(&dgram), Some(0x1122_3344));
        assert_eq!(peek_conv(&dgram[..23]), None);
    }

    #[test]
    fn bad_length_and_command_rejected() {
        let mut dgram = Vec::new();
        SegmentHeader { len: 6, ..sample() }.append_to(&mut dgram);
        dgram.extend_from_slice(b"hello"); // one byte short
        let mut it = segments(&dgram);
        assert!(matches!(it.next(), Some(Err(e)) if e.kind() == crate::ErrorKind::Malformed));
        assert!(it.next().is_none());

        let mut raw = [0u8; HEADER_LEN];
        sample().encode(&mut raw);
        raw[4] = 99;
        raw[20] = 0;
        assert!(SegmentHeader::decode(&raw).is_err());
        assert!(SegmentHeader::decode(&raw[..10]).is_err());
        // u32::MAX length must not overflow anything.
        raw[4] = 81;
        raw[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(split_segment(&raw).is_err());
    }
}

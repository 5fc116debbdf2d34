//! Snappy framing format (Google's `framing_format.txt`), without I/O: a [`FrameEncoder`]
//! that turns data into chunks and a [`FrameDecoder`] that takes chunks off a buffer.
//!
//! A framed stream is a sequence of chunks, each `type u8 | length u24 LE | body`:
//!
//! | type | body |
//! |---|---|
//! | `0xff` stream identifier | `sNaPpY` (must come first; may repeat) |
//! | `0x00` compressed data | masked CRC-32C u32 LE of the *uncompressed* data, then a raw snappy block |
//! | `0x01` uncompressed data | masked CRC-32C u32 LE, then the data |
//! | `0x02`–`0x7f` reserved, unskippable | a reader must stop |
//! | `0x80`–`0xfd` reserved skippable, `0xfe` padding | ignored |
//!
//! A data chunk holds at most 65536 uncompressed bytes. The checksum mask is
//! `((crc >> 15) | (crc << 17)) + 0xa282ead8` (wrapping), so that checksumming data that
//! itself contains checksums stays robust.
//!
//! The encoder follows github.com/golang/snappy's writer (what kcptun uses): it sends the
//! stream identifier before the first chunk and keeps a compressed block only when it
//! saves at least 1/8 of the input, otherwise it sends the chunk uncompressed.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The stream identifier chunk, as it appears on the wire.
pub const STREAM_IDENTIFIER: [u8; 10] =
    [0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'];
/// Most uncompressed bytes one data chunk may carry.
pub const MAX_BLOCK_SIZE: usize = 65536;

const CHUNK_COMPRESSED: u8 = 0x00;
const CHUNK_UNCOMPRESSED: u8 = 0x01;
const CHUNK_STREAM_IDENTIFIER: u8 = 0xff;
const CHUNK_HEADER_LEN: usize = 4;
const CHECKSUM_LEN: usize = 4;

/// Largest data chunk body accepted: a checksum plus the worst-case compressed size of a
/// full block (the same bound golang/snappy's reader applies).
pub fn max_data_chunk_len() -> usize {
    CHECKSUM_LEN + snap::raw::max_compress_len(MAX_BLOCK_SIZE)
}

/// CRC-32C (Castagnoli) of `data`, masked as the framing format requires.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    // (crc >> 15) | (crc << 17), as the spec writes it.
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Why a framed stream was rejected. Every error is final for the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnappyError {
    /// The first chunk is not a stream identifier.
    #[error("snappy stream does not start with a stream identifier (chunk type {0:#04x})")]
    MissingStreamIdentifier(u8),
    /// A stream identifier chunk with the wrong length or body.
    #[error("malformed snappy stream identifier")]
    BadStreamIdentifier,
    /// A data chunk is longer than any valid one can be.
    #[error("snappy chunk of {0} bytes exceeds the limit")]
    ChunkTooLarge(usize),
    /// A data chunk too short to hold its checksum.
    #[error("snappy data chunk of {0} bytes has no room for its checksum")]
    ChunkTooShort(usize),
    /// A reserved, unskippable chunk type (0x02–0x7f).
    #[error("unsupported snappy chunk type {0:#04x}")]
    UnsupportedChunk(u8),
    /// The compressed block is malformed or decompresses to more than 65536 bytes.
    #[error("corrupt snappy block: {0}")]
    CorruptBlock(String),
    /// The checksum does not match the data.
    #[error("snappy chunk checksum mismatch")]
    ChecksumMismatch,
    /// The stream ended inside a chunk.
    #[error("snappy stream truncated inside a chunk")]
    Truncated,
}

impl From<SnappyError> for std::io::Error {
    fn from(err: SnappyError) -> std::io::Error {
        let kind = match err {
            SnappyError::Truncated => std::io::ErrorKind::UnexpectedEof,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, err)
    }
}

/// Turns data into framed chunks.
pub struct FrameEncoder {
    wrote_identifier: bool,
    encoder: snap::raw::Encoder,
    scratch: Vec<u8>,
}

impl Default for FrameEncoder {
    fn default() -> FrameEncoder {
        FrameEncoder::new()
    }
}

impl std::fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameEncoder")
            .field("wrote_identifier", &self.wrote_identifier)
            .finish_non_exhaustive()
    }
}

impl FrameEncoder {
    /// An encoder that has not yet written the stream identifier.
    pub fn new() -> FrameEncoder {
        FrameEncoder {
            wrote_identifier: false,
            encoder: snap::raw::Encoder::new(),
            scratch: Vec::new(),
        }
    }

    /// Encodes the first `min(data.len(), 65536)` bytes of `data` as one chunk (preceded by
    /// the stream identifier the first time) and returns how many bytes it took. Empty
    /// input writes nothing.
    pub fn encode_chunk(&mut self, data: &[u8], dst: &mut BytesMut) -> usize {
        if data.is_empty() {
            return 0;
        }
        if !self.wrote_identifier {
            self.wrote_identifier = true;
            dst.extend_from_slice(&STREAM_IDENTIFIER);
        }
        let block = &data[..data.len().min(MAX_BLOCK_SIZE)];
        let checksum = masked_crc(block);
        self.scratch
            .resize(snap::raw::max_compress_len(block.len()), 0);
        let compressed = self.encoder.compress(block, &mut self.scratch).ok();
        // Keep the compressed form only if it saves at least 12.5 %, as golang/snappy does.
        let (chunk_type, body) = match compressed {
            Some(n) if n < block.len() - block.len() / 8 => (CHUNK_COMPRESSED, &self.scratch[..n]),
            _ => (CHUNK_UNCOMPRESSED, block),
        };
        let chunk_len = (CHECKSUM_LEN + body.len()) as u32;
        dst.reserve(CHUNK_HEADER_LEN + chunk_len as usize);
        dst.put_u8(chunk_type);
        dst.put_uint_le(u64::from(chunk_len), 3);
        dst.put_u32_le(checksum);
        dst.extend_from_slice(body);
        block.len()
    }

    /// Encodes all of `data` as consecutive chunks of at most 65536 bytes each.
    pub fn encode(&mut self, mut data: &[u8], dst: &mut BytesMut) {
        while !data.is_empty() {
            let n = self.encode_chunk(data, dst);
            data = &data[n..];
        }
    }
}

/// Takes chunks off the front of a buffer and yields the data they carry.
pub struct FrameDecoder {
    seen_identifier: bool,
    skip: usize,
    decoder: snap::raw::Decoder,
}

impl Default for FrameDecoder {
    fn default() -> FrameDecoder {
        FrameDecoder::new()
    }
}

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("seen_identifier", &self.seen_identifier)
            .field("skip", &self.skip)
            .finish_non_exhaustive()
    }
}

impl FrameDecoder {
    /// A decoder expecting a stream identifier first.
    pub fn new() -> FrameDecoder {
        FrameDecoder {
            seen_identifier: false,
            skip: 0,
            decoder: snap::raw::Decoder::new(),
        }
    }

    /// True while the decoder is inside a chunk (skipping one, or `src` holding part of one
    /// is the caller's to check): end of input now means truncation.
    pub fn mid_chunk(&self) -> bool {
        self.skip > 0
    }

    /// Returns the data of the next non-empty data chunk in `src`, or `Ok(None)` if `src`
    /// does not hold a whole one yet (partial chunks stay in `src`; skippable chunks are
    /// consumed as they arrive, so they never need buffering). The buffer never needs more
    /// than one maximal data chunk (about 75 KiB).
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, SnappyError> {
        loop {
            if self.skip > 0 {
                let k = self.skip.min(src.len());
                src.advance(k);
                self.skip -= k;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            if src.len() < CHUNK_HEADER_LEN {
                return Ok(None);
            }
            let chunk_type = src[0];
            let len = usize::from(src[1]) | usize::from(src[2]) << 8 | usize::from(src[3]) << 16;
            if !self.seen_identifier && chunk_type != CHUNK_STREAM_IDENTIFIER {
                return Err(SnappyError::MissingStreamIdentifier(chunk_type));
            }
            match chunk_type {
                CHUNK_STREAM_IDENTIFIER => {
                    if len != STREAM_IDENTIFIER.len() - CHUNK_HEADER_LEN {
                        return Err(SnappyError::BadStreamIdentifier);
                    }
                    if src.len() < STREAM_IDENTIFIER.len() {
                        return Ok(None);
                    }
                    if src[..STREAM_IDENTIFIER.len()] != STREAM_IDENTIFIER {
                        return Err(SnappyError::BadStreamIdentifier);
                    }
                    src.advance(STREAM_IDENTIFIER.len());
                    self.seen_identifier = true;
                }
                CHUNK_COMPRESSED | CHUNK_UNCOMPRESSED => {
                    if len < CHECKSUM_LEN {
                        return Err(SnappyError::ChunkTooShort(len));
                    }
                    let limit = if chunk_type == CHUNK_UNCOMPRESSED {
                        CHECKSUM_LEN + MAX_BLOCK_SIZE
                    } else {
                        max_data_chunk_len()
                    };
                    if len > limit {
                        return Err(SnappyError::ChunkTooLarge(len));
                    }
                    if src.len() < CHUNK_HEADER_LEN + len {
                        return Ok(None);
                    }
                    let data = self.data_chunk(chunk_type, &src[CHUNK_HEADER_LEN..][..len])?;
                    src.advance(CHUNK_HEADER_LEN);
                    let body = src.split_to(len);
                    let data = match data {
                        Some(decompressed) => decompressed,
                        None => body.freeze().slice(CHECKSUM_LEN..),
                    };
                    if !data.is_empty() {
                        return Ok(Some(data));
                    }
                }
                0x02..=0x7f => return Err(SnappyError::UnsupportedChunk(chunk_type)),
                _ => {
                    src.advance(CHUNK_HEADER_LEN);
                    self.skip = len;
                }
            }
        }
    }

    /// Verifies a data chunk's body; returns the decompressed data for a compressed chunk,
    /// `None` for an uncompressed one (whose data the caller slices out without copying).
    fn data_chunk(&mut self, chunk_type: u8, body: &[u8]) -> Result<Option<Bytes>, SnappyError> {
        let checksum = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        let payload = &body[CHECKSUM_LEN..];
        if chunk_type == CHUNK_UNCOMPRESSED {
            if masked_crc(payload) != checksum {
                return Err(SnappyError::ChecksumMismatch);
            }
            return Ok(None);
        }
        let n = snap::raw::decompress_len(payload)
            .map_err(|e| SnappyError::CorruptBlock(e.to_string()))?;
        if n > MAX_BLOCK_SIZE {
            return Err(SnappyError::CorruptBlock(format!(
                "block decompresses to {n} bytes, more than {MAX_BLOCK_SIZE}"
            )));
        }
        let mut out = vec![0u8; n];
        let got = self
            .decoder
            .decompress(payload, &mut out)
            .map_err(|e| SnappyError::CorruptBlock(e.to_string()))?;
        out.truncate(got);
        if masked_crc(&out) != checksum {
            return Err(SnappyError::ChecksumMismatch);
        }
        Ok(Some(Bytes::from(out)))
    }
}

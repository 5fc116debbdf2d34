//! Tests of the snappy framing codec and stream. Checksum vectors were computed
//! independently (a bit-by-bit CRC-32C in Python, then the mask from the spec); the golden
//! chunk stream comes from Go's golang/snappy writer as kcptun uses it. (A one-off check
//! also found this encoder's output for 1 MB of mixed data, written in 100007-byte pieces,
//! byte-identical to Go's, and Go's reader accepting it.)

use std::time::Duration;

use bytes::BytesMut;
use nodelink_testkit::SeededRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::codec::{
    masked_crc, max_data_chunk_len, FrameDecoder, FrameEncoder, SnappyError, MAX_BLOCK_SIZE,
    STREAM_IDENTIFIER,
};
use super::SnappyStream;

const LIMIT: Duration = Duration::from_secs(20);

fn decode_all(wire: &[u8]) -> Result<Vec<u8>, SnappyError> {
    let mut dec = FrameDecoder::new();
    let mut src = BytesMut::from(wire);
    let mut out = Vec::new();
    while let Some(data) = dec.decode(&mut src)? {
        out.extend_from_slice(&data);
    }
    assert!(src.is_empty(), "leftover bytes");
    Ok(out)
}

fn chunk(chunk_type: u8, body: &[u8]) -> Vec<u8> {
    let len = body.len() as u32;
    let mut v = vec![chunk_type, len as u8, (len >> 8) as u8, (len >> 16) as u8];
    v.extend_from_slice(body);
    v
}

fn data_chunk(chunk_type: u8, crc: u32, payload: &[u8]) -> Vec<u8> {
    let mut body = crc.to_le_bytes().to_vec();
    body.extend_from_slice(payload);
    chunk(chunk_type, &body)
}

#[test]
fn masked_crc_matches_independent_vectors() {
    // CRC-32C("123456789") is the standard check value 0xe3069283.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    assert_eq!(masked_crc(b"abc"), 0x21f1_576e);
    assert_eq!(masked_crc(b""), 0xa282_ead8);
}

#[test]
fn short_incompressible_write_is_identifier_then_uncompressed_chunk() {
    let mut enc = FrameEncoder::new();
    let mut out = BytesMut::new();
    assert_eq!(enc.encode_chunk(b"abc", &mut out), 3);
    let mut expected = STREAM_IDENTIFIER.to_vec();
    expected.extend_from_slice(&[
        0x01, 0x07, 0x00, 0x00, 0x6e, 0x57, 0xf1, 0x21, b'a', b'b', b'c',
    ]);
    assert_eq!(&out[..], &expected[..]);
    assert_eq!(
        &STREAM_IDENTIFIER,
        &[0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70, 0x59]
    );
    // The identifier is sent once only.
    out.clear();
    enc.encode_chunk(b"abc", &mut out);
    assert_eq!(out[0], 0x01);
    assert_eq!(
        decode_all(&[&expected[..], &out[..]].concat()).unwrap(),
        b"abcabc"
    );
}

/// Produced by Debian's golang-github-golang-snappy-dev 0.0.2 (what kcptun links):
/// `NewBufferedWriter`, Write+Flush of "nodelink " x 30, then Write+Flush of "abc".
const GO_SNAPPY_VECTOR: &str = "ff060000734e61507059001e000063f98a718e02206e6f64656c696e6b20\
                                fe0900fe0900fe0900fe09000509010700006e57f121616263";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn output_matches_golang_snappy_byte_for_byte() {
    let text = "nodelink ".repeat(30);
    let mut enc = FrameEncoder::new();
    let mut out = BytesMut::new();
    enc.encode(text.as_bytes(), &mut out);
    enc.encode(b"abc", &mut out);
    let go = unhex(GO_SNAPPY_VECTOR);
    assert_eq!(hex(&out), hex(&go));
    let mut expected = text.into_bytes();
    expected.extend_from_slice(b"abc");
    assert_eq!(decode_all(&go).unwrap(), expected);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn compressible_data_uses_compressed_chunks_of_at_most_64k() {
    let data = vec![b'z'; 3 * MAX_BLOCK_SIZE + 10];
    let mut enc = FrameEncoder::new();
    let mut out = BytesMut::new();
    enc.encode(&data, &mut out);
    // identifier + 3 compressed full chunks, then the 10-byte tail, which compression
    // cannot shrink by 1/8 and so goes uncompressed.
    let mut pos = STREAM_IDENTIFIER.len();
    let mut chunks = 0;
    while pos < out.len() {
        assert_eq!(out[pos], if chunks < 3 { 0x00 } else { 0x01 });
        let len = out[pos + 1] as usize | (out[pos + 2] as usize) << 8;
        pos += 4 + len;
        chunks += 1;
    }
    assert_eq!(chunks, 4);
    assert!(out.len() < data.len() / 10);
    assert_eq!(decode_all(&out).unwrap(), data);
}

#[test]
fn random_data_round_trips_uncompressed() {
    let mut rng = SeededRng::new(7);
    let data: Vec<u8> = rng.bytes(200_000);
    let mut out = BytesMut::new();
    FrameEncoder::new().encode(&data, &mut out);
    assert_eq!(out[STREAM_IDENTIFIER.len()], 0x01);
    assert_eq!(decode_all(&out).unwrap(), data);
}

#[test]
fn decoder_accepts_padding_skippable_and_repeated_identifier() {
    let mut wire = STREAM_IDENTIFIER.to_vec();
    wire.extend(chunk(0xfe, &[0; 5]));
    wire.extend(chunk(0x80, &[1; 70_000]));
    wire.extend(STREAM_IDENTIFIER);
    wire.extend(data_chunk(0x01, masked_crc(b"abc"), b"abc"));
    wire.extend(chunk(0xfd, &[]));
    // Fed one byte at a time, the skippable chunk is consumed without being buffered.
    let mut dec = FrameDecoder::new();
    let mut src = BytesMut::new();
    let mut out = Vec::new();
    for b in &wire {
        src.extend_from_slice(&[*b]);
        while let Some(d) = dec.decode(&mut src).unwrap() {
            out.extend_from_slice(&d);
        }
        assert!(src.len() < 100);
    }
    assert_eq!(out, b"abc");
}

#[test]
fn decoder_rejects_bad_input() {
    let ident = STREAM_IDENTIFIER.to_vec();
    let good = data_chunk(0x01, masked_crc(b"abc"), b"abc");
    let cases: Vec<(Vec<u8>, SnappyError)> = vec![
        (good.clone(), SnappyError::MissingStreamIdentifier(0x01)),
        (
            [
                &ident[..],
                &data_chunk(0x01, masked_crc(b"abc") ^ 1, b"abc"),
            ]
            .concat(),
            SnappyError::ChecksumMismatch,
        ),
        (
            [&ident[..], &chunk(0x01, &[0; 3])].concat(),
            SnappyError::ChunkTooShort(3),
        ),
        (
            [&ident[..], &[0x01, 0x05, 0x00, 0x01]].concat(),
            SnappyError::ChunkTooLarge(0x1_0005),
        ),
        (
            [&ident[..], &[0x00, 0xff, 0xff, 0x01]].concat(),
            SnappyError::ChunkTooLarge(0x1_ffff),
        ),
        (
            [&ident[..], &chunk(0x02, b"x")].concat(),
            SnappyError::UnsupportedChunk(0x02),
        ),
        (
            [&ident[..], &chunk(0x7f, b"")].concat(),
            SnappyError::UnsupportedChunk(0x7f),
        ),
        (chunk(0xff, b"sNaPpX"), SnappyError::BadStreamIdentifier),
        (chunk(0xff, b"sNaPp"), SnappyError::BadStreamIdentifier),
    ];
    for (wire, expected) in cases {
        assert_eq!(decode_all(&wire).unwrap_err(), expected, "{wire:?}");
    }
    assert!(max_data_chunk_len() < 80_000);
}

#[test]
fn oversized_or_corrupt_compressed_block_is_rejected() {
    // A block claiming 65537 decompressed bytes (varint 0x81 0x80 0x04) is refused before
    // anything is allocated for it.
    let block = [0x81, 0x80, 0x04, 0x00];
    let wire = [&STREAM_IDENTIFIER[..], &data_chunk(0x00, 0, &block)].concat();
    assert!(matches!(
        decode_all(&wire),
        Err(SnappyError::CorruptBlock(_))
    ));
    // A literal running past the end of the block.
    let block = [0x05, 0x10, b'a'];
    let wire = [&STREAM_IDENTIFIER[..], &data_chunk(0x00, 0, &block)].concat();
    assert!(matches!(
        decode_all(&wire),
        Err(SnappyError::CorruptBlock(_))
    ));
    // A valid block whose checksum is wrong.
    let block = snap::raw::Encoder::new()
        .compress_vec(&[b'q'; 1000])
        .unwrap();
    let wire = [&STREAM_IDENTIFIER[..], &data_chunk(0x00, 1, &block)].concat();
    assert_eq!(
        decode_all(&wire).unwrap_err(),
        SnappyError::ChecksumMismatch
    );
}

#[tokio::test]
async fn stream_round_trips_both_ways() {
    let (a, b) = tokio::io::duplex(8192);
    let mut a = SnappyStream::new(a);
    let mut b = SnappyStream::new(b);
    let mut rng = SeededRng::new(1);
    let mut data = vec![0u8; 1_000_000];
    for (i, byte) in data.iter_mut().enumerate() {
        // Half compressible text, half noise.
        *byte = if (i / 4096) % 2 == 0 {
            b"nodelink "[i % 9]
        } else {
            rng.next_u64() as u8
        };
    }
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for piece in sent.chunks(10_007) {
            a.write_all(piece).await.unwrap();
        }
        a.shutdown().await.unwrap();
        a
    });
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, b.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    let mut a = tokio::time::timeout(LIMIT, writer).await.unwrap().unwrap();
    b.write_all(b"reply").await.unwrap();
    b.flush().await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(LIMIT, a.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"reply");
}

#[tokio::test]
async fn truncated_stream_is_a_clean_error_and_clean_end_is_eof() {
    let mut wire = BytesMut::new();
    FrameEncoder::new().encode(b"hello world", &mut wire);
    let full = wire.to_vec();

    let mut got = Vec::new();
    let mut s = SnappyStream::new(&full[..]);
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello world");

    let cut = &full[..full.len() - 3];
    let mut s = SnappyStream::new(cut);
    let err = s.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);

    let mut empty = SnappyStream::new(&b""[..]);
    assert_eq!(empty.read_to_end(&mut Vec::new()).await.unwrap(), 0);
}

#[tokio::test]
async fn corrupted_crc_fails_the_reader_for_good() {
    let mut wire = BytesMut::new();
    FrameEncoder::new().encode(b"abc", &mut wire);
    let len = wire.len();
    wire[len - 4] ^= 0xff; // first checksum byte of the 3-byte uncompressed chunk
    let mut s = SnappyStream::new(&wire[..]);
    let mut buf = [0u8; 16];
    let err = s.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(s.read(&mut buf).await.is_err());
}

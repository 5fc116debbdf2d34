//! Feeds arbitrary bytes to the snappy framing decoder in arbitrary pieces and checks that
//! it never panics, never yields more than 64 KiB per chunk and never needs to buffer more
//! than one maximal chunk; then checks that the encoder's output for the same bytes decodes
//! back to them.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nodelink_tunnel::snappy::codec::{
    max_data_chunk_len, FrameDecoder, FrameEncoder, MAX_BLOCK_SIZE,
};

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else { return };
    let step = usize::from(step).max(1);

    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    'feed: for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(chunk)) => assert!(!chunk.is_empty() && chunk.len() <= MAX_BLOCK_SIZE),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
        // What stays buffered is at most one incomplete chunk (header included).
        assert!(buf.len() < 4 + max_data_chunk_len() + step);
    }

    let mut wire = BytesMut::new();
    FrameEncoder::new().encode(stream, &mut wire);
    let mut decoder = FrameDecoder::new();
    let mut out = Vec::with_capacity(stream.len());
    while let Some(chunk) = decoder.decode(&mut wire).expect("own output decodes") {
        out.extend_from_slice(&chunk);
    }
    assert!(wire.is_empty());
    assert_eq!(out, stream);
});

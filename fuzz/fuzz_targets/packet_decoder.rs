//! Feeds arbitrary bytes to the packet decoder in arbitrary pieces, as reads would deliver
//! them, and checks that it never panics, never yields a packet larger than the limit, and
//! never reserves room for a length it rejected.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nodelink::{decode_packet, HEADER_LEN, MAX_PAYLOAD_LEN};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the read size, so short and long reads are both explored.
    let Some((&step, stream)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decode_packet(&mut buf) {
                Ok(Some(p)) => {
                    assert!(p.payload.len() <= MAX_PAYLOAD_LEN);
                    consumed += HEADER_LEN + p.payload.len();
                }
                Ok(None) => break,
                Err(_) => {
                    // Fatal for a link: nothing more is parsed, and the buffer did not grow
                    // for the rejected length.
                    assert!(buf.capacity() < MAX_PAYLOAD_LEN);
                    return;
                }
            }
        }
    }
    assert!(consumed + buf.len() == stream.len());
});

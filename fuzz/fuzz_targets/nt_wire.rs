//! Feeds arbitrary bytes, in arbitrary pieces as reads would deliver them, to the endpoint
//! transport's three parsers: the connection request, the handshake response and the frame
//! decoder. None may panic; everything decoded stays within the configured limits and
//! re-encodes to exactly the bytes it was decoded from; and a rejected length never gets
//! buffer room reserved for it.
//!
//! Input layout: byte 0 picks the parser, byte 1 the read size, the rest is the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nodelink_transport::wire::{ConnectionRequest, Frame, FrameDecoder, HandshakeResponse};

/// Limits small enough that the fuzzer reaches both sides of every check.
const MAX_ADDRESS: usize = 64;
const MAX_RECEIVE: u32 = 256;

/// Larger than any buffer the limits above can justify for inputs of fuzzing size, far
/// smaller than a rejected 32-bit length would reserve.
const CAPACITY_BOUND: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Some((&step, stream)) = rest.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    match which % 3 {
        0 => requests(stream, step),
        1 => responses(stream, step),
        _ => frames(stream, step),
    }
});

/// Runs `decode` over `stream` read `step` bytes at a time. Each decoded item is checked
/// with `check(item, exact bytes it consumed)`. Returns whether a parse error ended it.
fn drive<T>(
    stream: &[u8],
    step: usize,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, ()>,
    mut check: impl FnMut(&T, &[u8]),
) -> bool {
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.to_vec();
            match decode(&mut buf) {
                Ok(Some(item)) => {
                    let used = before.len() - buf.len();
                    assert!(used > 0, "an item decoded from no bytes");
                    check(&item, &before[..used]);
                    consumed += used;
                }
                Ok(None) => {
                    assert_eq!(buf[..], before[..], "need-more consumed bytes");
                    assert!(
                        buf.capacity() < CAPACITY_BOUND,
                        "reserved {}",
                        buf.capacity()
                    );
                    break;
                }
                Err(()) => {
                    assert!(
                        buf.capacity() < CAPACITY_BOUND,
                        "reserved {}",
                        buf.capacity()
                    );
                    return true;
                }
            }
        }
    }
    assert_eq!(consumed + buf.len(), stream.len());
    false
}

fn requests(stream: &[u8], step: usize) {
    drive(
        stream,
        step,
        |buf| ConnectionRequest::decode(buf, MAX_ADDRESS).map_err(|_| ()),
        |req, bytes| {
            assert!(bytes.len() <= 16 + MAX_ADDRESS);
            if req.version == 0 {
                let origin = req.origin.as_ref().map_or(0, |a| a.as_bytes().len());
                assert!(origin <= MAX_ADDRESS);
                let mut out = BytesMut::new();
                req.encode(&mut out);
                assert_eq!(&out[..], bytes, "request does not re-encode to its bytes");
            } else {
                // Other versions: the announced length was skipped, nothing else kept.
                assert!(req.origin.is_none());
            }
        },
    );
}

fn responses(stream: &[u8], step: usize) {
    drive(
        stream,
        step,
        |buf| HandshakeResponse::decode(buf, MAX_ADDRESS).map_err(|_| ()),
        |resp, bytes| {
            if let HandshakeResponse::HostMismatch {
                claimed,
                numeric,
                resolved,
            } = resp
            {
                for s in [claimed, numeric, resolved] {
                    assert!(s.len() <= MAX_ADDRESS);
                }
            }
            let mut out = BytesMut::new();
            resp.encode(&mut out);
            assert_eq!(&out[..], bytes, "response does not re-encode to its bytes");
        },
    );
}

fn frames(stream: &[u8], step: usize) {
    let mut decoder = FrameDecoder::new(MAX_RECEIVE);
    drive(
        stream,
        step,
        |buf| decoder.decode(buf).map_err(|_| ()),
        |frame, bytes| {
            if let Frame::Data { lcid, payload } = frame {
                assert!(*lcid >= 1024);
                assert!(payload.len() <= MAX_RECEIVE as usize);
            }
            let mut out = BytesMut::new();
            frame.encode(&mut out);
            assert_eq!(&out[..], bytes, "frame does not re-encode to its bytes");
        },
    );
}

//! The flow-control extension: control frames both nodelink sides agree on at link start.
//!
//! NEO has no flow control, so one connection whose application stops reading either stalls
//! the whole link or grows memory without bound. nodelink adds per-connection credit, as an
//! extension that NEO peers never see in a way that matters:
//!
//! * Right after the version handshake each nodelink side sends **HELLO** with its
//!   per-connection receive window. It travels on a reserved connection id of the
//!   *receiver's* parity (`0xFFFF_FFFE` to a server, `0xFFFF_FFFF` to a client) with code
//!   `0xFFFF`. Neither side ever allocates that id, and the code has the answer bit, so a NEO
//!   peer at most answers it with "connection closed", which we ignore.
//! * A side knows its peer speaks the extension when the peer's **first** packet is HELLO
//!   (a nodelink peer always sends it before anything else). From then on it sends within
//!   the peer's window.
//! * Until it has heard from the peer, a side that offered HELLO sends at most the protocol
//!   minimum window ([`MIN_RECV_BUDGET`](crate::MIN_RECV_BUDGET), 64 KiB of cost) per
//!   connection. Every receiver's window is at least that large, so a nodelink receiver can
//!   hold its peer to the credit rule from the very first byte. (A strict NEO peer's first
//!   packet ends this phase, and it is then not limited at all: NEO has no credit.)
//! * A receiver returns credit with **CREDIT** frames (a list of `(conn id, cost)`) as the
//!   application consumes messages. Cost is the payload length plus 64 per packet, so floods
//!   of empty packets are bounded too.
//! * A sender may send a packet on a connection while `outstanding + cost <= window`, or at
//!   any size when nothing is outstanding (so one message larger than the window still
//!   goes through). The receiver checks the same rule; only a peer that ignores credit can
//!   break it, and that closes the offending connection's receive side (as for a strict NEO
//!   peer that overflows the budget), never the link.
//!
//! Frame payload: `"NLFC" | kind u8 | body`. HELLO body: `version u8 = 1 | window u32 BE`.
//! CREDIT body: repeated `conn_id u32 BE | cost u32 BE`.

use bytes::{Buf, BufMut, BytesMut};

use crate::link::Role;

/// Message code of control frames (answer bit set: never auto-answered).
pub(crate) const CONTROL_CODE: u16 = 0xFFFF;
const MAGIC: &[u8; 4] = b"NLFC";
const KIND_HELLO: u8 = 1;
const KIND_CREDIT: u8 = 3;
const EXTENSION_VERSION: u8 = 1;

/// The reserved connection id on which a side with `role` receives control frames.
pub(crate) fn control_id_of(role: Role) -> u32 {
    match role {
        Role::Server => 0xFFFF_FFFE,
        Role::Client => 0xFFFF_FFFF,
    }
}

/// A decoded control frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Control<'a> {
    Hello {
        window: u32,
    },
    /// Raw `(id, bytes)` pairs; iterate with [`credits`].
    Credit(&'a [u8]),
}

pub(crate) fn encode_hello(window: u32, dst: &mut BytesMut) {
    dst.put_slice(MAGIC);
    dst.put_u8(KIND_HELLO);
    dst.put_u8(EXTENSION_VERSION);
    dst.put_u32(window);
}

pub(crate) fn encode_credits(entries: &[(u32, u32)], dst: &mut BytesMut) {
    dst.put_slice(MAGIC);
    dst.put_u8(KIND_CREDIT);
    for &(id, bytes) in entries {
        dst.put_u32(id);
        dst.put_u32(bytes);
    }
}

/// Parses a control payload; `None` for anything malformed (dropped and counted).
pub(crate) fn decode(payload: &[u8]) -> Option<Control<'_>> {
    let rest = payload.strip_prefix(MAGIC)?;
    let (&kind, body) = rest.split_first()?;
    match kind {
        KIND_HELLO => {
            let mut body = body;
            if body.len() != 5 || body[0] != EXTENSION_VERSION {
                return None;
            }
            body.advance(1);
            Some(Control::Hello {
                window: body.get_u32(),
            })
        }
        KIND_CREDIT if !body.is_empty() && body.len() % 8 == 0 => Some(Control::Credit(body)),
        _ => None,
    }
}

/// Iterates the `(conn id, bytes)` pairs of a CREDIT body.
pub(crate) fn credits(body: &[u8]) -> impl Iterator<Item = (u32, u32)> + '_ {
    body.chunks_exact(8).map(|c| {
        (
            u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut b = BytesMut::new();
        encode_hello(1 << 20, &mut b);
        assert_eq!(&b[..], b"NLFC\x01\x01\x00\x10\x00\x00");
        assert_eq!(decode(&b), Some(Control::Hello { window: 1 << 20 }));
        let mut b = BytesMut::new();
        encode_credits(&[(1, 10), (3, 20)], &mut b);
        match decode(&b) {
            Some(Control::Credit(body)) => {
                assert_eq!(credits(body).collect::<Vec<_>>(), vec![(1, 10), (3, 20)])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b""[..],
            b"NLF",
            b"NLFC",
            b"XLFC\x02",
            b"NLFC\x01\x01\x00",
            b"NLFC\x01\x02\x00\x00\x00\x01",
            b"NLFC\x02",
            b"NLFC\x03",
            b"NLFC\x03\x00\x00\x00\x01\x00",
            b"NLFC\x09",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reserved_ids_have_the_receivers_parity() {
        assert_eq!(control_id_of(Role::Server) % 2, 0);
        assert_eq!(control_id_of(Role::Client) % 2, 1);
    }
}

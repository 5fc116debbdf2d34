//! The flow-control extension's frames: what they look like on the wire.
//!
//! NEO has no flow control, so one connection whose application stops reading either stalls
//! the whole link or grows memory without bound. nodelink adds per-connection credit as an
//! extension that is used only when both sides agree on it (`docs/protocols/link.md`,
//! "Extensions"); the agreement itself is the state machine in `core/negotiate.rs`. In
//! short:
//!
//! * Only the **dialing** side offers: its first packet after the handshake is **HELLO**
//!   with its per-connection receive window. The **accepting** side never speaks first: it
//!   answers an offer with its own HELLO (agreed), or declines it the way NEO/go does (a
//!   "connection closed" Error on the same id), and a peer whose first packet is anything
//!   else is a strict NEO peer that never sees an extension frame. In the NEO/py dialect
//!   nothing is offered or answered at all: NEO/py 1.12 closes the link on an unknown code.
//! * HELLO travels on a reserved connection id of the *receiver's* parity (`0xFFFF_FFFE`
//!   to an acceptor, `0xFFFF_FFFF` to a dialer) with code `0xFFFF`. Neither side ever
//!   allocates those ids, and the code has the answer bit, so it is never auto-answered.
//! * Until the verdict, the dialer sends at most the protocol minimum window
//!   ([`MIN_RECV_BUDGET`](crate::MIN_RECV_BUDGET), 64 KiB of cost) per connection; every
//!   nodelink receiver's window is at least that large.
//! * Once agreed, a receiver returns credit with **CREDIT** frames (a list of
//!   `(conn id, cost)`) as the application consumes messages. Cost is the payload length
//!   plus 64 per packet, so floods of empty packets are bounded too.
//! * A sender may send a packet on a connection while `outstanding + cost <= window`, or at
//!   any size when nothing is outstanding (so one message larger than the window still
//!   goes through). The receiver checks the same rule; only a peer that ignores credit can
//!   break it, and that closes the offending connection's receive side (as for a strict NEO
//!   peer that overflows the budget), never the link.
//!
//! * Once agreed, a side that closes the link on purpose sends **BYE** (empty body) when
//!   it closes (owed credit may follow; the peer reads nothing after BYE), so the peer learns of the close even over a transport without an
//!   end-of-stream of its own (KCP): the peer ends the link as on TCP's FIN. An earlier
//!   nodelink that does not know BYE drops it (counted in `control_dropped`).
//!
//! * Once agreed, a side with an idle timeout probes an idle link with **PING** (empty
//!   body); the peer answers **PONG** (empty body) at once, so a healthy idle link is
//!   never cut (`core/idle.rs`). A side that does not know them drops them.
//!
//! Frame payload: `"NLFC" | kind u8 | body`. HELLO body: `version u8 = 1 | window u32 BE`.
//! CREDIT body: repeated `conn_id u32 BE | cost u32 BE`. BYE (5), PING (7), PONG (8):
//! empty.

use bytes::{Buf, BufMut, BytesMut};

use crate::role::Role;

/// Message code of control frames (answer bit set: never auto-answered).
pub(crate) const CONTROL_CODE: u16 = 0xFFFF;
const MAGIC: &[u8; 4] = b"NLFC";
const KIND_HELLO: u8 = 1;
const KIND_CREDIT: u8 = 3;
const KIND_BYE: u8 = 5;
const KIND_PING: u8 = 7;
const KIND_PONG: u8 = 8;
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
    /// The peer is closing the link: nothing follows.
    Bye,
    /// The peer asks whether we are alive.
    Ping,
    /// The answer to our PING.
    Pong,
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

pub(crate) fn encode_bye(dst: &mut BytesMut) {
    dst.put_slice(MAGIC);
    dst.put_u8(KIND_BYE);
}

pub(crate) fn encode_ping(dst: &mut BytesMut) {
    dst.put_slice(MAGIC);
    dst.put_u8(KIND_PING);
}

pub(crate) fn encode_pong(dst: &mut BytesMut) {
    dst.put_slice(MAGIC);
    dst.put_u8(KIND_PONG);
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
        KIND_BYE if body.is_empty() => Some(Control::Bye),
        KIND_PING if body.is_empty() => Some(Control::Ping),
        KIND_PONG if body.is_empty() => Some(Control::Pong),
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
        let mut b = BytesMut::new();
        encode_bye(&mut b);
        assert_eq!(&b[..], b"NLFC\x05");
        assert_eq!(decode(&b), Some(Control::Bye));
        let mut b = BytesMut::new();
        encode_ping(&mut b);
        assert_eq!(&b[..], b"NLFC\x07");
        assert_eq!(decode(&b), Some(Control::Ping));
        let mut b = BytesMut::new();
        encode_pong(&mut b);
        assert_eq!(&b[..], b"NLFC\x08");
        assert_eq!(decode(&b), Some(Control::Pong));
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
            b"NLFC\x05\x00",
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

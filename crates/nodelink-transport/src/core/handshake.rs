//! The handshake that turns a fresh TCP socket into a heavyweight connection, both sides,
//! without I/O (docs/protocols/transport.md, "Opening a socket").
//!
//! The dialing side writes one [`ConnectionRequest`] and reads one answer ([`read_answer`]).
//! The answering side reads requests until one has our protocol version
//! ([`Answering::handle_input`], answering others with UnsupportedVersion a bounded number
//! of times), then checks the claimed origin ([`check_host`]); which answer it finally
//! gives is decided by the endpoint's table of peers (`peers.rs`). The tasks in
//! `connect.rs` and `inbound.rs` only move the bytes, resolve host names and bound the
//! whole exchange by the connect timeout.

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};

use crate::address::EndPointAddress;
use crate::error::ErrorKind;
use crate::wire::{ConnectionRequest, HandshakeResponse, PROTOCOL_VERSION};

/// Most version renegotiations on one socket before the answering side gives up.
pub(crate) const MAX_RENEGOTIATIONS: usize = 4;

/// Appends the request for endpoint `target`, from `origin` (`None`: we cannot be
/// connected to, and say so with an empty origin).
pub(crate) fn write_request(target: u32, origin: Option<&EndPointAddress>, out: &mut BytesMut) {
    ConnectionRequest::new(target, origin.cloned()).encode(out);
}

/// What a dialing side can go on with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The socket is now the heavyweight connection to the peer.
    Accepted,
    /// The peer saw our request cross one of its own to us, and keeps its own: ours is
    /// closed, theirs will become the socket.
    Crossed,
}

/// Why a connect failed, as its caller will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

/// Reads the answer to our request for endpoint `target` of `to` from `buf`: `Ok(None)`
/// until it is complete. Bytes after it (the peer's first frames) stay in `buf`.
pub(crate) fn read_answer(
    buf: &mut BytesMut,
    max_address_length: usize,
    to: &EndPointAddress,
    target: u32,
) -> Result<Option<Answer>, Refusal> {
    let response = match HandshakeResponse::decode(buf, max_address_length) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e) => {
            return Err(Refusal::new(
                ErrorKind::ConnectFailed,
                format!("bad handshake response: {e}"),
            ))
        }
    };
    match response {
        HandshakeResponse::Accepted => Ok(Some(Answer::Accepted)),
        HandshakeResponse::Crossed => Ok(Some(Answer::Crossed)),
        HandshakeResponse::InvalidEndPoint => Err(Refusal::new(
            ErrorKind::ConnectNotFound,
            format!("no endpoint {target} at {to}"),
        )),
        HandshakeResponse::HostMismatch {
            claimed,
            numeric,
            resolved,
        } => Err(Refusal::new(
            ErrorKind::ConnectFailed,
            format!(
                "host mismatch: we claimed {}, the peer sees {} ({})",
                String::from_utf8_lossy(&claimed),
                String::from_utf8_lossy(&numeric),
                String::from_utf8_lossy(&resolved)
            ),
        )),
        // We speak the only version there is; a peer that wants another cannot be served.
        HandshakeResponse::UnsupportedVersion(v) => Err(Refusal::new(
            ErrorKind::ConnectFailed,
            format!("peer wants protocol version {v}, we speak {PROTOCOL_VERSION}"),
        )),
    }
}

/// The answering side's reading of requests.
#[derive(Debug)]
pub(crate) struct Answering {
    max_address_length: usize,
    renegotiations: usize,
}

/// What [`Answering::handle_input`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Heard {
    /// The request is not complete yet: read more.
    More,
    /// A request in a version we do not speak: the answer asking for ours was appended to
    /// the output; read the next request.
    Renegotiate,
    /// A request we can decide on. `origin` is the peer's address and the host in it, or
    /// `None` for a peer that cannot be connected to (the caller names it with a fresh
    /// UUID).
    Request {
        target: u32,
        origin: Option<(EndPointAddress, String)>,
    },
    /// The request cannot be served: close the socket without an answer.
    Malformed(String),
}

impl Answering {
    pub(crate) fn new(max_address_length: usize) -> Self {
        Answering {
            max_address_length,
            renegotiations: 0,
        }
    }

    /// Reads the next request from `buf`, appending any answer it needs to `out`.
    pub(crate) fn handle_input(&mut self, buf: &mut BytesMut, out: &mut BytesMut) -> Heard {
        let request = match ConnectionRequest::decode(buf, self.max_address_length) {
            Ok(Some(r)) => r,
            Ok(None) => return Heard::More,
            Err(e) => return Heard::Malformed(format!("bad connection request: {e}")),
        };
        if request.version != PROTOCOL_VERSION {
            self.renegotiations += 1;
            if self.renegotiations > MAX_RENEGOTIATIONS {
                return Heard::Malformed(format!(
                    "no common protocol version after {MAX_RENEGOTIATIONS} tries (the peer \
                     asked for {})",
                    request.version
                ));
            }
            HandshakeResponse::UnsupportedVersion(PROTOCOL_VERSION).encode(out);
            return Heard::Renegotiate;
        }
        let target = request.target_endpoint;
        match request.origin {
            None => Heard::Request {
                target,
                origin: None,
            },
            // The original's order: the address must parse (else: closed, no answer),
            // then the host check, then the endpoint lookup.
            Some(a) => match a.parse() {
                None => Heard::Malformed(format!("the origin {a} is not host:port:endpoint")),
                Some((host, _, _)) => Heard::Request {
                    target,
                    origin: Some((a, host)),
                },
            },
        }
    }
}

/// Whether the host a peer claims in its origin is the socket's peer `peer`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HostCheck {
    Match,
    /// The claim is a name: resolve it and call [`check_resolved`].
    Resolve(String),
}

/// Compares the host a peer `claimed` in its origin with the socket's peer without
/// resolving names: equal as text or as IP addresses.
pub(crate) fn check_host(claimed: &str, peer: IpAddr) -> HostCheck {
    let peer = peer.to_canonical();
    if claimed == peer.to_string()
        || claimed
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical() == peer)
    {
        HostCheck::Match
    } else {
        HostCheck::Resolve(claimed.to_owned())
    }
}

/// The end of a host check: `None` if `claimed` resolved (to `resolved`, empty when the
/// name did not resolve) to the peer's address, else the HostMismatch answer to send.
pub(crate) fn check_resolved(
    claimed: &str,
    peer: IpAddr,
    resolved: &[IpAddr],
) -> Option<HandshakeResponse> {
    let peer = peer.to_canonical();
    if resolved.iter().any(|ip| ip.to_canonical() == peer) {
        return None;
    }
    let first = resolved
        .first()
        .map(|ip| ip.to_canonical().to_string())
        .unwrap_or_default();
    Some(HandshakeResponse::HostMismatch {
        claimed: Bytes::copy_from_slice(claimed.as_bytes()),
        numeric: Bytes::from(peer.to_string()),
        resolved: Bytes::from(first),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> EndPointAddress {
        EndPointAddress::from_bytes(s.to_owned())
    }

    #[test]
    fn answering_renegotiates_a_bounded_number_of_times() {
        let mut answering = Answering::new(1000);
        let mut out = BytesMut::new();
        let mut buf = BytesMut::new();
        let mut other = ConnectionRequest::new(3, Some(addr("127.0.0.1:5:0")));
        other.version = 7;
        for _ in 0..MAX_RENEGOTIATIONS {
            other.encode(&mut buf);
            assert_eq!(
                answering.handle_input(&mut buf, &mut out),
                Heard::Renegotiate
            );
            let mut expected = BytesMut::new();
            HandshakeResponse::UnsupportedVersion(PROTOCOL_VERSION).encode(&mut expected);
            assert_eq!(out.split(), expected);
        }
        other.encode(&mut buf);
        assert!(matches!(
            answering.handle_input(&mut buf, &mut out),
            Heard::Malformed(_)
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn answering_reads_a_request_in_pieces_and_leaves_what_follows() {
        let mut answering = Answering::new(1000);
        let mut whole = BytesMut::new();
        write_request(9, Some(&addr("127.0.0.1:5:1")), &mut whole);
        whole.extend_from_slice(b"next");
        let mut buf = BytesMut::new();
        let mut out = BytesMut::new();
        let split = whole.len() - 7;
        buf.extend_from_slice(&whole[..split]);
        assert_eq!(answering.handle_input(&mut buf, &mut out), Heard::More);
        buf.extend_from_slice(&whole[split..]);
        assert_eq!(
            answering.handle_input(&mut buf, &mut out),
            Heard::Request {
                target: 9,
                origin: Some((addr("127.0.0.1:5:1"), "127.0.0.1".to_owned()))
            }
        );
        assert_eq!(&buf[..], b"next");
    }

    #[test]
    fn an_origin_that_is_not_an_address_gets_no_answer() {
        let mut answering = Answering::new(1000);
        let mut buf = BytesMut::new();
        write_request(0, Some(&addr("no-port")), &mut buf);
        let mut out = BytesMut::new();
        assert!(matches!(
            answering.handle_input(&mut buf, &mut out),
            Heard::Malformed(_)
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn host_checks() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(check_host("127.0.0.1", v4), HostCheck::Match);
        assert_eq!(check_host("127.0.0.1", mapped), HostCheck::Match);
        assert_eq!(
            check_host("localhost", v4),
            HostCheck::Resolve("localhost".into())
        );
        assert_eq!(check_resolved("localhost", v4, &[mapped]), None);
        let other: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            check_resolved("example", v4, &[other]),
            Some(HandshakeResponse::HostMismatch {
                claimed: Bytes::from_static(b"example"),
                numeric: Bytes::from_static(b"127.0.0.1"),
                resolved: Bytes::from_static(b"10.0.0.1"),
            })
        );
    }

    #[test]
    fn answers_and_refusals() {
        let to = addr("127.0.0.1:1:4");
        let mut buf = BytesMut::new();
        HandshakeResponse::Crossed.encode(&mut buf);
        buf.extend_from_slice(b"x");
        assert_eq!(
            read_answer(&mut buf, 100, &to, 4),
            Ok(Some(Answer::Crossed))
        );
        assert_eq!(&buf[..], b"x");
        let mut buf = BytesMut::new();
        assert_eq!(read_answer(&mut buf, 100, &to, 4), Ok(None));
        HandshakeResponse::InvalidEndPoint.encode(&mut buf);
        let refusal = read_answer(&mut buf, 100, &to, 4).unwrap_err();
        assert_eq!(refusal.kind, ErrorKind::ConnectNotFound);
        assert!(refusal.message.contains("no endpoint 4"));
    }
}

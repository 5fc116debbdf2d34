//! Incoming sockets: the server side of the handshake, crossed requests and probing.
//!
//! The whole handshake, any renegotiation of the version and any wait for a crossed
//! request of ours to be answered are bounded by the connect timeout; a client that stays
//! silent is cut when it expires. On success the same task becomes the socket's reader.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::address::EndPointAddress;
use crate::endpoint_shared::EndPointShared;
use crate::ratelimit::peer_warn;
use crate::remote::{Origin, RemoteState, Resolution, Socket};
use crate::transport_shared::TransportShared;
use crate::wire::{ConnectionRequest, HandshakeResponse, PROTOCOL_VERSION};
use crate::writer::SocketWriter;

/// Counts a failed incoming handshake and says why at WARN, within the transport's budget
/// of peer-caused warnings; arguments after the transport as for `tracing::warn!`.
macro_rules! handshake_failed {
    ($transport:expr, $($arg:tt)+) => {{
        $transport.handshakes_failed.fetch_add(1, Relaxed);
        peer_warn!($transport.warn_limit, $($arg)+);
    }};
}

/// Most version renegotiations on one socket before we give up on the client.
const MAX_RENEGOTIATIONS: usize = 4;

/// Where the handshake ended up.
enum Verdict {
    /// Become the socket for record `key` of `address`.
    Accept {
        ep: Arc<EndPointShared>,
        address: EndPointAddress,
        key: u64,
        buf: BytesMut,
    },
    /// Answered and done (or dropped): close the socket.
    Done,
}

pub(crate) async fn serve(
    transport: Arc<TransportShared>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let timeout = transport.config.connect_timeout;
    let handshake = handshake(&transport, &mut stream, peer);
    let verdict = match timeout {
        Some(t) => match tokio::time::timeout(t, handshake).await {
            Ok(v) => v,
            Err(_) => {
                handshake_failed!(
                    transport,
                    %peer,
                    timeout = ?t,
                    "incoming handshake timed out: socket closed"
                );
                Verdict::Done
            }
        },
        None => handshake.await,
    };
    let Verdict::Accept {
        ep,
        address,
        key,
        buf,
    } = verdict
    else {
        return;
    };
    let (read, write) = stream.into_split();
    let writer = SocketWriter::new(write);
    {
        let mut st = ep.lock();
        let Some(rec) = st.remote_mut(&address, key) else {
            return;
        };
        if !matches!(
            rec.state,
            RemoteState::Init {
                origin: Origin::Them,
                ..
            }
        ) {
            return;
        }
        rec.state = RemoteState::Open(Socket::new(writer.clone(), ep.config.socket_limits()));
        rec.announce(Resolution::Changed);
    }
    crate::reader::run(ep, address, key, read, buf, writer).await;
}

async fn respond(stream: &mut TcpStream, r: HandshakeResponse) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    r.encode(&mut out);
    stream.write_all(&out).await
}

async fn handshake(
    transport: &Arc<TransportShared>,
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Verdict {
    let max_addr = transport.config.max_address_length;
    let mut buf = BytesMut::with_capacity(256);
    let mut renegotiations = 0;
    let request = loop {
        let req = match ConnectionRequest::decode(&mut buf, max_addr) {
            Ok(Some(r)) => r,
            Ok(None) => match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    tracing::debug!(%peer, "the peer left during the handshake");
                    return Verdict::Done;
                }
                Ok(_) => continue,
            },
            Err(e) => {
                handshake_failed!(
                    transport,
                    %peer,
                    error = %e,
                    "bad connection request: socket closed"
                );
                return Verdict::Done;
            }
        };
        if req.version == PROTOCOL_VERSION {
            break req;
        }
        renegotiations += 1;
        if renegotiations > MAX_RENEGOTIATIONS {
            handshake_failed!(
                transport,
                %peer,
                version = req.version,
                "connection request: no common protocol version after {MAX_RENEGOTIATIONS} tries: socket closed"
            );
            return Verdict::Done;
        }
        if respond(
            stream,
            HandshakeResponse::UnsupportedVersion(PROTOCOL_VERSION),
        )
        .await
        .is_err()
        {
            return Verdict::Done;
        }
    };
    // The original's order: the address must parse (else: closed, no answer), then the
    // host check, then the endpoint lookup.
    let address = match request.origin {
        None => EndPointAddress::from_bytes(uuid::Uuid::new_v4().to_string()),
        Some(a) => {
            let Some((host, _, _)) = a.parse() else {
                handshake_failed!(
                    transport,
                    %peer,
                    origin = %a,
                    "connection request: the origin is not host:port:id: socket closed"
                );
                return Verdict::Done;
            };
            if transport.config.check_peer_host {
                if let Some(mismatch) = check_peer_host(&host, peer.ip()).await {
                    handshake_failed!(
                        transport,
                        %peer,
                        origin = %a,
                        "connection request: the origin's host is not the peer's: rejected"
                    );
                    let _ = respond(stream, mismatch).await;
                    return Verdict::Done;
                }
            }
            a
        }
    };
    let Some(ep) = transport.endpoint(request.target_endpoint) else {
        handshake_failed!(
            transport,
            %peer,
            origin = %address,
            endpoint = request.target_endpoint,
            "connection request for an endpoint that does not exist: rejected"
        );
        let _ = respond(stream, HandshakeResponse::InvalidEndPoint).await;
        return Verdict::Done;
    };
    claim(&ep, stream, address, buf).await
}

/// Compares the claimed host with the socket's peer: equal as text or as IP, or the name
/// resolves to the peer's IP. Returns the answer to send on a mismatch.
async fn check_peer_host(claimed: &str, peer: IpAddr) -> Option<HandshakeResponse> {
    let peer = peer.to_canonical();
    let numeric = peer.to_string();
    if claimed == numeric
        || claimed
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical() == peer)
    {
        return None;
    }
    let resolved: Vec<IpAddr> = match tokio::net::lookup_host((claimed, 0)).await {
        Ok(addrs) => addrs.map(|a| a.ip().to_canonical()).collect(),
        Err(_) => Vec::new(),
    };
    if resolved.contains(&peer) {
        return None;
    }
    let resolved = resolved
        .first()
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    Some(HandshakeResponse::HostMismatch {
        claimed: Bytes::copy_from_slice(claimed.as_bytes()),
        numeric: Bytes::from(numeric),
        resolved: Bytes::from(resolved),
    })
}

enum Claim {
    Accept(u64),
    Crossed(Option<(Arc<SocketWriter>, u64)>),
    Drop,
    /// The endpoint closed while we were deciding.
    Invalid,
    Wait(watch::Receiver<Resolution>),
}

/// Finds or creates the record for `address` as the side that was asked.
async fn claim(
    ep: &Arc<EndPointShared>,
    stream: &mut TcpStream,
    address: EndPointAddress,
    buf: BytesMut,
) -> Verdict {
    loop {
        let claim = {
            let mut st = ep.lock();
            if st.closed {
                Claim::Invalid
            } else {
                match st.remotes.get_mut(&address) {
                    None => Claim::Accept(st.insert_remote(
                        address.clone(),
                        RemoteState::Init {
                            origin: Origin::Them,
                            crossed: false,
                        },
                    )),
                    Some(rec) => match &mut rec.state {
                        RemoteState::Init {
                            origin: Origin::Us,
                            crossed,
                        } => {
                            if ep.address < address {
                                // Ours is the smaller address: our request wins.
                                Claim::Crossed(None)
                            } else if *crossed {
                                // Our request was answered Crossed: theirs becomes the socket.
                                rec.state = RemoteState::Init {
                                    origin: Origin::Them,
                                    crossed: false,
                                };
                                Claim::Accept(rec.key)
                            } else {
                                Claim::Wait(rec.changed.subscribe())
                            }
                        }
                        RemoteState::Init {
                            origin: Origin::Them,
                            ..
                        } => Claim::Drop,
                        RemoteState::Open(sock) if sock.closing() => {
                            Claim::Wait(rec.changed.subscribe())
                        }
                        RemoteState::Open(sock) => Claim::Crossed(start_probe(sock)),
                    },
                }
            }
        };
        match claim {
            Claim::Accept(key) => {
                if respond(stream, HandshakeResponse::Accepted).await.is_err() {
                    let mut st = ep.lock();
                    st.remove_remote(&address, key, Resolution::Changed);
                    return Verdict::Done;
                }
                return Verdict::Accept {
                    ep: ep.clone(),
                    address,
                    key,
                    buf,
                };
            }
            Claim::Crossed(probe) => {
                tracing::debug!(peer = %address, probing = probe.is_some(), "request crossed ours: answered Crossed");
                // The probe goes out on its own task: its deadline is already running, and
                // this handshake's own timeout must not be able to cut its write short.
                if let Some((writer, mark)) = probe {
                    tokio::spawn(async move {
                        let _ = writer.flush(mark).await;
                    });
                }
                let _ = respond(stream, HandshakeResponse::Crossed).await;
                return Verdict::Done;
            }
            Claim::Drop => return Verdict::Done,
            Claim::Invalid => {
                let _ = respond(stream, HandshakeResponse::InvalidEndPoint).await;
                return Verdict::Done;
            }
            Claim::Wait(mut rx) => {
                // Bounded by the handshake timeout around us.
                let _ = rx.changed().await;
            }
        }
    }
}

/// A request from a peer we have a healthy socket to: maybe the old socket is stale.
/// The core sends one ProbeSocket (unless one is outstanding); the socket's reader drops
/// the socket if no ack comes within the connect timeout.
fn start_probe(sock: &mut Socket) -> Option<(Arc<SocketWriter>, u64)> {
    let (probed, mark) = sock.with_core(|core| core.probe(Instant::now()))?;
    if !probed {
        return None;
    }
    sock.writer.deadline_wake.notify_one();
    Some((sock.writer.clone(), mark))
}

//! Incoming sockets: the server side of the handshake. The request is read by
//! `core/handshake.rs` and answered as the endpoint's table of peers (`core/peers.rs`)
//! decides; this task moves the bytes, resolves the claimed host name and waits where the
//! table says to.
//!
//! The whole handshake, any renegotiation of the version and any wait for a crossed
//! request of ours to be answered are bounded by the connect timeout; a client that stays
//! silent is cut when it expires. On success the same task becomes the socket's reader.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::address::EndPointAddress;
use crate::core::handshake::{check_host, check_resolved, Answering, Heard, HostCheck};
use crate::core::peers::Claim;
use crate::endpoint_shared::EndPointShared;
use crate::limit::{Activity, Registered};
use crate::remote::{PeerIo, Resolution};
use crate::transport_shared::TransportShared;
use crate::wire::HandshakeResponse;
use crate::writer::SocketWriter;
use nodelink_driver::peer_warn;

/// Counts a failed incoming handshake and says why at WARN, within the transport's budget
/// of peer-caused warnings; arguments after the transport as for `tracing::warn!`.
macro_rules! handshake_failed {
    ($transport:expr, $($arg:tt)+) => {{
        $transport.handshakes_failed.fetch_add(1, Relaxed);
        peer_warn!($transport.warn_limit, $($arg)+);
    }};
}

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
    registered: Registered,
) {
    let timeout = transport.config.connect_timeout;
    let stop = registered.stop.clone();
    let handshake = async {
        tokio::select! {
            verdict = handshake(&transport, &mut stream, peer, &registered.activity) => verdict,
            // Ended to make room for a newcomer (`limit.rs`, which logged it).
            () = stop.cancelled() => Verdict::Done,
        }
    };
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
    registered.activity.joined();
    let (read, write) = stream.into_split();
    let writer = SocketWriter::with_cancel(write, registered.stop.child_token());
    {
        let mut st = ep.lock();
        if !st.peers.accepted(&address, key) {
            return;
        }
        let Some(rec) = st.peers.get_mut(&address, key) else {
            return;
        };
        rec.io.writer = Some(writer.clone());
        rec.announce(Resolution::Changed);
    }
    crate::reader::run(
        ep,
        address,
        key,
        read,
        buf,
        writer,
        Some(registered.activity.clone()),
    )
    .await;
    drop(registered);
}

async fn respond(stream: &mut TcpStream, r: HandshakeResponse) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    r.encode(&mut out);
    stream.write_all(&out).await
}

/// Reads the request (`core/handshake.rs` decides what it means), checks the origin's
/// host and finds the endpoint asked for.
async fn handshake(
    transport: &Arc<TransportShared>,
    stream: &mut TcpStream,
    peer: SocketAddr,
    activity: &Activity,
) -> Verdict {
    let mut answering = Answering::new(transport.config.max_address_length);
    let mut buf = BytesMut::with_capacity(256);
    let mut out = BytesMut::new();
    let (target, origin) = loop {
        match answering.handle_input(&mut buf, &mut out) {
            Heard::Request { target, origin } => break (target, origin),
            Heard::More => match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    tracing::debug!(%peer, "the peer left during the handshake");
                    return Verdict::Done;
                }
                Ok(_) => activity.heard(),
            },
            Heard::Renegotiate => {
                if stream.write_all(&out.split()).await.is_err() {
                    return Verdict::Done;
                }
            }
            Heard::Malformed(reason) => {
                handshake_failed!(transport, %peer, %reason, "bad connection request: socket closed");
                return Verdict::Done;
            }
        }
    };
    let address = match origin {
        None => EndPointAddress::unaddressable(),
        Some((a, host)) => {
            if transport.config.check_peer_host {
                if let Some(mismatch) = host_mismatch(&host, peer.ip()).await {
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
    let Some(ep) = transport.endpoint(target) else {
        if transport.was_opened(target) {
            // An endpoint of ours that closed: a peer that had not heard of it yet (a
            // reply racing our close) did nothing wrong.
            transport.handshakes_failed.fetch_add(1, Relaxed);
            tracing::debug!(
                %peer,
                origin = %address,
                endpoint = target,
                "connection request for an endpoint closed earlier: rejected"
            );
        } else {
            handshake_failed!(
                transport,
                %peer,
                origin = %address,
                endpoint = target,
                "connection request for an endpoint that does not exist: rejected"
            );
        }
        let _ = respond(stream, HandshakeResponse::InvalidEndPoint).await;
        return Verdict::Done;
    };
    claim(&ep, stream, address, buf).await
}

/// The host check with the name resolved where the core needs it; returns the answer to
/// send on a mismatch.
async fn host_mismatch(host: &str, peer: IpAddr) -> Option<HandshakeResponse> {
    let HostCheck::Resolve(claimed) = check_host(host, peer) else {
        return None;
    };
    let resolved: Vec<IpAddr> = match tokio::net::lookup_host((claimed.as_str(), 0)).await {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(_) => Vec::new(),
    };
    check_resolved(&claimed, peer, &resolved)
}

/// Answers as the endpoint's table of peers decides (`core/peers.rs`), waiting while it
/// says to.
async fn claim(
    ep: &Arc<EndPointShared>,
    stream: &mut TcpStream,
    address: EndPointAddress,
    buf: BytesMut,
) -> Verdict {
    loop {
        let (claim, rx, probe) = {
            let mut st = ep.lock();
            let claim = st.peers.request(&address, PeerIo::new);
            let rec = st.peers.get_mut_any(&address);
            let rx = rec.as_ref().map(|r| r.io.changed.subscribe());
            // The probe goes to the old socket now, under the lock, behind what is queued
            // there; if that socket can no longer write, its core is left as it was.
            let probe = match (&claim, rec) {
                (Claim::CrossedProbe, Some(rec)) => rec.socket().and_then(|mut s| {
                    let (probed, mark) = s.with_core(|core| core.probe(Instant::now()))?;
                    probed.then(|| {
                        s.writer.deadline_wake.notify_one();
                        (s.writer.clone(), mark)
                    })
                }),
                _ => None,
            };
            (claim, rx, probe)
        };
        match claim {
            Claim::Accept(key) => {
                // Until the answer is out, the record waits for it; if this task is given
                // up meanwhile (the handshake's timeout), the guard removes the record.
                let guard = AnswerGuard {
                    ep,
                    address: &address,
                    key,
                };
                if respond(stream, HandshakeResponse::Accepted).await.is_err() {
                    return Verdict::Done; // the guard removes the record
                }
                std::mem::forget(guard);
                return Verdict::Accept {
                    ep: ep.clone(),
                    address,
                    key,
                    buf,
                };
            }
            Claim::Crossed | Claim::CrossedProbe => {
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
            Claim::OwnAddress => {
                peer_warn!(
                    ep.warn_limit,
                    peer = ?stream.peer_addr().ok(),
                    claimed = %address,
                    "connection request claims this endpoint's own address: refused \
                     (it could make the endpoint connect to itself in a loop)"
                );
                let _ = respond(stream, HandshakeResponse::InvalidEndPoint).await;
                return Verdict::Done;
            }
            Claim::Wait => match rx {
                // Bounded by the handshake timeout around us.
                Some(mut rx) => {
                    let _ = rx.changed().await;
                }
                // Not reached (the table only waits on a record), but never spin.
                None => return Verdict::Done,
            },
        }
    }
}

/// A record waiting for our Accepted to be sent: removed (and its waiters told) if the
/// answer does not go out.
struct AnswerGuard<'a> {
    ep: &'a EndPointShared,
    address: &'a EndPointAddress,
    key: u64,
}

impl Drop for AnswerGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.ep.lock();
        if let Some(rec) = st.peers.answer_failed(self.address, self.key) {
            rec.announce(Resolution::Changed);
        }
    }
}

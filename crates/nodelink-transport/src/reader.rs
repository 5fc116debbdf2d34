//! The one task per accepted socket: reads frames and applies them to the endpoint.
//!
//! Before handling a data frame or a new connection the reader waits for room in the event
//! queue, so a full queue stops the reading (and, through TCP, the peer). Teardown frames
//! (`CloseConnection`, `CloseSocket`, `CloseEndPoint`) and probes do not wait: the events
//! they post are bounded by the connections the peer opened earlier (each of which waited
//! for room), and a socket must be able to finish closing — which a pending connect may
//! be waiting for — even while the application is not receiving. Replies the protocol requires
//! (`ProbeSocketAck`, the answering `CloseSocket`) go through the socket's one writer,
//! behind any data already queued.
//!
//! The reader also enforces probe deadlines: a probe sent on this socket (because a new
//! request from the same peer arrived) that is not acknowledged in time counts as a lost
//! socket.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;

use crate::address::EndPointAddress;
use crate::endpoint::{EndPointShared, CLOSE_LINGER};
use crate::error::ErrorKind;
use crate::event::{ConnectionId, Event, EventErrorKind, Reliability};
use crate::ratelimit::peer_warn;
use crate::remote::{RemoteState, Resolution};
use crate::sync::lock;
use crate::wire::{Frame, FrameDecoder, WireError, FIRST_LCID};
use crate::writer::SocketWriter;

/// What to do after a frame.
enum Next {
    Continue,
    /// Write up to this mark, then continue.
    Flush(u64),
    /// The socket is finished: write what is queued, close, exit.
    Close,
    /// The socket broke.
    Lost(String),
    /// The peer broke the protocol: warn (within the budget), then as `Lost`.
    Violation(String),
}

const READ_CHUNK: usize = 16 << 10;

pub(crate) async fn run(
    ep: Arc<EndPointShared>,
    address: EndPointAddress,
    key: u64,
    mut read: OwnedReadHalf,
    mut buf: BytesMut,
    writer: Arc<SocketWriter>,
) {
    let mut decoder = FrameDecoder::new(ep.config.max_receive_length);
    let end = 'outer: loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e @ WireError::TooLong { .. }) => {
                    peer_warn!(
                        ep.warn_limit,
                        peer = %address,
                        endpoint = %ep.address,
                        error = %e,
                        "message over the size limit (max_receive_length): socket dropped"
                    );
                    break 'outer Next::Lost(format!("message over the size limit: {e}"));
                }
                Err(e) => break 'outer Next::Violation(e.to_string()),
            };
            if matches!(frame, Frame::Data { .. } | Frame::CreatedNewConnection(_)) {
                tokio::select! {
                    _ = ep.events.wait_room() => {}
                    _ = writer.cancel.cancelled() => break 'outer Next::Lost("socket cancelled".into()),
                }
            }
            match handle(&ep, &address, key, &writer, frame) {
                Next::Continue => {}
                Next::Flush(mark) => {
                    if let Err(e) = writer.flush(mark).await {
                        break 'outer Next::Lost(format!("write failed: {e}"));
                    }
                }
                other => break 'outer other,
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let probe_expired = expiry(*lock(&writer.probe_deadline));
        let closing_expired = expiry(*lock(&writer.closing_deadline));
        tokio::select! {
            // In this order: a cancelled socket stops even under a flood, and bytes
            // already received win over an expiring deadline (an acknowledgement sitting
            // in the kernel buffer must not lose a random draw against its timer).
            biased;
            _ = writer.cancel.cancelled() => break Next::Lost("socket cancelled".into()),
            r = read.read_buf(&mut buf) => match r {
                Ok(0) => break Next::Lost("the peer closed the socket".into()),
                Ok(_) => {}
                Err(e) => break Next::Lost(format!("read failed: {e}")),
            },
            _ = writer.deadline_wake.notified() => {}
            _ = probe_expired => break Next::Lost("no answer to ProbeSocket".into()),
            _ = closing_expired => {
                *lock(&writer.closing_deadline) = None;
                if give_up_closing(&ep, &address, key, &writer) {
                    break Next::Close;
                }
            }
        }
    };
    if let Next::Violation(reason) = &end {
        peer_warn!(
            ep.warn_limit,
            peer = %address,
            endpoint = %ep.address,
            %reason,
            "protocol violation: socket dropped"
        );
    }
    if let Next::Lost(reason) | Next::Violation(reason) = end {
        lost(&ep, &address, key, &writer, &reason);
        writer.abandon().await;
    } else {
        let _ = tokio::time::timeout(CLOSE_LINGER, writer.shutdown()).await;
        writer.abandon().await;
    }
    drop(read);
}

async fn expiry(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The peer did not answer our CloseSocket in time: forget the socket quietly (a Closing
/// socket has no connections, so nothing is lost) and let connects build a new one.
fn give_up_closing(
    ep: &EndPointShared,
    address: &EndPointAddress,
    key: u64,
    writer: &SocketWriter,
) -> bool {
    let mut st = ep.lock();
    let closing = st
        .remote_mut(address, key)
        .is_some_and(|r| matches!(r.state, RemoteState::Closing(_)));
    if closing {
        peer_warn!(
            ep.warn_limit,
            peer = %address,
            endpoint = %ep.address,
            "no answer to our CloseSocket within the connect timeout: socket dropped"
        );
        writer.kill();
        st.remove_remote(address, key, Resolution::Changed);
    }
    closing
}

/// Unexpected loss: a Valid socket posts ConnectionLost (even with nothing open); a
/// Closing one just goes away.
fn lost(
    ep: &EndPointShared,
    address: &EndPointAddress,
    key: u64,
    writer: &SocketWriter,
    reason: &str,
) {
    writer.kill();
    writer.cancel.cancel();
    let mut st = ep.lock();
    let Some(rec) = st.remote_mut(address, key) else {
        return;
    };
    if let RemoteState::Valid(_) = rec.state {
        tracing::info!(peer = %address, endpoint = %ep.address, reason, "connection lost");
        ep.events.push(Event::Error {
            kind: EventErrorKind::ConnectionLost(address.clone()),
            message: format!("connection to {address} lost: {reason}"),
        });
    }
    // Connects waiting on this socket fail, as the original's Failed state makes them.
    st.remove_remote(
        address,
        key,
        Resolution::Failed(
            ErrorKind::ConnectFailed,
            format!("connection lost: {reason}"),
        ),
    );
}

fn handle(
    ep: &EndPointShared,
    address: &EndPointAddress,
    key: u64,
    writer: &Arc<SocketWriter>,
    frame: Frame,
) -> Next {
    let mut st = ep.lock();
    let Some(rec) = st.remote_mut(address, key) else {
        // The endpoint closed or forgot this socket.
        return Next::Close;
    };
    let hid = rec.hid;
    let cid = |lcid| ConnectionId::new(hid, lcid);
    match frame {
        Frame::Data { lcid, payload } => {
            if let RemoteState::Valid(s) | RemoteState::Closing(s) = &rec.state {
                if !s.incoming.contains(&lcid) {
                    // A compliant peer only sends on connections it announced and has not
                    // closed (it never sends CloseSocket while it has any open).
                    return Next::Violation(format!(
                        "data for connection {lcid}, which is not open"
                    ));
                }
                ep.events.push(Event::Received {
                    id: cid(lcid),
                    data: vec![payload],
                });
            }
            Next::Continue
        }
        Frame::CreatedNewConnection(lcid) => {
            if lcid < FIRST_LCID {
                return Next::Violation(format!("CreatedNewConnection with reserved id {lcid}"));
            }
            // A new connection cancels a close in progress; the close is still owed once
            // this connection (and any other) is gone.
            let cancelled = rec.state.cancel_closing();
            if cancelled {
                *lock(&writer.closing_deadline) = None;
                rec.announce(Resolution::Changed);
            }
            let RemoteState::Valid(s) = &mut rec.state else {
                return Next::Continue;
            };
            s.close_when_unused |= cancelled;
            if s.incoming.len() >= ep.config.max_incoming_connections_per_socket {
                return Next::Violation(format!(
                    "more than {} incoming connections on one socket",
                    ep.config.max_incoming_connections_per_socket
                ));
            }
            if !s.incoming.insert(lcid) {
                return Next::Violation(format!("CreatedNewConnection for open connection {lcid}"));
            }
            s.last_incoming = lcid;
            tracing::info!(
                peer = %address,
                endpoint = %ep.address,
                id = %cid(lcid),
                "incoming connection opened"
            );
            ep.events.push(Event::ConnectionOpened {
                id: cid(lcid),
                reliability: Reliability::ReliableOrdered,
                address: address.clone(),
            });
            Next::Continue
        }
        Frame::CloseConnection(lcid) => {
            let (RemoteState::Valid(s) | RemoteState::Closing(s)) = &mut rec.state else {
                return Next::Continue;
            };
            if !s.incoming.remove(&lcid) {
                return Next::Violation(format!("CloseConnection for unknown connection {lcid}"));
            }
            tracing::info!(
                peer = %address,
                endpoint = %ep.address,
                id = %cid(lcid),
                "incoming connection closed"
            );
            ep.events.push(Event::ConnectionClosed { id: cid(lcid) });
            // A received CloseConnection starts no teardown by itself (the peer does that
            // when it closes its last connection), except when our own close came first
            // and is still owed: then the two closes crossed and nobody else will.
            if !s.close_when_unused || !s.unused() {
                return Next::Continue;
            }
            match rec.begin_close(ep.config.connect_timeout) {
                Some((_, mark)) => {
                    tracing::trace!(peer = %address, "closes crossed: closing the socket");
                    Next::Flush(mark)
                }
                None => Next::Continue,
            }
        }
        Frame::CloseSocket(last_received) => match &mut rec.state {
            RemoteState::Valid(s) => {
                let mut ids: Vec<u32> = s.incoming.drain().collect();
                ids.sort_unstable();
                if !ids.is_empty() {
                    tracing::info!(
                        peer = %address,
                        endpoint = %ep.address,
                        count = ids.len(),
                        "the peer closed its socket: its incoming connections are closed"
                    );
                }
                for lcid in ids {
                    ep.events.push(Event::ConnectionClosed { id: cid(lcid) });
                }
                if s.outgoing > 0 || last_received != s.last_sent() {
                    return Next::Continue;
                }
                let last = s.last_incoming;
                let _ = writer.enqueue(|b| Frame::CloseSocket(last).encode(b));
                writer.kill();
                tracing::debug!(peer = %address, "socket closed at the peer's request");
                st.remove_remote(address, key, Resolution::Changed);
                Next::Close
            }
            RemoteState::Closing(s) => {
                if last_received != s.last_sent() {
                    return Next::Continue;
                }
                writer.kill();
                if s.outgoing > 0 {
                    tracing::info!(peer = %address, endpoint = %ep.address, "connection lost: the peer closed the socket");
                    ep.events.push(Event::Error {
                        kind: EventErrorKind::ConnectionLost(address.clone()),
                        message: format!("{address} closed the socket"),
                    });
                } else {
                    tracing::debug!(peer = %address, "socket closed by agreement");
                }
                st.remove_remote(address, key, Resolution::Changed);
                Next::Close
            }
            RemoteState::Init { .. } => Next::Continue,
        },
        Frame::CloseEndPoint => {
            // Kill the writer before posting: whoever sees the events must see sends fail.
            writer.kill();
            if let RemoteState::Valid(s) | RemoteState::Closing(s) = &mut rec.state {
                let mut ids: Vec<u32> = s.incoming.drain().collect();
                ids.sort_unstable();
                tracing::info!(
                    peer = %address,
                    endpoint = %ep.address,
                    incoming = ids.len(),
                    outgoing = s.outgoing,
                    "the peer closed its endpoint"
                );
                for lcid in ids {
                    ep.events.push(Event::ConnectionClosed { id: cid(lcid) });
                }
                if s.outgoing > 0 {
                    ep.events.push(Event::Error {
                        kind: EventErrorKind::ConnectionLost(address.clone()),
                        message: format!("{address} closed its endpoint"),
                    });
                }
            }
            st.remove_remote(address, key, Resolution::Changed);
            Next::Close
        }
        Frame::ProbeSocket => match writer.enqueue(|b| Frame::ProbeSocketAck.encode(b)) {
            Ok(mark) => Next::Flush(mark),
            Err(_) => Next::Continue,
        },
        Frame::ProbeSocketAck => {
            *lock(&writer.probe_deadline) = None;
            Next::Continue
        }
    }
}

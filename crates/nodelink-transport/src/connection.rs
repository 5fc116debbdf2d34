//! Lightweight connections: many per socket, each with its own sender-chosen lcid.
//!
//! A `Connection` is a handle; clones share it. Closing is idempotent, and dropping the
//! last clone closes it too, so a task cancelled anywhere (even inside `connect`, once
//! the connection was announced) never leaves the peer with a connection that stays
//! open forever.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::time::Instant;

use crate::address::EndPointAddress;
use crate::endpoint_shared::EndPointShared;
use crate::error::{Error, ErrorKind};
use crate::wire::encode_data_header;
use crate::writer::{Refused, SocketWriter};

pub(crate) enum Kind {
    /// To our own endpoint: events are queued directly, heavyweight id 0.
    Local,
    /// Over the socket of record `key` for `address`.
    Remote {
        address: EndPointAddress,
        key: u64,
        writer: Arc<SocketWriter>,
    },
}

pub(crate) struct ConnInner {
    pub(crate) ep: Arc<EndPointShared>,
    pub(crate) lcid: u32,
    pub(crate) alive: AtomicBool,
    pub(crate) kind: Kind,
}

/// An outgoing lightweight connection. Cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Connection(pub(crate) Arc<ConnInner>);

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("lcid", &self.0.lcid)
            .finish()
    }
}

impl Connection {
    pub(crate) fn new(ep: Arc<EndPointShared>, lcid: u32, kind: Kind) -> Self {
        Connection(Arc::new(ConnInner {
            ep,
            lcid,
            alive: AtomicBool::new(true),
            kind,
        }))
    }

    /// Sends the concatenation of `chunks` as one message (one data frame).
    ///
    /// Cancel-safe: if the future is dropped, the message is either not sent at all or
    /// sent whole; the wire never carries a partial frame. Errors: `SendClosed` after
    /// [`close`](Self::close); `SendFailed` once the socket or the endpoint is gone
    /// (or the message exceeds 4 GiB).
    pub async fn send<B: AsRef<[u8]>>(&self, chunks: &[B]) -> Result<(), Error> {
        let inner = &self.0;
        let total: usize = chunks.iter().map(|c| c.as_ref().len()).sum();
        let Ok(len) = u32::try_from(total) else {
            return Err(Error::new(
                ErrorKind::SendFailed,
                "message longer than 4 GiB",
            ));
        };
        match &inner.kind {
            Kind::Local => {
                crate::selfconn::send(&inner.ep, inner.lcid, &inner.alive, chunks, total).await
            }
            Kind::Remote { writer, .. } => {
                let mark = writer
                    .enqueue_if(&inner.alive, |b: &mut BytesMut| {
                        b.reserve(8 + total);
                        encode_data_header(inner.lcid, len, b);
                        for c in chunks {
                            b.extend_from_slice(c.as_ref());
                        }
                    })
                    .map_err(refused)?;
                writer
                    .flush(mark)
                    .await
                    .map_err(|e| Error::with_source(ErrorKind::SendFailed, "connection lost", e))
            }
        }
    }

    /// Closes the connection (the peer gets `ConnectionClosed`). Idempotent. When this was
    /// the last connection either way on its socket, the socket's teardown starts.
    pub async fn close(&self) {
        if let Some((writer, mark)) = close_now(&self.0) {
            let _ = writer.flush(mark).await;
        }
    }
}

fn refused(r: Refused) -> Error {
    match r {
        Refused::ConnectionClosed => Error::new(ErrorKind::SendClosed, "connection closed"),
        Refused::SocketDead => Error::new(ErrorKind::SendFailed, "connection lost"),
    }
}

/// The synchronous part of closing: state change and frames queued. Returns what to flush.
fn close_now(inner: &ConnInner) -> Option<(Arc<SocketWriter>, u64)> {
    match &inner.kind {
        Kind::Local => {
            crate::selfconn::close(&inner.ep, inner.lcid, &inner.alive);
            None
        }
        Kind::Remote {
            address,
            key,
            writer,
        } => {
            let mut st = inner.ep.lock();
            let sock = match st.peers.get_mut(address, *key).and_then(|r| r.socket()) {
                Some(sock) if Arc::ptr_eq(sock.writer, writer) => sock,
                _ => {
                    // The socket is gone: only the handle is left to close.
                    writer.close_connection(&inner.alive, |_| {});
                    return None;
                }
            };
            let core = &mut *sock.core;
            let closed = writer.close_connection(&inner.alive, |b| {
                core.close(inner.lcid, Instant::now());
                core.write_transmit(b);
            });
            if !closed {
                return None;
            }
            tracing::info!(
                peer = %address,
                endpoint = %inner.ep.address,
                lcid = inner.lcid,
                "outgoing connection closed"
            );
            if sock.closing() {
                // The core now waits for the peer's CloseSocket, with a deadline.
                writer.deadline_wake.notify_one();
                tracing::trace!(peer = %address, "socket unused: closing");
            }
            Some((writer.clone(), writer.mark()))
        }
    }
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        if !self.alive.load(Ordering::Acquire) {
            return;
        }
        if let Some((writer, mark)) = close_now(self) {
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = writer.flush(mark).await;
                });
            }
        }
    }
}

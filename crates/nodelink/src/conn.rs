//! A connection: one conversation multiplexed over a link.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::core::ConnKey;
use crate::error::{Cause, Result};
use crate::frame::Packet;
use crate::handle::Link;
use crate::message::{check_answer, check_pair, peer_cause, Ask, ErrorMessage, Message};
use crate::txqueue::Body;

/// A connection over a [`Link`]. All methods take `&self` and are safe to call from many
/// tasks at once (share it with an `Arc`); every future is cancellation-safe: dropping it
/// never corrupts the link's framing nor leaks the connection. Dropping the `Conn` closes it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> nodelink::Result<()> {
/// use nodelink::{Config, Link, Ping, Pong, Role};
/// let (a, b) = tokio::io::duplex(64 << 10);
/// let (client, server) = tokio::try_join!(
///     Link::handshake(a, Role::Client, Config::default()),
///     Link::handshake(b, Role::Server, Config::default()),
/// )?;
/// let conn = client.open()?;
/// conn.send(&Ping).await?;
/// let incoming = server.accept().await?;
/// let _ping: Ping = incoming.expect().await?;
/// incoming.send(&Pong).await?;
/// let _pong: Pong = conn.expect().await?;
/// # Ok(()) }
/// ```
pub struct Conn {
    link: Link,
    key: ConnKey,
    id: u32,
    closed: AtomicBool,
    /// `close_recv` (or `close`) was called.
    recv_closed: AtomicBool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("link", &self.link.inner().name)
            .field("id", &self.id)
            .finish()
    }
}

impl Conn {
    pub(crate) fn new(link: Link, key: ConnKey, id: u32) -> Conn {
        Conn {
            link,
            key,
            id,
            closed: AtomicBool::new(false),
            recv_closed: AtomicBool::new(false),
        }
    }

    /// The connection id on the wire.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The link this connection runs over.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Sends a message.
    pub async fn send<M: Message>(&self, msg: &M) -> Result<()> {
        let encode = |b: &mut BytesMut| msg.encode(b);
        self.send_body(M::CODE, Body::Encode(encode), "send").await
    }

    /// Sends a raw packet; large payloads are written without being copied.
    pub async fn send_packet(&self, code: u16, payload: Bytes) -> Result<()> {
        self.send_body(code, Body::Bytes::<fn(&mut BytesMut)>(&payload), "send")
            .await
    }

    async fn send_body<F: Fn(&mut BytesMut)>(
        &self,
        code: u16,
        body: Body<'_, F>,
        op: &'static str,
    ) -> Result<()> {
        let inner = self.link.inner();
        // Once the application closed the connection, that is what it hears about, even
        // if the link has failed or closed since.
        let closed = || inner.conn_error(Cause::ConnectionClosed, self.id, op);
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        inner
            .send_frame(Some(self.key), self.id, code, body)
            .await
            .map_err(|f| {
                if self.closed.load(Ordering::Acquire) {
                    closed()
                } else {
                    inner.send_error(f, Some(self.id), op)
                }
            })
    }

    /// Receives the next packet, whatever its code. The payload is a zero-copy slice of
    /// the link's read buffer.
    pub async fn recv(&self) -> Result<Packet> {
        let inner = self.link.inner();
        let closed = || inner.conn_error(Cause::ConnectionClosed, self.id, "recv");
        if self.recv_closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        inner.recv_on(self.key, self.id, "recv").await.map_err(|e| {
            if self.recv_closed.load(Ordering::Acquire) {
                closed()
            } else {
                e
            }
        })
    }

    /// Receives the next message, which must be of type `M`.
    pub async fn expect<M: Message>(&self) -> Result<M> {
        let packet = self.recv().await?;
        packet.decode::<M>().map_err(|e| {
            self.link
                .inner()
                .conn_error(Cause::Decode(e), self.id, "recv")
        })
    }

    /// Receives the next packet, which must have one of `codes`; anything else is a
    /// decode error naming the code that arrived.
    pub async fn expect_any(&self, codes: &[u16]) -> Result<Packet> {
        let packet = self.recv().await?;
        if codes.contains(&packet.code) {
            return Ok(packet);
        }
        let e = crate::DecodeError::Unexpected {
            code: packet.code,
            expected: codes.to_vec(),
        };
        Err(self
            .link
            .inner()
            .conn_error(Cause::Decode(e), self.id, "recv"))
    }

    /// Sends a request and waits for its answer. An Error answer comes back with the kind
    /// it means ([`Refused`](crate::ErrorKind::Refused),
    /// [`ClosedByPeer`](crate::ErrorKind::ClosedByPeer) or
    /// [`Peer`](crate::ErrorKind::Peer)). Bounded by
    /// [`Config::ask_timeout`](crate::Config::ask_timeout) if set: past it the call fails
    /// with [`DeadlineExceeded`](crate::ErrorKind::DeadlineExceeded) and the connection is
    /// closed, so that a late answer cannot be taken for the answer to a later request.
    pub async fn ask<Req: Message, Resp: Message>(&self, req: &Req) -> Result<Resp> {
        const { check_answer::<Resp>() };
        self.ask_bounded(req, self.link.inner().config.ask_timeout)
            .await
    }

    /// [`Conn::ask`] with its own deadline.
    pub async fn ask_within<Req: Message, Resp: Message>(
        &self,
        req: &Req,
        deadline: std::time::Duration,
    ) -> Result<Resp> {
        const { check_answer::<Resp>() };
        self.ask_bounded(req, Some(deadline)).await
    }

    /// [`Conn::ask`] for a request that declares its answer type ([`Ask`]): asking for
    /// another type does not compile (see [`Link::call`]).
    pub fn call<'a, R: Ask>(
        &'a self,
        req: &'a R,
    ) -> impl std::future::Future<Output = Result<R::Answer>> + 'a {
        const { check_pair::<R>() };
        self.ask_bounded(req, self.link.inner().config.ask_timeout)
    }

    async fn ask_bounded<Req: Message, Resp: Message>(
        &self,
        req: &Req,
        deadline: Option<std::time::Duration>,
    ) -> Result<Resp> {
        let inner = self.link.inner();
        let exchange = async {
            self.send(req).await?;
            self.recv().await
        };
        let packet = match inner.bounded(deadline, self.id, "ask", exchange).await {
            Err(e) if e.kind() == crate::ErrorKind::DeadlineExceeded => {
                self.close();
                return Err(e);
            }
            r => r?,
        };
        if packet.code == ErrorMessage::CODE && Resp::CODE != ErrorMessage::CODE {
            return Err(inner.conn_error(peer_cause(packet.payload), self.id, "ask"));
        }
        packet
            .decode::<Resp>()
            .map_err(|e| inner.conn_error(Cause::Decode(e), self.id, "ask"))
    }

    /// Closes the receiving side: blocked and later receives fail with "connection closed";
    /// packets already queued, and later ones, are answered "connection closed".
    pub fn close_recv(&self) {
        self.recv_closed.store(true, Ordering::Release);
        let key = self.key;
        self.link.inner().with_core(|s| s.core.close_recv(key));
    }

    /// Closes the connection in both directions. A send already being written completes,
    /// so the link's framing stays intact. Safe to call more than once.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.recv_closed.store(true, Ordering::Release);
        let key = self.key;
        self.link
            .inner()
            .with_core(|s| s.core.close(key, Instant::now()));
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

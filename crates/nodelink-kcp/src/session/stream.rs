//! [`KcpStream`]: the application's end of a session.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::instrument::WithSubscriber;
use tracing::Instrument;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{lookup_host, ToSocketAddrs, UdpSocket};
use tokio::time::{sleep, Sleep};

use super::count_open;
use super::driver::{drive, NetSide, Shared, State};
use super::udp::Udp;
use crate::pipeline::{Config, Pipeline, Stats};
use crate::{Error, ErrorKind, Result};

/// One KCP session: a reliable, ordered byte stream (or message channel) over UDP.
///
/// In stream mode (the default) it is a tokio [`AsyncRead`] + [`AsyncWrite`]; in message
/// mode use [`send_message`](Self::send_message) and [`recv_message`](Self::recv_message)
/// (a plain `write` then sends one message and a `read` returns one, failing if the buffer
/// is too small). Writes wait while KCP's send queue is full. Reads and writes fail with
/// `TimedOut` after the configured timeouts, and with `ConnectionAborted` wrapping an
/// [`Error`] of kind [`ErrorKind::DeadLink`] once the peer is found dead. `shutdown` (and dropping the stream)
/// lets what is queued drain, bounded by the linger time; KCP has no FIN, so the peer does
/// not see an end of stream.
#[derive(Debug)]
pub struct KcpStream {
    shared: Arc<Shared>,
    local: SocketAddr,
    peer: SocketAddr,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    close_timer: Option<Pin<Box<Sleep>>>,
}

/// Reads a session's counters from anywhere ([`KcpStream::monitor`]).
#[derive(Debug, Clone)]
pub struct SessionMonitor {
    shared: Arc<Shared>,
}

impl SessionMonitor {
    /// The session's counters now.
    pub fn stats(&self) -> Stats {
        self.shared.lock().pipe.stats()
    }

    /// How many times the peer's host reported "port unreachable" (ICMP) for our
    /// datagrams: nothing listens on the peer's address. Client sessions only.
    pub fn unreachable_reports(&self) -> u64 {
        self.shared
            .unreachable
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the session failed (dead peer, reset).
    pub fn is_dead(&self) -> bool {
        self.shared.lock().failure.is_some()
    }
}

/// The first address `addr` resolves to.
pub(crate) async fn resolve(addr: impl ToSocketAddrs) -> Result<SocketAddr> {
    let cannot_resolve = |e| Error::io("cannot resolve the KCP peer's address", e);
    lookup_host(addr)
        .await
        .map_err(cannot_resolve)?
        .next()
        .ok_or_else(|| {
            cannot_resolve(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolved to nothing",
            ))
        })
}

/// A random non-zero conversation id for a session we open.
pub(crate) fn random_conv() -> u32 {
    loop {
        let c: u32 = rand::random();
        if c != 0 {
            break c;
        }
    }
}

impl KcpStream {
    /// Opens a client session to `addr` with a random non-zero conversation id. No packet
    /// is exchanged (KCP has no handshake): this only binds and connects a UDP socket.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the address does not resolve or the socket cannot be set
    /// up; [`ErrorKind::Config`] for an invalid configuration.
    pub async fn connect(addr: impl ToSocketAddrs, cfg: Config) -> Result<KcpStream> {
        let peer = resolve(addr).await?;
        let bind: SocketAddr = if peer.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let sock = UdpSocket::bind(bind)
            .await
            .map_err(|e| Error::io(format!("cannot bind a UDP socket on {bind}"), e))?;
        KcpStream::connect_on(sock, peer, cfg).await
    }

    /// Opens a client session to `peer` over a UDP socket the caller already owns, as
    /// kcp-go's `NewConn` over a `PacketConn`: a socket whose port a NAT already maps (a
    /// hole punched through a rendezvous exchange), or one bound with options of the
    /// caller's choosing. The session takes the socket over and connects it to `peer`, so
    /// the local port stays the same and the kernel drops datagrams from anyone else.
    ///
    /// To keep receiving from other peers on the same socket (serving sessions and
    /// dialling out on one port), use [`KcpListener::from_socket`](crate::KcpListener::from_socket)
    /// and [`KcpListener::connect`](crate::KcpListener::connect) instead.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the socket cannot be connected to `peer`;
    /// [`ErrorKind::Config`] for an invalid configuration.
    pub async fn connect_on(sock: UdpSocket, peer: SocketAddr, cfg: Config) -> Result<KcpStream> {
        cfg.apply_socket_options(&sock);
        let setup = |e| Error::io(format!("cannot connect a UDP socket to {peer}"), e);
        sock.connect(peer).await.map_err(setup)?;
        let local = sock.local_addr().map_err(setup)?;
        let pipe = Pipeline::new(random_conv(), &cfg)?;
        let stream = KcpStream::spawn(pipe, cfg, local, peer, |_| NetSide::Client {
            sock: Arc::new(Udp::new(sock)),
            peer,
        });
        count_open(true);
        Ok(stream)
    }

    /// Builds a stream and spawns its driver.
    pub(crate) fn spawn(
        pipe: Pipeline,
        cfg: Config,
        local: SocketAddr,
        peer: SocketAddr,
        net: impl FnOnce(&Arc<Shared>) -> NetSide,
    ) -> KcpStream {
        let shared = Shared::new(pipe, cfg);
        let side = net(&shared);
        // The driver logs within the caller's span and subscriber (the session's peer).
        tokio::spawn(
            drive(Arc::clone(&shared), side)
                .instrument(tracing::Span::current())
                .with_current_subscriber(),
        );
        KcpStream {
            shared,
            local,
            peer,
            read_timer: None,
            write_timer: None,
            close_timer: None,
        }
    }

    /// The local socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.shared.lock().pipe.conv()
    }

    /// Largest segment payload (kcp-go 5.6.1 sends each write as messages of at most this).
    pub fn mss(&self) -> usize {
        self.shared.lock().pipe.mss()
    }

    /// This session's counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().pipe.stats()
    }

    /// Whether the session failed (dead peer, reset).
    pub fn is_dead(&self) -> bool {
        self.shared.lock().failure.is_some()
    }

    /// A handle that keeps reading this session's counters after the stream was moved
    /// (split, or given to a protocol on top), for example to explain a silence.
    pub fn monitor(&self) -> SessionMonitor {
        SessionMonitor {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Closes the sending side gracefully: no more writes; what was written is sent and
    /// waited for until the peer acknowledged all of it, or for [`Config::linger`] at
    /// most. KCP has no end-of-stream segment, so the peer is not told: an application
    /// protocol on top says when it is done (smux's FIN, for instance). Idempotent; the
    /// session itself ends when the stream is dropped.
    ///
    /// # Errors
    ///
    /// The session's failure; [`ErrorKind::TimedOut`] when the linger passed with data
    /// unacknowledged.
    pub async fn close(&mut self) -> Result<()> {
        let shut = poll_fn(|cx| self.poll_close(cx)).await;
        // A later call waits for a full linger again.
        self.close_timer = None;
        shut?;
        let unacked = self.shared.lock().pipe.wait_snd();
        if unacked > 0 {
            return Err(Error::new(
                ErrorKind::TimedOut,
                format!("{unacked} segments not acknowledged within the linger"),
            ));
        }
        Ok(())
    }

    /// Sends one message (message mode; in stream mode, appends the bytes). Waits for send
    /// capacity, then queues the whole message.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::MessageTooLarge`]; the session's failure; [`ErrorKind::TimedOut`];
    /// [`ErrorKind::Closed`] after `close`.
    pub async fn send_message(&mut self, msg: &[u8]) -> Result<()> {
        poll_fn(|cx| self.poll_send(cx, msg, true))
            .await
            .map(|_| ())
    }

    /// Receives the next message (message mode; in stream mode, whatever is buffered).
    ///
    /// # Errors
    ///
    /// The session's failure; [`ErrorKind::TimedOut`] after the read timeout.
    pub async fn recv_message(&mut self) -> Result<Vec<u8>> {
        poll_fn(|cx| {
            self.poll_recv_with(cx, |st| {
                let Some(n) = st.pipe.peek_size() else {
                    return Ok(None);
                };
                let mut v = vec![0u8; n];
                let got = st.pipe.recv(&mut v)?.unwrap_or(0);
                v.truncate(got);
                Ok(Some(v))
            })
        })
        .await
    }

    fn poll_recv_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut State) -> Result<Option<T>>,
    ) -> Poll<Result<T>> {
        {
            let mut st = self.shared.lock();
            match f(&mut st) {
                Ok(Some(v)) => {
                    self.shared.note_held(&st);
                    let kick = st.pipe.kcp().wants_to_send();
                    drop(st);
                    if kick {
                        self.shared.kick.notify_one();
                    }
                    self.read_timer = None;
                    return Poll::Ready(Ok(v));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if let Some(f) = &st.failure {
                return Poll::Ready(Err(f.to_error()));
            }
            st.read_waker = Some(cx.waker().clone());
        }
        if poll_timer(&mut self.read_timer, self.shared.cfg.read_timeout, cx).is_ready() {
            self.read_timer = None;
            return Poll::Ready(Err(Error::fixed(ErrorKind::TimedOut, "KCP read timed out")));
        }
        Poll::Pending
    }

    /// Queues `buf` (all of it if `whole`, else as much as the send capacity allows).
    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8], whole: bool) -> Poll<Result<usize>> {
        {
            let mut st = self.shared.lock();
            if let Some(f) = &st.failure {
                return Poll::Ready(Err(f.to_error()));
            }
            if st.write_closed {
                return Poll::Ready(Err(Error::fixed(
                    ErrorKind::Closed,
                    "KCP stream was shut down for writing",
                )));
            }
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let cap = st.pipe.send_capacity();
            if cap > 0 {
                let n = if whole {
                    buf.len()
                } else {
                    buf.len().min(cap * st.pipe.mss())
                };
                let r = st.pipe.send(&buf[..n]);
                // With write delay the data waits for the next interval's flush; the kick
                // below still wakes the driver so it arms that timer.
                st.want_flush = !self.shared.cfg.write_delay;
                drop(st);
                self.write_timer = None;
                self.shared.kick.notify_one();
                return Poll::Ready(r);
            }
            st.write_waker = Some(cx.waker().clone());
        }
        if poll_timer(&mut self.write_timer, self.shared.cfg.write_timeout, cx).is_ready() {
            self.write_timer = None;
            return Poll::Ready(Err(Error::fixed(
                ErrorKind::TimedOut,
                "KCP write timed out",
            )));
        }
        Poll::Pending
    }

    /// Stops writes and waits until what was written is acknowledged or the linger passed.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        {
            let mut st = self.shared.lock();
            st.write_closed = true;
            if let Some(f) = &st.failure {
                return Poll::Ready(Err(f.to_error()));
            }
            if st.pipe.wait_snd() == 0 {
                return Poll::Ready(Ok(()));
            }
            st.write_waker = Some(cx.waker().clone());
        }
        let linger = Some(self.shared.cfg.linger);
        if poll_timer(&mut self.close_timer, linger, cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

/// Polls an optional timeout, arming it on first use.
fn poll_timer(
    slot: &mut Option<Pin<Box<Sleep>>>,
    dur: Option<Duration>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(d) = dur else {
        return Poll::Pending;
    };
    slot.get_or_insert_with(|| Box::pin(sleep(d)))
        .as_mut()
        .poll(cx)
}

impl AsyncRead for KcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let this = self.get_mut();
        let dst = buf.initialize_unfilled();
        match this.poll_recv_with(cx, |st| st.pipe.recv(dst)) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for KcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let whole = !this.shared.cfg.stream;
        this.poll_send(cx, buf, whole).map_err(io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes are flushed by the driver at once (no write delay).
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close(cx).map_err(io::Error::from)
    }
}

impl Drop for KcpStream {
    fn drop(&mut self) {
        self.shared.lock().dropped = true;
        self.shared.kick.notify_one();
    }
}

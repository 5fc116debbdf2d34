//! Links over KCP (reliable UDP, wire-compatible with kcp-go): [`connect_kcp`], [`bind_kcp`]
//! and the [`KcpLinkListener`]. Needs the `kcp` feature (on by default).
//!
//! A KCP session from [`nodelink_kcp`] is a reliable byte stream (stream mode), so the link
//! runs over it exactly as over TCP: the same version handshake, the same packets. Both
//! ends must agree on the [`KcpConfig`]'s cipher, key and FEC (kcptun's rules).
//!
//! KCP has no handshake and no FIN of its own, and the link makes up for both:
//!
//! * **Closes are noticed.** Between two nodelink sides (the flow-control extension
//!   agreed, the default), a side that closes its link sends the extension's BYE frame last
//!   (`docs/protocols/link.md`, "Closing and failure"), so the peer's link ends at once, as
//!   on TCP's FIN. A kcp-go-based peer sends no BYE; a vanished peer (or a dead path) is
//!   noticed when data goes unacknowledged for the session's dead-link time, and the link
//!   fails with [`ErrorKind::DeadPeer`](crate::ErrorKind::DeadPeer).
//! * **Silence is explained.** Dialing never fails for an absent peer; the link's version
//!   handshake does, after [`Config::handshake_timeout`], with
//!   [`HandshakeError::Unanswered`] naming the likely cause from what the session saw:
//!   "port unreachable" reports (nothing listens there), nothing at all (most often another
//!   key or cipher on the server, since KCP drops what fails to decrypt without a word), or
//!   datagrams that fail to decrypt (key, cipher or FEC differ).
//!
//! The ciphers are kcptun's, and most of them do not authenticate; read the security
//! section of the [`nodelink_kcp`] crate docs before relying on them.
//!
//! ```no_run
//! # async fn demo() -> nodelink::Result<()> {
//! use nodelink::kcp::{connect_kcp, bind_kcp, KcpConfig};
//! use nodelink::{Config, Ping, Pong};
//!
//! let mut listener = bind_kcp("127.0.0.1:0", KcpConfig::default(), Config::default()).await?;
//! let addr = listener.local_addr();
//! tokio::spawn(async move {
//!     let link = listener.accept().await.unwrap();
//!     while let Ok(request) = link.recv1().await {
//!         let _ = request.reply(&Pong).await;
//!     }
//! });
//! let link = connect_kcp(addr, KcpConfig::default(), Config::default()).await?;
//! let _pong: Pong = link.ask1(&Ping).await?;
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::ToSocketAddrs;

pub use nodelink_kcp::crypt::CipherKind;
pub use nodelink_kcp::{AckTiming, Config as KcpConfig, KcpListener, KcpStream, Mode};

use crate::accept::{AcceptStream, Handshakes};
use crate::config::Config;
use crate::error::{resolve, Cause, Error, HandshakeError, Place, Result};
use crate::handle::Link;
use crate::role::Role;

/// Opens a KCP session to `addr` and returns a handshaked link in the client role.
///
/// Setting the session up (resolving the address, binding the UDP socket, building the
/// cipher) fails with [`ErrorKind::Connect`](crate::ErrorKind::Connect); the version handshake, bounded by
/// [`Config::handshake_timeout`], fails with [`ErrorKind::Handshake`](crate::ErrorKind::Handshake) (a timeout when no
/// KCP peer answers, since KCP itself has no handshake).
pub async fn connect_kcp(
    addr: impl ToSocketAddrs,
    session: KcpConfig,
    config: Config,
) -> Result<Link> {
    let remote = resolve(addr, "dial").await?[0];
    let stream = KcpStream::connect(remote, session)
        .await
        .map_err(|e| setup_error("dial", "connect", io::Error::from(e)))?;
    let local = stream.local_addr();
    let monitor = stream.monitor();
    match link_over_kcp(stream, Role::Client, config, Some(local), Some(remote)).await {
        Err(e) => match e.handshake_error() {
            Some(&HandshakeError::Timeout(after)) => {
                let likely = silence_cause(&monitor);
                Err(e.with_handshake_error(HandshakeError::Unanswered { after, likely }))
            }
            _ => Err(e),
        },
        ok => ok,
    }
}

/// Why a KCP peer stayed silent during the handshake, judged from what the session saw.
/// KCP has no handshake of its own and kcptun's ciphers drop what fails their checksum
/// without a word, so a wrong key looks like nobody there; the counters tell the cases
/// apart where they can.
fn silence_cause(monitor: &nodelink_kcp::SessionMonitor) -> &'static str {
    let stats = monitor.stats();
    if stats.in_pkts == 0 && monitor.unreachable_reports() > 0 {
        "nothing is listening there (the host answered \"port unreachable\")"
    } else if stats.in_pkts == 0 {
        "nothing came back: most likely the server uses another key or cipher (KCP drops \
         datagrams that fail to decrypt without a word), or nothing listens there, or UDP is \
         blocked on the way"
    } else if stats.in_csum_errors > 0 || stats.in_errs > 0 || stats.kcp_in_errors > 0 {
        "the server's datagrams fail to decrypt or parse: the key, the cipher or the FEC \
         settings differ from the server's"
    } else {
        "the peer answers over KCP but never sent the link's version: is it a link server \
         (not a tunnel or another KCP application)?"
    }
}

/// Binds a KCP listener whose [`KcpLinkListener::accept`] returns handshaked links.
///
/// Fails with [`ErrorKind::Connect`](crate::ErrorKind::Connect) when the address does not resolve, the UDP socket
/// cannot be bound or the session settings are invalid.
pub async fn bind_kcp(
    addr: impl ToSocketAddrs,
    session: KcpConfig,
    mut config: Config,
) -> Result<KcpLinkListener> {
    config.budget = Some(crate::budget::for_listener(config.max_memory));
    let local = resolve(addr, "listen").await?[0];
    let kcp = KcpListener::bind(local, session)
        .await
        .map_err(|e| setup_error("listen", "bind", io::Error::from(e)))?;
    Ok(KcpLinkListener {
        kcp,
        handshakes: Handshakes::new(&config),
        config,
    })
}

/// An [`ErrorKind::Connect`](crate::ErrorKind::Connect) error for a failed setup step.
/// A KCP error arrives as an `io::Error` that wraps it (its kind kept, its message and
/// cause reachable through `source()`).
fn setup_error(place: &str, op: &'static str, e: io::Error) -> Error {
    Error::new(
        Cause::Connect(Arc::new(e)),
        Place::link(&Arc::from(place)),
        op,
    )
}

async fn link_over_kcp(
    stream: KcpStream,
    role: Role,
    config: Config,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
) -> Result<Link> {
    let (r, w) = tokio::io::split(stream);
    Link::handshake_halves(Box::pin(r), Box::pin(w), role, config, local, remote).await
}

/// Accepts links over KCP. Handshakes run concurrently, so a slow or silent client never
/// delays the others; failed handshakes are logged, counted and skipped.
pub struct KcpLinkListener {
    kcp: KcpListener,
    config: Config,
    handshakes: Handshakes,
}

impl KcpLinkListener {
    /// The bound UDP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.kcp.local_addr()
    }

    /// Handshakes that failed so far (timeouts, version mismatches, dead sessions).
    pub fn failed_handshakes(&self) -> u64 {
        self.handshakes.failed()
    }

    /// Links this listener holds now, handshakes included (a gauge; at most
    /// [`Config::max_links`]).
    pub fn links(&self) -> usize {
        self.handshakes.links()
    }

    /// Bytes this listener's links hold now against [`Config::max_memory`] (unread
    /// requests and unsent answers; a gauge).
    pub fn memory_held(&self) -> usize {
        self.config.budget.as_ref().map_or(0, |b| b.used())
    }

    /// The underlying KCP listener (for its counters).
    pub fn kcp(&self) -> &KcpListener {
        &self.kcp
    }

    /// Waits for the next link whose handshake succeeded. Cancellation-safe.
    pub async fn accept(&mut self) -> Result<Link> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// The polling form of [`accept`](KcpLinkListener::accept).
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<Link>> {
        let KcpLinkListener {
            kcp,
            config,
            handshakes,
        } = self;
        let local = Some(kcp.local_addr());
        // Judged by its first datagram (`has_data`), which a KCP session always has.
        let start = |(stream, peer): (KcpStream, SocketAddr), _heard| {
            link_over_kcp(stream, Role::Server, config.clone(), local, Some(peer))
        };
        handshakes.poll_next(&mut KcpAccept(kcp), start, cx)
    }
}

impl crate::net::LinkListener for KcpLinkListener {
    fn local_addr(&self) -> SocketAddr {
        self.kcp.local_addr()
    }

    fn failed_handshakes(&self) -> u64 {
        self.handshakes.failed()
    }

    fn memory_held(&self) -> usize {
        KcpLinkListener::memory_held(self)
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<Link>> {
        KcpLinkListener::poll_accept(self, cx)
    }
}

/// A stream of handshaked links; an error that ends the listener is yielded once, then the
/// stream ends.
impl futures_core::Stream for KcpLinkListener {
    type Item = Result<Link>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Link>>> {
        if self.handshakes.ended {
            return Poll::Ready(None);
        }
        self.poll_accept(cx).map(Some)
    }
}

struct KcpAccept<'a>(&'a mut KcpListener);

impl AcceptStream for KcpAccept<'_> {
    type Stream = (KcpStream, SocketAddr);

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<(KcpStream, SocketAddr)>> {
        self.0
            .poll_accept(cx)
            .map_err(|e| setup_error("listen", "accept", io::Error::from(e)))
    }

    /// A KCP session exists because its peer sent a datagram.
    fn has_data(_: &(KcpStream, SocketAddr)) -> bool {
        true
    }
}

impl std::fmt::Debug for KcpLinkListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KcpLinkListener")
            .field("local_addr", &self.kcp.local_addr())
            .field("pending", &self.handshakes.in_progress())
            .field("failed", &self.handshakes.failed())
            .finish()
    }
}

//! TCP entry points: [`connect`], [`bind`] and the [`Listener`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::accept::{AcceptStream, Handshakes};
use crate::config::Config;
use crate::error::{bind_error, connect_error, dial_error, net_error, resolve, Result};
use crate::handle::Link;
use crate::role::Role;

/// Connects over TCP (with TCP_NODELAY) and returns a handshaked link in the client role.
///
/// ```no_run
/// # async fn demo() -> nodelink::Result<()> {
/// let link = nodelink::connect("127.0.0.1:5551", nodelink::Config::default()).await?;
/// # Ok(()) }
/// ```
pub async fn connect(addr: impl ToSocketAddrs, config: Config) -> Result<Link> {
    let stream = tcp_connect(addr, &config).await?;
    link_over_tcp(stream, Role::Client, config).await
}

/// Unanswered keepalive probes after which the kernel drops a connection.
const KEEPALIVE_PROBES: u32 = 5;

/// Applies [`Config::tcp_keepalive`] to a dialled or accepted socket. A failure only
/// costs the early notice of a vanished peer, so it is logged, not returned.
pub(crate) fn set_keepalive(stream: &TcpStream, config: &Config) {
    let Some(idle) = config.tcp_keepalive else {
        return;
    };
    // Linux takes whole seconds, at most 32767 for the idle time.
    use std::time::Duration;
    let idle = idle.clamp(Duration::from_secs(1), Duration::from_secs(32_767));
    // Probe after `idle` of silence, then every tenth of it (at least a second), and give
    // up after KEEPALIVE_PROBES unanswered: a vanished peer is noticed within 1.5 × idle
    // (the kernel's default of 9 probes would make that about twice the idle time).
    let interval = (idle / 10).max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "freebsd"
    ))]
    let keepalive = keepalive.with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(
            error = &e as &dyn std::error::Error,
            "cannot set TCP keepalive"
        );
    }
}

/// Dials each address `addr` resolves to in turn; the error names the last one tried.
pub(crate) async fn tcp_connect(addr: impl ToSocketAddrs, config: &Config) -> Result<TcpStream> {
    let mut failure = None;
    for a in resolve(addr, "dial").await? {
        match TcpStream::connect(a).await {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(|e| dial_error(a, e))?;
                set_keepalive(&stream, config);
                return Ok(stream);
            }
            Err(e) => failure = Some(dial_error(a, e)),
        }
    }
    // `resolve` returns at least one address, so there is a failure to report.
    Err(failure.unwrap_or_else(|| connect_error(io::ErrorKind::NotFound.into())))
}

/// Binds a TCP listener on the first address `addr` resolves to.
/// Connections the kernel queues for a listener before it accepts them (capped by the
/// system's `somaxconn`). tokio's default (1024) filled under a flood of silent sockets, and
/// a good client whose SYN was dropped then waited the one-second SYN retransmission.
const LISTEN_BACKLOG: u32 = 4096;

pub(crate) async fn tcp_bind(addr: impl ToSocketAddrs) -> Result<TcpListener> {
    let a = resolve(addr, "listen").await?[0];
    let socket = match a {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| bind_error(a, e))?;
    // As tokio's `TcpListener::bind` does: a restarted server can bind its port at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true).map_err(|e| bind_error(a, e))?;
    socket.bind(a).map_err(|e| bind_error(a, e))?;
    socket.listen(LISTEN_BACKLOG).map_err(|e| bind_error(a, e))
}

pub(crate) async fn link_over_tcp(stream: TcpStream, role: Role, config: Config) -> Result<Link> {
    let local = stream.local_addr().ok();
    let remote = stream.peer_addr().ok();
    let (r, w) = stream.into_split();
    Link::handshake_halves(Box::pin(r), Box::pin(w), role, config, local, remote).await
}

/// An accepted link's read half that says when its client's first bytes came (the
/// listener's eviction spares a handshake whose client spoke, `accept.rs`).
struct HeardRead {
    inner: tokio::net::tcp::OwnedReadHalf,
    /// Taken once set.
    heard: Option<crate::accept::Heard>,
}

impl tokio::io::AsyncRead for HeardRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            if let Some(heard) = self.heard.take() {
                heard.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        polled
    }
}

impl crate::link::LinkRead for HeardRead {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.inner.as_ref())
    }
}

/// Binds a TCP listener whose [`Listener::accept`] returns handshaked links.
pub async fn bind(addr: impl ToSocketAddrs, config: Config) -> Result<Listener> {
    let tcp = tcp_bind(addr).await?;
    Listener::new(tcp, config, Acceptor::Plain)
}

/// What every link listener does ([`Listener`] for TCP and TLS, `KcpLinkListener` for
/// KCP), so that a serve loop is written once, for any of them
/// ([`Handlers::serve_listener`](crate::Handlers::serve_listener) is one):
///
/// ```
/// use nodelink::LinkListener;
///
/// async fn serve_pings(mut listener: impl LinkListener) -> nodelink::Result<()> {
///     println!("listening on {}", listener.local_addr());
///     loop {
///         let link = listener.accept().await?;
///         tokio::spawn(async move {
///             while let Ok(request) = link.recv1().await {
///                 let _ = request.reply(&nodelink::Pong).await;
///             }
///         });
///     }
/// }
/// ```
///
/// Listeners are also `Stream`s of the same items (docs/CONVENTIONS.md, rule 5).
pub trait LinkListener: Send + 'static {
    /// The bound address (useful with port 0).
    fn local_addr(&self) -> SocketAddr;

    /// Handshakes that failed so far (timeouts, version mismatches, TLS errors, dead
    /// sessions).
    fn failed_handshakes(&self) -> u64;

    /// Bytes the links of this listener hold now against its [`Config::max_memory`]
    /// (unread requests and unsent answers; a gauge).
    fn memory_held(&self) -> usize;

    /// The next link whose handshake succeeded; an error ends the listener (its socket
    /// broke).
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<Link>>;

    /// Waits for the next link whose handshake succeeded. Cancellation-safe.
    fn accept(&mut self) -> impl std::future::Future<Output = Result<Link>> + Send + '_
    where
        Self: Sized,
    {
        std::future::poll_fn(move |cx| self.poll_accept(cx))
    }
}

pub(crate) enum Acceptor {
    Plain,
    #[cfg(feature = "tls")]
    Tls(tokio_rustls::TlsAcceptor),
}

/// Accepts links. Handshakes run concurrently, so a slow or silent client never delays the
/// others; failed handshakes are logged and skipped.
///
/// Also a [`Stream`](futures_core::Stream) of handshaked links: an error that ends the
/// listener (its socket broke) is yielded once, then the stream ends.
pub struct Listener {
    tcp: TcpListener,
    local: SocketAddr,
    retry: nodelink_driver::Retry,
    config: Config,
    acceptor: Arc<Acceptor>,
    handshakes: Handshakes,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local)
            .field("pending", &self.handshakes.in_progress())
            .field("failed", &self.handshakes.failed())
            .finish()
    }
}

impl Listener {
    pub(crate) fn new(
        tcp: TcpListener,
        mut config: Config,
        acceptor: Acceptor,
    ) -> Result<Listener> {
        config.budget = Some(crate::budget::for_listener(config.max_memory));
        if let Some(asked) = config.max_links {
            let room = crate::config::default_max_links();
            if asked > room {
                // Each link holds a descriptor, and each handshake a second one.
                tracing::warn!(
                    max_links = asked,
                    room,
                    "max_links is more than the open-file limit leaves for links and their \
                     handshakes: near it, accepting fails for want of descriptors (retried \
                     after a pause) instead of clients waiting in the backlog; raise the \
                     open-file limit or lower max_links"
                );
            }
        }
        let local = tcp
            .local_addr()
            .map_err(|e| net_error("listen", "local address", e))?;
        Ok(Listener {
            tcp,
            local,
            retry: nodelink_driver::Retry::default(),
            handshakes: Handshakes::new(&config),
            config,
            acceptor: Arc::new(acceptor),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Handshakes that failed so far (timeouts, version mismatches, TLS errors).
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

    /// Waits for the next link whose handshake succeeded. Cancellation-safe.
    pub async fn accept(&mut self) -> Result<Link> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// The polling form of [`accept`](Listener::accept).
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<Link>> {
        let Listener {
            tcp,
            local: _,
            retry,
            config,
            acceptor,
            handshakes,
        } = self;
        let start = |stream: TcpStream, heard: crate::accept::Heard| {
            let _ = stream.set_nodelay(true);
            set_keepalive(&stream, config);
            let config = config.clone();
            let acceptor = acceptor.clone();
            async move {
                match &*acceptor {
                    Acceptor::Plain => {
                        let local = stream.local_addr().ok();
                        let remote = stream.peer_addr().ok();
                        let (r, w) = stream.into_split();
                        let r = HeardRead {
                            inner: r,
                            heard: Some(heard),
                        };
                        Link::handshake_halves(
                            Box::pin(r),
                            Box::pin(w),
                            Role::Server,
                            config,
                            local,
                            remote,
                        )
                        .await
                    }
                    #[cfg(feature = "tls")]
                    Acceptor::Tls(tls) => crate::tls_start::accept_tls(tls, stream, config).await,
                }
            }
        };
        handshakes.poll_next(&mut TcpAccept(tcp, retry), start, cx)
    }
}

/// A boxed listener is one too, so that `Box<dyn LinkListener>` holds any of them.
impl<L: LinkListener + ?Sized> LinkListener for Box<L> {
    fn local_addr(&self) -> SocketAddr {
        (**self).local_addr()
    }

    fn failed_handshakes(&self) -> u64 {
        (**self).failed_handshakes()
    }

    fn memory_held(&self) -> usize {
        (**self).memory_held()
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<Link>> {
        (**self).poll_accept(cx)
    }
}

impl LinkListener for Listener {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn failed_handshakes(&self) -> u64 {
        self.handshakes.failed()
    }

    fn memory_held(&self) -> usize {
        Listener::memory_held(self)
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<Link>> {
        Listener::poll_accept(self, cx)
    }
}

impl futures_core::Stream for Listener {
    type Item = Result<Link>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Link>>> {
        if self.handshakes.ended {
            return Poll::Ready(None);
        }
        self.poll_accept(cx).map(Some)
    }
}

struct TcpAccept<'a>(&'a TcpListener, &'a mut nodelink_driver::Retry);

impl AcceptStream for TcpAccept<'_> {
    type Stream = TcpStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<TcpStream>> {
        // Passing failures are retried inside (nodelink_driver); what returns is fatal.
        self.1
            .poll_accept(self.0, cx)
            .map(|accepted| match accepted {
                Ok((stream, _peer)) => Ok(stream),
                Err(e) => Err(net_error("listen", "accept", e)),
            })
    }

    fn second_handle(stream: &TcpStream) -> Option<socket2::Socket> {
        socket2::SockRef::from(stream).try_clone().ok()
    }

    fn has_data(stream: &TcpStream) -> bool {
        let mut byte = [std::mem::MaybeUninit::new(0u8)];
        // The socket is non-blocking: no data is WouldBlock.
        socket2::SockRef::from(stream)
            .peek(&mut byte)
            .is_ok_and(|n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialled, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (dialled.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn keepalive_follows_the_config() {
        let (a, b) = pair().await;
        set_keepalive(&a, &Config::default());
        let sock = socket2::SockRef::from(&a);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(6)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        // Out-of-range idle times are brought within what the kernel accepts.
        set_keepalive(
            &a,
            &Config::default().with_tcp_keepalive(Duration::from_millis(10)),
        );
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(1));
        set_keepalive(
            &a,
            &Config::default().with_tcp_keepalive(Duration::from_secs(1 << 20)),
        );
        assert_eq!(
            sock.tcp_keepalive_time().unwrap(),
            Duration::from_secs(32_767)
        );

        set_keepalive(&b, &Config::default().with_tcp_keepalive(None));
        assert!(!socket2::SockRef::from(&b).keepalive().unwrap());
    }

    #[tokio::test]
    async fn dialled_sockets_get_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config::default().with_tcp_keepalive(Duration::from_secs(30));
        let stream = tcp_connect(addr, &config).await.unwrap();
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
        assert!(stream.nodelay().unwrap());
    }
}

//! TCP entry points: [`dial`], [`listen`] and the [`Listener`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::error::{connect_error, listen_error, net_error, Result};
use crate::handle::Link;
use crate::role::Role;

/// Handshakes in progress at once on a listener; more connections wait in the kernel's
/// backlog until one finishes (or times out).
pub(crate) const MAX_PENDING_HANDSHAKES: usize = 256;

/// Connects over TCP (with TCP_NODELAY) and returns a handshaked link in the client role.
///
/// ```no_run
/// # async fn demo() -> nodelink::Result<()> {
/// let link = nodelink::dial("127.0.0.1:5551", nodelink::Config::default()).await?;
/// # Ok(()) }
/// ```
pub async fn dial(addr: impl ToSocketAddrs, config: Config) -> Result<Link> {
    let stream = connect(addr).await?;
    link_over_tcp(stream, Role::Client, config).await
}

pub(crate) async fn connect(addr: impl ToSocketAddrs) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr).await.map_err(connect_error)?;
    stream.set_nodelay(true).map_err(connect_error)?;
    Ok(stream)
}

pub(crate) async fn link_over_tcp(stream: TcpStream, role: Role, config: Config) -> Result<Link> {
    let local = stream.local_addr().ok();
    let remote = stream.peer_addr().ok();
    let (r, w) = stream.into_split();
    Link::handshake_halves(Box::pin(r), Box::pin(w), role, config, local, remote).await
}

/// Binds a TCP listener whose [`Listener::accept`] returns handshaked links.
pub async fn listen(addr: impl ToSocketAddrs, config: Config) -> Result<Listener> {
    let tcp = TcpListener::bind(addr).await.map_err(listen_error)?;
    Ok(Listener::new(tcp, config, Acceptor::Plain))
}

pub(crate) enum Acceptor {
    Plain,
    #[cfg(feature = "tls")]
    Tls(tokio_rustls::TlsAcceptor),
}

/// Accepts links. Handshakes run concurrently, so a slow or silent client never delays the
/// others; failed handshakes are logged and skipped.
pub struct Listener {
    tcp: TcpListener,
    config: Config,
    acceptor: Arc<Acceptor>,
    handshakes: Handshakes,
}

impl Listener {
    pub(crate) fn new(tcp: TcpListener, config: Config, acceptor: Acceptor) -> Listener {
        Listener {
            tcp,
            config,
            acceptor: Arc::new(acceptor),
            handshakes: Handshakes::default(),
        }
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Handshakes that failed so far (timeouts, version mismatches, TLS errors).
    pub fn failed_handshakes(&self) -> u64 {
        self.handshakes.failed()
    }

    /// Waits for the next link whose handshake succeeded. Cancellation-safe.
    pub async fn accept(&mut self) -> Result<Link> {
        let Listener {
            tcp,
            config,
            acceptor,
            handshakes,
        } = self;
        let start = |stream: TcpStream| {
            let _ = stream.set_nodelay(true);
            let config = config.clone();
            let acceptor = acceptor.clone();
            async move {
                match &*acceptor {
                    Acceptor::Plain => link_over_tcp(stream, Role::Server, config).await,
                    #[cfg(feature = "tls")]
                    Acceptor::Tls(tls) => crate::tls_start::accept_tls(tls, stream, config).await,
                }
            }
        };
        handshakes.next(&mut TcpAccept(tcp), start).await
    }
}

/// Where a listener's incoming streams come from (see [`Handshakes::next`]).
pub(crate) trait AcceptStream {
    /// The stream type.
    type Stream;
    /// The next stream; `Ok(None)` after a transient failure (try again).
    fn accept(&mut self) -> impl std::future::Future<Output = Result<Option<Self::Stream>>> + '_;
}

struct TcpAccept<'a>(&'a TcpListener);

impl AcceptStream for TcpAccept<'_> {
    type Stream = TcpStream;

    async fn accept(&mut self) -> Result<Option<TcpStream>> {
        // Passing failures are retried inside (nodelink_accept); what returns is fatal.
        match nodelink_accept::accept(self.0).await {
            Ok((stream, _peer)) => Ok(Some(stream)),
            Err(e) => Err(net_error("listen", "accept", e)),
        }
    }
}

/// The accept loop every listener shares: handshakes of incoming streams run concurrently
/// (at most [`MAX_PENDING_HANDSHAKES`] at once; more streams wait in the transport's own
/// backlog), so a slow or silent client never delays the others; failed handshakes are
/// logged, counted and skipped.
#[derive(Default)]
pub(crate) struct Handshakes {
    pending: JoinSet<Result<Link>>,
    failed: u64,
}

impl Handshakes {
    /// Handshakes that failed so far.
    pub(crate) fn failed(&self) -> u64 {
        self.failed
    }

    #[cfg(feature = "kcp")]
    /// Handshakes in progress.
    pub(crate) fn in_progress(&self) -> usize {
        self.pending.len()
    }

    /// Returns the next handshaked link: streams come from `source`, and `start` turns
    /// one into a handshake. Cancellation-safe as long as the source's accept is.
    pub(crate) async fn next<A, S, SF>(&mut self, source: &mut A, mut start: S) -> Result<Link>
    where
        A: AcceptStream,
        S: FnMut(A::Stream) -> SF,
        SF: std::future::Future<Output = Result<Link>> + Send + 'static,
    {
        loop {
            tokio::select! {
                Some(done) = self.pending.join_next(), if !self.pending.is_empty() => {
                    match done {
                        Ok(Ok(link)) => return Ok(link),
                        Ok(Err(e)) => {
                            self.failed += 1;
                            tracing::warn!(error = %e, "incoming link failed its handshake");
                        }
                        Err(e) => {
                            self.failed += 1;
                            tracing::warn!(error = %e, "handshake task failed");
                        }
                    }
                }
                accepted = source.accept(), if self.pending.len() < MAX_PENDING_HANDSHAKES => {
                    if let Some(stream) = accepted? {
                        self.pending.spawn(start(stream));
                    }
                }
            }
        }
    }
}

//! [`Server`]: the `kcptun-server` end. Accepts KCP sessions, runs smux on each, and
//! forwards every stream to the TCP target (or a Unix socket, when the target has no port,
//! as kcptun allows).
//!
//! A target that refuses (or cannot be reached within [`DIAL_TIMEOUT`]) ends only that
//! stream: it is closed with a FIN, so the client's TCP connection sees an end of stream,
//! and the session's other streams go on.
//!
//! # Bounds
//!
//! Every forwarded stream costs a task, a target socket and buffers, and a peer that knows
//! the key can open streams as fast as it can send SYNs. So a server forwards at most
//! [`default_max_streams`] streams at once (4096, or fewer when the open-file limit
//! would not hold a target socket for each), over all its sessions together (change it
//! with [`Server::with_max_streams`]; kcptun has no such bound), and shares them between its
//! sessions: while `n` sessions are open, one session forwards at most `max_streams /
//! (n + 1)` streams (never fewer than [`MIN_SHARE`]), so a part of the bound is always
//! left for a client that comes next and one client opening streams without end cannot
//! refuse everyone else's (a client with several sessions, kcptun's `--conn N`, gets a
//! share per session). A stream beyond either bound is closed at
//! once with a FIN, before the target is dialled, and counted in
//! [`TunnelStats::streams_refused`](crate::TunnelStats::streams_refused); a warning names the
//! peer, within the server's budget of peer-caused warnings (`nodelink_driver::peer_warn!`,
//! which also covers targets that cannot be reached).
//!
//! # Closing
//!
//! With smux v1 a stream's connection to the target ends as soon as either side ends
//! (kcptun's rule); with v2 each direction is half-closed on its own. The crate
//! documentation's "Closing" section says why.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nodelink_driver::{peer_info, peer_warn, WarnLimiter};
use nodelink_kcp::{KcpListener, KcpStream};
use nodelink_smux::{MemoryBudget, Session, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::instrument::WithSubscriber;
use tracing::Instrument;

use crate::config::{normalize_addr, Checked, Config, Role};
use crate::mux::{open_session, pipe, Closing, Route};
use crate::{describe, Error, StatsHandle, TunnelStats, SHUTDOWN_GRACE, TASKS_WAIT};

/// How long dialling the target may take before the stream is given up.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The most streams a [`Server`] forwards at once by default (all sessions together):
/// see [`default_max_streams`].
pub const MAX_STREAMS: usize = 4096;

/// The stream bound of a server bound now without [`Server::with_max_streams`]:
/// [`MAX_STREAMS`], or the process's open-file limit less 64 descriptors kept for
/// everything else if that is lower (each stream holds a socket to the target: beyond
/// the limit, dialling it fails for every client, a well-behaved one included), and at
/// least [`MIN_SHARE`].
pub fn default_max_streams() -> usize {
    MAX_STREAMS
        .min(nodelink_driver::open_file_limit().saturating_sub(64))
        .max(MIN_SHARE)
}

/// The fewest streams a session may always forward, however many sessions share the bound
/// (the bound over all sessions still holds).
pub const MIN_SHARE: usize = 16;

/// The server end of a tunnel. Build it with [`Server::bind`], run it with [`Server::run`].
#[derive(Debug)]
pub struct Server {
    listener: KcpListener,
    config: Config,
    checked: Checked,
    stats: StatsHandle,
    max_streams: usize,
}

struct Shared {
    stats: StatsHandle,
    config: Config,
    checked: Checked,
    target: Target,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// One permit per stream being forwarded (or having its target dialled).
    permits: Arc<Semaphore>,
    max_streams: usize,
    /// Sessions being served now (for each one's share of the streams).
    sessions: std::sync::atomic::AtomicUsize,
    /// The budget of warnings this server's peers cause.
    warn_limit: WarnLimiter,
    /// What the smux sessions may hold together (half of `max_memory`).
    smux_budget: Arc<MemoryBudget>,
}

/// Where streams go.
enum Target {
    Tcp(String),
    #[cfg(unix)]
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => f.write_str(a),
            #[cfg(unix)]
            Target::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Target {
    fn parse(s: &str) -> Target {
        // kcptun: an address without a port is a Unix socket path.
        #[cfg(unix)]
        if !has_port(s) {
            return Target::Unix(s.into());
        }
        Target::Tcp(normalize_addr(s, false))
    }
}

fn has_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

impl Server {
    /// Checks `config` (its role must be [`Role::Server`]) and binds the UDP socket.
    ///
    /// # Errors
    ///
    /// an error of kind [`ErrorKind::Config`](crate::ErrorKind::Config) for an invalid configuration, of kind [`Io`](crate::ErrorKind::Io) when the address cannot
    /// be bound.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        if config.role != Role::Server {
            return Err(Error::config("a server needs a server configuration"));
        }
        let checked = config.validate()?;
        let addr = normalize_addr(&checked.listen, true);
        let listener = KcpListener::bind(&addr, checked.session.clone())
            .await
            .map_err(|e| Error::kcp(format!("cannot listen on {addr}"), e))?;
        Ok(Server {
            listener,
            config,
            checked,
            stats: StatsHandle::default(),
            max_streams: default_max_streams(),
        })
    }

    /// Sets how many streams the server forwards at once, over all sessions (default
    /// [`default_max_streams`]); streams beyond it are closed at once. At least 1.
    pub fn with_max_streams(mut self, max_streams: usize) -> Server {
        self.max_streams = max_streams.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// This end's counters now.
    pub fn stats(&self) -> TunnelStats {
        self.stats.stats()
    }

    /// Where the counters can be read while [`run`](Self::run) owns this end, and after
    /// it stopped.
    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// The UDP address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// Accepts sessions and forwards their streams until `stop` is cancelled, then stops
    /// accepting, closes every session and returns once the stream tasks finished (waiting
    /// at most a few seconds).
    ///
    /// # Errors
    ///
    /// Only if the UDP socket fails.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), Error> {
        let target = Target::parse(&self.checked.target);
        tracing::info!(
            "tunnel server listening on {} (KCP), target {target}: {}",
            self.local_addr(),
            describe(&self.config, &self.checked)
        );
        let smux_budget = Arc::new(MemoryBudget::new(
            "smux sessions",
            self.config.smux_memory(),
        ));
        let shared = Arc::new(Shared {
            target,
            config: self.config,
            checked: self.checked,
            stop: stop.clone(),
            tasks: TaskTracker::new(),
            stats: self.stats,
            permits: Arc::new(Semaphore::new(self.max_streams)),
            max_streams: self.max_streams,
            sessions: std::sync::atomic::AtomicUsize::new(0),
            warn_limit: WarnLimiter::new(),
            smux_budget,
        });
        if !shared.config.snmplog.is_empty() {
            let period = shared.config.snmpperiod;
            shared.tasks.spawn(
                crate::snmp::run_logger(shared.config.snmplog.clone(), period, stop.clone())
                    .with_current_subscriber(),
            );
        }
        let result = loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                r = self.listener.accept() => r,
            };
            match accepted {
                Ok((kcp, peer)) => {
                    shared.stats.session();
                    let sh = Arc::clone(&shared);
                    shared.tasks.spawn(
                        serve_session(sh, kcp, peer)
                            .instrument(tracing::info_span!("session", %peer))
                            .with_current_subscriber(),
                    );
                }
                Err(e) => break Err(Error::kcp("KCP listener failed", e)),
            }
        };
        drop(self.listener);
        shared.tasks.close();
        if tokio::time::timeout(TASKS_WAIT, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::debug!("some streams were still ending at shutdown");
        }
        result
    }
}

/// Runs smux on one KCP session and forwards its streams until it ends or the server stops.
async fn serve_session(shared: Arc<Shared>, kcp: KcpStream, peer: SocketAddr) {
    let local = kcp.local_addr();
    let session = match open_session(
        kcp,
        shared.config.nocomp,
        &shared.checked.smux,
        Role::Server,
        Some(&shared.smux_budget),
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "cannot start smux on the session from {peer}"
            );
            return;
        }
    };
    // A line per session, as kcptun writes, but within the warning budget: a flood of
    // forged sessions is summarised, not written out.
    peer_info!(
        shared.warn_limit,
        peer = %peer,
        %local,
        smux = shared.checked.smux.version,
        "smux session on a new KCP session"
    );
    let _counted = SessionCount::new(&shared);
    // This session's streams being forwarded.
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => break,
            r = session.accept() => r,
        };
        match accepted {
            Ok(_) if session.is_closed() => {
                // Streams left in the queue of a dead session: nobody would get the
                // answers back.
                tracing::debug!(
                    reason = ?session.close_reason(),
                    "session ended: its queued streams are dropped"
                );
                break;
            }
            Ok(stream) => {
                // Taken before anything is spent on the stream (task, target socket).
                let share = shared.fair_share();
                if held.load(std::sync::atomic::Ordering::Relaxed) >= share {
                    refuse(&shared, stream, peer, Some(share));
                    continue;
                }
                let Ok(permit) = Arc::clone(&shared.permits).try_acquire_owned() else {
                    refuse(&shared, stream, peer, None);
                    continue;
                };
                let permit = Place::new(permit, &held);
                let sh = Arc::clone(&shared);
                shared
                    .tasks
                    .spawn(forward(sh, stream, peer, permit).with_current_subscriber());
            }
            Err(e) => {
                tracing::debug!(error = &e as &dyn std::error::Error, "session ended");
                break;
            }
        }
    }
    close_session(&session).await;
}

/// Closes a stream over the bound: dropping it queues its FIN (after nothing) and makes
/// the session discard whatever the peer still sends on it, without waiting here.
/// `share` is set when the session reached its share rather than the server its bound.
fn refuse(shared: &Shared, stream: Stream, peer: SocketAddr, share: Option<usize>) {
    let sid = stream.id();
    // Counted before the stream goes (dropping it sends the FIN): whoever sees the stream
    // end must also see the count.
    shared.stats.stream_refused();
    drop(stream);
    match share {
        Some(share) => peer_warn!(
            shared.warn_limit,
            %peer,
            sid,
            share,
            sessions = shared.sessions.load(std::sync::atomic::Ordering::Relaxed),
            refused = shared.stats.stats().streams_refused,
            "refusing a new stream: this session forwards its share of the streams already"
        ),
        None => peer_warn!(
            shared.warn_limit,
            %peer,
            sid,
            open = shared.permits_in_use(),
            refused = shared.stats.stats().streams_refused,
            "refusing new streams: this server forwards at most this many at once"
        ),
    }
}

impl Shared {
    fn permits_in_use(&self) -> usize {
        self.max_streams - self.permits.available_permits()
    }

    /// How many streams one session may forward now (see the module docs, "Bounds").
    fn fair_share(&self) -> usize {
        let sessions = self.sessions.load(std::sync::atomic::Ordering::Relaxed);
        (self.max_streams / (sessions + 1))
            .max(MIN_SHARE)
            .min(self.max_streams)
    }
}

/// Counts a session among those sharing the bound while it is served.
struct SessionCount<'a>(&'a Shared);

impl<'a> SessionCount<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        SessionCount(shared)
    }
}

impl Drop for SessionCount<'_> {
    fn drop(&mut self) {
        self.0
            .sessions
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A stream's place under the bounds: the server's permit and one of its session's.
struct Place {
    _permit: OwnedSemaphorePermit,
    held: Arc<std::sync::atomic::AtomicUsize>,
}

impl Place {
    fn new(permit: OwnedSemaphorePermit, held: &Arc<std::sync::atomic::AtomicUsize>) -> Place {
        held.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Place {
            _permit: permit,
            held: Arc::clone(held),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.held.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn close_session(session: &Session) {
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, session.close()).await;
}

/// Dials the target for one stream and copies both ways.
///
/// `permit` is this stream's place under the server's bound. It is given back before the
/// end is counted, so whoever sees the count can open a new stream at once.
async fn forward(shared: Arc<Shared>, mut stream: Stream, peer: SocketAddr, permit: Place) {
    let inbound = format!("{peer}({})", stream.id());
    let dialled = tokio::time::timeout(DIAL_TIMEOUT, dial(&shared.target)).await;
    let mut target: Box<dyn Duplex> = match dialled {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            peer_warn!(
                shared.warn_limit,
                %peer,
                stream = %inbound,
                target = %shared.target,
                error = &e as &dyn std::error::Error,
                "cannot connect to the target: stream closed"
            );
            drop(permit);
            shared.stats.stream_failed();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, stream.shutdown()).await;
            return;
        }
        Err(_) => {
            peer_warn!(
                shared.warn_limit,
                %peer,
                stream = %inbound,
                target = %shared.target,
                timeout = ?DIAL_TIMEOUT,
                "connecting to the target timed out: stream closed"
            );
            drop(permit);
            shared.stats.stream_failed();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, stream.shutdown()).await;
            return;
        }
    };
    let route = Route {
        inbound,
        outbound: shared.target.to_string(),
        quiet: shared.config.quiet,
    };
    shared.stats.stream();
    route.opened();
    let closing = Closing::for_smux(shared.checked.smux.version);
    let result = pipe(&mut stream, &mut *target, closing).await;
    route.closed(&result);
    drop(permit);
    shared.stats.stream_closed();
}

async fn dial(target: &Target) -> std::io::Result<Box<dyn Duplex>> {
    match target {
        Target::Tcp(addr) => {
            let tcp = TcpStream::connect(addr.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp))
        }
        #[cfg(unix)]
        Target::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
    }
}

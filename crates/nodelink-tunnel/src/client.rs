//! [`Client`]: the `kcptun-client` end. Accepts TCP connections and carries each one as an
//! smux stream over one of `conn` KCP sessions to the server.
//!
//! # Sessions
//!
//! The client keeps `conn` session slots and hands accepted connections to them in turn
//! (round robin), as kcptun does. A slot is (re)filled lazily, when a connection is about
//! to use it and it is empty, its session died (KCP dead link, smux keepalive timeout,
//! the server went away), or it expired. With `autoexpire` set, a session takes new
//! streams for that many seconds only; an expired session is handed to the **scavenger**,
//! which closes it as soon as its last stream ends, or `scavengettl` seconds after it
//! expired, whichever comes first (kcptun waits for the TTL even when the session is idle).
//! These decisions are `core/pool.rs`'s; this file does the I/O.
//!
//! Each connection's stream is opened in the accept loop, before the connection's task
//! starts, so a session handed to the scavenger already counts every stream it was given.
//!
//! A connection ends as the crate documentation's "Closing" section says: with smux v1
//! as soon as either the TCP client or the stream ends, with v2 one direction at a time.
//!
//! Dialling cannot fail for network reasons (KCP has no handshake); a local failure (no
//! route, bad address) is retried every second, as kcptun does, while the accepted TCP
//! connection waits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nodelink_driver::{peer_warn, WarnLimiter};
use nodelink_kcp::KcpStream;
use nodelink_smux::{Session, Stream};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::instrument::WithSubscriber;
use tracing::Instrument;

use crate::config::{normalize_addr, Checked, Config, Role};
use crate::core::pool::{self, Pick, Pool, Refill, Scavenge};
use crate::mux::{open_session, pipe, Closing, Route};
use crate::{describe, Error, StatsHandle, TunnelStats, SHUTDOWN_GRACE, TASKS_WAIT};

/// How often a failed dial is retried, and how often the scavenger looks at its sessions.
const RETRY: Duration = Duration::from_secs(1);

/// The client end of a tunnel. Build it with [`Client::bind`], run it with [`Client::run`].
#[derive(Debug)]
pub struct Client {
    listener: TcpListener,
    local: SocketAddr,
    config: Config,
    checked: Checked,
    stats: StatsHandle,
}

struct Shared {
    stats: StatsHandle,
    /// The budget of warnings that connections cause (one per failed connection).
    warn_limit: WarnLimiter,
    config: Config,
    checked: Checked,
    remote: String,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Client {
    /// Checks `config` (its role must be [`Role::Client`]) and binds the TCP listener.
    ///
    /// # Errors
    ///
    /// an error of kind [`ErrorKind::Config`](crate::ErrorKind::Config) for an invalid configuration, of kind [`Io`](crate::ErrorKind::Io) when the address cannot
    /// be bound.
    pub async fn bind(config: Config) -> Result<Client, Error> {
        if config.role != Role::Client {
            return Err(Error::config("a client needs a client configuration"));
        }
        let checked = config.validate()?;
        let addr = normalize_addr(&checked.listen, true);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the listening address", e))?;
        Ok(Client {
            listener,
            local,
            config,
            checked,
            stats: StatsHandle::default(),
        })
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

    /// The TCP address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Accepts and forwards connections until `stop` is cancelled, then stops accepting,
    /// closes every session (which ends their streams) and returns once the stream tasks
    /// finished (waiting at most a few seconds).
    ///
    /// # Errors
    ///
    /// Only if the listener fails; per-connection problems are logged.
    pub async fn run(self, stop: CancellationToken) -> Result<(), Error> {
        let remote = normalize_addr(&self.checked.target, false);
        tracing::info!(
            "tunnel client listening on {} (TCP), server {remote} (KCP): {}",
            self.local,
            describe(&self.config, &self.checked)
        );
        let shared = Arc::new(Shared {
            remote,
            config: self.config,
            checked: self.checked,
            stop: stop.clone(),
            tasks: TaskTracker::new(),
            stats: self.stats,
            warn_limit: WarnLimiter::new(),
        });
        if !shared.config.snmplog.is_empty() {
            let period = shared.config.snmpperiod;
            shared.tasks.spawn(
                crate::snmp::run_logger(shared.config.snmplog.clone(), period, stop.clone())
                    .with_current_subscriber(),
            );
        }
        // Only this loop touches the slots: no lock needed.
        let autoexpire = Some(shared.config.autoexpire).filter(|d| !d.is_zero());
        let mut pool = Pool::new(
            usize::from(shared.config.conn),
            autoexpire,
            shared.config.scavengettl,
        );
        let result = loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                r = nodelink_driver::accept(&self.listener) => r,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => break Err(Error::io("TCP listener failed", e)),
            };
            let _ = tcp.set_nodelay(true);
            let idx = pool.next_slot();
            let stream = match open(&shared, &mut pool, idx, peer).await {
                Opened::Stream(s) => s,
                Opened::Failed => continue, // logged and counted; `tcp` is dropped
                Opened::Stopped => break Ok(()),
            };
            let sh = Arc::clone(&shared);
            shared
                .tasks
                .spawn(forward(sh, stream, tcp, peer).with_current_subscriber());
        };
        drop(self.listener);
        // Each session closes gracefully (bounded by smux's linger); all at once.
        let mut closing = tokio::task::JoinSet::new();
        for session in pool.drain() {
            closing.spawn(async move {
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, session.close()).await;
            });
        }
        while closing.join_next().await.is_some() {}
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

/// What [`open`] came back with.
enum Opened {
    Stream(Stream),
    /// No stream could be opened; the connection is to be dropped.
    Failed,
    /// The client was stopped while dialling.
    Stopped,
}

/// Opens the stream for a connection from `peer` on the session of slot `idx`.
///
/// The stream is opened here, in the accept loop, before the connection's task is
/// spawned, and never inside that task: the scavenger closes an expired session as soon
/// as it counts no streams, and it is started by a *later* pass of this loop (the
/// connection that finds the slot expired). Opening first means the session already
/// counts this connection's stream when any scavenger for it can run, whatever order the
/// runtime then runs the tasks in. Opening a stream does not wait on the network (it
/// queues a SYN), so the loop is not held up.
async fn open(
    shared: &Arc<Shared>,
    pool: &mut Pool<Session>,
    idx: usize,
    peer: SocketAddr,
) -> Opened {
    // A session can die between the check in `session_for` and here; one redial is
    // worth it before the connection is given up.
    for _ in 0..2 {
        let Some(session) = session_for(shared, pool, idx).await else {
            return Opened::Stopped;
        };
        match session.open().await {
            Ok(stream) => return Opened::Stream(stream),
            Err(e)
                if session.is_closed() || e.kind() == nodelink_smux::ErrorKind::SessionClosed =>
            {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "session {idx} died before a stream opened"
                );
                // Whatever `is_closed` says at this instant, this session is done: make
                // the next pass dial a new one.
                pool.forget(idx);
            }
            Err(e) => {
                // The session cannot take more streams (its ids are used up): the next
                // connection on this slot gets a new one, and the scavenger closes this
                // one when its streams have ended.
                if let Some((old, deadline)) = pool.retire(idx, Instant::now()) {
                    retire(shared, idx, old, deadline);
                }
                peer_warn!(
                    shared.warn_limit,
                    %peer,
                    slot = idx,
                    error = &e as &dyn std::error::Error,
                    "cannot open a stream: connection dropped"
                );
                shared.stats.stream_failed();
                return Opened::Failed;
            }
        }
    }
    peer_warn!(
        shared.warn_limit,
        %peer,
        slot = idx,
        "cannot open a stream: the session keeps dying; connection dropped"
    );
    shared.stats.stream_failed();
    Opened::Failed
}

/// The session of slot `idx`, dialled anew if the slot is empty, dead or expired (the
/// pool decides, `core/pool.rs`). `None` when the client was stopped while dialling.
async fn session_for(
    shared: &Arc<Shared>,
    pool: &mut Pool<Session>,
    idx: usize,
) -> Option<Session> {
    match pool.pick(idx, Instant::now(), Session::is_closed) {
        Pick::Use(session) => return Some(session),
        Pick::Dial(Refill::Empty) => {}
        Pick::Dial(Refill::Died(old)) => {
            tracing::info!(
                slot = idx,
                peer = %shared.remote,
                reason = ?old.close_reason(),
                "session ended; dialling a new one"
            );
        }
        Pick::Dial(Refill::Expired { session, deadline }) => {
            tracing::info!(slot = idx, peer = %shared.remote, "session expired; dialling a new one");
            retire(shared, idx, session, deadline);
        }
    }
    let session = dial(shared).await?;
    pool.fill(idx, session.clone(), Instant::now());
    Some(session)
}

/// Dials a KCP session and starts smux on it, retrying every second on local failures.
async fn dial(shared: &Shared) -> Option<Session> {
    loop {
        let attempt = async {
            let kcp = KcpStream::connect(shared.remote.as_str(), shared.checked.session.clone())
                .await
                .map_err(|e| Error::kcp(format!("cannot dial {}", shared.remote), e))?;
            let (local, peer) = (kcp.local_addr(), kcp.peer_addr());
            // The session's tasks log within this span: the server it goes to.
            let span = tracing::info_span!("session", peer = %shared.remote);
            let session = span.in_scope(|| {
                open_session(
                    kcp,
                    shared.config.nocomp,
                    &shared.checked.smux,
                    Role::Client,
                    None,
                )
            })?;
            tracing::info!(
                "smux version {} on KCP session {local} -> {peer}",
                shared.checked.smux.version
            );
            Ok::<_, Error>(session)
        };
        match attempt.await {
            Ok(s) => {
                shared.stats.session();
                return Some(s);
            }
            Err(e) => tracing::warn!(error = &e as &dyn std::error::Error, "re-connecting in 1 s"),
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return None,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Hands the session of slot `idx` to a scavenger that closes it by `deadline`.
fn retire(shared: &Shared, idx: usize, session: Session, deadline: Instant) {
    let span = tracing::info_span!("scavenger", slot = idx, peer = %shared.remote);
    shared.tasks.spawn(
        scavenge(session, deadline, shared.stop.clone())
            .instrument(span)
            .with_current_subscriber(),
    );
}

/// Closes an expired session once its last stream ended, or at `deadline`.
async fn scavenge(session: Session, deadline: Instant, stop: CancellationToken) {
    loop {
        let now = Instant::now();
        match pool::scavenge(session.is_closed(), session.num_streams(), now, deadline) {
            Scavenge::Ended => {
                tracing::info!("scavenger: expired session closed normally");
                return;
            }
            Scavenge::Idle => {
                tracing::info!("scavenger: expired session closed after its last stream");
                break;
            }
            Scavenge::TimeUp => {
                tracing::info!("scavenger: expired session closed at its TTL");
                break;
            }
            Scavenge::Wait => {}
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, session.close()).await;
}

/// Forwards one accepted TCP connection over its (already opened) stream.
async fn forward(shared: Arc<Shared>, mut stream: Stream, mut tcp: TcpStream, peer: SocketAddr) {
    let route = Route {
        inbound: peer.to_string(),
        outbound: format!("{}({})", shared.remote, stream.id()),
        quiet: shared.config.quiet,
    };
    shared.stats.stream();
    route.opened();
    let closing = Closing::for_smux(shared.checked.smux.version);
    let result = pipe(&mut tcp, &mut stream, closing).await;
    route.closed(&result);
    shared.stats.stream_closed();
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;

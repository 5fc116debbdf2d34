//! [`KcpListener`]: one UDP socket, many sessions, kcp-go's demultiplexing rules.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use nodelink_driver::{peer_warn, Holding, MemoryBudget, WarnLimiter};
use tokio::net::{ToSocketAddrs, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use super::budget::{session_budget, REPORT_STEP};
use super::driver::NetSide;
use super::stream::{random_conv, resolve, KcpStream};
use super::udp::{loses_datagrams_only, RecvBatch, Udp};
use super::{count_open, GLOBAL};
use crate::core::segment::{segments, Command};
use crate::crypt::DatagramCrypto;
use crate::fec::{is_fec, FEC_DATA_HEADER_SIZE, TYPE_DATA};
use crate::pipeline::{AtomicStats, Config, Pipeline, Stats};
use crate::{Error, ErrorKind, Result};

/// Datagrams queued towards one session's driver before further ones are dropped.
const SESSION_QUEUE: usize = 1024;

/// Accepts KCP sessions on one UDP socket, like kcp-go's `Listener`.
///
/// Sessions are keyed by the remote address. A new session is created from the first
/// data or plain datagram carrying a well-formed KCP segment, never from an FEC parity
/// packet; another conv from a known address replaces its session only if the first
/// segment's `sn` is 0 (the peer restarted), otherwise the datagram is dropped. While
/// [`backlog`](Config::backlog) sessions wait in [`accept`](Self::accept), new
/// sessions are refused (their datagrams dropped, counted as `InErrs`). Garbage and
/// datagrams failing the checksum are dropped and counted ([`stats`](Self::stats)).
///
/// Admission: UDP source addresses are free to forge, so a session is cheap to create
/// and must prove itself. At most [`max_sessions`](Config::max_sessions) live at once, and
/// [`max_sessions_per_ip`](Config::max_sessions_per_ip) per IP address; past either, the
/// oldest session that received a single datagram so far is evicted to make room (a
/// flood of one forged datagram per source churns among itself; a forger that sends two
/// per source is held by the per-address bound, and its sessions end with their protocol's
/// timeouts), and if every session has proven itself the new one
/// is refused (counted as `InErrs`). New sessions are also created at most
/// [`session_rate`](Config::session_rate) a second, so a flood of forged first datagrams
/// costs bounded work; running sessions are never affected. Evicted sessions end with
/// [`ErrorKind::Reset`].
/// Both are logged within the listener's warning budget; [`sessions`](Self::sessions)
/// is the gauge.
///
/// Dropping the listener stops accepting; sessions already accepted keep working, and
/// the socket is closed once the last of them ends.
///
/// Also a [`Stream`](futures_core::Stream) of accepted sessions: the error that ends the
/// listener is yielded once, then the stream ends.
#[derive(Debug)]
pub struct KcpListener {
    accept_rx: mpsc::Receiver<(KcpStream, SocketAddr)>,
    /// The stream of sessions has yielded its final error.
    ended: bool,
    local: SocketAddr,
    stats: Arc<AtomicStats>,
    /// Why the demultiplexer stopped, when its socket failed.
    failure: Arc<OnceLock<Arc<io::Error>>>,
    /// Sessions alive now (a gauge kept by the demultiplexer).
    live: Arc<AtomicUsize>,
    /// Requests for outgoing sessions on this socket ([`KcpListener::connect`]).
    open_tx: mpsc::Sender<OpenRequest>,
    /// What the sessions hold unread (`budget.rs`).
    budget: Arc<MemoryBudget>,
}

/// An outgoing session to open on the listener's socket, and where to answer.
struct OpenRequest {
    peer: SocketAddr,
    reply: oneshot::Sender<Result<KcpStream>>,
}

struct Route {
    conv: u32,
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    /// A second datagram came from the peer: not a forged one-shot.
    proven: bool,
    /// We opened it ([`KcpListener::connect`]): a datagram with another conversation id
    /// never replaces it.
    outgoing: bool,
    /// What the session holds unread, published by it (`budget.rs`).
    holding: Arc<Holding>,
    /// When its first datagram came.
    created: tokio::time::Instant,
}

struct Demux {
    /// The budget of warnings the peers of this listener cause.
    warn_limit: WarnLimiter,
    /// What the sessions may hold unread together (`budget.rs`).
    budget: Arc<MemoryBudget>,
    sock: Arc<Udp>,
    cfg: Config,
    crypto: Arc<DatagramCrypto>,
    local: SocketAddr,
    routes: HashMap<SocketAddr, Route>,
    accept_tx: mpsc::Sender<(KcpStream, SocketAddr)>,
    gone_tx: mpsc::UnboundedSender<(SocketAddr, u64)>,
    next_id: u64,
    stats: Arc<AtomicStats>,
    failure: Arc<OnceLock<Arc<io::Error>>>,
    /// Sessions per IP address.
    per_ip: HashMap<IpAddr, usize>,
    /// Sessions not proven yet, oldest first (entries of sessions gone or proven since are
    /// skipped when met).
    unproven: VecDeque<(SocketAddr, u64)>,
    /// Sessions alive and not proven yet.
    unproven_live: usize,
    /// When to look next for sessions that did not prove themselves during a flood.
    next_reap: tokio::time::Instant,
    live: Arc<AtomicUsize>,
    /// New sessions allowed now ([`Config::session_rate`]).
    creation: TokenBucket,
}

/// Sessions alive with only their first datagram past which each new one is logged
/// (within the listener's warning budget).
const UNPROVEN_WARN: usize = 256;

/// During a flood, how long a session has to send its second datagram (`reap_unproven`).
/// A real client's second datagram (an ACK of our answer, or its next segment) comes
/// within a round trip and an interval.
const FLOOD_PROOF_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// How often the listener looks for such sessions while a flood lasts.
const REAP_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A token bucket: `rate` tokens a second, at most `rate` kept.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Option<tokio::time::Instant>,
}

impl TokenBucket {
    fn new(rate: u32) -> TokenBucket {
        let rate = f64::from(rate.max(1));
        TokenBucket {
            rate,
            tokens: rate,
            last: None,
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: tokio::time::Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.rate);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl KcpListener {
    /// Binds a UDP socket and starts the demultiplexer. Derives the key once for all
    /// sessions.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the UDP socket cannot be bound; [`ErrorKind::Config`] for a
    /// bad configuration.
    pub async fn bind(addr: impl ToSocketAddrs, cfg: Config) -> Result<KcpListener> {
        let cannot_bind = |e| Error::io("cannot bind the KCP listener's UDP socket", e);
        let sock = UdpSocket::bind(addr).await.map_err(cannot_bind)?;
        KcpListener::from_socket(sock, cfg)
    }

    /// Serves KCP sessions on a UDP socket the caller already owns, as kcp-go's
    /// `ServeConn`: a socket bound with options of the caller's choosing, or one whose
    /// port a NAT already maps. The listener takes the socket over: every datagram it
    /// receives is demultiplexed as described above. [`connect`](Self::connect) opens
    /// outgoing sessions on the same socket, so one port can both serve and dial.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the socket has no local address; [`ErrorKind::Config`] for
    /// a bad configuration.
    pub fn from_socket(sock: UdpSocket, cfg: Config) -> Result<KcpListener> {
        // Validate once up front (conv 1 is arbitrary).
        let crypto = Arc::new(cfg.crypto()?);
        Pipeline::with_crypto(1, &cfg, Arc::clone(&crypto))?;
        cfg.apply_socket_options(&sock);
        let local = sock
            .local_addr()
            .map_err(|e| Error::io("the KCP listener's UDP socket has no local address", e))?;
        let sock = Arc::new(Udp::new(sock));
        let (accept_tx, accept_rx) = mpsc::channel(cfg.backlog.max(1));
        let (gone_tx, gone_rx) = mpsc::unbounded_channel();
        let (open_tx, open_rx) = mpsc::channel(16);
        let stats = Arc::new(AtomicStats::new());
        let failure = Arc::new(OnceLock::new());
        let live = Arc::new(AtomicUsize::new(0));
        let budget = session_budget(cfg.max_memory);
        let demux = Demux {
            budget: Arc::clone(&budget),
            creation: TokenBucket::new(cfg.session_rate),
            per_ip: HashMap::new(),
            unproven: VecDeque::new(),
            unproven_live: 0,
            next_reap: tokio::time::Instant::now(),
            live: Arc::clone(&live),
            sock,
            cfg,
            crypto,
            local,
            routes: HashMap::new(),
            warn_limit: WarnLimiter::new(),
            accept_tx,
            gone_tx,
            next_id: 0,
            stats: Arc::clone(&stats),
            failure: Arc::clone(&failure),
        };
        tokio::spawn(demux.run(gone_rx, open_rx));
        Ok(KcpListener {
            accept_rx,
            ended: false,
            local,
            stats,
            failure,
            live,
            open_tx,
            budget,
        })
    }

    /// Opens an outgoing session to `addr` on this listener's socket (from its local
    /// address), with a random conversation id: one UDP port both serves and dials, as a
    /// peer behind a NAT needs. Datagrams from `addr` then go to this session, not to a
    /// new accepted one; while it lives, datagrams from `addr` under another conversation
    /// id are dropped (counted in `InErrs`), never taken for a restarted peer. On a
    /// dual-stack IPv6 socket an IPv4 `addr` is dialled as its IPv4-mapped form, which is
    /// how the socket reports the peer's answers (and the stream's
    /// [`peer_addr`](KcpStream::peer_addr)).
    ///
    /// The session counts among the listener's [`sessions`](Self::sessions), and toward
    /// `max_sessions` and `max_sessions_per_ip` when later sessions are admitted, but is
    /// never refused or evicted by them; `ActiveOpens` in [`stats`](Self::stats) counts it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when `addr` does not resolve, is IPv6 while the socket is IPv4
    /// (`InvalidInput`), already has a session on this socket (`AddrInUse`), or when the
    /// listener's socket failed; [`ErrorKind::Config`] if the session cannot be built.
    pub async fn connect(&self, addr: impl ToSocketAddrs) -> Result<KcpStream> {
        let peer = resolve(addr).await?;
        let (reply, answer) = oneshot::channel();
        let stopped = || match self.failure.get() {
            Some(e) => Error::io_shared("the KCP listener's UDP socket failed", e.clone()),
            None => Error::fixed(ErrorKind::Closed, "the KCP listener stopped"),
        };
        self.open_tx
            .send(OpenRequest { peer, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Waits for the next session.
    ///
    /// # Errors
    ///
    /// Only if the demultiplexer stopped (its socket failed).
    pub async fn accept(&mut self) -> Result<(KcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// The polling form of [`accept`](KcpListener::accept).
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<(KcpStream, SocketAddr)>> {
        self.accept_rx.poll_recv(cx).map(|accepted| {
            accepted.ok_or_else(|| match self.failure.get() {
                Some(e) => Error::io_shared("the KCP listener's UDP socket failed", e.clone()),
                None => Error::fixed(ErrorKind::Closed, "the KCP listener stopped"),
            })
        })
    }

    /// The local socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Bytes its sessions hold now, both ways (received and unread, queued or
    /// unacknowledged to send), whole segments counted (a gauge; bounded by
    /// [`Config::max_memory`] as its docs say).
    pub fn memory_held(&self) -> usize {
        self.budget.used()
    }

    /// Sessions of this listener alive now, accepted or not (a gauge).
    pub fn sessions(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The listener's own counters: datagrams received and dropped before reaching any
    /// session (`InPkts`/`InBytes` of those, `InErrs`, `InCsumErrors`), `PassiveOpens`
    /// (sessions accepted) and `ActiveOpens` (sessions [`connect`](Self::connect)ed).
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }
}

impl futures_core::Stream for KcpListener {
    type Item = Result<(KcpStream, SocketAddr)>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = self.poll_accept(cx);
        if let Poll::Ready(Err(_)) = &polled {
            self.ended = true;
        }
        polled.map(Some)
    }
}

/// `peer` written as a socket bound to `local` reports the sources of datagrams, so that
/// the peer's answers find its route: an IPv4 peer of a dual-stack IPv6 socket is an
/// IPv4-mapped IPv6 address there, and an IPv4-mapped peer of an IPv4 socket plain IPv4.
/// An IPv6 peer cannot be reached from an IPv4 socket.
fn source_form(local: SocketAddr, peer: SocketAddr) -> Result<SocketAddr> {
    match (local, peer) {
        (SocketAddr::V6(_), SocketAddr::V4(p)) => {
            Ok(SocketAddr::new(p.ip().to_ipv6_mapped().into(), p.port()))
        }
        (SocketAddr::V4(_), SocketAddr::V6(p)) => match p.ip().to_ipv4_mapped() {
            Some(v4) => Ok(SocketAddr::new(v4.into(), p.port())),
            None => Err(Error::io(
                format!("cannot dial the IPv6 address {peer} from the IPv4 socket {local}"),
                io::Error::from(io::ErrorKind::InvalidInput),
            )),
        },
        _ => Ok(peer),
    }
}

/// Whether a datagram may carry data for its session: a PUSH segment (or a malformed
/// one), or an FEC parity shard that could rebuild one. A session over its share of the
/// budget is refused these; acknowledgements and window messages still pass, since they
/// are how what it holds to send drains.
pub(super) fn carries_data(payload: &[u8]) -> bool {
    let kcp = if is_fec(payload) {
        let ty = u16::from_le_bytes([payload[4], payload[5]]);
        match payload.get(FEC_DATA_HEADER_SIZE..) {
            Some(kcp) if ty == TYPE_DATA => kcp,
            _ => return true,
        }
    } else {
        payload
    };
    segments(kcp).any(|s| s.map_or(true, |(hdr, _)| hdr.cmd == Command::Push))
}

/// What the first segment of a datagram says, if it is a data or plain packet.
fn classify(payload: &[u8]) -> Option<(u32, u32)> {
    let kcp = if is_fec(payload) {
        let ty = u16::from_le_bytes([payload[4], payload[5]]);
        if ty != TYPE_DATA {
            return None;
        }
        payload.get(FEC_DATA_HEADER_SIZE..)?
    } else {
        payload
    };
    // The first segment must be well formed (known command, length within bounds).
    let (hdr, _) = segments(kcp).next()?.ok()?;
    Some((hdr.conv, hdr.sn))
}

impl Demux {
    fn drop_datagram(&self, len: usize, err: Option<bool>) {
        let d = Stats {
            in_pkts: 1,
            in_bytes: len as u64,
            in_errs: u64::from(err == Some(false)),
            in_csum_errors: u64::from(err == Some(true)),
            ..Stats::default()
        };
        self.stats.add(&d);
        GLOBAL.add(&d);
    }

    async fn run(
        mut self,
        mut gone_rx: mpsc::UnboundedReceiver<(SocketAddr, u64)>,
        mut open_rx: mpsc::Receiver<OpenRequest>,
    ) {
        let mut batch = RecvBatch::new();
        let mut listener_open = true;
        loop {
            let accept_tx = self.accept_tx.clone();
            tokio::select! {
                r = self.sock.recv(&mut batch) => match r {
                    Ok(()) => {
                        batch.for_each(|from, d| self.on_datagram(d, from, listener_open));
                    }
                    Err(e) if loses_datagrams_only(&e) => {}
                    Err(e) => {
                        tracing::warn!(
                            local = %self.local,
                            error = &e as &dyn std::error::Error,
                            "KCP listener socket failed: no more sessions"
                        );
                        let _ = self.failure.set(Arc::new(e));
                        break;
                    }
                },
                Some((addr, id)) = gone_rx.recv() => {
                    if self.routes.get(&addr).is_some_and(|r| r.id == id) {
                        self.remove_route(addr);
                    }
                }
                Some(request) = open_rx.recv() => {
                    let opened = self.open(request.peer);
                    let _ = request.reply.send(opened);
                }
                _ = accept_tx.closed(), if listener_open => listener_open = false,
                _ = tokio::time::sleep_until(self.next_reap), if self.unproven_live > UNPROVEN_WARN => {
                    let now = tokio::time::Instant::now();
                    self.reap_unproven(now);
                    self.next_reap = now + REAP_EVERY;
                }
            }
            if !listener_open && self.routes.is_empty() {
                break;
            }
        }
    }

    fn on_datagram(&mut self, datagram: &mut [u8], from: SocketAddr, listener_open: bool) {
        let len = datagram.len();
        let payload = match self.crypto.open(datagram) {
            Ok(p) => p,
            Err(e) if e.kind() == ErrorKind::Checksum => {
                peer_warn!(
                    self.warn_limit,
                    peer = %from,
                    local = %self.local,
                    "datagram fails authentication (bad checksum after decryption): wrong key \
                     or cipher? Dropped"
                );
                return self.drop_datagram(len, Some(true));
            }
            Err(_) => return self.drop_datagram(len, Some(false)),
        };
        let first = classify(payload);

        if let Some(route) = self.routes.get(&from) {
            match first {
                Some((conv, sn)) if conv != route.conv => {
                    // An accepted session whose peer starts afresh (sn 0 under a new
                    // conversation id) has restarted: dropping the route resets the old
                    // session. A session we dialled is ours to end: anyone could forge
                    // such a datagram from the address we dialled.
                    if sn != 0 || route.outgoing {
                        return self.drop_datagram(len, Some(false));
                    }
                    self.remove_route(from);
                }
                _ if self.budget.over(route.holding.held(), 0) && carries_data(payload) => {
                    peer_warn!(
                        self.warn_limit,
                        peer = %from,
                        local = %self.local,
                        held = route.holding.held(),
                        budget = self.budget.limit(),
                        used = self.budget.used(),
                        "KCP memory budget (max_memory) reached: datagrams carrying data for a \
                         session holding more than its share (unread, or unacknowledged to \
                         send) are dropped until its application reads and its peer \
                         acknowledges (acknowledgements still pass)"
                    );
                    return self.drop_datagram(len, Some(false));
                }
                _ => match route.tx.try_send(payload.to_vec()) {
                    Ok(()) => {
                        if let Some(route) = self.routes.get_mut(&from) {
                            if !route.proven {
                                route.proven = true;
                                self.unproven_live -= 1;
                            }
                        }
                        return;
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        return self.drop_datagram(len, None);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        self.remove_route(from);
                    }
                },
            }
        }

        let Some((conv, _)) = first else {
            // Parity or garbage from an unknown address: no session from this.
            return self.drop_datagram(len, Some(false));
        };
        if !listener_open {
            return self.drop_datagram(len, None);
        }
        let Ok(permit) = self.accept_tx.clone().try_reserve_owned() else {
            // Backlog full: refuse.
            peer_warn!(
                self.warn_limit,
                peer = %from,
                local = %self.local,
                "new KCP session refused: the accept backlog is full (the application is not \
                 accepting)"
            );
            return self.drop_datagram(len, Some(false));
        };
        // A flood of would-be sessions costs a bounded amount of work a second.
        if !self.creation.take(tokio::time::Instant::now()) {
            peer_warn!(
                self.warn_limit,
                peer = %from,
                local = %self.local,
                rate = self.cfg.session_rate,
                "new KCP session refused: sessions are being created faster than session_rate \
                 a second (a flood of forged first datagrams?)"
            );
            return self.drop_datagram(len, Some(false));
        }
        // After the backlog check: a refused session must not cost another its place.
        if !self.make_room(from) {
            return self.drop_datagram(len, Some(false));
        }
        let pipe = match Pipeline::with_crypto(conv, &self.cfg, Arc::clone(&self.crypto)) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(
                    peer = %from,
                    error = &e as &dyn std::error::Error,
                    "KCP listener: cannot create a session"
                );
                return self.drop_datagram(len, Some(false));
            }
        };
        let (stream, tx, id) = self.start_session(pipe, from, conv, false);
        // The channel is new: this cannot be full.
        let _ = tx.try_send(payload.to_vec());
        if self.unproven_live > UNPROVEN_WARN {
            // No limit may be reached (sources spread over many addresses, under the
            // creation rate), but the operator should hear of such a flood.
            peer_warn!(
                self.warn_limit,
                peer = %from,
                local = %self.local,
                unproven = self.unproven_live,
                sessions = self.routes.len(),
                "many KCP sessions have received only their first datagram (a flood of forged \
                 source addresses?); they are evicted first when a session limit is reached, \
                 and those that send nothing more for 2 s are ended while the flood lasts"
            );
        }
        self.unproven.push_back((from, id));
        if self.unproven.len() > 4 * self.cfg.max_sessions {
            // Keep the queue in proportion: drop entries of sessions gone or proven.
            let routes = &self.routes;
            self.unproven
                .retain(|(addr, id)| routes.get(addr).is_some_and(|r| r.id == *id && !r.proven));
        }
        permit.send((stream, from));
    }

    /// Spawns a session with `peer` on the listener's socket and routes `peer`'s
    /// datagrams to it. `outgoing`: we opened it ([`KcpListener::connect`]), so it has
    /// nothing to prove. Returns the stream, the sender of its datagram queue and its id.
    fn start_session(
        &mut self,
        pipe: Pipeline,
        peer: SocketAddr,
        conv: u32,
        outgoing: bool,
    ) -> (KcpStream, mpsc::Sender<Vec<u8>>, u64) {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let id = self.next_id;
        self.next_id += 1;
        let sock = Arc::clone(&self.sock);
        let gone = self.gone_tx.clone();
        let holding = Arc::new(self.budget.join(REPORT_STEP));
        let published = Arc::clone(&holding);
        let stream = KcpStream::spawn(pipe, self.cfg.clone(), self.local, peer, |shared| {
            let _ = shared.holding.set(published);
            NetSide::Server {
                sock,
                peer,
                rx,
                gone,
                id,
            }
        });
        count_open(outgoing);
        let opens = if outgoing {
            &self.stats.active_opens
        } else {
            &self.stats.passive_opens
        };
        opens.fetch_add(1, Ordering::Relaxed);
        if !outgoing {
            self.unproven_live += 1;
        }
        self.routes.insert(
            peer,
            Route {
                conv,
                id,
                tx: tx.clone(),
                proven: outgoing,
                outgoing,
                holding,
                created: tokio::time::Instant::now(),
            },
        );
        *self.per_ip.entry(peer.ip()).or_default() += 1;
        self.live.store(self.routes.len(), Ordering::Relaxed);
        (stream, tx, id)
    }

    /// Opens an outgoing session to `peer` ([`KcpListener::connect`]).
    fn open(&mut self, peer: SocketAddr) -> Result<KcpStream> {
        let peer = source_form(self.local, peer)?;
        if self.routes.contains_key(&peer) {
            return Err(Error::io(
                format!("a KCP session with {peer} already exists on this socket"),
                io::Error::from(io::ErrorKind::AddrInUse),
            ));
        }
        let conv = random_conv();
        let pipe = Pipeline::with_crypto(conv, &self.cfg, Arc::clone(&self.crypto))?;
        let (stream, _, _) = self.start_session(pipe, peer, conv, true);
        Ok(stream)
    }

    /// Forgets the session of `addr`: its driver sees its channel close and ends.
    fn remove_route(&mut self, addr: SocketAddr) {
        let Some(route) = self.routes.remove(&addr) else {
            return;
        };
        if !route.proven {
            self.unproven_live -= 1;
        }
        if let std::collections::hash_map::Entry::Occupied(mut n) = self.per_ip.entry(addr.ip()) {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
        self.live.store(self.routes.len(), Ordering::Relaxed);
    }

    /// Makes room for a new session from `from` within the session limits, evicting the
    /// oldest unproven session (of that IP address when its own limit is the one reached).
    /// False when every candidate has proven itself: the new session is refused.
    fn make_room(&mut self, from: SocketAddr) -> bool {
        let ip_full =
            self.per_ip.get(&from.ip()).copied().unwrap_or(0) >= self.cfg.max_sessions_per_ip;
        let all_full = self.routes.len() >= self.cfg.max_sessions;
        if !ip_full && !all_full {
            return true;
        }
        let victim = self.oldest_unproven(ip_full.then(|| from.ip()));
        match victim {
            Some(addr) => {
                self.remove_route(addr);
                peer_warn!(
                    self.warn_limit,
                    peer = %from,
                    local = %self.local,
                    evicted = %addr,
                    sessions = self.routes.len(),
                    "KCP session limit reached: evicted the oldest session that sent only one \
                     datagram (a forged source address?)"
                );
                true
            }
            None => {
                peer_warn!(
                    self.warn_limit,
                    peer = %from,
                    local = %self.local,
                    per_ip = ip_full,
                    "new KCP session refused: the session limit is reached and every session \
                     is in use (raise max_sessions or max_sessions_per_ip if this is normal load)"
                );
                false
            }
        }
    }

    /// During a flood (more than [`UNPROVEN_WARN`] sessions that received a single
    /// datagram), ends those of them older than [`FLOOD_PROOF_TIME`], oldest first, until
    /// the flood's bound is reached: forged sessions then cost memory for two seconds, not
    /// until their dead-peer timeout.
    fn reap_unproven(&mut self, now: tokio::time::Instant) {
        let mut ended = 0usize;
        while self.unproven_live > UNPROVEN_WARN {
            let Some(&(addr, id)) = self.unproven.front() else {
                break;
            };
            match self.routes.get(&addr) {
                Some(r) if r.id == id && !r.proven => {
                    if now.saturating_duration_since(r.created) < FLOOD_PROOF_TIME {
                        break;
                    }
                    self.remove_route(addr);
                    ended += 1;
                }
                // Gone or proven since.
                _ => {}
            }
            self.unproven.pop_front();
        }
        if ended > 0 {
            peer_warn!(
                self.warn_limit,
                local = %self.local,
                ended,
                unproven = self.unproven_live,
                "KCP sessions that received a single datagram and nothing more in 2 s were \
                 ended (a flood of forged source addresses?)"
            );
        }
    }

    /// The oldest session that received a single datagram so far, from `ip` if given.
    /// Entries of sessions that are gone or proven are discarded on the way (when they
    /// are at the front) or skipped.
    fn oldest_unproven(&mut self, ip: Option<IpAddr>) -> Option<SocketAddr> {
        let is_candidate = |routes: &HashMap<SocketAddr, Route>, (addr, id): (SocketAddr, u64)| {
            routes.get(&addr).is_some_and(|r| r.id == id && !r.proven)
        };
        while let Some(&front) = self.unproven.front() {
            if is_candidate(&self.routes, front) {
                break;
            }
            self.unproven.pop_front();
        }
        let position = self
            .unproven
            .iter()
            .position(|&e| is_candidate(&self.routes, e) && ip.is_none_or(|ip| e.0.ip() == ip))?;
        self.unproven.remove(position).map(|(addr, _)| addr)
    }
}

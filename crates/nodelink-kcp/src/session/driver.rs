//! The per-session driver task and the state it shares with [`super::KcpStream`].

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep_until, Instant};

/// How long an idle session sleeps when nothing can happen without a datagram or the
/// application (effectively forever; a bound keeps the arithmetic far from overflow).
const IDLE_SLEEP: Duration = Duration::from_secs(3600);

use super::udp::{loses_datagrams_only, OutBatch, RecvBatch, Udp};
use super::{count_close, GLOBAL};
use crate::pipeline::{Config, Pipeline, Stats};
use crate::{Error, ErrorKind};

/// Why a session stopped working.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The peer stopped acknowledging.
    Dead,
    /// The listener replaced or dropped this session.
    Reset(&'static str),
    /// The socket failed.
    Socket(io::ErrorKind, String),
}

impl Failure {
    /// The error every later read, write or close of the session returns.
    pub(crate) fn to_error(&self) -> Error {
        match self {
            Failure::Dead => Error::dead_link(),
            Failure::Reset(why) => Error::fixed(ErrorKind::Reset, why),
            Failure::Socket(kind, msg) => Error::io(
                "the session's UDP socket failed",
                io::Error::new(*kind, msg.clone()),
            ),
        }
    }
}

/// State shared by the application side and the driver.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) pipe: Pipeline,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
    pub(crate) failure: Option<Failure>,
    /// The application queued data: flush at once (kcp-go without write delay).
    pub(crate) want_flush: bool,
    /// `shutdown` was called: no more writes.
    pub(crate) write_closed: bool,
    /// The stream was dropped: the driver lingers, then exits.
    pub(crate) dropped: bool,
    /// Stats already added to the global counters.
    reported: Stats,
}

impl State {
    /// Wakes the reader and writer (e.g. on failure).
    pub(crate) fn wake_all(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }

    /// Adds the stats accumulated since the last report to the global counters.
    fn report(&mut self) {
        let now = self.pipe.stats();
        GLOBAL.add(&now.delta(&self.reported));
        self.reported = now;
    }
}

/// What a stream and its driver share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Kicks the driver (data queued, stream dropped, window opened by a read).
    pub(crate) kick: Notify,
    pub(crate) cfg: Config,
    /// The session clock's origin.
    epoch: Instant,
    /// ICMP "port unreachable" reports on a client's socket (nothing listens there).
    pub(crate) unreachable: std::sync::atomic::AtomicU64,
    /// A listener's session: its part of the listener's memory budget
    /// (`listener::session_budget`).
    pub(crate) holding: std::sync::OnceLock<Arc<nodelink_driver::Holding>>,
}

impl Shared {
    pub(crate) fn new(pipe: Pipeline, cfg: Config) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                pipe,
                read_waker: None,
                write_waker: None,
                failure: None,
                want_flush: false,
                write_closed: false,
                dropped: false,
                reported: Stats::default(),
            }),
            kick: Notify::new(),
            cfg,
            epoch: Instant::now(),
            unreachable: std::sync::atomic::AtomicU64::new(0),
            holding: std::sync::OnceLock::new(),
        })
    }

    /// Publishes what the session holds (unread, and unacknowledged to send) to its
    /// listener's budget, if it has one.
    pub(crate) fn note_held(&self, st: &State) {
        if let Some(h) = self.holding.get() {
            h.set(st.pipe.held_bytes());
        }
    }

    /// Locks the state (a poisoned lock is recovered: the state stays consistent between
    /// the short critical sections).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        nodelink_driver::lock(&self.state)
    }

    /// Milliseconds on the session clock.
    fn now_ms(&self, at: Instant) -> u32 {
        at.duration_since(self.epoch).as_millis() as u32
    }
}

/// The network side of a session.
#[derive(Debug)]
pub(crate) enum NetSide {
    /// A client: a connected socket, all datagrams are ours.
    Client { sock: Arc<Udp>, peer: SocketAddr },
    /// A listener's session: decrypted payloads come from the demultiplexer.
    Server {
        sock: Arc<Udp>,
        peer: SocketAddr,
        rx: mpsc::Receiver<Vec<u8>>,
        /// Told `(peer, id)` when this driver exits.
        gone: mpsc::UnboundedSender<(SocketAddr, u64)>,
        id: u64,
    },
}

/// Received datagrams processed per lock acquisition at most (a client's last read may
/// take it past this: one read can hold a GRO run of up to 64).
const BATCH: usize = 64;

enum Event {
    Kick,
    Packets,
    Payload(Vec<u8>),
    Timer,
    Closed(Failure),
}

/// Runs a session until it is dropped and flushed, dead, or reset.
pub(crate) async fn drive(shared: Arc<Shared>, mut net: NetSide) {
    // Only a client reads its own socket; a listener's sessions get their datagrams
    // through a channel, and a forged one must cost little (no 64 KiB buffer).
    let mut rbatch = RecvBatch::new();
    let mut out = OutBatch::default();
    let mut last_progress = Instant::now();
    let mut dropped_at: Option<Instant> = None;
    let cfg_dead = shared.cfg.dead_timeout;
    let linger = shared.cfg.linger;
    let overhead = shared.lock().pipe.crypto().overhead();
    let peer = match &net {
        NetSide::Client { peer, .. } | NetSide::Server { peer, .. } => Some(*peer),
    };
    // A client says once per session that its peer's datagrams do not open (a listener
    // says it for its sessions, within its budget of warnings).
    let mut auth_warned = false;

    loop {
        // Work out when to wake up next, and whether we are done.
        let deadline = {
            let mut st = shared.lock();
            let now = Instant::now();
            let now_ms = shared.now_ms(now);
            if st.pipe.wait_snd() == 0 {
                last_progress = now;
            }
            if st.failure.is_none()
                && (st.pipe.is_dead() || now.duration_since(last_progress) > cfg_dead)
            {
                st.failure = Some(Failure::Dead);
            }
            if st.dropped && dropped_at.is_none() {
                dropped_at = Some(now);
            }
            let lingered = dropped_at.is_some_and(|t| now.duration_since(t) >= linger);
            if st.failure.is_some() || (st.dropped && (st.pipe.wait_snd() == 0 || lingered)) {
                if st.failure.is_none() {
                    // Send the ACKs we still owe.
                    st.pipe.flush(now_ms, |d| out.push(d));
                }
                st.report();
                st.wake_all();
                None
            } else {
                let wake_ms = st.pipe.check(now_ms).wrapping_sub(now_ms);
                let mut deadline = if st.pipe.kcp().is_idle() {
                    // Nothing in flight or owed: sleep until a datagram or the
                    // application wakes us (no periodic timer for idle sessions).
                    now + IDLE_SLEEP
                } else {
                    now + Duration::from_millis(u64::from(wake_ms))
                };
                if st.pipe.wait_snd() > 0 {
                    deadline = deadline.min(last_progress + cfg_dead + Duration::from_millis(1));
                }
                if let Some(t) = dropped_at {
                    deadline = deadline.min(t + linger);
                }
                Some(deadline)
            }
        };
        let Some(deadline) = deadline else {
            let _ = send_all(&net, &mut out, &shared).await;
            break;
        };

        let event = match &mut net {
            NetSide::Client { sock, .. } => tokio::select! {
                _ = shared.kick.notified() => Event::Kick,
                r = sock.recv(&mut rbatch) => match r {
                    Ok(()) => Event::Packets,
                    // KCP treats the path as lossy, not broken (`udp.rs`).
                    Err(e) if loses_datagrams_only(&e) => {
                        if e.kind() == io::ErrorKind::ConnectionRefused {
                            shared.unreachable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Event::Timer
                    }
                    Err(e) => Event::Closed(Failure::Socket(e.kind(), e.to_string())),
                },
                _ = sleep_until(deadline) => Event::Timer,
            },
            NetSide::Server { rx, .. } => tokio::select! {
                _ = shared.kick.notified() => Event::Kick,
                r = rx.recv() => match r {
                    Some(p) => Event::Payload(p),
                    None => Event::Closed(Failure::Reset(
                        "session replaced by a new conversation from the same address, \
                         or its listener closed",
                    )),
                },
                _ = sleep_until(deadline) => Event::Timer,
            },
        };

        {
            let mut st = shared.lock();
            let now_ms = shared.now_ms(Instant::now());
            let mut input_ok = false;
            match event {
                Event::Closed(f) => {
                    st.failure.get_or_insert(f);
                    continue;
                }
                Event::Kick | Event::Timer => {}
                Event::Packets => {
                    let mut checksum_errors = false;
                    let mut feed = |d: &mut [u8]| match st.pipe.input(d, now_ms) {
                        Ok(()) => input_ok = true,
                        Err(e) => checksum_errors |= e.kind() == ErrorKind::Checksum,
                    };
                    let mut fed = rbatch.for_each(|_, d| feed(d));
                    if let NetSide::Client { sock, .. } = &net {
                        while fed < BATCH && sock.try_recv(&mut rbatch).is_ok() {
                            fed += rbatch.for_each(|_, d| feed(d));
                        }
                    }
                    if checksum_errors && !auth_warned {
                        auth_warned = true;
                        tracing::warn!(
                            peer = ?peer,
                            "datagrams from the KCP peer fail authentication (bad checksum after \
                             decryption): wrong key or cipher? They are dropped and counted"
                        );
                    }
                }
                Event::Payload(p) => {
                    st.pipe.count_received(p.len() + overhead);
                    input_ok |= st.pipe.input_payload(&p, now_ms).is_ok();
                    if let NetSide::Server { rx, .. } = &mut net {
                        for _ in 1..BATCH {
                            match rx.try_recv() {
                                Ok(p) => {
                                    st.pipe.count_received(p.len() + overhead);
                                    input_ok |= st.pipe.input_payload(&p, now_ms).is_ok();
                                }
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
            if input_ok {
                last_progress = Instant::now();
            }
            shared.note_held(&st);
            if std::mem::take(&mut st.want_flush) {
                st.pipe.flush(now_ms, |d| out.push(d));
            }
            st.pipe.transmit(now_ms, |d| out.push(d));
            if st.pipe.peek_size().is_some() {
                if let Some(w) = st.read_waker.take() {
                    w.wake();
                }
            }
            if st.pipe.send_capacity() > 0 || st.pipe.wait_snd() == 0 {
                if let Some(w) = st.write_waker.take() {
                    w.wake();
                }
            }
            st.report();
        }
        if let Err(e) = send_all(&net, &mut out, &shared).await {
            let mut st = shared.lock();
            st.failure
                .get_or_insert(Failure::Socket(e.kind(), e.to_string()));
        }
    }

    {
        let st = shared.lock();
        let conv = st.pipe.kcp().conv();
        match &st.failure {
            Some(Failure::Dead) => tracing::info!(
                peer = ?peer,
                conv,
                "KCP session lost: the peer stopped acknowledging"
            ),
            Some(Failure::Socket(_, msg)) => {
                tracing::info!(peer = ?peer, conv, error = %msg, "KCP session lost: socket failed")
            }
            Some(Failure::Reset(why)) => {
                tracing::debug!(peer = ?peer, conv, %why, "KCP session reset")
            }
            None => tracing::debug!(peer = ?peer, conv, "KCP session closed"),
        }
    }
    count_close();
    if let NetSide::Server { peer, gone, id, .. } = &net {
        let _ = gone.send((*peer, *id));
    }
}

/// Sends the collected datagrams (batched: `udp.rs`), resetting the batch. A "port
/// unreachable" report may come back on a send as well as on a read: both count.
async fn send_all(net: &NetSide, out: &mut OutBatch, shared: &Shared) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let r = match net {
        // A client's socket is connected: no address (some systems refuse one there).
        NetSide::Client { sock, .. } => sock.send(None, out).await,
        NetSide::Server { sock, peer, .. } => sock.send(Some(*peer), out).await,
    };
    out.clear();
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            if matches!(net, NetSide::Client { .. }) {
                shared
                    .unreachable
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        }
        // An unreachable host or a full buffer lost some datagrams: KCP resends them.
        Err(e) if loses_datagrams_only(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

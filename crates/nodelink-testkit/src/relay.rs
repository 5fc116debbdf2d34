//! The relay itself: two sockets, two tasks, one pipeline per direction.
//!
//! ```text
//!              front socket                    back socket
//!   client ──► 127.0.0.1:A ── c2u pipeline ──► 127.0.0.1:B ──► upstream
//!   client ◄── 127.0.0.1:A ◄─ u2c pipeline ─── 127.0.0.1:B ◄── upstream
//! ```
//!
//! The back socket is `connect`ed to the upstream, so it only ever hears
//! from it. The front socket adopts the first address that sends to it as
//! "the client" and ignores everyone else.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::impairment::{decide, Impairment};

/// What the relay's sockets ask for as send and receive buffers: as much as the KCP
/// sockets on either side of it (kcptun's `--sockbuf` default, and nodelink's), so a
/// burst of a whole window meets the impairment's losses, not the relay's buffer.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Raises `sock`'s buffers to [`SOCKET_BUFFER`] where the kernel allows it
/// (`net.core.rmem_max` may cap it; the relay works either way).
fn large_buffers(sock: &UdpSocket) {
    let s = socket2::SockRef::from(sock);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
}

/// Maximum number of datagrams waiting in one direction's delay queue.
///
/// A delayed datagram that would exceed it is dropped and counted in
/// [`DirectionStats::overflowed`], so a misbehaving test cannot make the
/// relay grow without bound.
pub const MAX_QUEUED: usize = 10_000;

/// How long a datagram held back for reordering waits for a successor
/// before it is released anyway.
pub const REORDER_TIMEOUT: Duration = Duration::from_millis(20);

/// Largest UDP payload the relay can carry.
const MAX_DATAGRAM: usize = 65_536;

/// Counters of one direction, as returned by [`UdpRelay::stats`].
///
/// All counts are datagrams. A duplicated datagram counts once in
/// `duplicated` and twice in `forwarded`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams received from the sender of this direction.
    pub received: u64,
    /// Datagrams sent on to the receiver (duplicates included).
    pub forwarded: u64,
    /// Datagrams dropped by the `drop` probability.
    pub dropped: u64,
    /// Datagrams that were sent twice.
    pub duplicated: u64,
    /// Datagrams held back behind a later one.
    pub reordered: u64,
    /// Datagrams with one bit flipped.
    pub corrupted: u64,
    /// Datagram copies that went through the delay queue.
    pub delayed: u64,
    /// Datagram copies dropped because the delay queue was full
    /// ([`MAX_QUEUED`]).
    pub overflowed: u64,
}

/// Snapshot of a relay's counters, one set per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client → upstream.
    pub to_upstream: DirectionStats,
    /// Upstream → client.
    pub to_client: DirectionStats,
}

/// Live counters shared between a direction's task and [`UdpRelay::stats`].
#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    corrupted: AtomicU64,
    delayed: AtomicU64,
    overflowed: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, AtomicOrdering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> DirectionStats {
        let get = |c: &AtomicU64| c.load(AtomicOrdering::Relaxed);
        DirectionStats {
            received: get(&self.received),
            forwarded: get(&self.forwarded),
            dropped: get(&self.dropped),
            duplicated: get(&self.duplicated),
            reordered: get(&self.reordered),
            corrupted: get(&self.corrupted),
            delayed: get(&self.delayed),
            overflowed: get(&self.overflowed),
        }
    }
}

/// A loopback UDP relay that impairs traffic between one client and one
/// upstream socket.
///
/// See the [crate documentation](crate) for the model and an example.
/// Dropping the relay stops it: both forwarding tasks are aborted and the
/// relay's sockets are closed; datagrams still queued are discarded.
#[derive(Debug)]
pub struct UdpRelay {
    local_addr: SocketAddr,
    impairment: watch::Sender<Impairment>,
    to_upstream: Arc<Counters>,
    to_client: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
    #[cfg(test)]
    sockets: Vec<std::sync::Weak<UdpSocket>>,
}

impl UdpRelay {
    /// Binds a relay on `127.0.0.1:0` that forwards datagrams between the
    /// first client that sends to it and `upstream`, in both directions,
    /// applying `imp`.
    ///
    /// Each direction has its own seeded RNG: client→upstream uses
    /// `imp.seed`, upstream→client `imp.seed + 1` (wrapping). Must be called
    /// inside a Tokio runtime with timers and I/O enabled.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if `imp` fails
    /// [`Impairment::validate`]; otherwise any error from binding or
    /// connecting the relay's sockets.
    pub async fn start(upstream: SocketAddr, imp: Impairment) -> io::Result<UdpRelay> {
        imp.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;

        let front = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?);
        let back_bind: SocketAddr = if upstream.is_ipv6() {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        } else {
            (Ipv4Addr::LOCALHOST, 0).into()
        };
        let back = Arc::new(UdpSocket::bind(back_bind).await?);
        back.connect(upstream).await?;
        for sock in [&front, &back] {
            large_buffers(sock);
        }
        let local_addr = front.local_addr()?;

        let (impairment, rx) = watch::channel(imp);
        let client = Arc::new(OnceLock::new());
        let to_upstream = Arc::new(Counters::default());
        let to_client = Arc::new(Counters::default());

        let c2u = Pipeline::new(imp, 0, Arc::clone(&to_upstream));
        let u2c = Pipeline::new(imp, 1, Arc::clone(&to_client));
        let tasks = vec![
            tokio::spawn(run(
                Endpoint::Front {
                    socket: Arc::clone(&front),
                    client: Arc::clone(&client),
                },
                Endpoint::Back(Arc::clone(&back)),
                c2u,
                rx.clone(),
            )),
            tokio::spawn(run(
                Endpoint::Back(Arc::clone(&back)),
                Endpoint::Front {
                    socket: Arc::clone(&front),
                    client,
                },
                u2c,
                rx,
            )),
        ];
        tracing::debug!(%local_addr, %upstream, ?imp, "udp relay started");

        Ok(UdpRelay {
            local_addr,
            impairment,
            to_upstream,
            to_client,
            tasks,
            #[cfg(test)]
            sockets: vec![Arc::downgrade(&front), Arc::downgrade(&back)],
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the per-direction counters.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            to_upstream: self.to_upstream.snapshot(),
            to_client: self.to_client.snapshot(),
        }
    }

    /// Replaces the impairment from the next datagram on (datagrams already
    /// held or queued keep their fate).
    ///
    /// If `imp.seed` differs from the current seed, both directions' RNGs
    /// are re-seeded (`seed`, `seed + 1`); otherwise their streams simply
    /// continue. Typical use: `drop: 1.0` to simulate a dead peer, then
    /// [`Impairment::default()`] to bring it back.
    ///
    /// # Panics
    ///
    /// If `imp` fails [`Impairment::validate`] — a bug in the calling test.
    pub fn set_impairment(&self, imp: Impairment) {
        if let Err(e) = imp.validate() {
            panic!("UdpRelay::set_impairment: {e}");
        }
        tracing::debug!(local_addr = %self.local_addr, ?imp, "udp relay impairment changed");
        self.impairment.send_replace(imp);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        tracing::debug!(local_addr = %self.local_addr, "udp relay stopped");
    }
}

/// One side of the relay as seen by a direction's task.
enum Endpoint {
    /// The client-facing socket; the client is whoever spoke first.
    Front {
        socket: Arc<UdpSocket>,
        client: Arc<OnceLock<SocketAddr>>,
    },
    /// The upstream-facing socket, connected to the upstream.
    Back(Arc<UdpSocket>),
}

impl Endpoint {
    /// Receives the next datagram; `Ok(None)` for one from a stranger.
    /// Cancel-safe, like the underlying `recv`/`recv_from`.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self {
            Endpoint::Back(socket) => socket.recv(buf).await.map(Some),
            Endpoint::Front { socket, client } => {
                let (n, from) = socket.recv_from(buf).await?;
                let client = *client.get_or_init(|| {
                    tracing::debug!(%from, "udp relay adopted client");
                    from
                });
                if from == client {
                    Ok(Some(n))
                } else {
                    tracing::trace!(%from, %client, "udp relay ignoring datagram from stranger");
                    Ok(None)
                }
            }
        }
    }

    /// Sends a datagram; `Ok(false)` if there is nobody to send it to yet.
    async fn send(&self, datagram: &[u8]) -> io::Result<bool> {
        match self {
            Endpoint::Back(socket) => socket.send(datagram).await.map(|_| true),
            Endpoint::Front { socket, client } => match client.get() {
                Some(&to) => socket.send_to(datagram, to).await.map(|_| true),
                None => Ok(false),
            },
        }
    }
}

/// A datagram waiting in the delay queue, ordered by `(deadline, seq)`.
#[derive(Debug)]
struct Queued {
    deadline: Instant,
    seq: u64,
    datagram: Vec<u8>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// A datagram held back for reordering, with its already-drawn fate.
#[derive(Debug)]
struct Held {
    datagram: Vec<u8>,
    copies: u8,
    delay: Duration,
    release_at: Instant,
}

/// The synchronous heart of one direction: decisions, the reorder slot and
/// the delay queue. The task feeds it datagrams and timer ticks and sends
/// whatever it puts into `out`.
#[derive(Debug)]
struct Pipeline {
    imp: Impairment,
    /// Added to the seed: 0 for client→upstream, 1 for upstream→client.
    seed_offset: u64,
    rng: StdRng,
    held: Option<Held>,
    queue: BinaryHeap<Reverse<Queued>>,
    next_seq: u64,
    counters: Arc<Counters>,
}

impl Pipeline {
    fn new(imp: Impairment, seed_offset: u64, counters: Arc<Counters>) -> Self {
        Pipeline {
            imp,
            seed_offset,
            rng: StdRng::seed_from_u64(imp.seed.wrapping_add(seed_offset)),
            held: None,
            queue: BinaryHeap::new(),
            next_seq: 0,
            counters,
        }
    }

    fn set_impairment(&mut self, imp: Impairment) {
        if imp.seed != self.imp.seed {
            self.rng = StdRng::seed_from_u64(imp.seed.wrapping_add(self.seed_offset));
        }
        self.imp = imp;
    }

    /// When the task must call [`Pipeline::on_timer`] next, if ever.
    fn next_wake(&self) -> Option<Instant> {
        let queued = self.queue.peek().map(|Reverse(q)| q.deadline);
        let held = self.held.as_ref().map(|h| h.release_at);
        match (queued, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Handles one received datagram; ready-to-send copies go to `out`.
    fn on_datagram(&mut self, data: &[u8], now: Instant, out: &mut Vec<Vec<u8>>) {
        bump(&self.counters.received);
        let decision = decide(&mut self.rng, &self.imp, data.len());
        tracing::trace!(len = data.len(), ?decision, "udp relay decision");
        if decision.drop {
            bump(&self.counters.dropped);
            return;
        }

        let mut datagram = data.to_vec();
        if let Some((byte, bit)) = decision.corrupt {
            datagram[byte] ^= 1 << bit;
            bump(&self.counters.corrupted);
        }
        let copies = if decision.duplicate {
            bump(&self.counters.duplicated);
            2
        } else {
            1
        };

        if let Some(held) = self.held.take() {
            // The held datagram goes right behind this one.
            self.schedule(datagram, copies, decision.delay, now, out);
            self.schedule(held.datagram, held.copies, held.delay, now, out);
        } else if decision.reorder {
            bump(&self.counters.reordered);
            self.held = Some(Held {
                datagram,
                copies,
                delay: decision.delay,
                release_at: now + REORDER_TIMEOUT,
            });
        } else {
            self.schedule(datagram, copies, decision.delay, now, out);
        }
    }

    /// Releases everything whose time has come into `out`.
    fn on_timer(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        if self.held.as_ref().is_some_and(|h| h.release_at <= now) {
            if let Some(held) = self.held.take() {
                self.schedule(held.datagram, held.copies, held.delay, now, out);
            }
        }
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(q)| q.deadline <= now)
        {
            if let Some(Reverse(q)) = self.queue.pop() {
                out.push(q.datagram);
            }
        }
    }

    /// Sends `copies` copies now (zero delay) or queues them for later.
    fn schedule(
        &mut self,
        datagram: Vec<u8>,
        copies: u8,
        delay: Duration,
        now: Instant,
        out: &mut Vec<Vec<u8>>,
    ) {
        let mut copies = vec![datagram; usize::from(copies)];
        if delay.is_zero() {
            out.append(&mut copies);
            return;
        }
        for datagram in copies {
            if self.queue.len() >= MAX_QUEUED {
                bump(&self.counters.overflowed);
                continue;
            }
            bump(&self.counters.delayed);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.queue.push(Reverse(Queued {
                deadline: now + delay,
                seq,
                datagram,
            }));
        }
    }
}

/// One direction's task: receive from `from`, impair, send to `to`.
async fn run(
    from: Endpoint,
    to: Endpoint,
    mut pipe: Pipeline,
    mut impairment: watch::Receiver<Impairment>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::new();
    loop {
        let wake = pipe.next_wake();
        let timer = async move {
            match wake {
                Some(deadline) => sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = from.recv(&mut buf) => match received {
                Ok(Some(n)) => {
                    if impairment.has_changed().unwrap_or(false) {
                        let imp = *impairment.borrow_and_update();
                        pipe.set_impairment(imp);
                    }
                    pipe.on_datagram(&buf[..n], Instant::now(), &mut out);
                }
                Ok(None) => {}
                // E.g. ECONNREFUSED reported for an earlier send while the
                // upstream was not listening: not fatal for a relay.
                Err(e) => tracing::debug!(error = &e as &dyn std::error::Error, "udp relay receive error"),
            },
            () = timer => pipe.on_timer(Instant::now(), &mut out),
        }
        for datagram in out.drain(..) {
            match to.send(&datagram).await {
                Ok(true) => bump(&pipe.counters.forwarded),
                Ok(false) => tracing::debug!("udp relay has no client yet; datagram discarded"),
                Err(e) => {
                    tracing::debug!(error = &e as &dyn std::error::Error, "udp relay send error")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(imp: Impairment) -> Pipeline {
        Pipeline::new(imp, 0, Arc::new(Counters::default()))
    }

    #[tokio::test]
    async fn reorder_swaps_with_next_and_times_out() {
        let mut pipe = pipeline(Impairment {
            reorder: 1.0,
            ..Impairment::NONE
        });
        let now = Instant::now();
        let mut out = Vec::new();
        pipe.on_datagram(b"a", now, &mut out);
        assert!(out.is_empty());
        pipe.on_datagram(b"b", now, &mut out);
        assert_eq!(out, vec![b"b".to_vec(), b"a".to_vec()]);
        out.clear();

        pipe.on_datagram(b"c", now, &mut out);
        assert!(out.is_empty());
        assert_eq!(pipe.next_wake(), Some(now + REORDER_TIMEOUT));
        pipe.on_timer(now + REORDER_TIMEOUT / 2, &mut out);
        assert!(out.is_empty());
        pipe.on_timer(now + REORDER_TIMEOUT, &mut out);
        assert_eq!(out, vec![b"c".to_vec()]);
        assert_eq!(pipe.counters.snapshot().reordered, 2);
    }

    #[tokio::test]
    async fn delay_queue_is_bounded() {
        let mut pipe = pipeline(Impairment {
            delay: Duration::from_secs(60),
            ..Impairment::NONE
        });
        let now = Instant::now();
        let mut out = Vec::new();
        for _ in 0..MAX_QUEUED + 5 {
            pipe.on_datagram(b"x", now, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(pipe.queue.len(), MAX_QUEUED);
        let stats = pipe.counters.snapshot();
        assert_eq!(stats.delayed, MAX_QUEUED as u64);
        assert_eq!(stats.overflowed, 5);
    }

    #[tokio::test]
    async fn delay_queue_releases_in_deadline_order() {
        let mut pipe = pipeline(Impairment::NONE);
        let now = Instant::now();
        let mut out = Vec::new();
        pipe.schedule(
            b"late".to_vec(),
            1,
            Duration::from_millis(30),
            now,
            &mut out,
        );
        pipe.schedule(
            b"early".to_vec(),
            2,
            Duration::from_millis(10),
            now,
            &mut out,
        );
        assert_eq!(pipe.next_wake(), Some(now + Duration::from_millis(10)));
        pipe.on_timer(now + Duration::from_millis(40), &mut out);
        assert_eq!(
            out,
            vec![b"early".to_vec(), b"early".to_vec(), b"late".to_vec()]
        );
        assert!(pipe.next_wake().is_none());
    }

    #[tokio::test]
    async fn dropping_the_relay_closes_its_sockets() {
        let upstream = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let relay = UdpRelay::start(upstream.local_addr().unwrap(), Impairment::NONE)
            .await
            .unwrap();
        let sockets = relay.sockets.clone();
        assert!(sockets.iter().all(|s| s.upgrade().is_some()));
        drop(relay);
        tokio::time::timeout(Duration::from_secs(5), async {
            // Aborted tasks are dropped the next time the runtime gets to them.
            while sockets.iter().any(|s| s.upgrade().is_some()) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("relay tasks did not stop");
    }
}

//! The attacks and the good clients of `nodelink-bench hostile` (see `hostile.rs`), each
//! written from the protocol, not with the server's own code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hostile::Scenario;
use crate::hostile_kcp as kcp;

/// What the attacker does.
#[derive(Clone, Copy, Debug)]
pub enum Attack {
    /// Open this many TCP connections and never send a byte.
    SilentSockets { count: usize },
    /// Finish the link handshake on this many links, then send large requests without
    /// ever reading an answer.
    NeverReading { links: usize },
    /// Finish the link handshake on this many links, then send nothing (more links than
    /// the server's open-file limit allows).
    IdleLinks { links: usize },
    /// From this many UDP sockets, send a well-formed first KCP datagram (the public
    /// default key) from each, again with a new conversation every `every_ms`.
    KcpFlood { sockets: usize, every_ms: u64 },
    /// Send network-transport connection requests that claim the server's own address,
    /// one connection after another.
    NtSelfClaim,
    /// On this many network-transport sockets, open a connection and send most of a
    /// 48 MiB message, never its end; a socket the server drops is replaced.
    NtUnfinished { sockets: usize },
    /// On this many network-transport sockets, open a connection and send 64 KiB messages
    /// to the echo server without ever reading the echoes (which come back on the same
    /// socket: one socket per pair of endpoints, used both ways).
    NtNeverReading { sockets: usize },
    /// Open this many network-transport sockets, finish their handshakes and send nothing
    /// more (more sockets than the server's open-file limit allows).
    NtIdle { sockets: usize },
    /// Open this many KCP sessions to the echo server and send without ever reading.
    KcpNeverReading { sessions: usize },
    /// Start this many tunnel clients (a KCP session each) and forward `streams` TCP
    /// connections through each, sending to the echo target and never reading.
    TunnelNeverReading { clients: usize, streams: usize },
    /// Through one tunnel client, open this many streams and send nothing (more than the
    /// server's open-file limit allows: each holds a socket to the target).
    TunnelIdleStreams { streams: usize },
}

impl Attack {
    /// How long the server is watched once the attack is over: 3 s, or longer where the
    /// server can learn that its peers left only by a timeout (KCP has no FIN: `kcp
    /// serve` ends a session whose peer took nothing of its echo for 10 s, the tunnel
    /// server an smux session that sent nothing for its keepalive timeout, 30 s).
    pub fn recovery(&self) -> Duration {
        match self {
            Attack::KcpNeverReading { .. } => Duration::from_secs(13),
            Attack::TunnelNeverReading { .. } => Duration::from_secs(33),
            _ => Duration::from_secs(3),
        }
    }
}

/// The well-behaved client measured meanwhile.
#[derive(Clone, Copy, Debug)]
pub enum Good {
    /// NEO Ping/Pong over one link, and a new link dialled four times a second.
    Link,
    /// 16-byte echoes over one KCP session with the CLI's default settings.
    Kcp,
    /// Endpoint-transport pings, each series from a new transport.
    Nt,
    /// 16-byte echoes through a `nodelink tunnel client` (a child process) to the
    /// tunnel server and on to an echo target in this process, each on a new TCP
    /// connection (a new smux stream).
    Tunnel,
}

/// In a scenario's server arguments: the address of an echo target this process runs.
pub const ECHO_TARGET: &str = "{echo}";

/// The scenarios, sized for `--quick` or for a full run.
pub fn scenarios(quick: bool) -> Vec<Scenario> {
    let scale = |quick_n: usize, full_n: usize| if quick { quick_n } else { full_n };
    vec![
        Scenario {
            id: "serve_silent_sockets",
            server: &["serve", "--listen", "127.0.0.1:0"],
            attack: Attack::SilentSockets {
                count: scale(600, 3000),
            },
            good: Good::Link,
            rss_bound_mib: 200,
            expected_log: "handshake",
            fd_limit: None,
        },
        Scenario {
            id: "serve_never_reading",
            server: &["serve", "--listen", "127.0.0.1:0", "--max-memory", "128M"],
            attack: Attack::NeverReading {
                links: scale(4, 16),
            },
            good: Good::Link,
            // The process stays under its --max-memory.
            rss_bound_mib: 128,
            expected_log: "memory budget reached",
            fd_limit: None,
        },
        Scenario {
            id: "serve_idle_links",
            server: &["serve", "--listen", "127.0.0.1:0"],
            attack: Attack::IdleLinks {
                links: scale(1100, 1100),
            },
            good: Good::Link,
            rss_bound_mib: 200,
            expected_log: "link limit reached",
            fd_limit: Some(1024),
        },
        Scenario {
            id: "kcp_forged_sessions",
            server: &["kcp", "serve", "--listen", "127.0.0.1:0"],
            attack: Attack::KcpFlood {
                sockets: scale(400, 8000),
                every_ms: 500,
            },
            good: Good::Kcp,
            rss_bound_mib: 400,
            expected_log: "KCP session",
            fd_limit: None,
        },
        Scenario {
            id: "tunnel_forged_sessions",
            // --quiet: no line per stream (the good client opens one per request).
            server: &[
                "tunnel",
                "server",
                "--listen",
                "127.0.0.1:0",
                "--target",
                ECHO_TARGET,
                "--quiet",
            ],
            attack: Attack::KcpFlood {
                sockets: scale(400, 8000),
                every_ms: 500,
            },
            good: Good::Tunnel,
            rss_bound_mib: 400,
            expected_log: "KCP session",
            fd_limit: None,
        },
        Scenario {
            id: "kcp_never_reading",
            server: &[
                "kcp",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--max-memory",
                "128M",
            ],
            attack: Attack::KcpNeverReading {
                sessions: scale(4, 12),
            },
            good: Good::Kcp,
            // The process stays under its --max-memory.
            rss_bound_mib: 128,
            expected_log: "never reads",
            fd_limit: None,
        },
        Scenario {
            id: "tunnel_never_reading",
            server: &[
                "tunnel",
                "server",
                "--listen",
                "127.0.0.1:0",
                "--target",
                ECHO_TARGET,
                "--quiet",
                "--max-memory",
                "128M",
            ],
            attack: Attack::TunnelNeverReading {
                clients: scale(4, 12),
                streams: 4,
            },
            good: Good::Tunnel,
            rss_bound_mib: 128,
            // A few such sessions: their stalled streams are reset (naming the peer);
            // more: the KCP budget drops their datagrams first.
            expected_log: "reader stalled | memory budget (max_memory) reached",
            fd_limit: None,
        },
        Scenario {
            id: "tunnel_idle_streams",
            server: &[
                "tunnel",
                "server",
                "--listen",
                "127.0.0.1:0",
                "--target",
                ECHO_TARGET,
                "--quiet",
            ],
            attack: Attack::TunnelIdleStreams { streams: 1100 },
            good: Good::Tunnel,
            rss_bound_mib: 200,
            expected_log: "refusing a new stream",
            fd_limit: Some(1024),
        },
        Scenario {
            id: "nt_self_claim",
            server: &["nt", "echo", "--listen", "127.0.0.1:0"],
            attack: Attack::NtSelfClaim,
            good: Good::Nt,
            rss_bound_mib: 100,
            expected_log: "claims this endpoint's own address",
            fd_limit: None,
        },
        Scenario {
            id: "nt_silent_sockets",
            // Handshakes time out after 2 s (10 s by default), so that the quick run sees
            // them too.
            server: &[
                "nt",
                "echo",
                "--listen",
                "127.0.0.1:0",
                "--connect-timeout",
                "2",
            ],
            attack: Attack::SilentSockets {
                count: scale(600, 3000),
            },
            good: Good::Nt,
            rss_bound_mib: 200,
            expected_log: "handshake",
            fd_limit: None,
        },
        Scenario {
            id: "nt_idle_sockets",
            server: &["nt", "echo", "--listen", "127.0.0.1:0"],
            attack: Attack::NtIdle { sockets: 1100 },
            good: Good::Nt,
            rss_bound_mib: 200,
            expected_log: "socket limit",
            fd_limit: Some(1024),
        },
        Scenario {
            id: "nt_never_reading",
            server: &[
                "nt",
                "echo",
                "--listen",
                "127.0.0.1:0",
                "--max-memory",
                "128M",
            ],
            attack: Attack::NtNeverReading {
                sockets: scale(4, 12),
            },
            good: Good::Nt,
            // The process stays under its --max-memory.
            rss_bound_mib: 128,
            expected_log: "does not take its echoes",
            fd_limit: None,
        },
        Scenario {
            id: "nt_unfinished_messages",
            server: &[
                "nt",
                "echo",
                "--listen",
                "127.0.0.1:0",
                "--max-memory",
                "128M",
            ],
            attack: Attack::NtUnfinished {
                sockets: scale(4, 12),
            },
            good: Good::Nt,
            // The process stays under its --max-memory.
            rss_bound_mib: 128,
            expected_log: "memory budget (max_memory) reached",
            fd_limit: None,
        },
    ]
}

/// Runs `attack` against the server at `addr` until `stop`; says what it did.
pub async fn run(attack: Attack, addr: String, stop: Arc<AtomicBool>) -> Result<String> {
    match attack {
        Attack::SilentSockets { count } => silent_sockets(tcp_of(&addr), count, &stop).await,
        Attack::NeverReading { links } => never_reading(&addr, links, &stop).await,
        Attack::IdleLinks { links } => idle_links(&addr, links, &stop).await,
        Attack::KcpFlood { sockets, every_ms } => {
            kcp::kcp_flood(&addr, sockets, every_ms, &stop).await
        }
        Attack::NtSelfClaim => nt_self_claim(&addr, &stop).await,
        Attack::NtUnfinished { sockets } => nt_unfinished(&addr, sockets, &stop).await,
        Attack::NtNeverReading { sockets } => nt_never_reading(&addr, sockets, &stop).await,
        Attack::NtIdle { sockets } => nt_idle(&addr, sockets, &stop).await,
        Attack::KcpNeverReading { sessions } => {
            kcp::kcp_never_reading(&addr, sessions, &stop).await
        }
        Attack::TunnelNeverReading { clients, streams } => {
            kcp::tunnel_never_reading(&addr, clients, streams, &stop).await
        }
        Attack::TunnelIdleStreams { streams } => {
            kcp::tunnel_idle_streams(&addr, streams, &stop).await
        }
    }
}

/// The TCP address of a server's address: itself, or a network-transport endpoint
/// address (`host:port:id`) without its endpoint id.
fn tcp_of(addr: &str) -> &str {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(_) => addr,
        Err(_) => addr.rsplit_once(':').map_or(addr, |(tcp, _)| tcp),
    }
}

/// Opens `count` sockets with `dial` (given each one's index), 100 at a time, until
/// `stop`; holds them until `stop`. Returns them with the number that failed to open and
/// the number the server has closed by then.
pub(crate) async fn hold_idle<F, Fut>(
    count: usize,
    stop: &AtomicBool,
    dial: F,
) -> (Vec<TcpStream>, usize, usize)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<TcpStream>>,
{
    let mut held = Vec::with_capacity(count);
    let mut failed = 0usize;
    for batch in (0..count).collect::<Vec<_>>().chunks(100) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        for dialled in futures::future::join_all(batch.iter().map(|&i| dial(i))).await {
            match dialled {
                Ok(s) => held.push(s),
                Err(_) => failed += 1,
            }
        }
    }
    until_stopped(stop).await;
    let ended = held.iter().filter(|s| closed_by_server(s)).count();
    (held, failed, ended)
}

pub(crate) async fn until_stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn silent_sockets(addr: &str, count: usize, stop: &AtomicBool) -> Result<String> {
    let mut held: Vec<TcpStream> = Vec::with_capacity(count);
    let mut failed = 0usize;
    let mut reopened = 0usize;
    // Kept topped up: every 100 ms, the sockets the server closed (evicted handshakes)
    // are replaced, so that `count` silent sockets stay open all along.
    while !stop.load(Ordering::Relaxed) {
        let before = held.len();
        held.retain(|s| !closed_by_server(s));
        let missing = count - held.len();
        if held.len() < before {
            reopened += missing.min(before - held.len());
        }
        for batch in (0..missing).collect::<Vec<_>>().chunks(100) {
            let dials = batch.iter().map(|_| {
                tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr.to_owned()))
            });
            for dialled in futures::future::join_all(dials).await {
                match dialled {
                    Ok(Ok(s)) => held.push(s),
                    _ => failed += 1,
                }
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(format!(
        "{} silent sockets held, {reopened} reopened after the server closed them ({failed} \
         connects failed or waited over 2 s)",
        held.len()
    ))
}

async fn idle_links(addr: &str, links: usize, stop: &AtomicBool) -> Result<String> {
    let (held, failed, ended) = hold_idle(links, stop, |_| async {
        let mut s = TcpStream::connect(addr.to_owned()).await?;
        s.write_all(&6u32.to_be_bytes()).await?;
        Ok(s)
    })
    .await;
    // Links the server ended to make room read as closed.
    Ok(format!(
        "{} idle links opened ({failed} failed), {ended} of them ended by the server",
        held.len()
    ))
}

/// Whether the server closed `s`: reading it (past the version word it sent) finds the
/// end of the stream or an error rather than nothing yet.
pub(crate) fn closed_by_server(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// NEO's packet header: connection id, message code, payload length (big-endian).
fn packet(conn: u32, code: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(10 + payload.len());
    p.extend_from_slice(&conn.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    p.extend_from_slice(payload);
    p
}

async fn never_reading(addr: &str, links: usize, stop: &Arc<AtomicBool>) -> Result<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..links {
        let addr = addr.to_owned();
        let stop = Arc::clone(stop);
        tasks.spawn(async move {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(&6u32.to_be_bytes()).await?;
            let mut version = [0u8; 4];
            s.read_exact(&mut version).await?;
            let payload = vec![0x5a; 64 << 10];
            let mut sent = 0u64;
            let mut conn = 1u32;
            // The packet being written and how much of it went out: a write cut short by
            // the timeout resumes where it stopped, so the server never sees a torn packet.
            let mut p = Vec::new();
            let mut off = 0;
            while !stop.load(Ordering::Relaxed) {
                if off == p.len() {
                    // A lightweight request (odd id, the dialler's) with the echo code.
                    p = packet(conn, 0x0100, &payload);
                    off = 0;
                    conn = conn.wrapping_add(2);
                }
                // `write` is cancel-safe: on a timeout nothing of this call was written.
                match tokio::time::timeout(Duration::from_millis(200), s.write(&p[off..])).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => {
                        off += n;
                        sent += n as u64;
                    }
                    // The server stopped reading: that is the point; keep trying.
                    Err(_) => {}
                }
            }
            Ok::<_, anyhow::Error>(sent)
        });
    }
    let mut total = 0u64;
    let mut errors = 0usize;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(sent)) => total += sent,
            _ => errors += 1,
        }
    }
    Ok(format!(
        "{links} links sent {:.1} MiB of requests without reading an answer ({errors} failed)",
        total as f64 / (1 << 20) as f64
    ))
}

/// A connection request (network-transport-tcp, protocol version 0) for endpoint 0 of
/// the server, claiming `origin` as the requester's address.
fn nt_request(origin: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [0u32, 8 + origin.len() as u32, 0, origin.len() as u32] {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v.extend_from_slice(origin);
    v
}

async fn nt_self_claim(address: &str, stop: &AtomicBool) -> Result<String> {
    let socket = address
        .rsplit_once(':')
        .map(|(host_port, _)| host_port.to_owned())
        .context("endpoint address")?;
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&socket)).await
        {
            if s.write_all(&nt_request(address.as_bytes())).await.is_ok() {
                sent += 1;
                let mut answer = [0u8; 4];
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut answer)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(format!(
        "{sent} connection requests claiming the server's own address"
    ))
}

async fn nt_never_reading(address: &str, sockets: usize, stop: &AtomicBool) -> Result<String> {
    let socket = address
        .rsplit_once(':')
        .map(|(host_port, _)| host_port.to_owned())
        .context("endpoint address")?;
    let mut held = Vec::new();
    for i in 0..sockets {
        let mut s =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&socket)).await??;
        let origin = format!("127.0.0.1:{}:0", 21_000 + i);
        s.write_all(&nt_request(origin.as_bytes())).await?;
        let mut answer = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut answer)).await??;
        anyhow::ensure!(answer == [0; 4], "handshake not accepted");
        // CreatedNewConnection (control 0) for lcid 1024.
        s.write_all(&[0, 0, 0, 0, 0, 0, 4, 0]).await?;
        held.push(s);
    }
    // One 64 KiB message: lcid 1024, its length, the payload.
    let mut message = Vec::with_capacity(8 + (64 << 10));
    for w in [1024u32, 64 << 10] {
        message.extend_from_slice(&w.to_be_bytes());
    }
    message.resize(8 + (64 << 10), 0xa5);
    let message = Bytes::from(message);
    // One writer per socket, writing whole messages while the server reads them.
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = held
        .into_iter()
        .map(|mut s| {
            let (message, sent) = (message.clone(), sent.clone());
            tokio::spawn(async move {
                while s.write_all(&message).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    until_stopped(stop).await;
    for w in writers {
        w.abort();
        let _ = w.await;
    }
    Ok(format!(
        "{sockets} sockets sent {} MiB of messages, never reading the echoes",
        sent.load(Ordering::Relaxed) >> 4
    ))
}

async fn nt_idle(address: &str, sockets: usize, stop: &AtomicBool) -> Result<String> {
    let socket = tcp_of(address).to_owned();
    let (held, failed, ended) = hold_idle(sockets, stop, |i| {
        let socket = socket.clone();
        async move {
            let mut s =
                tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(socket)).await??;
            let origin = format!("127.0.0.1:{}:0", 30_000 + i);
            s.write_all(&nt_request(origin.as_bytes())).await?;
            let mut answer = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut answer)).await??;
            anyhow::ensure!(answer == [0; 4], "handshake not accepted");
            Ok(s)
        }
    })
    .await;
    Ok(format!(
        "{} idle sockets opened ({failed} failed), {ended} of them ended by the server",
        held.len()
    ))
}

/// The size the unfinished messages announce (under `nt echo`'s 64 MiB limit).
const UNFINISHED_LEN: u32 = 48 << 20;

async fn nt_unfinished(address: &str, sockets: usize, stop: &AtomicBool) -> Result<String> {
    let socket = address
        .rsplit_once(':')
        .map(|(host_port, _)| host_port.to_owned())
        .context("endpoint address")?;
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_all = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..sockets)
        .map(|i| {
            let (socket, sent, opened, stop) = (
                socket.clone(),
                sent.clone(),
                opened.clone(),
                stop_all.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    opened.fetch_add(1, Ordering::Relaxed);
                    let origin = format!("127.0.0.1:{}:0", 20_000 + i);
                    let _ = unfinished_message(&socket, &origin, &sent, &stop).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    until_stopped(stop).await;
    stop_all.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
    Ok(format!(
        "{} sockets sent {} MiB of unfinished {} MiB messages ({} sockets opened in all)",
        sockets,
        sent.load(Ordering::Relaxed) >> 20,
        UNFINISHED_LEN >> 20,
        opened.load(Ordering::Relaxed)
    ))
}

/// One socket: the handshake, a new connection (lcid 1024) and a data frame announcing
/// [`UNFINISHED_LEN`] bytes, then payload until the server stops reading for good or
/// drops the socket; never the message's last byte.
async fn unfinished_message(
    socket: &str,
    origin: &str,
    sent: &std::sync::atomic::AtomicU64,
    stop: &AtomicBool,
) -> Result<()> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(socket)).await??;
    s.write_all(&nt_request(origin.as_bytes())).await?;
    let mut answer = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut answer)).await??;
    anyhow::ensure!(answer == [0; 4], "handshake not accepted");
    // CreatedNewConnection (control 0) for lcid 1024, then the data frame's header: the
    // lcid and the payload length.
    let mut head = Vec::new();
    for w in [0u32, 1024, 1024, UNFINISHED_LEN] {
        head.extend_from_slice(&w.to_be_bytes());
    }
    s.write_all(&head).await?;
    let chunk = vec![0x5a; 64 << 10];
    let mut left = UNFINISHED_LEN as usize - 1;
    while left > 0 && !stop.load(Ordering::Relaxed) {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).await?;
        sent.fetch_add(n as u64, Ordering::Relaxed);
        left -= n;
    }
    // Most of it sent: wait, silent, until the server gives up on the socket.
    let mut sink = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        if s.read(&mut sink).await? == 0 {
            break;
        }
    }
    Ok(())
}

/// Round trips of the good client over some time.
#[derive(Default)]
pub struct Measured {
    pub ok: u64,
    pub failed: u64,
    pub times: Vec<Duration>,
    /// The slowest new-client arrival (a dial and its first request), where the client dials.
    pub slowest_dial: Duration,
    pub first_failure: Option<String>,
}

impl Measured {
    fn record(&mut self, started: Instant, result: Result<()>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.times.push(started.elapsed());
            }
            Err(e) => {
                self.failed += 1;
                self.first_failure.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    pub fn p50_us(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_unstable();
        t.get(t.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    }

    pub fn max_us(&self) -> f64 {
        self.times
            .iter()
            .max()
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    }
}

/// The good client, connected before the attack starts.
pub enum GoodClient {
    Link {
        addr: String,
        link: nodelink::Link,
    },
    Kcp(tokio::sync::Mutex<nodelink_kcp::KcpStream>),
    Nt {
        address: nodelink_transport::EndPointAddress,
    },
    Tunnel {
        /// The tunnel client's TCP address.
        local: String,
        _client: Box<crate::cli_child::CliChild>,
    },
}

/// How long any one good request may take before it counts as failed.
const GOOD_LIMIT: Duration = Duration::from_secs(5);

impl GoodClient {
    pub async fn start(good: Good, addr: &str) -> Result<GoodClient> {
        Ok(match good {
            Good::Link => GoodClient::Link {
                addr: addr.to_owned(),
                link: nodelink::connect(addr, nodelink::Config::default()).await?,
            },
            Good::Kcp => GoodClient::Kcp(tokio::sync::Mutex::new(
                nodelink_kcp::KcpStream::connect(addr, kcp::kcp_config()).await?,
            )),
            Good::Nt => GoodClient::Nt {
                address: addr
                    .parse()
                    .map_err(|e| anyhow::anyhow!("endpoint address {addr}: {e}"))?,
            },
            Good::Tunnel => {
                let client = crate::cli_child::start(
                    &[
                        "tunnel",
                        "client",
                        "--listen",
                        "127.0.0.1:0",
                        "--remote",
                        addr,
                    ],
                    &["listening on "],
                    false,
                )
                .await?;
                GoodClient::Tunnel {
                    local: client.first.clone(),
                    _client: Box::new(client),
                }
            }
        })
    }

    /// Requests for `how_long`, one after another with short pauses.
    pub async fn measure(&self, how_long: Duration) -> Measured {
        let mut m = Measured::default();
        let end = Instant::now() + how_long;
        let mut last_dial = Instant::now();
        while Instant::now() < end {
            let started = Instant::now();
            let result = match self {
                GoodClient::Link { addr, link } => {
                    if last_dial.elapsed() >= Duration::from_millis(250) {
                        // A new client arriving now must get in too.
                        last_dial = Instant::now();
                        let r = bounded(dial_and_ping(addr))
                            .await
                            .context("a new client (dial, ask1, close)");
                        m.slowest_dial = m.slowest_dial.max(started.elapsed());
                        r
                    } else {
                        bounded(async {
                            let _: nodelink::Pong = link.ask1(&nodelink::Ping).await?;
                            Ok(())
                        })
                        .await
                        .context("the client's long-lived link")
                    }
                }
                GoodClient::Kcp(stream) => bounded(kcp::kcp_echo(stream)).await,
                GoodClient::Tunnel { local, .. } => bounded(tunnel_echo(local)).await,
                GoodClient::Nt { address } => {
                    bounded(async {
                        crate::nt::ping(address, Bytes::from_static(b"good client ping"), 0, 5)
                            .await
                            .map(drop)
                    })
                    .await
                }
            };
            m.record(started, result);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        m
    }
}

async fn bounded(f: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(GOOD_LIMIT, f)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {GOOD_LIMIT:?}"))?
}

async fn dial_and_ping(addr: &str) -> Result<()> {
    let link = nodelink::connect(addr, nodelink::Config::default()).await?;
    let _: nodelink::Pong = link.ask1(&nodelink::Ping).await?;
    link.close().await;
    Ok(())
}

async fn tunnel_echo(local: &str) -> Result<()> {
    let mut s = TcpStream::connect(local).await?;
    let sent = *b"good tunnel user";
    s.write_all(&sent).await?;
    let mut back = [0u8; 16];
    s.read_exact(&mut back).await?;
    anyhow::ensure!(back == sent, "the echo differs");
    Ok(())
}

/// A TCP echo server on loopback, for as long as this process runs; its address.
pub async fn start_echo() -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(addr)
}

//! The KCP and tunnel attacks of `nodelink-bench hostile` (see `hostile.rs`).
//!
//! Forged first datagrams are built from the wire format (the KCP pipeline only encodes
//! them). The peers that never read, or that hold streams open and say nothing, misbehave
//! above the protocol, as applications do: they use nodelink's own KCP session and tunnel
//! client, which speak the protocol correctly to the server under test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::hostile_attacks::hold_idle;

/// The CLI's KCP defaults (kcptun's): AES with the public default key, FEC 10/3.
pub(crate) fn kcp_config() -> nodelink_kcp::Config {
    nodelink_kcp::Config::default()
        .with_crypt(nodelink_kcp::CipherKind::Aes)
        .with_key("it's a secrect")
        .with_fec(10, 3)
        .with_stream(true)
}

/// Source addresses of the forged KCP datagrams.
const FORGED_IPS: usize = 32;

pub(crate) async fn kcp_flood(
    addr: &str,
    sockets: usize,
    every_ms: u64,
    stop: &AtomicBool,
) -> Result<String> {
    let target: std::net::SocketAddr = addr.parse().context("KCP address")?;
    let cfg = kcp_config();
    let mut socks = Vec::with_capacity(sockets);
    for i in 0..sockets {
        // Sources spread over 32 loopback addresses, as forged addresses would be: the
        // per-address bound alone then does not hold the flood.
        let ip = std::net::Ipv4Addr::new(127, 1, 0, 1 + (i % FORGED_IPS) as u8);
        socks.push(UdpSocket::bind((ip, 0)).await?);
    }
    let mut sent = 0u64;
    let mut conv: u32 = 1;
    while !stop.load(Ordering::Relaxed) {
        for sock in &socks {
            conv = conv.wrapping_add(1).max(1);
            let mut p = nodelink_kcp::pipeline::Pipeline::new(conv, &cfg)?;
            p.send(b"forged")?;
            let mut first = None;
            p.flush(0, |d| {
                first.get_or_insert_with(|| d.to_vec());
            });
            if let Some(d) = first {
                if sock.send_to(&d, target).await.is_ok() {
                    sent += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(every_ms)).await;
    }
    Ok(format!(
        "{sent} forged first datagrams from {sockets} source ports on {FORGED_IPS} addresses"
    ))
}

/// Writes 64 KiB chunks to `s` until `stop`, never reading; bytes written.
async fn write_never_read<S: AsyncWrite + Unpin>(mut s: S, stop: &AtomicBool) -> u64 {
    let chunk = vec![0x5a; 64 << 10];
    let mut sent = 0u64;
    let mut off = 0;
    while !stop.load(Ordering::Relaxed) {
        // `write` is cancel-safe: on a timeout nothing of this call was written.
        match tokio::time::timeout(Duration::from_millis(200), s.write(&chunk[off..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                sent += n as u64;
                off = (off + n) % chunk.len();
            }
            // The server stopped reading: that is the point; keep trying.
            Err(_) => {}
        }
    }
    sent
}

/// Sums what the writers sent, as "N MiB (E failed)".
async fn sum_sent(mut tasks: tokio::task::JoinSet<Result<u64>>) -> String {
    let (mut total, mut errors) = (0u64, 0usize);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(sent)) => total += sent,
            _ => errors += 1,
        }
    }
    format!(
        "{:.1} MiB ({errors} failed)",
        total as f64 / (1 << 20) as f64
    )
}

/// `sessions` KCP sessions to the echo server that send and never read the echoes.
pub(crate) async fn kcp_never_reading(
    addr: &str,
    sessions: usize,
    stop: &Arc<AtomicBool>,
) -> Result<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..sessions {
        let addr = addr.to_owned();
        let stop = Arc::clone(stop);
        tasks.spawn(async move {
            let s = nodelink_kcp::KcpStream::connect(&addr, kcp_config()).await?;
            Ok(write_never_read(s, &stop).await)
        });
    }
    let sent = sum_sent(tasks).await;
    Ok(format!(
        "{sessions} KCP sessions sent {sent} without reading an echo"
    ))
}

/// A tunnel client (in this process) towards the tunnel server at `remote`: its TCP
/// address, and the token that stops it.
async fn tunnel_client(
    remote: &str,
) -> Result<(String, CancellationToken, tokio::task::JoinHandle<()>)> {
    let cfg = nodelink_tunnel::Config::default()
        .with_listen("127.0.0.1:0")
        .with_target(remote.to_owned())
        .with_quiet(true);
    let client = nodelink_tunnel::Client::bind(cfg).await?;
    let local = client.local_addr().to_string();
    let stop = CancellationToken::new();
    let run = client.run(stop.clone());
    let task = tokio::spawn(async move {
        let _ = run.await;
    });
    Ok((local, stop, task))
}

/// Stops the tunnel clients, waiting a bounded time for each.
async fn stop_clients(clients: Vec<(String, CancellationToken, tokio::task::JoinHandle<()>)>) {
    for (_, stop, task) in clients {
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}

/// `clients` tunnel clients (a KCP session each), each forwarding `streams` TCP
/// connections that send to the echo target behind the server and never read the
/// echoes.
pub(crate) async fn tunnel_never_reading(
    addr: &str,
    clients: usize,
    streams: usize,
    stop: &Arc<AtomicBool>,
) -> Result<String> {
    let mut started = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let client = tunnel_client(addr).await?;
        for _ in 0..streams {
            let local = client.0.clone();
            let stop = Arc::clone(stop);
            tasks.spawn(async move {
                let s = TcpStream::connect(&local).await?;
                Ok(write_never_read(s, &stop).await)
            });
        }
        started.push(client);
    }
    let sent = sum_sent(tasks).await;
    stop_clients(started).await;
    Ok(format!(
        "{clients} tunnel sessions, {streams} streams each, sent {sent} without reading an echo"
    ))
}

/// One tunnel client forwarding `streams` TCP connections that send nothing (more than
/// the server's open-file limit allows: each stream holds a socket to the target there).
pub(crate) async fn tunnel_idle_streams(
    addr: &str,
    streams: usize,
    stop: &AtomicBool,
) -> Result<String> {
    let client = tunnel_client(addr).await?;
    let local = client.0.clone();
    // Streams the server refused or ended: the client closed their TCP connections.
    let (held, failed, ended) = hold_idle(streams, stop, |_| async {
        Ok(TcpStream::connect(local.clone()).await?)
    })
    .await;
    let opened = held.len();
    drop(held);
    stop_clients(vec![client]).await;
    Ok(format!(
        "{opened} idle streams opened ({failed} failed), {ended} of them refused or ended by \
         the server"
    ))
}

pub(crate) async fn kcp_echo(stream: &tokio::sync::Mutex<nodelink_kcp::KcpStream>) -> Result<()> {
    let mut stream = stream.lock().await;
    let sent = *b"good kcp client!";
    stream.write_all(&sent).await?;
    let mut back = [0u8; 16];
    stream.read_exact(&mut back).await?;
    anyhow::ensure!(back == sent, "the echo differs");
    Ok(())
}

//! The tour's second half: the layers beside the link, each set up on loopback and
//! measured briefly. KCP carries a bulk echo, then another through a relay that loses
//! datagrams; the endpoint transport a series of pings; the tunnel a TCP connection
//! through both of its ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nodelink_kcp::{CipherKind, Config as KcpConfig, KcpListener, KcpStream, Mode};
use nodelink_transport::{Config as NtConfig, Transport};
use nodelink_tunnel::{Client, Config as TunnelConfig, Profile, Server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::out::say;
use crate::stats::Summary;

/// Bytes echoed over KCP and carried through the tunnel.
const BULK: usize = 4 << 20;
/// Bytes echoed over KCP through the lossy relay.
const LOSSY_BULK: usize = 2 << 20;
/// Share of datagrams the relay drops, each way.
const LOSS: f64 = 0.05;
/// Pings over the endpoint transport.
const PINGS: u64 = 2_000;
/// Bound on each layer's part of the tour.
const LIMIT: Duration = Duration::from_secs(60);

/// A fresh random passphrase: the tour never uses kcptun's public default key.
fn random_key() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `data` to `stream` while reading the same number of bytes back, checking the
/// echo; returns how long the whole exchange took.
async fn echo_exchange<S>(stream: S, data: &[u8]) -> anyhow::Result<(Duration, S)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let start = Instant::now();
    let write = async {
        wr.write_all(data).await.context("write")?;
        wr.flush().await.context("flush")
    };
    let read = async {
        let mut back = vec![0u8; data.len()];
        rd.read_exact(&mut back).await.context("read the echo")?;
        if back != data {
            bail!("the echo differs from what was sent");
        }
        Ok(())
    };
    tokio::try_join!(write, read)?;
    Ok((start.elapsed(), rd.unsplit(wr)))
}

/// Echoes everything `stream` receives until it ends.
async fn echo<S: AsyncRead + AsyncWrite>(stream: S) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    if tokio::io::copy(&mut rd, &mut wr).await.is_ok() {
        let _ = wr.shutdown().await;
    }
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// A UDP relay between one client (the first to send to it) and `upstream` that drops
/// `loss` of the datagrams each way, with one seeded generator per direction: each run
/// loses the datagrams at the same positions of each direction. Returns the address to
/// send to and the count of datagrams dropped.
async fn lossy_relay(
    upstream: SocketAddr,
    loss: f64,
    seed: u64,
) -> anyhow::Result<(SocketAddr, Arc<AtomicU64>, tokio::task::JoinHandle<()>)> {
    use rand::{Rng, SeedableRng};
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    back.connect(upstream).await?;
    let addr = front.local_addr()?;
    let dropped = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&dropped);
    let task = tokio::spawn(async move {
        let mut up_rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut down_rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
        let (mut up, mut down) = (vec![0u8; 65_536], vec![0u8; 65_536]);
        let mut client = None;
        loop {
            tokio::select! {
                r = front.recv_from(&mut up) => {
                    let Ok((n, from)) = r else { break };
                    client = Some(from);
                    if up_rng.random::<f64>() < loss {
                        counted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let _ = back.send(&up[..n]).await;
                    }
                }
                r = back.recv(&mut down) => {
                    let Ok(n) = r else { break };
                    let Some(to) = client else { continue };
                    if down_rng.random::<f64>() < loss {
                        counted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let _ = front.send_to(&down[..n], to).await;
                    }
                }
            }
        }
    });
    Ok((addr, dropped, task))
}

/// 9. One KCP session echoing a bulk transfer, then another through a lossy relay.
pub async fn kcp(data: &[u8]) -> anyhow::Result<()> {
    say!("");
    say!("9. KCP: reliable UDP, wire-compatible with kcp-go (`nodelink kcp serve|bench`)");
    let config = KcpConfig::default()
        .with_crypt(CipherKind::Aes128Gcm)
        .with_key(random_key())
        .with_mode(Mode::Fast3);
    let mut listener = KcpListener::bind("127.0.0.1:0", config.clone())
        .await
        .context("cannot start the KCP listener")?;
    let addr = listener.local_addr();
    say!("   listener on udp {addr}: aes-128-gcm with a fresh random key, mode fast3, FEC 10/3");
    let server = tokio::spawn(async move {
        while let Ok((session, _)) = listener.accept().await {
            tokio::spawn(echo(session));
        }
    });
    let (took, stats) = kcp_echo(addr, config.clone(), data, "KCP echo").await?;
    crate::out::json(&serde_json::json!({
        "step": "kcp_echo",
        "bytes": data.len(),
        "seconds": took.as_secs_f64(),
        "mb_per_s": mb_per_s(data.len(), took),
        "retransmitted_segments": stats.retrans_segs,
        "fec_recovered": stats.fec_recovered,
    }))?;
    say!(
        "   {} MiB sent and echoed back in {:.2} s: {:.1} MB/s each way",
        data.len() >> 20,
        took.as_secs_f64(),
        mb_per_s(data.len(), took)
    );
    say!(
        "   datagrams out {}, in {}; segments retransmitted {}, FEC recovered {}",
        stats.out_pkts,
        stats.in_pkts,
        stats.retrans_segs,
        stats.fec_recovered
    );
    let lossy = lossy_echo(addr, config, &data[..LOSSY_BULK.min(data.len())]).await;
    server.abort();
    lossy
}

/// One KCP session to `addr` echoing `data` (bounded by [`LIMIT`]; `what` names it in the
/// progress display and in errors); returns how long it took and the session's counters.
async fn kcp_echo(
    addr: SocketAddr,
    config: KcpConfig,
    data: &[u8],
    what: &str,
) -> anyhow::Result<(Duration, nodelink_kcp::Stats)> {
    let session = KcpStream::connect(addr, config)
        .await
        .with_context(|| format!("{what}: cannot open a KCP session"))?;
    let (took, mut session) = tokio::time::timeout(
        LIMIT,
        crate::out::progress(what, echo_exchange(session, data)),
    )
    .await
    .with_context(|| format!("{what} took too long"))??;
    let stats = session.stats();
    let _ = session.close().await;
    Ok((took, stats))
}

/// The same echo through a relay that loses [`LOSS`] of the datagrams each way: FEC
/// rebuilds most of them, KCP resends the rest.
async fn lossy_echo(server: SocketAddr, config: KcpConfig, data: &[u8]) -> anyhow::Result<()> {
    let (relay, dropped, relay_task) = lossy_relay(server, LOSS, 7).await?;
    say!(
        "   again through a relay on udp {relay} that drops {:.0}% of the datagrams each way:",
        LOSS * 100.0
    );
    let result = kcp_echo(relay, config, data, "KCP echo through the lossy relay").await;
    relay_task.abort();
    let (took, stats) = result?;
    let lost = dropped.load(Ordering::Relaxed);
    crate::out::json(&serde_json::json!({
        "step": "kcp_lossy_echo",
        "bytes": data.len(),
        "loss_each_way": LOSS,
        "datagrams_dropped": lost,
        "seconds": took.as_secs_f64(),
        "mb_per_s": mb_per_s(data.len(), took),
        "retransmitted_segments": stats.retrans_segs,
        "fec_recovered": stats.fec_recovered,
    }))?;
    say!(
        "   {} MiB echoed intact in {:.2} s: {:.1} MB/s each way; {lost} datagrams dropped, \
         FEC rebuilt {}, KCP resent {} segments",
        data.len() >> 20,
        took.as_secs_f64(),
        mb_per_s(data.len(), took),
        stats.fec_recovered,
        stats.retrans_segs
    );
    Ok(())
}

/// 10. Two endpoints of the network-transport-tcp compatible transport.
pub async fn transport() -> anyhow::Result<()> {
    say!("");
    say!("10. Endpoint transport: Haskell network-transport-tcp's protocol (`nodelink nt`)");
    let config = NtConfig::default();
    let server = Transport::bind("127.0.0.1", 0, config.clone())
        .await
        .context("cannot start the echo transport")?;
    let echo_endpoint = server
        .open_endpoint()
        .await
        .context("cannot open the echo endpoint")?;
    let target = echo_endpoint.address().clone();
    say!("   echo endpoint {target} (connects back to each sender and echoes there)");
    let echoing =
        tokio::spawn(async move { crate::nt_echo::echo_loop(&echo_endpoint, 64 << 20).await });
    let client = Transport::bind("127.0.0.1", 0, config)
        .await
        .context("cannot start the client transport")?;
    let result = async {
        let me = client
            .open_endpoint()
            .await
            .context("cannot open an endpoint")?;
        crate::nt::ping_over(&me, &target, PINGS, 64, LIMIT).await
    }
    .await;
    client.close().await;
    server.close().await;
    echoing.abort();
    let mut samples = result?;
    if let Some(s) = Summary::of(&mut samples) {
        crate::out::json(&serde_json::json!({
            "step": "transport_pings",
            "pings": PINGS,
            "rtt_us": s.to_json(),
        }))?;
        say!(
            "   {PINGS} pings of 64 bytes, each answered on the reverse connection: \
             p50 {:.1} µs, p99 {:.1} µs",
            s.p50_us,
            s.p99_us
        );
    }
    say!("   one TCP connection carried both directions, closed when both sides were done");
    crossing().await
}

/// Two endpoints connect to each other at the same moment: the protocol's tie-break keeps
/// one TCP connection, and both directions work.
async fn crossing() -> anyhow::Result<()> {
    use nodelink_transport::Event;
    let (ta, tb) = tokio::try_join!(
        Transport::bind("127.0.0.1", 0, NtConfig::default()),
        Transport::bind("127.0.0.1", 0, NtConfig::default()),
    )
    .context("cannot start two transports")?;
    let result = async {
        let (a, b) = tokio::try_join!(ta.open_endpoint(), tb.open_endpoint())?;
        let (to_b, to_a) = tokio::time::timeout(LIMIT, async {
            tokio::try_join!(a.connect(b.address()), b.connect(a.address()))
        })
        .await
        .context("crossed connects took too long")??;
        let (from_a, from_b) = ([&b"from a"[..]], [&b"from b"[..]]);
        tokio::try_join!(to_b.send(&from_a), to_a.send(&from_b))?;
        for ep in [&a, &b] {
            loop {
                match tokio::time::timeout(LIMIT, ep.receive())
                    .await
                    .context("no message")??
                {
                    Event::Received { .. } => break,
                    Event::ConnectionOpened { .. } => {}
                    other => anyhow::bail!("unexpected event {other:?}"),
                }
            }
        }
        let sockets = (a.stats().sockets, b.stats().sockets);
        to_b.close().await;
        to_a.close().await;
        Ok::<_, anyhow::Error>(sockets)
    }
    .await;
    ta.close().await;
    tb.close().await;
    let (sa, sb) = result?;
    crate::out::json(&serde_json::json!({
        "step": "transport_crossed_connects",
        "sockets_a": sa,
        "sockets_b": sb,
    }))?;
    say!(
        "   two endpoints dialled each other at once: the tie-break kept {} TCP connection \
         (sockets: {sa} and {sb}), a message crossed each way",
        sa.max(sb)
    );
    Ok(())
}

/// 11. A kcptun-compatible tunnel in front of a TCP echo service.
pub async fn tunnel(data: &[u8]) -> anyhow::Result<()> {
    say!("");
    say!("11. Tunnel: TCP over KCP, wire-compatible with kcptun (`nodelink tunnel`)");
    let service = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot start the TCP echo service")?;
    let service_addr = service.local_addr()?;
    let service_task = tokio::spawn(async move {
        while let Ok((conn, _)) = service.accept().await {
            tokio::spawn(echo(conn));
        }
    });
    let key = random_key();
    let shared = |config: TunnelConfig| {
        config
            .with_key(key.clone())
            .with_crypt(CipherKind::Aes128Gcm)
            .with_mode(Profile::Preset(Mode::Fast3))
    };
    let server = Server::bind(
        shared(TunnelConfig::server())
            .with_listen("127.0.0.1:0")
            .with_target(service_addr.to_string()),
    )
    .await
    .context("cannot start the tunnel server")?;
    let client = Client::bind(
        shared(TunnelConfig::default())
            .with_listen("127.0.0.1:0")
            .with_target(server.local_addr().to_string()),
    )
    .await
    .context("cannot start the tunnel client")?;
    let entry = client.local_addr();
    say!(
        "   tcp {entry} -> tunnel client -> KCP udp {} -> tunnel server -> tcp {service_addr}",
        server.local_addr()
    );
    let (client_stats, server_stats) = (client.stats_handle(), server.stats_handle());
    let stop = CancellationToken::new();
    let ends = [
        tokio::spawn(server.run(stop.clone())),
        tokio::spawn(client.run(stop.clone())),
    ];
    let result = async {
        let conn = tokio::net::TcpStream::connect(entry)
            .await
            .context("cannot connect to the tunnel's entry")?;
        let (took, _) = tokio::time::timeout(
            LIMIT,
            crate::out::progress("tunnel echo", echo_exchange(conn, data)),
        )
        .await
        .context("the tunnel's echo took too long")??;
        Ok::<_, anyhow::Error>(took)
    }
    .await;
    stop.cancel();
    for end in ends {
        let _ = end.await;
    }
    service_task.abort();
    let took = result?;
    let (c, s) = (client_stats.stats(), server_stats.stats());
    crate::out::json(&serde_json::json!({
        "step": "tunnel_echo",
        "bytes": data.len(),
        "seconds": took.as_secs_f64(),
        "mb_per_s": mb_per_s(data.len(), took),
        "client_streams_forwarded": c.streams_forwarded,
        "server_streams_forwarded": s.streams_forwarded,
    }))?;
    say!(
        "   {} MiB through the tunnel and back in {:.2} s: {:.1} MB/s each way",
        data.len() >> 20,
        took.as_secs_f64(),
        mb_per_s(data.len(), took)
    );
    say!(
        "   client: {} KCP session, {} stream forwarded; server: {} session, {} stream",
        c.sessions_opened,
        c.streams_forwarded,
        s.sessions_opened,
        s.streams_forwarded
    );
    Ok(())
}

/// The pseudo-random bytes the KCP and tunnel parts move.
pub fn bulk_data() -> Vec<u8> {
    let mut x = 0x9e37_79b9u32;
    (0..BULK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

//! `nodelink kcp serve` and `nodelink kcp bench`: raw KCP sessions, no link on top.
//!
//! * `kcp serve --listen ADDR` echoes every stream byte back, on every session, until
//!   SIGINT or SIGTERM (exit 0). Its first stdout line is `listening on <addr>`. A session
//!   idle for [`IDLE_TIMEOUT`] is dropped (KCP has no FIN: a client that went away is
//!   never told apart from a quiet one otherwise), and so is a session whose peer takes
//!   nothing of its echo for [`ECHO_STALL`] (a peer that never reads, or went away with
//!   its window closed), with a WARN naming it: an echo server holds what it echoes for
//!   its peer, so a peer slower than that is treated as one that does not read.
//! * `kcp bench ADDR` sends `--size` pseudo-random bytes (from `--seed`), checks the echo
//!   byte for byte while sending, and prints the throughput and the session's counters
//!   (kcp-go's SNMP names). It fails on a mismatch, a dead session or after `--timeout`.
//!
//! Both work against kcp-go / kcptun peers that use the same cipher, key and FEC settings.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nodelink_kcp::{KcpListener, KcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::cli::{KcpBenchArgs, KcpCommand, KcpServeArgs};
use crate::kcp_args::{counters_line, Describe, Side};
use crate::out::say;
use crate::ping::payload;
use crate::shutdown::Signals;

/// An echo session idle this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A session whose peer takes nothing of its echo this long is dropped.
pub const ECHO_STALL: Duration = Duration::from_secs(10);

/// Bytes per write of the bench, and the size of the read buffers.
const CHUNK: usize = 64 << 10;
/// What a session's echo buffer starts with.
const FIRST_CHUNK: usize = 2 << 10;

/// Runs `nodelink kcp ...`.
pub async fn run(command: KcpCommand) -> anyhow::Result<()> {
    match command {
        KcpCommand::Serve(args) => serve(args).await,
        KcpCommand::Bench(args) => bench(args).await,
    }
}

/// The first address `addr` resolves to.
async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host(addr).await?;
    addrs
        .next()
        .ok_or_else(|| anyhow!("the address resolves to nothing"))
}

async fn serve(args: KcpServeArgs) -> anyhow::Result<()> {
    let session = args
        .kcp
        .flags()
        .session(Side::Server)?
        .with_max_memory(crate::cli::held_budget(args.max_memory));
    let mut signals = Signals::install()?;
    let what = || format!("cannot listen on {}", args.listen);
    let local = resolve(&args.listen).await.with_context(what)?;
    let description = Describe(&session).to_string();
    let mut listener = KcpListener::bind(local, session).await.with_context(what)?;
    let addr = listener.local_addr();
    say!("listening on {addr}");
    tracing::info!(%addr, settings = %description, "serving KCP echo");
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    let _metrics_guard = metrics_stop.clone().drop_guard();
    let live = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    if let Some(at) = &args.metrics {
        let live = std::sync::Arc::clone(&live);
        let collect: crate::metrics::Collect = std::sync::Arc::new(move || {
            let mut v = vec![crate::metrics::Metric::gauge(
                "nodelink_kcp_sessions_echoing",
                "Sessions this server is echoing now.",
                live.load(std::sync::atomic::Ordering::Relaxed) as f64,
            )];
            v.extend(crate::metrics::kcp_snmp());
            v
        });
        crate::metrics::start(at, collect, metrics_stop.clone()).await?;
    }

    let mut sessions = JoinSet::new();
    let warn_limit = std::sync::Arc::new(nodelink_driver::WarnLimiter::new());
    let outcome = loop {
        tokio::select! {
            signal = signals.recv() => {
                tracing::info!("{signal} received, shutting down");
                break Ok(());
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let live = std::sync::Arc::clone(&live);
                    live.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let warn_limit = std::sync::Arc::clone(&warn_limit);
                    sessions.spawn(async move {
                        echo(stream, peer, &warn_limit).await;
                        live.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    });
                }
                Err(e) => break Err(e).context("cannot accept KCP sessions"),
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    };
    sessions.abort_all();
    let _ = crate::out::line(format_args!(
        "counters: {}",
        counters_line(&nodelink_kcp::snmp())
    ));
    outcome
}

/// Echoes one session's bytes until it ends, fails, idles for [`IDLE_TIMEOUT`] or its
/// peer takes nothing for [`ECHO_STALL`].
async fn echo(stream: KcpStream, peer: SocketAddr, warn_limit: &nodelink_driver::WarnLimiter) {
    tracing::info!(%peer, conv = stream.conv(), "session up");
    let (mut r, mut w) = tokio::io::split(stream);
    // The buffer starts small and grows while reads fill it: a session opened by one
    // forged datagram costs little, a bulk one soon reads CHUNK at a time.
    let mut buf = vec![0u8; FIRST_CHUNK];
    let why = loop {
        let n = match tokio::time::timeout(IDLE_TIMEOUT, r.read(&mut buf)).await {
            Ok(Ok(0)) => break "end of stream".to_string(),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break format!("idle for {IDLE_TIMEOUT:?}"),
        };
        match write_or_stall(&mut w, &buf[..n]).await {
            Ok(()) => {}
            Err(Some(e)) => break e.to_string(),
            Err(None) => {
                nodelink_driver::peer_warn!(
                    warn_limit,
                    %peer,
                    "KCP peer never reads its echo (nothing taken for 10 s, its window \
                     closed): session dropped"
                );
                break format!("the peer took nothing of its echo for {ECHO_STALL:?}");
            }
        }
        if n == buf.len() && n < CHUNK {
            buf.resize((2 * n).min(CHUNK), 0);
        }
    };
    let _ = w.shutdown().await;
    let stream = r.unsplit(w);
    tracing::info!(%peer, reason = %why, counters = %counters_line(&stream.stats()), "session down");
}

/// What the bench measured.
struct Measured {
    /// Until the last byte was handed to the session.
    written: Duration,
    /// Until the last echoed byte arrived.
    echoed: Duration,
}

async fn bench(args: KcpBenchArgs) -> anyhow::Result<()> {
    if args.json {
        crate::out::use_json();
    }
    let session = args.kcp.flags().session(Side::Client)?;
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            anyhow!(
                "--timeout {}: must be a positive number of seconds",
                args.timeout
            )
        })?;
    let what = || format!("cannot connect to {}", args.addr);
    let remote = resolve(&args.addr).await.with_context(what)?;
    let description = Describe(&session).to_string();
    let mut stream = KcpStream::connect(remote, session)
        .await
        .with_context(what)?;
    say!("kcp bench {remote}: {} bytes, {description}", args.size);

    let data = payload(args.size, args.seed);
    let start = Instant::now();
    let measured = tokio::time::timeout(timeout, exchange(&mut stream, &data, start)).await;
    let stats = stream.stats();
    let measured = match measured {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            say!("session counters: {}", counters_line(&stats));
            return Err(e);
        }
        Err(_) => {
            say!("session counters: {}", counters_line(&stats));
            bail!(
                "no complete echo within {timeout:?}: {} of {} bytes came back",
                stats.bytes_received,
                args.size
            );
        }
    };
    let mb = args.size as f64 / 1e6;
    let secs = |d: Duration| d.as_secs_f64().max(1e-9);
    let counters: serde_json::Map<String, serde_json::Value> = stats
        .fields()
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).into()))
        .collect();
    crate::out::json(&serde_json::json!({
        "command": "kcp bench",
        "remote": remote.to_string(),
        "settings": description,
        "bytes": args.size,
        "written_s": measured.written.as_secs_f64(),
        "echoed_s": measured.echoed.as_secs_f64(),
        "up_mb_per_s": mb / secs(measured.written),
        "down_mb_per_s": mb / secs(measured.echoed),
        "counters": counters,
    }))?;
    say!(
        "echo verified: {} bytes in {:.3} s",
        args.size,
        measured.echoed.as_secs_f64()
    );
    say!(
        "throughput: up {:.2} MB/s, down {:.2} MB/s, {:.2} MB/s both ways (writes done after {:.3} s)",
        mb / secs(measured.written),
        mb / secs(measured.echoed),
        2.0 * mb / secs(measured.echoed),
        measured.written.as_secs_f64()
    );
    say!("session counters: {}", counters_line(&stats));
    // Best effort: let the session flush its last ACKs; the linger bounds the rest.
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.shutdown()).await;
    Ok(())
}

/// Writes all of `data`: `Err(None)` if one write took nothing for [`ECHO_STALL`].
async fn write_or_stall<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    mut data: &[u8],
) -> Result<(), Option<std::io::Error>> {
    while !data.is_empty() {
        // `write` is cancel-safe: on a timeout nothing of this call was written.
        match tokio::time::timeout(ECHO_STALL, w.write(data)).await {
            Ok(Ok(0)) => return Err(Some(std::io::ErrorKind::WriteZero.into())),
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(Some(e)),
            Err(_) => return Err(None),
        }
    }
    Ok(())
}

/// Writes `data` and reads the echo at the same time, comparing as it comes.
async fn exchange(stream: &mut KcpStream, data: &[u8], start: Instant) -> anyhow::Result<Measured> {
    let (mut r, mut w) = tokio::io::split(stream);
    let write = async {
        for chunk in data.chunks(CHUNK) {
            w.write_all(chunk).await.context("write")?;
        }
        w.flush().await.context("write")?;
        anyhow::Ok(start.elapsed())
    };
    let read = async {
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0;
        while got < data.len() {
            let n = r.read(&mut buf).await.context("read")?;
            if n == 0 {
                bail!(
                    "the session ended after {got} of {} echoed bytes",
                    data.len()
                );
            }
            let Some(want) = data.get(got..got + n) else {
                bail!(
                    "the echo is longer than what was sent: {} bytes or more, sent {}",
                    got + n,
                    data.len()
                );
            };
            if let Some(at) = want.iter().zip(&buf[..n]).position(|(a, b)| a != b) {
                bail!(
                    "echo differs from what was sent at byte {} of {}",
                    got + at,
                    data.len()
                );
            }
            got += n;
        }
        anyhow::Ok(start.elapsed())
    };
    let (written, echoed) = tokio::try_join!(write, read)?;
    Ok(Measured { written, echoed })
}

//! `nodelink-bench nt`: the endpoint transport (nodelink-transport) against raw TCP, on
//! loopback, in one process.
//!
//! ```text
//! nodelink-bench nt [--quick] [--json] [--runs N] [--size BYTES] [--scenarios a,b,..]
//! ```
//!
//! Scenarios:
//! * `nt_rtt`: serial ping-pong of `--size` bytes. `nodelink_transport` sends over one
//!   lightweight connection to an endpoint that echoes on its reverse connection, as the
//!   conformance suite's echo server does; `raw_tcp` is the harness's `u32 length | bytes`
//!   echo on one plain socket, measured in the same run. Figures: p50, p99 and mean round
//!   trip in microseconds, with the ratio to raw TCP (target: at most 1.3x).
//! * `nt_rtt_2proc`: the same with the echo server in a second process: `nodelink nt
//!   echo` (found next to this binary, `cargo build --release -p nodelink-cli`) for the
//!   transport, the harness's own raw TCP echo server (`nodelink-bench serve`) for raw TCP.
//! * `nt_parallel_connects`: the conformance suite's ParallelConnects pattern: N tasks
//!   at once each connect to an echo server of another transport, send two messages and
//!   close; the figure is connections per second until the client has seen all 4N events
//!   of the reverse connections (opened, two echoes, closed). A warm-up connection opens
//!   the heavyweight socket first; whenever no connection is open during the run the
//!   protocol may tear the socket down and rebuild it, and that cost is part of the figure.
//!
//! Every implementation is measured `--runs` times, interleaved, and the median is kept.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use nodelink_transport::{
    Config, Connection, ConnectionId, EndPoint, EndPointAddress, Event, Transport,
};
use tokio::task::JoinSet;

use crate::impls::ServerMode;
use crate::report;
use crate::runner::{self, Impl};
use crate::scenarios::{medians, Figure};

/// Options of `nodelink-bench nt`.
#[derive(clap::Args)]
pub struct NtArgs {
    /// Small sizes, one run (a smoke test).
    #[arg(long)]
    quick: bool,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    json: bool,
    /// Repeat every measurement N times and report the median (default 3, 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Payload bytes of each ping.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Comma-separated scenario ids (default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
}

/// The scenarios, by id.
const SCENARIOS: [&str; 3] = ["nt_rtt", "nt_rtt_2proc", "nt_parallel_connects"];

/// The implementation id of nodelink-transport in the figures.
const NT: &str = "nodelink_transport";

/// How much work each scenario does.
#[derive(Clone, Copy)]
struct Sizes {
    rtt: usize,
    connects: usize,
}

/// Gives up on one scenario run after this long (something is stuck).
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Runs the nt benchmark.
pub async fn run(args: &NtArgs) -> Result<()> {
    let sizes = if args.quick {
        Sizes {
            rtt: 2_000,
            connects: 1_000,
        }
    } else {
        Sizes {
            rtt: 20_000,
            connects: 10_000,
        }
    };
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let scenarios: Vec<&str> = if args.scenarios.is_empty() {
        SCENARIOS.to_vec()
    } else {
        args.scenarios
            .iter()
            .map(|s| {
                SCENARIOS
                    .into_iter()
                    .find(|c| c == s)
                    .with_context(|| format!("unknown scenario {s:?}"))
            })
            .collect::<Result<_>>()?
    };
    let started = Instant::now();
    let mut figures = Vec::new();
    for scenario in scenarios {
        let imps: &[&'static str] = if scenario.starts_with("nt_rtt") {
            &["raw_tcp", NT]
        } else {
            &[NT]
        };
        let mut all = Vec::new();
        for _ in 0..runs {
            // Interleave implementations run by run, so noise spreads evenly.
            for &imp in imps {
                let t = Instant::now();
                let figs = tokio::time::timeout(RUN_LIMIT, measure(scenario, imp, sizes, args))
                    .await
                    .map_err(|_| anyhow::anyhow!("no result within {RUN_LIMIT:?}"))
                    .and_then(|r| r)
                    .with_context(|| format!("{scenario} / {imp}"))?;
                eprintln!(
                    "  {:<24} {:<20} {:>6.2}s",
                    scenario,
                    imp,
                    t.elapsed().as_secs_f64()
                );
                all.extend(figs);
            }
        }
        figures.extend(medians(&all));
    }
    if args.json {
        print!("{}", report::json_lines(&figures));
    } else {
        print!("{}", report::table(&figures));
        println!("(total {:.1}s)", started.elapsed().as_secs_f64());
    }
    Ok(())
}

async fn measure(
    scenario: &'static str,
    imp: &'static str,
    sizes: Sizes,
    args: &NtArgs,
) -> Result<Vec<Figure>> {
    let fig = |metric, value| Figure {
        scenario: scenario.to_string(),
        imp,
        metric,
        value,
    };
    let payload = Bytes::from(vec![0xa5u8; args.size]);
    let warm = (sizes.rtt / 10).max(100);
    let two_proc = scenario == "nt_rtt_2proc";
    match (scenario, imp) {
        ("nt_rtt" | "nt_rtt_2proc", "raw_tcp") => {
            let running = runner::start(Impl::RawTcp, ServerMode::PerConnection, two_proc).await?;
            running.client.rtt_conn(payload.clone(), warm).await?;
            let times = running.client.rtt_conn(payload, sizes.rtt).await?;
            let (p50, p99, mean) = latency(times);
            Ok(vec![
                fig("p50_us", p50),
                fig("p99_us", p99),
                fig("mean_us", mean),
            ])
        }
        ("nt_rtt" | "nt_rtt_2proc", _) => {
            let times = if two_proc {
                nt_rtt_2proc(payload, warm, sizes.rtt).await?
            } else {
                nt_rtt(payload, warm, sizes.rtt).await?
            };
            let (p50, p99, mean) = latency(times);
            Ok(vec![
                fig("p50_us", p50),
                fig("p99_us", p99),
                fig("mean_us", mean),
            ])
        }
        _ => {
            let per_second = nt_parallel_connects(sizes.connects).await?;
            Ok(vec![fig("conns_per_s", per_second)])
        }
    }
}

/// A transport on loopback with one endpoint.
async fn endpoint() -> Result<(Transport, EndPoint)> {
    let transport = Transport::bind("127.0.0.1", 0, Config::default())
        .await
        .context("bind")?;
    let endpoint = transport.open_endpoint().await.context("new endpoint")?;
    Ok((transport, endpoint))
}

/// The conformance suite's echo server: connect back on every opened connection, echo
/// every message there, close the reverse connection when the incoming one closes. A
/// failed connect back ends it with that error: a client waiting for the echo would
/// otherwise wait until the scenario's time limit.
async fn echo_server(endpoint: EndPoint) -> Result<()> {
    let mut reverse: std::collections::HashMap<ConnectionId, Connection> = Default::default();
    while let Ok(event) = endpoint.receive().await {
        match event {
            Event::ConnectionOpened { id, address, .. } => match endpoint.connect(&address).await {
                Ok(c) => {
                    reverse.insert(id, c);
                }
                Err(e) => bail!("echo server: cannot connect back: {e}"),
            },
            Event::Received { id, data } => {
                if let Some(c) = reverse.get(&id) {
                    if c.send(&data).await.is_err() {
                        reverse.remove(&id);
                    }
                }
            }
            Event::ConnectionClosed { id } => {
                if let Some(c) = reverse.remove(&id) {
                    c.close().await;
                }
            }
            Event::EndPointClosed => return Ok(()),
            Event::Error { .. } => {}
        }
    }
    Ok(())
}

/// Waits for the next message on `reverse` (set from the first opened connection).
async fn next_message(endpoint: &EndPoint, reverse: &mut Option<ConnectionId>) -> Result<usize> {
    loop {
        match endpoint.receive().await? {
            Event::ConnectionOpened { id, .. } => {
                reverse.get_or_insert(id);
            }
            Event::Received { id, data } if Some(id) == *reverse => {
                return Ok(data.iter().map(Bytes::len).sum());
            }
            Event::Error { message, .. } => bail!("error event: {message}"),
            Event::EndPointClosed => bail!("endpoint closed"),
            _ => {}
        }
    }
}

/// `warm` then `n` serial round trips over one lightweight connection.
async fn nt_rtt(payload: Bytes, warm: usize, n: usize) -> Result<Vec<Duration>> {
    let (server_transport, server) = endpoint().await?;
    let echo = tokio::spawn(echo_server(server.clone()));
    let times = ping(server.address(), payload, warm, n).await;
    server_transport.close().await;
    echo.abort();
    times
}

/// The same against `nodelink nt echo` in a child process.
async fn nt_rtt_2proc(payload: Bytes, warm: usize, n: usize) -> Result<Vec<Duration>> {
    let mut echo = crate::cli_child::start(
        &["nt", "echo", "--listen", "127.0.0.1:0"],
        &["ADDRESS "],
        false,
    )
    .await?;
    let address: EndPointAddress = echo
        .first
        .parse()
        .map_err(|e| anyhow::anyhow!("bad address {:?}: {e}", echo.first))?;
    let times = ping(&address, payload, warm, n).await;
    let _ = echo.child.kill().await;
    times
}

/// Serial round trips from a new endpoint to the echo endpoint `to`.
pub(crate) async fn ping(
    to: &EndPointAddress,
    payload: Bytes,
    warm: usize,
    n: usize,
) -> Result<Vec<Duration>> {
    let (client_transport, client) = endpoint().await?;
    let conn = client.connect(to).await?;
    let mut reverse = None;
    let chunks = [payload.clone()];
    let mut times = Vec::with_capacity(n);
    for i in 0..warm + n {
        let start = Instant::now();
        conn.send(&chunks).await?;
        let got = next_message(&client, &mut reverse).await?;
        ensure!(
            got == payload.len(),
            "echo of {got} bytes, sent {}",
            payload.len()
        );
        if i >= warm {
            times.push(start.elapsed());
        }
    }
    conn.close().await;
    client_transport.close().await;
    Ok(times)
}

/// ParallelConnects: `n` tasks each connect to an echo server, send two messages and
/// close; connections per second until the client has seen, for every one of them, the
/// echo server's reverse connection open, both echoes and its close.
async fn nt_parallel_connects(n: usize) -> Result<f64> {
    let (server_transport, server) = endpoint().await?;
    let (client_transport, client) = endpoint().await?;
    let address: EndPointAddress = server.address().clone();
    let echo = tokio::spawn(echo_server(server));
    let one = |client: EndPoint, address: EndPointAddress, i: usize| async move {
        let conn = client.connect(&address).await?;
        let msg = Bytes::from(format!("ping{i}"));
        conn.send(std::slice::from_ref(&msg)).await?;
        conn.send(&[msg]).await?;
        conn.close().await;
        Ok::<_, anyhow::Error>(())
    };
    // Warm-up: the heavyweight socket exists (it may still be torn down and rebuilt
    // during the run whenever no connection is open, as the protocol says).
    one(client.clone(), address.clone(), 0).await?;
    collect_events(&client, 4).await?;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 1..=n {
        tasks.spawn(one(client.clone(), address.clone(), i));
    }
    let events = collect_events(&client, 4 * n);
    let run = async {
        let (events, joined) = tokio::join!(events, async {
            while let Some(joined) = tasks.join_next().await {
                joined??;
            }
            Ok::<_, anyhow::Error>(())
        });
        events.and(joined)
    };
    let mut echo = echo;
    tokio::select! {
        r = run => r?,
        ended = &mut echo => bail!("the echo server stopped: {:?}", ended.map(|r| r.err())),
    }
    let elapsed = start.elapsed();
    client_transport.close().await;
    server_transport.close().await;
    echo.abort();
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// Waits for `n` events of the echo server's reverse connections (opened, two echoes,
/// closed for each), failing on any error event.
async fn collect_events(client: &EndPoint, n: usize) -> Result<()> {
    let (mut opened, mut received, mut closed) = (0usize, 0usize, 0usize);
    while opened + received + closed < n {
        match client.receive().await? {
            Event::ConnectionOpened { .. } => opened += 1,
            Event::Received { .. } => received += 1,
            Event::ConnectionClosed { .. } => closed += 1,
            Event::Error { message, .. } => bail!("error event: {message}"),
            Event::EndPointClosed => bail!("endpoint closed"),
        }
    }
    ensure!(
        received == 2 * closed && opened == closed,
        "{opened} opened, {received} received, {closed} closed"
    );
    Ok(())
}

/// p50, p99 (nearest rank) and mean, in microseconds.
fn latency(mut times: Vec<Duration>) -> (f64, f64, f64) {
    times.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let n = times.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let rank = |p: usize| ((n * p).div_ceil(100)).clamp(1, n) - 1;
    let mean = times.iter().map(|d| us(*d)).sum::<f64>() / n as f64;
    (us(times[rank(50)]), us(times[rank(99)]), mean)
}

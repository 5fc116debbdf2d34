//! The scenarios and the figures each one produces.

use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

use crate::impls::ServerMode;
use crate::runner::{self, Impl};

/// Counts every heap allocation, for the idle-connection memory scenario.
#[global_allocator]
pub static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Serial round trip, 64-byte message, one connection.
    RttConn,
    /// Serial lightweight round trip (a new stream per request).
    RttAsk1,
    /// 64 concurrent requesters doing lightweight round trips.
    ConcurrentAsk1,
    /// One connection streaming 1 MiB messages.
    Bulk1Mib,
    /// 1000 connections each sending 4 KiB at once.
    Fairness1000,
    /// Heap per idle connection.
    IdleConnMemory,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 6] = [
        Scenario::RttConn,
        Scenario::RttAsk1,
        Scenario::ConcurrentAsk1,
        Scenario::Bulk1Mib,
        Scenario::Fairness1000,
        Scenario::IdleConnMemory,
    ];

    /// The identifier (without the `_2proc` suffix).
    pub fn id(self) -> &'static str {
        match self {
            Scenario::RttConn => "rtt_conn",
            Scenario::RttAsk1 => "rtt_ask1",
            Scenario::ConcurrentAsk1 => "concurrent_ask1",
            Scenario::Bulk1Mib => "bulk_1mib",
            Scenario::Fairness1000 => "fairness_1000",
            Scenario::IdleConnMemory => "idle_conn_memory",
        }
    }

    /// Parses an identifier.
    pub fn from_id(id: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.id() == id)
    }

    fn server_mode(self) -> ServerMode {
        match self {
            Scenario::RttAsk1 | Scenario::ConcurrentAsk1 => ServerMode::Lightweight,
            Scenario::IdleConnMemory => ServerMode::Hold,
            _ => ServerMode::PerConnection,
        }
    }
}

/// How much work each scenario does.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Round trips in the serial scenarios.
    pub rtt: usize,
    /// Round trips per worker in the concurrent scenario (64 workers).
    pub per_worker: usize,
    /// 1 MiB messages in the bulk scenario.
    pub bulk: usize,
    /// Idle connections opened.
    pub idle: usize,
    /// 4 KiB messages each of the 1000 connections sends in the fairness scenario.
    pub fair_msgs: usize,
}

impl Sizes {
    /// For `--quick`.
    pub const QUICK: Sizes = Sizes {
        rtt: 5_000,
        per_worker: 200,
        bulk: 128,
        idle: 20_000,
        fair_msgs: 8,
    };
    /// The full run.
    pub const FULL: Sizes = Sizes {
        rtt: 20_000,
        per_worker: 500,
        bulk: 512,
        idle: 100_000,
        fair_msgs: 32,
    };
}

/// One figure.
#[derive(Clone, Debug)]
pub struct Figure {
    /// Scenario id, with `_2proc` for two-process runs.
    pub scenario: String,
    /// Implementation id.
    pub imp: &'static str,
    /// Metric id.
    pub metric: &'static str,
    /// The value.
    pub value: f64,
}

/// The median of each (scenario, implementation, metric) over repeated runs, in
/// first-seen order.
pub fn medians(figures: &[Figure]) -> Vec<Figure> {
    let same =
        |a: &Figure, b: &Figure| a.scenario == b.scenario && a.imp == b.imp && a.metric == b.metric;
    let mut out: Vec<Figure> = Vec::new();
    for f in figures {
        if out.iter().any(|o| same(o, f)) {
            continue;
        }
        let mut values: Vec<f64> = figures
            .iter()
            .filter(|g| same(g, f))
            .map(|g| g.value)
            .collect();
        values.sort_by(|a, b| a.total_cmp(b));
        out.push(Figure {
            value: values[values.len() / 2],
            ..f.clone()
        });
    }
    out
}

/// Runs one scenario against one implementation and returns its figures.
pub async fn run(
    scenario: Scenario,
    imp: Impl,
    sizes: Sizes,
    two_proc: bool,
) -> Result<Vec<Figure>> {
    let name = if two_proc {
        format!("{}_2proc", scenario.id())
    } else {
        scenario.id().to_string()
    };
    let fig = |metric, value| Figure {
        scenario: name.clone(),
        imp: imp.id(),
        metric,
        value,
    };
    let running = runner::start(imp, scenario.server_mode(), two_proc).await?;
    let client = &running.client;
    let payload = Bytes::from(vec![0xa5u8; 64]);
    let figures = match scenario {
        Scenario::RttConn | Scenario::RttAsk1 => {
            let warm = (sizes.rtt / 10).max(100);
            let times = if scenario == Scenario::RttConn {
                client.rtt_conn(payload.clone(), warm).await?;
                client.rtt_conn(payload, sizes.rtt).await?
            } else {
                client.rtt_ask1(payload.clone(), warm).await?;
                client.rtt_ask1(payload, sizes.rtt).await?
            };
            let (p50, p99, mean) = latency(times);
            vec![fig("p50_us", p50), fig("p99_us", p99), fig("mean_us", mean)]
        }
        Scenario::ConcurrentAsk1 => {
            const WORKERS: usize = 64;
            client.concurrent(payload.clone(), WORKERS, 10).await?;
            let elapsed = client
                .concurrent(payload, WORKERS, sizes.per_worker)
                .await?;
            let total = (WORKERS * sizes.per_worker) as f64;
            vec![fig("req_per_s", total / elapsed.as_secs_f64())]
        }
        Scenario::Bulk1Mib => {
            client.bulk(1 << 20, 8).await?;
            let elapsed = client.bulk(1 << 20, sizes.bulk).await?;
            vec![fig("mib_per_s", sizes.bulk as f64 / elapsed.as_secs_f64())]
        }
        Scenario::Fairness1000 => {
            const CONNS: usize = 1000;
            const SIZE: usize = 4 << 10;
            client.fairness(100, SIZE, 2).await?;
            let times = client.fairness(CONNS, SIZE, sizes.fair_msgs).await?;
            let slowest = times.iter().max().copied().unwrap_or_default();
            let fastest = times.iter().min().copied().unwrap_or_default();
            let mib = (CONNS * SIZE * sizes.fair_msgs) as f64 / (1 << 20) as f64;
            vec![
                fig("mib_per_s", mib / slowest.as_secs_f64()),
                fig(
                    "slowest_over_fastest",
                    slowest.as_secs_f64() / fastest.as_secs_f64().max(1e-9),
                ),
            ]
        }
        Scenario::IdleConnMemory => {
            let conns = idle_count(imp, sizes.idle);
            // Let what earlier scenarios tore down finish freeing before measuring.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let region = Region::new(GLOBAL);
            let idle = client.idle(conns).await?;
            // Let the server side finish what the last exchanges started.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let change = region.change();
            let grown = change.bytes_allocated as f64 - change.bytes_deallocated as f64;
            // In one process both ends of every connection live here: report per end.
            let ends = if two_proc { 1.0 } else { 2.0 };
            let mut figures = vec![fig("bytes_per_conn", grown / (ends * conns as f64))];
            if !two_proc {
                let cpu = idle_cpu_ms_per_s().await;
                if let Some(cpu) = cpu {
                    figures.push(fig("idle_cpu_ms_per_s", cpu));
                }
            }
            drop(idle);
            figures
        }
    };
    drop(running);
    Ok(figures)
}

/// How many idle streams to open: every implementation gets the full count except where
/// that is impractical, and the figure is per stream either way. Raw TCP: each socket is a
/// file descriptor (both ends in one process). yamux: opening a stream scans every open
/// stream, so opening 100 000 takes over a minute; 20 000 show the per-stream cost.
fn idle_count(imp: Impl, wanted: usize) -> usize {
    match imp {
        Impl::RawTcp => wanted.min(crate::impls::raw_tcp::MAX_IDLE_SOCKETS),
        Impl::Yamux => wanted.min(20_000),
        _ => wanted,
    }
}

fn latency(mut times: Vec<Duration>) -> (f64, f64, f64) {
    times.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let n = times.len().max(1);
    let p50 = us(times[n / 2]);
    let p99 = us(times[(n * 99 / 100).min(n - 1)]);
    let mean = times.iter().map(|d| us(*d)).sum::<f64>() / n as f64;
    (p50, p99, mean)
}

/// CPU time this process uses per second while everything is idle (Linux only).
async fn idle_cpu_ms_per_s() -> Option<f64> {
    let before = cpu_ticks()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = cpu_ticks()?;
    // Clock ticks are 10 ms on Linux (USER_HZ = 100).
    Some((after - before) as f64 * 10.0)
}

fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

//! `nodelink-bench`: every implementation, every scenario, side by side in one run.
//!
//! ```text
//! nodelink-bench [--quick] [--json] [--runs N] [--runtime multi|current]
//!                [--scenarios a,b,..] [--impls x,y,..] [--no-2proc]
//! nodelink-bench kcp [--quick] [--json] [--runs N] [--scenarios a,b,..]   (see kcp.rs)
//! nodelink-bench nt [--quick] [--json] ...                                  (see nt.rs)
//! nodelink-bench tunnel [--quick] [--json] ...                              (see tunnel.rs)
//! nodelink-bench hostile [--quick] [--json] [--seconds N] [--soak S]      (see hostile.rs)
//! nodelink-bench serve --impl IMPL --mode lightweight|per-connection   (used for _2proc)
//! ```
//!
//! Figures are absolute values plus the ratio to raw TCP measured in the same run: this
//! machine is shared and noisy, ratios within one run are what can be compared.

mod cli_child;
mod hostile;
mod hostile_attacks;
mod hostile_kcp;
mod impls;
mod kcp;
mod kcp_oneway;
mod nt;
mod report;
mod runner;
mod scenarios;
mod tunnel;

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use impls::ServerMode;
use runner::Impl;
use scenarios::{Figure, Scenario, Sizes};

#[derive(Parser)]
#[command(
    name = "nodelink-bench",
    about = "nodelink vs raw TCP, yamux and h2, side by side"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Small sizes: the whole run finishes in well under a minute (a smoke test).
    #[arg(long)]
    quick: bool,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    json: bool,
    /// Repeat every measurement N times and report the median.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Tokio runtime flavour shared by every implementation.
    #[arg(long, value_enum, default_value_t = Flavour::Multi)]
    runtime: Flavour,
    /// Comma-separated scenario ids (default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Comma-separated implementation ids (default: all).
    #[arg(long, value_delimiter = ',')]
    impls: Vec<String>,
    /// Skip the two-process variants.
    #[arg(long = "no-2proc")]
    no_two_proc: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one implementation's server (the other process of the `_2proc` scenarios).
    Serve {
        /// Implementation id.
        #[arg(long = "impl")]
        imp: String,
        /// How to serve streams.
        #[arg(long, value_enum)]
        mode: Mode,
    },
    /// KCP: nodelink-kcp vs kcp-go and tokio_kcp (see `kcp.rs`).
    Kcp(kcp::KcpArgs),
    /// Endpoint transport: nodelink-transport vs raw TCP (see `nt.rs`).
    Nt(nt::NtArgs),
    /// Tunnel: nodelink tunnel vs kcptun (see `tunnel.rs`).
    Tunnel(tunnel::TunnelArgs),
    /// The real servers under hostile load, with a good client alongside (see `hostile.rs`).
    Hostile(hostile::HostileArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Lightweight,
    PerConnection,
    Hold,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Flavour {
    /// Multi-threaded, two workers (the machine has two cores).
    Multi,
    /// Current-thread.
    Current,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("nodelink-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    let runtime = match args.runtime {
        Flavour::Multi => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
        Flavour::Current => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(async move {
        match &args.command {
            Some(Cmd::Serve { imp, mode }) => serve(imp, *mode).await,
            Some(Cmd::Kcp(kcp_args)) => kcp::run(kcp_args).await,
            Some(Cmd::Nt(nt_args)) => nt::run(nt_args).await,
            Some(Cmd::Tunnel(tunnel_args)) => tunnel::run(tunnel_args).await,
            Some(Cmd::Hostile(hostile_args)) => hostile::run(hostile_args).await,
            None => bench(&args).await,
        }
    })
}

async fn serve(imp: &str, mode: Mode) -> Result<()> {
    let imp = Impl::from_id(imp).with_context(|| format!("unknown implementation {imp}"))?;
    let mode = match mode {
        Mode::Lightweight => ServerMode::Lightweight,
        Mode::PerConnection => ServerMode::PerConnection,
        Mode::Hold => ServerMode::Hold,
    };
    let bind = "127.0.0.1:0".parse().expect("literal address");
    let (addr, _server) = runner::start_server(imp, bind, mode).await?;
    println!("listening on {addr}");
    // Until the parent kills us (or stdin closes, if it was piped).
    std::future::pending::<()>().await;
    Ok(())
}

async fn bench(args: &Args) -> Result<()> {
    let sizes = if args.quick {
        Sizes::QUICK
    } else {
        Sizes::FULL
    };
    let scenarios = select(
        &args.scenarios,
        &Scenario::ALL,
        Scenario::from_id,
        "scenario",
    )?;
    let impls = select(&args.impls, &Impl::ALL, Impl::from_id, "impl")?;
    let started = Instant::now();
    let mut figures = Vec::new();
    for two_proc in [false, true] {
        if two_proc && args.no_two_proc {
            continue;
        }
        for &scenario in &scenarios {
            let mut runs: Vec<Vec<Figure>> = vec![Vec::new(); impls.len()];
            for _ in 0..args.runs.max(1) {
                // Interleave implementations run by run, so noise spreads evenly.
                for (i, &imp) in impls.iter().enumerate() {
                    if two_proc && imp == Impl::NodelinkDuplex {
                        continue;
                    }
                    let t = Instant::now();
                    let figs = scenarios::run(scenario, imp, sizes, two_proc)
                        .await
                        .with_context(|| format!("{} / {}", scenario.id(), imp.id()))?;
                    eprintln!(
                        "  {:<24} {:<16} {:>6.2}s",
                        figs.first().map_or("", |f| f.scenario.as_str()),
                        imp.id(),
                        t.elapsed().as_secs_f64()
                    );
                    runs[i].extend(figs);
                }
            }
            for per_impl in runs {
                figures.extend(scenarios::medians(&per_impl));
            }
        }
    }
    if args.json {
        print!("{}", report::json_lines(&figures));
    } else {
        print!("{}", report::table(&figures));
        println!("(total {:.1}s)", started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn select<T: Copy>(
    wanted: &[String],
    all: &[T],
    parse: fn(&str) -> Option<T>,
    what: &str,
) -> Result<Vec<T>> {
    if wanted.is_empty() {
        return Ok(all.to_vec());
    }
    wanted
        .iter()
        .map(|w| match parse(w) {
            Some(t) => Ok(t),
            None => bail!("unknown {what} {w:?}"),
        })
        .collect()
}

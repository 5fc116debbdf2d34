//! `nodelink serve`: an echo server for NEO-style requests.
//!
//! Every request with code `c` (answer bit clear) is answered with code `c | 0x8000` and the
//! same payload, whether it came on a lightweight connection (`ask1`) or on a full
//! connection carrying many requests. Packets with the answer bit set (answers, Errors) are
//! dropped, never answered.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use anyhow::Context;
use nodelink::{Config, Link, LinkListener, ANSWER_BIT};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::kcp_args::{bind_kcp, Side};
use crate::out::say;
use crate::shutdown::{Signals, SHUTDOWN_GRACE};
use crate::tls_args;

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let tls = args.tls.settings()?;
    let kcp = args.kcp.session(Side::Server)?;
    // Handlers go in before the address is printed: whoever reads it may signal at once.
    let mut signals = Signals::install()?;
    let max_memory = crate::cli::held_budget(args.max_memory);
    let config = Config::default()
        .with_version(args.protocol_version)
        .with_dialect(args.dialect.into())
        .with_max_links(args.max_links.map(|n| n as usize))
        .with_max_memory(max_memory)
        .with_idle_timeout(
            args.idle_timeout
                .map(|s| std::time::Duration::from_secs(u64::from(s))),
        );
    let mut listener = match kcp {
        Some(session) => bind_kcp(&args.listen, session, config).await?,
        None => Box::new(tls_args::bind(&args.listen, config, tls.as_ref()).await?),
    };
    let addr = listener.local_addr();
    say!("listening on {addr}");
    tracing::info!(%addr, tls = tls.is_some(), kcp = args.kcp.kcp, version = args.protocol_version, dialect = ?args.dialect, "serving");

    let stop = CancellationToken::new();
    let counters = Arc::new(Counters::default());
    counters.memory_budget.store(max_memory as u64, Relaxed);
    if let Some(at) = &args.metrics {
        let counters = Arc::clone(&counters);
        let kcp = args.kcp.kcp;
        let collect: crate::metrics::Collect = Arc::new(move || {
            let mut v = counters.metrics();
            if kcp {
                v.extend(crate::metrics::kcp_snmp());
            }
            v
        });
        crate::metrics::start(at, collect, stop.child_token()).await?;
    }
    let mut links = JoinSet::new();
    // The listener's gauges reach the metrics once a second (and at every accept).
    let mut refresh = tokio::time::interval(std::time::Duration::from_secs(1));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            _ = refresh.tick() => counters.refresh(listener.as_ref()),
            signal = signals.recv() => {
                tracing::info!("{signal} received, shutting down");
                break Ok(());
            }
            accepted = listener.accept() => match accepted {
                Ok(link) => {
                    counters.refresh(listener.as_ref());
                    counters.links_accepted.fetch_add(1, Relaxed);
                    counters.links_open.fetch_add(1, Relaxed);
                    let (counters, stop) = (Arc::clone(&counters), stop.clone());
                    links.spawn(async move {
                        let stats = serve_link(link, stop).await;
                        counters.links_open.fetch_sub(1, Relaxed);
                        counters.packets_in.fetch_add(stats.packets_in, Relaxed);
                        counters.packets_out.fetch_add(stats.packets_out, Relaxed);
                    });
                }
                Err(e) => break Err(e).context("cannot accept links"),
            },
            Some(_) = links.join_next(), if !links.is_empty() => {}
        }
    };

    drop(listener);
    stop.cancel();
    let drain = async { while links.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!("links did not close within {SHUTDOWN_GRACE:?}; dropping them");
        links.abort_all();
    }
    outcome
}

/// Answers every request of one link until it ends or `stop` is cancelled, then closes the
/// link gracefully (queued answers are flushed).
pub async fn serve_link(link: Link, stop: CancellationToken) -> nodelink::LinkStats {
    let name = link_name(&link);
    tracing::info!(link = %name, "link up");
    let why = loop {
        let request = tokio::select! {
            biased;
            r = link.recv1_stateless() => r,
            _ = stop.cancelled() => break "server stopping".to_string(),
        };
        let request = match request {
            Ok(r) => r,
            Err(e) => break crate::one_line(&e.into()),
        };
        if nodelink::is_answer(request.code()) {
            // Answers and Errors are never answered, or two peers could bounce them forever.
            continue;
        }
        let code = request.code() | ANSWER_BIT;
        let payload = request.payload().clone();
        let reply = tokio::select! {
            biased;
            r = request.reply_packet(code, payload) => r,
            _ = stop.cancelled() => break "server stopping".to_string(),
        };
        if let Err(e) = reply {
            if e.is_link_gone() {
                break crate::one_line(&e.into());
            }
            tracing::debug!(link = %name, error = &e as &dyn std::error::Error, "answer not sent");
        }
    };
    link.close().await;
    let stats = link.stats();
    tracing::info!(
        link = %name,
        reason = %why,
        packets_in = stats.packets_in,
        packets_out = stats.packets_out,
        "link down"
    );
    stats
}

/// What `--metrics` exports for `serve`: links, and packets of the links that ended.
#[derive(Default)]
struct Counters {
    links_open: AtomicU64,
    links_accepted: AtomicU64,
    handshakes_failed: AtomicU64,
    memory_held: AtomicU64,
    memory_budget: AtomicU64,
    packets_in: AtomicU64,
    packets_out: AtomicU64,
}

impl Counters {
    /// Copies the listener's gauges.
    fn refresh(&self, listener: &dyn LinkListener) {
        self.handshakes_failed
            .store(listener.failed_handshakes(), Relaxed);
        self.memory_held
            .store(listener.memory_held() as u64, Relaxed);
    }

    fn metrics(&self) -> Vec<crate::metrics::Metric> {
        use crate::metrics::Metric;
        vec![
            Metric::gauge(
                "nodelink_links",
                "Links being served now.",
                self.links_open.load(Relaxed) as f64,
            ),
            Metric::counter(
                "nodelink_links_accepted_total",
                "Links accepted (handshake done).",
                self.links_accepted.load(Relaxed),
            ),
            Metric::counter(
                "nodelink_handshakes_failed_total",
                "Incoming links that failed their handshake (refreshed every second).",
                self.handshakes_failed.load(Relaxed),
            ),
            Metric::gauge(
                "nodelink_memory_held_bytes",
                "Bytes the links hold against the memory budget: requests not yet handled \
                 and answers not yet taken by clients (refreshed every second).",
                self.memory_held.load(Relaxed) as f64,
            ),
            Metric::gauge(
                "nodelink_memory_budget_bytes",
                "The budget memory_held is held to (two fifths of --max-memory).",
                self.memory_budget.load(Relaxed) as f64,
            ),
            Metric::counter(
                "nodelink_packets_in_total",
                "Packets received on links that have ended.",
                self.packets_in.load(Relaxed),
            ),
            Metric::counter(
                "nodelink_packets_out_total",
                "Packets sent on links that have ended.",
                self.packets_out.load(Relaxed),
            ),
        ]
    }
}

fn link_name(link: &Link) -> String {
    match link.remote_addr() {
        Some(a) => a.to_string(),
        None => "?".to_string(),
    }
}

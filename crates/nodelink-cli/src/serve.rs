//! `nodelink serve`: an echo server for NEO-style requests.
//!
//! Every request with code `c` (answer bit clear) is answered with code `c | 0x8000` and the
//! same payload, whether it came on a lightweight connection (`ask1`) or on a full
//! connection carrying many requests. Packets with the answer bit set (answers, Errors) are
//! dropped, never answered.

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
    let config = Config::default()
        .with_version(args.protocol_version)
        .with_dialect(args.dialect.into())
        .with_max_links(args.max_links.map(|n| n as usize))
        .with_max_memory(args.max_memory.unwrap_or(Config::default().max_memory))
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
    let mut links = JoinSet::new();
    let outcome = loop {
        tokio::select! {
            signal = signals.recv() => {
                tracing::info!("{signal} received, shutting down");
                break Ok(());
            }
            accepted = listener.accept() => match accepted {
                Ok(link) => {
                    links.spawn(serve_link(link, stop.clone()));
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
pub async fn serve_link(link: Link, stop: CancellationToken) {
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
}

fn link_name(link: &Link) -> String {
    match link.remote_addr() {
        Some(a) => a.to_string(),
        None => "?".to_string(),
    }
}

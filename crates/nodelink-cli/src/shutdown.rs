//! How every long-running command stops: on SIGINT or SIGTERM (Ctrl-C elsewhere), it stops
//! accepting, tells its peers goodbye and gives what is in flight [`SHUTDOWN_GRACE`] to
//! finish before dropping it.

use anyhow::Context;

/// How long a stopping command waits for its links, transports or tunnels to close
/// cleanly before dropping them (the one grace of every nodelink driver).
pub use nodelink_driver::SHUTDOWN_GRACE;

/// SIGINT and SIGTERM, installed up front (before the first output line, so that whoever
/// reads the address may signal at once).
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    pub fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    #[cfg(not(unix))]
    pub fn install() -> anyhow::Result<Signals> {
        Ok(Signals {})
    }

    /// Waits for the next signal and names it.
    #[cfg(unix)]
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    /// Waits for Ctrl-C.
    #[cfg(not(unix))]
    pub async fn recv(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

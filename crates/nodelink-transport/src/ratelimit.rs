//! A budget for warnings caused by peers.
//!
//! Anything a peer can trigger at will (a malformed frame, a rejected handshake) could fill
//! the log if every occurrence wrote a line: a hostile client that reconnects in a loop
//! would turn our log into its megaphone. So each transport shares one budget of
//! [`PER_SECOND`] such warnings per second; what is over budget is counted, and the next
//! warning that gets through first says how many were suppressed. Events of our own making
//! (a connection opened, an endpoint closed) are logged at info level without a budget.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::lock;

/// Peer-caused warnings written per second and transport.
pub(crate) const PER_SECOND: u32 = 10;

const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct WarnLimiter {
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl WarnLimiter {
    pub(crate) fn new() -> Self {
        WarnLimiter {
            window: Mutex::new(Window {
                start: None,
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether one more warning may be written now. When a new window opens after some
    /// were suppressed, a line saying how many comes first.
    pub(crate) fn allow(&self) -> bool {
        let now = Instant::now();
        let mut w = lock(&self.window);
        if w.start.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            if w.suppressed > 0 {
                tracing::warn!(
                    suppressed = w.suppressed,
                    "{} more warnings about peers were suppressed in the last second",
                    w.suppressed
                );
            }
            *w = Window {
                start: Some(now),
                written: 0,
                suppressed: 0,
            };
        }
        if w.written < PER_SECOND {
            w.written += 1;
            true
        } else {
            w.suppressed += 1;
            false
        }
    }
}

/// Writes a WARN line if the limiter `$limit` allows it; arguments as for `tracing::warn!`.
macro_rules! peer_warn {
    ($limit:expr, $($arg:tt)+) => {
        if $limit.allow() {
            tracing::warn!($($arg)+);
        }
    };
}
pub(crate) use peer_warn;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_cut_and_the_budget_returns_each_second() {
        let l = WarnLimiter::new();
        let allowed = (0..100).filter(|_| l.allow()).count();
        assert_eq!(allowed, PER_SECOND as usize);
        assert_eq!(lock(&l.window).suppressed, 100 - u64::from(PER_SECOND));
        tokio::time::advance(WINDOW).await;
        assert!(l.allow());
        assert_eq!(lock(&l.window).suppressed, 0);
        assert_eq!(lock(&l.window).written, 1);
    }
}

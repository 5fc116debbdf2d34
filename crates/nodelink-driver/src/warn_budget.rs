//! A budget for warnings caused by peers.
//!
//! Anything a peer can trigger at will (a malformed frame, a rejected handshake, a datagram
//! that does not decrypt) could fill the log if every occurrence wrote a line: a hostile
//! client that reconnects in a loop would turn our log into its megaphone. So each server
//! (a transport, a KCP listener, a tunnel end) shares one budget of [`PER_SECOND`] such
//! warnings per second; what is over budget is counted, and the next warning that gets
//! through first says how many were suppressed. Events of our own making (a connection
//! opened, an endpoint closed) are logged at info level without a budget.
//!
//! ```
//! use nodelink_driver::{peer_warn, WarnLimiter};
//!
//! let limit = WarnLimiter::new();
//! for _ in 0..1000 {
//!     // At most PER_SECOND lines a second; the rest are counted.
//!     peer_warn!(limit, peer = "192.0.2.7:4000", "a malformed frame: dropped");
//! }
//! ```

use std::sync::Mutex;

use crate::sync::lock;
use std::time::Duration;

use tokio::time::Instant;

/// Peer-caused warnings written per second and budget.
pub const PER_SECOND: u32 = 10;

const WINDOW: Duration = Duration::from_secs(1);

/// One budget of peer-caused warnings; share it (`Arc`) among everything one server does.
#[derive(Debug)]
pub struct WarnLimiter {
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl WarnLimiter {
    /// A full budget.
    pub const fn new() -> Self {
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
    pub fn allow(&self) -> bool {
        let now = Instant::now();
        let mut w = lock(&self.window);
        if w.start.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            if w.suppressed > 0 {
                tracing::warn!(
                    suppressed = w.suppressed,
                    "{} more warnings about peers were suppressed since the last one",
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

impl Default for WarnLimiter {
    fn default() -> Self {
        WarnLimiter::new()
    }
}

/// Writes a WARN line if the [`WarnLimiter`] `$limit` allows it; the other arguments are
/// as for `tracing::warn!`.
#[macro_export]
macro_rules! peer_warn {
    ($limit:expr, $($arg:tt)+) => {
        if $limit.allow() {
            $crate::__private::tracing::warn!($($arg)+);
        }
    };
}

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

//! A listener's memory budget for what its sessions hold received and unread.
//!
//! Each session's receive side is bounded by its window (received segments waiting for
//! the application, and out-of-order ones waiting for a gap to fill: at most twice
//! `rcvwnd` segments), but a listener has up to `max_sessions` of them, and a peer decides
//! how full its session is. [`Config::max_memory`](crate::Config::max_memory) bounds their
//! sum. Every session publishes what it holds ([`Holding`]) whenever its driver or its
//! reader touched it. While the sessions of a listener hold more than the budget
//! together, the demultiplexer drops the datagrams of every session holding more than its
//! share (`max_memory / sessions`), before they cost anything; KCP's retransmission
//! delivers them once the application has read and the server is back under budget.
//! Sessions under their share, the well-behaved ones, are not touched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A session's holding is published when it moved by at least this much (or fell to
/// nothing).
const REPORT_STEP: usize = 16 << 10;

/// The shared state of one listener's budget.
#[derive(Debug)]
pub(crate) struct SessionBudget {
    limit: usize,
    /// Bytes all sessions hold now.
    used: AtomicUsize,
}

impl SessionBudget {
    pub(crate) fn new(limit: usize) -> Arc<SessionBudget> {
        Arc::new(SessionBudget {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
        })
    }

    /// The budget in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// What all sessions hold now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether a session holding `held`, one of `sessions`, must lose its datagrams:
    /// the budget is exceeded and the session holds more than its share.
    pub(crate) fn over(&self, held: usize, sessions: usize) -> bool {
        self.used() > self.limit && held > self.limit / sessions.max(1)
    }
}

/// One session's part of its listener's budget; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct Holding {
    budget: Arc<SessionBudget>,
    held: AtomicUsize,
}

impl Holding {
    pub(crate) fn new(budget: Arc<SessionBudget>) -> Holding {
        Holding {
            budget,
            held: AtomicUsize::new(0),
        }
    }

    /// The session holds `now` bytes. Moves smaller than [`REPORT_STEP`] (other than to
    /// nothing) are left out, which keeps the listener-wide counter off the path of every
    /// read; the swap keeps the total exact whoever reports.
    pub(crate) fn set(&self, now: usize) {
        let last = self.held.load(Ordering::Relaxed);
        if now.abs_diff(last) < REPORT_STEP && !(now == 0 && last != 0) {
            return;
        }
        let before = self.held.swap(now, Ordering::Relaxed);
        if now > before {
            self.budget.used.fetch_add(now - before, Ordering::Relaxed);
        } else if before > now {
            self.budget.used.fetch_sub(before - now, Ordering::Relaxed);
        }
    }

    /// What the session holds.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_sessions_lose_datagrams_only_while_over_budget() {
        let k = REPORT_STEP;
        let b = SessionBudget::new(100 * k);
        let (heavy, light) = (Holding::new(b.clone()), Holding::new(b.clone()));
        heavy.set(90 * k);
        light.set(5 * k);
        assert!(!b.over(heavy.held(), 2), "under budget");
        light.set(20 * k);
        assert!(b.over(heavy.held(), 2), "over budget, over its share");
        assert!(!b.over(light.held(), 2), "under its share");
        light.set(20 * k + 1);
        assert_eq!(light.held(), 20 * k, "a small move waits for a step");
        drop(heavy);
        assert_eq!(b.used(), 20 * k, "a session gone gives its part back");
    }
}

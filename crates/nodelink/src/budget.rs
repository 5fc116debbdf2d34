//! A listener's memory budget, shared by every link it accepted.
//!
//! Each link already bounds the payload it holds unread ([`Config::link_recv_limit`]), but
//! a server has many links: a dozen peers that send and never read could each fill their
//! own bound. The budget bounds their sum ([`Config::max_memory`]). While the links of a
//! listener hold more than the budget together, a link holding more than its share
//! (`max_memory / links`) stops reading from its peer, as when its own bound is reached;
//! the links under their share, the well-behaved ones, keep reading. Reading resumes when
//! the link's own application catches up, or when the server is back under budget.
//!
//! Links report what they hold after each operation on their core (only when it
//! changed); a link also counts what it added since its last report, so a burst is seen
//! within the burst.
//!
//! Shares shrink as links join: a link that took much while it was alone keeps what it
//! has (nothing is dropped), and a link that joins while the budget is exceeded still gets
//! its share. So the total can exceed the budget by the shares of links that joined
//! meanwhile, until the heavy links' applications read; it never grows with what one
//! peer sends.
//!
//! [`Config::link_recv_limit`]: crate::Config::link_recv_limit
//! [`Config::max_memory`]: crate::Config::max_memory

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The shared state of one listener's budget.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    /// Bytes of unread payload held by all links now.
    used: AtomicUsize,
    /// Links sharing the budget now.
    links: AtomicUsize,
    /// Wakes paused readers when the total falls back under the limit.
    pub(crate) released: Notify,
    /// The budget is exceeded and that was logged.
    warned: AtomicBool,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            links: AtomicUsize::new(0),
            released: Notify::new(),
            warned: AtomicBool::new(false),
        }
    }

    /// A link joins (its share is counted from now on).
    pub(crate) fn join(&self) {
        self.links.fetch_add(1, Ordering::Relaxed);
    }

    /// A link leaves, giving back what it still reported.
    pub(crate) fn leave(&self, held: usize) {
        self.links.fetch_sub(1, Ordering::Relaxed);
        self.update(held, 0);
        // Fewer links: every share grew, a paused link may be under its share now.
        if self.used.load(Ordering::Relaxed) > self.limit {
            self.released.notify_waiters();
        }
    }

    /// A link's unread payload went from `before` to `now`.
    pub(crate) fn update(&self, before: usize, now: usize) {
        if now >= before {
            self.used.fetch_add(now - before, Ordering::Relaxed);
            return;
        }
        let prev = self.used.fetch_sub(before - now, Ordering::Relaxed);
        let after = prev - (before - now);
        // Only the step back under the limit wakes paused readers (a paused reader also
        // resumes when its own application reads).
        if prev > self.limit && after <= self.limit {
            if self.warned.swap(false, Ordering::Relaxed) {
                tracing::info!(
                    limit = self.limit,
                    "memory budget: back under it, all links read"
                );
            }
            self.released.notify_waiters();
        }
    }

    /// Whether a link holding `held` must stop reading: the budget is exceeded and the
    /// link holds more than its share. `unreported` is what the link's holding changed by
    /// since it last reported (counted at once, so a burst is seen within the burst).
    pub(crate) fn over(&self, held: usize, unreported: isize) -> bool {
        let used = self
            .used
            .load(Ordering::Relaxed)
            .saturating_add_signed(unreported);
        if used <= self.limit {
            return false;
        }
        let share = self.limit / self.links.load(Ordering::Relaxed).max(1);
        if held <= share {
            return false;
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit = self.limit,
                used,
                share,
                links = self.links.load(Ordering::Relaxed),
                "memory budget reached: links holding more than their share of unread data \
                 stop reading from their peers until their applications catch up"
            );
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_links_over_their_share_pause_and_only_while_over_budget() {
        let b = MemoryBudget::new(1000);
        b.join();
        b.join();
        b.update(0, 900);
        assert!(!b.over(900, 0), "under budget: nobody pauses");
        assert!(b.over(1050, 150), "a burst not reported yet counts");
        b.update(0, 200);
        assert!(b.over(900, 0), "the heavy link (900 > 500) pauses");
        assert!(!b.over(200, 0), "the light one does not");
        b.update(900, 700);
        assert!(!b.over(700, 0), "back under budget");
        b.leave(700);
        b.leave(200);
        assert_eq!(b.used.load(Ordering::Relaxed), 0);
    }
}

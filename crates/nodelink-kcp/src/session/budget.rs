//! A listener's memory budget for what its sessions hold, both ways.
//!
//! Each session's receive side is bounded by its window (received segments waiting for
//! the application, and out-of-order ones waiting for a gap to fill: at most twice
//! `rcvwnd` segments) and its send side by the send window and queue (what the
//! application wrote and the peer has not acknowledged: a peer that never reads keeps it
//! full), but a listener has up to `max_sessions` of them, and a peer decides how full
//! its session is. [`Config::max_memory`](crate::Config::max_memory) bounds their
//! sum. Every session publishes what it holds (its [`Holding`] in nodelink-driver's
//! [`MemoryBudget`], which the link and smux servers use too) whenever its driver or its
//! reader touched it. While the sessions of a listener hold more than the budget
//! together, the demultiplexer drops the datagrams carrying data (PUSH segments, FEC
//! parity) of every session holding more than its share (`max_memory / sessions`; no
//! floor), before they cost anything; KCP's retransmission delivers them once the
//! application has read and the server is back under budget. Acknowledgements still pass:
//! they are how what a session holds to send drains.
//! Sessions under their share, the well-behaved ones, are not touched.

use std::sync::Arc;

#[cfg(doc)]
use nodelink_driver::Holding;
use nodelink_driver::MemoryBudget;

/// A session's holding is published when it moved by at least this much (or fell to
/// nothing).
pub(crate) const REPORT_STEP: usize = 16 << 10;

/// A listener's budget of `limit` bytes. No floor: the datagrams of a session over its
/// share are dropped, and KCP's retransmission makes that cost its peer nothing but time.
pub(crate) fn session_budget(limit: usize) -> Arc<MemoryBudget> {
    Arc::new(MemoryBudget::new("KCP sessions", limit).with_floor(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_sessions_lose_datagrams_only_while_over_budget() {
        let k = REPORT_STEP;
        let b = session_budget(100 * k);
        let (heavy, light) = (b.join(REPORT_STEP), b.join(REPORT_STEP));
        heavy.set(90 * k);
        light.set(5 * k);
        assert!(!b.over(heavy.held(), 0), "under budget");
        light.set(20 * k);
        assert!(b.over(heavy.held(), 0), "over budget, over its share");
        assert!(!b.over(light.held(), 0), "under its share");
        light.set(20 * k + 1);
        assert_eq!(light.held(), 20 * k, "a small move waits for a step");
        drop(heavy);
        assert_eq!(b.used(), 20 * k, "a session gone gives its part back");
    }
}

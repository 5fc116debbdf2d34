//! A listener's memory budget, shared by every link it accepted.
//!
//! Each link already bounds the payload it holds unread ([`Config::link_recv_limit`]) and
//! what it holds to send ([`Config::send_buffer`]), but a server has many links: a dozen
//! peers that send requests and never read the answers could each fill both bounds. The
//! budget bounds their sum ([`Config::max_memory`]): payload received and not yet read by
//! the application, plus bytes queued or being written to the peer. While the links of a
//! listener hold more than the budget together:
//!
//! * a link holding more than its floor (its share `max_memory / links`, and at most
//!   256 KiB, [`BUDGET_FLOOR`]) stops reading from its peer, as when its own bound is reached;
//! * every link's send queue is capped at its share (at least [`MIN_SEND_ROOM`]) instead of
//!   its send buffer, so a peer that never reads its answers holds up the code answering
//!   it instead of piling answers up.
//!
//! The links under their share, the well-behaved ones, keep reading and sending. Reading
//! resumes when the link's own application catches up, or when the server is back under
//! budget; sending, when the link's peer reads what was queued.
//!
//! The shared counting, the floor and the wake-ups are nodelink-driver's
//! [`MemoryBudget`], which the KCP and smux servers use too. The receiving side reports
//! what it holds after each operation on its core (only when it changed), and also counts
//! what it added since its last report, so a burst is seen within the burst. The sending
//! side reports in steps of [`REPORT_STEP`], which keeps the shared counter off the path
//! of every small packet.
//!
//! A link that took much while the budget was not reached keeps what it has (nothing is
//! dropped), and the others may still read up to their floor: so the total exceeds the
//! budget by at most one floor per link (and what each read in one go when it paused),
//! never by what the peers send.
//!
//! [`Config::link_recv_limit`]: crate::Config::link_recv_limit
//! [`Config::max_memory`]: crate::Config::max_memory

use std::sync::Arc;

use nodelink_driver::Holding;
pub(crate) use nodelink_driver::MemoryBudget;
#[cfg(doc)]
use nodelink_driver::BUDGET_FLOOR;
use tokio::sync::Notify;

/// The sending side reports what it holds when that moved by at least this much (or fell
/// to nothing).
pub(crate) const REPORT_STEP: usize = 64 << 10;

/// The least a link may queue to send while the budget is exceeded, however small its
/// share: one large packet, so that sending never stops altogether.
pub(crate) const MIN_SEND_ROOM: usize = 256 << 10;

/// A listener's budget of `limit` bytes.
pub(crate) fn for_listener(limit: usize) -> Arc<MemoryBudget> {
    Arc::new(MemoryBudget::new("links", limit))
}

/// One link's place in a listener's budget: the receiving side (the link's core) reports
/// its unread payload directly, the sending side (its send queue) through its holding.
#[derive(Debug)]
pub(crate) struct Member {
    /// The sending side's part (joining the budget made this link a member).
    tx: Holding,
    /// The sending side's holding fell: a reader held back partly for it looks again
    /// (`reader.rs`).
    pub(crate) drained: Notify,
}

impl Member {
    /// A link joins `budget`.
    pub(crate) fn join(budget: &Arc<MemoryBudget>) -> Member {
        Member {
            tx: budget.join(REPORT_STEP),
            drained: Notify::new(),
        }
    }

    fn budget(&self) -> &MemoryBudget {
        self.tx.budget()
    }

    /// The receiving side's unread payload went from `before` to `now`.
    pub(crate) fn update_rx(&self, before: usize, now: usize) {
        self.budget().update(before, now);
    }

    /// The sending side holds `now` bytes (queued and being written). Called with the send
    /// queue locked, so reports never cross.
    pub(crate) fn report_tx(&self, now: usize) {
        if self.tx.set(now) {
            // Its peer read: a link that stopped reading for what it had to send
            // may be under its floor now (the budget may stay exceeded meanwhile).
            self.drained.notify_one();
        }
    }

    /// Whether the receiving side, holding `rx` unread (`unreported` of it not reported
    /// yet), must stop reading: the link's whole holding counts against its share.
    pub(crate) fn over(&self, rx: usize, unreported: isize) -> bool {
        let budget = self.budget();
        let over = budget.over(rx.saturating_add(self.tx.held()), unreported);
        if over && budget.first_exceeded() {
            tracing::warn!(
                limit = budget.limit(),
                used = budget.used(),
                share = budget.share(),
                links = budget.members(),
                exceeded_unsaid = budget.unsaid_excesses(),
                "memory budget reached: links holding more than their share (unread \
                 requests and unsent answers; at most 256 KiB) stop reading from their \
                 peers, and every link queues at most its share to send, until their peers \
                 and applications catch up"
            );
        }
        over
    }

    /// Most bytes the sending side may hold now: `send_buffer`, or the link's share (at
    /// least [`MIN_SEND_ROOM`]) while the budget is exceeded.
    pub(crate) fn send_limit(&self, send_buffer: usize) -> usize {
        match self.budget().exceeded_share() {
            Some(share) => send_buffer.min(share.max(MIN_SEND_ROOM)),
            None => send_buffer,
        }
    }

    /// The link ends: everything it reported is given back (`rx` is the receiving side's
    /// last report).
    pub(crate) fn leave(&self, rx: usize) {
        self.budget().update(rx, 0);
        self.tx.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_side_counts_and_is_capped_while_over_budget() {
        let b = for_listener(4 * MIN_SEND_ROOM);
        let (m1, m2) = (Member::join(&b), Member::join(&b));
        let big = 16 * MIN_SEND_ROOM;
        assert_eq!(m1.send_limit(big), big, "under budget: the send buffer");
        m1.report_tx(REPORT_STEP - 1);
        assert_eq!(b.used(), 0, "small moves wait for a step");
        m1.report_tx(5 * MIN_SEND_ROOM);
        assert_eq!(
            m2.send_limit(big),
            2 * MIN_SEND_ROOM,
            "over budget: the share"
        );
        assert!(
            m1.over(0, 0),
            "unsent answers count against the reader's share"
        );
        assert!(
            !m2.over(MIN_SEND_ROOM, 0),
            "the other link is under its share"
        );
        m1.report_tx(0);
        assert_eq!(m1.send_limit(big), big);
        m1.report_tx(3 * MIN_SEND_ROOM);
        m2.update_rx(0, 1000);
        m1.leave(0);
        m2.leave(1000);
        assert_eq!((b.used(), b.members()), (0, 0), "all given back");
    }
}

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
//!   [`FLOOR`]) stops reading from its peer, as when its own bound is reached;
//! * every link's send queue is capped at its share (at least [`MIN_SEND_ROOM`]) instead of
//!   its send buffer, so a peer that never reads its answers holds up the code answering
//!   it instead of piling answers up.
//!
//! The links under their share, the well-behaved ones, keep reading and sending. Reading
//! resumes when the link's own application catches up, or when the server is back under
//! budget; sending, when the link's peer reads what was queued.
//!
//! The receiving side reports what it holds after each operation on its core (only when
//! it changed), and also counts what it added since its last report, so a burst is seen
//! within the burst. The sending side reports in steps of [`REPORT_STEP`], which keeps
//! the shared counter off the path of every small packet.
//!
//! A link that took much while the budget was not reached keeps what it has (nothing is
//! dropped), and the others may still read up to their floor: so the total exceeds the
//! budget by at most one floor per link (and what each read in one go when it paused),
//! never by what the peers send. The floor is small so that this stays small however many
//! links hold their share: with the share alone as the floor, links joining one by one
//! while the first held the whole budget could together take it a second time.
//!
//! [`Config::link_recv_limit`]: crate::Config::link_recv_limit
//! [`Config::max_memory`]: crate::Config::max_memory

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The sending side reports what it holds when that moved by at least this much (or fell
/// to nothing).
pub(crate) const REPORT_STEP: usize = 64 << 10;

/// The least a link may queue to send while the budget is exceeded, however small its
/// share: one large packet, so that sending never stops altogether.
pub(crate) const MIN_SEND_ROOM: usize = 256 << 10;

/// The most a link may hold and still read while the budget is exceeded (less when its
/// share is less): enough for a well-behaved peer's requests to keep flowing.
pub(crate) const FLOOR: usize = 256 << 10;

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

    /// Bytes all links hold now, as last reported (a gauge).
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
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

    /// A link's share while the budget is exceeded, or `None` while it is not.
    fn exceeded_share(&self) -> Option<usize> {
        if self.used.load(Ordering::Relaxed) <= self.limit {
            return None;
        }
        Some(self.limit / self.links.load(Ordering::Relaxed).max(1))
    }

    /// Whether a link holding `held` must stop reading: the budget is exceeded and the
    /// link holds more than its floor (its share, at most [`FLOOR`]). `unreported` is what the link's holding changed by
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
        if held <= share.min(FLOOR) {
            return false;
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit = self.limit,
                used,
                share,
                links = self.links.load(Ordering::Relaxed),
                "memory budget reached: links holding more than their share (unread \
                 requests and unsent answers; at most 256 KiB) stop reading from their \
                 peers, and every link queues at most its share to send, until their peers \
                 and applications catch up"
            );
        }
        true
    }
}

/// One link's place in a listener's budget: the receiving side (the link's core) and the
/// sending side (its send queue) each report what they hold.
#[derive(Debug)]
pub(crate) struct Member {
    budget: Arc<MemoryBudget>,
    /// What the sending side last reported.
    tx: AtomicUsize,
    /// The sending side's holding fell: a reader held back partly for it looks again
    /// (`reader.rs`).
    pub(crate) drained: Notify,
}

impl Member {
    /// A link joins `budget`.
    pub(crate) fn join(budget: Arc<MemoryBudget>) -> Member {
        budget.join();
        Member {
            budget,
            tx: AtomicUsize::new(0),
            drained: Notify::new(),
        }
    }

    /// The receiving side's unread payload went from `before` to `now`.
    pub(crate) fn update_rx(&self, before: usize, now: usize) {
        self.budget.update(before, now);
    }

    /// The sending side holds `now` bytes (queued and being written). Called with the send
    /// queue locked, so reports never cross.
    pub(crate) fn report_tx(&self, now: usize) {
        let before = self.tx.load(Ordering::Relaxed);
        if now.abs_diff(before) >= REPORT_STEP || (now == 0 && before != 0) {
            self.tx.store(now, Ordering::Relaxed);
            self.budget.update(before, now);
            if now < before {
                // Its peer read: a link that stopped reading for what it had to send
                // may be under its floor now (the budget may stay exceeded meanwhile).
                self.drained.notify_one();
            }
        }
    }

    /// Whether the receiving side, holding `rx` unread (`unreported` of it not reported
    /// yet), must stop reading: the link's whole holding counts against its share.
    pub(crate) fn over(&self, rx: usize, unreported: isize) -> bool {
        let tx = self.tx.load(Ordering::Relaxed);
        self.budget.over(rx.saturating_add(tx), unreported)
    }

    /// Most bytes the sending side may hold now: `send_buffer`, or the link's share (at
    /// least [`MIN_SEND_ROOM`]) while the budget is exceeded.
    pub(crate) fn send_limit(&self, send_buffer: usize) -> usize {
        match self.budget.exceeded_share() {
            Some(share) => send_buffer.min(share.max(MIN_SEND_ROOM)),
            None => send_buffer,
        }
    }

    /// The link ends: everything it reported is given back (`rx` is the receiving side's
    /// last report).
    pub(crate) fn leave(&self, rx: usize) {
        let tx = self.tx.swap(0, Ordering::Relaxed);
        self.budget.leave(rx + tx);
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

    #[test]
    fn past_the_budget_a_link_reads_only_up_to_its_floor_however_large_its_share() {
        // One link took the whole budget while alone; a second joins. Its share is half
        // the budget, but reading it all would double the total: it reads up to the
        // floor only.
        let b = MemoryBudget::new(64 * FLOOR);
        b.join();
        b.update(0, 64 * FLOOR + 1);
        b.join();
        assert!(!b.over(FLOOR, 0), "up to the floor: still reading");
        assert!(
            b.over(FLOOR + 1, 0),
            "past the floor while over budget: paused"
        );
        b.update(64 * FLOOR + 1, FLOOR);
        assert!(!b.over(2 * FLOOR, FLOOR as isize), "under budget: no floor");
    }

    #[test]
    fn the_send_side_counts_and_is_capped_while_over_budget() {
        let b = Arc::new(MemoryBudget::new(4 * MIN_SEND_ROOM));
        let (m1, m2) = (Member::join(b.clone()), Member::join(b.clone()));
        let big = 16 * MIN_SEND_ROOM;
        assert_eq!(m1.send_limit(big), big, "under budget: the send buffer");
        m1.report_tx(REPORT_STEP - 1);
        assert_eq!(
            b.used.load(Ordering::Relaxed),
            0,
            "small moves wait for a step"
        );
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
        m1.leave(0);
        m2.leave(0);
        assert_eq!(b.used.load(Ordering::Relaxed), 0, "all given back");
    }
}

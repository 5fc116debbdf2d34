//! A server's memory budget, shared by the links or sessions it serves.
//!
//! Each link of a server (a NEO link, a KCP session, an smux session) bounds what it holds
//! on its own, but a server has many of them and its peers decide how full each is: a
//! dozen peers that send and never read could each fill their own bound. A
//! [`MemoryBudget`] bounds the sum. Every member publishes what it holds through its
//! [`Holding`]; while the members hold more than the budget together, those holding more
//! than their *floor* (their share `limit / members`, and at most the budget's floor) are
//! held back by their driver: a stream reader stops reading, a datagram demultiplexer
//! drops. Members under their floor, the well-behaved ones, go on untouched. A held-back
//! reader waits for [`MemoryBudget::released`] (the total fell back under the limit, or a
//! member left and every share grew) or for its own holding to fall.
//!
//! Nothing already held is dropped, so the total may pass the budget by at most one floor
//! per member (plus what each took in one go before it looked): the floor keeps that small
//! however many members hold their share. Without it, members joining one by one while
//! the first held the whole budget could together take it a second time.
//!
//! Holdings are published in steps (see [`MemoryBudget::join`]), which keeps the shared
//! counter off the path of every small read or write; a member may pass what it last
//! published when it asks whether it is over ([`MemoryBudget::over`]'s `unreported`), so a
//! burst is seen within the burst.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// The default floor: enough for a well-behaved peer's traffic to keep flowing while the
/// budget is exceeded.
pub const BUDGET_FLOOR: usize = 256 << 10;

/// The shared state of one server's budget.
#[derive(Debug)]
pub struct MemoryBudget {
    /// What the members are, for log lines ("links", "smux sessions").
    what: &'static str,
    limit: usize,
    floor: usize,
    /// Bytes all members hold now, as last published.
    used: AtomicUsize,
    members: AtomicUsize,
    /// Members waiting for a release now.
    held_back: AtomicUsize,
    released: Notify,
    /// The budget is exceeded and someone said so (see [`MemoryBudget::first_exceeded`]).
    warned: AtomicBool,
    /// When the excess was last said, and how many times the budget was exceeded since
    /// without a line (a budget that flaps around its limit is said once per
    /// [`SAY_AT_MOST_EVERY`]).
    said: Mutex<Said>,
}

/// The budget's log lines are at most this frequent.
pub const SAY_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Default)]
struct Said {
    last: Option<std::time::Instant>,
    /// Excesses that came too soon after the last line.
    unsaid: u64,
    /// The current excess is one of them, still to be said.
    pending: bool,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (at least 1) for members that are `what` (in log lines),
    /// with the floor [`BUDGET_FLOOR`].
    pub fn new(what: &'static str, limit: usize) -> MemoryBudget {
        MemoryBudget {
            what,
            limit: limit.max(1),
            floor: BUDGET_FLOOR,
            used: AtomicUsize::new(0),
            members: AtomicUsize::new(0),
            held_back: AtomicUsize::new(0),
            released: Notify::new(),
            warned: AtomicBool::new(false),
            said: Mutex::new(Said::default()),
        }
    }

    /// Sets the floor: past the budget, a member holding no more than `min(share, floor)`
    /// is not held back. `usize::MAX` leaves the share alone.
    pub fn with_floor(mut self, floor: usize) -> MemoryBudget {
        self.floor = floor;
        self
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes all members hold now, as last published (a gauge).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Members sharing the budget now.
    pub fn members(&self) -> usize {
        self.members.load(Ordering::Relaxed)
    }

    /// Each member's share of the budget now.
    pub fn share(&self) -> usize {
        self.limit / self.members().max(1)
    }

    /// A member's share while the budget is exceeded, or `None` while it is not.
    pub fn exceeded_share(&self) -> Option<usize> {
        (self.used() > self.limit).then(|| self.share())
    }

    /// Whether a member holding `held` must be held back: the members together hold more
    /// than the budget, counting `unreported` (what this member's holding moved by since it
    /// last published), and this one holds more than its floor.
    pub fn over(&self, held: usize, unreported: isize) -> bool {
        let used = self.used().saturating_add_signed(unreported);
        used > self.limit && held > self.share().min(self.floor)
    }

    /// True once each time the budget is exceeded, and at most once per
    /// [`SAY_AT_MOST_EVERY`]: the caller that gets it logs what its members do about it
    /// (the way back under is logged here, after an excess that was said). Times it was
    /// exceeded without a line are counted in [`unsaid_excesses`](Self::unsaid_excesses).
    pub fn first_exceeded(&self) -> bool {
        if self.warned.load(Ordering::Relaxed) {
            return false;
        }
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        if self.warned.load(Ordering::Relaxed) {
            return false;
        }
        let now = std::time::Instant::now();
        if said
            .last
            .is_some_and(|t| now.duration_since(t) < SAY_AT_MOST_EVERY)
        {
            // Said lately: counted once, and said by the first caller after the pause
            // (however long this excess lasts, it is said then).
            if !said.pending {
                said.pending = true;
                said.unsaid += 1;
            }
            return false;
        }
        said.pending = false;
        said.last = Some(now);
        self.warned.store(true, Ordering::Relaxed);
        true
    }

    /// Counts a member as held back (waiting for [`released`](Self::released)) while the
    /// guard lives: drivers that may end members which hold budget without using it do
    /// so only while someone waits for it ([`held_back`](Self::held_back)).
    pub fn hold_back(&self) -> HeldBack<'_> {
        self.held_back.fetch_add(1, Ordering::Relaxed);
        HeldBack(self)
    }

    /// Members held back now (see [`hold_back`](Self::hold_back)).
    pub fn held_back(&self) -> usize {
        self.held_back.load(Ordering::Relaxed)
    }

    /// How many times the budget was exceeded without a line since the last one (for
    /// the caller's line when [`first_exceeded`](Self::first_exceeded) says yes); reading
    /// it starts the count afresh.
    pub fn unsaid_excesses(&self) -> u64 {
        std::mem::take(&mut self.said.lock().unwrap_or_else(|e| e.into_inner()).unsaid)
    }

    /// Resolves when held-back members should look again: the total fell back under the
    /// limit, or a member left while it was exceeded (every share grew). Create it before
    /// checking [`over`](Self::over), or a wake-up between the two is lost.
    pub fn released(&self) -> Notified<'_> {
        self.released.notified()
    }

    /// A member's holding went from `before` to `now` (for members that keep their own
    /// count; others publish through a [`Holding`]).
    pub fn update(&self, before: usize, now: usize) {
        if now >= before {
            self.used.fetch_add(now - before, Ordering::Relaxed);
            return;
        }
        let fall = before - now;
        // A member gives back only what it published before (each `Holding` publishes
        // under its own lock), so the total never falls below zero; if a caller of this
        // method ever got that wrong, saturating keeps the budget usable (a wrapped total
        // would hold every member back for good).
        let prev = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(fall))
            })
            .expect("the update always succeeds");
        debug_assert!(prev >= fall, "a member gave back more than it published");
        let after = prev.saturating_sub(fall);
        if prev > self.limit && after <= self.limit {
            // Only an excess that was said has its end said.
            let said = {
                let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
                said.pending = false;
                self.warned.swap(false, Ordering::Relaxed)
            };
            if said {
                tracing::info!(
                    limit = self.limit,
                    "memory budget of the {}: back under it, all read again",
                    self.what
                );
            }
            self.released.notify_waiters();
        }
    }

    /// A new member joins (its share counts from now on). It publishes what it holds when
    /// that moved by at least `step` bytes, or fell to nothing.
    pub fn join(self: &Arc<Self>, step: usize) -> Holding {
        self.members.fetch_add(1, Ordering::Relaxed);
        Holding {
            budget: Arc::clone(self),
            held: AtomicUsize::new(0),
            step: step.max(1),
            left: Mutex::new(false),
        }
    }

    fn leave(&self, held: usize) {
        self.members.fetch_sub(1, Ordering::Relaxed);
        self.update(held, 0);
        if self.used() > self.limit {
            // Fewer members: every share grew, a held-back one may be under its own now.
            self.released.notify_waiters();
        }
    }
}

/// A member held back, counted while this lives (see [`MemoryBudget::hold_back`]).
#[derive(Debug)]
pub struct HeldBack<'a>(&'a MemoryBudget);

impl Drop for HeldBack<'_> {
    fn drop(&mut self) {
        self.0.held_back.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One member's part of a [`MemoryBudget`]. Leaves (giving back what it published) on
/// [`leave`](Holding::leave) or when dropped.
#[derive(Debug)]
pub struct Holding {
    budget: Arc<MemoryBudget>,
    /// What was last published.
    held: AtomicUsize,
    step: usize,
    /// Whether it left; publications take this lock (only when they pass a step).
    left: Mutex<bool>,
}

impl Holding {
    /// The member holds `now` bytes. Moves smaller than the step (other than to nothing)
    /// are not published. Returns whether a fall was published (a held-back reader of
    /// this member may look again). Safe to call from several tasks: the total stays
    /// exact whoever publishes.
    pub fn set(&self, now: usize) -> bool {
        let last = self.held.load(Ordering::Relaxed);
        if now.abs_diff(last) < self.step && !(now == 0 && last != 0) {
            return false;
        }
        self.publish(now)
    }

    /// Publishes `now` whatever the step. A member about to wait for
    /// [`MemoryBudget::released`] calls it first: a release is signalled when the
    /// *published* total falls under the limit, which it would never do if the excess
    /// were bytes this member had not published. Returns whether a fall was published.
    pub fn publish(&self, now: usize) -> bool {
        // Under the lock, so a publication and `leave` never cross (a publication after
        // `leave` would count bytes nobody gives back).
        let left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        if *left {
            return false;
        }
        let before = self.held.swap(now, Ordering::Relaxed);
        self.budget.update(before, now);
        now < before
    }

    /// What this member last published.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The budget this member is part of.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Whether this member, holding `now` (published or not), must be held back.
    pub fn over(&self, now: usize) -> bool {
        self.over_judging(now, now)
    }

    /// Whether this member, holding `now` in all, must be held back for `part` of it:
    /// the total counts all of `now`, but only `part` is weighed against the floor. A
    /// driver passes as `part` what holding back actually stops from growing (an smux
    /// session's received data: its queued sends drain whether it reads or not), or what
    /// it held before a message it must take whole.
    pub fn over_judging(&self, now: usize, part: usize) -> bool {
        let unreported = now as isize - self.held() as isize;
        self.budget.over(part, unreported)
    }

    /// The member is gone: what it published is given back and it no longer counts.
    /// Idempotent.
    pub fn leave(&self) {
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        if !*left {
            *left = true;
            let held = self.held.swap(0, Ordering::Relaxed);
            self.budget.leave(held);
        }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future as _;

    #[test]
    fn only_members_over_their_share_are_held_back_and_only_while_over_budget() {
        let b = Arc::new(MemoryBudget::new("links", 1000));
        let (heavy, light) = (b.join(1), b.join(1));
        heavy.set(900);
        assert!(!heavy.over(900), "under budget: nobody is held back");
        assert!(heavy.over(1050), "a burst not published yet counts");
        light.set(200);
        assert!(heavy.over(900), "the heavy member (900 > 500) is held back");
        assert!(!light.over(200), "the light one is not");
        assert!(heavy.set(700), "a fall is published");
        assert!(!heavy.over(700), "back under budget");
        drop(heavy);
        light.leave();
        light.leave();
        assert_eq!((b.used(), b.members()), (0, 0), "all given back");
    }

    #[test]
    fn past_the_budget_a_member_takes_only_up_to_the_floor_however_large_its_share() {
        // One member took the whole budget while alone; a second joins. Its share is half
        // the budget, but taking it all would double the total: it gets the floor only.
        let b = Arc::new(MemoryBudget::new("links", 64 * BUDGET_FLOOR));
        let first = b.join(1);
        first.set(64 * BUDGET_FLOOR + 1);
        let second = b.join(1);
        assert!(!second.over(BUDGET_FLOOR), "up to the floor: goes on");
        assert!(second.over(BUDGET_FLOOR + 1), "past the floor: held back");
        first.set(BUDGET_FLOOR);
        assert!(!second.over(2 * BUDGET_FLOOR), "under budget: no floor");
    }

    #[test]
    fn a_member_that_publishes_before_waiting_is_released_when_others_fall() {
        let b = Arc::new(MemoryBudget::new("sockets", 100).with_floor(10));
        let (waiter, other) = (b.join(64), b.join(1));
        other.set(60);
        // 50 held, not published (under a step): over only by its own unpublished bytes.
        assert!(waiter.over(50));
        assert_eq!(b.used(), 60);
        waiter.publish(50);
        assert_eq!(b.used(), 110, "published whatever the step");
        let released = b.released();
        tokio::pin!(released);
        released.as_mut().enable();
        other.set(0);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            released.as_mut().poll(&mut cx).is_ready(),
            "the fall is seen"
        );
        waiter.leave();
        assert!(!waiter.publish(5), "nothing is published after leaving");
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn only_the_judged_part_is_weighed_against_the_floor() {
        let b = Arc::new(MemoryBudget::new("sessions", 100).with_floor(10));
        let (m, other) = (b.join(1), b.join(1));
        other.set(80);
        assert!(m.over(40), "40 in all, over the floor");
        assert!(
            !m.over_judging(40, 5),
            "but only 5 of it can grow by reading"
        );
        assert!(m.over_judging(40, 11));
    }

    #[test]
    fn small_moves_wait_for_a_step_and_a_member_leaving_releases_the_others() {
        let b = Arc::new(MemoryBudget::new("sessions", 100).with_floor(usize::MAX));
        let (a, c) = (b.join(10), b.join(10));
        a.set(9);
        assert_eq!(b.used(), 0, "a small move waits for a step");
        a.set(80);
        c.set(40);
        assert!(a.over(80) && !c.over(40));
        assert!(b.first_exceeded() && !b.first_exceeded(), "said once");
        let released = b.released();
        tokio::pin!(released);
        released.as_mut().enable();
        drop(a);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            released.as_mut().poll(&mut cx).is_ready(),
            "back under the budget: held-back members look again"
        );
        c.set(200);
        assert!(
            !b.first_exceeded(),
            "exceeded again at once: not said again so soon"
        );
        assert!(!b.first_exceeded());
        assert_eq!(b.unsaid_excesses(), 1, "but counted, once");
        assert_eq!(b.unsaid_excesses(), 0);
    }
}

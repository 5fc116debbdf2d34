//! The client's session slots, without I/O (the policy is kcptun's, with one change
//! noted below).
//!
//! The client keeps `conn` slots and hands accepted connections to them in turn (round
//! robin). A slot is (re)filled lazily, when a connection is about to use it and it is
//! empty, its session died, or it expired: with `autoexpire` set, a session takes new
//! streams for that many seconds only. An expired session is retired to the scavenger,
//! which closes it as soon as its last stream ends, or `scavengettl` seconds after it
//! expired, whichever comes first (kcptun waits for the TTL even when the session is
//! idle).

use std::time::Duration;

use tokio::time::Instant;

/// A filled slot.
struct Slot<S> {
    session: S,
    /// When the session stops taking new streams.
    expires: Option<Instant>,
}

/// What a connection about to use slot `idx` does ([`Pool::pick`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pick<S> {
    /// Use this session.
    Use(S),
    /// Dial a new session for the slot (then [`Pool::fill`] it).
    Dial(Refill<S>),
}

/// Why a slot is refilled, and what becomes of the session it had.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refill<S> {
    /// The slot was empty.
    Empty,
    /// Its session ended (here it is, to say why).
    Died(S),
    /// Its session expired: close it once its streams ended, at the latest by `deadline`.
    Expired { session: S, deadline: Instant },
}

/// The client's slots; `S` is the driver's session handle.
pub(crate) struct Pool<S> {
    slots: Vec<Option<Slot<S>>>,
    next: usize,
    autoexpire: Option<Duration>,
    scavenge_ttl: Duration,
}

impl<S: Clone> Pool<S> {
    /// `conn` slots (at least one); sessions expire after `autoexpire` (if set) and are
    /// closed at the latest `scavenge_ttl` after that.
    pub(crate) fn new(conn: usize, autoexpire: Option<Duration>, scavenge_ttl: Duration) -> Self {
        Pool {
            slots: (0..conn.max(1)).map(|_| None).collect(),
            next: 0,
            autoexpire,
            scavenge_ttl,
        }
    }

    /// The slot the next accepted connection goes to (round robin).
    pub(crate) fn next_slot(&mut self) -> usize {
        let idx = self.next % self.slots.len();
        self.next = self.next.wrapping_add(1);
        idx
    }

    /// The session of slot `idx` for a new stream, or why a new one must be dialled (the
    /// slot is emptied meanwhile). `is_closed` tells whether a session ended.
    pub(crate) fn pick(
        &mut self,
        idx: usize,
        now: Instant,
        is_closed: impl Fn(&S) -> bool,
    ) -> Pick<S> {
        let Some(slot) = self.slots[idx].take() else {
            return Pick::Dial(Refill::Empty);
        };
        if is_closed(&slot.session) {
            return Pick::Dial(Refill::Died(slot.session));
        }
        match slot.expires {
            Some(t) if now >= t => Pick::Dial(Refill::Expired {
                session: slot.session,
                deadline: t + self.scavenge_ttl,
            }),
            _ => {
                let session = slot.session.clone();
                self.slots[idx] = Some(slot);
                Pick::Use(session)
            }
        }
    }

    /// Puts a freshly dialled session in slot `idx`.
    pub(crate) fn fill(&mut self, idx: usize, session: S, now: Instant) {
        let expires = self.autoexpire.map(|d| now + d);
        self.slots[idx] = Some(Slot { session, expires });
    }

    /// Empties slot `idx` (its session turned out dead): the next pick dials.
    pub(crate) fn forget(&mut self, idx: usize) {
        self.slots[idx] = None;
    }

    /// Empties slot `idx` of a session that takes no new streams but still carries some:
    /// it is handed back with the time by which it must be closed, like an expired one.
    pub(crate) fn retire(&mut self, idx: usize, now: Instant) -> Option<(S, Instant)> {
        let slot = self.slots[idx].take()?;
        Some((slot.session, now + self.scavenge_ttl))
    }

    /// The session in slot `idx`, if any.
    #[cfg(test)]
    pub(crate) fn peek(&self, idx: usize) -> Option<&S> {
        self.slots[idx].as_ref().map(|s| &s.session)
    }

    /// Empties every slot, handing back the sessions (to close them).
    pub(crate) fn drain(&mut self) -> Vec<S> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.take().map(|s| s.session))
            .collect()
    }
}

/// What the scavenger does with a retired session now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scavenge {
    /// It ended by itself: nothing to do.
    Ended,
    /// Close it: its last stream ended.
    Idle,
    /// Close it: its time is up, streams or not.
    TimeUp,
    /// Look again later.
    Wait,
}

/// The scavenger's decision for a session that is `closed` or not, with `streams` open,
/// retired until `deadline`.
pub(crate) fn scavenge(closed: bool, streams: usize, now: Instant, deadline: Instant) -> Scavenge {
    if closed {
        Scavenge::Ended
    } else if streams == 0 {
        Scavenge::Idle
    } else if now >= deadline {
        Scavenge::TimeUp
    } else {
        Scavenge::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_used_in_turn_and_refilled_lazily() {
        let mut pool: Pool<u32> = Pool::new(2, None, Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(pool.next_slot(), 0);
        assert_eq!(pool.next_slot(), 1);
        assert_eq!(pool.next_slot(), 0);
        assert_eq!(pool.pick(0, now, |_| false), Pick::Dial(Refill::Empty));
        pool.fill(0, 7, now);
        assert_eq!(pool.pick(0, now, |_| false), Pick::Use(7));
        assert_eq!(pool.pick(0, now, |&s| s == 7), Pick::Dial(Refill::Died(7)));
        assert_eq!(pool.pick(0, now, |_| false), Pick::Dial(Refill::Empty));
        pool.fill(1, 8, now);
        pool.forget(1);
        assert_eq!(pool.pick(1, now, |_| false), Pick::Dial(Refill::Empty));
    }

    #[test]
    fn expired_sessions_are_retired_with_a_deadline() {
        let ttl = Duration::from_secs(60);
        let mut pool: Pool<u32> = Pool::new(1, Some(Duration::from_secs(10)), ttl);
        let t0 = Instant::now();
        pool.fill(0, 1, t0);
        assert_eq!(
            pool.pick(0, t0 + Duration::from_secs(9), |_| false),
            Pick::Use(1)
        );
        let expired = t0 + Duration::from_secs(10);
        assert_eq!(
            pool.pick(0, expired + Duration::from_secs(1), |_| false),
            Pick::Dial(Refill::Expired {
                session: 1,
                deadline: expired + ttl
            })
        );
        pool.fill(0, 2, t0);
        assert_eq!(pool.retire(0, t0), Some((2, t0 + ttl)));
        assert_eq!(pool.retire(0, t0), None);
        pool.fill(0, 2, t0);
        assert_eq!(pool.drain(), vec![2]);
        assert_eq!(pool.pick(0, t0, |_| false), Pick::Dial(Refill::Empty));
    }

    #[test]
    fn the_scavenger_closes_idle_or_overdue_sessions() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(scavenge(true, 3, now, later), Scavenge::Ended);
        assert_eq!(scavenge(false, 0, now, later), Scavenge::Idle);
        assert_eq!(scavenge(false, 2, later, later), Scavenge::TimeUp);
        assert_eq!(scavenge(false, 2, now, later), Scavenge::Wait);
    }
}

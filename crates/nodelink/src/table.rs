//! The connection table: who owns which connection id, and what happens to a packet that
//! arrives for an id.
//!
//! One mutex guards everything whose consistency matters together: the id → connection map,
//! the "recently closed" records, the id allocator, the accept backlog and the pool of
//! recycled connection states. Its critical sections are short and never await.
//!
//! The table is generic over the slot type so that the loom model test can drive the very
//! same code with loom's atomics (see [`crate::sync`]).

use std::collections::VecDeque;
use std::task::{Poll, Waker};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::time::Instant;

use crate::sync::{lock, Mutex};
use crate::waiters::{Waiters, Wake};

/// A connection state the table can hand out, look up and recycle.
pub(crate) trait Slot: Clone {
    /// A freshly allocated slot for connection `id`.
    fn fresh(id: u32) -> Self;
    /// Reinitialises a pooled slot for connection `id`. Only called on unique slots.
    fn recycle(&self, id: u32);
    /// True when nobody but the caller holds this slot.
    fn is_unique(&self) -> bool;
    /// True when both handles point at the same slot.
    fn same(&self, other: &Self) -> bool;
    /// The connection id the slot currently serves.
    fn id(&self) -> u32;
    /// Whether packets are waiting in the slot's receive queue.
    fn has_queued(&self) -> bool;
}

/// Bounds of the table, from [`Config`](crate::Config).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_conns: usize,
    pub(crate) backlog: usize,
    pub(crate) keep_closed: Duration,
    pub(crate) max_keep_closed: usize,
    pub(crate) pool_max: usize,
}

enum Entry<T> {
    Open(T),
    /// A peer-initiated connection we closed; late packets get "connection closed".
    Closed {
        until: Instant,
    },
}

/// How connection ids are numbered and packets routed: the two NEO dialects
/// (`docs/protocols/link.md`, "Connection ids" and "Routing").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Numbering {
    /// NEO/go: our ids have our role's parity (+2 each); an unknown id of the peer's parity
    /// opens a new incoming connection, one of ours is answered "connection closed".
    ByParity {
        /// Our first id: 1 for the dialer, 0 for the acceptor.
        first: u32,
    },
    /// NEO/py 1.12: our ids count 0, 1, 2, ...; the answer bit, not the id, says whether a
    /// packet is for one of our requests or a new request of the peer's.
    ByAnswerBit,
}

/// What happened to a packet that arrived for some id.
pub(crate) enum Route<R> {
    /// Delivered to an open connection; `R` is what the delivery callback returned.
    Delivered(R),
    /// A new incoming connection was created, the packet delivered to it, and the
    /// connection queued for accept; wake the acceptors.
    Accepted(R, Wake),
    /// Reply "connection closed" (unless the packet is an answer).
    Closed,
    /// Reply "connection refused" (unless the packet is an answer).
    Refused,
    /// The accept backlog is full: the packet was not taken; wait for room
    /// ([`ConnTable::poll_backlog_room`]) and route it again.
    Full,
    /// Dropped without a reply (NEO/py rules: an answer for no pending request, or a
    /// request while nobody accepts).
    Dropped,
}

/// Why a connection could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    Down,
    TooMany,
}

/// Outcome of one accept attempt.
pub(crate) enum AcceptPoll<T> {
    Ready(T),
    NotListening,
    Down,
    Pending,
}

/// What an id currently maps to (for tests and diagnostics).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IdState {
    Open,
    KeptClosed,
    Free,
}

pub(crate) struct ConnTable<T> {
    state: Mutex<State<T>>,
    /// Length of the accept backlog, readable without the lock (a hint for batching).
    backlog_len: std::sync::atomic::AtomicUsize,
}

struct State<T> {
    entries: FxHashMap<u32, Entry<T>>,
    /// Closed records in expiry order, purged lazily: no timer runs for them.
    closed: VecDeque<(Instant, u32)>,
    open: usize,
    next_id: u32,
    numbering: Numbering,
    /// An id never handed out (the control id the peer sends us extension frames on).
    reserved: Option<u32>,
    down: bool,
    accepting: bool,
    backlog: VecDeque<T>,
    acceptors: Waiters,
    /// The reader, waiting for room in a full backlog.
    backlog_waiter: Option<Waker>,
    pool: Vec<T>,
    limits: Limits,
}

impl<T: Slot> ConnTable<T> {
    /// A table numbering ids as `numbering` says, that must never allocate `reserved`.
    pub(crate) fn new(numbering: Numbering, reserved: Option<u32>, limits: Limits) -> Self {
        let first_id = match numbering {
            Numbering::ByParity { first } => first,
            Numbering::ByAnswerBit => 0,
        };
        ConnTable {
            backlog_len: std::sync::atomic::AtomicUsize::new(0),
            state: Mutex::new(State {
                entries: FxHashMap::default(),
                closed: VecDeque::new(),
                open: 0,
                next_id: first_id,
                numbering,
                reserved,
                down: false,
                accepting: true,
                backlog: VecDeque::new(),
                acceptors: Waiters::default(),
                backlog_waiter: None,
                pool: Vec::new(),
                limits,
            }),
        }
    }

    /// Opens a connection initiated by us.
    pub(crate) fn open_local(&self, now: Instant) -> Result<T, OpenError> {
        let mut st = lock(&self.state);
        st.expire(now);
        if st.down {
            return Err(OpenError::Down);
        }
        if st.open >= st.limits.max_conns {
            return Err(OpenError::TooMany);
        }
        let id = st.alloc_id()?;
        let slot = st.take_slot(id);
        st.entries.insert(id, Entry::Open(slot.clone()));
        st.open += 1;
        Ok(slot)
    }

    /// Allocates an id without registering a connection, for fire-and-forget `send1`: a
    /// later packet for it is of our parity and unknown, so it gets "connection closed".
    pub(crate) fn alloc_unregistered(&self, now: Instant) -> Result<u32, OpenError> {
        let mut st = lock(&self.state);
        st.expire(now);
        if st.down {
            return Err(OpenError::Down);
        }
        st.alloc_id()
    }

    /// Routes a packet for `id` (`answer`: its code has the answer bit):
    /// `deliver(slot, is_new)` runs under the table lock, so a connection is never removed
    /// or recycled while a packet is being put into it, and a new connection holds its
    /// first packet before an acceptor can see it.
    pub(crate) fn route<R>(
        &self,
        id: u32,
        answer: bool,
        now: Instant,
        deliver: impl FnOnce(&T, bool) -> R,
    ) -> Route<R> {
        let mut st = lock(&self.state);
        st.expire(now);
        let parity = match st.numbering {
            Numbering::ByParity { first } => Some(first % 2),
            Numbering::ByAnswerBit => None,
        };
        match parity {
            Some(parity) => {
                match st.entries.get(&id) {
                    Some(Entry::Open(slot)) => return Route::Delivered(deliver(slot, false)),
                    Some(Entry::Closed { .. }) => return Route::Closed,
                    None => {}
                }
                if id % 2 == parity {
                    return Route::Closed;
                }
                if st.down || !st.accepting || st.open >= st.limits.max_conns {
                    return Route::Refused;
                }
            }
            None if answer => {
                return match st.entries.get(&id) {
                    Some(Entry::Open(slot)) => Route::Delivered(deliver(slot, false)),
                    _ => Route::Dropped,
                };
            }
            None => {
                if st.down || !st.accepting {
                    return Route::Dropped;
                }
            }
        }
        if st.backlog.len() >= st.limits.backlog {
            return Route::Full;
        }
        let slot = st.take_slot(id);
        let delivered = deliver(&slot, true);
        if parity.is_some() {
            st.entries.insert(id, Entry::Open(slot.clone()));
            st.open += 1;
        }
        // NEO/py: a request of the peer's is never registered under its id (that id may
        // be one of our pending requests); it lives in the backlog until recv1 takes it.
        st.backlog.push_back(slot);
        self.set_backlog_hint(&st);
        Route::Accepted(delivered, st.acceptors.take())
    }

    /// Ready when the accept backlog has room again (or nobody will ever accept, so the
    /// packet that waits can be refused); otherwise registers the reader's waker.
    pub(crate) fn poll_backlog_room(&self, waker: &Waker) -> Poll<()> {
        let mut st = lock(&self.state);
        if st.down || !st.accepting || st.backlog.len() < st.limits.backlog {
            return Poll::Ready(());
        }
        st.backlog_waiter = Some(waker.clone());
        Poll::Pending
    }

    /// Ends a stateless request on `slot`: if more packets arrived on its id meanwhile, the
    /// connection goes back to the front of the accept queue (returns `Some` acceptors to
    /// wake) so they are served in order; otherwise the id is forgotten and the slot
    /// recycled.
    pub(crate) fn finish_stateless(&self, slot: T) -> Option<Wake> {
        let mut st = lock(&self.state);
        let id = slot.id();
        let ours = matches!(st.entries.get(&id), Some(Entry::Open(s)) if s.same(&slot));
        if !st.down && ours && slot.has_queued() {
            st.backlog.push_front(slot);
            self.set_backlog_hint(&st);
            return Some(st.acceptors.take());
        }
        if ours && !st.down {
            st.entries.remove(&id);
            st.open -= 1;
        }
        st.recycle(slot);
        None
    }

    /// Looks up an open connection.
    pub(crate) fn get(&self, id: u32) -> Option<T> {
        match lock(&self.state).entries.get(&id) {
            Some(Entry::Open(slot)) => Some(slot.clone()),
            _ => None,
        }
    }

    /// Takes the next incoming connection, or registers `waker`.
    pub(crate) fn poll_accept(&self, waker: &Waker) -> AcceptPoll<T> {
        let mut st = lock(&self.state);
        if let Some(slot) = st.backlog.pop_front() {
            self.set_backlog_hint(&st);
            let reader = st.backlog_waiter.take();
            drop(st);
            if let Some(reader) = reader {
                reader.wake();
            }
            return AcceptPoll::Ready(slot);
        }
        if st.down {
            AcceptPoll::Down
        } else if !st.accepting {
            AcceptPoll::NotListening
        } else {
            st.acceptors.register(waker);
            AcceptPoll::Pending
        }
    }

    /// Stops accepting. Returns the queued, never accepted connections (already removed
    /// from the table; the caller refuses them) and the acceptors to wake.
    pub(crate) fn close_accept(&self) -> (Vec<T>, Wake) {
        let mut st = lock(&self.state);
        st.accepting = false;
        let queued: Vec<T> = st.backlog.drain(..).collect();
        self.set_backlog_hint(&st);
        for slot in &queued {
            // Only the slot's own entry: under NEO/py rules a queued request is not in
            // the table, and its id may be one of our pending requests.
            let id = slot.id();
            if matches!(st.entries.get(&id), Some(Entry::Open(s)) if s.same(slot)) {
                st.entries.remove(&id);
                st.open -= 1;
            }
        }
        let mut wake = st.acceptors.take();
        wake.add(st.backlog_waiter.take());
        (queued, wake)
    }

    /// Removes connection `slot` from the table, leaving a closed record for `keep` if given
    /// (peer-initiated connections), so late packets are answered "connection closed".
    pub(crate) fn close(&self, slot: &T, keep: bool, now: Instant) {
        lock(&self.state).close(slot, keep, now);
    }

    /// Closes `slot` (as [`Self::close`]) and gives it back for reuse, under one lock. It is
    /// pooled only when nobody else holds it, so a slot that link shutdown is still closing,
    /// or that a credit update is touching, can never be handed to a new exchange.
    pub(crate) fn retire(&self, slot: T, keep: bool, now: Instant) {
        let mut st = lock(&self.state);
        st.close(&slot, keep, now);
        st.recycle(slot);
    }

    /// Every open connection (to wake their senders when the peer's mode changes).
    pub(crate) fn open_slots(&self) -> Vec<T> {
        lock(&self.state)
            .entries
            .values()
            .filter_map(|e| match e {
                Entry::Open(s) => Some(s.clone()),
                Entry::Closed { .. } => None,
            })
            .collect()
    }

    /// Marks the table down and takes every open connection (for the caller to shut down
    /// outside the lock). Returns `None` if it was already down.
    pub(crate) fn shutdown(&self) -> Option<(Vec<T>, Wake)> {
        let mut st = lock(&self.state);
        if st.down {
            return None;
        }
        st.down = true;
        st.accepting = false;
        let slots = st
            .entries
            .drain()
            .filter_map(|(_, e)| match e {
                Entry::Open(s) => Some(s),
                Entry::Closed { .. } => None,
            })
            .collect();
        st.open = 0;
        st.closed.clear();
        st.backlog.clear();
        self.set_backlog_hint(&st);
        st.pool.clear();
        let mut wake = st.acceptors.take();
        wake.add(st.backlog_waiter.take());
        Some((slots, wake))
    }

    /// What `id` maps to right now.
    pub(crate) fn id_state(&self, id: u32, now: Instant) -> IdState {
        let mut st = lock(&self.state);
        st.expire(now);
        match st.entries.get(&id) {
            Some(Entry::Open(_)) => IdState::Open,
            Some(Entry::Closed { .. }) => IdState::KeptClosed,
            None => IdState::Free,
        }
    }

    fn set_backlog_hint(&self, st: &State<T>) {
        self.backlog_len
            .store(st.backlog.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// How many incoming connections wait to be accepted (without taking the lock).
    pub(crate) fn backlog_hint(&self) -> usize {
        self.backlog_len.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Open connections and closed records.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let st = lock(&self.state);
        (st.open, st.closed.len())
    }
}

impl<T: Slot> State<T> {
    fn close(&mut self, slot: &T, keep: bool, now: Instant) {
        if self.down {
            return;
        }
        let id = slot.id();
        let ours = matches!(self.entries.get(&id), Some(Entry::Open(s)) if s.same(slot));
        if !ours {
            return;
        }
        self.open -= 1;
        if keep && !self.limits.keep_closed.is_zero() && self.limits.max_keep_closed > 0 {
            let until = now + self.limits.keep_closed;
            self.entries.insert(id, Entry::Closed { until });
            self.closed.push_back((until, id));
            while self.closed.len() > self.limits.max_keep_closed {
                self.forget_oldest();
            }
        } else {
            self.entries.remove(&id);
        }
    }

    fn recycle(&mut self, slot: T) {
        if !self.down && self.pool.len() < self.limits.pool_max && slot.is_unique() {
            self.pool.push(slot);
        }
    }

    fn alloc_id(&mut self) -> Result<u32, OpenError> {
        // Ids are handed out +2 (NEO/go) or +1 (NEO/py) at a time and wrap around; skip ids
        // still in use. The table never holds anywhere near 2^31 entries (max_conns and
        // max_keep_closed bound it), so this loop ends quickly; the bound only guards
        // against a misconfiguration.
        let step = match self.numbering {
            Numbering::ByParity { .. } => 2,
            Numbering::ByAnswerBit => 1,
        };
        for _ in 0..=(u32::MAX / step) {
            let id = self.next_id;
            self.next_id = id.wrapping_add(step);
            if Some(id) != self.reserved && !self.entries.contains_key(&id) {
                return Ok(id);
            }
        }
        Err(OpenError::TooMany)
    }

    fn take_slot(&mut self, id: u32) -> T {
        match self.pool.pop() {
            Some(slot) => {
                slot.recycle(id);
                slot
            }
            None => T::fresh(id),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(until, _)) = self.closed.front() {
            if until > now {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((until, id)) = self.closed.pop_front() {
            // The id may have been reused since (wrap-around, or a new record): only drop
            // the entry this record describes.
            if matches!(self.entries.get(&id), Some(Entry::Closed { until: u }) if *u == until) {
                self.entries.remove(&id);
            }
        }
    }
}

#[cfg(all(test, not(nodelink_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[derive(Clone)]
    struct S(Arc<AtomicU32>);
    impl Slot for S {
        fn fresh(id: u32) -> Self {
            S(Arc::new(AtomicU32::new(id)))
        }
        fn recycle(&self, id: u32) {
            assert_eq!(Arc::strong_count(&self.0), 1);
            self.0.store(id, Ordering::Relaxed)
        }
        fn is_unique(&self) -> bool {
            Arc::strong_count(&self.0) == 1
        }
        fn same(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.0, &other.0)
        }
        fn id(&self) -> u32 {
            self.0.load(Ordering::Relaxed)
        }
        fn has_queued(&self) -> bool {
            false
        }
    }

    fn limits() -> Limits {
        Limits {
            max_conns: 8,
            backlog: 2,
            keep_closed: Duration::from_secs(60),
            max_keep_closed: 3,
            pool_max: 4,
        }
    }

    #[test]
    fn ids_by_role_and_wraparound_skips_used_ids() {
        let t = ConnTable::<S>::new(Numbering::ByParity { first: 1 }, Some(u32::MAX), limits());
        let now = Instant::now();
        let ids: Vec<u32> = (0..3).map(|_| t.open_local(now).unwrap().id()).collect();
        assert_eq!(ids, vec![1, 3, 5]);
        let t = ConnTable::<S>::new(
            Numbering::ByParity { first: 0 },
            Some(u32::MAX - 1),
            limits(),
        );
        assert_eq!(t.open_local(now).unwrap().id(), 0);
        assert_eq!(t.open_local(now).unwrap().id(), 2);
        // Jump near the end of the id space: the reserved id is skipped and after wrapping
        // the ids still open (0 and 2) are skipped too.
        lock(&t.state).next_id = u32::MAX - 3;
        let ids: Vec<u32> = (0..3).map(|_| t.open_local(now).unwrap().id()).collect();
        assert_eq!(ids, vec![u32::MAX - 3, 4, 6]);
    }

    #[test]
    fn routing_by_parity_backlog_and_refusal() {
        let t = ConnTable::<S>::new(
            Numbering::ByParity { first: 0 },
            Some(u32::MAX - 1),
            limits(),
        );
        let now = Instant::now();
        assert!(matches!(t.route(2, false, now, |_, _| ()), Route::Closed)); // our parity, unknown
        assert!(matches!(
            t.route(1, false, now, |_, _| ()),
            Route::Accepted(..)
        ));
        assert!(matches!(
            t.route(1, false, now, |_, _| ()),
            Route::Delivered(_)
        ));
        assert!(matches!(
            t.route(3, false, now, |_, _| ()),
            Route::Accepted(..)
        ));
        // The backlog of 2 is full: the packet waits (backpressure), it is not refused.
        assert!(matches!(t.route(5, false, now, |_, _| ()), Route::Full));
        assert!(t.poll_backlog_room(Waker::noop()).is_pending());
        let (queued, _) = t.close_accept();
        assert!(t.poll_backlog_room(Waker::noop()).is_ready());
        assert_eq!(queued.len(), 2);
        assert!(matches!(t.route(7, false, now, |_, _| ()), Route::Refused));
        assert_eq!(t.id_state(1, now), IdState::Free);
    }

    #[test]
    fn neo_py_numbering_counts_by_one_wraps_and_skips_pending_ids() {
        let t = ConnTable::<S>::new(Numbering::ByAnswerBit, None, limits());
        let now = Instant::now();
        let ids: Vec<u32> = (0..3).map(|_| t.open_local(now).unwrap().id()).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        lock(&t.state).next_id = u32::MAX - 1;
        // Every id is usable (no reserved control id), and after wrapping the pending
        // 0, 1 and 2 are skipped.
        let ids: Vec<u32> = (0..3).map(|_| t.open_local(now).unwrap().id()).collect();
        assert_eq!(ids, vec![u32::MAX - 1, u32::MAX, 3]);
    }

    #[test]
    fn neo_py_routes_by_answer_bit_and_never_replies() {
        let t = ConnTable::<S>::new(Numbering::ByAnswerBit, None, limits());
        let now = Instant::now();
        let mine = t.open_local(now).unwrap();
        assert_eq!(mine.id(), 0);
        // The peer's request 0 is a new request even though our request 0 is pending.
        assert!(matches!(
            t.route(0, false, now, |_, new| assert!(new)),
            Route::Accepted(..)
        ));
        assert!(matches!(
            t.route(0, true, now, |s, new| {
                assert!(!new);
                assert!(s.same(&mine));
            }),
            Route::Delivered(..)
        ));
        // An answer for nothing pending: dropped, no reply.
        assert!(matches!(t.route(9, true, now, |_, _| ()), Route::Dropped));
        // Refusing the queued request leaves our pending request 0 alone.
        let (queued, _) = t.close_accept();
        assert_eq!(queued.len(), 1);
        assert_eq!(t.id_state(0, now), IdState::Open);
        assert!(matches!(t.route(1, false, now, |_, _| ()), Route::Dropped));
    }

    #[test]
    fn closed_records_expire_and_are_capped() {
        let t = ConnTable::<S>::new(
            Numbering::ByParity { first: 0 },
            Some(u32::MAX - 1),
            limits(),
        );
        let now = Instant::now();
        for id in [1, 3, 5, 7] {
            assert!(matches!(
                t.route(id, false, now, |_, _| ()),
                Route::Accepted(..)
            ));
            let AcceptPoll::Ready(slot) = t.poll_accept(futures_noop_waker()) else {
                panic!("nothing to accept")
            };
            t.close(&slot, true, now);
        }
        // Cap of 3: the oldest record (id 1) was forgotten.
        assert_eq!(t.id_state(1, now), IdState::Free);
        assert_eq!(t.id_state(3, now), IdState::KeptClosed);
        assert!(matches!(t.route(3, false, now, |_, _| ()), Route::Closed));
        let later = now + Duration::from_secs(61);
        assert_eq!(t.id_state(3, later), IdState::Free);
        assert_eq!(t.counts(), (0, 0));
    }

    #[test]
    fn release_pools_only_unique_slots() {
        let t = ConnTable::<S>::new(Numbering::ByParity { first: 1 }, Some(u32::MAX), limits());
        let now = Instant::now();
        let a = t.open_local(now).unwrap();
        let extra = a.clone();
        t.retire(a, false, now);
        assert_eq!(lock(&t.state).pool.len(), 0);
        t.retire(extra, false, now);
        assert_eq!(lock(&t.state).pool.len(), 1);
        let b = t.open_local(now).unwrap();
        assert_eq!(b.id(), 3);
        assert_eq!(lock(&t.state).pool.len(), 0);
    }

    fn futures_noop_waker() -> &'static Waker {
        Waker::noop()
    }
}

/// Model test (loom): a lightweight exchange closing its connection races with link
/// shutdown. Run with `RUSTFLAGS="--cfg nodelink_loom" cargo test -p nodelink --lib loom`.
#[cfg(all(test, nodelink_loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    struct Conn {
        id: AtomicU32,
        down: AtomicBool,
    }

    #[derive(Clone)]
    struct S(Arc<Conn>);
    impl Slot for S {
        fn fresh(id: u32) -> Self {
            S(Arc::new(Conn {
                id: AtomicU32::new(id),
                down: AtomicBool::new(false),
            }))
        }
        fn recycle(&self, id: u32) {
            // The property under test: a recycled slot is held by nobody else, in
            // particular not by a shutdown that is about to mark it down.
            assert_eq!(Arc::strong_count(&self.0), 1, "recycled a shared slot");
            assert!(
                !self.0.down.load(Ordering::SeqCst),
                "recycled a slot marked down"
            );
            self.0.id.store(id, Ordering::SeqCst);
        }
        fn is_unique(&self) -> bool {
            Arc::strong_count(&self.0) == 1
        }
        fn same(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.0, &other.0)
        }
        fn id(&self) -> u32 {
            self.0.id.load(Ordering::SeqCst)
        }
        fn has_queued(&self) -> bool {
            false
        }
    }

    #[test]
    fn loom_light_close_races_link_shutdown() {
        loom::model(|| {
            let limits = Limits {
                max_conns: 4,
                backlog: 4,
                keep_closed: Duration::from_secs(60),
                max_keep_closed: 4,
                pool_max: 4,
            };
            let table = Arc::new(ConnTable::<S>::new(
                Numbering::ByParity { first: 1 },
                Some(u32::MAX),
                limits,
            ));
            let now = Instant::now();
            let slot = table.open_local(now).unwrap();

            let id = slot.id();
            let t2 = table.clone();
            let shutdown = thread::spawn(move || {
                if let Some((slots, wake)) = t2.shutdown() {
                    for s in slots {
                        s.0.down.store(true, Ordering::SeqCst);
                    }
                    wake.wake();
                }
            });
            // The reader task looks the connection up and delivers into it outside the
            // table lock, so it may still hold the slot when the exchange releases it.
            let t3 = table.clone();
            let reader = thread::spawn(move || {
                if let Some(s) = t3.get(id) {
                    assert_eq!(s.id(), id, "delivered into a slot recycled for another id");
                }
            });

            // The light exchange finishes and recycles its state for the next one.
            table.retire(slot, false, now);
            match table.open_local(now) {
                Ok(next) => {
                    // Either a fresh slot or a recycled one: recycle() asserted it was
                    // unshared. A shutdown that runs later may legitimately mark it down.
                    table.retire(next, false, now);
                }
                Err(e) => assert_eq!(e, OpenError::Down),
            }
            reader.join().unwrap();
            shutdown.join().unwrap();
            assert!(table.shutdown().is_none());
        });
    }
}

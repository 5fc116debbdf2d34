//! Connection ids: who owns which id, how new ones are numbered, and the "recently closed"
//! records (`docs/protocols/link.md`, "Dialects": connection ids, routing, closed records).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::id_table::IdTable;

/// How connection ids are numbered and packets routed: the two NEO dialects.
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

/// What an id maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// An open connection, at this index of the core's slots.
    Open(u32),
    /// A connection of the peer's waiting in the accept backlog with only its first packet
    /// (it gets a slot when a second one comes, or when accepted as a full connection).
    Pending,
    /// A peer-initiated connection we closed; late packets get "connection closed".
    /// `record` numbers the closed record, so an expiring record removes only itself (its
    /// expiry time lives in the record list: a table cell stays at 12 bytes).
    Closed { record: u32 },
}

/// What an id currently maps to (tests and diagnostics).
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IdState {
    Open,
    KeptClosed,
    Free,
}

/// The id map and the id allocator.
pub(crate) struct Ids {
    pub(crate) numbering: Numbering,
    /// Our ids (every id, under NEO/py rules: the peer's requests are never listed).
    ours: IdTable,
    /// The peer's ids (NEO/go rules). Each side numbers in its own sequence, so each
    /// sequence gets a table of its own (`id_table.rs`).
    theirs: IdTable,
    /// `id & parity_mask == their_parity` for the peer's ids: 1 and the peer's parity
    /// under NEO/go rules, 0 and 1 (never equal) under NEO/py rules.
    parity_mask: u32,
    their_parity: u32,
    /// Closed records in expiry order (expiry, id, record number), purged lazily: no timer
    /// runs for them.
    closed: VecDeque<(Instant, u32, u32)>,
    /// The number of the next closed record (wrapping; only equality with a live record
    /// matters, and far fewer than 2^32 records are ever kept).
    next_record: u32,
    next: u32,
    /// An id never handed out (the control id the peer sends extension frames on).
    reserved: Option<u32>,
    keep_closed: Duration,
    max_keep_closed: usize,
}

impl Ids {
    pub(crate) fn new(
        numbering: Numbering,
        reserved: Option<u32>,
        keep_closed: Duration,
        max_keep_closed: usize,
    ) -> Ids {
        let (next, shift, parity_mask, their_parity) = match numbering {
            Numbering::ByParity { first } => (first, 1, 1, (first & 1) ^ 1),
            Numbering::ByAnswerBit => (0, 0, 0, 1),
        };
        Ids {
            numbering,
            parity_mask,
            their_parity,
            ours: IdTable::new(shift),
            theirs: IdTable::new(shift),
            closed: VecDeque::new(),
            next_record: 0,
            next,
            reserved,
            keep_closed,
            max_keep_closed,
        }
    }

    /// The parity of our ids, under NEO/go rules.
    pub(crate) fn our_parity(&self) -> Option<u32> {
        match self.numbering {
            Numbering::ByParity { first } => Some(first % 2),
            Numbering::ByAnswerBit => None,
        }
    }

    /// Whether `id` is in the peer's sequence (NEO/go rules; never under NEO/py rules).
    #[inline]
    fn is_theirs(&self, id: u32) -> bool {
        id & self.parity_mask == self.their_parity
    }

    /// The table `id` belongs in.
    #[inline]
    fn table(&mut self, id: u32) -> &mut IdTable {
        if self.is_theirs(id) {
            &mut self.theirs
        } else {
            &mut self.ours
        }
    }

    #[inline]
    pub(crate) fn get(&self, id: u32) -> Option<Entry> {
        if self.is_theirs(id) {
            self.theirs.get(id)
        } else {
            self.ours.get(id)
        }
    }

    pub(crate) fn insert_open(&mut self, id: u32, index: u32) {
        self.table(id).set(id, Entry::Open(index));
    }

    pub(crate) fn insert_pending(&mut self, id: u32) {
        self.table(id).set(id, Entry::Pending);
    }

    /// Removes the open entry of `id` if it points at `index`, leaving a closed record from
    /// the time in `keep`, if any (and if records are kept at all).
    pub(crate) fn close(&mut self, id: u32, index: u32, keep: Option<Instant>) {
        self.close_entry(id, Entry::Open(index), keep);
    }

    /// [`Self::close`] for a connection that never left the accept backlog's first stage.
    pub(crate) fn close_pending(&mut self, id: u32, keep: Option<Instant>) {
        self.close_entry(id, Entry::Pending, keep);
    }

    #[inline]
    fn close_entry(&mut self, id: u32, expected: Entry, keep: Option<Instant>) {
        match keep {
            Some(now) if !self.keep_closed.is_zero() && self.max_keep_closed > 0 => {
                self.close_keeping(id, expected, now);
            }
            _ => {
                self.table(id).swap_if(id, expected, None);
            }
        }
    }

    /// [`Self::close_entry`] leaving a closed record from `now` (kept out of line: the
    /// common close keeps no record and stays a few instructions).
    #[inline(never)]
    fn close_keeping(&mut self, id: u32, expected: Entry, now: Instant) {
        let record = self.next_record;
        if !self
            .table(id)
            .swap_if(id, expected, Some(Entry::Closed { record }))
        {
            return;
        }
        self.next_record = record.wrapping_add(1);
        self.closed.push_back((now + self.keep_closed, id, record));
        while self.closed.len() > self.max_keep_closed {
            self.forget_oldest();
        }
    }

    /// Allocates our next id: +2 (NEO/go) or +1 (NEO/py), wrapping, skipping ids in use.
    /// The map never holds anywhere near 2^31 entries (the limits bound it), so the loop
    /// ends quickly; its bound only guards against a misconfiguration.
    pub(crate) fn alloc(&mut self) -> Option<u32> {
        self.alloc_where(|table, id| table.get(id).is_none())
    }

    /// [`Self::alloc`] and [`Self::insert_open`] in one step.
    pub(crate) fn alloc_open(&mut self, index: u32) -> Option<u32> {
        // Nearly always the next id is free: take it without the search loop (which goes on
        // from the id after it otherwise).
        let id = self.next;
        self.next = id.wrapping_add(self.step());
        if Some(id) != self.reserved && self.ours.insert_own(id, Entry::Open(index)) {
            return Some(id);
        }
        self.alloc_where(|table, id| table.insert_own(id, Entry::Open(index)))
    }

    /// How our ids advance.
    fn step(&self) -> u32 {
        match self.numbering {
            Numbering::ByParity { .. } => 2,
            Numbering::ByAnswerBit => 1,
        }
    }

    /// The next id `take` accepts (it is told whether an id is free by looking at the
    /// table of our ids).
    fn alloc_where(&mut self, mut take: impl FnMut(&mut IdTable, u32) -> bool) -> Option<u32> {
        let step = self.step();
        for _ in 0..=(u32::MAX / step) {
            let id = self.next;
            self.next = id.wrapping_add(step);
            if Some(id) != self.reserved && take(&mut self.ours, id) {
                return Some(id);
            }
        }
        None
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(until, _, _)) = self.closed.front() {
            if until > now {
                break;
            }
            self.forget_oldest();
        }
    }

    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn state(&mut self, id: u32, now: Instant) -> IdState {
        self.expire(now);
        match self.get(id) {
            Some(Entry::Open(_) | Entry::Pending) => IdState::Open,
            Some(Entry::Closed { .. }) => IdState::KeptClosed,
            None => IdState::Free,
        }
    }

    /// Closed records kept now.
    pub(crate) fn closed_records(&self) -> usize {
        self.closed.len()
    }

    /// Forgets everything (the link is down).
    pub(crate) fn clear(&mut self) {
        self.ours.clear();
        self.theirs.clear();
        self.closed = VecDeque::new();
    }

    #[cfg(test)]
    pub(crate) fn set_next(&mut self, next: u32) {
        self.next = next;
    }

    fn forget_oldest(&mut self) {
        if let Some((_, id, record)) = self.closed.pop_front() {
            // The id may have been reused since (wrap-around, or a new record): only drop
            // the entry this record describes.
            self.table(id).swap_if(id, Entry::Closed { record }, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_by_role_wrap_around_and_skip_used_and_reserved_ids() {
        let mut ids = Ids::new(
            Numbering::ByParity { first: 0 },
            Some(u32::MAX - 1),
            Duration::from_secs(60),
            4,
        );
        assert_eq!((ids.alloc(), ids.alloc()), (Some(0), Some(2)));
        ids.insert_open(0, 0);
        ids.insert_open(2, 1);
        ids.set_next(u32::MAX - 3);
        let got: Vec<u32> = (0..3).map(|_| ids.alloc().unwrap()).collect();
        assert_eq!(got, vec![u32::MAX - 3, 4, 6]);
    }

    #[test]
    fn neo_py_numbering_counts_by_one_and_skips_pending_ids() {
        let mut ids = Ids::new(Numbering::ByAnswerBit, None, Duration::from_secs(60), 4);
        for i in 0..3 {
            let id = ids.alloc().unwrap();
            assert_eq!(id, i);
            ids.insert_open(id, i);
        }
        ids.set_next(u32::MAX - 1);
        let got: Vec<u32> = (0..3).map(|_| ids.alloc().unwrap()).collect();
        assert_eq!(got, vec![u32::MAX - 1, u32::MAX, 3]);
    }

    #[test]
    fn closed_records_expire_and_are_capped() {
        let mut ids = Ids::new(
            Numbering::ByParity { first: 0 },
            None,
            Duration::from_secs(60),
            3,
        );
        let now = Instant::now();
        for (index, id) in [1u32, 3, 5, 7].into_iter().enumerate() {
            ids.insert_open(id, index as u32);
            ids.close(id, index as u32, Some(now));
        }
        // Cap of 3: the oldest record (id 1) was forgotten.
        assert_eq!(ids.state(1, now), IdState::Free);
        assert_eq!(ids.state(3, now), IdState::KeptClosed);
        let later = now + Duration::from_secs(61);
        assert_eq!(ids.state(3, later), IdState::Free);
        assert_eq!(ids.closed_records(), 0);
    }

    #[test]
    fn an_expiring_record_leaves_a_newer_record_of_the_same_id_alone() {
        let mut ids = Ids::new(
            Numbering::ByParity { first: 0 },
            None,
            Duration::from_secs(60),
            8,
        );
        let now = Instant::now();
        ids.insert_open(1, 0);
        ids.close(1, 0, Some(now));
        // The peer reuses the id after our record: a new connection, closed again later.
        ids.table(1).swap_if(1, Entry::Closed { record: 0 }, None);
        ids.insert_open(1, 1);
        let later = now + Duration::from_secs(30);
        ids.close(1, 1, Some(later));
        // The first record expires; the second still holds.
        assert_eq!(
            ids.state(1, now + Duration::from_secs(61)),
            IdState::KeptClosed
        );
        assert_eq!(ids.state(1, later + Duration::from_secs(61)), IdState::Free);
    }

    #[test]
    fn closing_a_stale_index_leaves_the_new_owner_alone() {
        let mut ids = Ids::new(Numbering::ByAnswerBit, None, Duration::ZERO, 0);
        let now = Instant::now();
        ids.insert_open(5, 1);
        ids.close(5, 0, None);
        assert_eq!(ids.state(5, now), IdState::Open);
    }
}

//! Where the id map keeps its entries: a direct-mapped table for ids that come in sequence,
//! with a hash map for the few that do not fit.
//!
//! Both NEO dialects number connections in sequence (`docs/protocols/link.md`,
//! "Dialects"): each side counts its ids up, by 2 under NEO/go rules and by 1 under NEO/py
//! rules.
//! So the ids alive at any moment are mostly a window of consecutive numbers, and
//! `(id >> shift) mod len` puts each in a cell of its own. A lookup is then one array index
//! and one comparison instead of a hash probe; this runs several times per lightweight
//! request (`docs/PERFORMANCE.md`, "The lightweight request path, fourth round").
//!
//! An id whose cell is taken by another id (a connection that outlived a whole turn of the
//! table, or a peer that picks its ids at random) doubles the table when at least half of
//! its cells are in use, and otherwise goes to the overflow map. Memory therefore stays
//! within a few cells per entry whatever ids the peer chooses, and a dense sequence fills
//! the cells without collisions. Our own ids never need the overflow map: the allocator
//! skips an id whose cell is taken ([`IdTable::insert_own`]), as it skips ids in use. While
//! the map holds anything, every insert looks there too, so keeping it empty keeps the
//! table's fast path.

use std::collections::hash_map::Entry as MapEntry;

use rustc_hash::FxHashMap;

use super::ids::Entry;

/// The table starts with this many cells, the first time an id is stored.
const MIN_CELLS: usize = 16;
/// The table never grows past this many cells (48 MiB); beyond, ids overflow to the map.
const MAX_CELLS: usize = 1 << 22;

/// One cell: the id it holds and its entry, as two plain words (`tag` 0 for a vacant
/// cell), so that a lookup compares integers.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cell {
    id: u32,
    tag: u32,
    value: u32,
}

const VACANT: Cell = Cell {
    id: 0,
    tag: 0,
    value: 0,
};

impl Cell {
    #[inline]
    fn new(id: u32, entry: Entry) -> Cell {
        let (tag, value) = pack(entry);
        Cell { id, tag, value }
    }

    #[inline]
    fn is_vacant(&self) -> bool {
        self.tag == 0
    }

    #[inline]
    fn holds(&self, id: u32) -> bool {
        self.id == id && self.tag != 0
    }

    #[inline]
    fn entry(&self) -> Entry {
        match self.tag {
            1 => Entry::Open(self.value),
            2 => Entry::Pending,
            _ => Entry::Closed { record: self.value },
        }
    }
}

/// An entry as a cell's (tag, value); tag 0 is a vacant cell.
#[inline]
fn pack(entry: Entry) -> (u32, u32) {
    match entry {
        Entry::Open(index) => (1, index),
        Entry::Pending => (2, 0),
        Entry::Closed { record } => (3, record),
    }
}

/// Ids of one sequence and what each maps to.
pub(super) struct IdTable {
    cells: Vec<Cell>,
    /// `cells.len() - 1` (0 while the table has no cells: every lookup misses).
    mask: usize,
    /// Ids advance by `1 << shift` in the sequence this table holds.
    shift: u32,
    /// Cells in use.
    used: usize,
    /// Ids whose cell was taken by another id when they came.
    overflow: FxHashMap<u32, Entry>,
    /// The most cells the table grows to ([`MAX_CELLS`]; smaller in tests).
    max_cells: usize,
}

impl IdTable {
    pub(super) fn new(shift: u32) -> IdTable {
        IdTable {
            cells: Vec::new(),
            mask: 0,
            shift,
            used: 0,
            overflow: FxHashMap::default(),
            max_cells: MAX_CELLS,
        }
    }

    /// A table that grows to at most `max_cells` cells (tests of the overflow map).
    #[cfg(test)]
    fn with_max_cells(shift: u32, max_cells: usize) -> IdTable {
        IdTable {
            max_cells,
            ..IdTable::new(shift)
        }
    }

    #[inline]
    fn index(&self, id: u32) -> usize {
        (id >> self.shift) as usize & self.mask
    }

    #[inline]
    pub(super) fn get(&self, id: u32) -> Option<Entry> {
        match self.cells.get(self.index(id)) {
            Some(cell) if cell.holds(id) => Some(cell.entry()),
            _ if self.overflow.is_empty() => None,
            _ => self.overflow.get(&id).copied(),
        }
    }

    /// Maps `id` to `entry`, replacing what it mapped to.
    #[inline]
    pub(super) fn set(&mut self, id: u32, entry: Entry) {
        self.place(id, entry, true);
    }

    #[inline]
    fn place(&mut self, id: u32, entry: Entry, replace: bool) -> bool {
        let i = self.index(id);
        if let Some(cell) = self.cells.get_mut(i) {
            if cell.holds(id) {
                if replace {
                    *cell = Cell::new(id, entry);
                }
                return replace;
            }
            // A vacant cell is the id's, unless the id waits in the overflow map from
            // when the cell was taken.
            if cell.is_vacant() && self.overflow.is_empty() {
                *cell = Cell::new(id, entry);
                self.used += 1;
                return true;
            }
        }
        self.place_slow(id, entry, replace)
    }

    /// [`Self::place`] when the id's cell is missing or taken, or ids overflowed.
    #[cold]
    fn place_slow(&mut self, id: u32, entry: Entry, replace: bool) -> bool {
        loop {
            let i = self.index(id);
            if let Some(cell) = self.cells.get_mut(i) {
                if cell.holds(id) {
                    if replace {
                        *cell = Cell::new(id, entry);
                    }
                    return replace;
                }
                if cell.is_vacant() {
                    if self.overflow.contains_key(&id) {
                        return self.place_in_overflow(id, entry, replace);
                    }
                    *cell = Cell::new(id, entry);
                    self.used += 1;
                    return true;
                }
            }
            // No cell yet, or another id holds it.
            if self.can_grow() {
                self.grow();
                continue;
            }
            return self.place_in_overflow(id, entry, replace);
        }
    }

    /// Whether a collision doubles the table: it is at least half full and not at its
    /// largest.
    fn can_grow(&self) -> bool {
        self.cells.len() < self.max_cells && self.used * 2 >= self.cells.len()
    }

    /// Maps one of our new ids to `entry`, in its own cell. False if the id is mapped
    /// already, or if another id holds its cell and the table is less than half full: the
    /// allocator then takes the next id instead, so our ids stay out of the overflow map.
    /// Only a table at its largest size overflows.
    pub(super) fn insert_own(&mut self, id: u32, entry: Entry) -> bool {
        loop {
            let i = self.index(id);
            if let Some(cell) = self.cells.get_mut(i) {
                if cell.is_vacant() && self.overflow.is_empty() {
                    *cell = Cell::new(id, entry);
                    self.used += 1;
                    return true;
                }
                if cell.holds(id) {
                    return false;
                }
                if cell.is_vacant() || self.cells.len() >= self.max_cells {
                    // Rare: ids overflowed before, or the table cannot grow.
                    return self.place_slow(id, entry, false);
                }
            }
            if !self.can_grow() {
                return false;
            }
            self.grow();
        }
    }

    fn place_in_overflow(&mut self, id: u32, entry: Entry, replace: bool) -> bool {
        match self.overflow.entry(id) {
            MapEntry::Occupied(mut held) => {
                if replace {
                    held.insert(entry);
                }
                replace
            }
            MapEntry::Vacant(v) => {
                v.insert(entry);
                true
            }
        }
    }

    /// If `id` maps to `expected`, maps it to `new` instead (or to nothing). Returns whether
    /// it did.
    #[inline]
    pub(super) fn swap_if(&mut self, id: u32, expected: Entry, new: Option<Entry>) -> bool {
        let i = self.index(id);
        if let Some(cell) = self.cells.get_mut(i) {
            if cell.holds(id) {
                if (cell.tag, cell.value) != pack(expected) {
                    return false;
                }
                match new {
                    Some(entry) => *cell = Cell::new(id, entry),
                    None => {
                        *cell = VACANT;
                        self.used -= 1;
                    }
                }
                return true;
            }
        }
        if self.overflow.is_empty() {
            return false;
        }
        self.swap_in_overflow(id, expected, new)
    }

    #[cold]
    fn swap_in_overflow(&mut self, id: u32, expected: Entry, new: Option<Entry>) -> bool {
        match self.overflow.entry(id) {
            MapEntry::Occupied(mut held) if *held.get() == expected => {
                match new {
                    Some(e) => {
                        held.insert(e);
                    }
                    None => {
                        held.remove();
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Doubles the cells. Ids in distinct cells stay in distinct cells (an index gains one
    /// bit), so none is displaced; overflowed ids move in where their cell is free.
    #[cold]
    fn grow(&mut self) {
        let len = (self.cells.len() * 2)
            .max(MIN_CELLS)
            .min(self.max_cells.max(MIN_CELLS));
        let old = std::mem::replace(&mut self.cells, vec![VACANT; len]);
        self.mask = len - 1;
        for cell in old.into_iter().filter(|c| !c.is_vacant()) {
            let i = self.index(cell.id);
            self.cells[i] = cell;
        }
        let mut moved = 0;
        let (cells, mask, shift) = (&mut self.cells, self.mask, self.shift);
        self.overflow.retain(|&id, &mut entry| {
            let cell = &mut cells[(id >> shift) as usize & mask];
            if !cell.is_vacant() {
                return true;
            }
            *cell = Cell::new(id, entry);
            moved += 1;
            false
        });
        self.used += moved;
    }

    /// Ids mapped (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.used + self.overflow.len()
    }

    /// Cells and overflowed ids (tests: what the table costs).
    #[cfg(test)]
    pub(super) fn footprint(&self) -> (usize, usize) {
        (self.cells.len(), self.overflow.len())
    }

    /// Forgets every id and gives the memory back.
    pub(super) fn clear(&mut self) {
        *self = IdTable::new(self.shift);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_costs_twelve_bytes() {
        // Every open connection has an entry: keep it small (idle memory per connection).
        assert_eq!(std::mem::size_of::<Cell>(), 12);
    }

    #[test]
    fn a_dense_sequence_fills_the_cells_without_overflow() {
        let mut t = IdTable::new(1);
        for k in 0..1000u32 {
            assert!(t.insert_own(2 * k + 1, Entry::Open(k)));
        }
        assert_eq!(t.footprint(), (1024, 0));
        for k in 0..1000u32 {
            assert_eq!(t.get(2 * k + 1), Some(Entry::Open(k)));
            assert_eq!(t.get(2 * k + 3 + 2000), None);
        }
        assert!(!t.insert_own(7, Entry::Pending));
        assert_eq!(t.get(7), Some(Entry::Open(3)));
    }

    #[test]
    fn our_ids_skip_a_taken_cell_and_never_overflow() {
        let mut t = IdTable::new(0);
        // One id stays while a window of 4 passes by many times over, as the allocator
        // hands them out: an id whose cell is taken is skipped.
        assert!(t.insert_own(0, Entry::Open(0)));
        let mut live = std::collections::VecDeque::new();
        let mut next = 1u32;
        let mut skipped = 0;
        for k in 1..10_000u32 {
            while !t.insert_own(next, Entry::Open(k)) {
                skipped += 1;
                next += 1;
            }
            live.push_back((next, k));
            next += 1;
            if live.len() > 4 {
                let (id, k) = live.pop_front().unwrap();
                assert!(t.swap_if(id, Entry::Open(k), None));
            }
            assert_eq!(t.get(0), Some(Entry::Open(0)));
        }
        assert_eq!(t.len(), 5);
        assert_eq!(t.footprint(), (16, 0));
        // One id in 16 shares the long-lived id's cell: about 10 666 / 16 were skipped.
        assert!((640..=690).contains(&skipped), "{skipped} skipped");
    }

    #[test]
    fn a_peer_id_whose_cell_is_taken_overflows_and_stays_found() {
        let mut t = IdTable::new(0);
        t.set(0, Entry::Open(0));
        for id in 1..10_000u32 {
            t.set(id, Entry::Pending);
            if id > 4 {
                assert!(t.swap_if(id - 4, Entry::Pending, None));
            }
            assert_eq!(t.get(0), Some(Entry::Open(0)));
        }
        assert_eq!(t.len(), 5);
        let (cells, overflow) = t.footprint();
        assert!(
            cells <= 16 && overflow <= 1,
            "{cells} cells, {overflow} overflowed"
        );
    }

    #[test]
    fn the_table_agrees_with_a_hash_map_under_random_operations() {
        // Ids from a small range, so cells collide often; a cap of 32 cells, so the
        // overflow map is used a lot; seeded, so a failure repeats.
        let mut rng = nodelink_testkit::SeededRng::new(0x1d7a_b1e5);
        for round in 0..200 {
            let shift = (round % 2) as u32;
            let mut t = IdTable::with_max_cells(shift, 32);
            let mut model = std::collections::HashMap::new();
            for step in 0..400u32 {
                let id = (rng.below(200) as u32) << shift;
                let entry = match rng.below(3) {
                    0 => Entry::Open(step),
                    1 => Entry::Pending,
                    _ => Entry::Closed { record: step },
                };
                match rng.below(4) {
                    0 => {
                        t.set(id, entry);
                        model.insert(id, entry);
                    }
                    1 => {
                        let fresh = !model.contains_key(&id);
                        let placed = t.insert_own(id, entry);
                        if placed {
                            assert!(fresh, "round {round} step {step}: {id} held twice");
                            model.insert(id, entry);
                        }
                    }
                    _ => {
                        let expected = model.get(&id).copied().unwrap_or(Entry::Pending);
                        let new = (rng.below(2) == 0).then_some(entry);
                        let swapped = t.swap_if(id, expected, new);
                        assert_eq!(swapped, model.get(&id) == Some(&expected));
                        if swapped {
                            match new {
                                Some(e) => model.insert(id, e),
                                None => model.remove(&id),
                            };
                        }
                    }
                }
                assert_eq!(t.len(), model.len(), "round {round} step {step}");
                assert_eq!(t.get(id), model.get(&id).copied(), "id {id}");
                if step % 20 == 0 {
                    for probe in 0..200u32 {
                        let probe = probe << shift;
                        assert_eq!(t.get(probe), model.get(&probe).copied(), "id {probe}");
                    }
                }
            }
            let (cells, _) = t.footprint();
            assert!(cells <= 32);
        }
    }

    #[test]
    fn an_overflowed_id_is_held_once_and_moves_in_when_the_table_grows() {
        let mut t = IdTable::new(0);
        t.set(0, Entry::Open(0));
        // 16 shares the cell of 0, and one cell in 16 is in use: no growth, it overflows.
        t.set(16, Entry::Pending);
        assert_eq!(t.footprint(), (16, 1));
        assert!(t.swap_if(0, Entry::Open(0), None));
        // The cell is free now, but 16 is in the overflow map: it is replaced there, not
        // stored a second time.
        t.set(16, Entry::Closed { record: 9 });
        assert!(!t.insert_own(16, Entry::Pending));
        assert_eq!(t.get(16), Some(Entry::Closed { record: 9 }));
        assert_eq!(t.len(), 1);
        // Half the cells in use and a collision: the table doubles and 16 moves in.
        for id in 1..9u32 {
            t.set(id, Entry::Open(id));
        }
        t.set(17, Entry::Open(17));
        assert_eq!(t.footprint(), (32, 0));
        assert_eq!(t.get(16), Some(Entry::Closed { record: 9 }));
        assert_eq!(t.get(17), Some(Entry::Open(17)));
        assert!(t.swap_if(16, Entry::Closed { record: 9 }, None));
        assert_eq!(t.get(16), None);
        assert_eq!(t.len(), 9);
    }

    #[test]
    fn random_ids_keep_the_table_within_a_few_cells_per_id() {
        let mut t = IdTable::new(1);
        let mut x: u32 = 0x9e37_79b9;
        let mut ids = Vec::new();
        for k in 0..5000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if t.get(x).is_none() {
                t.set(x, Entry::Open(k));
                ids.push((x, k));
            }
        }
        for &(id, k) in &ids {
            assert_eq!(t.get(id), Some(Entry::Open(k)));
        }
        let (cells, _) = t.footprint();
        assert!(
            cells <= 4 * ids.len(),
            "{cells} cells for {} ids",
            ids.len()
        );
        for &(id, k) in &ids {
            assert!(t.swap_if(id, Entry::Open(k), None));
        }
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn swap_if_checks_the_entry() {
        let mut t = IdTable::new(0);
        t.set(3, Entry::Open(1));
        assert!(!t.swap_if(3, Entry::Open(2), None));
        assert!(!t.swap_if(4, Entry::Open(1), None));
        assert!(t.swap_if(3, Entry::Open(1), Some(Entry::Closed { record: 0 })));
        assert_eq!(t.get(3), Some(Entry::Closed { record: 0 }));
        t.clear();
        assert_eq!(t.get(3), None);
    }
}

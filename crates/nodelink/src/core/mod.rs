//! The link protocol as an I/O-free state machine.
//!
//! [`LinkCore`] holds everything the NEO link protocol decides (`docs/protocols/link.md`):
//! which connection a packet belongs to, new connections and their accept backlog, the
//! ids we hand out, "recently closed" records, automatic Error replies, the receive
//! budgets, and the flow-control extension (its negotiation and credit accounting). It owns
//! no socket, no task, no lock and no clock:
//!
//! * **in**: received bytes ([`LinkCore::handle_input`]), the application's operations
//!   (open, reserve send credit, receive, close, accept), the expiry of its one timer
//!   ([`LinkCore::handle_timeout`]) and the current time;
//! * **out**: [`Transmit`]s (packets the protocol itself sends: replies, negotiation, credit)
//!   and [`Wakeup`]s (who may now proceed: a receiver, a sender waiting for credit, the
//!   acceptors, the reader), drained by the driver after each call.
//!
//! The driver (`link.rs`, `reader.rs`, `writer.rs`) keeps the core behind one mutex, moves
//! bytes between it and the stream, frames the application's own messages, and turns
//! wakeups into task wakeups. It stores its wakers in the core's per-connection slot
//! (the `W` parameter), which the core never looks into.
//!
//! Because the core is deterministic, its tests drive two cores back to back on a virtual
//! clock (`sim_tests.rs`, with `nodelink_testkit::sim`).
//!
//! Files: this one holds the types, the state and the internals; `ops.rs` the
//! application's operations, `input.rs` the peer's packets and the timer; `ids.rs` (with
//! `id_table.rs`), `conn.rs` and `negotiate.rs` the parts named in the list above.

mod conn;
mod id_table;
mod idle;
mod ids;
mod input;
mod negotiate;
mod ops;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::config::{Config, Dialect, MIN_RECV_BUDGET};
use crate::control;
use crate::frame::{self, FrameError, Packet, HEADER_LEN};
use crate::role::Role;

pub(crate) use conn::{cost_of, RxClosed};
use conn::{Budget, ConnState, Pop, Push};
use idle::Idle;
pub(crate) use idle::IdleEvent;
#[cfg(any(test, feature = "testing"))]
pub(crate) use ids::IdState;
use ids::{Entry, Ids, Numbering};
use negotiate::{Negotiation, Verdict};
pub(crate) use negotiate::{PeerMode, Reply};

/// Names one connection's slot in the core. A key outlives its connection harmlessly: once
/// the slot is released, its generation changes and the old key finds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    index: u32,
    gen: u32,
}

/// A packet the protocol itself sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transmit {
    /// NEO's Error(PROTOCOL_ERROR, "connection closed") on this id.
    Closed(u32),
    /// NEO's Error(PROTOCOL_ERROR, "connection refused") on this id.
    Refused(u32),
    /// A frame of the extension's negotiation, on the peer's control id.
    Negotiation(Reply),
    /// PING on the peer's control id (the idle timeout's probe; extension agreed only).
    Ping,
    /// PONG on the peer's control id, the answer to its PING.
    Pong,
    /// Return `bytes` of connection `id`'s window to the peer (batched into CREDIT frames).
    Credit {
        /// The connection.
        id: u32,
        /// Cost returned.
        bytes: u32,
    },
}

/// Who may proceed after a call.
#[derive(Debug)]
pub(crate) enum Wakeup<W> {
    /// A receiver of this connection: data arrived, or its receive side closed.
    Readable(ConnKey),
    /// A sender of this connection: credit came back, or its send side closed.
    Writable(ConnKey),
    /// Every sender (the peer's flow-control mode changed).
    AllWritable,
    /// The slot of a released connection, with whatever the driver stored in it (tasks
    /// still parked on it must learn that it is gone). Boxed: it is rare, and the list of
    /// wakeups, filled and drained for every request, stays at two words an item.
    Released(Box<W>),
    /// Tasks waiting in accept.
    Acceptors,
    /// The reader, which was told to wait ([`Input::Blocked`]).
    Reader,
}

/// Why an id could not be allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The link is down.
    Down,
    /// No id is free, or the connection limit is reached.
    TooMany,
}

/// Outcome of one accept attempt.
#[derive(Debug)]
pub(crate) enum AcceptPoll<T> {
    Ready(T),
    NotListening,
    Down,
    /// Nothing yet: park the acceptor; [`Wakeup::Acceptors`] comes when something does.
    Pending,
}

/// What [`LinkCore::handle_input`] did with the buffered bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    /// Every complete packet was handled; read more.
    Drained,
    /// A packet must wait (the link-wide receive limit, or a full accept backlog): stop
    /// reading until [`Wakeup::Reader`], then call again.
    Blocked,
    /// The peer said BYE (flow-control extension): the link ends as on an end of stream;
    /// the packets before it were delivered.
    PeerClosed,
}

/// Outcome of reserving send credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reserve {
    Ok,
    /// The peer's window is full: park the sender; [`Wakeup::Writable`] comes with credit.
    Wait,
    /// The connection's send side is closed (or the connection is gone).
    Closed,
}

/// Outcome of a receive.
#[derive(Debug)]
pub(crate) enum Recv {
    Packet(Packet),
    /// Nothing queued: park the receiver; [`Wakeup::Readable`] comes.
    Empty,
    /// The receive side is closed.
    Ended {
        reason: RxClosed,
        /// True the first time this connection reports a link failure.
        first_link_report: bool,
    },
}

/// A request taken with recv1: the packet and the credit owed for it (stateless mode with
/// a peer that takes credit; 0 otherwise).
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) packet: Packet,
    pub(crate) credit: u32,
}

/// Counters kept by the core.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CoreStats {
    pub(crate) packets_in: u64,
    pub(crate) bytes_in: u64,
    pub(crate) conns_opened: u64,
    pub(crate) conns_accepted: u64,
    pub(crate) conns_refused: u64,
    pub(crate) conns_closed: u64,
    pub(crate) recv_overflows: u64,
    pub(crate) control_dropped: u64,
    pub(crate) packets_dropped: u64,
    pub(crate) accept_waits: u64,
    pub(crate) protocol_errors: u64,
    pub(crate) requests_unanswered: u64,
    /// Gauges, filled in by [`LinkCore::stats`]: connections open now, closed ids
    /// remembered, bytes waiting in receive queues.
    pub(crate) open_conns: u64,
    pub(crate) closed_records: u64,
    pub(crate) rx_queued: u64,
}

/// Why the reader waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blocked {
    /// The connections' queues together exceed the link-wide limit.
    Room,
    /// A packet would open a connection, and the accept backlog is full.
    Backlog,
}

/// A connection of the peer's waiting to be accepted.
enum Incoming {
    /// With its slot: more than its first packet came, or it was given one.
    Slot(ConnKey),
    /// Only its first packet came, and no slot was made for it: a request taken with recv1
    /// (the common case) never needs one. Its id, if registered, maps to
    /// [`Entry::Pending`].
    First { packet: Packet, registered: bool },
}

struct Slot<W> {
    gen: u32,
    live: bool,
    conn: ConnState,
    ext: W,
}

/// Where a routed packet goes.
enum Target {
    Existing(u32),
    /// The second packet of a connection still waiting in the backlog.
    Pending,
    New {
        registered: bool,
    },
    Closed,
    Refused,
    Dropped,
}

/// The driver's data per connection, kept in the core's slot (its parked tasks).
pub(crate) trait Ext: Default {
    /// Nothing to wake: a connection released in this state needs no wake-up (most
    /// lightweight exchanges end so, their waiter woken by the answer already).
    fn idle(&self) -> bool;
}

impl Ext for () {
    fn idle(&self) -> bool {
        true
    }
}

/// The link protocol's state for one link. `W` is the driver's per-connection data (its
/// parked tasks).
pub(crate) struct LinkCore<W> {
    name: Arc<str>,
    dialect: Dialect,
    budget: usize,
    link_recv_limit: usize,
    backlog_limit: usize,
    max_conns: usize,
    neg: Negotiation,
    neg_deadline: Instant,
    /// BYE was queued (once per link).
    bye_sent: bool,
    /// The idle timeout (`idle.rs`).
    idle: Idle,
    /// This link's place in its listener's memory budget (`budget.rs`), if it was
    /// accepted.
    memory: Option<Arc<crate::budget::Member>>,
    /// What this link last reported to that budget.
    memory_reported: usize,
    ids: Ids,
    slots: Vec<Slot<W>>,
    free: Vec<u32>,
    /// Connections in the id map.
    open: usize,
    backlog: VecDeque<Incoming>,
    accepting: bool,
    down: bool,
    /// Cost of everything queued in connection receive queues.
    rx_total: usize,
    /// Receivers woken for data they have not taken yet.
    ready: usize,
    /// Consumed cost worth returning as credit ([`Self::credit_every`]; `usize::MAX` while
    /// the peer takes none), kept with the mode by `enter_mode`.
    credit_at: usize,
    blocked: Option<Blocked>,
    /// The packet the reader could not deliver yet.
    pending: Option<Packet>,
    /// Whole packets read after `pending`, not yet routed: the rest of the block it came
    /// in (a slice of the same read, no copy).
    unrouted: Bytes,
    transmits: Vec<Transmit>,
    wakeups: Vec<Wakeup<W>>,
    stats: CoreStats,
}

impl<W: Ext> LinkCore<W> {
    /// The core of a link whose handshake just finished. An offering dialer's HELLO is the
    /// first transmit.
    pub(crate) fn new(role: Role, config: &Config, name: Arc<str>, now: Instant) -> Self {
        let dialect = config.dialect;
        let numbering = match dialect {
            Dialect::NeoGo => Numbering::ByParity {
                first: crate::role::first_id(role),
            },
            Dialect::NeoPy => Numbering::ByAnswerBit,
        };
        // The control id the peer would send extension frames on is never a connection of
        // ours (NEO/py has no extension, and every id is usable there).
        let reserved = (dialect == Dialect::NeoGo).then(|| control::control_id_of(role));
        let budget = config.effective_budget();
        let (neg, offer) = Negotiation::start(
            role,
            config.extension_enabled(),
            dialect == Dialect::NeoGo,
            budget as u32,
        );
        let mut core = LinkCore {
            bye_sent: false,
            idle: Idle::new(config.idle_timeout, now),
            memory: config
                .budget
                .as_ref()
                .map(|b| Arc::new(crate::budget::Member::join(b))),
            memory_reported: 0,
            name,
            dialect,
            budget,
            link_recv_limit: config.link_recv_limit,
            backlog_limit: config.accept_backlog,
            max_conns: config.max_connections,
            neg,
            neg_deadline: now + config.handshake_timeout,
            ids: Ids::new(
                numbering,
                reserved,
                config.keep_closed,
                config.max_keep_closed,
            ),
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            backlog: VecDeque::new(),
            accepting: true,
            down: false,
            rx_total: 0,
            ready: 0,
            credit_at: usize::MAX,
            blocked: None,
            pending: None,
            unrouted: Bytes::new(),
            transmits: Vec::new(),
            wakeups: Vec::new(),
            stats: CoreStats::default(),
        };
        if let Some(offer) = offer {
            core.transmits.push(Transmit::Negotiation(offer));
        }
        core
    }

    // ---- what the driver reads ----

    /// The peer's flow-control mode.
    pub(crate) fn mode(&self) -> PeerMode {
        self.neg.mode()
    }

    /// Whether a closing link should send BYE: once, and only to a peer that agreed on
    /// the extension (`control.rs`).
    pub(crate) fn says_bye(&mut self) -> bool {
        if self.bye_sent || !matches!(self.neg.mode(), PeerMode::Credit { .. }) {
            return false;
        }
        self.bye_sent = true;
        true
    }

    /// Since when the peer has been quiet, and whether it ever sent a packet after the
    /// handshake (`evict.rs` picks the link a waiting client may replace).
    pub(crate) fn quiet(&self) -> (tokio::time::Instant, bool) {
        (self.idle.last_rx(), self.stats.packets_in > 0)
    }

    pub(crate) fn stats(&self) -> CoreStats {
        CoreStats {
            open_conns: self.open as u64,
            closed_records: self.ids.closed_records() as u64,
            rx_queued: self.rx_total as u64,
            ..self.stats
        }
    }

    /// Receivers told about data they have not taken (a hint that this side is about to
    /// send, used to batch writes).
    pub(crate) fn ready(&self) -> usize {
        self.ready
    }

    /// Incoming connections waiting to be accepted.
    pub(crate) fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Cost queued in connection receive queues.
    #[cfg(test)]
    pub(crate) fn rx_total(&self) -> usize {
        self.rx_total
    }

    /// Open connections and closed records.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.open, self.ids.closed_records())
    }

    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn id_state(&mut self, id: u32, now: Instant) -> IdState {
        self.ids.state(id, now)
    }

    /// Whether packets already cut from the stream wait in the core for the reader's next
    /// call (held back by a pause).
    #[cfg(test)]
    pub(crate) fn holds_input(&self) -> bool {
        self.pending.is_some() || !self.unrouted.is_empty()
    }

    /// Whether the reader must still wait.
    pub(crate) fn reader_blocked(&self) -> bool {
        match self.blocked {
            _ if self.down => false,
            // Others may have made room in the listener's budget since.
            Some(Blocked::Room) => self.over_rx_limit(),
            Some(Blocked::Backlog) => true,
            None => false,
        }
    }

    /// Whether the payload held unread is over this link's bound, or over its share of
    /// an exceeded listener budget.
    fn over_rx_limit(&self) -> bool {
        self.rx_total > self.link_recv_limit
            || self.memory.as_ref().is_some_and(|m| {
                // What this link added since it last reported counts at once.
                m.over(
                    self.rx_total,
                    self.rx_total as isize - self.memory_reported as isize,
                )
            })
    }

    /// Reports the unread payload to the listener's budget, if it changed.
    pub(crate) fn report_memory(&mut self) {
        if let Some(member) = &self.memory {
            if self.rx_total != self.memory_reported {
                member.update_rx(self.memory_reported, self.rx_total);
                self.memory_reported = self.rx_total;
            }
        }
    }

    /// What was last reported to the listener's budget.
    pub(crate) fn memory_reported(&self) -> usize {
        self.memory_reported
    }

    /// This link's place in its listener's budget, shared with the send side.
    pub(crate) fn budget_member(&self) -> Option<&Arc<crate::budget::Member>> {
        self.memory.as_ref()
    }

    /// The one timer: until the extension's negotiation decides.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let negotiation = self.neg.waiting().then_some(self.neg_deadline);
        let idle = if self.down {
            None
        } else {
            self.idle.deadline(self.probes_allowed())
        };
        match (negotiation, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the peer may be sent PING (only a peer that agreed on the extension).
    fn probes_allowed(&self) -> bool {
        matches!(self.neg.mode(), PeerMode::Credit { .. })
    }

    /// The driver's data for a live connection.
    pub(crate) fn ext(&mut self, key: ConnKey) -> Option<&mut W> {
        self.slot(key).map(|s| &mut s.ext)
    }

    /// The driver's data of every live connection.
    pub(crate) fn exts(&mut self) -> impl Iterator<Item = &mut W> + '_ {
        self.slots.iter_mut().filter(|s| s.live).map(|s| &mut s.ext)
    }

    /// Moves the pending transmits into `out`.
    pub(crate) fn take_transmits(&mut self, out: &mut impl Extend<Transmit>) {
        out.extend(self.transmits.drain(..));
    }

    /// Takes the pending wakeups; hand the emptied list back with
    /// [`Self::recycle_wakeups`] to keep its allocation.
    pub(crate) fn take_wakeups(&mut self) -> Vec<Wakeup<W>> {
        std::mem::take(&mut self.wakeups)
    }

    pub(crate) fn recycle_wakeups(&mut self, mut list: Vec<Wakeup<W>>) {
        if self.wakeups.is_empty() {
            list.clear();
            self.wakeups = list;
        }
    }

    pub(crate) fn has_transmits(&self) -> bool {
        !self.transmits.is_empty()
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.transmits.is_empty() || !self.wakeups.is_empty()
    }

    // ---- internals ----

    /// Closes the receive side of a live connection: its id and what was discarded.
    fn close_rx_of(&mut self, key: ConnKey) -> Option<(u32, Option<conn::Dropped>)> {
        let slot = self
            .slots
            .get_mut(key.index as usize)
            .filter(|s| s.live && s.gen == key.gen)?;
        let dropped = slot.conn.close_rx(RxClosed::Local, &mut self.ready);
        Some((slot.conn.id, dropped))
    }

    fn slot(&mut self, key: ConnKey) -> Option<&mut Slot<W>> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|s| s.live && s.gen == key.gen)
    }

    fn alloc_slot(&mut self, id: u32, incoming: bool, registered: bool) -> ConnKey {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    live: false,
                    conn: ConnState::default(),
                    ext: W::default(),
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.live = true;
        slot.conn.reset(id, incoming, registered);
        ConnKey {
            index,
            gen: slot.gen,
        }
    }

    /// Forgets `key`'s id (with a closed record from the time in `keep`, if any) and frees
    /// its slot.
    fn release(&mut self, key: ConnKey, keep: Option<Instant>) {
        let slot = &mut self.slots[key.index as usize];
        slot.conn.close_tx();
        if slot.conn.registered {
            slot.conn.registered = false;
            let id = slot.conn.id;
            self.ids.close(id, key.index, keep);
            self.open -= 1;
        }
        self.free_slot(key.index);
    }

    fn free_slot(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        slot.conn.discard(&mut self.ready);
        slot.live = false;
        slot.gen = slot.gen.wrapping_add(1);
        if !slot.ext.idle() {
            let ext = std::mem::take(&mut slot.ext);
            self.wakeups.push(Wakeup::Released(Box::new(ext)));
        }
        self.free.push(index);
    }

    /// A stateless request is done: if more packets arrived on its id meanwhile, the
    /// connection goes back to the front of the accept queue so they are served in order;
    /// otherwise the id is forgotten.
    fn finish_stateless(&mut self, key: ConnKey) {
        let slot = &self.slots[key.index as usize];
        if !self.down && slot.conn.registered && slot.conn.has_queued() {
            self.backlog.push_front(Incoming::Slot(key));
            self.wakeups.push(Wakeup::Acceptors);
            return;
        }
        self.release(key, None);
    }

    #[inline]
    fn pop_backlog(&mut self) -> Option<Incoming> {
        let entry = self.backlog.pop_front()?;
        if self.blocked == Some(Blocked::Backlog) && self.backlog.len() < self.backlog_limit {
            self.unblock_reader();
        }
        Some(entry)
    }

    /// The slot of a connection taken from the backlog, made now if it has none.
    fn slot_of(&mut self, entry: Incoming) -> ConnKey {
        match entry {
            Incoming::Slot(key) => key,
            Incoming::First { packet, registered } => {
                let id = packet.conn_id;
                let key = self.alloc_slot(id, true, registered);
                let slot = &mut self.slots[key.index as usize];
                // A fresh queue always admits its first packet.
                let _ = slot.conn.push(packet, Budget::Lenient, &mut self.ready);
                if registered {
                    self.ids.insert_open(id, key.index);
                }
                key
            }
        }
    }

    /// A second packet came for connection `id`, which waits in the backlog with its first
    /// one only: it gets its slot now, in the same place in the backlog. Returns the
    /// slot's index.
    fn promote(&mut self, id: u32) -> Option<u32> {
        let pos = self
            .backlog
            .iter()
            .position(|e| matches!(e, Incoming::First { packet, .. } if packet.conn_id == id))?;
        let key = self.alloc_slot(id, true, true);
        if let Incoming::First { packet, .. } =
            std::mem::replace(&mut self.backlog[pos], Incoming::Slot(key))
        {
            let slot = &mut self.slots[key.index as usize];
            let _ = slot.conn.push(packet, Budget::Lenient, &mut self.ready);
        }
        self.ids.insert_open(id, key.index);
        Some(key.index)
    }

    fn accept_end<T>(&self) -> AcceptPoll<T> {
        if self.down {
            AcceptPoll::Down
        } else if !self.accepting {
            AcceptPoll::NotListening
        } else {
            AcceptPoll::Pending
        }
    }

    fn unblock_reader(&mut self) {
        if self.blocked.take().is_some() {
            self.wakeups.push(Wakeup::Reader);
        }
    }

    /// Gives queued cost back to the link-wide budget.
    #[inline]
    fn release_rx(&mut self, cost: usize) {
        self.rx_total -= cost;
        if self.blocked == Some(Blocked::Room) && !self.over_rx_limit() {
            self.unblock_reader();
        }
    }

    /// The peer's window when it takes credit, else no limit. Until the negotiation has
    /// decided, a side that takes part stays within the protocol minimum window, which
    /// every nodelink receiver accepts.
    fn peer_window(&self) -> Option<u64> {
        match self.neg.mode() {
            PeerMode::Credit { window } => Some((window as u64).max(MIN_RECV_BUDGET as u64)),
            PeerMode::Pending => Some(MIN_RECV_BUDGET as u64),
            PeerMode::Neo => None,
        }
    }

    /// How often to return credit, when the peer takes it.
    fn credit_every(&self) -> Option<usize> {
        (self.credit_at != usize::MAX).then_some(self.credit_at)
    }

    /// [`Self::credit_every`] for a mode: `usize::MAX` when the peer takes no credit.
    fn credit_threshold(budget: usize, mode: PeerMode) -> usize {
        match mode {
            PeerMode::Credit { .. } => (budget / 4).max(MIN_RECV_BUDGET / 4),
            _ => usize::MAX,
        }
    }

    fn rx_budget(&self) -> Budget {
        match self.neg.mode() {
            PeerMode::Credit { .. } => Budget::Credit(self.budget),
            _ => Budget::Strict(self.budget),
        }
    }

    /// Returns `bytes` of connection `id`'s window to the peer, when it takes credit.
    fn credit_back(&mut self, id: u32, bytes: usize) {
        if bytes > 0 && matches!(self.neg.mode(), PeerMode::Credit { .. }) {
            let bytes = bytes.min(u32::MAX as usize) as u32;
            self.transmits.push(Transmit::Credit { id, bytes });
        }
    }

    /// An automatic Error reply; never under NEO/py rules (NEO/py has no closed or refused
    /// connections, and an Error for a request it never made would answer nothing).
    fn reply(&mut self, t: Transmit) {
        if self.dialect == Dialect::NeoGo && !self.down {
            self.transmits.push(t);
        }
    }

    fn add_credit(&mut self, id: u32, bytes: u32) {
        if let Some(Entry::Open(index)) = self.ids.get(id) {
            let slot = &mut self.slots[index as usize];
            slot.conn.add_credit(bytes);
            let key = ConnKey {
                index,
                gen: slot.gen,
            };
            self.wakeups.push(Wakeup::Writable(key));
        }
    }

    #[inline]
    fn mode_changed(&mut self, before: PeerMode) {
        let now = self.neg.mode();
        if now != before {
            self.enter_mode(now);
        }
    }

    #[cold]
    fn enter_mode(&mut self, now: PeerMode) {
        tracing::debug!(link = %self.name, mode = ?now, "peer flow-control mode");
        self.credit_at = Self::credit_threshold(self.budget, now);
        if matches!(now, PeerMode::Credit { .. }) {
            // What the application consumed before both sides agreed was not credited:
            // the peer counted it, so give it back now or its sender may wait forever.
            for index in 0..self.slots.len() {
                let slot = &mut self.slots[index];
                if slot.live && slot.conn.registered {
                    let (id, consumed) = (slot.conn.id, slot.conn.take_consumed());
                    self.credit_back(id, consumed);
                }
            }
        }
        self.wakeups.push(Wakeup::AllWritable);
    }
}

/// A receive on a connection that is gone.
fn gone() -> Recv {
    Recv::Ended {
        reason: RxClosed::Local,
        first_link_report: false,
    }
}

//! Per-link counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::core::CoreStats;

/// A snapshot of a link's counters, from [`Link::stats`](crate::Link::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Packets received.
    pub packets_in: u64,
    /// Packets queued for sending.
    pub packets_out: u64,
    /// Bytes received (headers included).
    pub bytes_in: u64,
    /// Bytes queued for sending (headers included).
    pub bytes_out: u64,
    /// Connections this side opened (full and lightweight).
    pub conns_opened: u64,
    /// Incoming connections created by the peer's packets.
    pub conns_accepted: u64,
    /// Incoming connections refused (accept closed, backlog full, table full).
    pub conns_refused: u64,
    /// Connections closed by the application.
    pub conns_closed: u64,
    /// Connections whose receive side was closed for exceeding their budget.
    pub recv_overflows: u64,
    /// Automatic replies not sent because the peer was not reading them.
    pub replies_dropped: u64,
    /// Malformed or unexpected control frames ignored (NEO/go's "connection closed" answer
    /// to our flow-control offer is counted here too).
    pub control_dropped: u64,
    /// Packets dropped without a reply under NEO/py rules: an answer for no pending
    /// request of ours, or a request while nobody accepts.
    pub packets_dropped: u64,
    /// Times the reader paused because the accept backlog was full (backpressure: the
    /// peer's new connections wait in the stream until the application accepts).
    pub accept_waits: u64,
    /// Protocol violations that took the link down (oversized length, unparsable bytes):
    /// each is also logged at WARN with the peer's address.
    pub protocol_errors: u64,
    /// Requests taken with `recv1` and released without an answer (dropped, closed, or
    /// their handler panicked); in the neo-go dialect each was answered "connection
    /// closed".
    pub requests_unanswered: u64,
    /// Connections open now (a gauge, not a counter).
    pub open_conns: u64,
    /// Ids of closed connections still remembered, so that late packets for them are
    /// recognised (a gauge; they expire).
    pub closed_records: u64,
    /// Bytes received and not yet taken by the application, over all connections (a gauge;
    /// bounded by the receive budgets).
    pub rx_queued: u64,
    /// Bytes queued to send or being written, not yet taken by the socket (a gauge;
    /// bounded by [`Config::send_buffer`](crate::Config::send_buffer), and by the link's
    /// share of a listener's exceeded memory budget).
    pub tx_queued: u64,
}

/// Counters of the send side; the protocol core keeps the others.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) packets_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) replies_dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self, core: &CoreStats, tx_queued: usize) -> LinkStats {
        LinkStats {
            packets_in: core.packets_in,
            packets_out: self.packets_out.load(Relaxed),
            bytes_in: core.bytes_in,
            bytes_out: self.bytes_out.load(Relaxed),
            conns_opened: core.conns_opened,
            conns_accepted: core.conns_accepted,
            conns_refused: core.conns_refused,
            conns_closed: core.conns_closed,
            recv_overflows: core.recv_overflows,
            replies_dropped: self.replies_dropped.load(Relaxed),
            control_dropped: core.control_dropped,
            packets_dropped: core.packets_dropped,
            accept_waits: core.accept_waits,
            protocol_errors: core.protocol_errors,
            requests_unanswered: core.requests_unanswered,
            open_conns: core.open_conns,
            closed_records: core.closed_records,
            rx_queued: core.rx_queued,
            tx_queued: tx_queued as u64,
        }
    }
}

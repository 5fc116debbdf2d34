//! Per-link counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) packets_in: AtomicU64,
    pub(crate) packets_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) conns_opened: AtomicU64,
    pub(crate) conns_accepted: AtomicU64,
    pub(crate) conns_refused: AtomicU64,
    pub(crate) conns_closed: AtomicU64,
    pub(crate) recv_overflows: AtomicU64,
    pub(crate) replies_dropped: AtomicU64,
    pub(crate) control_dropped: AtomicU64,
    pub(crate) packets_dropped: AtomicU64,
    pub(crate) accept_waits: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LinkStats {
        LinkStats {
            packets_in: self.packets_in.load(Relaxed),
            packets_out: self.packets_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            conns_opened: self.conns_opened.load(Relaxed),
            conns_accepted: self.conns_accepted.load(Relaxed),
            conns_refused: self.conns_refused.load(Relaxed),
            conns_closed: self.conns_closed.load(Relaxed),
            recv_overflows: self.recv_overflows.load(Relaxed),
            replies_dropped: self.replies_dropped.load(Relaxed),
            control_dropped: self.control_dropped.load(Relaxed),
            packets_dropped: self.packets_dropped.load(Relaxed),
            accept_waits: self.accept_waits.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
        }
    }
}

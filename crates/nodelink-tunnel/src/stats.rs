//! [`TunnelStats`]: what one tunnel end did, for monitoring and tests (the KCP-level
//! counters are process-wide, in [`nodelink_kcp::snmp`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// A snapshot of one tunnel end's counters (all only grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunnelStats {
    /// KCP sessions dialled (client) or accepted (server).
    pub sessions_opened: u64,
    /// Streams forwarded (opened on both sides and copying).
    pub streams_forwarded: u64,
    /// Streams given up: the client could not open one on its session, or the server could
    /// not reach the target.
    pub streams_failed: u64,
    /// Streams whose copying has ended.
    pub streams_closed: u64,
    /// Streams the server closed at once because it already forwarded as many as it may
    /// ([`Server::with_max_streams`](crate::Server::with_max_streams)); always 0 on a client.
    pub streams_refused: u64,
}

/// Where an end's [`TunnelStats`] can be read while [`run`](crate::Client::run) owns the
/// end, and after it stopped; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StatsHandle(Arc<Atomic>);

#[derive(Debug, Default)]
struct Atomic {
    sessions: AtomicU64,
    streams: AtomicU64,
    streams_failed: AtomicU64,
    streams_closed: AtomicU64,
    streams_refused: AtomicU64,
}

impl StatsHandle {
    /// The counters now.
    pub fn stats(&self) -> TunnelStats {
        TunnelStats {
            sessions_opened: self.0.sessions.load(Relaxed),
            streams_forwarded: self.0.streams.load(Relaxed),
            streams_failed: self.0.streams_failed.load(Relaxed),
            streams_closed: self.0.streams_closed.load(Relaxed),
            streams_refused: self.0.streams_refused.load(Relaxed),
        }
    }

    pub(crate) fn session(&self) {
        self.0.sessions.fetch_add(1, Relaxed);
    }

    pub(crate) fn stream(&self) {
        self.0.streams.fetch_add(1, Relaxed);
    }

    pub(crate) fn stream_failed(&self) {
        self.0.streams_failed.fetch_add(1, Relaxed);
    }

    pub(crate) fn stream_closed(&self) {
        self.0.streams_closed.fetch_add(1, Relaxed);
    }

    pub(crate) fn stream_refused(&self) {
        self.0.streams_refused.fetch_add(1, Relaxed);
    }
}

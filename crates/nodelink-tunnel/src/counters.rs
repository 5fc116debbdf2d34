//! [`Counters`]: what one tunnel end did, for monitoring and tests (the KCP-level counters
//! are process-wide, in [`nodelink_kcp::snmp`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// A snapshot of one tunnel end's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// KCP sessions dialled (client) or accepted (server).
    pub sessions: u64,
    /// Streams forwarded (opened on both sides and copying).
    pub streams: u64,
    /// Streams given up: the client could not open one on its session, or the server could
    /// not reach the target.
    pub streams_failed: u64,
    /// Streams whose copying has ended.
    pub streams_closed: u64,
    /// Streams the server closed at once because it already forwarded as many as it may
    /// ([`Server::with_max_streams`](crate::Server::with_max_streams)); always 0 on a client.
    pub streams_refused: u64,
}

/// A live view of an end's counters; cheap to clone, valid after the end stopped.
#[derive(Debug, Clone, Default)]
pub struct CounterHandle(Arc<Atomic>);

#[derive(Debug, Default)]
struct Atomic {
    sessions: AtomicU64,
    streams: AtomicU64,
    streams_failed: AtomicU64,
    streams_closed: AtomicU64,
    streams_refused: AtomicU64,
}

impl CounterHandle {
    /// The counters now.
    pub fn snapshot(&self) -> Counters {
        Counters {
            sessions: self.0.sessions.load(Relaxed),
            streams: self.0.streams.load(Relaxed),
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

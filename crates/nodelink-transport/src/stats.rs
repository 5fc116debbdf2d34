//! What an operator can read off a running transport: snapshots of counters (they only
//! grow) and gauges (what is there now), as docs/CONVENTIONS.md ("Stats") describes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of one endpoint, from [`EndPoint::stats`](crate::EndPoint::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndPointStats {
    /// Sockets open to remote endpoints now (a gauge; one per remote endpoint at most).
    pub sockets: u64,
    /// Connections remote endpoints have open to us now (a gauge).
    pub connections_in: u64,
    /// Connections we have open to remote endpoints now (a gauge; self-connections are
    /// not counted).
    pub connections_out: u64,
    /// Messages received from remote endpoints.
    pub messages_in: u64,
    /// Payload bytes received from remote endpoints.
    pub bytes_in: u64,
    /// Sockets that broke, or were dropped for a violation or an unanswered probe, while
    /// open (each also posted as `ConnectionLost`; a peer closing its endpoint is not
    /// counted here).
    pub sockets_lost: u64,
    /// Sockets dropped because the peer broke the protocol or sent a message over
    /// `max_receive_length` (each also logged at WARN, within the warning budget).
    pub protocol_violations: u64,
}

/// A snapshot of a transport, from [`Transport::stats`](crate::Transport::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Endpoints open now (a gauge).
    pub endpoints: u64,
    /// Incoming handshakes that failed: timed out, malformed, for an endpoint that does not
    /// exist, without a common version, or with an origin that does not check out.
    pub handshakes_failed: u64,
    /// Bytes the sockets hold now of messages still arriving, against
    /// [`Config::max_memory`](crate::Config::max_memory) (a gauge, published in steps of
    /// 64 KiB per socket).
    pub memory_held: u64,
    /// Incoming sockets open now, handshakes included (a gauge, at most
    /// [`Config::max_sockets`](crate::Config::max_sockets)).
    pub sockets_in: u64,
}

/// An endpoint's counters, kept outside its lock.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) sockets_lost: AtomicU64,
    pub(crate) protocol_violations: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// The counters into `stats` (whose gauges the caller fills).
    pub(crate) fn fill(&self, stats: &mut EndPointStats) {
        stats.messages_in = self.messages_in.load(Relaxed);
        stats.bytes_in = self.bytes_in.load(Relaxed);
        stats.sockets_lost = self.sockets_lost.load(Relaxed);
        stats.protocol_violations = self.protocol_violations.load(Relaxed);
    }
}

//! What an endpoint reports to its owner.

use std::fmt;

use bytes::Bytes;

use crate::address::EndPointAddress;

/// Identifies an incoming lightweight connection: `(heavyweight id << 32) | lcid`.
///
/// The heavyweight id is chosen by the receiving endpoint per remote endpoint, from 1
/// (0 is a connection to oneself); the lcid is chosen by the sender, from 1024.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnectionId(pub u64);

impl ConnectionId {
    /// Builds the id from its two halves.
    pub fn new(heavyweight: u32, lcid: u32) -> Self {
        ConnectionId((u64::from(heavyweight) << 32) | u64::from(lcid))
    }

    /// The receiving endpoint's id for the remote endpoint (0 = self).
    pub fn heavyweight(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The sender's lightweight connection id.
    pub fn lcid(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.heavyweight(), self.lcid())
    }
}

/// Delivery guarantee of a connection; TCP gives only one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Reliability {
    /// Reliable, in order.
    ReliableOrdered,
}

/// The kind of an [`Event::Error`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum EventErrorKind {
    /// The socket to this endpoint failed. Every connection to and from it, in both
    /// directions, counts as broken: sends on outgoing ones fail, incoming ones get no
    /// `ConnectionClosed`. The event comes before any new connection from that endpoint.
    ConnectionLost(EndPointAddress),
    /// The endpoint failed as a whole.
    EndPointFailed,
    /// The transport's listener failed; no more incoming connections.
    TransportFailed,
}

/// A short description for people: `connection to 127.0.0.1:4000:0 lost`.
impl fmt::Display for EventErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventErrorKind::ConnectionLost(peer) => write!(f, "connection to {peer} lost"),
            EventErrorKind::EndPointFailed => f.write_str("endpoint failed"),
            EventErrorKind::TransportFailed => f.write_str("transport failed"),
        }
    }
}

/// One event of an endpoint, in the order [`EndPoint::receive`](crate::EndPoint::receive)
/// returns them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// A remote endpoint (or this one) opened a connection to us.
    ConnectionOpened {
        /// The new connection's id.
        id: ConnectionId,
        /// Always [`Reliability::ReliableOrdered`].
        reliability: Reliability,
        /// Who opened it (for an unaddressable peer: a random address naming its socket).
        address: EndPointAddress,
    },
    /// One message; only the concatenation of the chunks is meaningful.
    Received {
        /// The connection it came on.
        id: ConnectionId,
        /// The message's bytes.
        data: Vec<Bytes>,
    },
    /// The sender closed the connection.
    ConnectionClosed {
        /// The closed connection.
        id: ConnectionId,
    },
    /// The endpoint is closed; this is the last event.
    EndPointClosed,
    /// Something failed; see [`EventErrorKind`].
    Error {
        /// What failed.
        kind: EventErrorKind,
        /// Human-readable detail, complete in itself (it names the peer): print this.
        message: String,
    },
}

//! Deterministic simulators for I/O-free protocol cores: no sockets, no sleeping, a
//! virtual clock, and every fault drawn from a seed, so the same seed gives the same run.
//!
//! - [`StreamPair`] joins two cores by one byte stream (the link, smux and an endpoint
//!   transport socket): bytes arrive in order, cut into chunks of any size, after delays,
//!   and the stream may break.
//! - [`Network`] carries whole messages between any number of nodes over any number of
//!   channels that the test opens and closes as it goes: ordered ones (a TCP connection
//!   being set up, with its handshake) and datagram ones that lose, duplicate and reorder
//!   (KCP), with partitions.

mod network;
mod stream;

pub use network::{ChannelId, Link, Network, NetworkStats};
pub use stream::{Faults, StreamNode, StreamPair};

//! The transport's protocol, without I/O (docs/protocols/transport.md).
//!
//! - `handshake.rs`: the request and its answer that make a TCP socket a heavyweight
//!   connection, both sides, with version renegotiation and the host check;
//! - `peers.rs`: an endpoint's table of peers, one socket per remote endpoint, and the
//!   tie-break when two endpoints connect to each other at once;
//! - `socket.rs`: everything decided on an accepted socket: the connections open in each
//!   direction and the teardown by reference counts and CloseSocket, probes and their
//!   deadlines.
//!
//! The tasks around them (connects, incoming handshakes, the socket's reader, closes) only
//! move bytes and events, resolve host names and sleep until the cores' deadlines.

pub(crate) mod handshake;
pub(crate) mod peers;
pub(crate) mod socket;

#[cfg(test)]
mod crossing_tests;
#[cfg(test)]
mod sim_tests;

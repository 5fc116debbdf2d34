//! The transport's protocol, without I/O (docs/protocols/transport.md).
//!
//! `socket.rs` holds everything decided on an accepted socket: the connections open in
//! each direction and the teardown by reference counts and CloseSocket, probes and their
//! deadlines. The tasks around it (the socket's reader, connects, closes) only move bytes
//! and events and sleep until its deadlines.

pub(crate) mod socket;

#[cfg(test)]
mod sim_tests;

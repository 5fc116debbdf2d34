//! The tunnel's decisions, without I/O.
//!
//! - `forward.rs`: one forwarded connection, both directions of the copy and the closing
//!   rule of the smux version;
//! - `pool.rs`: the client's session slots: which session a new connection uses, when a
//!   session is replaced (dead or expired), and when an expired one is closed.
//!
//! The tasks in `client.rs`, `server.rs` and `mux.rs` do the I/O around them.

pub(crate) mod forward;
pub(crate) mod pool;

#[cfg(test)]
mod forward_tests;

//! The implementations under test, all speaking the same tiny application protocol so the
//! comparison is like for like.
//!
//! # The application protocol (every implementation)
//!
//! A *message* is an opaque byte string. On byte-stream transports (raw TCP, yamux streams)
//! a message is framed as `u32 BE length | bytes`; on nodelink it is one packet (request
//! code [`REQUEST_CODE`], answer code [`ANSWER_CODE`]); on h2 it is a request body /
//! response body (DATA frames; a stream per request, or one long-lived bidirectional stream
//! where a scenario needs "one connection").
//!
//! The server answers every message on the same stream/connection: messages of at most
//! [`ECHO_LIMIT`] bytes are echoed in full, larger ones are acknowledged with an 8-byte
//! message holding their length as `u64 BE` (so bulk transfers measure one direction).
//!
//! # The client API every implementation provides
//!
//! ```text
//! rtt_conn(payload, n)        -> Vec<Duration>  serial round trips on ONE stream/connection
//!                                               (h2: one stream per request, its natural use)
//! rtt_ask1(payload, n)        -> Vec<Duration>  serial round trips, a NEW stream per request
//! concurrent(payload, workers, per_worker)
//!                             -> Duration       `workers` tasks each doing `per_worker`
//!                                               new-stream round trips; total elapsed
//! bulk(msg_size, count)       -> Duration       one stream sends `count` messages of
//!                                               `msg_size`; elapsed until the last ack
//! fairness(conns, size, msgs) -> Vec<Duration>  `conns` streams at once, each sending
//!                                               `msgs` messages of `size` (one at a time,
//!                                               waiting for each echo); per-stream time
//!                                               until its last echo, from the common start
//! idle(conns)                 -> IdleConns      opens `conns` streams, each sends one
//!                                               1-byte message and gets its echo, all kept
//!                                               open until the returned value is dropped
//! ```

use std::time::Duration;

pub mod h2;
pub mod nodelink;
pub mod raw_tcp;
pub mod yamux;

/// Largest message the server echoes in full; larger ones get an 8-byte acknowledgement.
pub const ECHO_LIMIT: usize = 64 << 10;
/// nodelink request code used by the benchmark.
pub const REQUEST_CODE: u16 = 0x0100;
/// nodelink answer code used by the benchmark.
pub const ANSWER_CODE: u16 = 0x8100;

/// A running echo server of any implementation; dropping it stops accepting.
pub struct Server {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// The accept loop.
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Open streams kept alive for the idle-memory scenario; dropping closes them.
pub struct IdleConns(
    // Never read: holding the value is the point.
    #[allow(dead_code)] pub Box<dyn std::any::Any + Send>,
);

/// What the server sends back for a message of `len` bytes.
pub fn answer_len(len: usize) -> usize {
    if len <= ECHO_LIMIT {
        len
    } else {
        8
    }
}

/// How a server treats incoming streams, for implementations where it matters (nodelink:
/// lightweight `recv1` for the ask1 scenarios, accepted connections served by a task each
/// otherwise). Others ignore it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerMode {
    /// One task per accepted connection, which it keeps open.
    PerConnection,
    /// One request in, one answer out, no state per connection.
    Lightweight,
    /// Answer the first message of every stream, then keep the stream open without a task
    /// (the idle-connection scenario measures what the protocol itself keeps per stream).
    Hold,
}

/// Elapsed times measured by the scenarios.
pub type Times = Vec<Duration>;

//! The tokio driver: KCP sessions over UDP, wire-compatible with kcp-go.
//!
//! # Shape
//!
//! Every session is a [`Pipeline`](crate::pipeline::Pipeline) (crypto + FEC + KCP, sans IO)
//! behind a short-held `std::sync::Mutex`, shared by two parties:
//!
//! * the **application**, through [`KcpStream`] (`AsyncRead + AsyncWrite` in stream mode,
//!   [`KcpStream::send_message`] / [`KcpStream::recv_message`] in message mode). A write
//!   queues bytes into KCP (waiting while [`send_capacity`](crate::core::Kcp::send_capacity)
//!   is 0: that is the backpressure) and kicks the driver; a read takes whatever KCP has
//!   reassembled or parks its waker;
//! * one **driver task** per session, which owns the network side: it feeds received
//!   datagrams in, runs KCP's timers, sends what KCP emits and wakes the application.
//!   It sleeps until the earliest of: a datagram, a kick from the application, KCP's
//!   [`check`](crate::core::Kcp::check) deadline (one timer per session, rescheduled
//!   every round; there is no global tick), the dead-peer deadline and the linger
//!   deadline. Outgoing datagrams are collected under the lock and sent after it is
//!   released: no lock is ever held across an `.await`.
//!
//! A client ([`KcpStream::connect`]) owns a connected UDP socket (the kernel drops
//! datagrams from other addresses) and picks a random non-zero conversation id. A
//! [`KcpListener`] owns one socket and a **demultiplexer task** that decrypts every datagram,
//! routes it by remote address to its session's driver through a bounded channel, and
//! creates sessions following kcp-go's rules: a new session only from a data or plain
//! packet that carries a well-formed KCP segment (never from an FEC parity packet, whose
//! conv is unknown), a different conv from a known address replaces the session only if
//! its first segment has `sn == 0`, and no new sessions while the accept backlog is full.
//!
//! Either can run on a socket the application already owns ([`KcpStream::connect_on`],
//! [`KcpListener::from_socket`], as kcp-go's `NewConn` and `ServeConn`), and
//! [`KcpListener::connect`] opens an outgoing session through the demultiplexer, so one
//! UDP port both serves and dials (what a peer behind a NAT needs): the demultiplexer
//! routes the dialled peer's datagrams to that session instead of accepting a new one.
//!
//! # Failure and close
//!
//! KCP has no handshake and no FIN: a peer that vanishes is only noticed when our data
//! goes unacknowledged. A session is declared dead when KCP's dead-link count is
//! reached or when data waited [`dead_timeout`](crate::Config::dead_timeout)
//! without any ACK progress; every pending and later read or write then fails with an
//! error of kind [`DeadLink`](crate::ErrorKind::DeadLink) (in `AsyncRead`/`AsyncWrite`, an
//! `io::Error` of kind `ConnectionAborted` wrapping it).
//! Dropping a stream (or `shutdown`) keeps the driver sending what is queued until it is
//! acknowledged or [`linger`](crate::Config::linger) elapses.
//!
//! # Counters
//!
//! [`KcpStream::stats`] gives one session's counters, [`KcpListener::stats`] the
//! listener's own (datagrams dropped before reaching a session), and [`snmp`] the
//! process-wide totals, like kcp-go's `DefaultSnmp`.

mod budget;
mod driver;
mod listener;
mod stream;
#[cfg(test)]
mod tests;
mod udp;

use std::sync::atomic::Ordering::Relaxed;

pub use listener::KcpListener;
pub use stream::{KcpStream, SessionMonitor};

use crate::pipeline::{AtomicStats, Stats};

/// Process-wide counters.
static GLOBAL: AtomicStats = AtomicStats::new();

/// A snapshot of the process-wide counters of every session and listener (kcp-go's
/// `DefaultSnmp`).
pub fn snmp() -> Stats {
    GLOBAL.snapshot()
}

/// Counts a session opening (`active`: client) in the global counters.
fn count_open(active: bool) {
    if active {
        GLOBAL.active_opens.fetch_add(1, Relaxed);
    } else {
        GLOBAL.passive_opens.fetch_add(1, Relaxed);
    }
    let now = GLOBAL.curr_estab.fetch_add(1, Relaxed) + 1;
    GLOBAL.max_conn.fetch_max(now, Relaxed);
}

/// Counts a session ending.
fn count_close() {
    let _ = GLOBAL
        .curr_estab
        .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
}

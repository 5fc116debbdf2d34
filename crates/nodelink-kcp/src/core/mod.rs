//! The KCP protocol as a sans-IO state machine, wire-compatible with kcp-go.
//!
//! # What KCP is
//!
//! KCP is an ARQ protocol: it turns an unreliable datagram channel (UDP) into a reliable,
//! ordered one, trading bandwidth for latency. It numbers data *segments* (`sn`),
//! acknowledges each one selectively (`ACK`) and cumulatively (`una`, carried by every
//! segment), retransmits on timeout (RTO) and, more aggressively than TCP, when later
//! segments were acknowledged first (fast / early retransmit). Flow control is a window
//! counted in segments (`wnd`, the receiver's free queue slots); congestion control is
//! an optional Reno-like window that kcptun usually turns off (`nc = 1`).
//!
//! The wire format is a 24-byte little-endian header per segment, several segments per
//! datagram ([`segment`]). There is no handshake: both peers simply share a conversation
//! id (`conv`).
//!
//! # Sans IO
//!
//! [`Kcp`] owns no socket and no clock. The caller passes the time (milliseconds on any
//! wrapping `u32` clock, the same one for every call), feeds received datagrams in and
//! receives outgoing datagrams through a callback. This keeps the algorithm
//! deterministic and testable with a virtual clock, and lets the session layer add
//! encryption and FEC around the datagrams ([`Kcp::set_headroom`] reserves room for
//! their headers at the front of every outgoing datagram).
//!
//! # Driving it
//!
//! ```
//! use nodelink_kcp::core::Kcp;
//!
//! let mut a = Kcp::new(0x1234);
//! let mut b = Kcp::new(0x1234);
//! a.set_nodelay(true, 10, 2, true); // kcptun's "fast3" preset
//! b.set_nodelay(true, 10, 2, true);
//! let mut now = 0u32;
//! let mut wire: Vec<Vec<u8>> = Vec::new();
//!
//! // Writer: queue data (respect `send_capacity` for backpressure), then flush
//! // (flushing right away is kcp-go's default; waiting for `update` is "write delay").
//! a.send(b"hello").unwrap();
//! a.flush(now, |dgram| wire.push(dgram.to_vec()));
//!
//! // Reader: feed datagrams, then let `update` send what the input asked for (ACKs).
//! let mut ack_wire: Vec<Vec<u8>> = Vec::new();
//! for d in wire.drain(..) {
//!     b.input(&d, now, true).unwrap();
//! }
//! b.update(now, |dgram| ack_wire.push(dgram.to_vec()));
//! let mut buf = [0u8; 64];
//! assert_eq!(b.recv(&mut buf).unwrap(), Some(5));
//! assert_eq!(&buf[..5], b"hello");
//!
//! // Timers: sleep until `check`, then call `update`; repeat.
//! now += 5;
//! for d in ack_wire.drain(..) {
//!     a.input(&d, now, true).unwrap();
//! }
//! let wake_at = a.check(now);
//! assert!(wake_at.wrapping_sub(now) <= a.interval());
//! now = wake_at;
//! a.update(now, |dgram| wire.push(dgram.to_vec()));
//! assert_eq!(a.wait_snd(), 0); // acknowledged
//! ```
//!
//! The loop of a session task is therefore: on a datagram, `input` then `update`; on
//! application data, `send` then `flush`; on the timer (`check`'s deadline), `update`;
//! after `recv`, `update` too (a reader freeing a full window owes the peer a window
//! update). [`Kcp::is_dead`] reports a peer that stopped acknowledging.
//!
//! # kcp-go flavour
//!
//! Defaults and algorithm follow kcp-go 5.6.1: receive window 32, RTO min 100 (30 with
//! nodelay), RTO floor of one interval, halved backoff with nodelay, fast retransmit
//! every time the threshold is reached, early retransmit, ACKs filtered below `rcv_nxt`,
//! no RTT samples or window updates from FEC-recovered datagrams, window probes from 7 s
//! up to 120 s, 255 fragments per message.

mod kcp;
mod rtt;
pub mod segment;

#[cfg(test)]
mod tests;

pub use self::kcp::{
    Kcp, KcpStats, DEFAULT_DEAD_LINK, DEFAULT_INTERVAL, DEFAULT_MTU, DEFAULT_RCV_WND,
    DEFAULT_SND_WND, MAX_FRAGMENTS, MAX_MTU, MIN_MTU,
};
pub use self::rtt::{RTO_DEFAULT, RTO_MAX, RTO_MIN, RTO_NODELAY_MIN};
pub use self::segment::{Command, SegmentHeader, HEADER_LEN};

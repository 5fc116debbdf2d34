//! # nodelink: many connections over one link, wire-compatible with NEO
//!
//! A [`Link`] joins two nodes over one reliable byte stream (TCP, TLS, a Unix socket, an
//! in-memory pipe, a KCP session) and carries many lightweight [`Conn`]ections over it,
//! speaking NEO's `neonet` link protocol byte for byte:
//!
//! * a handshake where each side sends a 4-byte version word (default 6);
//! * packets of `conn id u32 | code u16 | len u32 | payload`, at most 64 MiB;
//! * connection ids by role: the dialer (client) uses odd ids from 1, the acceptor (server)
//!   even ids from 0, so both sides open connections without coordination;
//! * NEO's Error message, with the link's own "connection closed" and "connection refused"
//!   replies.
//!
//! ## A round trip
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> nodelink::Result<()> {
//! use nodelink::{Config, Ping, Pong};
//!
//! let mut listener = nodelink::bind("127.0.0.1:0", Config::default()).await?;
//! let addr = listener.local_addr();
//! tokio::spawn(async move {
//!     let link = listener.accept().await.unwrap();
//!     // Lightweight mode: one request in, one answer out, no connection state kept.
//!     while let Ok(request) = link.recv1().await {
//!         let _ = request.reply(&Pong).await;
//!     }
//! });
//!
//! let link = nodelink::connect(addr, Config::default()).await?;
//! let _pong: Pong = link.ask1(&Ping).await?;
//! link.close().await;
//! # Ok(()) }
//! ```
//!
//! ## Two ways to talk
//!
//! * **Full connections**: [`Link::open`] / [`Link::accept`] give a [`Conn`] with
//!   [`send`](Conn::send), [`recv`](Conn::recv), [`expect`](Conn::expect),
//!   [`ask`](Conn::ask) and [`close`](Conn::close), for conversations of many messages.
//! * **Lightweight mode**: [`Link::send1`], [`Link::ask1`] and [`Link::recv1`] +
//!   [`Request::reply`] for one request and at most one answer. Connection state is pooled,
//!   so this path does not allocate once the link is warm.
//!
//! Messages are types implementing [`Message`] (a code plus an encoding), or raw
//! [`Packet`]s whose payload is a zero-copy [`bytes::Bytes`]. With the `serde` feature,
//! [`serde_message!`] turns any serde type into a message in one line.
//!
//! ## Flow control
//!
//! NEO has none: a connection whose application stops reading either stalls every other
//! connection of the link or grows memory without bound. nodelink bounds each connection's
//! unread data by [`Config::conn_recv_budget`] and the whole link's by
//! [`Config::link_recv_limit`], and never lets one connection stall the reader:
//!
//! * between two nodelink nodes, a credit extension gives every connection its own flow
//!   control: a sender waits when the receiver's window is full, nothing else waits. It is
//!   used only by agreement: the dialing side offers it, the accepting side answers, and a
//!   peer that did not ask never sees an extension frame ([`Config::flow_control`], NEO/go
//!   dialect only);
//! * with a strict NEO peer, which cannot be slowed down per connection, a connection that
//!   exceeds its budget has its **receive side closed**: the application's next receive
//!   fails with [`ErrorKind::RecvBudgetExceeded`], and the peer gets NEO's
//!   "connection closed" Error for the overflowing packet. The other connections are not
//!   affected.
//!
//! New connections are paced, not refused: when [`Config::accept_backlog`] connections
//! wait for [`Link::accept`], the link stops reading from the socket until the application
//! accepts one, which pushes back on the peer through TCP (as NEO/go does). An application
//! that never accepts should call [`Link::close_accept`], after which new connections are
//! refused with NEO's "connection refused" Error.
//!
//! ## Dialects
//!
//! [`Config::dialect`] picks how connection ids are numbered and routed: [`Dialect::NeoGo`]
//! (the default; odd ids from the dialer, even from the acceptor) or [`Dialect::NeoPy`]
//! (NEO/py 1.12: one counter per side, routed by the answer bit). The wire format of both,
//! the extension and the budgets are described in `docs/protocols/link.md`.
//!
//! ## Typed requests and serving them
//!
//! A request type can declare its answer type ([`Ask`]; [`serde_message!`] declares both
//! messages and the pair in one line), and [`Link::call`] then returns that type: asking
//! for another does not compile, and neither does a pair that breaks NEO's answer-bit
//! rule. On the server side, [`Handlers`] maps request types to async functions and runs
//! the serve loop (on one link, or on every link of any [`LinkListener`]: TCP, TLS or KCP),
//! answers unknown codes with NEO's Error, and stops gracefully on a `CancellationToken`.
//! The example `examples/typed_rpc.rs` puts it together.
//!
//! ## Streams, sinks and tower
//!
//! [`Conn::packets`] is a connection's incoming packets as a `futures` `Stream`, and
//! [`Conn::packet_sink`] its sending side as a `Sink`. With the `tower` feature,
//! `AskService` is [`Link::call`] as a `tower::Service`, so tower's timeouts, retries,
//! concurrency and rate limits wrap a link unchanged.
//!
//! ## Errors
//!
//! Every error is an [`Error`] whose [`kind`](Error::kind) can be matched, printed as
//! `<local> - <remote> .<conn id>: <operation>: <cause>`. What happened to a request is
//! told by the kind alone: [`ErrorKind::Refused`] (the peer does not accept connections),
//! [`ErrorKind::ClosedByPeer`] (the request was released unanswered, for example by a
//! handler that panicked), [`ErrorKind::Peer`] (the application's Error),
//! [`ErrorKind::DeadlineExceeded`] ([`Config::ask_timeout`] or a `*_within` call) and
//! [`ErrorKind::DeadPeer`] (the peer went silent: TCP timed out, KCP found it dead). No
//! call waits forever for a peer that released its request: a dropped or panicked
//! [`Request`] is answered "connection closed".
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tls` | yes | links over TLS with NEO's node certificates (`rustls`, `ring`) |
//! | `serde` | yes | [`serde_message!`]: serde types as messages (MessagePack) |
//! | `kcp` | no | links over KCP sessions (`nodelink::kcp`, the `nodelink-kcp` crate) |
//! | `tower` | no | `AskService`: lightweight requests as a `tower::Service` |
//!
//! With `default-features = false` the crate is the plain link over TCP or any byte stream.
//!
//! ## Observability
//!
//! Every packet sent and received is a `tracing` event at TRACE level (code, connection,
//! length); [`Link::stats`] returns the link's counters.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod accept;
mod adapters;
mod budget;
mod config;
mod conn;
mod control;
mod core;
mod error;
mod evict;
mod exchange;
mod frame;
mod handle;
mod handshake;
mod inner;
#[cfg(feature = "kcp")]
pub mod kcp;
mod link;
mod message;
mod net;
mod reader;
mod request;
mod role;
#[cfg(feature = "serde")]
mod serde_codec;
mod serve;
mod stats;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "tls")]
mod tls_start;
mod txqueue;
mod waiters;
mod warnings;
mod writer;

#[cfg(feature = "tower")]
pub use adapters::AskService;
pub use adapters::{PacketSink, PacketStream};
pub use config::{default_max_links, Config, Dialect, DEFAULT_VERSION, MIN_RECV_BUDGET};
pub use conn::Conn;
pub use error::{DecodeError, Error, ErrorKind, HandshakeError, Result};
pub use frame::{
    decode_packet, decode_packet_with_limit, is_answer, FrameError, Header, Packet, ANSWER_BIT,
    HEADER_LEN, MAX_PACKET_SIZE, MAX_PAYLOAD_LEN,
};
pub use handle::Link;
#[cfg(feature = "kcp")]
pub use kcp::{bind_kcp, connect_kcp, KcpLinkListener};
pub use message::{Ask, ErrorCode, ErrorMessage, Message, Ping, Pong, Raw};

/// What [`serde_message!`] expands to, so that its users need no `bytes` dependency of
/// their own. Not a public API.
#[doc(hidden)]
pub mod __macro {
    pub use crate::message::check_codes;
    pub use bytes::{Bytes, BytesMut};
}
pub use net::{bind, connect, LinkListener, Listener};
pub use request::Request;
pub use role::{PeerFlowControl, Role};
#[cfg(feature = "serde")]
pub use serde_codec::{decode_serde, encode_serde};
pub use serve::{Handlers, DEFAULT_MAX_IN_FLIGHT};
pub use stats::LinkStats;

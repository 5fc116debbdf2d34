//! An endpoint transport wire-compatible with Haskell's `network-transport-tcp`
//! (protocol version 0, as spoken by versions 0.6 to 0.8.6), so that a Rust node and a
//! Cloud Haskell node can exchange messages.
//!
//! # Model
//!
//! * A [`Transport`] owns one listening TCP socket (or none: [`Transport::unaddressable`]).
//! * It hosts [`EndPoint`]s, each with an [`EndPointAddress`] `host:port:id` and one queue
//!   of [`Event`]s, read with [`EndPoint::receive`] or as a `Stream`.
//! * [`EndPoint::connect`] opens a lightweight, unidirectional [`Connection`]. All
//!   connections between two endpoints, in both directions, share one TCP socket (the
//!   "heavyweight connection"); the socket is closed by reference counting once nothing
//!   uses it, and reopened on demand. A connection is closed by [`Connection::close`] or
//!   when its last clone is dropped.
//! * Replies go over a connection the receiver opens back to the sender's address.
//!
//! # Safety bounds
//!
//! Unlike the original, nothing waits without a bound and nothing from the network can
//! make memory grow without a limit: see [`Config`] for the connect timeout,
//! the maximum address and frame lengths, and the bounded event queue (a full queue
//! stops reading the sockets that feed it).
//!
//! # Example
//!
//! ```
//! use nodelink_transport::{Event, Transport, Config};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), nodelink_transport::Error> {
//! let t1 = Transport::bind("127.0.0.1", 0, Config::default()).await?;
//! let t2 = Transport::bind("127.0.0.1", 0, Config::default()).await?;
//! let alice = t1.open_endpoint().await?;
//! let bob = t2.open_endpoint().await?;
//!
//! let conn = alice.connect(bob.address()).await?;
//! conn.send(&[&b"hello, "[..], &b"bob"[..]]).await?;
//!
//! let Event::ConnectionOpened { id, address, .. } = bob.receive().await? else { panic!() };
//! assert_eq!(&address, alice.address());
//! let Event::Received { id: rid, data } = bob.receive().await? else { panic!() };
//! assert_eq!(rid, id);
//! assert_eq!(data.concat(), b"hello, bob");
//!
//! conn.close().await;
//! assert_eq!(bob.receive().await?, Event::ConnectionClosed { id });
//! t1.close().await;
//! t2.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Modules
//!
//! The wire format lives in [`wire`] (sans-IO, usable for tests and fuzzing), and what
//! happens on an accepted socket (connections each way, the CloseSocket teardown, probes)
//! in the I/O-free `core` (docs/protocols/transport.md). The rest is one file per concept:
//! `transport` (the public handle, listener and accept loop) over `transport_shared` (its
//! state: configuration, endpoint table); `endpoint` (the public handle) over
//! `endpoint_shared` (its state: remote records, event queue); `inbound` (server side of
//! the handshake, crossed requests, probing) and `connect` (client side); `remote` (a
//! remote endpoint's record, with its socket's core); `reader` (the one task per socket,
//! feeding the core) and `writer` (the serialized, cancel-safe write side); `connection`,
//! `selfconn` (connections to oneself), `queue` (the bounded event queue). Peer-caused
//! warnings go through `nodelink_driver::peer_warn!`. No file imports one that imports it
//! back.

mod address;
mod config;
mod connect;
mod connection;
mod core;
mod endpoint;
mod endpoint_shared;
mod error;
mod event;
mod inbound;
mod limit;
mod net;
mod queue;
mod reader;
mod remote;
mod selfconn;
mod stats;
mod transport;
mod transport_shared;
pub mod wire;
mod writer;

pub use address::EndPointAddress;
pub use config::{Config, ConnectHints};
pub use connection::Connection;
pub use endpoint::EndPoint;
pub use error::{Error, ErrorKind};
pub use event::{ConnectionId, Event, EventErrorKind, Reliability};
pub use limit::default_max_sockets;
pub use stats::{EndPointStats, TransportStats};
pub use transport::Transport;

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<crate::Transport>();
        send_sync::<crate::EndPoint>();
        send_sync::<crate::Connection>();
        send_sync::<crate::Error>();
    }
}

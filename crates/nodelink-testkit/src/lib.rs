//! Test helpers for nodelink: a seeded UDP impairment relay for real sockets, a
//! deterministic simulator ([`sim`]) for the I/O-free protocol cores, bounded waits
//! ([`within_for`]), seeded randomness ([`SeededRng`]) and a log sink ([`Captured`])
//! shared by every crate's tests.
//!
//! Transport code such as the KCP crate (`nodelink-kcp`) has to cope with a
//! network that loses, duplicates, reorders, delays and corrupts datagrams.
//! Loopback does none of that, so tests put a [`UdpRelay`] between the two
//! endpoints and tell it how badly to behave with an [`Impairment`]:
//!
//! ```text
//!   client ──► relay.local_addr() ──(impair)──► upstream
//!   client ◄── relay.local_addr() ◄──(impair)── upstream
//! ```
//!
//! # Using the relay
//!
//! ```no_run
//! use std::time::Duration;
//! use nodelink_testkit::{Impairment, UdpRelay};
//! use tokio::net::UdpSocket;
//!
//! # async fn demo() -> std::io::Result<()> {
//! let server = UdpSocket::bind("127.0.0.1:0").await?;
//! let relay = UdpRelay::start(
//!     server.local_addr()?,
//!     Impairment {
//!         drop: 0.05,
//!         delay: Duration::from_millis(20),
//!         jitter: Duration::from_millis(5),
//!         seed: 7,
//!         ..Impairment::default()
//!     },
//! )
//! .await?;
//!
//! // The client talks to the relay instead of the server.
//! let client = UdpSocket::bind("127.0.0.1:0").await?;
//! client.send_to(b"hello", relay.local_addr()).await?;
//!
//! // Later: simulate a peer that went silent, then inspect what happened.
//! relay.set_impairment(Impairment { drop: 1.0, ..Impairment::default() });
//! println!("{:?}", relay.stats());
//! # Ok(())
//! # }
//! ```
//!
//! # Determinism
//!
//! Every decision (drop? duplicate? reorder? corrupt which bit? how much
//! jitter?) comes from a [`rand::rngs::StdRng`] seeded from
//! [`Impairment::seed`]: the client→upstream direction uses `seed`, the
//! upstream→client direction `seed + 1`. Each datagram consumes the same
//! fixed number of random draws, in arrival order, whatever the
//! probabilities are. So for a given seed and a given sequence of datagrams
//! the decisions — and therefore the final [`RelayStats`] counters — are
//! reproducible. Only *when* a delayed datagram is delivered depends on the
//! scheduler; *whether* and *how* it is delivered does not. (The kernel may
//! still drop datagrams before the relay sees them if a test floods a
//! socket; pace large bursts by awaiting [`UdpRelay::stats`].)
//!
//! # Bounded resources
//!
//! Each direction is a single task with one small delay queue (no task per
//! datagram). The queue holds at most [`MAX_QUEUED`] datagrams; further
//! delayed datagrams are dropped and counted in
//! [`DirectionStats::overflowed`]. Dropping the [`UdpRelay`] aborts both
//! tasks, which closes the relay's sockets.

mod impairment;
mod logs;
mod relay;
mod seeded;
pub mod sim;
mod wait;

pub use impairment::{Impairment, ImpairmentError};
pub use logs::Captured;
pub use relay::{DirectionStats, RelayStats, UdpRelay, MAX_QUEUED, REORDER_TIMEOUT};
pub use seeded::{seeded_bytes, SeededRng};
pub use wait::within_for;

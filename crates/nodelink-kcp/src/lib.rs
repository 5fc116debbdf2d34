//! # nodelink-kcp: KCP reliable UDP, wire-compatible with kcp-go
//!
//! Layers, each its own module:
//!
//! * [`core`]: the KCP protocol as a sans-IO state machine (bytes in, datagrams out, time
//!   passed in explicitly), kcp-go's flavour of the algorithm;
//! * [`fec`]: kcp-go's Reed-Solomon forward error correction of datagrams;
//! * [`crypt`]: kcp-go's datagram encryption (nonce + CRC-32 header, every kcptun cipher)
//!   and kcptun's key derivation.
//!
//! * [`pipeline`]: one session's datagram path (crypto + FEC + KCP), still sans IO;
//! * [`session`]: the tokio driver: [`KcpStream`] (client, `AsyncRead + AsyncWrite`) and
//!   [`KcpListener`] (one UDP socket, sessions demultiplexed by remote address).

mod config;
pub mod core;
pub mod crypt;
mod error;
pub mod fec;
pub mod pipeline;
#[cfg(test)]
mod pipeline_sim_tests;
pub mod session;
mod stats;

pub use error::{Error, ErrorKind, Result};
pub use pipeline::{AckTiming, Config, Mode, Stats};
pub use session::{snmp, KcpListener, KcpStream, SessionMonitor};

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
//! The tokio session and listener that drive these over UDP are built on top (in progress).

pub mod core;
pub mod crypt;
mod error;
pub mod fec;

pub use error::{Error, Result};

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
//!
//! ## A session
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use nodelink_kcp::{Config, KcpListener, KcpStream};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // Both ends must agree on the cipher, the key and FEC (kcptun's rules).
//! let config = Config::default().with_key("a long random secret");
//! let mut listener = KcpListener::bind("127.0.0.1:0", config.clone()).await?;
//! let addr = listener.local_addr();
//! let server = tokio::spawn(async move {
//!     let (mut stream, _peer) = listener.accept().await?;
//!     let mut hello = [0u8; 5];
//!     stream.read_exact(&mut hello).await?;
//!     stream.write_all(&hello).await?;
//!     stream.close().await?;
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! });
//! let mut client = KcpStream::connect(addr, config).await?;
//! client.write_all(b"hello").await?;
//! let mut echo = [0u8; 5];
//! client.read_exact(&mut echo).await?;
//! assert_eq!(&echo, b"hello");
//! # server.await.unwrap()?; Ok(()) }
//! ```
//!
//! ## On a socket of your own
//!
//! [`KcpStream::connect_on`] and [`KcpListener::from_socket`] take a
//! `tokio::net::UdpSocket` the application already has (kcp-go's `NewConn` and
//! `ServeConn`): a socket bound with options of its own, or one whose port a NAT maps
//! after a rendezvous exchange. [`KcpListener::connect`] dials from the listener's socket,
//! so one port serves and dials at once. The example `examples/own_socket.rs` shows it.
//!
//! ## Security: what the ciphers protect, and what they do not
//!
//! kcp-go's datagram encryption (and so kcptun's, and ours, byte for byte) was made to
//! hide traffic, not to authenticate it:
//!
//! * **Every cipher except `aes-128-gcm` is unauthenticated.** The block ciphers run in
//!   CFB mode and the only integrity check is a CRC-32 inside the encrypted header. A
//!   CRC is not a MAC: an attacker who can modify datagrams can flip chosen bits of the
//!   plaintext and fix the checksum up, and nothing detects it. Wrong keys are detected
//!   only by luck of the CRC (and are dropped silently, which is why a wrong key looks
//!   like a dead peer; the link layer's handshake says so).
//! * **`xor`, `none` and `null` give no confidentiality at all**: `xor` is a fixed pad,
//!   `none` keeps the header but does not encrypt, `null` sends KCP in the clear.
//! * **The default key is public.** [`DEFAULT_KEY`](crate::pipeline::DEFAULT_KEY)
//!   (`"it's a secrect"`, kcptun's default, spelling included) is in every copy of
//!   kcptun; a session with the default key is as good as unencrypted. The key goes
//!   through PBKDF2 (SHA-1, 4096 rounds, a fixed salt), which slows guessing a weak key
//!   but does not make one strong.
//! * **Replays are not detected**: the random nonce prevents identical ciphertexts, not
//!   the replay of a captured datagram (KCP drops duplicate segments it still remembers;
//!   a new session from a forged source address is accepted).
//!
//! What to use instead: `aes-128-gcm` (AES-128-GCM, authenticated, as upstream kcp-go)
//! with a long random key ([`Config::with_crypt`], [`Config::with_key`]) when both ends
//! support it; for anything sensitive, authenticate above KCP (TLS or an application
//! protocol with its own keys) or run KCP inside a VPN such as WireGuard. Treat the
//! other ciphers as obfuscation.

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

pub use crypt::CipherKind;
pub use error::{Error, ErrorKind, Result};
pub use pipeline::{AckTiming, Config, Mode, Stats};
pub use session::{snmp, KcpListener, KcpStream, SessionMonitor};

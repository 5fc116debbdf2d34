//! # nodelink-tunnel: a kcptun-compatible TCP port forwarder
//!
//! The thing most people run KCP for: TCP connections carried over KCP (reliable UDP),
//! wire-compatible with Debian's `kcptun-client` / `kcptun-server` (20210922) in both
//! directions.
//!
//! ```text
//!  TCP clients ──► Client ══ KCP sessions (UDP) ══► Server ──► TCP target
//!                    one smux stream per TCP connection, over `conn` sessions
//! ```
//!
//! Each KCP session carries, from the bottom up, exactly what kcptun puts on it:
//!
//! 1. a KCP **stream** ([`nodelink_kcp::KcpStream`]) with kcptun's settings: stream mode,
//!    no write delay, the `mode` preset (or manual nodelay/interval/resend/nc), windows,
//!    MTU, ack-no-delay, socket buffers, the cipher keyed by PBKDF2 with salt `kcp-go`, and
//!    Reed-Solomon FEC;
//! 2. **snappy framing** ([`snappy`]), unless `nocomp` (both ends must agree);
//! 3. **smux** v1 or v2 ([`nodelink_smux`]), one stream per forwarded TCP connection.
//!
//! See [`client`] for how sessions are chosen, expired and re-dialled, and [`server`] for
//! how targets are dialled and how many streams are forwarded at once.
//!
//! ## Closing
//!
//! An end of stream on either side of a forwarded connection is passed on: the TCP side's
//! end becomes a FIN on the smux stream, a FIN on the stream becomes a TCP write shutdown,
//! each after the data read before it. What happens to the *other* direction depends on
//! the smux version, the same way at both ends of the tunnel:
//!
//! - **smux v1: the first end closes the connection.** smux has no reset frame, so a FIN
//!   may be a half close or a stream the peer dropped (kcptun's client drops its stream
//!   when its TCP connection goes away, then discards what still arrives). Without flow
//!   control, carrying on would push the rest of, say, a cancelled download over the
//!   shared KCP session for nothing. So once one direction ended, the other stops
//!   reading, writes out what it had read, shuts its destination down, and both sockets
//!   are closed: what kcptun itself does. A TCP client that half-closes its connection
//!   through a v1 tunnel therefore gets no answer after its FIN.
//! - **smux v2: half-close both ways.** The peer's window bounds what can be sent in
//!   vain (and a write that gets no window update for smux's stall timeout after the
//!   peer's FIN resets the stream), so each direction ends on its own and a target may
//!   still answer after the client's FIN.
//!
//! An error (a reset TCP connection, a dead session) ends both directions in either
//! version.
//!
//! Settings live in one [`Config`] for both ends, with kcptun's names, per-role
//! defaults and JSON keys ([`config`]); [`snmp`] writes kcptun's counter CSV.
//!
//! ## Example
//!
//! A server forwarding to a local echo service, a client in front of it, and one
//! connection through both:
//!
//! ```
//! use nodelink_tunnel::{Client, Config, Server};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The TCP service the tunnel leads to: echoes one message.
//! let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let echo_addr = echo.local_addr()?;
//! tokio::spawn(async move {
//!     let (mut s, _) = echo.accept().await.unwrap();
//!     let mut buf = [0u8; 5];
//!     s.read_exact(&mut buf).await.unwrap();
//!     s.write_all(&buf).await.unwrap();
//! });
//!
//! let stop = CancellationToken::new();
//! let server_cfg = Config::server()
//!     .with_listen("127.0.0.1:0")
//!     .with_target(echo_addr.to_string());
//! let server = Server::bind(server_cfg).await?;
//!
//! let client_cfg = Config::default()
//!     .with_listen("127.0.0.1:0")
//!     .with_target(server.local_addr().to_string());
//! let client = Client::bind(client_cfg).await?;
//! let entry = client.local_addr();
//!
//! let server_task = tokio::spawn(server.run(stop.clone()));
//! let client_task = tokio::spawn(client.run(stop.clone()));
//!
//! let mut conn = tokio::net::TcpStream::connect(entry).await?;
//! conn.write_all(b"hello").await?;
//! let mut back = [0u8; 5];
//! conn.read_exact(&mut back).await?;
//! assert_eq!(&back, b"hello");
//!
//! stop.cancel();
//! client_task.await??;
//! server_task.await??;
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod config;
mod core;
mod error;
mod mux;
pub mod server;
pub mod snappy;
pub mod snmp;
mod stats;

use std::net::SocketAddr;

pub use client::Client;
pub use config::{Checked, Config, Manual, Profile, Role, SmuxSettings};
pub use error::{Error, ErrorKind};
pub use server::{default_max_streams, Server, MAX_STREAMS, MIN_SHARE};
pub use stats::{StatsHandle, TunnelStats};
use tokio_util::sync::CancellationToken;

use nodelink_driver::SHUTDOWN_GRACE;

/// How long shutting down waits for the stream tasks to end: a little longer than the
/// grace each forwarded connection has to finish ([`SHUTDOWN_GRACE`]), so that one using
/// all of it is not cut at the same instant.
const TASKS_WAIT: std::time::Duration =
    std::time::Duration::from_secs(SHUTDOWN_GRACE.as_secs() + 1);

/// Either end, for callers that pick the role at run time (the CLI).
#[derive(Debug)]
pub enum Tunnel {
    /// A client.
    Client(Client),
    /// A server.
    Server(Server),
}

impl Tunnel {
    /// Binds the end named by `config.role` ([`Client::bind`] or [`Server::bind`]).
    ///
    /// # Errors
    ///
    /// As those.
    pub async fn bind(config: Config) -> Result<Tunnel, Error> {
        match config.role {
            Role::Client => Client::bind(config).await.map(Tunnel::Client),
            Role::Server => Server::bind(config).await.map(Tunnel::Server),
        }
    }

    /// The address bound (TCP for a client, UDP for a server).
    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Tunnel::Client(c) => c.local_addr(),
            Tunnel::Server(s) => s.local_addr(),
        }
    }

    /// The end's counters now ([`Client::stats`], [`Server::stats`]).
    pub fn stats(&self) -> TunnelStats {
        self.stats_handle().stats()
    }

    /// Where the counters can be read while [`run`](Self::run) owns the end
    /// ([`Client::stats_handle`], [`Server::stats_handle`]).
    pub fn stats_handle(&self) -> StatsHandle {
        match self {
            Tunnel::Client(c) => c.stats_handle(),
            Tunnel::Server(s) => s.stats_handle(),
        }
    }

    /// Runs until `stop` is cancelled ([`Client::run`], [`Server::run`]).
    ///
    /// # Errors
    ///
    /// As those.
    pub async fn run(self, stop: CancellationToken) -> Result<(), Error> {
        match self {
            Tunnel::Client(c) => c.run(stop).await,
            Tunnel::Server(s) => s.run(stop).await,
        }
    }
}

/// One line with the settings in force, like kcptun's start-up log.
pub(crate) fn describe(config: &Config, checked: &Checked) -> String {
    let s = &checked.session;
    let (nd, interval, resend, nc) = checked.nodelay;
    let fec = if s.fec_enabled() {
        format!("fec {}/{}", s.data_shards, s.parity_shards)
    } else {
        "no fec".into()
    };
    format!(
        "crypt {}, {fec}, mode {} (nodelay {} interval {interval} resend {resend} nc {}), \
         mtu {}, sndwnd {}, rcvwnd {}, compression {}, smux v{}, smuxbuf {}, streambuf {}, \
         keepalive {}s, conn {}, sockbuf {}",
        s.crypt,
        config.mode,
        u8::from(nd),
        u8::from(nc),
        s.mtu,
        s.sndwnd,
        s.rcvwnd,
        if config.nocomp { "off" } else { "on" },
        checked.smux.version,
        checked.smux.max_receive_buffer,
        checked.smux.max_stream_buffer,
        checked.smux.keep_alive_interval.as_secs(),
        config.conn,
        s.sockbuf
    )
}

//! Starting each implementation (in process, or its server in a second process) and running
//! the scenarios against it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::impls::{self, IdleConns, ServerMode, Times};

/// The implementations, by the identifiers the JSON output uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// Plain tokio TCP, the baseline.
    RawTcp,
    /// nodelink over TCP.
    Nodelink,
    /// nodelink over an in-memory pipe.
    NodelinkDuplex,
    /// rust-yamux over TCP.
    Yamux,
    /// h2 over TCP.
    H2,
}

impl Impl {
    /// Every implementation, baseline first.
    pub const ALL: [Impl; 5] = [
        Impl::RawTcp,
        Impl::Nodelink,
        Impl::NodelinkDuplex,
        Impl::Yamux,
        Impl::H2,
    ];

    /// The identifier used in the table and the JSON lines.
    pub fn id(self) -> &'static str {
        match self {
            Impl::RawTcp => "raw_tcp",
            Impl::Nodelink => "nodelink",
            Impl::NodelinkDuplex => "nodelink_duplex",
            Impl::Yamux => "yamux",
            Impl::H2 => "h2",
        }
    }

    /// Parses an identifier.
    pub fn from_id(id: &str) -> Option<Impl> {
        Impl::ALL.into_iter().find(|i| i.id() == id)
    }
}

/// A client of any implementation.
pub enum Client {
    /// Raw TCP.
    Raw(impls::raw_tcp::Client),
    /// nodelink (TCP or duplex).
    Nodelink(impls::nodelink::Client),
    /// yamux.
    Yamux(impls::yamux::Client),
    /// h2.
    H2(impls::h2::Client),
}

macro_rules! each {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            Client::Raw($c) => $e,
            Client::Nodelink($c) => $e,
            Client::Yamux($c) => $e,
            Client::H2($c) => $e,
        }
    };
}

impl Client {
    /// See [`impls`] for what each call measures.
    pub async fn rtt_conn(&self, payload: Bytes, n: usize) -> Result<Times> {
        each!(self, c => c.rtt_conn(payload, n).await)
    }
    /// Serial new-stream round trips.
    pub async fn rtt_ask1(&self, payload: Bytes, n: usize) -> Result<Times> {
        each!(self, c => c.rtt_ask1(payload, n).await)
    }
    /// Concurrent new-stream round trips.
    pub async fn concurrent(&self, payload: Bytes, workers: usize, per: usize) -> Result<Duration> {
        each!(self, c => c.concurrent(payload, workers, per).await)
    }
    /// One-stream bulk transfer.
    pub async fn bulk(&self, size: usize, count: usize) -> Result<Duration> {
        each!(self, c => c.bulk(size, count).await)
    }
    /// Many streams at once.
    pub async fn fairness(&self, conns: usize, size: usize, msgs: usize) -> Result<Times> {
        each!(self, c => c.fairness(conns, size, msgs).await)
    }
    /// Idle streams kept open.
    pub async fn idle(&self, conns: usize) -> Result<IdleConns> {
        each!(self, c => c.idle(conns).await)
    }
}

/// A client plus whatever keeps its server alive (a task or a child process).
pub struct Running {
    /// The client.
    pub client: Client,
    _server: Option<Box<dyn std::any::Any + Send>>,
    _child: Option<Child>,
}

/// Starts `imp`'s server (in this process, or in a child process when `two_proc`) and
/// connects a client.
pub async fn start(imp: Impl, mode: ServerMode, two_proc: bool) -> Result<Running> {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    if imp == Impl::NodelinkDuplex {
        if two_proc {
            bail!("nodelink_duplex has no two-process variant");
        }
        let client = impls::nodelink::duplex(mode).await?;
        return Ok(Running {
            client: Client::Nodelink(client),
            _server: None,
            _child: None,
        });
    }
    let (addr, server, child): (SocketAddr, Option<Box<dyn std::any::Any + Send>>, _) = if two_proc
    {
        let (addr, child) = spawn_server(imp, mode).await?;
        (addr, None, Some(child))
    } else {
        let (addr, server) = start_server(imp, loopback, mode).await?;
        (addr, Some(server), None)
    };
    let client = match imp {
        Impl::RawTcp => Client::Raw(impls::raw_tcp::connect(addr).await?),
        Impl::Nodelink | Impl::NodelinkDuplex => {
            Client::Nodelink(impls::nodelink::connect(addr).await?)
        }
        Impl::Yamux => Client::Yamux(impls::yamux::connect(addr).await?),
        Impl::H2 => Client::H2(impls::h2::connect(addr).await?),
    };
    Ok(Running {
        client,
        _server: server,
        _child: child,
    })
}

/// Starts `imp`'s server in this process.
pub async fn start_server(
    imp: Impl,
    bind: SocketAddr,
    mode: ServerMode,
) -> Result<(SocketAddr, Box<dyn std::any::Any + Send>)> {
    Ok(match imp {
        Impl::RawTcp => {
            let s = impls::raw_tcp::start_server(bind, mode).await?;
            (s.addr, Box::new(s))
        }
        Impl::Nodelink | Impl::NodelinkDuplex => {
            let s = impls::nodelink::start_server(bind, mode).await?;
            (s.addr, Box::new(s))
        }
        Impl::Yamux => {
            let s = impls::yamux::start_server(bind, mode).await?;
            (s.addr, Box::new(s))
        }
        Impl::H2 => {
            let s = impls::h2::start_server(bind, mode).await?;
            (s.addr, Box::new(s))
        }
    })
}

/// Runs `nodelink-bench serve` as a child and waits for its address.
async fn spawn_server(imp: Impl, mode: ServerMode) -> Result<(SocketAddr, Child)> {
    let exe = std::env::current_exe().context("locating our own binary")?;
    let mode = match mode {
        ServerMode::Lightweight => "lightweight",
        ServerMode::PerConnection => "per-connection",
        ServerMode::Hold => "hold",
    };
    let mut child = Command::new(exe)
        .args(["serve", "--impl", imp.id(), "--mode", mode])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the server process")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("server did not start in time")??
        .context("server exited before listening")?;
    let addr = first
        .strip_prefix("listening on ")
        .context("unexpected first line from the server")?
        .parse()?;
    Ok((addr, child))
}

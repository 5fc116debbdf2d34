//! Helpers for the TCP-specific and hostile-peer suites: bounded waits, transports on
//! loopback, and a raw peer that speaks the wire protocol byte by byte on a plain tokio
//! `TcpStream` (built by hand from the spec's layouts, not with the crate's codec, so the
//! tests check the implementation against the spec rather than against itself).
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nodelink_transport::{
    Config, ConnectionId, EndPoint, EndPointAddress, Event, EventErrorKind, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Upper bound of any one step of a test.
pub const STEP: Duration = Duration::from_secs(20);

/// The connect timeout the suites configure: short, so silent peers are dealt with fast.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// Control codes (docs/protocols/transport.md, "Frames").
pub const CREATED_NEW_CONNECTION: u32 = 0;
pub const CLOSE_CONNECTION: u32 = 1;
pub const CLOSE_SOCKET: u32 = 2;
pub const CLOSE_END_POINT: u32 = 3;
pub const PROBE_SOCKET: u32 = 4;
pub const PROBE_SOCKET_ACK: u32 = 5;

/// Handshake responses (docs/protocols/transport.md, "Opening a socket").
pub const ACCEPTED: u32 = 0;
pub const INVALID: u32 = 1;
pub const CROSSED: u32 = 2;
pub const HOST_MISMATCH: u32 = 3;
pub const UNSUPPORTED_VERSION: u32 = 0xFFFF_FFFF;

/// Awaits `f`, panicking with `what` if it takes longer than [`STEP`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    within_for(STEP, what, f).await
}

pub use nodelink_testkit::within_for;

/// The suites' default configuration: safe defaults with a short connect timeout.
pub fn config() -> Config {
    Config::default().with_connect_timeout(Some(CONNECT_TIMEOUT))
}

/// A transport on 127.0.0.1, port 0.
pub async fn transport() -> Transport {
    transport_with(config()).await
}

/// A transport on 127.0.0.1, port 0, with `config`.
pub async fn transport_with(config: Config) -> Transport {
    within("bind", Transport::bind("127.0.0.1", 0, config))
        .await
        .expect("bind 127.0.0.1:0")
}

/// A new endpoint of `t`.
pub async fn endpoint(t: &Transport) -> EndPoint {
    within("open_endpoint", t.open_endpoint())
        .await
        .expect("new endpoint")
}

/// The next event of `ep`.
pub async fn next(ep: &EndPoint) -> Event {
    within("receive", ep.receive())
        .await
        .expect("receive an event")
}

/// The next event of `ep`, or `None` if nothing comes within `quiet`.
pub async fn next_within(ep: &EndPoint, quiet: Duration) -> Option<Event> {
    match tokio::time::timeout(quiet, ep.receive()).await {
        Ok(r) => Some(r.expect("receive an event")),
        Err(_) => None,
    }
}

/// Concatenates a Received event's chunks.
pub fn concat(data: &[Bytes]) -> Vec<u8> {
    data.iter().flat_map(|c| c.iter().copied()).collect()
}

/// Expects ConnectionOpened; returns its id and address.
pub async fn expect_opened(ep: &EndPoint) -> (ConnectionId, EndPointAddress) {
    match next(ep).await {
        Event::ConnectionOpened { id, address, .. } => (id, address),
        other => panic!("expected ConnectionOpened, got {other:?}"),
    }
}

/// Expects Received on `id`; returns the concatenated payload.
pub async fn expect_received(ep: &EndPoint, id: ConnectionId) -> Vec<u8> {
    match next(ep).await {
        Event::Received { id: got, data } if got == id => concat(&data),
        other => panic!("expected Received on {id}, got {other:?}"),
    }
}

/// Expects ConnectionClosed on `id`.
pub async fn expect_closed(ep: &EndPoint, id: ConnectionId) {
    match next(ep).await {
        Event::ConnectionClosed { id: got } if got == id => {}
        other => panic!("expected ConnectionClosed {id}, got {other:?}"),
    }
}

/// Expects EventConnectionLost for `from`.
pub async fn expect_lost(ep: &EndPoint, from: &EndPointAddress) {
    match next(ep).await {
        Event::Error {
            kind: EventErrorKind::ConnectionLost(a),
            ..
        } if &a == from => {}
        other => panic!("expected ConnectionLost({from}), got {other:?}"),
    }
}

/// The socket address of an endpoint address.
pub fn sock_addr(a: &EndPointAddress) -> SocketAddr {
    let (host, port, _) = a.parse().expect("an addressable endpoint");
    let ip: std::net::IpAddr = host.parse().expect("a numeric host");
    SocketAddr::new(ip, port)
}

/// Big-endian u32s, concatenated.
pub fn u32s(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// A version-0 connection request to endpoint `target` from `origin` (empty: unaddressable).
pub fn request(target: u32, origin: &[u8]) -> Vec<u8> {
    let n = origin.len() as u32;
    let mut out = u32s(&[0, 8 + n, target, n]);
    out.extend_from_slice(origin);
    out
}

/// A data frame.
pub fn data_frame(lcid: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = u32s(&[lcid, payload.len() as u32]);
    out.extend_from_slice(payload);
    out
}

/// What a raw peer read.
#[derive(Debug, PartialEq, Eq)]
pub enum RawFrame {
    /// A data frame.
    Data(u32, Vec<u8>),
    /// A control frame with its argument (codes 0, 1, 2 carry one).
    Control(u32, Option<u32>),
}

/// One end of a plain TCP connection speaking raw protocol bytes. Every read is bounded.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw { stream }
    }

    /// Connects to `to` and sends a request from `origin`; returns the peer and the response.
    pub async fn handshake(to: &EndPointAddress, origin: &str) -> (Raw, u32) {
        let (_, _, id) = to.parse().expect("addressable");
        let mut raw = Raw::connect(sock_addr(to)).await;
        raw.write(&request(id, origin.as_bytes())).await;
        let response = raw.read_u32().await.expect("handshake response");
        (raw, response)
    }

    /// Like [`Raw::handshake`], asserting Accepted.
    pub async fn accepted(to: &EndPointAddress, origin: &str) -> Raw {
        let (raw, response) = Raw::handshake(to, origin).await;
        assert_eq!(response, ACCEPTED, "handshake from {origin} not accepted");
        raw
    }

    /// Writes all of `bytes`.
    pub async fn write(&mut self, bytes: &[u8]) {
        within("raw write", self.stream.write_all(bytes))
            .await
            .expect("raw write");
    }

    /// Writes, tolerating a peer that already closed.
    pub async fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        within("raw write", self.stream.write_all(bytes)).await
    }

    /// Reads one u32 (Err at end of file or on a reset).
    pub async fn read_u32(&mut self) -> std::io::Result<u32> {
        within("raw read", self.stream.read_u32()).await
    }

    /// Reads exactly `n` bytes.
    pub async fn read_exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0; n];
        within("raw read", self.stream.read_exact(&mut buf)).await?;
        Ok(buf)
    }

    /// Reads one frame.
    pub async fn read_frame(&mut self) -> std::io::Result<RawFrame> {
        let head = self.read_u32().await?;
        if head >= 1024 {
            let len = self.read_u32().await?;
            assert!(len < (64 << 20), "absurd data length {len}");
            let payload = self.read_exact(len as usize).await?;
            return Ok(RawFrame::Data(head, payload));
        }
        let arg = match head {
            CREATED_NEW_CONNECTION | CLOSE_CONNECTION | CLOSE_SOCKET => {
                Some(self.read_u32().await?)
            }
            _ => None,
        };
        Ok(RawFrame::Control(head, arg))
    }

    /// Reads everything until end of file (or a reset) within `limit`; returns the bytes.
    /// Panics if the peer keeps the socket open longer.
    pub async fn read_to_close(&mut self, limit: Duration) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        let read_all = async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
            }
        };
        within_for(limit, "the peer to close the socket", read_all).await;
        all
    }

    /// Whether the peer keeps quiet (sends nothing, keeps the socket open) for `quiet`.
    pub async fn stays_quiet(&mut self, quiet: Duration) -> bool {
        let mut buf = [0u8; 1];
        tokio::time::timeout(quiet, self.stream.read(&mut buf))
            .await
            .is_err()
    }
}

/// A plain TCP listener posing as a remote transport: its address is
/// `127.0.0.1:port:0`.
pub struct RawServer {
    pub listener: TcpListener,
    pub address: EndPointAddress,
}

impl RawServer {
    /// Binds 127.0.0.1:0.
    pub async fn bind() -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        RawServer {
            listener,
            address: EndPointAddress::new("127.0.0.1", port, 0),
        }
    }

    /// Accepts one TCP connection.
    pub async fn accept(&self) -> Raw {
        let (stream, _) = within("raw accept", self.listener.accept())
            .await
            .expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        Raw { stream }
    }

    /// Accepts one connection and reads a version-0 request; returns the peer, the target
    /// endpoint id and the origin address bytes.
    pub async fn accept_request(&self) -> (Raw, u32, Vec<u8>) {
        let mut raw = self.accept().await;
        let version = raw.read_u32().await.expect("version");
        assert_eq!(version, 0, "protocol version");
        let len = raw.read_u32().await.expect("handshake length");
        let target = raw.read_u32().await.expect("target id");
        let n = raw.read_u32().await.expect("origin length");
        assert_eq!(len, 8 + n, "handshake length is 8 + N");
        let origin = raw.read_exact(n as usize).await.expect("origin");
        (raw, target, origin)
    }
}

/// A friendly endpoint that keeps ping-ponging with an echoing endpoint in the
/// background, proving that hostile peers do not disturb others.
pub struct Pinger {
    pub transport: Transport,
    pub rounds: Arc<AtomicU64>,
    pub failure: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Pinger {
    /// Starts pinging `echo`, an endpoint run by [`echo_task`] with `friends`, to which the
    /// pinger's address is added first.
    pub async fn start(echo: &EndPointAddress, friends: &Friends) -> Pinger {
        let transport = transport().await;
        let ep = endpoint(&transport).await;
        friends.lock().unwrap().push(ep.address().clone());
        let rounds = Arc::new(AtomicU64::new(0));
        let (fail_tx, failure) = mpsc::unbounded_channel();
        let counter = rounds.clone();
        let to = echo.clone();
        let task = tokio::spawn(async move {
            let conn = match ep.connect(&to).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = fail_tx.send(format!("connect: {e}"));
                    return;
                }
            };
            let mut reverse = None;
            for seq in 0u64.. {
                let msg = seq.to_be_bytes();
                if let Err(e) = conn.send(&[msg]).await {
                    let _ = fail_tx.send(format!("send {seq}: {e}"));
                    return;
                }
                loop {
                    let ev = match tokio::time::timeout(STEP, ep.receive()).await {
                        Ok(Ok(ev)) => ev,
                        other => {
                            let _ = fail_tx.send(format!("echo {seq}: {other:?}"));
                            return;
                        }
                    };
                    match ev {
                        Event::ConnectionOpened { id, .. } if reverse.is_none() => {
                            reverse = Some(id);
                        }
                        Event::Received { id, data } if Some(id) == reverse => {
                            if concat(&data) != msg {
                                let _ = fail_tx.send(format!("echo {seq}: wrong bytes"));
                                return;
                            }
                            break;
                        }
                        other => {
                            let _ = fail_tx.send(format!("echo {seq}: unexpected {other:?}"));
                            return;
                        }
                    }
                }
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        let p = Pinger {
            transport,
            rounds,
            failure,
            task,
        };
        p.wait_rounds(5).await;
        p
    }

    /// Waits until `n` more round trips than now have completed.
    pub async fn wait_rounds(&self, n: u64) {
        let goal = self.rounds.load(Ordering::Relaxed) + n;
        within("the friendly pinger to make progress", async {
            while self.rounds.load(Ordering::Relaxed) < goal {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// Asserts the pinger is healthy and still making progress; then stops it.
    pub async fn finish(mut self) {
        if let Ok(f) = self.failure.try_recv() {
            panic!("the friendly pinger failed: {f}");
        }
        self.wait_rounds(5).await;
        self.task.abort();
        within("close the pinger's transport", self.transport.close()).await;
    }
}

/// Addresses an [`echo_task`] serves as an echo server.
pub type Friends = Arc<std::sync::Mutex<Vec<EndPointAddress>>>;

/// Runs `ep` as the conformance suite's echo server for connections from the addresses in
/// `friends` (connect back, echo on the reverse connection, close it when the incoming
/// connection closes); every other event is
/// forwarded to the returned channel for the test to inspect.
pub fn echo_task(ep: EndPoint, friends: Friends) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reverse = std::collections::HashMap::new();
        while let Ok(ev) = ep.receive().await {
            match &ev {
                Event::ConnectionOpened { id, address, .. }
                    if friends.lock().unwrap().contains(address) =>
                {
                    if let Ok(c) = ep.connect(address).await {
                        reverse.insert(*id, c);
                    }
                    continue;
                }
                Event::Received { id, data } if reverse.contains_key(id) => {
                    let _ = reverse[id].send(data).await;
                    continue;
                }
                Event::ConnectionClosed { id } if reverse.contains_key(id) => {
                    if let Some(c) = reverse.remove(id) {
                        c.close().await;
                    }
                    continue;
                }
                _ => {}
            }
            let end = matches!(ev, Event::EndPointClosed);
            let _ = tx.send(ev);
            if end {
                return;
            }
        }
    });
    rx
}

/// Resident memory of this process in KiB (Linux), for coarse bounded-memory checks.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether this machine has an IPv6 loopback.
pub async fn has_ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").await.is_ok()
}

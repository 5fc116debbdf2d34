//! Helpers shared by the integration tests: bounded waits, link pairs, and a raw "NEO-like"
//! peer that speaks the wire format byte by byte.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use nodelink::{Config, Link, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound for any single wait in a test: a bug fails the test instead of hanging it.
pub const STEP: Duration = Duration::from_secs(5);

/// Reserved connection id carrying flow-control frames to a server.
pub const CONTROL_TO_SERVER: u32 = 0xFFFF_FFFE;
/// Reserved connection id carrying flow-control frames to a client.
pub const CONTROL_TO_CLIENT: u32 = 0xFFFF_FFFF;
/// Code of flow-control frames.
pub const CONTROL_CODE: u16 = 0xFFFF;

/// An error and its causes on one line, as an operator reads them.
pub fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Awaits `fut`, failing the test with `what` if it takes longer than [`STEP`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    nodelink_testkit::within_for(STEP, what, fut).await
}

/// Polls a future exactly once, without waiting.
pub async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

/// A client/server link pair over an in-memory pipe of `cap` bytes per direction.
pub async fn pair_over(cap: usize, client: Config, server: Config) -> (Link, Link) {
    let (a, b) = tokio::io::duplex(cap);
    within("handshake of a duplex pair", async {
        tokio::try_join!(
            Link::handshake(a, Role::Client, client),
            Link::handshake(b, Role::Server, server),
        )
    })
    .await
    .expect("handshake of a duplex pair")
}

/// A client/server link pair over a 256 KiB in-memory pipe, same config on both sides.
pub async fn pair(config: Config) -> (Link, Link) {
    pair_over(256 << 10, config.clone(), config).await
}

/// A client/server link pair over TCP loopback, through `dial` and `listen`.
pub async fn tcp_pair(config: Config) -> (Link, Link) {
    let mut listener = nodelink::bind("127.0.0.1:0", config.clone())
        .await
        .expect("listen on loopback");
    let addr = listener.local_addr();
    let (client, server) = within("dial + accept over loopback", async {
        tokio::join!(nodelink::connect(addr, config), listener.accept())
    })
    .await;
    (client.expect("dial"), server.expect("accept"))
}

/// Does a full round trip on a fresh connection so that both sides have seen the other's
/// first packet (and so know whether it does flow control).
pub async fn warm_up(client: &Link, server: &Link) {
    let c = client.open().unwrap();
    within("warm-up round trip", async {
        c.send(&nodelink::Ping).await.unwrap();
        let s = server.accept().await.unwrap();
        let _: nodelink::Ping = s.expect().await.unwrap();
        s.send(&nodelink::Pong).await.unwrap();
        let _: nodelink::Pong = c.expect().await.unwrap();
    })
    .await;
}

/// One packet as read off the wire by a raw peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPacket {
    pub id: u32,
    pub code: u16,
    pub payload: Bytes,
    /// The whole packet as it was on the wire, header included.
    pub wire: Vec<u8>,
}

impl RawPacket {
    pub fn is_control(&self) -> bool {
        self.id == CONTROL_TO_SERVER || self.id == CONTROL_TO_CLIENT
    }
}

/// Builds the bytes of one packet.
pub fn packet_bytes(id: u32, code: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(10 + payload.len());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// NEO's "connection closed" reply on `id`, written out literally as in the spec.
pub fn closed_reply(id: u32) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(&[0x80, 0x00, 0x00, 0x00, 0x00, 0x19]);
    v.extend_from_slice(&[0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x11]);
    v.extend_from_slice(b"connection closed");
    v
}

/// NEO's "connection refused" reply on `id`, written out literally as in the spec.
pub fn refused_reply(id: u32) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(&[0x80, 0x00, 0x00, 0x00, 0x00, 0x1a]);
    v.extend_from_slice(&[0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x12]);
    v.extend_from_slice(b"connection refused");
    v
}

/// Payload of a flow-control HELLO announcing `window`: `"NLFC" 01 01 <window u32 BE>`.
pub fn hello_payload(window: u32) -> Vec<u8> {
    let mut v = b"NLFC\x01\x01".to_vec();
    v.extend_from_slice(&window.to_be_bytes());
    v
}

/// Payload of a flow-control CREDIT frame: `"NLFC" 03 (<conn id u32> <bytes u32>)*`.
pub fn credit_payload(entries: &[(u32, u32)]) -> Vec<u8> {
    let mut v = b"NLFC\x03".to_vec();
    for (id, bytes) in entries {
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&bytes.to_be_bytes());
    }
    v
}

/// A peer that speaks the link protocol by hand, the way a strict NEO node would (it never
/// sends the flow-control HELLO unless told to).
pub struct RawPeer<S> {
    pub io: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawPeer<S> {
    pub fn new(io: S) -> Self {
        RawPeer {
            io,
            buf: BytesMut::with_capacity(64 << 10),
        }
    }

    /// Sends our version word and reads the peer's (concurrently is not needed: both sides
    /// write before they read, and 4 bytes always fit in the pipe).
    pub async fn handshake(&mut self, version: u32) -> u32 {
        self.write_all(&version.to_be_bytes()).await;
        let got = self.read_exact(4).await;
        u32::from_be_bytes([got[0], got[1], got[2], got[3]])
    }

    pub async fn write_all(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("raw peer write");
        self.io.flush().await.expect("raw peer flush");
    }

    /// Sends one packet.
    pub async fn send(&mut self, id: u32, code: u16, payload: &[u8]) {
        self.write_all(&packet_bytes(id, code, payload)).await;
    }

    /// Reads more bytes into the buffer; returns false on EOF.
    async fn fill(&mut self) -> io::Result<bool> {
        self.buf.reserve(64 << 10);
        Ok(self.io.read_buf(&mut self.buf).await? > 0)
    }

    /// Reads exactly `n` bytes.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill().await.expect("raw peer read"),
                "EOF while reading {n} bytes"
            );
        }
        self.buf.split_to(n).to_vec()
    }

    /// Reads one packet (control frames included); `None` on EOF at a packet boundary.
    pub async fn read_packet(&mut self) -> io::Result<Option<RawPacket>> {
        loop {
            if self.buf.len() >= 10 {
                let len = u32::from_be_bytes([self.buf[6], self.buf[7], self.buf[8], self.buf[9]])
                    as usize;
                assert!(
                    len <= 0x400_0000,
                    "peer announced an oversized packet: {len}"
                );
                if self.buf.len() >= 10 + len {
                    let wire = self.buf.split_to(10 + len).freeze();
                    let mut h = wire.clone();
                    let id = h.get_u32();
                    let code = h.get_u16();
                    h.advance(4);
                    return Ok(Some(RawPacket {
                        id,
                        code,
                        payload: h,
                        wire: wire.to_vec(),
                    }));
                }
            }
            if !self.fill().await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF inside a packet ({} bytes pending)", self.buf.len()),
                ));
            }
        }
    }

    /// Reads the next packet that is not a flow-control frame.
    pub async fn next_packet(&mut self) -> RawPacket {
        loop {
            let p = self
                .read_packet()
                .await
                .expect("raw peer read")
                .expect("EOF while waiting for a packet");
            if !p.is_control() {
                return p;
            }
        }
    }

    /// Reads until EOF, allowing only flow-control frames; any read error also counts as
    /// the stream being gone. Returns the number of control frames skipped.
    pub async fn expect_eof(&mut self) -> usize {
        let mut skipped = 0;
        loop {
            match self.read_packet().await {
                Ok(None) | Err(_) => return skipped,
                Ok(Some(p)) if p.is_control() => skipped += 1,
                Ok(Some(p)) => panic!("expected EOF, got packet {p:?}"),
            }
        }
    }
}

/// A nodelink side with `role` and a raw peer on the other end of an in-memory pipe of
/// `cap` bytes per direction. The raw peer has done the version handshake with `version`.
pub async fn raw_and_link_v(
    role: Role,
    config: Config,
    cap: usize,
    version: u32,
) -> (Link, RawPeer<DuplexStream>) {
    let (a, b) = tokio::io::duplex(cap);
    let mut raw = RawPeer::new(b);
    let expected_version = config.version;
    let (link, peer_version) = within("raw handshake", async {
        tokio::join!(Link::handshake(a, role, config), raw.handshake(version))
    })
    .await;
    let link = link.expect("link handshake with a raw peer");
    assert_eq!(
        peer_version, expected_version,
        "version word sent by the link"
    );
    (link, raw)
}

/// A nodelink side with `role` and a raw NEO peer (version 6) over an in-memory pipe.
pub async fn raw_and_link(role: Role, config: Config, cap: usize) -> (Link, RawPeer<DuplexStream>) {
    raw_and_link_v(role, config, cap, nodelink::DEFAULT_VERSION).await
}

/// A nodelink client dialed over TCP loopback to a raw NEO server peer.
pub async fn raw_server_tcp(config: Config) -> (Link, RawPeer<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (link, raw) = within("dial a raw server", async {
        let accept = async {
            let (s, _) = l.accept().await.unwrap();
            let mut raw = RawPeer::new(s);
            raw.handshake(nodelink::DEFAULT_VERSION).await;
            raw
        };
        tokio::join!(nodelink::connect(addr, config), accept)
    })
    .await;
    (link.expect("dial a raw server"), raw)
}

/// A nodelink server (through `listen`) with a raw NEO client peer over TCP loopback.
pub async fn raw_client_tcp(config: Config) -> (Link, RawPeer<TcpStream>) {
    let mut listener = nodelink::bind("127.0.0.1:0", config).await.unwrap();
    let addr = listener.local_addr();
    let (link, raw) = within("raw client to a listener", async {
        let connect = async {
            let s = TcpStream::connect(addr).await.unwrap();
            let mut raw = RawPeer::new(s);
            raw.handshake(nodelink::DEFAULT_VERSION).await;
            raw
        };
        tokio::join!(listener.accept(), connect)
    })
    .await;
    (link.expect("listener accept"), raw)
}

/// The link's connection table: (open connections, closed ids remembered), from its stats.
pub fn table(link: &Link) -> (u64, u64) {
    let s = link.stats();
    (s.open_conns, s.closed_records)
}

/// The seeded generator every test suite shares.
#[allow(unused_imports)]
pub use nodelink_testkit::SeededRng as Rng;

/// An in-memory stream whose write side can be broken on demand: every write after
/// [`BreakableStream::breaker`] is set fails with `BrokenPipe`, while reads keep working.
pub struct BreakableStream {
    inner: DuplexStream,
    broken: Arc<AtomicBool>,
}

impl BreakableStream {
    pub fn new(inner: DuplexStream) -> Self {
        BreakableStream {
            inner,
            broken: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn breaker(&self) -> Arc<AtomicBool> {
        self.broken.clone()
    }

    fn check(&self) -> io::Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "test: write side broken",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for BreakableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for BreakableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

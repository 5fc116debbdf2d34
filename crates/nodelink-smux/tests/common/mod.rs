//! Helpers shared by the integration tests: a raw frame peer and deterministic payloads.
#![allow(dead_code)]

use nodelink_smux::Role;
use std::future::Future;
use std::time::Duration;

use nodelink_smux::{Config, Session, Stream};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

/// Upper bound for any single wait in a test.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Awaits `fut`, failing the test if it takes longer than [`LIMIT`].
pub async fn within<F: Future>(fut: F) -> F::Output {
    nodelink_testkit::within_for(LIMIT, "a test step", fut).await
}

/// The wire bytes of one frame.
pub fn frame(ver: u8, cmd: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![ver, cmd];
    v.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    v.extend_from_slice(&sid.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// A received frame: (version, cmd, sid, payload).
pub type RawFrame = (u8, u8, u32, Vec<u8>);

/// Reads one frame from a raw connection.
pub async fn read_frame<R: AsyncRead + Unpin>(io: &mut R) -> RawFrame {
    let mut hdr = [0u8; 8];
    within(io.read_exact(&mut hdr)).await.unwrap();
    let len = u16::from_le_bytes([hdr[2], hdr[3]]) as usize;
    let sid = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let cmd = hdr[1];
    // SYN, FIN and NOP never carry a payload whatever the length says; UPD carries 8.
    let mut payload = vec![0u8; len];
    within(io.read_exact(&mut payload)).await.unwrap();
    (hdr[0], cmd, sid, payload)
}

/// Reads frames until one that is not a NOP.
pub async fn read_non_nop<R: AsyncRead + Unpin>(io: &mut R) -> RawFrame {
    loop {
        let f = read_frame(io).await;
        if f.1 != 3 {
            return f;
        }
    }
}

/// Writes raw bytes to the peer.
pub async fn send<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8]) {
    within(io.write_all(bytes)).await.unwrap();
}

/// Deterministic payload for stream number `n`.
pub fn payload(n: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(0x5eed_0000 + n).fill_bytes(&mut v);
    v
}

/// A config of `version` with keepalive off, so paused-clock-free tests stay quiet.
pub fn config(version: u8) -> Config {
    Config::default()
        .with_version(version)
        .with_keep_alive_disabled(true)
}

/// A client session over one end of a duplex pipe, and the raw other end.
pub fn client_with_raw(config: Config) -> (Session, DuplexStream) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (Session::start(a, Role::Client, config).unwrap(), b)
}

/// A server session over one end of a duplex pipe, and the raw other end.
pub fn server_with_raw(config: Config) -> (Session, DuplexStream) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (Session::start(a, Role::Server, config).unwrap(), b)
}

/// Echoes every accepted stream back to its sender until the session ends.
pub fn spawn_echo_server(server: Session) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(stream) = server.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(stream);
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    })
}

/// Sends `data` on `stream`, half-closes, reads the echo to EOF and checks it.
pub async fn echo_and_verify(stream: Stream, data: Vec<u8>) {
    let (mut r, mut w) = tokio::io::split(stream);
    let expected_len = data.len();
    let writer = tokio::spawn(async move {
        for piece in data.chunks(20_000) {
            w.write_all(piece).await.unwrap();
        }
        w.shutdown().await.unwrap();
        data
    });
    let mut got = Vec::with_capacity(expected_len);
    within(r.read_to_end(&mut got)).await.unwrap();
    let data = within(writer).await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ");
}

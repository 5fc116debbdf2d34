//! How a forwarded connection ends, per smux version (smux v1: the first side to end ends
//! the connection; v2: half-close both ways), for a half-closing TCP client and for a side
//! that goes away in the middle of a transfer at either end, and the server's bound on
//! streams forwarded at once. Our client with our server, loopback only.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(30);

/// What an abandoned transfer would push if nothing stopped it.
const FLOOD: usize = 64 << 20;

/// Fast settings for the transfer tests; smux v1 unless `--smuxver 2` is added.
const V1: &[&str] = &["--crypt", "none", "--datashard", "0", "--parityshard", "0"];
const V2: &[&str] = &[
    "--crypt",
    "none",
    "--datashard",
    "0",
    "--parityshard",
    "0",
    "--smuxver",
    "2",
];

/// The TCP client sends a request and ends its write side. The target always sees the
/// request and its end of stream. Returns what the client got back before its end of
/// stream, the target having answered after seeing the end.
async fn client_half_close(flags: &[&str]) -> Vec<u8> {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = our_server(target.local_addr().unwrap(), flags).await;
    let client = our_client(server.addr, flags).await;
    let target_side = tokio::spawn(async move {
        let (mut conn, _) = target.accept().await.unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap(); // returns at the FIN
                                                   // In v1 the tunnel may already have closed this connection: the answer may fail.
        let _ = conn.write_all(b"seen EOF after ").await;
        let _ = conn.write_all(&got).await;
        let _ = conn.shutdown().await;
        got
    });
    let mut conn = TcpStream::connect(client.addr).await.unwrap();
    conn.write_all(b"hello").await.unwrap();
    conn.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, conn.read_to_end(&mut answer))
        .await
        .expect("no end of stream from the tunnel")
        .unwrap();
    let seen = tokio::time::timeout(LIMIT, target_side)
        .await
        .expect("the target never saw the end of stream")
        .unwrap();
    assert_eq!(seen, b"hello");
    client.stop().await;
    server.stop().await;
    answer
}

/// smux v1: the client's FIN ends the whole connection (the client end stops reading the
/// stream the moment it sends the FIN, before any answer can exist), and the target still
/// gets the request and its end of stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_client_fin_ends_the_connection() {
    let answer = client_half_close(V1).await;
    assert_eq!(
        answer, b"",
        "an answer came back after the client's FIN in v1"
    );
}

/// smux v2: a half close; the target's answer after the client's FIN still arrives, then
/// the target's own end of stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_client_fin_is_a_half_close() {
    let answer = client_half_close(V2).await;
    assert_eq!(answer, b"seen EOF after hello");
}

/// Writes 64 KiB blocks to `conn` until a write fails or [`FLOOD`] bytes were accepted;
/// returns the bytes accepted and whether a write failed.
async fn flood<W: AsyncWrite + Unpin>(conn: &mut W) -> (usize, bool) {
    let block = vec![0x42u8; 64 << 10];
    let mut sent = 0;
    while sent < FLOOD {
        if conn.write_all(&block).await.is_err() {
            return (sent, true);
        }
        sent += block.len();
    }
    (sent, false)
}

/// Reads `n` bytes, proof that the transfer is under way.
async fn read_some<R: AsyncRead + Unpin>(conn: &mut R, n: usize) {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(LIMIT, conn.read_exact(&mut buf))
        .await
        .expect("the transfer did not start")
        .unwrap();
}

/// A download the user cancels: the TCP client sends a request, reads a little of the
/// answer, then closes its connection; the target goes on writing. The target's writes
/// must fail long before the whole flood went into the tunnel (v1: as soon as the
/// client's end reaches the server; v2: once the stream's window is used up and smux's
/// stall timeout has passed).
async fn cancelled_download_stops_the_target(flags: &[&str]) {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = our_server(target.local_addr().unwrap(), flags).await;
    let client = our_client(server.addr, flags).await;
    let target_side = tokio::spawn(async move {
        let (mut conn, _) = target.accept().await.unwrap();
        let mut request = [0u8; 3];
        conn.read_exact(&mut request).await.unwrap();
        flood(&mut conn).await
    });
    let mut conn = TcpStream::connect(client.addr).await.unwrap();
    conn.write_all(b"GET").await.unwrap();
    read_some(&mut conn, 256 << 10).await;
    drop(conn);
    let (sent, failed) = tokio::time::timeout(LIMIT, target_side)
        .await
        .expect("the target's writes neither failed nor finished: the tunnel kept taking them")
        .unwrap();
    assert!(
        failed && sent < FLOOD,
        "the target wrote {sent} bytes into a cancelled download (failed: {failed})"
    );
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_cancelled_download_stops_the_target() {
    cancelled_download_stops_the_target(V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_cancelled_download_stops_the_target() {
    cancelled_download_stops_the_target(V2).await;
}

/// The mirror case: the target reads a little of an upload, then closes its connection;
/// the TCP client goes on writing. Its writes must fail long before the whole flood went
/// into the tunnel.
async fn abandoned_upload_stops_the_client(flags: &[&str]) {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = our_server(target.local_addr().unwrap(), flags).await;
    let client = our_client(server.addr, flags).await;
    let target_side = tokio::spawn(async move {
        let (mut conn, _) = target.accept().await.unwrap();
        read_some(&mut conn, 256 << 10).await;
    });
    let mut conn = TcpStream::connect(client.addr).await.unwrap();
    let (sent, failed) = tokio::time::timeout(LIMIT, flood(&mut conn))
        .await
        .expect("the client's writes neither failed nor finished: the tunnel kept taking them");
    assert!(
        failed && sent < FLOOD,
        "the client wrote {sent} bytes to a target that went away (failed: {failed})"
    );
    tokio::time::timeout(LIMIT, target_side)
        .await
        .unwrap()
        .unwrap();
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_abandoned_upload_stops_the_client() {
    abandoned_upload_stops_the_client(V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_abandoned_upload_stops_the_client() {
    abandoned_upload_stops_the_client(V2).await;
}

/// One echoed message on a fresh connection; the connection stays open.
async fn echoed(entry: std::net::SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(entry).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(LIMIT, conn.read_exact(&mut back))
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(&back, b"ping");
    conn
}

/// A server that may forward 2 streams at once closes a third at once, without dialling
/// the target, and counts it; once a stream ended, a new one is forwarded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_bounds_streams_forwarded_at_once() {
    let echo = echo_target().await;
    let server = our_server_tuned(echo.addr, V1, |s| s.with_max_streams(2)).await;
    let client = our_client(server.addr, V1).await;
    let first = echoed(client.addr).await;
    let _second = echoed(client.addr).await;

    let mut third = TcpStream::connect(client.addr).await.unwrap();
    third.write_all(b"ping").await.unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(LIMIT, third.read_to_end(&mut rest))
        .await
        .expect("the stream over the bound was not closed");
    assert!(ended.is_err() || rest.is_empty(), "got {rest:?}");
    let served = server.counters.stats();
    assert_eq!(
        (served.streams_forwarded, served.streams_refused),
        (2, 1),
        "{served:?}"
    );

    drop(first);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while server.counters.stats().streams_closed == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first stream never ended on the server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _fourth = echoed(client.addr).await;
    let served = server.counters.stats();
    assert_eq!(
        (served.streams_forwarded, served.streams_refused),
        (3, 1),
        "{served:?}"
    );
    client.stop().await;
    server.stop().await;
}

/// One client cannot take every stream of the bound: while it is the only session it may
/// forward half, and a client that comes next is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_cannot_take_every_stream() {
    let echo = echo_target().await;
    let server = our_server_tuned(echo.addr, V1, |s| s.with_max_streams(64)).await;
    let greedy = our_client(server.addr, V1).await;
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(echoed(greedy.addr).await);
    }
    // Its 33rd stream is refused although the server has room: the rest is kept.
    let mut extra = TcpStream::connect(greedy.addr).await.unwrap();
    extra.write_all(b"ping").await.unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(LIMIT, extra.read_to_end(&mut rest))
        .await
        .expect("the stream over the session's share was not closed");
    assert!(ended.is_err() || rest.is_empty(), "got {rest:?}");

    // Another client (another session) is served.
    let other = our_client(server.addr, V1).await;
    let _mine = echoed(other.addr).await;
    let served = server.counters.stats();
    assert_eq!(
        (served.streams_forwarded, served.streams_refused),
        (33, 1),
        "{served:?}"
    );
    drop(held);
    other.stop().await;
    greedy.stop().await;
    server.stop().await;
}

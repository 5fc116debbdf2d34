//! Our client with our server: the interop matrix's four flag sets, the same streams
//! through a lossy UDP relay, refused targets, several sessions, and hostile input on a
//! session. How connections end (per smux version) and the server's stream bound are
//! tested in `closing.rs`.

mod common;

use nodelink_smux::Role;
use std::time::Duration;

use common::*;
use nodelink_kcp::KcpStream;
use nodelink_testkit::{Impairment, UdpRelay};
use nodelink_tunnel::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(30);

async fn ours_both(name: &str, flags: &[&str]) {
    let echo = echo_target().await;
    let server = our_server(echo.addr, flags).await;
    let client = our_client(server.addr, flags).await;
    let took = echo_streams(client.addr, STREAMS, STREAM_BYTES)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    client.stop().await;
    server.stop().await;
    eprintln!(
        "{name}: our client -> our server: {STREAMS} x {STREAM_BYTES} bytes echoed in {took:.2?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_defaults() {
    let (name, flags) = MATRIX[0];
    ours_both(name, flags).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_salsa20_smux2_nocomp_fast3() {
    let (name, flags) = MATRIX[1];
    ours_both(name, flags).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_none_nofec_normal() {
    let (name, flags) = MATRIX[2];
    ours_both(name, flags).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_xor_fec5_2_fast2_smux2() {
    let (name, flags) = MATRIX[3];
    ours_both(name, flags).await;
}

/// 5% of datagrams dropped each way (seeded): every stream still arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_through_five_percent_loss() {
    let echo = echo_target().await;
    let server = our_server(echo.addr, &[]).await;
    let relay = UdpRelay::start(
        server.addr,
        Impairment {
            drop: 0.05,
            seed: 0x5eed,
            ..Impairment::NONE
        },
    )
    .await
    .unwrap();
    let client = our_client(relay.local_addr(), &[]).await;
    let took = echo_streams(client.addr, STREAMS, STREAM_BYTES)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stats = relay.stats();
    assert!(
        stats.to_upstream.dropped > 0 && stats.to_client.dropped > 0,
        "the relay dropped nothing: {stats:?}"
    );
    client.stop().await;
    server.stop().await;
    eprintln!("5% loss: {STREAMS} x {STREAM_BYTES} bytes echoed in {took:.2?}; relay {stats:?}");
}

/// The target goes away while one stream is open: a new stream is refused by the target
/// and ends (the TCP client sees the end), the open stream keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_target_closes_only_that_stream() {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let server = our_server(target_addr, &[]).await;
    let client = our_client(server.addr, &[]).await;

    let mut first = TcpStream::connect(client.addr).await.unwrap();
    first.write_all(b"ping").await.unwrap();
    let (mut accepted, _) = tokio::time::timeout(LIMIT, target.accept())
        .await
        .unwrap()
        .unwrap();
    drop(target); // nothing listens any more: the next dial is refused
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 4];
        while accepted.read_exact(&mut buf).await.is_ok() {
            accepted.write_all(&buf).await.unwrap();
        }
    });
    let mut buf = [0u8; 4];
    tokio::time::timeout(LIMIT, first.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");

    let mut refused = TcpStream::connect(client.addr).await.unwrap();
    refused.write_all(b"lost").await.unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(LIMIT, refused.read_to_end(&mut rest))
        .await
        .expect("the refused stream was not closed");
    assert!(ended.is_err() || rest.is_empty(), "got {rest:?}");

    for _ in 0..3 {
        first.write_all(b"pong").await.unwrap();
        tokio::time::timeout(LIMIT, first.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"pong");
    }
    let served = server.counters.stats();
    assert_eq!(
        (served.streams_forwarded, served.streams_failed),
        (1, 1),
        "{served:?}"
    );
    drop(first);
    echo.await.unwrap();
    client.stop().await;
    server.stop().await;
}

/// `--conn 3 --autoexpire`: streams spread over several sessions, each one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_sessions_round_robin() {
    let echo = echo_target().await;
    let server = our_server(echo.addr, &[]).await;
    let cfg = Config::default()
        .with_listen("127.0.0.1:0")
        .with_target(server.addr.to_string())
        .with_conn(3)
        .with_autoexpire(Duration::from_secs(1))
        .with_scavengettl(Duration::from_secs(1))
        .with_quiet(true);
    let client = nodelink_tunnel::Client::bind(cfg).await.unwrap();
    let entry = client.local_addr();
    let counters = client.stats_handle();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(client.run(stop.clone()));
    echo_streams(entry, 6, 256 << 10).await.unwrap();
    let first = counters.stats();
    assert!(
        first.sessions_opened >= 3,
        "{first:?}: fewer than 3 sessions for 6 streams over conn 3"
    );
    assert_eq!(first.streams_forwarded, 6);
    // After expiry a new round of streams gets fresh sessions and still works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    echo_streams(entry, 3, 64 << 10).await.unwrap();
    let second = counters.stats();
    assert!(
        second.sessions_opened >= first.sessions_opened + 3,
        "expired sessions were reused: {second:?}"
    );
    assert_eq!((second.streams_forwarded, second.streams_failed), (9, 0));
    let served = server.counters.stats();
    assert_eq!(
        served.sessions_opened, second.sessions_opened,
        "server saw {served:?}"
    );
    stop.cancel();
    tokio::time::timeout(LIMIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    server.stop().await;
}

/// A peer that speaks garbage instead of smux loses its own session only; a tunnel
/// client on another session keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_session_does_not_disturb_others() {
    let echo = echo_target().await;
    let server = our_server(echo.addr, &["--nocomp"]).await;
    let client = our_client(server.addr, &["--nocomp"]).await;
    let raw = Config::default().with_target(server.addr.to_string());
    let cfg = raw.validate().unwrap().session;
    let mut hostile = KcpStream::connect(server.addr, cfg).await.unwrap();
    // A version byte smux does not know, then a huge length.
    hostile
        .write_all(&[9, 2, 0xff, 0xff, 1, 0, 0, 0])
        .await
        .unwrap();
    hostile.write_all(&[0xAB; 4096]).await.unwrap();
    echo_streams(client.addr, 2, 256 << 10).await.unwrap();
    let served = server.counters.stats();
    // The hostile peer's retransmissions may open a fresh session after its first one was
    // killed (KCP has no handshake); none of them yields a stream.
    assert!(
        served.sessions_opened >= 2 && served.streams_forwarded == 2,
        "{served:?}"
    );
    drop(hostile);
    client.stop().await;
    server.stop().await;
}

/// A target that either echoes (first byte `E`) or floods its client with data forever
/// (first byte `F`), for the slow-reader tests.
async fn echo_or_flood_target() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut kind = [0u8; 1];
                if conn.read_exact(&mut kind).await.is_err() {
                    return;
                }
                if kind[0] == b'F' {
                    let block = vec![0x5au8; 64 * 1024];
                    while conn.write_all(&block).await.is_ok() {}
                } else {
                    let (mut r, mut w) = conn.into_split();
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// One TCP client stops reading a stream that receives a flood; another stream of the
/// same session still gets its echo through (smux v1: the stalled stream is reset after
/// smux's stall timeout; v2: its window stops only its own sender).
async fn stalled_reader_leaves_others_flowing(flags: &[&str]) {
    let (target, target_task) = echo_or_flood_target().await;
    let server = our_server(target, flags).await;
    let client = our_client(server.addr, flags).await;
    let mut stalled = TcpStream::connect(client.addr).await.unwrap();
    stalled.write_all(b"F").await.unwrap();
    // Let the flood fill every buffer on the way before the other stream starts.
    let mut first = [0u8; 1024];
    tokio::time::timeout(LIMIT, stalled.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut other = TcpStream::connect(client.addr).await.unwrap();
    other.write_all(b"E").await.unwrap();
    let mut pattern = Pattern::new(7);
    let mut data = vec![0u8; 1 << 20];
    pattern.fill(&mut data);
    let (mut r, mut w) = other.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move { w.write_all(&sent).await.map(|()| w) });
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(LIMIT, r.read_exact(&mut back))
        .await
        .expect("the other stream was stalled by the slow reader")
        .unwrap();
    assert!(back == data, "echo differs");
    writer.await.unwrap().unwrap();
    drop(stalled);
    client.stop().await;
    server.stop().await;
    target_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_leaves_others_flowing_smux_v1() {
    stalled_reader_leaves_others_flowing(&[
        "--crypt",
        "none",
        "--datashard",
        "0",
        "--parityshard",
        "0",
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_leaves_others_flowing_smux_v2() {
    stalled_reader_leaves_others_flowing(&[
        "--smuxver",
        "2",
        "--crypt",
        "none",
        "--datashard",
        "0",
        "--parityshard",
        "0",
    ])
    .await;
}

/// A session that dies (here: the server speaks garbage, which kills the client's smux
/// session) is replaced: the next connection dials a new session and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_session_is_redialled() {
    let raw = Config::server().with_listen("127.0.0.1:0");
    let session_cfg = raw.validate().unwrap().session;
    let mut fake = nodelink_kcp::KcpListener::bind("127.0.0.1:0", session_cfg)
        .await
        .unwrap();
    let client = our_client(fake.local_addr(), &["--nocomp"]).await;

    // First connection: its session gets garbage instead of smux frames.
    let mut doomed = TcpStream::connect(client.addr).await.unwrap();
    doomed.write_all(b"first").await.unwrap();
    let (mut first, _) = tokio::time::timeout(LIMIT, fake.accept())
        .await
        .unwrap()
        .unwrap();
    first.write_all(&[0xEE; 64]).await.unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(LIMIT, doomed.read_to_end(&mut rest))
        .await
        .expect("the stream of the dead session did not end");
    assert!(ended.is_err() || rest.is_empty(), "got {rest:?}");

    // Second connection: a new KCP session, now served by a real smux server.
    let mut conn = TcpStream::connect(client.addr).await.unwrap();
    conn.write_all(b"again").await.unwrap();
    let (second, _) = tokio::time::timeout(LIMIT, fake.accept())
        .await
        .unwrap()
        .unwrap();
    let smux =
        nodelink_smux::Session::start(second, Role::Server, nodelink_smux::Config::default())
            .unwrap();
    let mut stream = tokio::time::timeout(LIMIT, smux.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    stream.write_all(&buf).await.unwrap();
    let mut back = [0u8; 5];
    tokio::time::timeout(LIMIT, conn.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"again");
    assert_eq!(client.counters.stats().sessions_opened, 2);
    drop(first);
    smux.close().await;
    client.stop().await;
}

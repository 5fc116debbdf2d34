//! Issue 6: a stream whose reader stalls must not stall the other streams of its session.

mod common;

use nodelink_smux::Role;
use std::time::Duration;

use common::*;
use nodelink_smux::{Config, ErrorKind, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MOVED: usize = 8 << 20;

fn cfg(version: u8) -> Config {
    config(version)
        .with_max_stream_buffer(128 * 1024)
        .with_max_receive_buffer(1024 * 1024)
        .with_stall_timeout(Duration::from_millis(300))
}

/// Opens stream A (never read by the server) and stream B; writes `a_bytes` to A in the
/// background, then moves [`MOVED`] bytes through B and checks them.
async fn stalled_neighbour(
    version: u8,
    a_bytes: usize,
) -> (Session, Session, nodelink_smux::Stream) {
    let (c, s) = tokio::io::duplex(256 * 1024);
    let client = Session::start(c, Role::Client, cfg(version)).unwrap();
    let server = Session::start(s, Role::Server, cfg(version)).unwrap();

    let mut a = within(client.open()).await.unwrap();
    a.write_all(b"first").await.unwrap();
    let a_server = within(server.accept()).await.unwrap();
    assert_eq!(a_server.id(), 3);
    tokio::spawn(async move {
        let data = payload(1, a_bytes);
        let _ = a.write_all(&data).await;
        // Keep the handle (no FIN) until the test ends.
        std::future::pending::<()>().await;
    });

    let mut b = within(client.open()).await.unwrap();
    let mut b_server = within(server.accept()).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(MOVED);
        b_server.read_to_end(&mut got).await.unwrap();
        got
    });
    let data = payload(2, MOVED);
    within(async {
        b.write_all(&data).await.unwrap();
        b.shutdown().await.unwrap();
    })
    .await;
    let got = within(reader).await.unwrap();
    assert!(got == data, "stream B corrupted");
    (client, server, a_server)
}

#[tokio::test]
async fn v1_stalled_reader_is_reset_and_others_flow() {
    let (_client, server, mut a_server) = stalled_neighbour(1, 4 << 20).await;
    // A's unread data outgrew its buffer while its reader stalled: A alone was reset.
    assert!(server.stats().streams_reset >= 1);
    let err = within(a_server.read(&mut [0u8; 64])).await.unwrap_err();
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<nodelink_smux::Error>());
    assert_eq!(inner.map(|e| e.kind()), Some(ErrorKind::StreamReset));
    assert!(!server.is_closed());
}

#[tokio::test]
async fn v2_stalled_reader_blocks_only_its_sender() {
    let a_bytes = 2 << 20;
    let (_client, server, mut a_server) = stalled_neighbour(2, a_bytes).await;
    // Flow control held A's sender back; nothing was reset or lost.
    assert_eq!(server.stats().streams_reset, 0);
    let mut got = vec![0u8; 5 + a_bytes];
    within(a_server.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got[..5], b"first");
    assert!(got[5..] == payload(1, a_bytes)[..]);
}

#[tokio::test]
async fn v1_slow_reader_loses_nothing() {
    // A reader that keeps consuming, however slowly, is never reset: the session slows to
    // its pace instead (the v1 trade-off).
    let (c, s) = tokio::io::duplex(64 * 1024);
    let config = config(1)
        .with_max_stream_buffer(64 * 1024)
        .with_max_receive_buffer(256 * 1024)
        .with_stall_timeout(Duration::from_secs(30));
    let client = Session::start(c, Role::Client, config.clone()).unwrap();
    let server = Session::start(s, Role::Server, config).unwrap();
    let mut w = within(client.open()).await.unwrap();
    let data = payload(5, 1 << 20);
    let sent = data.clone();
    tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut r = within(server.accept()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = within(r.read(&mut buf)).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        tokio::task::yield_now().await;
    }
    assert!(got == data);
    assert_eq!(server.stats().streams_reset, 0);
}

#[tokio::test]
async fn session_bound_resets_the_largest_stalled_stream() {
    let (c, s) = tokio::io::duplex(256 * 1024);
    let config = config(1)
        .with_max_stream_buffer(200 * 1024)
        .with_max_receive_buffer(300 * 1024)
        .with_stall_timeout(Duration::from_millis(200));
    let client = Session::start(c, Role::Client, config.clone()).unwrap();
    let server = Session::start(s, Role::Server, config).unwrap();
    // Two unread streams: 150 KiB then 180 KiB, together past the 300 KiB session bound.
    let mut small = within(client.open()).await.unwrap();
    small.write_all(&payload(1, 150 * 1024)).await.unwrap();
    let mut big = within(client.open()).await.unwrap();
    big.write_all(&payload(2, 180 * 1024)).await.unwrap();
    let mut small_s = within(server.accept()).await.unwrap();
    let mut big_s = within(server.accept()).await.unwrap();
    // Past the stall timeout the larger stalled stream is reset.
    within(async {
        while server.stats().streams_reset == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // A third stream gets through.
    let mut third = within(client.open()).await.unwrap();
    third.write_all(b"hello").await.unwrap();
    let mut third_s = within(server.accept()).await.unwrap();
    let mut buf = [0u8; 5];
    within(third_s.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"hello");
    let err = within(big_s.read(&mut [0u8; 8])).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    let mut got = vec![0u8; 150 * 1024];
    within(small_s.read_exact(&mut got)).await.unwrap();
    assert!(got == payload(1, 150 * 1024));
    assert_eq!(server.stats().streams_reset, 1);
}

//! Hostile or broken peers: the session closes with a clear error or drops the bad frames,
//! memory stays bounded, and nothing panics.

mod common;

use common::*;
use nodelink_smux::Role;
use nodelink_smux::{ErrorKind, Session};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn expect_protocol_error(version: u8, bytes: Vec<u8>) {
    let (server, mut raw) = server_with_raw(config(version));
    send(&mut raw, &bytes).await;
    within(server.closed()).await;
    let reason = server.close_reason().unwrap();
    assert_eq!(reason.kind(), ErrorKind::Protocol, "{reason}");
    // The connection is released: the raw end sees EOF eventually.
    let mut sink = Vec::new();
    within(raw.read_to_end(&mut sink)).await.unwrap();
}

#[tokio::test]
async fn wrong_version_closes_the_session() {
    expect_protocol_error(1, frame(2, 0, 3, &[])).await;
    expect_protocol_error(2, frame(1, 3, 0, &[])).await;
}

#[tokio::test]
async fn unknown_command_closes_the_session() {
    expect_protocol_error(1, frame(1, 5, 3, &[])).await;
    expect_protocol_error(2, frame(2, 0xff, 3, &[])).await;
}

#[tokio::test]
async fn malformed_control_frames_close_the_session() {
    // A length on SYN/FIN/NOP would desynchronise a Go peer: refused.
    expect_protocol_error(1, frame(1, 0, 3, b"x")).await;
    expect_protocol_error(1, frame(1, 3, 0, b"xyz")).await;
    // UPD in v1, and a UPD of the wrong size in v2.
    expect_protocol_error(1, frame(1, 4, 3, &[0; 8])).await;
    expect_protocol_error(2, frame(2, 4, 3, &[0; 4])).await;
    // The server's own (even) ids and id 0 cannot be opened by the client.
    expect_protocol_error(1, frame(1, 0, 2, &[])).await;
    expect_protocol_error(1, frame(1, 0, 0, &[])).await;
}

#[tokio::test]
async fn huge_psh_to_an_unknown_stream_is_discarded() {
    let (server, mut raw) = server_with_raw(config(1));
    send(&mut raw, &frame(1, 2, 99, &vec![0xab; 65535])).await;
    send(&mut raw, &frame(1, 0, 3, &[])).await;
    send(&mut raw, &frame(1, 2, 3, b"ok")).await;
    let mut s = within(server.accept()).await.unwrap();
    let mut buf = [0u8; 2];
    within(s.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"ok");
    let stats = server.stats();
    assert_eq!(stats.frames_discarded, 1);
    assert_eq!(stats.bytes_discarded, 65535);
    assert!(!server.is_closed());
}

#[tokio::test]
async fn truncated_frame_then_eof_closes_cleanly() {
    let (server, mut raw) = server_with_raw(config(1));
    // Header promises 65535 bytes; only 10 arrive before the connection ends.
    let mut bytes = frame(1, 2, 3, &[]);
    bytes[2] = 0xff;
    bytes[3] = 0xff;
    bytes.extend_from_slice(&[0; 10]);
    send(&mut raw, &bytes).await;
    raw.shutdown().await.unwrap();
    drop(raw);
    within(server.closed()).await;
    assert_eq!(
        server.close_reason().unwrap().kind(),
        ErrorKind::SessionClosed
    );
}

#[tokio::test]
async fn syn_flood_beyond_the_backlog_is_refused_with_fins() {
    let cfg = config(1).with_accept_backlog(4);
    let (server, mut raw) = server_with_raw(cfg);
    let mut flood = Vec::new();
    for i in 0..10u32 {
        flood.extend(frame(1, 0, 3 + 2 * i, &[]));
    }
    send(&mut raw, &flood).await;
    // Six refusals come back as FINs for the ids past the backlog.
    for i in 4..10u32 {
        assert_eq!(read_frame(&mut raw).await, (1, 1, 3 + 2 * i, vec![]));
    }
    assert_eq!(server.stats().syns_refused, 6);
    for i in 0..4u32 {
        let s = within(server.accept()).await.unwrap();
        assert_eq!(s.id(), 3 + 2 * i);
    }
    // Data for a refused stream is dropped; the accepted backlog is free again.
    send(&mut raw, &frame(1, 2, 11, b"late")).await;
    send(&mut raw, &frame(1, 0, 41, &[])).await;
    let s = within(server.accept()).await.unwrap();
    assert_eq!(s.id(), 41);
    assert_eq!(server.stats().frames_discarded, 1);
}

#[tokio::test]
async fn duplicate_syn_and_stray_fin_or_upd_are_ignored() {
    let (server, mut raw) = server_with_raw(config(2));
    send(&mut raw, &frame(2, 0, 3, &[])).await;
    send(&mut raw, &frame(2, 0, 3, &[])).await;
    send(&mut raw, &frame(2, 1, 77, &[])).await;
    send(&mut raw, &frame(2, 4, 79, &[0; 8])).await;
    send(&mut raw, &frame(2, 0, 5, &[])).await;
    assert_eq!(within(server.accept()).await.unwrap().id(), 3);
    assert_eq!(within(server.accept()).await.unwrap().id(), 5);
    assert!(!server.is_closed());
}

#[tokio::test]
async fn v2_window_overrun_resets_only_that_stream() {
    let cfg = config(2).with_max_stream_buffer(65536);
    let (server, mut raw) = server_with_raw(cfg);
    send(&mut raw, &frame(2, 0, 3, &[])).await;
    send(&mut raw, &frame(2, 0, 5, &[])).await;
    let mut s3 = within(server.accept()).await.unwrap();
    let mut s5 = within(server.accept()).await.unwrap();
    // 5 x 60000 bytes on stream 3 without any UPD: past the 256 KiB initial window.
    for _ in 0..5 {
        send(&mut raw, &frame(2, 2, 3, &[1; 60_000])).await;
    }
    send(&mut raw, &frame(2, 2, 5, b"fine")).await;
    let mut buf = [0u8; 4];
    within(s5.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"fine");
    let err = within(s3.read(&mut [0u8; 16])).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(server.stats().streams_reset, 1);
    // The peer was told with a FIN.
    assert_eq!(read_non_nop(&mut raw).await, (2, 1, 3, vec![]));
}

#[tokio::test]
async fn random_garbage_never_panics() {
    for seed in 0..64u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let version = if seed % 2 == 0 { 1 } else { 2 };
        let (a, mut raw) = tokio::io::duplex(1 << 16);
        let server = Session::start(a, Role::Server, config(version)).unwrap();
        // Mostly well-formed headers with random fields, sometimes pure noise.
        let mut bytes = Vec::new();
        for _ in 0..50 {
            if rng.random_bool(0.8) {
                let cmd = rng.random_range(0..6u8);
                let len = if cmd == 2 {
                    rng.random_range(0..300usize)
                } else {
                    0
                };
                let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                bytes.extend(frame(version, cmd, rng.random_range(0..12), &body));
            } else {
                bytes.extend((0..rng.random_range(1..20)).map(|_| rng.random::<u8>()));
            }
        }
        let accepter = {
            let server = server.clone();
            tokio::spawn(async move {
                while let Ok(mut s) = server.accept().await {
                    let _ = s.read(&mut [0u8; 64]).await;
                }
            })
        };
        let _ = raw.write_all(&bytes).await;
        drop(raw);
        within(server.closed()).await;
        within(accepter).await.unwrap();
    }
}

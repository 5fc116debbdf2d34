//! The bytes a session puts on the wire, checked against a raw peer: SYN/PSH/FIN/UPD/NOP
//! layouts, stream id allocation, v2 window updates and the v2 sender's window.

mod common;

use common::*;
use nodelink_smux::Config;
use nodelink_smux::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn client_frames_are_byte_exact() {
    let (client, mut raw) = client_with_raw(config(1));
    let mut s = within(client.open()).await.unwrap();
    assert_eq!(s.id(), 3);
    let mut syn = [0u8; 8];
    within(raw.read_exact(&mut syn)).await.unwrap();
    assert_eq!(syn, [0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00]);

    s.write_all(b"hi").await.unwrap();
    let mut psh = [0u8; 10];
    within(raw.read_exact(&mut psh)).await.unwrap();
    assert_eq!(
        psh,
        [0x01, 0x02, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, b'h', b'i']
    );

    within(s.shutdown()).await.unwrap();
    let mut fin = [0u8; 8];
    within(raw.read_exact(&mut fin)).await.unwrap();
    assert_eq!(fin, [0x01, 0x01, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00]);

    let s2 = within(client.open()).await.unwrap();
    assert_eq!(s2.id(), 5);
    assert_eq!(read_frame(&mut raw).await, (1, 0, 5, vec![]));
}

#[tokio::test]
async fn writes_are_cut_at_the_max_frame_size() {
    let cfg = config(1).with_max_frame_size(1000);
    let (client, mut raw) = client_with_raw(cfg);
    let mut s = within(client.open()).await.unwrap();
    s.write_all(&payload(1, 2500)).await.unwrap();
    assert_eq!(read_frame(&mut raw).await.1, 0);
    let mut got = Vec::new();
    for expected_len in [1000, 1000, 500] {
        let (ver, cmd, sid, data) = read_frame(&mut raw).await;
        assert_eq!((ver, cmd, sid, data.len()), (1, 2, 3, expected_len));
        got.extend(data);
    }
    assert_eq!(got, payload(1, 2500));
}

#[tokio::test]
async fn server_opens_even_ids_and_accepts_odd_ones() {
    let (server, mut raw) = server_with_raw(config(1));
    send(&mut raw, &frame(1, 0, 3, &[])).await;
    send(&mut raw, &frame(1, 2, 3, b"data")).await;
    let mut s = within(server.accept()).await.unwrap();
    assert_eq!(s.id(), 3);
    let mut buf = [0u8; 4];
    within(s.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"data");
    let own = within(server.open()).await.unwrap();
    assert_eq!(own.id(), 2);
    assert_eq!(read_frame(&mut raw).await, (1, 0, 2, vec![]));
    let own2 = within(server.open()).await.unwrap();
    assert_eq!(own2.id(), 4);
    // The peer's FIN ends our reading side with EOF.
    send(&mut raw, &frame(1, 1, 3, &[])).await;
    assert_eq!(within(s.read(&mut buf)).await.unwrap(), 0);
}

#[tokio::test]
async fn v2_sends_upd_on_first_read_and_every_half_window() {
    let cfg = config(2).with_max_stream_buffer(8192);
    let (server, mut raw) = server_with_raw(cfg);
    send(&mut raw, &frame(2, 0, 3, &[])).await;
    send(&mut raw, &frame(2, 2, 3, &[7u8; 1000])).await;
    let mut s = within(server.accept()).await.unwrap();
    let mut buf = vec![0u8; 1000];
    within(s.read_exact(&mut buf)).await.unwrap();
    // consumed 1000, window 8192
    let expected = vec![0xe8, 0x03, 0, 0, 0x00, 0x20, 0, 0];
    assert_eq!(read_frame(&mut raw).await, (2, 4, 3, expected));
    // No UPD until another 4096 bytes (half the window) have been consumed.
    send(&mut raw, &frame(2, 2, 3, &[7u8; 4000])).await;
    let mut buf = vec![0u8; 4000];
    within(s.read_exact(&mut buf)).await.unwrap();
    send(&mut raw, &frame(2, 2, 3, &[7u8; 200])).await;
    let mut buf = vec![0u8; 200];
    within(s.read_exact(&mut buf)).await.unwrap();
    let (_, cmd, sid, data) = read_frame(&mut raw).await;
    assert_eq!((cmd, sid), (4, 3));
    assert_eq!(data[..4], 5200u32.to_le_bytes());
    assert_eq!(data[4..], 8192u32.to_le_bytes());
}

#[tokio::test]
async fn v2_sender_respects_the_peer_window() {
    let (client, mut raw) = client_with_raw(config(2));
    let s = within(client.open()).await.unwrap();
    assert_eq!(read_frame(&mut raw).await.1, 0);
    let (_r, mut w) = tokio::io::split(s);
    let data = payload(3, 600_000);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.flush().await.unwrap();
        w
    });
    // Before any UPD the sender assumes a 256 KiB window, exactly.
    let mut received = 0usize;
    while received < 262_144 {
        let (_, cmd, sid, data) = read_frame(&mut raw).await;
        assert_eq!((cmd, sid), (2, 3));
        received += data.len();
    }
    assert_eq!(received, 262_144);
    // Nothing more arrives until a window update: prove it by sending a UPD that opens
    // exactly 1000 more bytes and checking that exactly 1000 arrive next.
    let mut upd = 0u32.to_le_bytes().to_vec();
    upd.extend_from_slice(&263_144u32.to_le_bytes());
    send(&mut raw, &frame(2, 4, 3, &upd)).await;
    let (_, cmd, _, data) = read_frame(&mut raw).await;
    assert_eq!((cmd, data.len()), (2, 1000));
    // Report everything consumed with a big window: the rest flows.
    let mut upd = 263_144u32.to_le_bytes().to_vec();
    upd.extend_from_slice(&(1u32 << 20).to_le_bytes());
    send(&mut raw, &frame(2, 4, 3, &upd)).await;
    let mut rest = 0;
    while rest < 600_000 - 263_144 {
        rest += read_frame(&mut raw).await.3.len();
    }
    assert_eq!(rest, 600_000 - 263_144);
    within(writer).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn keepalive_sends_nops() {
    let cfg = Config::default().with_keep_alive_interval(std::time::Duration::from_secs(10));
    let (_client, mut raw) = client_with_raw(cfg);
    for _ in 0..2 {
        assert_eq!(read_frame(&mut raw).await, (1, 3, 0, vec![]));
        // Answer so the session stays up.
        send(&mut raw, &frame(1, 3, 0, &[])).await;
    }
}

#[tokio::test(start_paused = true)]
async fn v2_gives_up_on_a_window_closed_by_the_peers_fin() {
    // A Go peer's FIN is a full close: it will never update the window again. Data still
    // waiting is given up after the stall timeout instead of blocking forever.
    let (client, mut raw) = client_with_raw(config(2));
    let mut s = within(client.open()).await.unwrap();
    assert_eq!(read_frame(&mut raw).await.1, 0);
    let mut received = 0;
    let drain = async {
        while received < 262_144 {
            received += read_frame(&mut raw).await.3.len();
        }
        send(&mut raw, &frame(2, 1, 3, &[])).await;
    };
    let data = payload(4, 600_000);
    let (written, ()) = tokio::join!(s.write_all(&data), drain);
    let err = written.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(client.stats().streams_reset, 1);
    // We answered with our own FIN; the session lives on.
    assert_eq!(read_non_nop(&mut raw).await, (2, 1, 3, vec![]));
    assert!(!client.is_closed());
}

#[tokio::test]
async fn v2_half_close_lets_a_large_reply_through() {
    // Our own peer keeps reading (and granting window) after its FIN.
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client = nodelink_smux::Session::start(a, Role::Client, config(2)).unwrap();
    let server = nodelink_smux::Session::start(b, Role::Server, config(2)).unwrap();
    let mut c = within(client.open()).await.unwrap();
    within(c.shutdown()).await.unwrap();
    let mut s = within(server.accept()).await.unwrap();
    let reply = payload(6, 2 << 20);
    let sent = reply.clone();
    let writer = tokio::spawn(async move {
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0);
        s.write_all(&sent).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    within(c.read_to_end(&mut got)).await.unwrap();
    assert!(got == reply);
    within(writer).await.unwrap();
}

#[tokio::test]
async fn streams_share_the_connection_frame_by_frame() {
    let cfg = config(1).with_max_frame_size(16 * 1024);
    let (client, mut raw) = client_with_raw(cfg);
    let mut a = within(client.open()).await.unwrap();
    let mut b = within(client.open()).await.unwrap();
    // Both writes are buffered before the session writer runs (single-threaded runtime).
    a.write_all(&payload(1, 64 * 1024)).await.unwrap();
    b.write_all(&payload(2, 64 * 1024)).await.unwrap();
    assert_eq!(read_frame(&mut raw).await.1, 0);
    assert_eq!(read_frame(&mut raw).await.1, 0);
    let mut order = Vec::new();
    for _ in 0..8 {
        let (_, cmd, sid, data) = read_frame(&mut raw).await;
        assert_eq!((cmd, data.len()), (2, 16 * 1024));
        order.push(sid);
    }
    assert_eq!(order, [3, 5, 3, 5, 3, 5, 3, 5]);
}

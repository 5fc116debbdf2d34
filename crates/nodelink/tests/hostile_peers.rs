//! Peers that misbehave: every case must end with a clear error (or keep working) and with
//! bounded memory, never with a hang or a panic.

mod common;

use std::io;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use nodelink::{Config, ErrorKind, Link, Message, PeerFlowControl, Ping, Pong, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn link_down_with(e: &nodelink::Error, kind: io::ErrorKind) -> bool {
    e.kind() == ErrorKind::LinkDown && e.io_error().is_some_and(|c| c.kind() == kind)
}

fn io_with(e: &nodelink::Error, kind: io::ErrorKind) -> bool {
    e.kind() == ErrorKind::Io && e.io_error().is_some_and(|c| c.kind() == kind)
}

/// Accepts (and drops) incoming connections until accept fails; returns the error.
async fn accept_until_error(link: &Link) -> nodelink::Error {
    loop {
        match within("accept until the link fails", link.accept()).await {
            Ok(conn) => drop(conn),
            Err(e) => return e,
        }
    }
}

// ---------------------------------------------------------------------------------------
// framing attacks

#[tokio::test]
async fn oversized_length_header_takes_the_link_down_as_packet_too_big() {
    let config = Config::default().with_flow_control(false);
    let (link, mut raw) = raw_and_link(Role::Server, config, 64 << 10).await;
    let conn = link.open().unwrap();
    let mut recv = Box::pin(conn.recv());
    assert!(poll_once(&mut recv).await.is_pending());

    // 10 bytes announcing a 4 GiB payload. The link must fail on the header alone: it
    // cannot wait for (or reserve room for) the payload.
    raw.write_all(&[0, 0, 0, 1, 0, 2, 0xff, 0xff, 0xff, 0xff])
        .await;
    let e = within("accept", link.accept()).await.unwrap_err();
    assert!(link_down_with(&e, io::ErrorKind::InvalidData), "{e:?}");
    assert!(with_sources(&e).contains("packet too big"), "{e}");
    let first = within("recv", recv).await.unwrap_err();
    assert!(io_with(&first, io::ErrorKind::InvalidData), "{first:?}");
    assert!(with_sources(&first).contains("packet too big"), "{first}");
    assert_eq!(link.stats().packets_in, 0);
    assert_eq!((link.stats().rx_queued as usize), 0);
    // The other side sees the stream closed.
    assert_eq!(within("peer sees EOF", raw.expect_eof()).await, 0);
}

#[tokio::test]
async fn length_header_one_past_the_maximum_is_packet_too_big() {
    let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    let len = (0x400_0000u32 - 10 + 1).to_be_bytes();
    raw.write_all(&[0, 0, 0, 1, 0, 2, len[0], len[1], len[2], len[3]])
        .await;
    let e = accept_until_error(&link).await;
    assert!(link_down_with(&e, io::ErrorKind::InvalidData), "{e:?}");
    assert!(with_sources(&e).contains("packet too big"), "{e}");
}

#[tokio::test]
async fn length_header_of_exactly_the_maximum_is_valid_framing() {
    // 64 MiB including the header is allowed. Declare it, send part of the payload, and
    // close: the link must be waiting for the rest (EOF), not reject the length.
    let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    let len = (0x400_0000u32 - 10).to_be_bytes();
    raw.write_all(&[0, 0, 0, 1, 0, 2, len[0], len[1], len[2], len[3]])
        .await;
    raw.write_all(&[7u8; 1000]).await;
    raw.io.shutdown().await.unwrap();
    let e = accept_until_error(&link).await;
    assert!(link_down_with(&e, io::ErrorKind::UnexpectedEof), "{e:?}");
    assert!(!with_sources(&e).contains("too big"), "{e}");
}

#[tokio::test]
async fn peer_closing_mid_packet_takes_the_link_down_with_eof() {
    let (link, mut raw) = raw_and_link(Role::Client, Config::default(), 64 << 10).await;
    let conn = link.open().unwrap();
    within("send", conn.send(&Ping)).await.unwrap();
    let mut recv = Box::pin(conn.recv());
    assert!(poll_once(&mut recv).await.is_pending());
    // Header announcing 100 bytes, then only 50, then the stream ends.
    raw.write_all(&[0, 0, 0, 1, 0x80, 0x02, 0, 0, 0, 100]).await;
    raw.write_all(&[1u8; 50]).await;
    raw.io.shutdown().await.unwrap();
    let e = within("recv", recv).await.unwrap_err();
    assert!(io_with(&e, io::ErrorKind::UnexpectedEof), "{e:?}");
    let e = within("accept", link.accept()).await.unwrap_err();
    assert!(link_down_with(&e, io::ErrorKind::UnexpectedEof), "{e:?}");
    let e = within("recv again", conn.recv()).await.unwrap_err();
    assert!(link_down_with(&e, io::ErrorKind::UnexpectedEof), "{e:?}");
}

/// Pure random bytes after the handshake, for many seeds: the link goes down with a
/// framing error or EOF, never hangs or panics (a panicking reader would never end the
/// link, and the bounded accept below would time out).
#[tokio::test]
async fn random_garbage_after_the_handshake_takes_the_link_down() {
    for seed in 0..64u64 {
        let mut rng = Rng::new(seed);
        let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 1 << 20).await;
        let n = 1 + rng.below(4096) as usize;
        raw.write_all(&rng.bytes(n)).await;
        raw.io.shutdown().await.unwrap();
        let e = accept_until_error(&link).await;
        assert!(
            link_down_with(&e, io::ErrorKind::InvalidData)
                || link_down_with(&e, io::ErrorKind::UnexpectedEof),
            "seed {seed}: {e:?}"
        );
        within("link tasks end", link.closed()).await;
    }
}

/// Random but well-framed packets (random ids incl. the reserved ones, random codes incl.
/// answers and control, random payloads incl. corrupted control frames), after a valid
/// HELLO, then an oversized header: the link survives the packets and fails cleanly on
/// the header.
#[tokio::test]
async fn random_well_framed_packets_then_oversize_fail_cleanly() {
    for seed in 0..16u64 {
        let mut rng = Rng::new(1000 + seed);
        let (link, raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
        let (mut rd, mut wr) = tokio::io::split(raw.io);
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 64 << 10];
            let mut total = 0usize;
            while let Ok(n) = rd.read(&mut sink).await {
                if n == 0 {
                    break;
                }
                total += n;
            }
            total
        });
        let mut out = packet_bytes(CONTROL_TO_SERVER, CONTROL_CODE, &hello_payload(1 << 16));
        for _ in 0..500 {
            let id = match rng.below(6) {
                0 => CONTROL_TO_SERVER,
                1 => rng.next_u64() as u32,
                2 => (rng.below(64) as u32) * 2 + 1,
                3 => (rng.below(64) as u32) * 2,
                4 => CONTROL_TO_CLIENT,
                _ => rng.below(8) as u32,
            };
            let code = match rng.below(4) {
                0 => CONTROL_CODE,
                1 => 0x8000,
                _ => rng.next_u64() as u16,
            };
            let len = rng.below(64) as usize;
            let mut payload = rng.bytes(len);
            if code == CONTROL_CODE && rng.below(2) == 0 {
                let mut framed = b"NLFC".to_vec();
                framed.push(rng.below(5) as u8);
                framed.extend_from_slice(&payload);
                payload = framed;
            }
            out.extend_from_slice(&packet_bytes(id, code, &payload));
        }
        out.extend_from_slice(&[0, 0, 0, 1, 0, 2, 0xff, 0xff, 0xff, 0xf0]);
        within("write garbage", wr.write_all(&out)).await.unwrap();
        let e = accept_until_error(&link).await;
        assert!(
            link_down_with(&e, io::ErrorKind::InvalidData),
            "seed {seed}: {e:?}"
        );
        assert!(
            with_sources(&e).contains("packet too big"),
            "seed {seed}: {e}"
        );
        assert_eq!(link.stats().packets_in, 501, "seed {seed}");
        within("link tasks end", link.closed()).await;
        drop(wr);
        within("drain", drain).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// connection floods

#[tokio::test]
async fn flood_of_new_connections_pauses_reading_instead_of_refusing() {
    // NEO/go never refuses while it is accepting: a full backlog pauses the reader (the
    // rest of the flood waits in the stream), memory stays at the backlog's size, and
    // every connection is served once the application accepts.
    const N: u32 = 500;
    let config = Config::default().with_accept_backlog(16);
    let (link, mut raw) = raw_and_link(Role::Server, config, 1 << 20).await;
    let mut flood = Vec::new();
    for i in 0..N {
        flood.extend_from_slice(&packet_bytes(2 * i + 1, 2, b""));
    }
    flood.extend_from_slice(&packet_bytes(0, 2, b"")); // sync: answered "connection closed"
    raw.write_all(&flood).await;
    within("reader pauses on the full backlog", async {
        while link.stats().accept_waits == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    let st = link.stats();
    assert_eq!(st.conns_accepted, 16);
    assert_eq!(st.conns_refused, 0);
    assert_eq!(table(&link), (16, 0));
    let mut conns = Vec::new();
    for i in 0..N {
        let conn = within("accept", link.accept()).await.unwrap();
        assert_eq!(conn.id(), 2 * i + 1);
        assert_eq!(within("recv", conn.recv()).await.unwrap().code, 2);
        conns.push(conn);
    }
    // Nothing was refused: the first packet the peer gets is the sync's reply.
    assert_eq!(
        within("sync", raw.next_packet()).await.wire,
        closed_reply(0)
    );
    let st = link.stats();
    assert_eq!((st.conns_accepted, st.conns_refused), (u64::from(N), 0));
    assert!(st.accept_waits >= 1);
}

#[tokio::test]
async fn full_backlog_refuses_once_accept_is_closed() {
    let config = Config::default().with_accept_backlog(2);
    let (link, mut raw) = raw_and_link(Role::Server, config, 1 << 20).await;
    for i in 0..5u32 {
        raw.send(2 * i + 1, 2, b"").await;
    }
    within("reader pauses", async {
        while link.stats().accept_waits == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    // Closing accept refuses the two queued connections and the three still in the
    // stream, in order.
    link.close_accept();
    for i in 0..5u32 {
        assert_eq!(
            within("refusal", raw.next_packet()).await.wire,
            refused_reply(2 * i + 1)
        );
    }
    assert_eq!(link.stats().conns_refused, 5);
}

#[tokio::test]
async fn flood_beyond_max_connections_is_refused() {
    let config = Config::default().with_max_connections(8);
    let (link, mut raw) = raw_and_link(Role::Server, config, 1 << 20).await;
    let mut accepted = Vec::new();
    for i in 0..8u32 {
        raw.send(2 * i + 1, 2, b"").await;
        accepted.push(within("accept", link.accept()).await.unwrap());
    }
    for i in 8..40u32 {
        raw.send(2 * i + 1, 2, b"").await;
        assert_eq!(
            within("refusal", raw.next_packet()).await.wire,
            refused_reply(2 * i + 1)
        );
    }
    assert_eq!(table(&link), (8, 0));
    let e = link.open().unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::TooManyConnections), "{e:?}");
    drop(accepted.pop());
    link.open().expect("a slot was freed");
}

// ---------------------------------------------------------------------------------------
// peers that do not read

#[tokio::test]
async fn peer_that_never_reads_gives_senders_backpressure_and_receivers_keep_working() {
    const SEND_BUFFER: usize = 64 << 10;
    const PIPE: usize = 4 << 10;
    const SENDS: u32 = 2000;
    let config = Config::default()
        .with_flow_control(false)
        .with_send_buffer(SEND_BUFFER);
    let (link, mut raw) = raw_and_link(Role::Client, config, PIPE).await;
    let conn = link.open().unwrap();
    let payload = |i: u32| {
        let mut p = i.to_be_bytes().to_vec();
        p.resize(1024, 0xab);
        Bytes::from(p)
    };
    let mut pending = Vec::new();
    let mut completed = 0u32;
    for i in 0..SENDS {
        let mut send = Box::pin(conn.send_packet(3, payload(i)));
        match poll_once(&mut send).await {
            Poll::Ready(r) => {
                r.unwrap();
                completed += 1;
            }
            Poll::Pending => pending.push(send),
        }
    }
    // Backpressure: most senders wait, and what was queued is bounded by the send buffer
    // (plus what the pipe holds and one packet in flight).
    let out = link.stats().bytes_out as usize;
    assert!(!pending.is_empty());
    assert!(
        out <= SEND_BUFFER + PIPE + 2 * 1034,
        "{out} bytes queued for a peer that does not read"
    );
    assert!((completed as usize) * 1034 <= out);

    // The reader is not blocked by the stuck writer: packets from the peer still arrive,
    // both on our connection and as new incoming connections.
    raw.send(1, 0x8003, b"answer").await;
    raw.send(2, 4, b"new").await;
    raw.send(7, 2, b"").await; // unknown id of our parity: a reply is queued (or dropped)
    let p = within("recv on our conn", conn.recv()).await.unwrap();
    assert_eq!((p.code, &p.payload[..]), (0x8003, &b"answer"[..]));
    let inc = within("accept", link.accept()).await.unwrap();
    assert_eq!(inc.id(), 2);
    assert_eq!(
        &within("recv", inc.recv()).await.unwrap().payload[..],
        b"new"
    );

    // Once the peer reads, every send completes and the stream is intact and in order.
    let reader = tokio::spawn(async move {
        let mut next = 0u32;
        let mut replies = 0;
        while next < SENDS {
            let p = raw.next_packet().await;
            if p.id == 7 {
                assert_eq!(p.wire, closed_reply(7));
                replies += 1;
                continue;
            }
            assert_eq!((p.id, p.code, p.payload.len()), (1, 3, 1024));
            assert_eq!(u32::from_be_bytes(p.payload[..4].try_into().unwrap()), next);
            next += 1;
        }
        (raw, replies)
    });
    for send in pending {
        within("blocked send completes", send).await.unwrap();
    }
    let (_raw, replies) = within("peer reads everything", reader).await.unwrap();
    // The reply to the request on id 7 was queued (the queue was below twice the send
    // buffer), not dropped.
    assert_eq!(replies, 1);
    assert_eq!(link.stats().replies_dropped, 0);
}

#[tokio::test]
async fn peer_that_never_reads_its_replies_cannot_grow_memory() {
    const SEND_BUFFER: usize = 16 << 10;
    const PIPE: usize = 4 << 10;
    const N: u64 = 20_000;
    let config = Config::default()
        .with_flow_control(false)
        .with_send_buffer(SEND_BUFFER);
    let (link, mut raw) = raw_and_link(Role::Server, config, PIPE).await;
    // Requests on unknown ids of the server's parity: each one asks for a
    // "connection closed" reply, which the peer never reads.
    let mut flood = Vec::new();
    for i in 0..N {
        flood.extend_from_slice(&packet_bytes(2 * (i as u32 % 1000), 2, b""));
    }
    flood.extend_from_slice(&packet_bytes(1, 2, b"")); // then a new connection
    within("flood", raw.write_all(&flood)).await;
    let conn = within("accept after the flood", link.accept())
        .await
        .unwrap();
    let st = link.stats();
    assert_eq!(st.packets_in, N + 1);
    assert_eq!(
        st.packets_out + st.replies_dropped,
        N,
        "every reply is sent or dropped"
    );
    assert!(
        st.replies_dropped > 0,
        "replies to a non-reading peer must be dropped"
    );
    let bound = (PIPE + 4 * SEND_BUFFER + 1024) as u64;
    assert!(
        st.bytes_out <= bound,
        "{} bytes of replies queued",
        st.bytes_out
    );

    // The link still works. Our answer waits behind the queued replies (the peer still
    // does not read), then the peer reads: well-formed replies, then our answer.
    let replies_sent = st.packets_out;
    within("recv", conn.recv()).await.unwrap();
    let mut answer = Box::pin(conn.send(&Pong));
    assert!(
        poll_once(&mut answer).await.is_pending(),
        "the send queue is full"
    );
    let read_all = async {
        let mut seen = 0;
        loop {
            let p = raw.next_packet().await;
            if p.id == 1 {
                assert_eq!(p.wire, packet_bytes(1, 0x8002, b""));
                return seen;
            }
            assert_eq!(p.wire, closed_reply(p.id));
            seen += 1;
        }
    };
    let (sent, seen) = within("peer reads", async { tokio::join!(answer, read_all) }).await;
    sent.unwrap();
    assert_eq!(seen, replies_sent);
}

// ---------------------------------------------------------------------------------------
// one connection whose application never reads

#[tokio::test]
async fn unread_connection_blocks_only_its_own_sender_with_credit() {
    let (c, s) = pair(Config::default().with_conn_recv_budget(64 << 10)).await;
    warm_up(&c, &s).await;
    assert_eq!(c.peer_flow_control(), PeerFlowControl::On);
    let stuck = c.open().unwrap();
    within(
        "first window",
        stuck.send_packet(5, Bytes::from(vec![1u8; 64 << 10])),
    )
    .await
    .unwrap();
    let stuck_in = within("accept stuck", s.accept()).await.unwrap(); // never read (yet)
    let mut blocked = Box::pin(stuck.send_packet(5, Bytes::from(vec![2u8; 64 << 10])));
    assert!(poll_once(&mut blocked).await.is_pending(), "no credit left");

    // Another connection moves 3 MiB through the same link meanwhile.
    let other = c.open().unwrap();
    within(
        "first on other",
        other.send_packet(6, Bytes::from(vec![0u8; 16 << 10])),
    )
    .await
    .unwrap();
    let other_in = within("accept other", s.accept()).await.unwrap();
    within("other flows", async {
        let send = async {
            for _ in 1..200 {
                other
                    .send_packet(6, Bytes::from(vec![0u8; 16 << 10]))
                    .await
                    .unwrap();
            }
        };
        let recv = async {
            for _ in 0..200 {
                assert_eq!(other_in.recv().await.unwrap().payload.len(), 16 << 10);
            }
        };
        tokio::join!(send, recv)
    })
    .await;
    assert!(
        poll_once(&mut blocked).await.is_pending(),
        "still no credit"
    );
    assert!(
        (s.stats().rx_queued as usize) <= (64 << 10) + 64,
        "{}",
        (s.stats().rx_queued as usize)
    );

    // Reading the stuck connection returns credit and releases its sender.
    assert_eq!(
        within("read stuck", stuck_in.recv()).await.unwrap().payload[0],
        1
    );
    within("blocked send completes", blocked).await.unwrap();
    assert_eq!(
        within("read stuck", stuck_in.recv()).await.unwrap().payload[0],
        2
    );
    assert_eq!(s.stats().recv_overflows, 0);
}

#[tokio::test]
async fn unread_connection_against_strict_neo_peer_overflows_only_that_connection() {
    let config = Config::default().with_conn_recv_budget(64 << 10);
    let (link, mut raw) = raw_and_link(Role::Server, config, 1 << 20).await;
    raw.send(1, 10, &[0u8; 40 << 10]).await;
    raw.send(1, 10, &[0u8; 40 << 10]).await; // 2 x (40 KiB + 64) > 64 KiB
    raw.send(3, Ping::CODE, b"").await;
    let stuck = within("accept", link.accept()).await.unwrap();
    let other = within("accept", link.accept()).await.unwrap();
    assert_eq!((stuck.id(), other.id()), (1, 3));
    assert_eq!(link.peer_flow_control(), PeerFlowControl::Off);
    let _: Ping = within("other recv", other.expect()).await.unwrap();
    within("other send", other.send(&Pong)).await.unwrap();

    // The peer is told the stuck connection is closed, and the other one answered.
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        closed_reply(1)
    );
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        packet_bytes(3, 0x8002, b"")
    );
    let e = within("stuck recv", stuck.recv()).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::RecvBudgetExceeded), "{e:?}");
    let e = within("stuck recv again", stuck.recv()).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::RecvBudgetExceeded), "{e:?}");
    assert_eq!(link.stats().recv_overflows, 1);
    assert_eq!(
        (link.stats().rx_queued as usize),
        0,
        "the overflowed queue was released"
    );

    // Later packets on the stuck id get "connection closed"; the other keeps flowing.
    raw.send(1, 10, b"late").await;
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        closed_reply(1)
    );
    for _ in 0..50 {
        raw.send(3, Ping::CODE, b"").await;
        let _: Ping = within("other recv", other.expect()).await.unwrap();
        within("other send", other.send(&Pong)).await.unwrap();
        assert_eq!(within("raw read", raw.next_packet()).await.id, 3);
    }
}

#[tokio::test]
async fn flood_of_empty_packets_on_one_connection_hits_its_budget() {
    // Each packet costs its payload plus a fixed overhead (64), so even empty packets fill
    // a 64 KiB budget: 1024 fit, the 1025th overflows.
    let config = Config::default().with_conn_recv_budget(64 << 10);
    let (link, mut raw) = raw_and_link(Role::Server, config, 1 << 20).await;
    let mut flood = Vec::new();
    for _ in 0..2000 {
        flood.extend_from_slice(&packet_bytes(1, 2, b""));
    }
    flood.extend_from_slice(&packet_bytes(0, 2, b""));
    raw.write_all(&flood).await;
    for _ in 1024..2000 {
        assert_eq!(
            within("raw read", raw.next_packet()).await.wire,
            closed_reply(1)
        );
    }
    assert_eq!(
        within("sync", raw.next_packet()).await.wire,
        closed_reply(0)
    );
    assert_eq!(link.stats().recv_overflows, 1);
    assert_eq!((link.stats().rx_queued as usize), 0);
    let conn = within("accept", link.accept()).await.unwrap();
    let e = within("recv", conn.recv()).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::RecvBudgetExceeded), "{e:?}");
}

#[tokio::test]
async fn peer_ignoring_credit_overflows_only_that_connection() {
    let config = Config::default().with_conn_recv_budget(64 << 10);
    let (link, mut raw) = raw_and_link(Role::Server, config, 1 << 20).await;
    // A nodelink-speaking peer: HELLO...
    raw.send(CONTROL_TO_SERVER, CONTROL_CODE, &hello_payload(64 << 10))
        .await;
    // ...that then sends two windows' worth on one connection without waiting for credit.
    raw.send(1, 10, &[0u8; 40 << 10]).await;
    raw.send(1, 10, &[0u8; 40 << 10]).await;
    raw.send(3, Ping::CODE, b"").await;
    let stuck = within("accept", link.accept()).await.unwrap();
    let other = within("accept", link.accept()).await.unwrap();
    assert_eq!(link.peer_flow_control(), PeerFlowControl::On);
    let _: Ping = within("other recv", other.expect()).await.unwrap();
    let e = within("stuck recv", stuck.recv()).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::RecvBudgetExceeded), "{e:?}");
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        closed_reply(1)
    );
    assert_eq!(link.stats().recv_overflows, 1);
}

/// A peer that announces flow control and then ignores it right away: credit is enforced
/// from its first data byte, so only the connection it floods is hurt.
#[tokio::test]
async fn peer_that_ignores_credit_from_the_start_cannot_stall_other_connections() {
    let config = Config::default()
        .with_conn_recv_budget(64 << 10)
        .with_link_recv_limit(512 << 10);
    let (link, raw) = raw_and_link(Role::Server, config, 64 << 10).await;
    let mut raw = raw;
    raw.send(CONTROL_TO_SERVER, CONTROL_CODE, &hello_payload(64 << 10))
        .await;
    let writer = tokio::spawn(async move {
        // 1.25 MiB on connection 1, whose application never reads, then a request on 3.
        for _ in 0..20 {
            raw.send(1, 10, &[0u8; 64 << 10]).await;
        }
        raw.send(3, Ping::CODE, b"").await;
        raw
    });
    let _stuck = within("accept stuck", link.accept()).await.unwrap();
    let other = within("accept other (stalls if the reader stopped)", link.accept())
        .await
        .unwrap();
    let _: Ping = within("other recv", other.expect()).await.unwrap();
    assert!((link.stats().rx_queued as usize) <= (512 << 10) + (64 << 10) + 64);
    within("writer", writer).await.unwrap();
}

#[tokio::test]
async fn link_wide_receive_limit_pauses_reading_when_nobody_reads() {
    const LIMIT: usize = 256 << 10;
    const CONNS: u32 = 40;
    const SIZE: usize = 32 << 10;
    let config = Config::default()
        .with_flow_control(false)
        .with_link_recv_limit(LIMIT);
    let (link, mut raw) = raw_and_link(Role::Server, config, 64 << 10).await;
    let mut writer = tokio::spawn(async move {
        for i in 0..CONNS {
            raw.send(2 * i + 1, 10, &vec![i as u8; SIZE]).await;
        }
        raw
    });
    // Nobody reads: the link must stop reading from the stream, so the peer's writer
    // stays blocked. (This is a bounded negative check: it only waits for a while.)
    let still_blocked = tokio::time::timeout(Duration::from_millis(300), &mut writer).await;
    assert!(
        still_blocked.is_err(),
        "the link kept reading although nobody read"
    );
    let queued = link.stats().rx_queued as usize;
    assert!(
        queued <= LIMIT + SIZE + 64,
        "{queued} bytes queued with a limit of {LIMIT}"
    );

    // Reading everything releases the peer, and nothing was lost.
    for i in 0..CONNS {
        let conn = within("accept", link.accept()).await.unwrap();
        assert_eq!(conn.id(), 2 * i + 1);
        let p = within("recv", conn.recv()).await.unwrap();
        assert_eq!((p.payload.len(), p.payload[0]), (SIZE, i as u8));
        assert!((link.stats().rx_queued as usize) <= LIMIT + SIZE + 64);
    }
    within("writer", writer).await.unwrap();
    assert_eq!((link.stats().rx_queued as usize), 0);
}

// ---------------------------------------------------------------------------------------
// control frames from a hostile peer

#[tokio::test]
async fn malformed_control_frames_are_ignored_and_counted() {
    let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 1 << 20).await;
    raw.send(CONTROL_TO_SERVER, CONTROL_CODE, &hello_payload(64 << 10))
        .await;
    raw.send(1, Ping::CODE, b"").await;
    let conn = within("accept", link.accept()).await.unwrap();
    let bad: [&[u8]; 6] = [
        b"",
        b"XLFC\x02",
        b"NLFC",
        b"NLFC\x09",
        b"NLFC\x03\x00\x00\x00",
        b"NLFC\x02x",
    ];
    for payload in bad {
        raw.send(CONTROL_TO_SERVER, CONTROL_CODE, payload).await;
    }
    // Wrong code on the control id, and NEO's answer to our HELLO.
    raw.send(CONTROL_TO_SERVER, 2, b"NLFC\x02").await;
    raw.send(
        CONTROL_TO_SERVER,
        0x8000,
        &closed_reply(CONTROL_TO_SERVER)[10..],
    )
    .await;
    // Well-formed credit for unknown connections, and an absurd amount for a known one.
    raw.send(
        CONTROL_TO_SERVER,
        CONTROL_CODE,
        &credit_payload(&[(77, 1), (u32::MAX, u32::MAX)]),
    )
    .await;
    raw.send(
        CONTROL_TO_SERVER,
        CONTROL_CODE,
        &credit_payload(&[(1, u32::MAX)]),
    )
    .await;
    // Sync: a request on our parity gets the only reply.
    raw.send(0, 2, b"").await;
    assert_eq!(
        within("sync", raw.next_packet()).await.wire,
        closed_reply(0)
    );
    assert_eq!(link.stats().control_dropped, 8);
    // The connection still works both ways.
    let _: Ping = within("recv", conn.expect()).await.unwrap();
    within("send", conn.send(&Pong)).await.unwrap();
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        packet_bytes(1, 0x8002, b"")
    );
}

// ---------------------------------------------------------------------------------------
// handshake attacks

#[tokio::test]
async fn silent_peer_times_out_without_blocking_the_listener() {
    // Long enough for the well-behaved client even on a loaded machine.
    let config = Config::default().with_handshake_timeout(Duration::from_secs(1));
    let mut listener = nodelink::bind("127.0.0.1:0", config.clone()).await.unwrap();
    let addr = listener.local_addr();
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut silent = RawPeer::new(silent);
    // A well-behaved client gets through while the silent one hangs in its handshake.
    let (accepted, dialed) = within("dial + accept next to a silent peer", async {
        tokio::join!(listener.accept(), nodelink::connect(addr, config))
    })
    .await;
    let (server, client) = (accepted.unwrap(), dialed.unwrap());
    warm_up(&client, &server).await;
    // The silent peer got our version word and then, after the timeout, a closed socket.
    assert_eq!(
        within("version", silent.read_exact(4)).await,
        vec![0, 0, 0, 6]
    );
    within("silent peer is dropped", silent.expect_eof()).await;
    let mut next = Box::pin(listener.accept());
    assert!(poll_once(&mut next).await.is_pending());
    drop(next);
    assert_eq!(listener.failed_handshakes(), 1);
}

#[tokio::test]
async fn peer_speaking_another_protocol_fails_the_handshake() {
    // A TLS ClientHello-like or HTTP start is not a version word.
    for first in [&b"\x16\x03\x01\x02"[..], b"GET / HTTP/1.1\r\n\r\n"] {
        let (a, mut b) = tokio::io::duplex(1024);
        b.write_all(first).await.unwrap();
        let e = within(
            "handshake",
            Link::handshake(a, Role::Server, Config::default()),
        )
        .await
        .unwrap_err();
        let peer = u32::from_be_bytes(first[..4].try_into().unwrap());
        assert!(
            matches!(
                e.handshake_error(),
                Some(nodelink::HandshakeError::VersionMismatch { peer: p, ours: 6 }) if *p == peer
            ),
            "{e:?}"
        );
    }
}

/// A peer that floods a link until it holds back reading (nobody takes the requests),
/// then goes away with a reset: the link notices at once and ends, giving back what it
/// held, though it reads nothing and has nothing to send.
#[tokio::test]
async fn a_held_back_link_notices_its_peer_going() {
    const LIMIT: usize = 256 << 10;
    let config = Config::default().with_link_recv_limit(LIMIT);
    let mut listener = nodelink::bind("127.0.0.1:0", config).await.unwrap();
    let tcp = tokio::net::TcpStream::connect(listener.local_addr())
        .await
        .unwrap();
    let mut raw = RawPeer::new(tcp);
    let (server, _) = tokio::join!(listener.accept(), raw.handshake(nodelink::DEFAULT_VERSION));
    let server = server.unwrap();
    // Lightweight requests nobody receives, until the link holds back.
    let chunk = vec![9u8; 60 << 10];
    let mut i = 0u32;
    while server.stats().rx_queued < LIMIT as u64 {
        // Whole packets only; the kernel's buffers take far more than the limit.
        within("a request", raw.send(2 * i + 1, 0x0003, &chunk)).await;
        i += 1;
        assert!(i < 64, "the link never held back");
        tokio::task::yield_now().await;
    }
    // More than the link will take, so that it surely holds back with bytes waiting in
    // the kernel; then its intake stops.
    for j in 0..8 {
        within("a request", raw.send(2 * (i + j) + 1, 0x0003, &chunk)).await;
    }
    within("the link holds back", async {
        let mut last = server.stats().bytes_in;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = server.stats().bytes_in;
            if now == last {
                break;
            }
            last = now;
        }
    })
    .await;
    // The peer resets the connection (SO_LINGER 0).
    socket2::SockRef::from(&raw.io)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(raw);
    within("the held-back link ends", server.closed()).await;
    assert_eq!(server.stats().rx_queued, 0);
}

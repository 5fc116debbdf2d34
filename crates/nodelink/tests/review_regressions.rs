//! Regression tests for defects found in review: each failed before its fix.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use nodelink::{Config, ErrorMessage, Link, Message, PeerFlowControl, Ping, Pong, Role};

/// A sender capped by the start-up window (the peer has not answered our offer yet) is
/// woken when the peer's answer shows it takes no credit. The peer is a raw NEO/go-like
/// server, so nothing reaches the link before the test says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_waiting_for_the_start_up_window_wake_when_the_peer_answers_the_offer() {
    let (client, mut raw) = raw_and_link(Role::Client, Config::default(), 1 << 20).await;
    let offer = within("the client's offer", raw.read_packet())
        .await
        .unwrap()
        .unwrap();
    assert!(offer.is_control(), "first packet is the offer: {offer:?}");
    let conn = Arc::new(client.open().unwrap());
    conn.send_packet(1, Bytes::from(vec![0u8; 40 << 10]))
        .await
        .unwrap();
    // 80 KiB outstanding is over the 64 KiB start-up window: this send waits.
    let mut second = Box::pin({
        let conn = conn.clone();
        async move { conn.send_packet(1, Bytes::from(vec![0u8; 40 << 10])).await }
    });
    assert!(poll_once(&mut second).await.is_pending());
    assert_eq!(client.peer_flow_control(), PeerFlowControl::Unknown);
    // NEO/go's answer to an unknown id of its own parity: "connection closed".
    raw.write_all(&closed_reply(offer.id)).await;
    within("the waiting send completes", second).await.unwrap();
    assert_eq!(client.peer_flow_control(), PeerFlowControl::Off);
}

/// A peer that never sends anything (here: nodelink with flow control off, only reading)
/// cannot keep our senders at the start-up window for ever: after the handshake timeout
/// it is treated as a peer without flow control.
#[tokio::test(start_paused = true)]
async fn silent_peer_without_flow_control_does_not_cap_senders_for_ever() {
    let config = Config::default().with_handshake_timeout(Duration::from_secs(2));
    let (client, server) =
        pair_over(1 << 20, config, Config::default().with_flow_control(false)).await;
    let reader = tokio::spawn(async move {
        let conn = server.accept().await.unwrap();
        let mut got = 0;
        while got < 200 {
            conn.recv().await.unwrap();
            got += 1;
        }
    });
    let conn = client.open().unwrap();
    for _ in 0..200 {
        conn.send_packet(1, Bytes::from(vec![0u8; 1024]))
            .await
            .unwrap();
    }
    assert_eq!(client.peer_flow_control(), PeerFlowControl::Off);
    within("the reader got everything", reader).await.unwrap();
}

/// After the peer closed its receive side, our sends on that connection keep going (each
/// answered "connection closed") instead of waiting for credit that would never come.
#[tokio::test]
async fn sends_do_not_hang_after_the_peer_closed_its_receive_side() {
    let (client, server) = pair(Config::default().with_conn_recv_budget(64 << 10)).await;
    warm_up(&client, &server).await;
    let conn = client.open().unwrap();
    conn.send(&Ping).await.unwrap();
    let accepted = within("accept", server.accept()).await.unwrap();
    accepted.close_recv();
    within("200 KiB more on the closed connection", async {
        for _ in 0..200 {
            conn.send_packet(1, Bytes::from(vec![0u8; 1024]))
                .await
                .unwrap();
        }
    })
    .await;
    let reply = within("a reply", conn.recv()).await.unwrap();
    assert_eq!(reply.code, ErrorMessage::CODE);
}

/// close_accept refuses queued connections opened by requests, never by answers.
#[tokio::test]
async fn close_accept_never_answers_an_answer() {
    let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    raw.send(1, Pong::CODE, b"").await;
    within("queued", async {
        while link.stats().conns_accepted < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    link.close_accept();
    raw.send(3, Ping::CODE, b"").await;
    let p = within("the only reply", raw.next_packet()).await;
    assert_eq!(p.wire, refused_reply(3));
}

/// recv1_stateless serves requests pipelined on one id in order, as separate requests.
#[tokio::test]
async fn stateless_server_serves_pipelined_requests_in_order() {
    let (client, server) = pair(Config::default()).await;
    let conn = client.open().unwrap();
    for i in 0..3u8 {
        conn.send_packet(0x100, Bytes::from(vec![i])).await.unwrap();
    }
    within("all three queued", async {
        while (server.stats().rx_queued as usize) < 3 * 65 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    for i in 0..3u8 {
        let req = within("recv1", server.recv1_stateless()).await.unwrap();
        assert_eq!(&req.payload()[..], &[i]);
        let payload = req.payload().clone();
        req.reply_packet(0x8100, payload).await.unwrap();
    }
    for i in 0..3u8 {
        let answer = within("answer", conn.recv()).await.unwrap();
        assert_eq!((answer.code, &answer.payload[..]), (0x8100, &[i][..]));
    }
}

/// Credit frames are read even while the link-wide receive limit holds reading back.
#[tokio::test]
async fn credit_is_processed_while_the_receive_limit_is_reached() {
    let limited = Config::default()
        .with_conn_recv_budget(64 << 10)
        .with_link_recv_limit(100 << 10);
    let (a, b) = pair_over(
        1 << 20,
        limited,
        Config::default().with_conn_recv_budget(64 << 10),
    )
    .await;
    warm_up(&a, &b).await;
    let b2 = b.clone();
    tokio::spawn(async move {
        while let Ok(c) = b2.accept().await {
            tokio::spawn(async move { while c.recv().await.is_ok() {} });
        }
    });
    // b fills a's receive limit with two connections nobody on a reads...
    let x = b.open().unwrap();
    x.send_packet(1, Bytes::from(vec![0u8; 60 << 10]))
        .await
        .unwrap();
    let y = b.open().unwrap();
    y.send_packet(1, Bytes::from(vec![0u8; 60 << 10]))
        .await
        .unwrap();
    let _held = within("accept x", a.accept()).await.unwrap();
    // ...and a streams to b, which needs b's credit to come through.
    let z = a.open().unwrap();
    within("a's stream needs b's credit", async {
        for _ in 0..200 {
            z.send_packet(1, Bytes::from(vec![0u8; 1024]))
                .await
                .unwrap();
        }
    })
    .await;
}

/// A send cancelled after the link failed does not keep the stream open.
#[tokio::test]
async fn cancelled_send_after_link_failure_releases_the_stream() {
    let (a, b) = tokio::io::duplex(64 << 10);
    let mut raw = RawPeer::new(b);
    let (link, _) = tokio::join!(
        Link::handshake(a, Role::Client, Config::default()),
        raw.handshake(6)
    );
    let link = link.unwrap();
    let conn = link.open().unwrap();
    let mut send = Box::pin(conn.send_packet(1, Bytes::from(vec![0u8; 1 << 20])));
    assert!(poll_once(&mut send).await.is_pending(), "mid-write");
    // The peer reads the handshake leftovers and goes away: the link fails.
    drop(raw);
    within("link ends", link.closed()).await;
    drop(send);
    // Our end of the pipe is gone: a new pipe's peer end would see EOF; here, the link's
    // counters stop and a later send fails at once.
    let e = conn
        .send_packet(1, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(e.is_link_gone(), "{e}");
}

/// Closing a link whose peer stopped reading returns after the linger, even while the
/// writer (or a sender) is blocked on the full socket; a serve loop waiting for its links
/// to close therefore cannot hang on such a peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_bounded_by_the_linger_when_the_peer_never_reads() {
    let config = Config::default().with_close_linger(std::time::Duration::from_millis(100));
    let (link, mut raw) = raw_and_link(Role::Server, config, 16 << 10).await;
    // Packets on ids of the server's parity that it never opened: each is answered
    // "connection closed" by the writer task, which blocks once the pipe is full.
    for i in 1..3000u32 {
        raw.send(2 * i, 2, b"").await;
    }
    within("the replies pile up", async {
        while link.stats().packets_in < 2999 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    let conn = link.open().unwrap();
    let sending = tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![1u8; 1 << 20]);
        for _ in 0..8 {
            if conn.send_packet(0x0300, chunk.clone()).await.is_err() {
                break;
            }
        }
    });
    within("close returns", link.close()).await;
    within("the blocked sender is released", sending)
        .await
        .unwrap();
    drop(raw);
}

/// A stream that, like TLS, takes bytes on write and sends them on only when flushed, and
/// whose every other flush is not ready at once (as rustls's when the socket is full).
struct FlushToSend {
    inner: tokio::io::DuplexStream,
    held: Vec<u8>,
    flushes: usize,
}

impl tokio::io::AsyncRead for FlushToSend {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for FlushToSend {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.held.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        this.flushes += 1;
        if this.flushes % 2 == 1 && !this.held.is_empty() {
            // Not now: the caller is woken, and must flush again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        while !this.held.is_empty() {
            match std::pin::Pin::new(&mut this.inner).poll_write(cx, &this.held) {
                Poll::Ready(Ok(n)) => {
                    this.held.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        std::pin::Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request (and an answer) written at once by its caller, whose flush was not ready
/// then, still leaves: the writer task finishes the flush. Without it, the bytes stayed in
/// the stream's buffer and ask1 waited forever on a quiet link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_flush_was_not_ready_is_flushed_by_the_writer() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let wrap = |inner| FlushToSend {
        inner,
        held: Vec::new(),
        flushes: 0,
    };
    let (client, server) = tokio::try_join!(
        Link::handshake(wrap(a), Role::Client, Config::default()),
        Link::handshake(wrap(b), Role::Server, Config::default()),
    )
    .unwrap();
    tokio::spawn(async move {
        while let Ok(req) = server.recv1().await {
            let _ = req.reply(&Pong).await;
        }
    });
    for _ in 0..20 {
        let _: Pong = within("an answer", client.ask1(&Ping)).await.unwrap();
    }
}

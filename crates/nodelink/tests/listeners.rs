//! Listeners are `Stream`s of handshaked links (docs/CONVENTIONS.md, rule 5): links come
//! out in the order their handshakes finish, and a client that never handshakes holds
//! nobody up.

use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use nodelink::{Config, Link, Ping, Pong};

/// Upper bound for each test's work.
const LIMIT: Duration = Duration::from_secs(60);

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

/// Answers one ping on `link` and checks the round trip from `client`.
async fn round_trip(server: Link, client: Link) {
    let answer = tokio::spawn(async move {
        let r = server.recv1().await.unwrap();
        r.reply(&Pong).await.unwrap();
        server
    });
    let _: Pong = client.ask1(&Ping).await.unwrap();
    answer.await.unwrap();
}

#[tokio::test]
async fn a_tcp_listener_is_a_stream_of_links() {
    tokio::time::timeout(LIMIT, async {
        let mut listener = nodelink::bind("127.0.0.1:0", Config::default())
            .await
            .unwrap();
        let addr = listener.local_addr();
        // A silent client first: its handshake never finishes, and nobody waits for it.
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        for _ in 0..3 {
            let dial = tokio::spawn(nodelink::connect(addr, Config::default()));
            let server = next(&mut listener).await.unwrap().unwrap();
            let client = dial.await.unwrap().unwrap();
            round_trip(server, client).await;
        }
    })
    .await
    .unwrap();
}

#[cfg(feature = "kcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kcp_listener_is_a_stream_of_links_and_of_sessions() {
    use nodelink::kcp::{bind_kcp, connect_kcp, KcpConfig, Mode};
    tokio::time::timeout(LIMIT, async {
        let session = KcpConfig::default().with_mode(Mode::Fast3);
        let mut listener = bind_kcp("127.0.0.1:0", session.clone(), Config::default())
            .await
            .unwrap();
        let addr = listener.local_addr();
        for _ in 0..2 {
            let dial = tokio::spawn(connect_kcp(addr, session.clone(), Config::default()));
            let server = next(&mut listener).await.unwrap().unwrap();
            let client = dial.await.unwrap().unwrap();
            round_trip(server, client).await;
        }
        // The KCP listener underneath is a stream of sessions too.
        let mut raw = nodelink_kcp::KcpListener::bind("127.0.0.1:0", session.clone())
            .await
            .unwrap();
        let raw_addr = raw.local_addr();
        let mut client = nodelink_kcp::KcpStream::connect(raw_addr, session)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut client, b"hi")
            .await
            .unwrap();
        let (_stream, peer) = next(&mut raw).await.unwrap().unwrap();
        assert_eq!(peer, client.local_addr());
    })
    .await
    .unwrap();
}

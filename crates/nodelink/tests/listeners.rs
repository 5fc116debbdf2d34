//! Listeners are `Stream`s of handshaked links (docs/CONVENTIONS.md, rule 5): links come
//! out in the order their handshakes finish, and a client that never handshakes holds
//! nobody up.

use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use std::task::Poll;

use nodelink::{Config, Link, Ping, Pong, Role};

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

/// At its link limit a listener stops accepting: the next client waits (in the kernel's
/// backlog) until a link ends, then is served; nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_at_its_link_limit_accepts_again_when_a_link_ends() {
    tokio::time::timeout(LIMIT, async {
        let config = Config::default().with_max_links(2);
        let mut listener = nodelink::bind("127.0.0.1:0", config).await.unwrap();
        let addr = listener.local_addr();
        let mut held = Vec::new();
        for _ in 0..2 {
            let dial = tokio::spawn(nodelink::connect(addr, Config::default()));
            let server = listener.accept().await.unwrap();
            held.push((server, dial.await.unwrap().unwrap()));
        }
        assert_eq!(listener.links(), 2);
        // A third client is in the kernel's backlog (its connect returned), so a listener
        // that accepted would take it at the first poll and start its handshake.
        let third = tokio::net::TcpStream::connect(addr).await.unwrap();
        for _ in 0..5 {
            let polled = std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await;
            assert!(polled.is_pending(), "a link past the limit");
        }
        assert!(
            format!("{listener:?}").contains("pending: 0"),
            "{listener:?}"
        );
        assert_eq!(listener.links(), 2);
        // One link ends: its place goes to the waiting client.
        let (server, client) = held.pop().unwrap();
        server.close().await;
        drop(client);
        let dial = tokio::spawn(Link::handshake(third, Role::Client, Config::default()));
        let server = listener.accept().await.unwrap();
        let client = dial.await.unwrap().unwrap();
        assert_eq!(listener.links(), 2);
        round_trip(server, client).await;
    })
    .await
    .expect("test timed out");
}

/// A client whose first bytes were in when it was accepted is not evicted by silent
/// sockets arriving after it: they push out their own kind, the oldest silent one first.
/// (A busy server that has not run this handshake yet must not cost a real client its
/// place to a flood of sockets that never say anything.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_evict_each_other_not_a_client_that_spoke() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(LIMIT, async {
        let config = Config::default().with_handshake_timeout(Duration::from_secs(3600));
        let mut listener = nodelink::bind("127.0.0.1:0", config).await.unwrap();
        let addr = listener.local_addr();
        // Half of a version word, in the kernel before the listener takes the socket (on
        // loopback a write lands in the peer's buffer at once).
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        let version = nodelink::DEFAULT_VERSION.to_be_bytes();
        slow.write_all(&version[..2]).await.unwrap();
        let (links_tx, mut links) = tokio::sync::mpsc::unbounded_channel();
        let serving = tokio::spawn(async move {
            while let Ok(link) = listener.accept().await {
                let _ = links_tx.send(link);
            }
        });
        // Then 300 silent sockets: more than may be pending.
        let mut silent = Vec::new();
        for _ in 0..300 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // A good client gets in meanwhile, so the listener has taken the 300 in.
        let client = nodelink::connect(addr, Config::default()).await.unwrap();
        let server = links.recv().await.unwrap();
        round_trip(server, client).await;
        // The slow client finishes its handshake: it was kept.
        slow.write_all(&version[2..]).await.unwrap();
        let mut theirs = [0u8; 4];
        slow.read_exact(&mut theirs).await.unwrap();
        assert_eq!(theirs, version);
        let _slow_link = links.recv().await.unwrap();
        serving.abort();
        drop(silent);
    })
    .await
    .expect("test timed out");
}

/// More silent sockets than handshakes may run at once: each new connection evicts the
/// oldest handshake under way, so a good client is served while they stay open (the
/// silent ones would otherwise hold every slot for the whole handshake timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_cannot_starve_a_good_client() {
    tokio::time::timeout(LIMIT, async {
        // A handshake timeout longer than the test: only eviction can make room.
        let config = Config::default().with_handshake_timeout(Duration::from_secs(3600));
        let mut listener = nodelink::bind("127.0.0.1:0", config).await.unwrap();
        let addr = listener.local_addr();
        // The listener accepts as the sockets come (the kernel's backlog is small).
        let (links_tx, mut links) = tokio::sync::mpsc::unbounded_channel();
        let serving = tokio::spawn(async move {
            while let Ok(link) = listener.accept().await {
                let _ = links_tx.send(link);
            }
        });
        let mut silent = Vec::new();
        for _ in 0..300 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let client = nodelink::connect(addr, Config::default()).await.unwrap();
        let server = links.recv().await.unwrap();
        round_trip(server, client).await;
        serving.abort();
        drop(silent);
    })
    .await
    .expect("test timed out");
}

/// At the link limit, a waiting client replaces a link whose peer has said nothing since
/// its handshake (a peer holding links open to lock others out), not one in use: the
/// client is served, the silent peer's socket is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_link_limit_a_new_client_replaces_a_link_that_never_spoke() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(LIMIT, async {
        let config = Config::default().with_max_links(2);
        let mut listener = nodelink::bind("127.0.0.1:0", config).await.unwrap();
        let addr = listener.local_addr();
        // A link in use (a nodelink client: it negotiates right after the handshake),
        // and a raw peer that handshakes and then says nothing.
        let dial = tokio::spawn(nodelink::connect(addr, Config::default()));
        let used_server = listener.accept().await.unwrap();
        let used_client = dial.await.unwrap().unwrap();
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        silent
            .write_all(&nodelink::DEFAULT_VERSION.to_be_bytes())
            .await
            .unwrap();
        let silent_server = listener.accept().await.unwrap();
        let mut version = [0u8; 4];
        silent.read_exact(&mut version).await.unwrap();
        assert_eq!(listener.links(), 2);
        // A third client: the listener ends the silent link for it (once that link has
        // been quiet for a second) and serves it.
        let (links_tx, mut links) = tokio::sync::mpsc::unbounded_channel();
        let serving = tokio::spawn(async move {
            while let Ok(link) = listener.accept().await {
                let _ = links_tx.send(link);
            }
        });
        let newcomer = nodelink::connect(addr, Config::default()).await.unwrap();
        let server = links.recv().await.unwrap();
        round_trip(server, newcomer).await;
        // The silent peer's socket was closed; its link on our side ended.
        let mut rest = Vec::new();
        let _ = silent.read_to_end(&mut rest).await;
        assert!(silent_server.is_closed());
        // The link in use is untouched.
        assert!(!used_server.is_closed());
        round_trip(used_server, used_client).await;
        serving.abort();
    })
    .await
    .expect("test timed out");
}

/// A client accepted before its first bytes came, which then sends them, counts as having
/// spoken: silent sockets arriving after it push out their own kind, not it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_speaks_after_it_was_accepted_is_not_evicted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(LIMIT, async {
        let config = Config::default().with_handshake_timeout(Duration::from_secs(3600));
        let mut listener = nodelink::bind("127.0.0.1:0", config).await.unwrap();
        let addr = listener.local_addr();
        let (links_tx, mut links) = tokio::sync::mpsc::unbounded_channel();
        let serving = tokio::spawn(async move {
            while let Ok(link) = listener.accept().await {
                let _ = links_tx.send(link);
            }
        });
        // Accepted while silent: the server's version word comes, which says the
        // listener took the socket and started its handshake.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut theirs = [0u8; 4];
        slow.read_exact(&mut theirs).await.unwrap();
        // Then half of its version word; the rest waits.
        let version = nodelink::DEFAULT_VERSION.to_be_bytes();
        slow.write_all(&version[..2]).await.unwrap();
        // A good client's whole handshake after it: the server has read the slow
        // client's half word by then if it reads in order of arrival; wait for the good
        // link, then flood.
        let client = nodelink::connect(addr, Config::default()).await.unwrap();
        let server = links.recv().await.unwrap();
        round_trip(server, client).await;
        let mut silent = Vec::new();
        for _ in 0..300 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let client = nodelink::connect(addr, Config::default()).await.unwrap();
        let server = links.recv().await.unwrap();
        round_trip(server, client).await;
        // The slow client finishes its handshake: it was kept.
        slow.write_all(&version[2..]).await.unwrap();
        let _slow_link = links.recv().await.unwrap();
        assert_eq!(theirs, version);
        serving.abort();
        drop(silent);
    })
    .await
    .expect("test timed out");
}

/// A link limit above what the open-file limit leaves is said at bind time: near it,
/// accepting would fail for want of descriptors.
#[tokio::test]
async fn a_link_limit_beyond_the_open_file_limit_is_warned_about() {
    let logs = nodelink_testkit::Captured::default();
    let _guard = logs.install();
    let fits = nodelink::default_max_links();
    let _ok = nodelink::bind("127.0.0.1:0", Config::default().with_max_links(fits))
        .await
        .unwrap();
    assert!(logs.find("WARN", &["max_links"]).is_empty());
    let _over = nodelink::bind("127.0.0.1:0", Config::default().with_max_links(fits + 1))
        .await
        .unwrap();
    logs.expect_one("WARN", &["max_links", "open-file limit"]);
}

//! Links over KCP sessions on loopback: lightweight round trips and a full connection
//! carrying 1 MB each way.
#![cfg(feature = "kcp")]

use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use nodelink::kcp::{bind_kcp, connect_kcp, KcpConfig, Mode};
use nodelink::{Config, ErrorKind, Ping, Pong};

/// Upper bound for each test's work.
const LIMIT: Duration = Duration::from_secs(60);

fn session() -> KcpConfig {
    KcpConfig::default().with_mode(Mode::Fast3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask1_recv1_round_trips() {
    tokio::time::timeout(LIMIT, async {
        let mut listener = bind_kcp("127.0.0.1:0", session(), Config::default())
            .await
            .unwrap();
        let addr = listener.local_addr();
        let server = tokio::spawn(async move {
            let link = listener.accept().await.unwrap();
            for _ in 0..100 {
                let r = link.recv1().await.unwrap();
                r.reply(&Pong).await.unwrap();
            }
            (link, listener.failed_handshakes())
        });
        let link = connect_kcp(addr, session(), Config::default())
            .await
            .unwrap();
        assert_eq!(link.remote_addr(), Some(addr));
        for _ in 0..100 {
            let _: Pong = link.ask1(&Ping).await.unwrap();
        }
        let (slink, failed) = server.await.unwrap();
        assert_eq!(failed, 0);
        assert_eq!(link.stats().conns_opened, 100);
        assert_eq!(slink.stats().conns_accepted, 100);
        assert_eq!(slink.local_addr(), Some(addr));
        link.close().await;
        slink.close().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_conn_exchange_of_1_mb() {
    tokio::time::timeout(LIMIT, async {
        let mut listener = bind_kcp("127.0.0.1:0", session(), Config::default())
            .await
            .unwrap();
        let addr = listener.local_addr();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let data = Bytes::from(data);
        let expected = data.clone();
        let server = tokio::spawn(async move {
            let link = listener.accept().await.unwrap();
            let conn = link.accept().await.unwrap();
            let mut got = Vec::new();
            while got.len() < expected.len() {
                let p = conn.recv().await.unwrap();
                assert_eq!(p.code, 10);
                got.extend_from_slice(&p.payload);
            }
            assert_eq!(got, expected);
            // Everything back, in 100 kB packets.
            for chunk in got.chunks(100_000) {
                conn.send_packet(0x800a, Bytes::copy_from_slice(chunk))
                    .await
                    .unwrap();
            }
            link
        });
        let link = connect_kcp(addr, session(), Config::default())
            .await
            .unwrap();
        let conn = link.open().unwrap();
        for chunk in data.chunks(64 << 10) {
            conn.send_packet(10, data.slice_ref(chunk)).await.unwrap();
        }
        let mut back = Vec::new();
        while back.len() < data.len() {
            let p = conn.recv().await.unwrap();
            assert_eq!(p.code, 0x800a);
            back.extend_from_slice(&p.payload);
        }
        assert_eq!(back, data);
        let slink = server.await.unwrap();
        link.close().await;
        slink.close().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn setup_failures_are_connect_errors() {
    let e = connect_kcp("not-an-address", session(), Config::default())
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Connect), "{e}");
    let bad = KcpConfig::default().with_mtu(9000);
    let e = bind_kcp("127.0.0.1:0", bad, Config::default())
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Connect), "{e}");
}

#[tokio::test]
async fn a_silent_peer_is_a_handshake_timeout_naming_the_likely_causes() {
    // A UDP socket that never answers: KCP has no handshake, so the link's fails.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config = Config::default().with_handshake_timeout(Duration::from_millis(300));
    let e = connect_kcp(silent.local_addr().unwrap(), session(), config)
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Handshake), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("no answer within 300ms: nothing came back"),
        "{text}"
    );
    assert!(text.contains("another key or cipher"), "{text}");
    assert_eq!(std::io::Error::from(e).kind(), std::io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn a_dial_to_nothing_says_nothing_listens() {
    // A port that was just free: the host answers our datagrams "port unreachable".
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let config = Config::default().with_handshake_timeout(Duration::from_millis(500));
    let e = connect_kcp(port, session(), config).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Handshake), "{e}");
    assert!(e.to_string().contains("nothing is listening there"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cipher_names_the_cipher() {
    use nodelink::kcp::CipherKind;
    tokio::time::timeout(LIMIT, async {
        let quick = Config::default().with_handshake_timeout(Duration::from_millis(500));
        let aes = session().with_crypt(CipherKind::Aes);
        let _listener = bind_kcp("127.0.0.1:0", aes, quick.clone()).await.unwrap();
        let addr = _listener.local_addr();
        let salsa = session().with_crypt(CipherKind::Salsa20);
        let e = connect_kcp(addr, salsa, quick).await.unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Handshake), "{e}");
        assert!(e.to_string().contains("key or cipher"), "{e}");
    })
    .await
    .expect("test timed out");
}

/// KCP has no FIN: a closing nodelink side says BYE (flow-control extension), so an idle
/// peer learns of the close at once instead of never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_peer_notices_a_close() {
    tokio::time::timeout(LIMIT, async {
        let mut listener = bind_kcp("127.0.0.1:0", session(), Config::default())
            .await
            .unwrap();
        let addr = listener.local_addr();
        let (server, client) = tokio::join!(async { listener.accept().await.unwrap() }, async {
            connect_kcp(addr, session(), Config::default())
                .await
                .unwrap()
        });
        // Both sides agree on the extension (the server answered the offer).
        let _: Pong = {
            let s = server.clone();
            tokio::spawn(async move { s.recv1().await.unwrap().reply(&Pong).await.unwrap() });
            client.ask1(&Ping).await.unwrap()
        };
        client.close().await;
        // The server was idle (nothing outstanding, no keepalive): only BYE can tell it.
        let e = server.recv1().await.unwrap_err();
        assert!(e.is_link_gone(), "{e}");
        assert!(
            e.source()
                .is_some_and(|s| s.to_string().contains("peer closed the link")),
            "{e}"
        );
        assert!(server.is_closed());
    })
    .await
    .expect("test timed out");
}

/// A peer that vanishes (every datagram lost from now on) is a dead peer, by kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_peer_is_a_dead_peer() {
    use nodelink_testkit::{Impairment, UdpRelay};
    tokio::time::timeout(LIMIT, async {
        let dies = session().with_dead_timeout(Duration::from_secs(1));
        let mut listener = bind_kcp("127.0.0.1:0", dies.clone(), Config::default())
            .await
            .unwrap();
        let relay = UdpRelay::start(listener.local_addr(), Impairment::default())
            .await
            .unwrap();
        let (server, client) = tokio::join!(async { listener.accept().await.unwrap() }, async {
            connect_kcp(relay.local_addr(), dies, Config::default())
                .await
                .unwrap()
        });
        tokio::spawn(async move {
            while let Ok(r) = server.recv1().await {
                let _ = r.reply(&Pong).await;
            }
        });
        let _: Pong = client.ask1(&Ping).await.unwrap();
        relay.set_impairment(Impairment {
            drop: 1.0,
            ..Impairment::default()
        });
        let e = client.ask1::<Ping, Pong>(&Ping).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeadPeer, "{e}");
        assert!(e.is_link_gone());
    })
    .await
    .expect("test timed out");
}

/// One serve loop for every listener: the KCP one here, the TCP one in tests/calls.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_listener_serves_links_over_kcp() {
    use nodelink::{Handlers, LinkListener};
    tokio::time::timeout(LIMIT, async {
        let listener = bind_kcp("127.0.0.1:0", session(), Config::default())
            .await
            .unwrap();
        let addr = LinkListener::local_addr(&listener);
        let stop = tokio_util::sync::CancellationToken::new();
        let serving = tokio::spawn({
            let stop = stop.clone();
            let handlers = Handlers::new().on(|_: Ping| async { Ok(Pong) });
            async move { handlers.serve_listener(listener, &stop).await }
        });
        let link = connect_kcp(addr, session(), Config::default())
            .await
            .unwrap();
        let _: Pong = link.call(&Ping).await.unwrap();
        stop.cancel();
        serving.await.unwrap().unwrap();
        // The server closed its link: the client hears of it (BYE), without a call.
        link.closed().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_keys_fail_the_handshake() {
    tokio::time::timeout(LIMIT, async {
        let quick = Config::default().with_handshake_timeout(Duration::from_millis(500));
        let mut listener = bind_kcp("127.0.0.1:0", session(), quick.clone())
            .await
            .unwrap();
        let addr = listener.local_addr();
        let e = connect_kcp(addr, session().with_key("another key"), quick.clone())
            .await
            .unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Handshake), "{e}");
        assert!(e.to_string().contains("another key or cipher"), "{e}");
        // A good client still gets through.
        let accepting = async { listener.accept().await.unwrap() };
        let dialing = async { connect_kcp(addr, session(), quick).await.unwrap() };
        let (s, c) = tokio::join!(accepting, dialing);
        tokio::spawn(async move {
            while let Ok(r) = s.recv1().await {
                let _ = r.reply(&Pong).await;
            }
        });
        let _: Pong = c.ask1(&Ping).await.unwrap();
    })
    .await
    .expect("test timed out");
}

//! Smoke tests: the main flows end to end.
use bytes::Bytes;
use nodelink::{Config, ErrorKind, Link, Ping, Pong, Role};

async fn pair(config: Config) -> (Link, Link) {
    let (a, b) = tokio::io::duplex(1 << 16);
    tokio::try_join!(
        Link::handshake(a, Role::Client, config.clone()),
        Link::handshake(b, Role::Server, config),
    )
    .unwrap()
}

#[tokio::test]
async fn ask1_recv1_round_trip_over_tcp() {
    let mut l = nodelink::bind("127.0.0.1:0", Config::default())
        .await
        .unwrap();
    let addr = l.local_addr();
    let server = tokio::spawn(async move {
        let link = l.accept().await.unwrap();
        for _ in 0..100 {
            let r = link.recv1().await.unwrap();
            r.reply(&Pong).await.unwrap();
        }
        link
    });
    let link = nodelink::connect(addr, Config::default()).await.unwrap();
    for _ in 0..100 {
        let _: Pong = link.ask1(&Ping).await.unwrap();
    }
    let slink = server.await.unwrap();
    assert_eq!(link.stats().conns_opened, 100);
    assert_eq!(slink.stats().conns_accepted, 100);
    assert_eq!(link.peer_flow_control(), nodelink::PeerFlowControl::On);
    link.close().await;
    let e = slink.accept().await.unwrap_err();
    assert!(e.is_link_gone(), "{e}");
}

#[tokio::test]
async fn full_conn_exchange_and_big_payloads() {
    let (c, s) = pair(Config::default()).await;
    let conn = c.open().unwrap();
    let big = Bytes::from(vec![7u8; 5 << 20]);
    conn.send_packet(10, big.clone()).await.unwrap();
    let sc = s.accept().await.unwrap();
    let p = sc.recv().await.unwrap();
    assert_eq!(p.code, 10);
    assert_eq!(p.payload, big);
    // 5 MB on one connection is more than the 4 MiB window: the sender must wait for
    // credit while the receiver reads, so both run at once.
    let send = async {
        for i in 0..50u8 {
            sc.send_packet(0x800a, Bytes::from(vec![i; 100_000]))
                .await
                .unwrap();
        }
    };
    let recv = async {
        for i in 0..50u8 {
            let p = conn.recv().await.unwrap();
            assert_eq!(p.payload[0], i);
        }
    };
    tokio::join!(send, recv);
    conn.close();
    let e = conn.recv().await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::ConnectionClosed), "{e}");
}

/// A failed dial or bind says which address it was: the caller may not have it at hand
/// (a name that resolved, an address from a configuration file).
#[tokio::test]
async fn dial_and_bind_failures_name_the_address() {
    // A port nothing listens on: bound, then released.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = nodelink::connect(free, Config::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert!(e.to_string().contains(&format!("dial {free}")), "{e}");
    assert!(e.io_error().is_some(), "{e}");

    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let e = nodelink::bind(addr, Config::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert!(e.to_string().contains(&format!("listen {addr}")), "{e}");

    let e = nodelink::connect("no-such-host.invalid:1", Config::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
}

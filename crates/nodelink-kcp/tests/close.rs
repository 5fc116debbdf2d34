//! `KcpStream::close`: when it returns, the peer holds everything written (the path is cut
//! right after, and the peer still reads it all); it can be called twice; writing
//! afterwards fails; and on a dead path it gives up after the linger with `TimedOut`.

use std::time::Duration;

use nodelink_kcp::{Config, KcpListener, KcpStream};
use nodelink_testkit::{seeded_bytes, within_for, Impairment, UdpRelay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOUND: Duration = Duration::from_secs(20);

/// A listener, and a client that reaches it through a relay the test can cut.
async fn through_relay(cfg: Config) -> (KcpListener, KcpStream, UdpRelay) {
    let listener = KcpListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
    let relay = UdpRelay::start(listener.local_addr(), Impairment::default())
        .await
        .unwrap();
    let client = KcpStream::connect(relay.local_addr(), cfg).await.unwrap();
    (listener, client, relay)
}

fn cut() -> Impairment {
    Impairment {
        drop: 1.0,
        ..Impairment::default()
    }
}

#[tokio::test]
async fn close_returns_once_the_peer_holds_everything() {
    let (mut listener, mut client, relay) = through_relay(Config::default()).await;
    let data = seeded_bytes(3, 200_000);
    client.write_all(&data).await.unwrap();
    let (mut server, _) = within_for(BOUND, "accept", listener.accept())
        .await
        .unwrap();
    within_for(BOUND, "close", client.close()).await.unwrap();
    // Nothing passes any more: what the server reads now, it already held.
    relay.set_impairment(cut());
    let mut got = vec![0u8; data.len()];
    within_for(BOUND, "the peer reads it all", server.read_exact(&mut got))
        .await
        .unwrap();
    assert!(got == data, "the peer got other bytes");
    within_for(BOUND, "close again", client.close())
        .await
        .unwrap();
    assert!(
        client.write_all(b"more").await.is_err(),
        "a write after close"
    );
}

#[tokio::test]
async fn close_on_a_dead_path_gives_up_after_the_linger() {
    let cfg = Config::default().with_linger(Duration::from_millis(300));
    let (_listener, mut client, relay) = through_relay(cfg).await;
    relay.set_impairment(cut());
    client.write_all(&seeded_bytes(4, 10_000)).await.unwrap();
    let e = within_for(BOUND, "close", client.close())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), nodelink_kcp::ErrorKind::TimedOut, "{e}");
}

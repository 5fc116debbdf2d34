//! `KcpStream::close`: what was written reaches the peer before it returns, it can be
//! called twice, and writing afterwards fails.

use std::time::Duration;

use nodelink_kcp::{Config, KcpListener, KcpStream};
use nodelink_testkit::{seeded_bytes, within_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn close_returns_once_everything_written_was_acknowledged() {
    let bound = Duration::from_secs(20);
    let mut listener = KcpListener::bind("127.0.0.1:0", Config::default())
        .await
        .unwrap();
    let data = seeded_bytes(3, 200_000);
    let mut client = KcpStream::connect(listener.local_addr(), Config::default())
        .await
        .unwrap();
    client.write_all(&data).await.unwrap();
    let (mut server, _) = within_for(bound, "accept", listener.accept())
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; 200_000];
        server.read_exact(&mut got).await.map(|_| got)
    });
    within_for(bound, "close", client.close()).await.unwrap();
    within_for(bound, "close again", client.close())
        .await
        .unwrap();
    assert!(
        client.write_all(b"more").await.is_err(),
        "a write after close"
    );
    let got = within_for(bound, "the peer reads it all", reader)
        .await
        .unwrap()
        .unwrap();
    assert!(got == data, "the peer got other bytes");
}

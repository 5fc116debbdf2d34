//! What an operator sees when a KCP peer has the wrong key or cipher: a warning naming the
//! peer (kcptun's most frequent support question is a tunnel that hangs silently), once per
//! client session and within the listener's budget of peer-caused warnings. Each test runs
//! on a current-thread runtime, so the sessions' tasks log into the captured sink.

use std::time::Duration;

use nodelink_kcp::crypt::CipherKind;
use nodelink_kcp::{Config, KcpListener, KcpStream};
use nodelink_testkit::{within_for, Captured};
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;

fn keyed(key: &str) -> Config {
    Config::default().with_crypt(CipherKind::Aes).with_key(key)
}

const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_listener_warns_about_datagrams_with_the_wrong_key() {
    let log = Captured::default();
    let _guard = log.install();
    let listener = KcpListener::bind("127.0.0.1:0", keyed("right"))
        .await
        .unwrap();
    let mut client = KcpStream::connect(listener.local_addr(), keyed("wrong"))
        .await
        .unwrap();
    let from = format!(":{}", client.local_addr().port());
    within_for(BOUND, "the listener counts bad checksums", async {
        loop {
            client.write_all(b"hello").await.unwrap();
            client.flush().await.unwrap();
            if listener.stats().in_csum_errors >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let warned = log.find("WARN", &["authentication", "wrong key or cipher", &from]);
    assert!(
        !warned.is_empty(),
        "no warning; log:\n{}",
        log.lines().join("\n")
    );
    assert!(
        warned.len() <= nodelink_driver::PER_SECOND as usize * 2 + 2,
        "warnings not rate-limited: {}",
        warned.len()
    );
}

#[tokio::test]
async fn a_client_warns_once_about_a_peer_whose_datagrams_do_not_open() {
    let log = Captured::default();
    let _guard = log.install();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut client = KcpStream::connect(peer.local_addr().unwrap(), keyed("ours"))
        .await
        .unwrap();
    client.write_all(b"hello").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0u8; 2048];
    let (_, addr) = peer.recv_from(&mut buf).await.unwrap();
    // Fifty datagrams that no key opens (random bytes fail the checksum).
    let junk = nodelink_testkit::seeded_bytes(7, 200);
    for _ in 0..50 {
        peer.send_to(&junk, addr).await.unwrap();
    }
    within_for(BOUND, "the client counts the bad checksums", async {
        while client.stats().in_csum_errors < 50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    log.expect_one("WARN", &["authentication", "wrong key or cipher"]);
}

/// A flood of forged first datagrams that stays under every limit (sources spread, under
/// the creation rate) is still reported: once sessions that never sent a second datagram
/// pile up, new ones are logged within the warning budget; and while they are that many,
/// those older than two seconds are ended (their memory comes back), with a log line.
#[tokio::test]
async fn a_listener_warns_about_and_ends_many_sessions_that_sent_one_datagram() {
    use nodelink_kcp::pipeline::Pipeline;
    let log = Captured::default();
    let _guard = log.install();
    let cfg = Config::default()
        .with_max_sessions_per_ip(10_000)
        .with_session_rate(100_000);
    let mut listener = KcpListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
    let addr = listener.local_addr();
    let mut accepted = Vec::new();
    let mut sockets = Vec::new();
    for conv in 1..=300u32 {
        let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut p = Pipeline::new(conv, &cfg).unwrap();
        p.send(b"forged").unwrap();
        let mut first = None;
        p.flush(0, |d| {
            first.get_or_insert_with(|| d.to_vec());
        });
        raw.send_to(&first.unwrap(), addr).await.unwrap();
        sockets.push(raw);
        // Accepted as they come, so the backlog never refuses one.
        accepted.push(
            within_for(BOUND, "a forged session", listener.accept())
                .await
                .unwrap(),
        );
    }
    let warned = log.find("WARN", &["only their first datagram", "forged"]);
    assert!(
        !warned.is_empty(),
        "no warning; log:\n{}",
        log.lines().join("\n")
    );
    assert!(
        warned.len() <= nodelink_driver::PER_SECOND as usize * 2 + 2,
        "warnings not rate-limited: {}",
        warned.len()
    );
    assert!(
        listener.sessions() > 256,
        "{} sessions",
        listener.sessions()
    );
    within_for(BOUND, "the one-datagram sessions are ended", async {
        while listener.sessions() > 256 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let ended = log.find("WARN", &["single datagram and nothing more", "were ended"]);
    assert!(!ended.is_empty(), "log:\n{}", log.lines().join("\n"));
}

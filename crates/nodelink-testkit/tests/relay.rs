//! End-to-end tests of `UdpRelay` over loopback.
//!
//! Synchronisation is done by awaiting datagrams (or the relay's counters),
//! never by sleeping; every wait is bounded by `WAIT`.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use nodelink_testkit::{Impairment, RelayStats, UdpRelay};
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(5);

async fn socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback")
}

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Receives one datagram and returns `(payload, sender)`.
async fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = bounded("a datagram", sock.recv_from(&mut buf))
        .await
        .expect("recv");
    buf.truncate(n);
    (buf, from)
}

fn seq_of(datagram: &[u8]) -> u32 {
    u32::from_be_bytes(datagram[..4].try_into().expect("4-byte sequence number"))
}

/// A datagram carrying `seq` followed by some recognisable filler.
fn packet(seq: u32) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.extend((0..28u8).map(|i| i.wrapping_mul(37).wrapping_add(seq as u8)));
    p
}

/// Yields until `cond(stats)` holds (the relay's tasks run meanwhile).
async fn until_stats(relay: &UdpRelay, what: &str, cond: impl Fn(&RelayStats) -> bool) {
    bounded(what, async {
        while !cond(&relay.stats()) {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

struct Setup {
    client: UdpSocket,
    upstream: UdpSocket,
    relay: UdpRelay,
}

async fn setup(imp: Impairment) -> Setup {
    let upstream = socket().await;
    let relay = UdpRelay::start(upstream.local_addr().unwrap(), imp)
        .await
        .expect("start relay");
    Setup {
        client: socket().await,
        upstream,
        relay,
    }
}

#[tokio::test]
async fn no_impairment_passes_everything_both_ways_unchanged() {
    let Setup {
        client,
        upstream,
        relay,
    } = setup(Impairment::default()).await;
    const N: u32 = 200;
    for seq in 0..N {
        client
            .send_to(&packet(seq), relay.local_addr())
            .await
            .unwrap();
    }
    let mut relay_back = None;
    for seq in 0..N {
        let (got, from) = recv(&upstream).await;
        assert_eq!(got, packet(seq), "client→upstream datagram {seq}");
        relay_back = Some(from);
    }
    let relay_back = relay_back.unwrap();
    for seq in 0..N {
        upstream
            .send_to(&packet(seq + 1000), relay_back)
            .await
            .unwrap();
    }
    for seq in 0..N {
        let (got, from) = recv(&client).await;
        assert_eq!(from, relay.local_addr());
        assert_eq!(got, packet(seq + 1000), "upstream→client datagram {seq}");
    }
    let stats = relay.stats();
    for dir in [stats.to_upstream, stats.to_client] {
        assert_eq!(dir.received, u64::from(N));
        assert_eq!(dir.forwarded, u64::from(N));
        assert_eq!(
            dir.dropped + dir.duplicated + dir.reordered + dir.corrupted + dir.delayed,
            0
        );
    }
}

#[tokio::test]
async fn drop_all_passes_nothing() {
    let Setup {
        client,
        upstream,
        relay,
    } = setup(Impairment {
        drop: 1.0,
        ..Impairment::default()
    })
    .await;
    for seq in 0..100 {
        client
            .send_to(&packet(seq), relay.local_addr())
            .await
            .unwrap();
    }
    until_stats(&relay, "100 drops", |s| s.to_upstream.dropped == 100).await;
    assert_eq!(relay.stats().to_upstream.forwarded, 0);

    // Heal the link: the first datagram upstream sees is the one sent after
    // healing, which proves none of the earlier ones got through.
    relay.set_impairment(Impairment::default());
    client
        .send_to(&packet(100), relay.local_addr())
        .await
        .unwrap();
    let (got, _) = recv(&upstream).await;
    assert_eq!(seq_of(&got), 100);
}

/// Pushes `n` datagrams through a relay with `imp`, in paced windows so the
/// kernel never drops any on the way in, and returns the relay's stats and
/// the sequence numbers upstream received.
async fn run_lossy(imp: Impairment, n: u32) -> (RelayStats, Vec<u32>) {
    let Setup {
        client,
        upstream,
        relay,
    } = setup(imp).await;
    let mut received = Vec::new();
    let mut sent = 0u32;
    while sent < n {
        let window = (n - sent).min(64);
        for seq in sent..sent + window {
            client
                .send_to(&packet(seq), relay.local_addr())
                .await
                .unwrap();
        }
        sent += window;
        let total = u64::from(sent);
        until_stats(&relay, "the window to be decided", |s| {
            s.to_upstream.forwarded + s.to_upstream.dropped == total
        })
        .await;
        while received.len() < relay.stats().to_upstream.forwarded as usize {
            received.push(seq_of(&recv(&upstream).await.0));
        }
    }
    (relay.stats(), received)
}

#[tokio::test]
async fn drop_decisions_are_deterministic_per_seed() {
    const N: u32 = 10_000;
    let imp = Impairment {
        drop: 0.1,
        seed: 0x5eed,
        ..Impairment::default()
    };
    let (a, got_a) = run_lossy(imp, N).await;
    let (b, got_b) = run_lossy(imp, N).await;

    assert_eq!(a.to_upstream.received, u64::from(N));
    assert_eq!(a.to_upstream.dropped, b.to_upstream.dropped);
    assert_eq!(got_a, got_b, "the same datagrams must survive");
    // Expected 1000, standard deviation 30.
    assert!(
        (800..=1200).contains(&a.to_upstream.dropped),
        "implausible drop count {}",
        a.to_upstream.dropped
    );
    assert_eq!(got_a.len() as u64, u64::from(N) - a.to_upstream.dropped);
    assert!(
        got_a.windows(2).all(|w| w[0] < w[1]),
        "drop alone must not reorder"
    );

    let (c, _) = run_lossy(
        Impairment {
            seed: 0x5eed + 2,
            ..imp
        },
        N,
    )
    .await;
    assert_ne!(
        a.to_upstream.dropped, c.to_upstream.dropped,
        "a different seed should (almost surely) drop a different number"
    );
}

#[tokio::test]
async fn corrupt_flips_exactly_one_bit() {
    let Setup {
        client,
        upstream,
        relay,
    } = setup(Impairment {
        corrupt: 1.0,
        seed: 11,
        ..Impairment::default()
    })
    .await;
    const N: u32 = 100;
    // Same payload every time, so the sequence number may be hit too.
    let original = packet(7);
    for _ in 0..N {
        client.send_to(&original, relay.local_addr()).await.unwrap();
    }
    let mut positions = HashSet::new();
    for _ in 0..N {
        let (got, _) = recv(&upstream).await;
        assert_eq!(got.len(), original.len());
        let flipped: u32 = got
            .iter()
            .zip(&original)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!(flipped, 1, "exactly one bit must differ");
        positions.insert(got.iter().zip(&original).position(|(a, b)| a != b));
    }
    assert!(positions.len() > 1, "the corrupted byte should vary");
    assert_eq!(relay.stats().to_upstream.corrupted, u64::from(N));
}

#[tokio::test]
async fn duplicate_delivers_twice() {
    let Setup {
        client,
        upstream,
        relay,
    } = setup(Impairment {
        duplicate: 1.0,
        ..Impairment::default()
    })
    .await;
    const N: u32 = 50;
    for seq in 0..N {
        client
            .send_to(&packet(seq), relay.local_addr())
            .await
            .unwrap();
    }
    let mut seqs = Vec::new();
    for _ in 0..2 * N {
        seqs.push(seq_of(&recv(&upstream).await.0));
    }
    let expected: Vec<u32> = (0..N).flat_map(|s| [s, s]).collect();
    assert_eq!(seqs, expected);
    let stats = relay.stats().to_upstream;
    assert_eq!(stats.duplicated, u64::from(N));
    assert_eq!(stats.forwarded, u64::from(2 * N));
}

#[tokio::test]
async fn reorder_reorders_some() {
    let Setup {
        client,
        upstream,
        relay,
    } = setup(Impairment {
        reorder: 0.3,
        seed: 5,
        ..Impairment::default()
    })
    .await;
    const N: u32 = 200;
    for seq in 0..N {
        client
            .send_to(&packet(seq), relay.local_addr())
            .await
            .unwrap();
    }
    let mut seqs = Vec::new();
    for _ in 0..N {
        seqs.push(seq_of(&recv(&upstream).await.0));
    }
    let inversions = seqs.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(inversions > 10, "expected reordering, got {seqs:?}");
    // Reordering only swaps neighbours: nothing is lost or duplicated.
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..N).collect::<Vec<_>>());
    assert!(relay.stats().to_upstream.reordered > 10);
}

#[tokio::test]
async fn delay_is_respected_in_both_directions() {
    let delay = Duration::from_millis(100);
    let jitter = Duration::from_millis(20);
    let Setup {
        client,
        upstream,
        relay,
    } = setup(Impairment {
        delay,
        jitter,
        seed: 3,
        ..Impairment::default()
    })
    .await;
    const N: u32 = 20;

    let start = Instant::now();
    for seq in 0..N {
        client
            .send_to(&packet(seq), relay.local_addr())
            .await
            .unwrap();
    }
    let mut relay_back = None;
    for _ in 0..N {
        let (_, from) = recv(&upstream).await;
        // Each datagram left the client after `start`, so it cannot have
        // arrived before `start + delay - jitter`.
        let took = start.elapsed();
        assert!(took >= delay - jitter, "arrived after only {took:?}");
        relay_back = Some(from);
    }

    // Tight per-datagram check on the way back: send one, await it.
    let relay_back = relay_back.unwrap();
    for seq in 0..5 {
        let sent_at = Instant::now();
        upstream.send_to(&packet(seq), relay_back).await.unwrap();
        let (got, _) = recv(&client).await;
        let took = sent_at.elapsed();
        assert_eq!(seq_of(&got), seq);
        assert!(took >= delay - jitter, "datagram {seq} took only {took:?}");
        assert!(
            took < delay + jitter + Duration::from_secs(1),
            "datagram {seq} took {took:?}"
        );
    }
    let stats = relay.stats();
    assert_eq!(stats.to_upstream.delayed, u64::from(N));
    assert_eq!(stats.to_client.delayed, 5);
}

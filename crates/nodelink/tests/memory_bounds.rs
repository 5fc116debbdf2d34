//! Memory stays bounded against hostile traffic, measured with a counting allocator.

mod common;

use std::time::Duration;

use common::*;
use nodelink::{Config, Role};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

fn live_growth(region: &Region<'_, std::alloc::System>) -> isize {
    let c = region.change();
    c.bytes_allocated as isize - c.bytes_deallocated as isize
}

/// Tiny packets queued on a connection nobody reads, interleaved with big packets that are
/// dropped, must not each keep a whole read-buffer block alive.
#[tokio::test(flavor = "current_thread")]
async fn small_unread_packets_do_not_pin_read_buffers() {
    let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 1 << 20).await;
    let big = vec![0u8; 60 << 10];
    let region = Region::new(GLOBAL);
    let n = 1000u64;
    for _ in 0..n {
        // An answer to an unknown id of the server's parity: dropped without a reply.
        raw.send(2, 0x8001, &big).await;
        // A request queued on connection 1, which is never accepted.
        raw.send(1, 2, b"").await;
    }
    within("the reader catches up", async {
        while link.stats().packets_in < 2 * n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let grown = live_growth(&region);
    // Accounted: 1000 x 64 bytes of cost. Pinning a 64 KiB block each would be 64 MiB.
    assert!(grown < 8 << 20, "held {grown} bytes for 1000 empty packets");
}

/// Credit a stateless server owes a peer that never reads is bounded, however many
/// requests it serves. Each dropped request is also answered "connection closed"; those
/// replies wait for the peer only up to twice the send buffer (kept small here, so that
/// what is measured is the owed credit), the rest are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owed_credit_is_bounded_when_the_peer_never_reads() {
    let config = Config::default().with_send_buffer(64 << 10);
    let (link, mut raw) = raw_and_link(Role::Server, config, 64 << 10).await;
    raw.send(CONTROL_TO_SERVER, CONTROL_CODE, &hello_payload(1 << 20))
        .await;
    let server = link.clone();
    tokio::spawn(async move {
        while let Ok(req) = server.recv1_stateless().await {
            drop(req);
        }
    });
    let n: u32 = 200_000;
    let mut buf = Vec::new();
    let mut region = None;
    for i in 0..n {
        buf.extend_from_slice(&packet_bytes(2 * i + 1, 2, b""));
        if buf.len() > 5_000 {
            raw.write_all(&buf).await;
            buf.clear();
            within("the server keeps up", async {
                while link.stats().conns_accepted + link.stats().conns_refused + 200
                    < u64::from(i + 1)
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await;
        }
        if i == n / 4 {
            // Measure from here: the owed-credit map has reached its steady size.
            region = Some(Region::new(GLOBAL));
        }
    }
    raw.write_all(&buf).await;
    within("the reader catches up", async {
        while link.stats().packets_in < u64::from(n) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let grown = live_growth(region.as_ref().expect("measured"));
    assert!(
        grown < 4 << 20,
        "grew by {grown} bytes over 150 000 requests"
    );
    assert!(link.stats().replies_dropped > 0, "{:?}", link.stats());
}

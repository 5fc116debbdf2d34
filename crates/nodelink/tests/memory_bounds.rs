//! Memory stays bounded against hostile traffic, measured with a counting allocator.

mod common;

use std::time::Duration;

use common::*;
use nodelink::{Config, Role};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// The allocator's counters are global and the tests of this file run in parallel: each
/// holds this while it runs, so no test's traffic counts in another's measurement.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn live_growth(region: &Region<'_, std::alloc::System>) -> isize {
    let c = region.change();
    c.bytes_allocated as isize - c.bytes_deallocated as isize
}

/// Tiny packets queued on a connection nobody reads, interleaved with big packets that are
/// dropped, must not each keep a whole read-buffer block alive.
#[tokio::test(flavor = "current_thread")]
async fn small_unread_packets_do_not_pin_read_buffers() {
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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

/// A listener's links share its memory budget: peers whose data nobody reads fill it,
/// then stop being read from (each holds at most about its share), while a client whose
/// requests are served keeps being read and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listeners_links_share_its_memory_budget() {
    let _serial = SERIAL.lock().await;
    use nodelink::{Link, Ping, Pong};
    const BUDGET: usize = 2 << 20;
    let config = Config::default().with_max_memory(BUDGET);
    let mut listener = nodelink::bind("127.0.0.1:0", config).await.unwrap();
    let addr = listener.local_addr();
    // Two raw peers open connections the server's application never accepts, 60 KiB
    // each: 8 MiB in all, four times the budget, well under each link's own bound.
    let mut flooding = Vec::new();
    let mut server_links = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut raw = RawPeer::new(tcp);
        let (server, _) = tokio::join!(listener.accept(), raw.handshake(6));
        server_links.push(server.unwrap());
        flooding.push(tokio::spawn(async move {
            let chunk = vec![7u8; 60 << 10];
            for i in 0..70u32 {
                raw.send(2 * i + 1, 0x0003, &chunk).await;
            }
            raw
        }));
    }
    // A good client, served by the application.
    let dial = tokio::spawn(nodelink::connect(addr, Config::default()));
    let good_server: Link = listener.accept().await.unwrap();
    let good = dial.await.unwrap().unwrap();
    tokio::spawn({
        let s = good_server.clone();
        async move {
            while let Ok(r) = s.recv1().await {
                let _ = r.reply(&Pong).await;
            }
        }
    });
    // The flooders' data piles up until the budget stops it...
    within("the budget fills", async {
        while server_links
            .iter()
            .map(|l| l.stats().rx_queued)
            .sum::<u64>()
            < BUDGET as u64
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    // ... and the good client is still served, many times over.
    for _ in 0..100 {
        let _: Pong = within("a good request", good.call(&Ping)).await.unwrap();
    }
    let held: u64 = server_links.iter().map(|l| l.stats().rx_queued).sum();
    // The first flooder, alone at first, may take the whole budget; the second joins
    // while it is exceeded and still gets its share (half, or a third once the good client
    // is counted); each may overshoot by what was in flight (a read buffer). Without the
    // budget the two hold all 8.6 MB.
    let slack = 2 * ((64 << 10) + (60 << 10)) as u64;
    assert!(
        held <= (BUDGET + BUDGET / 2) as u64 + slack,
        "the flooders' links hold {held} bytes, far over the {BUDGET}-byte budget"
    );
    // When one flooder's application starts reading, its link reads again: every one of
    // its 70 packets arrives.
    let reader = server_links[0].clone();
    within("the paused link resumes", async move {
        for _ in 0..70 {
            let conn = reader.accept().await.unwrap();
            let _ = conn.recv().await.unwrap();
        }
    })
    .await;
    for f in flooding {
        f.abort();
    }
}

/// Peers that send requests and never read the answers: the answers queued for them,
/// and the batch stuck in each socket, count against the listener's budget with the
/// unread requests. Once it is exceeded, each such link queues at most its share and
/// stops reading, so the whole server holds about the budget, not every link's send
/// buffer twice over; a client that reads its answers is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_nobody_reads_count_against_the_budget() {
    let _serial = SERIAL.lock().await;
    use nodelink::{Ping, Pong, ANSWER_BIT};
    const BUDGET: usize = 4 << 20;
    const PEERS: usize = 4;
    let region = Region::new(GLOBAL);
    let config = Config::default().with_max_memory(BUDGET);
    let mut listener = nodelink::bind("127.0.0.1:0", config).await.unwrap();
    let addr = listener.local_addr();
    let mut flooding = Vec::new();
    let mut server_links = Vec::new();
    for _ in 0..PEERS {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut raw = RawPeer::new(tcp);
        let (server, _) = tokio::join!(listener.accept(), raw.handshake(6));
        let server = server.unwrap();
        // The server's application echoes every request, as `nodelink serve` does.
        tokio::spawn({
            let link = server.clone();
            async move {
                while let Ok(r) = link.recv1_stateless().await {
                    let payload = r.payload().clone();
                    let code = r.code() | ANSWER_BIT;
                    if r.reply_packet(code, payload).await.is_err() {
                        break;
                    }
                }
            }
        });
        server_links.push(server);
        // 200 requests of 60 KiB (12 MiB) from a peer that never reads.
        flooding.push(tokio::spawn(async move {
            let chunk = vec![7u8; 60 << 10];
            for i in 0..200u32 {
                raw.send(2 * i + 1, 0x0003, &chunk).await;
            }
            raw
        }));
    }
    let dial = tokio::spawn(nodelink::connect(addr, Config::default()));
    let good_server = listener.accept().await.unwrap();
    let good = dial.await.unwrap().unwrap();
    tokio::spawn(async move {
        while let Ok(r) = good_server.recv1().await {
            let _ = r.reply(&Pong).await;
        }
    });
    let held = || -> u64 {
        server_links
            .iter()
            .map(|l| {
                let s = l.stats();
                s.rx_queued + s.tx_queued
            })
            .sum()
    };
    within("the budget fills", async {
        while held() < BUDGET as u64 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    // Then the flood stalls: nothing more is read from the flooders for a while.
    let bytes_in = || -> u64 { server_links.iter().map(|l| l.stats().bytes_in).sum() };
    within("the flood stalls", async {
        let mut last = bytes_in();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = bytes_in();
            if now == last {
                break;
            }
            last = now;
        }
    })
    .await;
    // A good client is served throughout; meanwhile what the flooders' links hold is
    // sampled. A link that took much before the budget was reached keeps it, and past it
    // the others read only up to their floor (256 KiB); each link may also overshoot by
    // what was in flight when it paused (a read buffer, and the request its application
    // holds while waiting to answer it). Without the send side counted, each flooder's
    // link holds two send buffers (8 MiB) of answers; with the share as the floor, up to
    // twice the budget.
    let slack = PEERS as u64 * ((256 << 10) + 2 * (64 << 10) + 2 * (60 << 10));
    let mut most = 0;
    for _ in 0..200 {
        let _: Pong = within("a good request", good.call(&Ping)).await.unwrap();
        most = most.max(held());
    }
    assert!(
        most <= BUDGET as u64 + slack,
        "the flooders' links hold {most} bytes, far over the {BUDGET}-byte budget"
    );
    // The allocator agrees: the server's memory grew by about the budget, not by the
    // 48 MiB the peers sent or the 32 MiB of their links' send buffers.
    let growth = live_growth(&region);
    assert!(
        growth < 4 * BUDGET as isize,
        "live memory grew by {growth} bytes for a {BUDGET}-byte budget"
    );
    let tx: u64 = server_links.iter().map(|l| l.stats().tx_queued).sum();
    assert!(tx > 0, "the answers are stuck towards the peers");
    for f in flooding {
        f.abort();
    }
}

/// A well-behaved client whose answers are large (more than a link's 256 KiB floor) keeps
/// being served while peers that never read hold the listener over its budget: its link
/// stops reading while an answer waits to be sent, and reads again once the client took
/// it (the budget stays exceeded all along, so only the drain can wake it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_large_answers_is_served_while_the_budget_is_exceeded() {
    let _serial = SERIAL.lock().await;
    use nodelink::ANSWER_BIT;
    const BUDGET: usize = 1 << 20;
    let config = Config::default().with_max_memory(BUDGET);
    let mut listener = nodelink::bind("127.0.0.1:0", config).await.unwrap();
    let addr = listener.local_addr();
    let echo = |link: nodelink::Link| {
        tokio::spawn(async move {
            while let Ok(r) = link.recv1_stateless().await {
                let payload = r.payload().clone();
                let code = r.code() | ANSWER_BIT;
                if r.reply_packet(code, payload).await.is_err() {
                    break;
                }
            }
        })
    };
    // A peer that sends requests and never reads the answers: the budget is exceeded.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut raw = RawPeer::new(tcp);
    let (server, _) = tokio::join!(listener.accept(), raw.handshake(6));
    let flooder = server.unwrap();
    echo(flooder.clone());
    let flood = tokio::spawn(async move {
        let chunk = vec![7u8; 60 << 10];
        for i in 0..200u32 {
            raw.send(2 * i + 1, 0x0003, &chunk).await;
        }
        raw
    });
    within("the budget is exceeded", async {
        loop {
            let s = flooder.stats();
            if s.rx_queued + s.tx_queued > BUDGET as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    // The good client: answers of 512 KiB, four requests at a time, so that requests
    // arrive while answers wait to be sent.
    let dial = tokio::spawn(nodelink::connect(addr, Config::default()));
    let good_server = listener.accept().await.unwrap();
    let good = dial.await.unwrap().unwrap();
    echo(good_server);
    let payload = bytes::Bytes::from(vec![9u8; 512 << 10]);
    for _ in 0..4 {
        let asks = (0..4).map(|_| good.ask1_packet(0x0004, payload.clone()));
        let answers = within("large answers", futures::future::join_all(asks)).await;
        for answer in answers {
            assert_eq!(answer.unwrap().payload.len(), payload.len());
        }
    }
    assert!(
        flooder.stats().rx_queued + flooder.stats().tx_queued > BUDGET as u64,
        "the budget stayed exceeded"
    );
    flood.abort();
}

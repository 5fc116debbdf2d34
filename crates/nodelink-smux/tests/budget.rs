//! Sessions sharing a memory budget ([`Config::memory_budget`]): a server's sessions are
//! each bounded on their own, and the budget bounds them together. Raw peers write the
//! frames, so a session's own bounds are set far above what the peers send: only the
//! shared budget can hold them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use nodelink_smux::{Config, MemoryBudget, Session};
use tokio::io::{AsyncReadExt, DuplexStream};

const BUDGET: usize = 1 << 20;
/// What a held-back session may hold past the budget: its floor (256 KiB) plus what one
/// read took before it looked (a read chunk and a frame).
const SLACK: usize = (256 << 10) + (64 << 10) + (64 << 10);

fn shared_config(budget: &Arc<MemoryBudget>) -> Config {
    config(1)
        .with_max_receive_buffer(64 << 20)
        .with_max_stream_buffer(64 << 20)
        .with_stall_timeout(Duration::from_secs(3600))
        .with_memory_budget(Arc::clone(budget))
}

/// Opens stream 3 on `server` from its raw peer and accepts it.
async fn opened(server: &Session, raw: &mut DuplexStream) -> nodelink_smux::Stream {
    send(raw, &frame(1, 0, 3, &[])).await;
    within(server.accept()).await.unwrap()
}

/// Waits until `cond` holds, looking after each yield of the runtime (bounded).
async fn until(what: &str, cond: impl Fn() -> bool) {
    nodelink_testkit::within_for(LIMIT, what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_nobody_reads_is_held_back_while_the_others_flow() {
    let budget = Arc::new(MemoryBudget::new("smux sessions", BUDGET));
    let (heavy, mut raw_heavy) = server_with_raw(shared_config(&budget));
    let (light, mut raw_light) = server_with_raw(shared_config(&budget));
    let mut unread = opened(&heavy, &mut raw_heavy).await;
    let mut read = opened(&light, &mut raw_light).await;

    // 4 MiB on a stream nobody reads: far under the session's own bounds.
    const FRAMES: u64 = 128;
    let flood = tokio::spawn(async move {
        for i in 0..FRAMES {
            send(&mut raw_heavy, &frame(1, 2, 3, &payload(i, 32 << 10))).await;
        }
        raw_heavy
    });
    until("the heavy session to fill the budget", || {
        budget.used() > BUDGET
    })
    .await;

    // The light session's peer sends 4 MiB too, and its application reads: it flows.
    let light_data: Vec<Vec<u8>> = (0..FRAMES).map(|i| payload(1000 + i, 32 << 10)).collect();
    let expected = light_data.concat();
    let light_peer = tokio::spawn(async move {
        for chunk in &light_data {
            send(&mut raw_light, &frame(1, 2, 3, chunk)).await;
        }
        raw_light
    });
    let mut got = vec![0u8; expected.len()];
    within(read.read_exact(&mut got)).await.unwrap();
    assert!(got == expected, "the light stream's data arrived intact");
    let _raw_light = within(light_peer).await.unwrap();

    // All that time the heavy session was held back.
    assert!(
        budget.used() <= BUDGET + SLACK,
        "held {} against a budget of {BUDGET}",
        budget.used()
    );
    assert!(!flood.is_finished(), "the heavy peer could not send it all");

    // Its application reads at last: everything arrives, nothing was dropped.
    let mut all = vec![0u8; (FRAMES as usize) << 15];
    within(unread.read_exact(&mut all)).await.unwrap();
    let sent: Vec<u8> = (0..FRAMES).flat_map(|i| payload(i, 32 << 10)).collect();
    assert!(all == sent, "the heavy stream's data arrived intact");
    let _raw_heavy = within(flood).await.unwrap();
    assert_eq!(heavy.stats().streams_reset, 0);
    until("the budget to be given back", || budget.used() < 64 << 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_budget_a_stream_nobody_reads_is_reset_after_the_stall_timeout() {
    let budget = Arc::new(MemoryBudget::new("smux sessions", BUDGET));
    let cfg = shared_config(&budget).with_stall_timeout(Duration::from_millis(200));
    let (heavy, mut raw_heavy) = server_with_raw(cfg);
    let mut unread = opened(&heavy, &mut raw_heavy).await;
    let flood = tokio::spawn(async move {
        for i in 0..128 {
            send(&mut raw_heavy, &frame(1, 2, 3, &payload(i, 32 << 10))).await;
        }
        raw_heavy
    });
    // Held back, and its stream reads nothing: the stream is reset, the session goes on
    // (reading, so the peer's flood is taken in and discarded).
    let mut raw_heavy = within(flood).await.unwrap();
    let fin = within(read_non_nop(&mut raw_heavy)).await;
    assert_eq!((fin.1, fin.2), (1, 3), "the stalled stream gets a FIN");
    assert_eq!(heavy.stats().streams_reset, 1);
    let mut buf = [0u8; 1];
    let err = within(unread.read(&mut buf)).await.unwrap_err();
    assert!(err.to_string().contains("stalled"), "{err}");
    assert!(!heavy.is_closed());
    until("the budget to be given back", || budget.used() == 0).await;
}

//! The buffer bounds of [`Config`](nodelink_smux::Config) count payload bytes; these tests
//! check, with a counting allocator, that the memory really held stays close to what is
//! counted when a hostile peer shapes its frames to make the two differ.
//!
//! The allocator counts every thread of the process, so the tests take turns (`TURN`).

mod common;

use std::time::Duration;

use common::*;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::sync::Mutex;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

static TURN: Mutex<()> = Mutex::const_new(());

fn live_growth(region: &Region<'_, std::alloc::System>) -> isize {
    let c = region.change();
    c.bytes_allocated as isize - c.bytes_deallocated as isize
}

/// One-byte frames queued on a stream nobody reads, interleaved with big frames that are
/// discarded, must not each keep a whole read buffer alive.
#[tokio::test(flavor = "current_thread")]
async fn tiny_unread_frames_do_not_pin_read_buffers() {
    let _turn = TURN.lock().await;
    let (server, mut raw) = server_with_raw(config(1));
    send(&mut raw, &frame(1, 0, 3, &[])).await;
    let stream = within(server.accept()).await.unwrap();
    let mut round = frame(1, 2, 3, b"x");
    round.extend_from_slice(&frame(1, 2, 99, &vec![0u8; 60_000]));
    let rounds = 400u64;
    let region = Region::new(GLOBAL);
    for _ in 0..rounds {
        send(&mut raw, &round).await;
        tokio::task::yield_now().await;
    }
    within(async {
        while server.stats().frames_discarded < rounds {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let grown = live_growth(&region);
    // 400 bytes are counted; pinning a read buffer per byte held would be ~50 MB.
    assert!(
        grown < 4 << 20,
        "held {grown} bytes for {rounds} unread bytes"
    );
    assert!(!server.is_closed());
    drop(stream);
}

/// Many one-byte frames on an unread stream stay within the per-stream bound (64 KiB by
/// default), and must cost about that much memory, not a buffer entry per frame.
#[tokio::test(flavor = "current_thread")]
async fn one_byte_frames_cost_about_what_they_count() {
    let _turn = TURN.lock().await;
    let (server, mut raw) = server_with_raw(config(1));
    send(&mut raw, &frame(1, 0, 3, &[])).await;
    let stream = within(server.accept()).await.unwrap();
    let n = 60_000;
    let mut wire = Vec::with_capacity(n * 9 + 8);
    for _ in 0..n {
        wire.extend_from_slice(&frame(1, 2, 3, b"y"));
    }
    // A second stream opened after the data: accepting it proves the data was handled.
    wire.extend_from_slice(&frame(1, 0, 5, &[]));
    let region = Region::new(GLOBAL);
    // In pieces, letting the session read in between, so the pipe's own buffer stays small.
    for piece in wire.chunks(16 << 10) {
        send(&mut raw, piece).await;
        tokio::task::yield_now().await;
    }
    let second = within(server.accept()).await.unwrap();
    let grown = live_growth(&region);
    assert_eq!(server.stats().frames_discarded, 0);
    // 60 000 bytes are counted; a 32-byte queue entry per frame alone would be 2 MiB.
    assert!(grown < 512 << 10, "held {grown} bytes for {n} unread bytes");
    drop((stream, second));
}

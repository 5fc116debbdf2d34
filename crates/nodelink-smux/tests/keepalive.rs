//! Keepalive timeout with a silent peer, on tokio's paused clock.

mod common;

use std::time::Duration;

use common::*;
use nodelink_smux::{Config, ErrorKind};
use tokio::io::AsyncReadExt;

#[tokio::test(start_paused = true)]
async fn silent_peer_times_the_session_out() {
    let (client, _raw) = client_with_raw(Config::default());
    let mut s = within(client.open()).await.unwrap();
    let started = tokio::time::Instant::now();
    within(client.closed()).await;
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert_eq!(client.close_reason().unwrap().kind(), ErrorKind::Timeout);
    let err = within(s.read(&mut [0u8; 4])).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    let err = within(client.accept()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionClosed);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_sends_nops_keeps_the_session() {
    let (client, mut raw) = client_with_raw(Config::default());
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        send(&mut raw, &frame(1, 3, 0, &[])).await;
        assert!(!client.is_closed());
    }
    // Then silence: the session dies.
    within(client.closed()).await;
    assert_eq!(client.close_reason().unwrap().kind(), ErrorKind::Timeout);
}

#[tokio::test(start_paused = true)]
async fn keepalive_disabled_never_times_out() {
    let (client, _raw) = client_with_raw(config(1));
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(!client.is_closed());
}

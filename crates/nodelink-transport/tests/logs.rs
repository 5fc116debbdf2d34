//! What an operator sees: each peer event writes its log line at the promised level, with
//! the peer's address. Connections opened, closed and lost and endpoint closes are INFO;
//! protocol violations, over-limit frames and failed handshakes are WARN (within a budget
//! per transport). The log is captured per test: each runs on its own current-thread
//! runtime with a thread-local subscriber.

mod h2_support;

use std::time::Duration;

use h2_support::*;
use nodelink_testkit::Captured;
use nodelink_transport::EndPointAddress;

/// Opening, closing and losing connections in both directions, and endpoint closes.
#[tokio::test]
async fn connection_events_are_info() {
    let log = Captured::default();
    let _guard = log.install();
    let ta = transport().await;
    let a = endpoint(&ta).await;
    let tb = transport().await;
    let b = endpoint(&tb).await;
    let (pa, pb) = (a.address().to_string(), b.address().to_string());

    let conn = within("connect", a.connect(b.address())).await.unwrap();
    let (id, _) = expect_opened(&b).await;
    log.expect_one("INFO", &["outgoing connection opened", &pb]);
    log.expect_one("INFO", &["incoming connection opened", &pa]);
    within("close", conn.close()).await;
    expect_closed(&b, id).await;
    log.expect_one("INFO", &["outgoing connection closed", &pb]);
    log.expect_one("INFO", &["incoming connection closed", &pa]);
    // Nothing is open any more: both ends say the socket went, the peer's end included.
    let teardown = "socket closed: nothing open either way";
    let wait = async {
        while log.find("INFO", &[teardown]).len() < 2 {
            tokio::task::yield_now().await;
        }
    };
    within("both ends to log the teardown", wait).await;
    log.expect_one("INFO", &[teardown, &format!("peer={pa}")]);
    log.expect_one("INFO", &[teardown, &format!("peer={pb}")]);

    // B connects to A, then closes its whole endpoint: A hears the remote endpoint close.
    let _back = within("connect back", b.connect(a.address()))
        .await
        .unwrap();
    let (id, _) = expect_opened(&a).await;
    within("close b", tb.close()).await;
    expect_closed(&a, id).await;
    log.expect_one("INFO", &["endpoint closed", &pb]);
    log.expect_one("INFO", &["the peer closed its endpoint", &pb]);

    // A peer killed without a goodbye: the connection is reported lost.
    let mut raw = Raw::accepted(a.address(), "127.0.0.1:9:0").await;
    raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    let _ = expect_opened(&a).await;
    drop(raw);
    match next(&a).await {
        nodelink_transport::Event::Error { .. } => {}
        other => panic!("expected ConnectionLost, got {other:?}"),
    }
    log.expect_one("INFO", &["connection lost", "127.0.0.1:9:0"]);
    // None of this is a warning.
    assert!(log.find("WARN", &[]).is_empty(), "{:?}", log.lines());
    within("close a", ta.close()).await;
}

/// A frame the protocol does not allow: one WARN line naming the peer and the cause.
#[tokio::test]
async fn protocol_violations_are_warnings() {
    let log = Captured::default();
    let _guard = log.install();
    let t = transport().await;
    let ep = endpoint(&t).await;
    let mut raw = Raw::accepted(ep.address(), "127.0.0.1:11:0").await;
    raw.write(&u32s(&[7])).await; // control code 7 is not defined
    let _ = raw.read_to_close(STEP).await;
    let _ = next(&ep).await; // ConnectionLost
    log.expect_one(
        "WARN",
        &[
            "protocol violation",
            "127.0.0.1:11:0",
            "invalid control code 7",
        ],
    );
    let mut raw = Raw::accepted(ep.address(), "127.0.0.1:12:0").await;
    raw.write(&u32s(&[CLOSE_CONNECTION, 1500])).await;
    let _ = raw.read_to_close(STEP).await;
    log.expect_one(
        "WARN",
        &[
            "protocol violation",
            "127.0.0.1:12:0",
            "unknown connection 1500",
        ],
    );
    within("close", t.close()).await;
}

/// A message over `max_receive_length`: the receiver says so, naming the sender.
#[tokio::test]
async fn over_limit_messages_are_warnings() {
    let log = Captured::default();
    let _guard = log.install();
    let t = transport_with(config().with_max_receive_length(1000)).await;
    let ep = endpoint(&t).await;
    let mut raw = Raw::accepted(ep.address(), "127.0.0.1:13:0").await;
    raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    raw.write(&u32s(&[1024, 1001])).await;
    let _ = raw.read_to_close(STEP).await;
    log.expect_one(
        "WARN",
        &[
            "message over the size limit",
            "127.0.0.1:13:0",
            "1001",
            "1000",
        ],
    );
    within("close", t.close()).await;
}

/// Handshakes that fail: timed out, malformed, for an endpoint that does not exist.
#[tokio::test]
async fn failed_handshakes_are_warnings() {
    let log = Captured::default();
    let _guard = log.install();
    let t = transport_with(
        config()
            .with_connect_timeout(Some(Duration::from_millis(300)))
            .with_max_address_length(64),
    )
    .await;
    let ep = endpoint(&t).await;
    let at = sock_addr(ep.address());

    let mut silent = Raw::connect(at).await;
    let _ = silent.read_to_close(STEP).await;
    log.expect_one("WARN", &["incoming handshake timed out", "127.0.0.1:"]);

    let mut bad = Raw::connect(at).await;
    bad.write(&request(0, &[b'x'; 100])).await;
    let _ = bad.read_to_close(STEP).await;
    log.expect_one("WARN", &["bad connection request", "127.0.0.1:"]);

    let other = EndPointAddress::new("127.0.0.1", at.port(), 9);
    let (_raw, answer) = Raw::handshake(&other, "127.0.0.1:14:0").await;
    assert_eq!(answer, INVALID);
    log.expect_one("WARN", &["does not exist", "endpoint=9"]);

    // An endpoint of ours that closed: a peer racing our close did nothing wrong, so the
    // refusal is not a warning (the CLI's `nt ping` printed one on its way out).
    let second = endpoint(&t).await;
    let closed = second.address().clone();
    within("close the endpoint", second.close()).await;
    let (_raw, answer) = Raw::handshake(&closed, "127.0.0.1:14:0").await;
    assert_eq!(answer, INVALID);
    within("close", t.close()).await;
    assert!(
        log.find("WARN", &["closed earlier"]).is_empty(),
        "{:?}",
        log.lines()
    );
    assert_eq!(
        log.find("WARN", &["does not exist"]).len(),
        1,
        "{:?}",
        log.lines()
    );
}

/// A client that fails its handshake over and over cannot flood the log: each kind of
/// warning of one transport writes a few lines per interval, and the rest are counted
/// for one summary line.
#[tokio::test]
async fn peer_warnings_are_rate_limited() {
    let log = Captured::default();
    let _guard = log.install();
    let t = transport().await;
    let ep = endpoint(&t).await;
    let at = sock_addr(ep.address());
    let start = std::time::Instant::now();
    for _ in 0..60 {
        let other = EndPointAddress::new("127.0.0.1", at.port(), 9);
        let (_raw, answer) = Raw::handshake(&other, "127.0.0.1:15:0").await;
        assert_eq!(answer, INVALID);
    }
    let seconds = start.elapsed().as_secs() + 1;
    let written = log.find("WARN", &["does not exist"]).len() as u64;
    // A few per kind and interval (ten at most per started second in all).
    assert!(
        written <= u64::from(nodelink_driver::PER_KIND) * (seconds / 10 + 1),
        "{written} lines in {seconds} s"
    );
    assert!(written < 60, "nothing was suppressed");
    within("close", t.close()).await;
}

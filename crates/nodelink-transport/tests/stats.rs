//! What `EndPoint::stats` and `Transport::stats` report: gauges that follow sockets and
//! connections up and down, counters of messages, losses, violations and failed handshakes.

mod h2_support;

use std::time::Duration;

use h2_support::*;
use nodelink_transport::{EndPoint, EndPointAddress, EndPointStats};

/// Waits (bounded) until `ep`'s stats satisfy `ok`; gauges change without an event to await.
async fn stats_until(ep: &EndPoint, ok: impl Fn(&EndPointStats) -> bool) -> EndPointStats {
    within("stats to settle", async {
        loop {
            let s = ep.stats();
            if ok(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test]
async fn gauges_follow_connections_and_counters_count_messages() {
    let (ta, tb) = (transport().await, transport().await);
    let (a, b) = (endpoint(&ta).await, endpoint(&tb).await);
    assert_eq!(a.stats(), EndPointStats::default());

    let conn = within("connect", a.connect(b.address())).await.unwrap();
    let (id, _) = expect_opened(&b).await;
    for m in [&b"one"[..], b"two", b"three"] {
        conn.send(&[m]).await.unwrap();
        expect_received(&b, id).await;
    }
    let sa = a.stats();
    assert_eq!(
        (sa.sockets, sa.connections_out, sa.connections_in),
        (1, 1, 0)
    );
    let sb = b.stats();
    assert_eq!(
        (sb.sockets, sb.connections_out, sb.connections_in),
        (1, 0, 1)
    );
    assert_eq!((sb.messages_in, sb.bytes_in), (3, 11));

    // Closing the last connection tears the socket down on both sides.
    within("close", conn.close()).await;
    expect_closed(&b, id).await;
    for ep in [&a, &b] {
        let s = stats_until(ep, |s| s.sockets == 0).await;
        assert_eq!(
            (s.connections_in, s.connections_out, s.sockets_lost),
            (0, 0, 0)
        );
    }
    assert_eq!(ta.stats().endpoints, 1);
    within("close", ta.close()).await;
    assert_eq!(ta.stats().endpoints, 0);
    within("close", tb.close()).await;
}

#[tokio::test]
async fn violations_losses_and_failed_handshakes_are_counted() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    let mut raw = Raw::accepted(ep.address(), "127.0.0.1:21:0").await;
    raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    let _ = expect_opened(&ep).await;
    raw.write(&u32s(&[7])).await; // an undefined control word
    let _ = raw.read_to_close(STEP).await;
    let _ = next(&ep).await; // ConnectionLost
    let s = ep.stats();
    assert_eq!(
        (s.protocol_violations, s.sockets_lost, s.sockets),
        (1, 1, 0)
    );

    let at = sock_addr(ep.address());
    let missing = EndPointAddress::new("127.0.0.1", at.port(), 9);
    let (_raw, answer) = Raw::handshake(&missing, "127.0.0.1:22:0").await;
    assert_eq!(answer, INVALID);
    assert_eq!(t.stats().handshakes_failed, 1);
    within("close", t.close()).await;
}

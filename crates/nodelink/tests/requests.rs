//! Every request ends: a request taken with `recv1` and released without an answer
//! (dropped, closed, or held by a handler that panics) is answered NEO's byte-exact
//! "connection closed" Error in the neo-go dialect, so the asker fails at once; the neo-py
//! dialect sends nothing (NEO/py expects no automatic replies).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use nodelink::{Config, Dialect, ErrorCode, ErrorKind, Ping, Pong, Role};

/// A raw client's request on id 1 (the client's parity), taken by the link's `recv1`.
async fn raw_request(config: Config) -> (nodelink::Link, RawPeer<tokio::io::DuplexStream>) {
    let (link, mut raw) = raw_and_link(Role::Server, config, 64 << 10).await;
    raw.send(1, 0x0001, b"").await;
    (link, raw)
}

#[tokio::test]
async fn a_dropped_request_is_answered_connection_closed_byte_for_byte() {
    let (link, mut raw) = raw_request(Config::default()).await;
    let req = within("recv1", link.recv1()).await.unwrap();
    drop(req);
    let expected = closed_reply(1);
    assert_eq!(raw.read_exact(expected.len()).await, expected);
    assert_eq!(link.stats().requests_unanswered, 1);

    // close() is the same; a request that was answered gets nothing more.
    raw.send(3, 0x0001, b"").await;
    within("recv1", link.recv1()).await.unwrap().close();
    let expected = closed_reply(3);
    assert_eq!(raw.read_exact(expected.len()).await, expected);
    raw.send(5, 0x0001, b"").await;
    let req = within("recv1", link.recv1()).await.unwrap();
    within("reply", req.reply_packet(0x8001, Bytes::from_static(b"ok")))
        .await
        .unwrap();
    let answer = packet_bytes(5, 0x8001, b"ok");
    assert_eq!(raw.read_exact(answer.len()).await, answer);
    raw.send(7, 0x0001, b"").await;
    let req = within("recv1", link.recv1()).await.unwrap();
    drop(req);
    // The next packet is the answer to 7: nothing was sent after the reply to 5.
    let expected = closed_reply(7);
    assert_eq!(raw.read_exact(expected.len()).await, expected);
    assert_eq!(link.stats().requests_unanswered, 3);

    // An answer that arrives on a new id is taken as a request (NEO/go routing) but is
    // never answered, even when dropped: the next packet out is the reply to 11.
    raw.send(9, 0x8001, b"").await;
    drop(within("recv1", link.recv1()).await.unwrap());
    raw.send(11, 0x0001, b"").await;
    let req = within("recv1", link.recv1()).await.unwrap();
    within("reply", req.reply_packet(0x8001, Bytes::new()))
        .await
        .unwrap();
    let answer = packet_bytes(11, 0x8001, b"");
    assert_eq!(raw.read_exact(answer.len()).await, answer);
}

#[tokio::test]
async fn the_neo_py_dialect_sends_nothing_for_a_dropped_request() {
    let config = Config::default().with_dialect(Dialect::NeoPy);
    let (link, mut raw) = raw_and_link(Role::Server, config, 64 << 10).await;
    raw.send(0, 0x0001, b"").await;
    drop(within("recv1", link.recv1()).await.unwrap());
    raw.send(1, 0x0001, b"").await;
    let req = within("recv1", link.recv1()).await.unwrap();
    within("reply", req.reply_packet(0x8001, Bytes::new()))
        .await
        .unwrap();
    // The first packet NEO/py sees is the answer to its second request.
    let answer = packet_bytes(1, 0x8001, b"");
    assert_eq!(raw.read_exact(answer.len()).await, answer);
    assert_eq!(link.stats().requests_unanswered, 1);
}

/// Between two nodelink links: the asker's `ask1` fails at once with the peer's
/// "connection closed", whether the handler dropped the request or panicked holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask1_fails_at_once_when_the_handler_drops_or_panics() {
    let (client, server) = pair(Config::default()).await;
    // The handler task holds a clone: its panic drops the request, not the whole link.
    let serving = server.clone();
    let handler = tokio::spawn(async move {
        let server = serving;
        let req = server.recv1().await.unwrap();
        drop(req);
        let req = server.recv1().await.unwrap();
        let _held = req;
        panic!("a handler bug");
    });
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let err = within("ask1", client.ask1::<Ping, Pong>(&Ping))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::ClosedByPeer,
            "{}",
            with_sources(&err)
        );
        let msg = err.peer_error().expect("the peer's Error");
        assert_eq!(msg.code, ErrorCode::PROTOCOL_ERROR);
        assert_eq!(msg.message, "connection closed");
        // Not a timeout: the answer came back as soon as the request was released.
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert!(handler.await.unwrap_err().is_panic());
    assert_eq!(server.stats().requests_unanswered, 2);
}

/// A server that answers and then closes its link at once: the asker still gets the
/// answer (it arrived before the end of the stream), not "link failed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_sent_right_before_the_peer_closes_is_delivered() {
    for _ in 0..5 {
        let (client, server) = pair(Config::default()).await;
        let serving = tokio::spawn(async move {
            let req = server.recv1().await.unwrap();
            req.reply(&Pong).await.unwrap();
            drop(server);
        });
        let answer = within("ask1", client.ask1::<Ping, Pong>(&Ping)).await;
        assert!(answer.is_ok(), "{:?}", answer.map_err(|e| with_sources(&e)));
        serving.await.unwrap();
    }
}

//! Request/answer from the asker's side: what happened is told by `kind()` alone (refused,
//! closed by the peer, the application's Error, deadline, dead peer), deadlines end calls
//! and clean up, typed calls, and the `Handlers` serve loop (unknown codes, malformed
//! requests, panicking handlers, graceful stop).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use nodelink::{Config, ErrorCode, ErrorKind, ErrorMessage, Handlers, Link, Ping, Pong, Raw, Role};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Get {
    key: String,
}
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Got {
    value: Option<u64>,
}
nodelink::serde_message!(Get = 0x0101 => Got = 0x8101);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Put {
    key: String,
    value: u64,
}
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Stored;
nodelink::serde_message!(Put = 0x0102 => Stored = 0x8102);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Crash;
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Never;
nodelink::serde_message!(Crash = 0x0103 => Never = 0x8103);

#[tokio::test]
async fn refused_closed_and_application_errors_differ_by_kind() {
    let (client, server) = pair(Config::default()).await;
    let serving = tokio::spawn(async move {
        drop(server.recv1().await.unwrap());
        let denied = ErrorMessage::new(ErrorCode::DENIED, "not yours");
        server.recv1().await.unwrap().reply(&denied).await.unwrap();
        server.close_accept();
        server
    });
    let e = within("dropped", client.call(&Ping)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ClosedByPeer, "{e}");
    assert!(e.to_string().contains("closed by the peer"), "{e}");
    let e = within("denied", client.call(&Ping)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Peer, "{e}");
    assert_eq!(e.peer_error().unwrap().code, ErrorCode::DENIED);
    let _server = serving.await.unwrap();
    let e = within("refused", client.call(&Ping)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    // The link's own replies keep the peer's message for those who want it.
    assert_eq!(e.peer_error().unwrap().message, "connection refused");
    assert!(!e.is_link_gone());
}

/// The raw bytes of a refused full connection decode to `Refused` on a raw server.
#[tokio::test]
async fn a_raw_peers_refusal_is_refused() {
    let (link, mut raw) = raw_and_link(Role::Client, Config::default(), 64 << 10).await;
    let asking = tokio::spawn(async move { link.ask1::<Ping, Pong>(&Ping).await });
    let p = loop {
        let p = raw.next_packet().await;
        if !p.is_control() {
            break p;
        }
    };
    raw.write_all(&refused_reply(p.id)).await;
    let e = within("ask1", asking).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_deadline_ends_the_call_and_the_link_goes_on() {
    let config = Config::default().with_ask_timeout(Duration::from_secs(2));
    let (client, server) = pair(config).await;
    let e = client.ask1::<Ping, Pong>(&Ping).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
    assert!(e.to_string().contains("no answer within 2s"), "{e}");
    assert_eq!(std::io::Error::from(e).kind(), std::io::ErrorKind::TimedOut);
    // The late answer finds nobody waiting and is dropped; the link is fine.
    let late = server.recv1().await.unwrap();
    late.reply(&Pong).await.unwrap();
    let answering = tokio::spawn({
        let server = server.clone();
        async move {
            let r = server.recv1().await.unwrap();
            r.reply(&Pong).await.unwrap();
        }
    });
    let _: Pong = client
        .call_within(&Ping, Duration::from_secs(30))
        .await
        .unwrap();
    answering.await.unwrap();

    // A full connection: past the deadline the connection is closed, so a late answer
    // cannot pass for the answer to the next request.
    let conn = client.open().unwrap();
    let e = conn
        .ask_within::<Ping, Pong>(&Ping, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
    assert_eq!(
        conn.recv().await.unwrap_err().kind(),
        ErrorKind::ConnectionClosed
    );
    // No deadline by default.
    let (client, _server) = pair(Config::default()).await;
    let mut waiting = Box::pin(client.ask1::<Ping, Pong>(&Ping));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(poll_once(&mut waiting).await.is_pending());
}

/// A cancelled or timed-out ask leaves nothing behind on the asker's side.
#[tokio::test(start_paused = true)]
async fn abandoned_calls_leave_no_state() {
    let config = Config::default().with_ask_timeout(Duration::from_secs(1));
    let (client, server) = pair(config).await;
    let before = table(&client);
    for _ in 0..50 {
        let e = client.ask1::<Ping, Pong>(&Ping).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
        drop(server.recv1().await.unwrap());
    }
    let cancelled = tokio::time::timeout(Duration::from_millis(10), client.call(&Ping)).await;
    assert!(cancelled.is_err());
    tokio::task::yield_now().await;
    assert_eq!(table(&client), before);
    // The exchange ends when its time is up, not only when its future is dropped.
    let mut asking = std::pin::pin!(client.ask1_packet(5, Bytes::from_static(b"late")));
    let e = (&mut asking).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(
        table(&client),
        before,
        "released before the future is dropped"
    );
    let e = (&mut asking).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionClosed, "polled again: {e}");
    drop(server.recv1().await.unwrap());
}

type Serving = tokio::task::JoinHandle<nodelink::Result<()>>;

/// A key-value service on one link; the server's link is returned so that it stays open
/// after the serve loop returns.
async fn serve_store() -> (Link, Link, CancellationToken, Serving) {
    let (client, server) = pair(Config::default()).await;
    let store = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let handlers = Handlers::new()
        .on({
            let store = store.clone();
            move |get: Get| {
                let value = store.lock().unwrap().get(&get.key).copied();
                async move { Ok(Got { value }) }
            }
        })
        .on({
            let store = store.clone();
            move |put: Put| {
                let refused = put.key.is_empty();
                if !refused {
                    store.lock().unwrap().insert(put.key, put.value);
                }
                async move {
                    if refused {
                        Err(ErrorMessage::new(ErrorCode::DENIED, "empty key"))
                    } else {
                        Ok(Stored)
                    }
                }
            }
        })
        .on(|_: Crash| async {
            if true {
                panic!("a handler bug (expected by the test)");
            }
            Ok(Never)
        });
    let stop = CancellationToken::new();
    let serving = tokio::spawn({
        let (stop, server) = (stop.clone(), server.clone());
        async move { handlers.serve(&server, &stop).await }
    });
    (client, server, stop, serving)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_answer_typed_requests_and_every_failure() {
    let (client, _server, stop, serving) = serve_store().await;
    let put = Put {
        key: "a".into(),
        value: 7,
    };
    let _: Stored = within("put", client.call(&put)).await.unwrap();
    let got = within("get", client.call(&Get { key: "a".into() }))
        .await
        .unwrap();
    assert_eq!(got, Got { value: Some(7) });

    // The handler's Error.
    let empty = Put {
        key: String::new(),
        value: 1,
    };
    let e = within("denied", client.call(&empty)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Peer, "{e}");
    assert_eq!(e.peer_error().unwrap().message, "empty key");

    // A code nobody handles, and a payload that does not decode.
    let e = within(
        "unknown",
        client.ask1::<Raw<0x0109>, Raw<0x8109>>(&Raw(Bytes::new())),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Peer, "{e}");
    let m = e.peer_error().unwrap();
    assert_eq!(m.code, ErrorCode::PROTOCOL_ERROR);
    assert_eq!(m.message, "unexpected message: code 0x0109");
    let e = within(
        "malformed",
        client.ask1_packet(0x0101, Bytes::from_static(b"\xc1")),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Peer, "{e}");
    assert!(
        e.peer_error()
            .unwrap()
            .message
            .starts_with("malformed request 0x0101"),
        "{e}"
    );

    // A panicking handler: its asker fails at once, the others are still served.
    let e = within("crash", client.call(&Crash)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ClosedByPeer, "{e}");
    let got = within("get", client.call(&Get { key: "a".into() }))
        .await
        .unwrap();
    assert_eq!(got.value, Some(7));

    // Graceful stop: serve returns, new requests are refused.
    stop.cancel();
    within("serve returns", serving).await.unwrap().unwrap();
    let e = within("after stop", client.call(&Get { key: "a".into() }))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
}

/// A handler still running when the stop comes gets to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_the_requests_under_way_finish() {
    let (client, server) = pair(Config::default()).await;
    let entered = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let handlers = Handlers::new().on({
        let (entered, release) = (entered.clone(), release.clone());
        move |_: Ping| {
            let (entered, release) = (entered.clone(), release.clone());
            async move {
                entered.notify_one();
                release.notified().await;
                Ok(Pong)
            }
        }
    });
    let stop = CancellationToken::new();
    let serving = tokio::spawn({
        let stop = stop.clone();
        async move { handlers.serve(&server, &stop).await }
    });
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.call(&Ping).await }
    });
    within("handler entered", entered.notified()).await;
    stop.cancel();
    // The serve loop now refuses new requests but waits for the one under way.
    let e = within("refused", client.call(&Ping)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    release.notify_one();
    let _: Pong = within("answer", asking).await.unwrap().unwrap();
    within("serve returns", serving).await.unwrap().unwrap();
}

/// `serve_listener` is one loop for any listener (TCP here; the KCP test uses the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_listener_serves_every_link_until_stopped() {
    use nodelink::LinkListener;
    let listener = nodelink::bind("127.0.0.1:0", Config::default())
        .await
        .unwrap();
    let addr = LinkListener::local_addr(&listener);
    let handlers = Handlers::new().on(|_: Ping| async { Ok(Pong) });
    let stop = CancellationToken::new();
    let serving = tokio::spawn({
        let stop = stop.clone();
        async move { handlers.serve_listener(listener, &stop).await }
    });
    let a = nodelink::connect(addr, Config::default()).await.unwrap();
    let b = nodelink::connect(addr, Config::default()).await.unwrap();
    let _: Pong = within("a", a.call(&Ping)).await.unwrap();
    let _: Pong = within("b", b.call(&Ping)).await.unwrap();
    stop.cancel();
    within("serve_listener returns", serving)
        .await
        .unwrap()
        .unwrap();
    // The links were closed by the server after draining.
    let e = within("after stop", a.call(&Ping)).await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Refused) || e.is_link_gone(),
        "{e}"
    );
}

/// The next packet, control frames included.
async fn next_any(raw: &mut RawPeer<tokio::io::DuplexStream>) -> RawPacket {
    raw.read_packet().await.unwrap().expect("a packet")
}

/// The idle timeout: a silent strict peer is a dead peer; a nodelink peer is probed (PING,
/// answered PONG) and an idle but healthy link stays up indefinitely.
#[tokio::test(start_paused = true)]
async fn the_idle_timeout_cuts_silent_peers_and_keeps_live_ones() {
    let idle = Config::default().with_idle_timeout(Duration::from_secs(10));

    // A raw NEO client that says nothing after the handshake: never probed, cut at 10 s.
    let (link, mut raw) = raw_and_link(Role::Server, idle.clone(), 64 << 10).await;
    let e = link.recv1().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadPeer, "{e}");
    assert!(
        with_sources(&e).contains("no packet from the peer for 10s"),
        "{}",
        with_sources(&e)
    );
    assert_eq!(raw.expect_eof().await, 0, "a strict peer got a probe");

    // Two nodelink sides, only one with the timeout: an hour of silence, still up.
    let (client, server) = pair_over(64 << 10, Config::default(), idle.clone()).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!client.is_closed() && !server.is_closed());
    let answering = tokio::spawn({
        let server = server.clone();
        async move { server.recv1().await.unwrap().reply(&Pong).await }
    });
    let _: Pong = client.call(&Ping).await.unwrap();
    answering.await.unwrap().unwrap();

    // A raw peer that agreed on the extension gets PING at 5 s; answering PONG keeps it.
    let (link, mut raw) = raw_and_link(Role::Server, idle, 64 << 10).await;
    raw.send(CONTROL_TO_SERVER, CONTROL_CODE, &hello_payload(64 << 10))
        .await;
    let _hello = next_any(&mut raw).await;
    let started = tokio::time::Instant::now();
    let ping = next_any(&mut raw).await;
    assert_eq!(
        ping.wire,
        packet_bytes(CONTROL_TO_CLIENT, CONTROL_CODE, b"NLFC\x07")
    );
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    raw.send(CONTROL_TO_SERVER, CONTROL_CODE, b"NLFC\x08").await;
    let ping = next_any(&mut raw).await;
    assert_eq!(
        ping.wire,
        packet_bytes(CONTROL_TO_CLIENT, CONTROL_CODE, b"NLFC\x07")
    );
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    // Unanswered this time: cut 10 s after the last packet.
    let e = link.recv1().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadPeer, "{e}");
    assert_eq!(started.elapsed(), Duration::from_secs(15));

    // A PING of the peer's is answered PONG, whatever our own settings.
    let (_link, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    raw.send(CONTROL_TO_SERVER, CONTROL_CODE, &hello_payload(64 << 10))
        .await;
    let _hello = next_any(&mut raw).await;
    raw.send(CONTROL_TO_SERVER, CONTROL_CODE, b"NLFC\x07").await;
    let pong = next_any(&mut raw).await;
    assert_eq!(
        pong.wire,
        packet_bytes(CONTROL_TO_CLIENT, CONTROL_CODE, b"NLFC\x08")
    );
}

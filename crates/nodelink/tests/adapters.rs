//! A connection as a `futures` Stream and Sink, and lightweight requests as a
//! `tower::Service` wrapped in tower's own middleware.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use nodelink::{Config, ErrorKind, Ping, Pong};

#[tokio::test]
async fn a_connection_is_a_stream_and_a_sink() {
    within("stream and sink", async {
        let (client, server) = pair(Config::default()).await;
        let conn = Arc::new(client.open().unwrap());
        let mut sink = conn.packet_sink();
        // Three packets through the sink, forwarded from a stream of items.
        let mut items =
            futures::stream::iter((0u8..3).map(|i| {
                Ok::<_, nodelink::Error>((0x0100 + u16::from(i), Bytes::from(vec![i; 3])))
            }));
        sink.send_all(&mut items).await.unwrap();

        let incoming = Arc::new(server.accept().await.unwrap());
        let got: Vec<(u16, Vec<u8>)> = incoming
            .packets()
            .take(3)
            .map(|p| {
                let p = p.unwrap();
                (p.code, p.payload.to_vec())
            })
            .collect()
            .await;
        assert_eq!(
            got,
            [
                (0x0100, vec![0; 3]),
                (0x0101, vec![1; 3]),
                (0x0102, vec![2; 3])
            ]
        );

        // Echo back through the server's sink, read through the client's stream.
        let mut back = incoming.packet_sink();
        back.send((0x8100, Bytes::from_static(b"back")))
            .await
            .unwrap();
        let mut packets = conn.packets();
        let p = packets.next().await.unwrap().unwrap();
        assert_eq!((p.code, &p.payload[..]), (0x8100, &b"back"[..]));

        // The stream yields the error that ends the connection once, then ends.
        client.close().await;
        let end = packets.next().await.expect("the error is yielded");
        assert!(end.is_err());
        assert!(
            packets.next().await.is_none(),
            "the stream ends after its error"
        );
    })
    .await;
}

#[tokio::test]
async fn ask1_is_a_tower_service_under_tower_middleware() {
    use tower::{Service, ServiceBuilder, ServiceExt};

    within("tower", async {
        let (client, server) = pair(Config::default()).await;
        let answering = tokio::spawn(async move {
            while let Ok(request) = server.recv1().await {
                let _ = request.reply(&Pong).await;
            }
        });
        let mut service = ServiceBuilder::new()
            .concurrency_limit(4)
            .service(nodelink::AskService::new(client.clone()));
        for _ in 0..10 {
            let _pong: Pong = ServiceExt::<Ping>::ready(&mut service)
                .await
                .unwrap()
                .call(Ping)
                .await
                .unwrap();
        }
        // Many calls at once through the concurrency limit.
        let calls = (0..32).map(|_| service.clone().oneshot(Ping));
        let answers = futures::future::join_all(calls).await;
        assert!(answers.iter().all(Result::is_ok));

        client.close().await;
        answering.abort();

        // The link's own deadline, against a peer that holds its requests unanswered.
        let (client, server) = pair(Config::default()).await;
        let holding = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok(request) = server.recv1().await {
                held.push(request);
            }
        });
        let mut bounded =
            nodelink::AskService::new(client.clone()).with_deadline(Duration::from_millis(50));
        let e = ServiceExt::<Ping>::ready(&mut bounded)
            .await
            .unwrap()
            .call(Ping)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
        // tower's Timeout around it gives up on its own terms as well.
        let mut timed = ServiceBuilder::new()
            .timeout(Duration::from_millis(50))
            .service(nodelink::AskService::new(client.clone()));
        let e = ServiceExt::<Ping>::ready(&mut timed)
            .await
            .unwrap()
            .call(Ping)
            .await
            .unwrap_err();
        assert!(e.is::<tower::timeout::error::Elapsed>(), "{e}");
        client.close().await;
        holding.abort();
    })
    .await;
}

/// A sink whose send failed keeps returning that error (it must not panic when the
/// caller logs the error and tries again, as futures' `sink::unfold` would).
#[tokio::test]
async fn a_failed_sink_keeps_returning_its_error() {
    within("failed sink", async {
        let (client, _server) = pair(Config::default()).await;
        let conn = Arc::new(client.open().unwrap());
        let mut sink = conn.packet_sink();
        sink.send((0x0100, Bytes::from_static(b"one")))
            .await
            .unwrap();
        client.close().await;
        let first = sink
            .send((0x0101, Bytes::from_static(b"two")))
            .await
            .expect_err("the link is closed");
        for _ in 0..3 {
            let again = sink
                .send((0x0102, Bytes::from_static(b"three")))
                .await
                .expect_err("still closed");
            assert_eq!(again.kind(), first.kind());
        }
        let closed = sink.close().await.expect_err("close reports it too");
        assert_eq!(closed.kind(), first.kind());
    })
    .await;
}

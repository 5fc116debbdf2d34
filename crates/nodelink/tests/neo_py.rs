//! The NEO/py 1.12 dialect against raw-byte peers that behave as NEO/py does
//! (`docs/protocols/link.md`, "Talking to NEO/py"): ids 0, 1, 2, ... on both sides, routing
//! by the answer bit, one request and at most one answer, and a peer that closes the
//! connection on any packet it did not expect, so every test checks that nothing else
//! arrives.

mod common;

use std::collections::HashSet;

use bytes::Bytes;
use common::*;
use nodelink::{Config, Dialect, ErrorKind, Link, Ping, Pong, Role, MAX_PACKET_SIZE};

fn py() -> Config {
    Config::default().with_dialect(Dialect::NeoPy)
}

/// Answers every request with code `c | 0x8000` and the same payload, as `nodelink serve`.
fn echo_server(link: Link) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(req) = link.recv1().await {
            let code = req.code() | 0x8000;
            let payload = req.payload().clone();
            let _ = req.reply_packet(code, payload).await;
        }
    })
}

/// What a NEO/py client does with a packet: it must answer one of its pending requests,
/// with a code it knows; anything else would make it close the connection.
fn neo_py_client_takes(pending: &mut HashSet<u32>, p: &RawPacket) {
    assert!(
        p.code & 0x8000 != 0 && p.code != 0xFFFF,
        "NEO/py would close the link on {p:?}"
    );
    assert!(
        pending.remove(&p.id),
        "answer for id {} that NEO/py never asked",
        p.id
    );
}

#[tokio::test]
async fn server_answers_a_neo_py_client_including_ids_across_wrap_around() {
    let (link, mut raw) = raw_and_link(Role::Server, py(), 1 << 20).await;
    let server = echo_server(link.clone());
    // NEO/py numbers from 0 by +1 and wraps at 2^32; parity means nothing to it.
    let ids: Vec<u32> = (0..64).chain([u32::MAX - 1, u32::MAX, 0, 1]).collect();
    let mut pending = HashSet::new();
    for &id in &ids {
        raw.send(id, 2, &id.to_be_bytes()).await;
        let p = within("answer", raw.read_packet()).await.unwrap().unwrap();
        pending.insert(id);
        neo_py_client_takes(&mut pending, &p);
        assert_eq!((p.code, &p.payload[..]), (0x8002, &id.to_be_bytes()[..]));
    }
    assert!(pending.is_empty());
    let st = link.stats();
    assert_eq!(
        (st.packets_in, st.packets_out),
        (ids.len() as u64, ids.len() as u64)
    );
    assert_eq!(link.peer_flow_control(), nodelink::PeerFlowControl::Off);
    link.close().await;
    server.abort();
}

#[tokio::test]
async fn pipelined_burst_of_2000_requests_is_answered_in_full() {
    // More requests than the accept backlog holds: the reader pauses, nothing is dropped.
    const N: u32 = 2000;
    let (link, mut raw) = raw_and_link(Role::Server, py(), 1 << 20).await;
    let server = echo_server(link.clone());
    let mut burst = Vec::new();
    for id in 0..N {
        burst.extend_from_slice(&packet_bytes(id, 2, b""));
    }
    let mut pending: HashSet<u32> = (0..N).collect();
    // 20 kB: fits in the pipe, so the whole burst is in flight before anything is read.
    raw.write_all(&burst).await;
    while !pending.is_empty() {
        let p = within("answers", raw.read_packet()).await.unwrap().unwrap();
        neo_py_client_takes(&mut pending, &p);
    }
    let st = link.stats();
    assert_eq!((st.conns_refused, st.packets_dropped), (0, 0));
    assert!(
        st.accept_waits >= 1,
        "the burst exceeds the backlog: {st:?}"
    );
    server.abort();
}

#[tokio::test]
async fn client_talks_to_a_neo_py_server_that_asks_back_on_a_pending_id() {
    let (link, mut raw) = raw_and_link(Role::Client, py(), 1 << 20).await;
    // Our first request: id 0, and nothing before it (no extension offer in this dialect).
    let ask = tokio::spawn({
        let link = link.clone();
        async move { link.ask1::<_, Pong>(&Ping).await }
    });
    let req = within("request", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(req.wire, [0, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
    // The NEO/py server asks us something on id 0 while our request 0 waits: the answer
    // bit is clear, so it is a new request, answered on id 0.
    raw.send(0, 0x0100, b"back").await;
    let incoming = within("recv1", link.recv1()).await.unwrap();
    assert_eq!(
        (incoming.conn_id(), &incoming.payload()[..]),
        (0, &b"back"[..])
    );
    incoming
        .reply_packet(0x8100, Bytes::from_static(b"answered"))
        .await
        .unwrap();
    let p = within("our answer", raw.read_packet())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (p.id, p.code, &p.payload[..]),
        (0, 0x8100, &b"answered"[..])
    );
    // An answer for an id we never asked: dropped and counted, no reply.
    raw.send(77, 0x8002, b"").await;
    // Now the answer to our request 0.
    raw.send(0, 0x8002, b"").await;
    within("ask1", ask).await.unwrap().unwrap();
    // The next request takes id 1.
    let ask = tokio::spawn({
        let link = link.clone();
        async move { link.ask1::<_, Pong>(&Ping).await }
    });
    let req = within("request", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(req.id, 1);
    raw.send(1, 0x8002, b"").await;
    within("ask1", ask).await.unwrap().unwrap();
    let st = link.stats();
    assert_eq!(st.packets_dropped, 1);
    assert_eq!(
        st.packets_out, 3,
        "two requests and one answer, nothing else"
    );
}

#[tokio::test]
async fn a_request_nobody_will_accept_is_dropped_without_a_reply() {
    let (link, mut raw) = raw_and_link(Role::Server, py(), 1 << 20).await;
    link.close_accept();
    raw.send(0, 2, b"").await;
    // Sync through a request of ours: the first packet the peer sees is that request.
    let ask = tokio::spawn({
        let link = link.clone();
        async move { link.ask1::<_, Pong>(&Ping).await }
    });
    let p = within("request", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!((p.id, p.code), (0, 2));
    raw.send(0, 0x8002, b"").await;
    within("ask1", ask).await.unwrap().unwrap();
    assert_eq!(link.stats().packets_dropped, 1);
}

#[tokio::test]
async fn full_connections_do_not_exist_in_this_dialect() {
    let (link, _raw) = raw_and_link(Role::Client, py(), 1 << 20).await;
    let e = link.open().unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Unsupported), "{e}");
    assert!(e.to_string().contains("ask1"), "{e}");
    let e = link.accept().await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Unsupported), "{e}");
}

#[tokio::test]
async fn payload_limit_is_neo_py_s_own() {
    // NEO/py 1.12 accepts a payload of 0x4000000 bytes (the header not counted), 10 more
    // than NEO/go: in this dialect such a header is not a protocol violation.
    let announce = |len: u32| {
        let mut v = vec![0, 0, 0, 0, 0, 2];
        v.extend_from_slice(&len.to_be_bytes());
        v
    };
    let (link, mut raw) = raw_and_link(Role::Server, py(), 1 << 20).await;
    raw.write_all(&announce(MAX_PACKET_SIZE as u32)).await;
    drop(raw);
    within("link ends", link.closed()).await;
    assert_eq!(link.stats().protocol_errors, 0);
    let (link, mut raw) = raw_and_link(Role::Server, py(), 1 << 20).await;
    raw.write_all(&announce(MAX_PACKET_SIZE as u32 + 1)).await;
    within("link fails", link.closed()).await;
    assert_eq!(link.stats().protocol_errors, 1);
    // NEO/go's limit counts the header.
    let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 1 << 20).await;
    raw.write_all(&announce(MAX_PACKET_SIZE as u32)).await;
    within("link fails", link.closed()).await;
    assert_eq!(link.stats().protocol_errors, 1);
}

//! Byte-exact checks of everything this side puts on the wire, against the layouts of
//! docs/protocols/transport.md ("Opening a socket", "Frames"), using raw sockets on the other end.

mod common;

use std::time::Duration;

use common::*;
use nodelink_transport::{Config, EndPointAddress, Event, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_be_bytes()).collect()
}

fn request(version: u32, target: u32, origin: &[u8]) -> Vec<u8> {
    let mut v = words(&[
        version,
        8 + origin.len() as u32,
        target,
        origin.len() as u32,
    ]);
    v.extend_from_slice(origin);
    v
}

async fn expect_bytes(s: &mut TcpStream, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    within("bytes from the peer", s.read_exact(&mut got))
        .await
        .expect("read");
    assert_eq!(got, want, "\n got  {got:02x?}\n want {want:02x?}");
}

async fn expect_eof(s: &mut TcpStream) {
    let mut b = [0u8; 1];
    match within("EOF", s.read(&mut b)).await {
        Ok(0) | Err(_) => {}
        Ok(_) => panic!("expected EOF, got byte {:02x}", b[0]),
    }
}

/// Accepts one connection on a raw listener.
async fn accept(l: &TcpListener) -> TcpStream {
    within("accept", l.accept()).await.unwrap().0
}

/// A transport advertising exactly the spec's example address `127.0.0.1:40477:0`.
async fn example_transport() -> Transport {
    Transport::bind_with_external(
        "127.0.0.1",
        0,
        |_| ("127.0.0.1".into(), 40477),
        Config::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn connection_request_matches_the_spec_example() {
    let t = example_transport().await;
    let ep = t.open_endpoint().await.unwrap();
    assert_eq!(ep.address().as_bytes(), b"127.0.0.1:40477:0");
    let raw = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = EndPointAddress::new("127.0.0.1", raw.local_addr().unwrap().port(), 0);
    let connecting = tokio::spawn({
        let ep = ep.clone();
        async move { ep.connect(&target).await }
    });
    let mut s = accept(&raw).await;
    // 00000000 00000019 00000000 00000011 "127.0.0.1:40477:0"
    let mut want = vec![0, 0, 0, 0, 0, 0, 0, 0x19, 0, 0, 0, 0, 0, 0, 0, 0x11];
    want.extend_from_slice(b"127.0.0.1:40477:0");
    assert_eq!(want, request(0, 0, b"127.0.0.1:40477:0"));
    expect_bytes(&mut s, &want).await;
    drop(s);
    let err = within("connect", connecting).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), nodelink_transport::ErrorKind::ConnectFailed);
    t.close().await;
}

#[tokio::test]
async fn frames_we_send_after_accepted() {
    let t = example_transport().await;
    let ep = t.open_endpoint().await.unwrap();
    let raw = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = EndPointAddress::new("127.0.0.1", raw.local_addr().unwrap().port(), 5);
    let connecting = tokio::spawn({
        let ep = ep.clone();
        let target = target.clone();
        async move { ep.connect(&target).await }
    });
    let mut s = accept(&raw).await;
    expect_bytes(&mut s, &request(0, 5, b"127.0.0.1:40477:0")).await;
    s.write_all(&words(&[0])).await.unwrap(); // Accepted
    let c1 = within("connect", connecting).await.unwrap().unwrap();
    expect_bytes(&mut s, &words(&[0, 1024])).await; // CreatedNewConnection 1024

    c1.send(&[b"hello"]).await.unwrap();
    let mut data = words(&[1024, 5]);
    data.extend_from_slice(b"hello");
    expect_bytes(&mut s, &data).await;

    // A multi-chunk send is one frame with the total length.
    c1.send(&[&b"ab"[..], &b""[..], &b"cde"[..]]).await.unwrap();
    let mut data = words(&[1024, 5]);
    data.extend_from_slice(b"abcde");
    expect_bytes(&mut s, &data).await;
    // An empty message is a frame of length 0.
    c1.send::<&[u8]>(&[]).await.unwrap();
    expect_bytes(&mut s, &words(&[1024, 0])).await;

    let c2 = ep.connect(&target).await.unwrap();
    expect_bytes(&mut s, &words(&[0, 1025])).await;

    // ProbeSocket is answered with ProbeSocketAck.
    s.write_all(&words(&[4])).await.unwrap();
    expect_bytes(&mut s, &words(&[5])).await;

    // The peer opens a connection to us: lcid 2000, so our CloseSocket must name it.
    s.write_all(&words(&[0, 2000])).await.unwrap();
    let (id, from) = expect_opened(&ep).await;
    assert_eq!(from, target);
    assert_eq!(id.lcid(), 2000);
    assert_eq!(id.heavyweight(), 1);
    s.write_all(&words(&[1, 2000])).await.unwrap();
    assert_eq!(expect_closed(&ep).await, id);

    c1.close().await;
    expect_bytes(&mut s, &words(&[1, 1024])).await; // CloseConnection 1024
    c2.close().await;
    // Last one closed: CloseConnection 1025, then CloseSocket(last incoming = 2000).
    expect_bytes(&mut s, &words(&[1, 1025, 2, 2000])).await;
    // Agree (our last sent id is 1025): we close the socket.
    s.write_all(&words(&[2, 1025])).await.unwrap();
    expect_eof(&mut s).await;
    t.close().await;
}

#[tokio::test]
async fn close_end_point_and_unaddressable_request() {
    let t = Transport::unaddressable(Config::default());
    let ep = t.open_endpoint().await.unwrap();
    assert_eq!(ep.address().as_bytes().len(), 36);
    let raw = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = EndPointAddress::new("127.0.0.1", raw.local_addr().unwrap().port(), 3);
    let connecting = tokio::spawn({
        let ep = ep.clone();
        async move { ep.connect(&target).await }
    });
    let mut s = accept(&raw).await;
    // N = 0: no origin address.
    expect_bytes(&mut s, &words(&[0, 8, 3, 0])).await;
    s.write_all(&words(&[0])).await.unwrap();
    let _c = within("connect", connecting).await.unwrap().unwrap();
    expect_bytes(&mut s, &words(&[0, 1024])).await;
    ep.close().await;
    expect_bytes(&mut s, &words(&[3])).await; // CloseEndPoint
    expect_eof(&mut s).await;
}

#[tokio::test]
async fn we_answer_close_socket_with_close_socket() {
    let t = transport().await;
    let ep = t.open_endpoint().await.unwrap();
    let mut s = TcpStream::connect(t.local_addr().unwrap()).await.unwrap();
    s.write_all(&request(0, 0, b"127.0.0.1:1:0")).await.unwrap();
    expect_bytes(&mut s, &words(&[0])).await;
    s.write_all(&words(&[0, 1024, 1, 1024])).await.unwrap();
    expect_opened(&ep).await;
    expect_closed(&ep).await;
    // We never opened a connection on this socket: our last sent id is 0.
    s.write_all(&words(&[2, 0])).await.unwrap();
    expect_bytes(&mut s, &words(&[2, 1024])).await;
    expect_eof(&mut s).await;
    t.close().await;
}

#[tokio::test]
async fn server_answers_accepted_and_invalid() {
    let t = transport().await;
    let _ep = t.open_endpoint().await.unwrap();
    let mut s = TcpStream::connect(t.local_addr().unwrap()).await.unwrap();
    s.write_all(&request(0, 7, b"127.0.0.1:1:0")).await.unwrap();
    expect_bytes(&mut s, &words(&[1])).await; // Invalid
    expect_eof(&mut s).await;

    let mut s = TcpStream::connect(t.local_addr().unwrap()).await.unwrap();
    s.write_all(&request(0, 0, b"127.0.0.1:1:0")).await.unwrap();
    expect_bytes(&mut s, &words(&[0])).await; // Accepted
    t.close().await;
    expect_bytes(&mut s, &words(&[3])).await; // CloseEndPoint on transport close
    expect_eof(&mut s).await;
}

#[tokio::test]
async fn server_answers_crossed_and_probes_the_old_socket() {
    let t = transport().await;
    let ep = t.open_endpoint().await.unwrap();
    let mut old = TcpStream::connect(t.local_addr().unwrap()).await.unwrap();
    old.write_all(&request(0, 0, b"127.0.0.1:9:0"))
        .await
        .unwrap();
    expect_bytes(&mut old, &words(&[0])).await;
    // Same origin again while the first socket is healthy.
    let mut new = TcpStream::connect(t.local_addr().unwrap()).await.unwrap();
    new.write_all(&request(0, 0, b"127.0.0.1:9:0"))
        .await
        .unwrap();
    expect_bytes(&mut new, &words(&[2])).await; // Crossed
    expect_eof(&mut new).await;
    expect_bytes(&mut old, &words(&[4])).await; // ProbeSocket on the old one
    old.write_all(&words(&[5, 0, 1024])).await.unwrap(); // ack, and it still works
    let (id, _) = expect_opened(&ep).await;
    assert_eq!(id.lcid(), 1024);
    t.close().await;
}

#[tokio::test]
async fn server_answers_host_mismatch() {
    let config = Config::default().with_check_peer_host(true);
    let t = transport_with(config).await;
    let _ep = t.open_endpoint().await.unwrap();
    let mut s = TcpStream::connect(t.local_addr().unwrap()).await.unwrap();
    s.write_all(&request(0, 0, b"10.1.2.3:1:0")).await.unwrap();
    let mut want = words(&[3, 8]);
    want.extend_from_slice(b"10.1.2.3");
    want.extend_from_slice(&words(&[9]));
    want.extend_from_slice(b"127.0.0.1");
    want.extend_from_slice(&words(&[8]));
    want.extend_from_slice(b"10.1.2.3");
    expect_bytes(&mut s, &want).await;
    expect_eof(&mut s).await;
    // The truthful claim passes.
    let mut s = TcpStream::connect(t.local_addr().unwrap()).await.unwrap();
    s.write_all(&request(0, 0, b"127.0.0.1:1:0")).await.unwrap();
    expect_bytes(&mut s, &words(&[0])).await;
    t.close().await;
}

#[tokio::test]
async fn server_renegotiates_an_unsupported_version_on_the_same_socket() {
    let t = transport().await;
    let ep = t.open_endpoint().await.unwrap();
    let mut s = TcpStream::connect(t.local_addr().unwrap()).await.unwrap();
    // Version 7 with a 12-byte body of unknown layout.
    let mut v7 = words(&[7, 12]);
    v7.extend_from_slice(b"unknown body");
    s.write_all(&v7).await.unwrap();
    expect_bytes(&mut s, &words(&[0xFFFF_FFFF, 0])).await;
    s.write_all(&request(0, 0, b"127.0.0.1:2:0")).await.unwrap();
    expect_bytes(&mut s, &words(&[0])).await;
    s.write_all(&words(&[0, 1024])).await.unwrap();
    let (_, from) = expect_opened(&ep).await;
    assert_eq!(from.as_bytes(), b"127.0.0.1:2:0");
    t.close().await;
}

#[tokio::test]
async fn bad_requests_close_without_an_answer() {
    let config = Config::default().with_max_address_length(32);
    let t = transport_with(config).await;
    let _ep = t.open_endpoint().await.unwrap();
    let too_long = vec![b'a'; 33];
    for bad in [
        request(0, 0, &too_long),
        request(0, 0, b"no-port-or-id"),
        // Inner lengths that do not add up.
        words(&[0, 12, 0, 1, 0x41414141]),
        // A version-7 body larger than the bound.
        words(&[7, 1 << 30]),
    ] {
        let mut s = TcpStream::connect(t.local_addr().unwrap()).await.unwrap();
        s.write_all(&bad).await.unwrap();
        expect_eof(&mut s).await;
    }
    t.close().await;
}

#[tokio::test]
async fn silent_client_is_cut_after_the_connect_timeout() {
    let config = Config::default().with_connect_timeout(Some(Duration::from_millis(200)));
    let t = transport_with(config).await;
    let _ep = t.open_endpoint().await.unwrap();
    let mut s = TcpStream::connect(t.local_addr().unwrap()).await.unwrap();
    s.write_all(&words(&[0])).await.unwrap(); // half a header, then silence
    expect_eof(&mut s).await;
    t.close().await;
}

#[tokio::test]
async fn ipv6_both_directions() {
    let Ok(t6) = Transport::bind("::1", 0, Config::default()).await else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let server = t6.open_endpoint().await.unwrap();
    assert!(server.address().as_bytes().starts_with(b"::1:"));
    let t2 = Transport::bind("::1", 0, Config::default()).await.unwrap();
    let client = t2.open_endpoint().await.unwrap();
    let c = client.connect(server.address()).await.unwrap();
    c.send(&[b"v6"]).await.unwrap();
    let (id, from) = expect_opened(&server).await;
    assert_eq!(&from, client.address());
    assert_eq!(expect_received(&server).await, (id, b"v6".to_vec()));
    // And back, over the same socket.
    let back = server.connect(&from).await.unwrap();
    back.send(&[b"6v"]).await.unwrap();
    let (bid, _) = expect_opened(&client).await;
    assert_eq!(
        recv(&client).await,
        Event::Received {
            id: bid,
            data: vec![bytes::Bytes::from_static(b"6v")]
        }
    );
    t6.close().await;
    t2.close().await;
}

/// Sets up a crossing: our endpoint (advertising `127.0.0.1:{our_port}:0`) connects to a
/// raw peer, which, before answering, sends its own request back to us claiming the very
/// address we dialled. Returns our request's socket (peer side), the peer's own socket to
/// us, and the pending connect.
async fn crossing(
    our_port: u16,
    smaller: bool,
) -> (
    Transport,
    nodelink_transport::EndPoint,
    TcpStream,
    TcpStream,
    tokio::task::JoinHandle<Result<nodelink_transport::Connection, nodelink_transport::Error>>,
) {
    let t = Transport::bind_with_external(
        "127.0.0.1",
        0,
        move |_| ("127.0.0.1".into(), our_port),
        Config::default(),
    )
    .await
    .unwrap();
    let ep = t.open_endpoint().await.unwrap();
    let raw = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = EndPointAddress::new("127.0.0.1", raw.local_addr().unwrap().port(), 0);
    assert_eq!(ep.address() < &peer, smaller, "{} vs {peer}", ep.address());
    let connecting = tokio::spawn({
        let ep = ep.clone();
        let peer = peer.clone();
        async move { ep.connect(&peer).await }
    });
    let mut ours = accept(&raw).await;
    let our_addr = ep.address().as_bytes().to_vec();
    expect_bytes(&mut ours, &request(0, 0, &our_addr)).await;
    let mut theirs = TcpStream::connect(t.local_addr().unwrap()).await.unwrap();
    theirs
        .write_all(&request(0, 0, peer.as_bytes()))
        .await
        .unwrap();
    (t, ep, ours, theirs, connecting)
}

#[tokio::test]
async fn crossed_request_from_a_larger_address_gets_crossed() {
    // Ours ("127.0.0.1:1:0") is smaller: we answer their request Crossed at once.
    let (t, ep, mut ours, mut theirs, connecting) = crossing(1, true).await;
    expect_bytes(&mut theirs, &words(&[2])).await;
    expect_eof(&mut theirs).await;
    // Our request wins: the peer accepts it and it carries our connection.
    ours.write_all(&words(&[0])).await.unwrap();
    let conn = within("connect", connecting).await.unwrap().unwrap();
    expect_bytes(&mut ours, &words(&[0, 1024])).await;
    conn.send(&[b"x"]).await.unwrap();
    let mut data = words(&[1024, 1]);
    data.push(b'x');
    expect_bytes(&mut ours, &data).await;
    drop(ep);
    t.close().await;
}

#[tokio::test]
async fn crossed_request_from_a_smaller_address_wins() {
    // Ours ("127.0.0.1:9:0") is larger: we hold their request until ours is answered
    // Crossed, then accept theirs, and our connect uses that socket.
    let (t, ep, mut ours, mut theirs, connecting) = crossing(9, false).await;
    let mut b = [0u8; 4];
    assert!(
        tokio::time::timeout(Duration::from_millis(100), theirs.read(&mut b))
            .await
            .is_err(),
        "answered before our own request was resolved"
    );
    ours.write_all(&words(&[2])).await.unwrap(); // Crossed
    expect_eof(&mut ours).await;
    expect_bytes(&mut theirs, &words(&[0])).await; // Accepted
    let conn = within("connect", connecting).await.unwrap().unwrap();
    expect_bytes(&mut theirs, &words(&[0, 1024])).await;
    conn.send(&[b"y"]).await.unwrap();
    let mut data = words(&[1024, 1]);
    data.push(b'y');
    expect_bytes(&mut theirs, &data).await;
    // Their connections arrive on the same socket.
    theirs.write_all(&words(&[0, 1024])).await.unwrap();
    let (id, _) = expect_opened(&ep).await;
    assert_eq!(id.lcid(), 1024);
    t.close().await;
}

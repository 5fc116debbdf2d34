//! The TCP-specific suite of network-transport-tcp (its conformance tests), second half: teardown and
//! socket-state tests (early disconnects, CloseSocket handling, half-closed sockets,
//! CloseEndPoint, crossed requests), speaking raw bytes on a plain socket as the original
//! does (see `h2_support::Raw`). The first half is `tcp_suite.rs`. Every wait is bounded.

mod h2_support;

use std::time::Duration;

use h2_support::*;
use nodelink_transport::{Connection, EndPoint, EndPointAddress, ErrorKind, Event, Transport};

/// A peer that disconnects without any goodbye: EventConnectionLost, never ConnectionClosed,
/// in both roles (it had connected to us; we had connected to it).
#[tokio::test]
async fn test_early_disconnect() {
    let t = transport().await;
    let ep = endpoint(&t).await;

    // It connected to us, opened a lightweight connection, sent, and vanished.
    let origin = "127.0.0.1:9:0";
    let mut raw = Raw::accepted(ep.address(), origin).await;
    raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    raw.write(&data_frame(1024, b"hello")).await;
    let (id, from) = expect_opened(&ep).await;
    assert_eq!(from.as_bytes(), origin.as_bytes());
    assert_eq!(id.0 & 0xFFFF_FFFF, 1024, "low half of the id is the lcid");
    assert_ne!(
        id.0 >> 32,
        0,
        "heavyweight id 0 is reserved for self-connections"
    );
    assert_eq!(expect_received(&ep, id).await, b"hello");
    drop(raw);
    expect_lost(&ep, &from).await;

    // We connected to it; it accepted, read our first message, and vanished.
    let server = RawServer::bind().await;
    let connecting = {
        let ep = ep.clone();
        let to = server.address.clone();
        tokio::spawn(async move { ep.connect(&to).await })
    };
    let (mut peer, target, origin) = server.accept_request().await;
    assert_eq!(target, 0);
    assert_eq!(origin, ep.address().as_bytes());
    peer.write(&u32s(&[ACCEPTED])).await;
    let conn = within("connect", connecting)
        .await
        .unwrap()
        .expect("connect");
    conn.send(&[b"ping"]).await.expect("send");
    assert_eq!(
        peer.read_frame().await.unwrap(),
        RawFrame::Control(CREATED_NEW_CONNECTION, Some(1024))
    );
    assert_eq!(
        peer.read_frame().await.unwrap(),
        RawFrame::Data(1024, b"ping".to_vec())
    );
    drop(peer);
    expect_lost(&ep, &server.address).await;
    let err = within("send after loss", conn.send(&[b"x"]))
        .await
        .expect_err("send on a lost connection fails");
    assert_eq!(err.kind(), ErrorKind::SendFailed);
    within("close", t.close()).await;
}

/// The peer sends CloseSocket while we still have an outgoing connection to it: its own
/// connections are closed, ours stays usable (no teardown), until it really disconnects.
#[tokio::test]
async fn test_early_close_socket() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    let server = RawServer::bind().await;
    let connecting = {
        let ep = ep.clone();
        let to = server.address.clone();
        tokio::spawn(async move { ep.connect(&to).await })
    };
    let (mut peer, _, _) = server.accept_request().await;
    peer.write(&u32s(&[ACCEPTED])).await;
    let conn = within("connect", connecting)
        .await
        .unwrap()
        .expect("connect");
    conn.send(&[b"ping"]).await.expect("send");
    assert_eq!(
        peer.read_frame().await.unwrap(),
        RawFrame::Control(CREATED_NEW_CONNECTION, Some(1024))
    );
    assert_eq!(
        peer.read_frame().await.unwrap(),
        RawFrame::Data(1024, b"ping".to_vec())
    );

    // The peer opens, uses and closes a connection of its own, then asks to close the
    // socket although we still have an outgoing connection.
    let mut bytes = u32s(&[CREATED_NEW_CONNECTION, 1024]);
    bytes.extend(data_frame(1024, b"pong"));
    bytes.extend(u32s(&[CLOSE_CONNECTION, 1024, CLOSE_SOCKET, 1024]));
    peer.write(&bytes).await;
    let (id, from) = expect_opened(&ep).await;
    assert_eq!(from, server.address);
    assert_eq!(expect_received(&ep, id).await, b"pong");
    expect_closed(&ep, id).await;

    // Still Valid: our connection works and we did not answer with CloseSocket.
    conn.send(&[b"again"])
        .await
        .expect("send after the peer's CloseSocket");
    assert_eq!(
        peer.read_frame().await.unwrap(),
        RawFrame::Data(1024, b"again".to_vec())
    );

    drop(peer);
    expect_lost(&ep, &server.address).await;
    within("close", t.close()).await;
}

/// CloseSocket that crossed our CreatedNewConnection (its lastReceivedId is stale) is
/// ignored; a later, current CloseSocket completes the teardown.
#[tokio::test]
async fn test_ignore_close_socket() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    let (server, mut raw) = raw_peer(&ep).await;
    raw.write(&u32s(&[
        CREATED_NEW_CONNECTION,
        1024,
        CLOSE_CONNECTION,
        1024,
    ]))
    .await;
    let (id, _) = expect_opened(&ep).await;
    expect_closed(&ep, id).await;

    // We open a connection to the peer: it must reuse the socket.
    let conn = connect_back(&ep, &server, &mut raw).await;
    // The peer, as if it had not seen that yet, asks to close (it has received nothing).
    raw.write(&u32s(&[CLOSE_SOCKET, 0])).await;
    conn.send(&[b"still here"]).await.expect("send");
    assert_eq!(
        raw.read_frame().await.unwrap(),
        RawFrame::Data(1024, b"still here".to_vec())
    );

    // A local close starts the real teardown: CloseConnection, then CloseSocket(last
    // incoming lcid = 1024).
    within("close conn", conn.close()).await;
    assert_eq!(
        raw.read_frame().await.unwrap(),
        RawFrame::Control(CLOSE_CONNECTION, Some(1024))
    );
    assert_eq!(
        raw.read_frame().await.unwrap(),
        RawFrame::Control(CLOSE_SOCKET, Some(1024))
    );
    // Our reply acknowledges its last lcid: the socket is closed, with no error.
    agree_close(&mut raw, &ep, 1024).await;
    within("close", t.close()).await;
}

/// Closes that cross (docs/protocols/transport.md, "Closes that cross"): the peer
/// closes its last connection to us at the moment we close our last one to it, so each
/// CloseConnection arrives after the receiver's own close. We must still start the
/// CloseSocket exchange once nothing is open, and the socket must end; the raw peer answers
/// as the original does (a CloseSocket naming its last lcid, received while it has nothing
/// open, is acknowledged and the socket closed).
#[tokio::test]
async fn test_crossed_closes_end_the_socket() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    let (server, mut raw) = raw_peer(&ep).await;
    raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    let (id, _) = expect_opened(&ep).await;
    let conn = connect_back(&ep, &server, &mut raw).await;

    // Our close: the peer still has a connection open, so no CloseSocket yet.
    within("close conn", conn.close()).await;
    assert_eq!(
        raw.read_frame().await.unwrap(),
        RawFrame::Control(CLOSE_CONNECTION, Some(1024))
    );
    // The peer's close, sent before it saw ours: it has nothing open after it either, and
    // (like the original) starts no teardown on a received CloseConnection.
    raw.write(&u32s(&[CLOSE_CONNECTION, 1024])).await;
    expect_closed(&ep, id).await;
    // So we must: CloseSocket naming the last lcid the peer announced.
    assert_eq!(
        raw.read_frame().await.unwrap(),
        RawFrame::Control(CLOSE_SOCKET, Some(1024))
    );
    // The socket ends by agreement: no ConnectionLost for a peer we have nothing open with.
    agree_close(&mut raw, &ep, 1024).await;
    within("close", t.close()).await;
}

/// A received CloseConnection that leaves nothing open starts no teardown when we closed
/// nothing ourselves: the peer, which closed last, is the one that sends CloseSocket.
#[tokio::test]
async fn test_peer_close_connection_alone_starts_no_teardown() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    let (_server, mut raw) = raw_peer(&ep).await;
    raw.write(&u32s(&[
        CREATED_NEW_CONNECTION,
        1024,
        CLOSE_CONNECTION,
        1024,
    ]))
    .await;
    let (id, _) = expect_opened(&ep).await;
    expect_closed(&ep, id).await;
    // A probe's answer shows that everything before it was handled and nothing was sent.
    raw.write(&u32s(&[PROBE_SOCKET])).await;
    assert_eq!(
        raw.read_frame().await.unwrap(),
        RawFrame::Control(PROBE_SOCKET_ACK, None)
    );
    within("close", t.close()).await;
}

/// After sending CloseSocket to a peer that never answers, the endpoint does not block:
/// a new connect to that peer ends within the connect timeout, other peers are served, and
/// closing the endpoint returns.
#[tokio::test]
async fn test_block_after_close_socket() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    let (server, mut raw) = raw_peer(&ep).await;
    let conn = within("connect back", ep.connect(&server.address))
        .await
        .expect("connect over the live socket");
    within("close conn", conn.close()).await;
    assert_eq!(
        raw.read_frame().await.unwrap(),
        RawFrame::Control(CREATED_NEW_CONNECTION, Some(1024))
    );
    assert_eq!(
        raw.read_frame().await.unwrap(),
        RawFrame::Control(CLOSE_CONNECTION, Some(1024))
    );
    assert_eq!(
        raw.read_frame().await.unwrap(),
        RawFrame::Control(CLOSE_SOCKET, Some(0))
    );
    // The peer stays silent. A new connect waits for the Closing socket, boundedly.
    let again = within_for(
        CONNECT_TIMEOUT * 4 + Duration::from_secs(2),
        "connect to a peer that never finishes closing",
        ep.connect(&server.address),
    )
    .await;
    if let Err(e) = &again {
        assert_eq!(e.kind(), ErrorKind::ConnectTimeout, "{e}");
    }
    // Other peers are unaffected.
    let t2 = transport().await;
    let other = endpoint(&t2).await;
    let c = within("connect", other.connect(ep.address()))
        .await
        .expect("connect");
    c.send(&[b"hi"]).await.expect("send");
    loop {
        match next(&ep).await {
            Event::Received { data, .. } => {
                assert_eq!(concat(&data), b"hi");
                break;
            }
            Event::ConnectionOpened { .. }
            | Event::Error { .. }
            | Event::ConnectionClosed { .. } => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    within_for(Duration::from_secs(5), "close the endpoint", ep.close()).await;
    within("close", t.close()).await;
    within("close", t2.close()).await;
    drop(raw);
}

/// A socket that is lost while we close it (nothing in use) ends that close: a connect
/// waiting for the close dials a new socket instead of failing (the original fails it).
#[tokio::test]
async fn a_connect_waiting_on_a_close_redials_when_the_socket_is_lost() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    let (server, mut raw) = raw_peer(&ep).await;
    let conn = within("connect back", ep.connect(&server.address))
        .await
        .expect("connect over the live socket");
    within("close conn", conn.close()).await;
    for expected in [
        RawFrame::Control(CREATED_NEW_CONNECTION, Some(1024)),
        RawFrame::Control(CLOSE_CONNECTION, Some(1024)),
        RawFrame::Control(CLOSE_SOCKET, Some(0)),
    ] {
        assert_eq!(raw.read_frame().await.unwrap(), expected);
    }
    // A connect now waits for the close; the peer then drops the socket unanswered.
    let connecting = {
        let (ep, to) = (ep.clone(), server.address.clone());
        tokio::spawn(async move { ep.connect(&to).await })
    };
    tokio::task::yield_now().await;
    drop(raw);
    // The waiting connect dials again, and this time the peer accepts.
    let (mut again, _, origin) = within("a new request", server.accept_request()).await;
    assert_eq!(origin, ep.address().as_bytes());
    again.write(&u32s(&[ACCEPTED])).await;
    let conn = within("connect", connecting)
        .await
        .unwrap()
        .expect("the waiting connect succeeds on a new socket");
    conn.send(&[b"after"]).await.expect("send");
    assert_eq!(
        again.read_frame().await.unwrap(),
        RawFrame::Control(CREATED_NEW_CONNECTION, Some(1024))
    );
    within("close", t.close()).await;
}

/// A half-closed socket (the peer shut down its writing side) counts as lost: the event is
/// posted, our sends fail, our side closes, and a later connect reconnects.
#[tokio::test]
async fn test_unidirectional_error() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    let (server, mut raw) = raw_peer(&ep).await;
    raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    let (_, from) = expect_opened(&ep).await;
    let conn = connect_back(&ep, &server, &mut raw).await;
    use tokio::io::AsyncWriteExt;
    within("shutdown", raw.stream.shutdown()).await.unwrap();
    expect_lost(&ep, &from).await;
    let e = within("send", conn.send(&[b"x"]))
        .await
        .expect_err("send after loss");
    assert_eq!(e.kind(), ErrorKind::SendFailed, "{e}");
    raw.read_to_close(STEP).await;

    // Recovery: a new connect dials the peer's advertised address.
    let connecting = {
        let ep = ep.clone();
        let to = server.address.clone();
        tokio::spawn(async move { ep.connect(&to).await })
    };
    let (mut p, _, origin) = server.accept_request().await;
    assert_eq!(origin, ep.address().as_bytes());
    p.write(&u32s(&[ACCEPTED])).await;
    let conn = within("reconnect", connecting)
        .await
        .unwrap()
        .expect("reconnect");
    conn.send(&[b"back"]).await.unwrap();
    assert_eq!(
        p.read_frame().await.unwrap(),
        RawFrame::Control(CREATED_NEW_CONNECTION, Some(1024))
    );
    assert_eq!(
        p.read_frame().await.unwrap(),
        RawFrame::Data(1024, b"back".to_vec())
    );
    within("close", t.close()).await;
}

/// CloseConnection for an lcid that is not open drops the heavyweight connection.
#[tokio::test]
async fn test_invalid_close_connection() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    let origin = "127.0.0.1:11:0";
    let mut raw = Raw::accepted(ep.address(), origin).await;
    raw.write(&u32s(&[
        CREATED_NEW_CONNECTION,
        1024,
        CLOSE_CONNECTION,
        1025,
    ]))
    .await;
    let (_, from) = expect_opened(&ep).await;
    raw.read_to_close(STEP).await;
    expect_lost(&ep, &from).await;
    // Other peers are fine.
    let mut ok = Raw::accepted(ep.address(), "127.0.0.1:12:0").await;
    ok.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    ok.write(&data_frame(1024, b"fine")).await;
    let (id, _) = expect_opened(&ep).await;
    assert_eq!(expect_received(&ep, id).await, b"fine");
    within("close", t.close()).await;
}

/// A malicious client that never reads nor answers cannot hold up closeEndPoint: it
/// returns within 5 s, and the client reads CloseEndPoint (if anything) then end of file.
#[tokio::test]
async fn test_close_end_point_silent_client() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    let (server, raw) = raw_peer(&ep).await;
    // Our outgoing connection to it, with far more queued than socket buffers hold.
    let conn = within("connect back", ep.connect(&server.address))
        .await
        .unwrap();
    let flood = tokio::spawn(async move {
        let big = vec![0u8; 1 << 20];
        for _ in 0..64 {
            if conn.send(&[&big]).await.is_err() {
                break;
            }
        }
    });
    // Another client that stops half-way through its handshake.
    let mut half = Raw::connect(sock_addr(ep.address())).await;
    half.write(&u32s(&[0, 25])).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    within_for(
        Duration::from_secs(5),
        "closeEndPoint with a silent client",
        ep.close(),
    )
    .await;
    within("the flooding send ends", flood).await.unwrap();
    half.read_to_close(STEP).await;
    drop(raw);
    within("close", t.close()).await;
}

/// A peer's CloseEndPoint: its incoming connections are closed, ConnectionLost is posted
/// only if we had outgoing connections to it, and the socket is closed.
#[tokio::test]
async fn test_peer_close_end_point() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    // Without outgoing connections: ConnectionClosed only.
    let mut raw = Raw::accepted(ep.address(), "127.0.0.1:13:0").await;
    raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024, CLOSE_END_POINT]))
        .await;
    let (id, _) = expect_opened(&ep).await;
    expect_closed(&ep, id).await;
    raw.read_to_close(STEP).await;
    assert!(next_within(&ep, Duration::from_millis(200)).await.is_none());

    // With an outgoing connection: ConnectionClosed, then ConnectionLost.
    let (server, mut raw) = raw_peer(&ep).await;
    raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    let (id, _) = expect_opened(&ep).await;
    let conn = within("connect back", ep.connect(&server.address))
        .await
        .unwrap();
    assert_eq!(
        raw.read_frame().await.unwrap(),
        RawFrame::Control(CREATED_NEW_CONNECTION, Some(1024))
    );
    raw.write(&u32s(&[CLOSE_END_POINT])).await;
    expect_closed(&ep, id).await;
    expect_lost(&ep, &server.address).await;
    raw.read_to_close(STEP).await;
    let e = within("send", conn.send(&[b"x"]))
        .await
        .expect_err("peer gone");
    assert_eq!(e.kind(), ErrorKind::SendFailed, "{e}");
    within("close", t.close()).await;
}

/// A raw peer that connected to `ep` and was accepted. It advertises `server`'s address,
/// which nobody dials: our connects to it reuse this socket.
async fn raw_peer(ep: &EndPoint) -> (RawServer, Raw) {
    let server = RawServer::bind().await;
    let origin = server.address.to_string();
    let raw = Raw::accepted(ep.address(), &origin).await;
    (server, raw)
}

/// Connects `ep` back to the raw peer over its socket; the peer reads the announcement.
async fn connect_back(ep: &EndPoint, server: &RawServer, raw: &mut Raw) -> Connection {
    let conn = within("connect back", ep.connect(&server.address))
        .await
        .expect("connect back over the live socket");
    assert_eq!(
        raw.read_frame().await.unwrap(),
        RawFrame::Control(CREATED_NEW_CONNECTION, Some(1024))
    );
    conn
}

/// The raw peer answers our CloseSocket with its own naming `last` (our last lcid): the
/// socket must end with nothing more on the wire and no error event.
async fn agree_close(raw: &mut Raw, ep: &EndPoint, last: u32) {
    raw.write(&u32s(&[CLOSE_SOCKET, last])).await;
    let rest = raw.read_to_close(STEP).await;
    assert!(rest.is_empty(), "unexpected bytes {rest:?}");
    assert!(next_within(ep, Duration::from_millis(200)).await.is_none());
}

/// A raw server listening on `host`, posing as a transport there.
async fn raw_server_on(host: &str) -> RawServer {
    let listener = tokio::net::TcpListener::bind((host, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().unwrap().port();
    RawServer {
        listener,
        address: EndPointAddress::new(host, port, 0),
    }
}

/// Crossed requests on the wire (docs/protocols/transport.md, "Crossed requests and probes"): the request from the smaller address wins.
/// 127.0.0.1 sorts before 127.0.0.2, which fixes who is smaller.
#[tokio::test]
async fn test_crossed_requests_raw() {
    // The peer is smaller: we hold its request until ours is answered Crossed, then
    // accept it and use that socket.
    let t = within("bind", Transport::bind("127.0.0.2", 0, config()))
        .await
        .unwrap();
    let ep = endpoint(&t).await;
    let peer = raw_server_on("127.0.0.1").await;
    assert!(peer.address < *ep.address());
    let connecting = {
        let ep = ep.clone();
        let to = peer.address.clone();
        tokio::spawn(async move {
            let c = ep.connect(&to).await?;
            c.send(&[b"won"]).await?;
            Ok::<_, nodelink_transport::Error>(c)
        })
    };
    let (mut ours, _, _) = peer.accept_request().await;
    let (_, _, id) = ep.address().parse().unwrap();
    let mut theirs = Raw::connect(sock_addr(ep.address())).await;
    theirs.write(&request(id, peer.address.as_bytes())).await;
    assert!(
        theirs.stays_quiet(Duration::from_millis(300)).await,
        "the larger side must hold the smaller side's request"
    );
    ours.write(&u32s(&[CROSSED])).await;
    drop(ours);
    assert_eq!(theirs.read_u32().await.unwrap(), ACCEPTED);
    within("connect", connecting)
        .await
        .unwrap()
        .expect("connect over their socket");
    assert_eq!(
        theirs.read_frame().await.unwrap(),
        RawFrame::Control(CREATED_NEW_CONNECTION, Some(1024))
    );
    assert_eq!(
        theirs.read_frame().await.unwrap(),
        RawFrame::Data(1024, b"won".to_vec())
    );
    within("close", t.close()).await;

    // The peer is larger: its request is answered Crossed at once, ours is the socket.
    let t = transport().await;
    let ep = endpoint(&t).await;
    let peer = raw_server_on("127.0.0.2").await;
    assert!(peer.address > *ep.address());
    let connecting = {
        let ep = ep.clone();
        let to = peer.address.clone();
        tokio::spawn(async move { ep.connect(&to).await })
    };
    let (mut ours, _, _) = peer.accept_request().await;
    let (theirs, response) = Raw::handshake(ep.address(), &peer.address.to_string()).await;
    assert_eq!(response, CROSSED);
    let mut theirs = theirs;
    theirs.read_to_close(STEP).await;
    ours.write(&u32s(&[ACCEPTED])).await;
    let conn = within("connect", connecting)
        .await
        .unwrap()
        .expect("connect");
    conn.send(&[b"mine"]).await.unwrap();
    assert_eq!(
        ours.read_frame().await.unwrap(),
        RawFrame::Control(CREATED_NEW_CONNECTION, Some(1024))
    );
    assert_eq!(
        ours.read_frame().await.unwrap(),
        RawFrame::Data(1024, b"mine".to_vec())
    );
    within("close", t.close()).await;
}

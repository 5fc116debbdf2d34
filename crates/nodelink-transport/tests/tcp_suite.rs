//! The TCP-specific conformance suite of network-transport-tcp, as named tests, first
//! half: binding, connecting and its errors, limits, the peer-host check, unaddressable
//! endpoints and IPv6. Where the original speaks raw bytes on a plain socket, so do these
//! (see `h2_support::Raw`): the layouts come from docs/protocols/transport.md, not from the crate's codec.
//! The teardown and socket-state tests are in `tcp_teardown.rs`. Every wait is bounded.

mod h2_support;

use std::time::Duration;

use h2_support::*;
use nodelink_transport::{EndPointAddress, ErrorKind, Event, EventErrorKind, Transport};

/// Binding port 0 reports the real port in the local address and in endpoint addresses.
#[tokio::test]
async fn test_random_port() {
    let t = transport().await;
    let port = t.local_addr().expect("a listening socket").port();
    assert_ne!(port, 0);
    let a = endpoint(&t).await;
    let b = endpoint(&t).await;
    assert_eq!(a.address().to_string(), format!("127.0.0.1:{port}:0"));
    assert_eq!(
        b.address().as_bytes(),
        format!("127.0.0.1:{port}:1").as_bytes()
    );
    assert_eq!(
        a.address().parse(),
        Some(("127.0.0.1".to_string(), port, 0))
    );
    // Something really listens there.
    let raw = Raw::accepted(a.address(), "127.0.0.1:1:0").await;
    drop(raw);
    within("close", t.close()).await;
}

/// Binding an invalid host fails with ErrorKind::Bind.
#[tokio::test]
async fn test_invalid_address() {
    let e = within("bind", Transport::bind("no-such-host.invalid", 0, config()))
        .await
        .expect_err("binding an unresolvable host fails");
    assert_eq!(e.kind(), ErrorKind::Bind, "{e}");
    let e = within("bind", Transport::bind("256.1.1.1", 0, config()))
        .await
        .expect_err("binding a malformed host fails");
    assert_eq!(e.kind(), ErrorKind::Bind, "{e}");
}

/// Malformed address, unknown host, nobody listening, unknown endpoint id: each gives the
/// spec's error kind.
#[tokio::test]
async fn test_invalid_connect() {
    let t = transport().await;
    let ep = endpoint(&t).await;

    for bad in [
        "not an address",
        "127.0.0.1:notaport:0",
        "127.0.0.1:80:x",
        "",
    ] {
        let to = EndPointAddress::from_bytes(bad.as_bytes().to_vec());
        let e = within("connect", ep.connect(&to)).await.expect_err("fails");
        assert_eq!(e.kind(), ErrorKind::ConnectFailed, "{bad:?}: {e}");
    }

    let to: EndPointAddress = "no-such-host.invalid:8080:0".parse().unwrap();
    let e = within("connect", ep.connect(&to)).await.expect_err("fails");
    assert!(
        matches!(
            e.kind(),
            ErrorKind::ConnectNotFound | ErrorKind::ConnectTimeout
        ),
        "unknown host: {e}"
    );

    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unused.local_addr().unwrap().port();
    drop(unused);
    let to = EndPointAddress::new("127.0.0.1", port, 0);
    let e = within("connect", ep.connect(&to)).await.expect_err("fails");
    assert_eq!(
        e.kind(),
        ErrorKind::ConnectNotFound,
        "nobody listening: {e}"
    );

    let port = t.local_addr().unwrap().port();
    let to = EndPointAddress::new("127.0.0.1", port, 77);
    let e = within("connect", ep.connect(&to)).await.expect_err("fails");
    assert_eq!(
        e.kind(),
        ErrorKind::ConnectNotFound,
        "unknown endpoint: {e}"
    );

    // The raw view of the last one: response Invalid, then the socket closes.
    let (mut raw, response) = Raw::handshake(&to, "127.0.0.1:5:0").await;
    assert_eq!(response, INVALID);
    assert!(raw.read_to_close(STEP).await.is_empty());

    // The endpoint still works.
    let t2 = transport().await;
    let other = endpoint(&t2).await;
    let c = within("connect", other.connect(ep.address()))
        .await
        .expect("connect");
    c.send(&[b"ok"]).await.unwrap();
    let (id, _) = expect_opened(&ep).await;
    assert_eq!(expect_received(&ep, id).await, b"ok");
    within("close", t.close()).await;
    within("close", t2.close()).await;
}

/// Ten transports with two endpoints each, all talking to one master endpoint: no mix-ups.
#[tokio::test]
async fn test_many() {
    let mt = transport().await;
    let master = endpoint(&mt).await;
    let mut transports = Vec::new();
    let mut conns = Vec::new();
    let mut expected = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let t = transport().await;
        for _ in 0..2 {
            let ep = endpoint(&t).await;
            let c = within("connect", ep.connect(master.address()))
                .await
                .expect("connect");
            c.send(&[ep.address().as_bytes()]).await.expect("send");
            expected.insert(ep.address().to_string());
            conns.push((ep, c));
        }
        transports.push(t);
    }
    let mut opened = std::collections::HashMap::new();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 20 {
        match next(&master).await {
            Event::ConnectionOpened { id, address, .. } => {
                assert!(opened.insert(id, address).is_none(), "id {id} reused");
            }
            Event::Received { id, data } => {
                let from = opened.get(&id).expect("data on an opened connection");
                assert_eq!(
                    concat(&data),
                    from.as_bytes(),
                    "message on {id} from {from}"
                );
                assert!(seen.insert(from.to_string()));
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(seen, expected);
    for (_, c) in &conns {
        within("close", c.close()).await;
    }
    for _ in 0..20 {
        match next(&master).await {
            Event::ConnectionClosed { id } => assert!(opened.remove(&id).is_some()),
            e => panic!("unexpected {e:?}"),
        }
    }
    for t in transports {
        within("close", t.close()).await;
    }
    within("close", mt.close()).await;
}

/// The accept loop dies: every endpoint of the transport gets EventTransportFailed.
#[tokio::test]
async fn test_break_transport() {
    let t = transport().await;
    let a = endpoint(&t).await;
    let b = endpoint(&t).await;
    t.break_accept_loop_for_tests();
    for ep in [&a, &b] {
        loop {
            match next(ep).await {
                Event::Error {
                    kind: EventErrorKind::TransportFailed,
                    ..
                } => break,
                Event::Error { .. } => {}
                e => panic!("unexpected {e:?}"),
            }
        }
    }
    within("close", t.close()).await;
}

/// The server closes the socket at each stage of connection setup: the connect or the
/// connection fails each time, and the next attempt reconnects and finally succeeds. The
/// mirror image (a client giving up half-way through its request) leaves the endpoint
/// usable and posts nothing.
#[tokio::test]
async fn test_reconnect() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    let server = RawServer::bind().await;

    // Stage 1: accept and close at once. Stage 2: read the request, close. Stage 3: Accepted,
    // then close. Stage 4: Accepted, read the first frames, close. Stage 5: behave.
    for stage in 1..=5 {
        let connecting = {
            let ep = ep.clone();
            let to = server.address.clone();
            tokio::spawn(async move {
                let conn = ep.connect(&to).await?;
                conn.send(&[b"payload"]).await?;
                Ok::<_, nodelink_transport::Error>(conn)
            })
        };
        match stage {
            1 => drop(server.accept().await),
            2 => drop(server.accept_request().await),
            3 => {
                let (mut p, _, _) = server.accept_request().await;
                p.write(&u32s(&[ACCEPTED])).await;
            }
            4 => {
                let (mut p, _, _) = server.accept_request().await;
                p.write(&u32s(&[ACCEPTED])).await;
                assert_eq!(
                    p.read_frame().await.unwrap(),
                    RawFrame::Control(CREATED_NEW_CONNECTION, Some(1024))
                );
            }
            _ => {
                let (mut p, _, _) = server.accept_request().await;
                p.write(&u32s(&[ACCEPTED])).await;
                assert_eq!(
                    p.read_frame().await.unwrap(),
                    RawFrame::Control(CREATED_NEW_CONNECTION, Some(1024))
                );
                assert_eq!(
                    p.read_frame().await.unwrap(),
                    RawFrame::Data(1024, b"payload".to_vec())
                );
                within("connect", connecting)
                    .await
                    .unwrap()
                    .expect("stage 5 works");
                break;
            }
        }
        let outcome = within("connect", connecting).await.unwrap();
        match (stage, outcome) {
            (1 | 2, Ok(_)) => panic!("stage {stage}: connect succeeded"),
            (1 | 2, Err(e)) => assert_eq!(e.kind(), ErrorKind::ConnectFailed, "stage {stage}: {e}"),
            (_, Err(e)) => assert!(
                matches!(e.kind(), ErrorKind::ConnectFailed | ErrorKind::SendFailed),
                "stage {stage}: {e}"
            ),
            (_, Ok(conn)) => {
                // The handshake had completed: the loss is reported, sends then fail.
                expect_lost(&ep, &server.address).await;
                let e = conn.send(&[b"x"]).await.expect_err("send after loss");
                assert_eq!(e.kind(), ErrorKind::SendFailed, "stage {stage}");
            }
        }
        // Drain a ConnectionLost that an Err outcome may also have produced.
        while let Some(ev) = next_within(&ep, Duration::from_millis(100)).await {
            match ev {
                Event::Error {
                    kind: EventErrorKind::ConnectionLost(a),
                    ..
                } if a == server.address => {}
                e => panic!("stage {stage}: unexpected {e:?}"),
            }
        }
    }

    // The mirror image: clients abandoning their request at each point.
    let req = request(0, b"127.0.0.1:7:0");
    for cut in [0, 4, 8, 12, 16, req.len() - 1, req.len()] {
        let mut raw = Raw::connect(sock_addr(ep.address())).await;
        raw.write(&req[..cut]).await;
        if cut == req.len() {
            assert_eq!(raw.read_u32().await.unwrap(), ACCEPTED);
        }
        drop(raw);
        if cut == req.len() {
            expect_lost(&ep, &"127.0.0.1:7:0".parse().unwrap()).await;
        }
    }
    assert!(next_within(&ep, Duration::from_millis(200)).await.is_none());
    let mut good = Raw::accepted(ep.address(), "127.0.0.1:8:0").await;
    good.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    good.write(&data_frame(1024, b"fine")).await;
    let (id, _) = expect_opened(&ep).await;
    assert_eq!(expect_received(&ep, id).await, b"fine");
    within("close", t.close()).await;
}

/// Address and receive limits: over-long addresses close the socket without a response,
/// over-long frames drop the connection (on both sides when both are ours); a client at
/// the limit and other clients are unaffected.
#[tokio::test]
async fn test_max_length() {
    let cfg = config()
        .with_max_address_length(64)
        .with_max_receive_length(1024);
    let t = transport_with(cfg.clone()).await;
    let ep = endpoint(&t).await;
    let friends = Friends::default();
    let mut events = echo_task(ep.clone(), friends.clone());
    let pinger = Pinger::start(ep.address(), &friends).await;

    let long = format!("{}:1:0", "h".repeat(61)); // 65 bytes
    assert_eq!(long.len(), 65);
    let (mut raw, response) = {
        let mut raw = Raw::connect(sock_addr(ep.address())).await;
        raw.write(&request(0, long.as_bytes())).await;
        let r = raw.read_u32().await;
        (raw, r)
    };
    assert!(
        response.is_err(),
        "an over-long address got a response {response:?}"
    );
    raw.read_to_close(STEP).await;

    let at_limit = format!("{}:1:0", "h".repeat(60)); // 64 bytes
    let mut raw = Raw::accepted(ep.address(), &at_limit).await;
    raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    raw.write(&data_frame(1024, &[7; 1024])).await;
    match within("event", events.recv()).await.unwrap() {
        Event::ConnectionOpened { address, .. } => {
            assert_eq!(address.as_bytes(), at_limit.as_bytes())
        }
        e => panic!("unexpected {e:?}"),
    }
    match within("event", events.recv()).await.unwrap() {
        Event::Received { data, .. } => assert_eq!(concat(&data).len(), 1024),
        e => panic!("unexpected {e:?}"),
    }
    raw.write(&data_frame(1024, &[7; 1025])).await;
    raw.read_to_close(STEP).await;
    match within("event", events.recv()).await.unwrap() {
        Event::Error {
            kind: EventErrorKind::ConnectionLost(a),
            ..
        } => assert_eq!(a.as_bytes(), at_limit.as_bytes()),
        e => panic!("unexpected {e:?}"),
    }

    // Both sides ours: the sender learns of the drop too.
    let t2 = transport().await;
    let sender = endpoint(&t2).await;
    let c = within("connect", sender.connect(ep.address()))
        .await
        .unwrap();
    let _ = c.send(&[vec![1u8; 4000]]).await;
    expect_lost(&sender, ep.address()).await;

    pinger.finish().await;
    within("close", t2.close()).await;
    within("close", t.close()).await;
}

/// With check_peer_host on, a client claiming a host it does not connect from gets
/// HostMismatch (claimed, numeric, resolved host) and the socket closes; a true claim is
/// accepted; our own client reports the rejection as ConnectFailed.
#[tokio::test]
async fn test_check_peer_host_reject() {
    let t = transport_with(config().with_check_peer_host(true)).await;
    let ep = endpoint(&t).await;

    let (mut raw, response) = Raw::handshake(ep.address(), "10.9.8.7:1234:0").await;
    assert_eq!(response, HOST_MISMATCH);
    let mut strings = Vec::new();
    for _ in 0..3 {
        let n = raw.read_u32().await.unwrap();
        assert!(n < 1024, "string length {n}");
        strings.push(String::from_utf8(raw.read_exact(n as usize).await.unwrap()).unwrap());
    }
    assert_eq!(strings[0], "10.9.8.7");
    assert_eq!(strings[1], "127.0.0.1");
    raw.read_to_close(STEP).await;

    let ok = Raw::accepted(ep.address(), "127.0.0.1:1234:0").await;
    drop(ok);
    expect_lost(&ep, &"127.0.0.1:1234:0".parse().unwrap()).await;

    let liar = within(
        "bind",
        Transport::bind_with_external("127.0.0.1", 0, |p| ("10.9.8.7".to_string(), p), config()),
    )
    .await
    .unwrap();
    let lep = endpoint(&liar).await;
    let e = within("connect", lep.connect(ep.address()))
        .await
        .expect_err("rejected");
    assert_eq!(e.kind(), ErrorKind::ConnectFailed, "{e}");
    within("close", liar.close()).await;
    within("close", t.close()).await;
}

/// An unaddressable endpoint connects to itself without the network.
#[tokio::test]
async fn test_unreachable_self_connect() {
    let t = Transport::unaddressable(config());
    assert!(t.local_addr().is_none());
    let ep = endpoint(&t).await;
    assert_eq!(ep.address().as_bytes().len(), 36, "a UUID address");
    assert!(ep.address().parse().is_none());
    let c = within("self connect", ep.connect(ep.address()))
        .await
        .expect("self connect");
    c.send(&[b"me"]).await.unwrap();
    let (id, from) = expect_opened(&ep).await;
    assert_eq!(id.0 >> 32, 0, "self-connections use heavyweight id 0");
    assert_eq!(&from, ep.address());
    assert_eq!(expect_received(&ep, id).await, b"me");
    within("close", c.close()).await;
    expect_closed(&ep, id).await;
    within("close", t.close()).await;
}

/// Connecting to an unaddressable endpoint fails; it can connect out (its request carries
/// N = 0); the other side replies over that live socket.
#[tokio::test]
async fn test_unreachable_connect() {
    let u = Transport::unaddressable(config());
    let uep = endpoint(&u).await;
    let b = transport().await;
    let bep = endpoint(&b).await;

    let e = within("connect", bep.connect(uep.address()))
        .await
        .expect_err("fails");
    assert!(
        matches!(
            e.kind(),
            ErrorKind::ConnectFailed | ErrorKind::ConnectNotFound
        ),
        "{e}"
    );

    let c = within("connect out", uep.connect(bep.address()))
        .await
        .expect("connect out");
    c.send(&[b"from nat"]).await.unwrap();
    let (id, from) = expect_opened(&bep).await;
    assert_eq!(expect_received(&bep, id).await, b"from nat");
    let reply = within("reply over the live socket", bep.connect(&from))
        .await
        .expect("reply");
    reply.send(&[b"back"]).await.unwrap();
    let (rid, rfrom) = expect_opened(&uep).await;
    assert_eq!(&rfrom, bep.address());
    assert_eq!(expect_received(&uep, rid).await, b"back");

    // On the wire: the request from an unaddressable endpoint has N = 0.
    let server = RawServer::bind().await;
    let connecting = {
        let uep = uep.clone();
        let to = server.address.clone();
        tokio::spawn(async move { uep.connect(&to).await })
    };
    let (mut p, target, origin) = server.accept_request().await;
    assert_eq!((target, origin.len()), (0, 0));
    p.write(&u32s(&[ACCEPTED])).await;
    within("connect", connecting)
        .await
        .unwrap()
        .expect("connect");
    within("close", u.close()).await;
    within("close", b.close()).await;
}

/// IPv6 in both directions on ::1 (the original rejects inbound IPv6), and a raw IPv6
/// client is accepted.
#[tokio::test]
async fn test_ipv6_both_directions() {
    if !has_ipv6_loopback().await {
        println!("note: no IPv6 loopback on this machine; test_ipv6_both_directions skipped");
        return;
    }
    let a = within("bind", Transport::bind("::1", 0, config()))
        .await
        .unwrap();
    let b = within("bind", Transport::bind("::1", 0, config()))
        .await
        .unwrap();
    let aep = endpoint(&a).await;
    let bep = endpoint(&b).await;
    let port = a.local_addr().unwrap().port();
    assert_eq!(aep.address().as_bytes(), format!("::1:{port}:0").as_bytes());
    assert_eq!(aep.address().to_string(), format!("[::1]:{port}:0"));
    assert_eq!(aep.address().parse(), Some(("::1".to_string(), port, 0)));

    let ab = within("a -> b", aep.connect(bep.address()))
        .await
        .expect("a -> b");
    ab.send(&[b"six"]).await.unwrap();
    let (id, from) = expect_opened(&bep).await;
    assert_eq!(&from, aep.address());
    assert_eq!(expect_received(&bep, id).await, b"six");
    let ba = within("b -> a", bep.connect(aep.address()))
        .await
        .expect("b -> a");
    ba.send(&[b"four"]).await.unwrap();
    let (id, _) = expect_opened(&aep).await;
    assert_eq!(expect_received(&aep, id).await, b"four");

    // A separate IPv6 transport dials in (a fresh inbound socket), and a raw client too.
    let c = within("bind", Transport::bind("::1", 0, config()))
        .await
        .unwrap();
    let cep = endpoint(&c).await;
    let ca = within("c -> a", cep.connect(aep.address()))
        .await
        .expect("inbound v6");
    ca.send(&[b"in"]).await.unwrap();
    let (id, _) = expect_opened(&aep).await;
    assert_eq!(expect_received(&aep, id).await, b"in");
    let raw = Raw::accepted(aep.address(), &format!("::1:{}:0", port + 1)).await;
    drop(raw);
    for t in [a, b, c] {
        within("close", t.close()).await;
    }
}

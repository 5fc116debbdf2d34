//! Hostile peers speaking raw bytes: garbage handshakes, huge lengths, floods, silence,
//! invalid control codes, protocol abuse. Each must end in a clear error or a closed
//! socket, with bounded memory, and a friendly peer (see `h2_support::Pinger`) keeps
//! ping-ponging with the same endpoint throughout. Randomness is seeded.

mod h2_support;

use std::time::Duration;

use h2_support::*;
use nodelink_transport::{Config, EndPoint, ErrorKind, Event, EventErrorKind, Transport};
use tokio::sync::mpsc::UnboundedReceiver;

/// An endpoint run by `echo_task`, with a friendly pinger already going.
struct Arena {
    transport: Transport,
    ep: EndPoint,
    events: UnboundedReceiver<Event>,
    pinger: Pinger,
}

impl Arena {
    async fn new(cfg: Config) -> Arena {
        let transport = transport_with(cfg).await;
        let ep = endpoint(&transport).await;
        let friends = Friends::default();
        let events = echo_task(ep.clone(), friends.clone());
        let pinger = Pinger::start(ep.address(), &friends).await;
        Arena {
            transport,
            ep,
            events,
            pinger,
        }
    }

    /// The next non-friendly event.
    async fn event(&mut self) -> Event {
        within("event", self.events.recv()).await.expect("an event")
    }

    /// Asserts no non-friendly event arrives for a moment.
    async fn quiet(&mut self) {
        if let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(200), self.events.recv()).await
        {
            panic!("unexpected event {e:?}");
        }
    }

    /// Expects ConnectionLost for `from`, skipping ConnectionOpened/Closed on the way.
    async fn lost(&mut self, from: &str) {
        loop {
            match self.event().await {
                Event::Error {
                    kind: EventErrorKind::ConnectionLost(a),
                    ..
                } if a.as_bytes() == from.as_bytes() => return,
                Event::ConnectionOpened { .. } | Event::ConnectionClosed { .. } => {}
                e => panic!("expected ConnectionLost({from}), got {e:?}"),
            }
        }
    }

    async fn finish(self) {
        self.pinger.finish().await;
        within("close", self.transport.close()).await;
    }
}

/// Bytes a server may send before closing when rejecting a hostile request: nothing, or an
/// UnsupportedVersion answer (for requests with a non-zero version).
fn acceptable_rejection(bytes: &[u8], version: u32) -> bool {
    bytes.is_empty()
        || (version != 0 && bytes.len() == 8 && bytes[..4] == UNSUPPORTED_VERSION.to_be_bytes())
}

/// Random garbage instead of a request: the socket closes (within the connect timeout for
/// garbage that only looks incomplete), nothing is posted, nobody else notices.
#[tokio::test]
async fn garbage_handshakes() {
    // Garbage that looks like an incomplete request waits for the handshake timeout: keep
    // it short so the rounds stay quick.
    let short = Duration::from_millis(300);
    let mut arena = Arena::new(config().with_connect_timeout(Some(short))).await;
    let addr = sock_addr(arena.ep.address());
    let mut rng = nodelink_testkit::SeededRng::new(0x5eed);
    for round in 0..30 {
        let n = rng.below(200) as usize + 1;
        let mut garbage = rng.bytes(n);
        if round % 2 == 0 {
            // Version 0 with a garbage body (the interesting path).
            garbage[..4.min(n)].fill(0);
        }
        let version = if n >= 4 {
            u32::from_be_bytes(garbage[..4].try_into().unwrap())
        } else {
            0
        };
        let mut raw = Raw::connect(addr).await;
        let _ = raw.try_write(&garbage).await;
        let got = raw.read_to_close(STEP).await;
        // A random body may form a well-sized request for an unknown endpoint (Invalid),
        // or for endpoint 0 with a parsable address (very unlikely with random bytes).
        let ok = acceptable_rejection(&got, version)
            || got == u32s(&[INVALID])
            || (version != 0 && got.starts_with(&UNSUPPORTED_VERSION.to_be_bytes()));
        assert!(ok, "round {round}: {garbage:02x?} got {got:02x?}");
    }
    arena.quiet().await;
    arena.finish().await;
}

/// Huge lengths in the request: handshake length and address length near 2^32, and an
/// address length inconsistent with the handshake length. Closed without reading or
/// reserving that much.
#[tokio::test]
async fn huge_request_lengths() {
    let mut arena = Arena::new(config()).await;
    let addr = sock_addr(arena.ep.address());
    let cases: [Vec<u32>; 4] = [
        vec![0, 0xFFFF_FFFF, 0, 0xFFFF_FFF7],
        vec![0, 0xFFFF_FFFF],
        vec![0, 8 + 17, 0, 0xFFFF_FFFF],
        vec![0, 8, 0, 17],
    ];
    let before = rss_kib();
    for words in cases {
        let mut raw = Raw::connect(addr).await;
        raw.write(&u32s(&words)).await;
        let _ = raw.try_write(&[b'a'; 64]).await;
        let got = raw.read_to_close(STEP).await;
        assert!(got.is_empty(), "{words:x?}: got {got:02x?}");
    }
    if let (Some(b), Some(a)) = (before, rss_kib()) {
        assert!(a < b + 200 * 1024, "RSS grew from {b} KiB to {a} KiB");
    }
    arena.quiet().await;
    arena.finish().await;
}

/// A data frame announcing 0xFFFFFFFF bytes drops the connection without allocating.
#[tokio::test]
async fn huge_data_length() {
    let mut arena = Arena::new(config()).await;
    let before = rss_kib();
    let origin = "127.0.0.1:21:0";
    let mut raw = Raw::accepted(arena.ep.address(), origin).await;
    raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024, 1024, 0xFFFF_FFFF]))
        .await;
    let _ = raw.try_write(&[0u8; 4096]).await;
    raw.read_to_close(STEP).await;
    arena.lost(origin).await;
    if let (Some(b), Some(a)) = (before, rss_kib()) {
        assert!(a < b + 200 * 1024, "RSS grew from {b} KiB to {a} KiB");
    }
    arena.finish().await;
}

/// A flood of CreatedNewConnection on one socket: the number of open incoming connections
/// per socket is bounded, so the socket is dropped (EventConnectionLost) once the flood
/// passes the bound.
#[tokio::test]
async fn flood_of_created_new_connection() {
    let cfg = config().with_max_incoming_connections_per_socket(1000);
    let mut arena = Arena::new(cfg).await;
    let origin = "127.0.0.1:22:0";
    let raw = Raw::accepted(arena.ep.address(), origin).await;
    let writer = tokio::spawn(async move {
        let mut raw = raw;
        // 100 000 announcements, 1024 per write; stops when the server drops the socket.
        let lcids: Vec<u32> = (1024u32..1024 + 100_000).collect();
        for batch in lcids.chunks(1024) {
            let bytes: Vec<u8> = batch
                .iter()
                .flat_map(|&l| u32s(&[CREATED_NEW_CONNECTION, l]))
                .collect();
            if raw.try_write(&bytes).await.is_err() {
                break;
            }
        }
        raw
    });
    let mut opened = 0u64;
    loop {
        match arena.event().await {
            Event::ConnectionOpened { .. } => opened += 1,
            Event::Error {
                kind: EventErrorKind::ConnectionLost(a),
                ..
            } if a.as_bytes() == origin.as_bytes() => break,
            e => panic!("unexpected {e:?}"),
        }
    }
    assert!(opened <= 1000, "{opened} connections opened past the bound");
    let mut raw = within("the flood ends", writer).await.unwrap();
    raw.read_to_close(STEP).await;
    arena.finish().await;
}

/// Silence during the handshake, from either side, is bounded by the connect timeout.
#[tokio::test]
async fn silent_peer_during_handshake() {
    let mut arena = Arena::new(config()).await;
    let addr = sock_addr(arena.ep.address());
    // A client that connects and says nothing; one that stops after a partial request.
    let mut mute = Raw::connect(addr).await;
    let mut partial = Raw::connect(addr).await;
    partial.write(&request(0, b"127.0.0.1:23:0")[..10]).await;
    let limit = CONNECT_TIMEOUT * 3 + Duration::from_secs(2);
    assert!(mute.read_to_close(limit).await.is_empty());
    assert!(partial.read_to_close(limit).await.is_empty());

    // A server that accepts the TCP connection and never answers the request.
    let server = RawServer::bind().await;
    let connecting = {
        let ep = arena.ep.clone();
        let to = server.address.clone();
        tokio::spawn(async move { ep.connect(&to).await })
    };
    let (peer, _, _) = server.accept_request().await;
    let e = within_for(limit, "connect to a silent server", connecting)
        .await
        .unwrap()
        .expect_err("fails");
    assert_eq!(e.kind(), ErrorKind::ConnectTimeout, "{e}");
    drop(peer);
    arena.quiet().await;
    arena.finish().await;
}

/// Every invalid control code 6..1023 drops the socket that sent it.
#[tokio::test]
async fn invalid_control_codes() {
    let mut arena = Arena::new(config()).await;
    for code in 6u32..1024 {
        // A distinct origin per socket, so no request meets a socket still being torn down.
        let origin = format!("127.0.0.1:{}:0", 30000 + code);
        let mut raw = Raw::accepted(arena.ep.address(), &origin).await;
        raw.write(&u32s(&[code, 0, 0])).await;
        raw.read_to_close(STEP).await;
        arena.lost(&origin).await;
    }
    arena.finish().await;
}

/// Control frames naming connections that do not exist, and abuse of a closing socket.
#[tokio::test]
async fn unknown_connection_ids() {
    let mut arena = Arena::new(config()).await;
    // CloseConnection for an id never created.
    let origin = "127.0.0.1:24:0";
    let mut raw = Raw::accepted(arena.ep.address(), origin).await;
    raw.write(&u32s(&[CLOSE_CONNECTION, 5000])).await;
    raw.read_to_close(STEP).await;
    arena.lost(origin).await;
    // Data on an id never created.
    let origin = "127.0.0.1:25:0";
    let mut raw = Raw::accepted(arena.ep.address(), origin).await;
    raw.write(&data_frame(4242, b"who am i")).await;
    raw.read_to_close(STEP).await;
    arena.lost(origin).await;
    arena.finish().await;
}

/// UnsupportedVersion: answered with the version the server wants, the announced length is
/// discarded, and a version-0 request on the same socket then works; a peer that keeps
/// asking for other versions, or announces a huge length to discard, gets a bounded answer.
#[tokio::test]
async fn unsupported_version_abuse() {
    let mut arena = Arena::new(config()).await;
    let addr = sock_addr(arena.ep.address());

    // Renegotiation: version 1 with a body, then a proper request.
    let mut raw = Raw::connect(addr).await;
    let mut bytes = u32s(&[1, 12]);
    bytes.extend([9u8; 12]);
    bytes.extend(request(0, b"127.0.0.1:26:0"));
    raw.write(&bytes).await;
    assert_eq!(raw.read_u32().await.unwrap(), UNSUPPORTED_VERSION);
    assert_eq!(
        raw.read_u32().await.unwrap(),
        0,
        "the version the server wants"
    );
    assert_eq!(raw.read_u32().await.unwrap(), ACCEPTED);
    raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    raw.write(&data_frame(1024, b"v0")).await;
    match arena.event().await {
        Event::ConnectionOpened { .. } => {}
        e => panic!("unexpected {e:?}"),
    }
    match arena.event().await {
        Event::Received { data, .. } => assert_eq!(concat(&data), b"v0"),
        e => panic!("unexpected {e:?}"),
    }
    drop(raw);
    arena.lost("127.0.0.1:26:0").await;

    // A huge length to discard: answered, then closed within the connect timeout rather than
    // read forever.
    let mut raw = Raw::connect(addr).await;
    raw.write(&u32s(&[7, 0xFFFF_FFFF])).await;
    let got = raw.read_to_close(CONNECT_TIMEOUT * 3 + STEP).await;
    assert!(acceptable_rejection(&got, 7), "got {got:02x?}");

    // Endless renegotiation: bounded (answered or closed), never a hang.
    let mut raw = Raw::connect(addr).await;
    let mut writes = 0;
    for _ in 0..2000 {
        if raw.try_write(&u32s(&[3, 0])).await.is_err() {
            break;
        }
        writes += 1;
    }
    let got = raw.read_to_close(CONNECT_TIMEOUT * 3 + STEP).await;
    assert!(
        got.len() <= writes * 8,
        "{} bytes for {writes} requests",
        got.len()
    );
    for answer in got.chunks(8) {
        assert_eq!(answer, &u32s(&[UNSUPPORTED_VERSION, 0])[..answer.len()]);
    }
    arena.quiet().await;
    arena.finish().await;
}

/// ProbeSocket is answered with ProbeSocketAck; a flood of probes from a peer that never
/// reads the answers stalls that peer's socket (backpressure) instead of queueing acks
/// without bound.
#[tokio::test]
async fn probe_flood_is_bounded() {
    let arena = Arena::new(config()).await;
    let origin = "127.0.0.1:27:0";
    let mut raw = Raw::accepted(arena.ep.address(), origin).await;
    raw.write(&u32s(&[PROBE_SOCKET])).await;
    assert_eq!(raw.read_u32().await.unwrap(), PROBE_SOCKET_ACK);

    let before = rss_kib();
    // 64 MiB of probes; nobody reads the acks.
    let (mut read_half, mut write_half) = raw.stream.into_split();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let chunk = u32s(&[PROBE_SOCKET]).repeat(16 * 1024);
        let mut written = 0usize;
        for _ in 0..1024 {
            if write_half.write_all(&chunk).await.is_err() {
                break;
            }
            written += chunk.len();
        }
        written
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !writer.is_finished(),
        "all 64 MiB of probes were taken in while no ack was read"
    );
    if let (Some(b), Some(a)) = (before, rss_kib()) {
        assert!(a < b + 100 * 1024, "RSS grew from {b} KiB to {a} KiB");
    }
    // The rest of the endpoint is unaffected; reading again lets the socket move on.
    arena.pinger.wait_rounds(20).await;
    writer.abort();
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1 << 16];
    let drained = within("drain acks", read_half.read(&mut buf))
        .await
        .unwrap();
    assert!(drained > 0 && buf[..4] == PROBE_SOCKET_ACK.to_be_bytes());
    drop(read_half);
    arena.finish().await;
}

/// A full event queue stops the reading of the sockets that feed it: a peer flooding an
/// endpoint whose application does not receive is held back by TCP, while another
/// endpoint of the same transport keeps working.
#[tokio::test]
async fn full_event_queue_applies_backpressure() {
    let t = transport_with(config().with_event_queue_capacity(16)).await;
    let stalled = endpoint(&t).await; // nobody receives its events
    let busy = endpoint(&t).await;
    let friends = Friends::default();
    let _events = echo_task(busy.clone(), friends.clone());
    let pinger = Pinger::start(busy.address(), &friends).await;

    let mut raw = Raw::accepted(stalled.address(), "127.0.0.1:28:0").await;
    raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let frame = data_frame(1024, &vec![0x55; 64 << 10]);
        let mut frames = 0usize;
        for _ in 0..4096 {
            // 256 MiB in total: far more than queue, buffers and sockets can hold.
            if raw.stream.write_all(&frame).await.is_err() {
                break;
            }
            frames += 1;
        }
        frames
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !writer.is_finished(),
        "256 MiB were taken in for an endpoint whose events nobody reads"
    );
    pinger.wait_rounds(20).await;
    // Receiving frees room and the flood moves on.
    let mut seen = 0;
    while seen < 64 {
        if let Event::Received { .. } = next(&stalled).await {
            seen += 1;
        }
    }
    writer.abort();
    pinger.finish().await;
    within("close", t.close()).await;
}

/// A second request from an address that already has a healthy socket is answered
/// Crossed and the old socket is probed: answered, it stays; unanswered, it is closed
/// within the connect timeout and the loss is reported.
#[tokio::test]
async fn duplicate_request_probes_the_old_socket() {
    let mut arena = Arena::new(config()).await;
    let origin = "127.0.0.1:29:0";
    let mut old = Raw::accepted(arena.ep.address(), origin).await;
    let (mut dup, response) = Raw::handshake(arena.ep.address(), origin).await;
    assert_eq!(response, CROSSED);
    dup.read_to_close(STEP).await;
    assert_eq!(old.read_u32().await.unwrap(), PROBE_SOCKET);
    old.write(&u32s(&[PROBE_SOCKET_ACK])).await;
    assert!(
        old.stays_quiet(CONNECT_TIMEOUT * 2).await,
        "a live socket was dropped"
    );
    arena.quiet().await;

    let (mut dup, response) = Raw::handshake(arena.ep.address(), origin).await;
    assert_eq!(response, CROSSED);
    dup.read_to_close(STEP).await;
    assert_eq!(old.read_u32().await.unwrap(), PROBE_SOCKET);
    // No answer: the old socket goes.
    old.read_to_close(CONNECT_TIMEOUT * 3 + STEP).await;
    arena.lost(origin).await;
    // And the address can connect afresh.
    let mut again = Raw::accepted(arena.ep.address(), origin).await;
    again.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    match arena.event().await {
        Event::ConnectionOpened { address, .. } => {
            assert_eq!(address.as_bytes(), origin.as_bytes())
        }
        e => panic!("unexpected {e:?}"),
    }
    arena.finish().await;
}

/// A hostile server answering our request with nonsense: an unknown response word,
/// UnsupportedVersion for a version we do not speak, a HostMismatch with an absurd string
/// length, or half a response then silence. Each connect fails (ConnectFailed, or
/// ConnectTimeout for the silence) within the connect timeout, and the next one works.
#[tokio::test]
async fn hostile_server_responses() {
    let t = transport().await;
    let ep = endpoint(&t).await;
    let server = RawServer::bind().await;
    let answers: [Vec<u8>; 4] = [
        u32s(&[77]),
        u32s(&[UNSUPPORTED_VERSION, 5]),
        u32s(&[HOST_MISMATCH, 0xFFFF_FFF0]),
        u32s(&[UNSUPPORTED_VERSION])[..2].to_vec(),
    ];
    for (i, answer) in answers.iter().enumerate() {
        let connecting = {
            let ep = ep.clone();
            let to = server.address.clone();
            tokio::spawn(async move { ep.connect(&to).await })
        };
        let (mut p, _, _) = server.accept_request().await;
        p.write(answer).await;
        let e = within_for(
            CONNECT_TIMEOUT * 3 + Duration::from_secs(2),
            "connect to a hostile server",
            connecting,
        )
        .await
        .unwrap()
        .expect_err("a nonsense answer must fail the connect");
        let want = if i == 3 {
            ErrorKind::ConnectTimeout
        } else {
            ErrorKind::ConnectFailed
        };
        assert_eq!(e.kind(), want, "answer {answer:02x?}: {e}");
        drop(p);
    }
    assert!(next_within(&ep, Duration::from_millis(200)).await.is_none());
    let connecting = {
        let ep = ep.clone();
        let to = server.address.clone();
        tokio::spawn(async move { ep.connect(&to).await })
    };
    let (mut p, _, _) = server.accept_request().await;
    p.write(&u32s(&[ACCEPTED])).await;
    within("connect", connecting)
        .await
        .unwrap()
        .expect("a sane server works");
    within("close", t.close()).await;
}

/// A connection request that claims the server's own address (which could start an echo
/// server connecting to itself in a loop) is answered InvalidEndPoint and the socket
/// closed, with one WARN naming the claim; no event reaches the application, and the
/// endpoint keeps serving everyone else.
#[tokio::test]
async fn request_claiming_our_own_address_is_refused() {
    let log = nodelink_testkit::Captured::default();
    let _guard = log.install();
    let mut arena = Arena::new(config()).await;
    let own = arena.ep.address().to_string();
    let (mut raw, response) = Raw::handshake(arena.ep.address(), &own).await;
    assert_eq!(response, INVALID);
    raw.read_to_close(STEP).await;
    arena.quiet().await;
    log.expect_one("WARN", &["claims this endpoint's own address", &own]);
    // A genuine peer still gets in.
    let origin = "127.0.0.1:31:0";
    let mut ok = Raw::accepted(arena.ep.address(), origin).await;
    ok.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    match arena.event().await {
        Event::ConnectionOpened { address, .. } => {
            assert_eq!(address.as_bytes(), origin.as_bytes())
        }
        e => panic!("unexpected {e:?}"),
    }
    arena.finish().await;
}

/// A peer answering our close with "open a connection, close it" over and over, while
/// the application reads no events: each of its closes re-arms ours, and only the first
/// new connection (the one that may resume a socket a connect of ours waits for) skips
/// the wait for queue room. The rest wait like data, so TCP holds the peer back instead
/// of the event queue growing without bound.
#[tokio::test]
async fn connection_cycling_during_our_close_is_held_back() {
    let t = transport_with(config().with_event_queue_capacity(16)).await;
    let stalled = endpoint(&t).await; // nobody receives its events
    let server = RawServer::bind().await;
    let connecting = {
        let ep = stalled.clone();
        let to = server.address.clone();
        tokio::spawn(async move { ep.connect(&to).await })
    };
    let (mut raw, _, _) = server.accept_request().await;
    raw.write(&u32s(&[ACCEPTED])).await;
    let conn = within("connect", connecting)
        .await
        .unwrap()
        .expect("connect");
    within("close", conn.close()).await;
    // Ours: CreatedNewConnection, CloseConnection, then CloseSocket (the close begins).
    for _ in 0..3 {
        let frame = raw.read_frame().await.expect("a frame of our close");
        if let RawFrame::Control(code, _) = frame {
            if code == CLOSE_SOCKET {
                break;
            }
        }
    }
    let (mut read_half, mut write_half) = raw.stream.into_split();
    // Whatever we answer (a CloseSocket per re-armed close) is read and thrown away.
    let drain = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = read_half.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut cycles = Vec::new();
        for lcid in 1024..1024 + 20_000u32 {
            cycles.extend_from_slice(&u32s(&[CREATED_NEW_CONNECTION, lcid]));
            cycles.extend_from_slice(&u32s(&[CLOSE_CONNECTION, lcid]));
        }
        let _ = write_half.write_all(&cycles).await;
        write_half
    });
    // Long enough for the reader to take in thousands of cycles if nothing held it back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // What is queued now (this runtime has one thread: the reader cannot add more while
    // the ready events are counted).
    let mut queued = 0;
    while let Some(r) = futures::FutureExt::now_or_never(stalled.receive()) {
        r.expect("an event");
        queued += 1;
    }
    assert!(
        queued > 0 && queued <= 20,
        "{queued} events queued for a queue of 16 that nobody read"
    );
    writer.abort();
    drain.abort();
    within("close", t.close()).await;
}

/// Peers that each send most of a large message and never finish it: past the transport's
/// memory budget their sockets stop being read, the friendly pinger goes on, and once
/// held back for 10 s each socket is dropped (connection lost).
#[tokio::test]
async fn unfinished_large_messages_are_bounded_by_the_memory_budget() {
    use tokio::io::AsyncWriteExt;
    const BUDGET: usize = 1 << 20;
    const PEERS: usize = 4;
    let mut arena = Arena::new(config().with_max_memory(BUDGET)).await;
    let mut origins = Vec::new();
    let mut writers = Vec::new();
    for i in 0..PEERS {
        let origin = format!("127.0.0.1:{}:0", 40 + i);
        let mut raw = Raw::accepted(arena.ep.address(), &origin).await;
        // An 8 MiB message (under max_receive_length), of which 7 MiB come.
        raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024, 1024, 8 << 20]))
            .await;
        writers.push(tokio::spawn(async move {
            for _ in 0..112 {
                if raw.stream.write_all(&[0x55; 64 << 10]).await.is_err() {
                    break;
                }
            }
            raw
        }));
        origins.push(origin);
    }
    within("the budget to be reached", async {
        while arena.transport.stats().memory_held <= BUDGET as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    arena.pinger.wait_rounds(20).await;
    // Each socket may hold its floor (256 KiB) and what one read (64 KiB) took past it.
    let held = arena.transport.stats().memory_held as usize;
    assert!(
        held <= BUDGET + PEERS * ((256 << 10) + (64 << 10)),
        "the sockets hold {held} bytes against a budget of {BUDGET}"
    );
    // Held back for too long, a socket is dropped (the others, relieved, may read on
    // and be held back again: one loss is enough here).
    loop {
        match arena.event().await {
            Event::Error {
                kind: EventErrorKind::ConnectionLost(a),
                message,
            } => {
                assert!(message.contains("memory budget"), "{message}");
                assert!(origins.iter().any(|o| o.as_bytes() == a.as_bytes()));
                break;
            }
            Event::ConnectionOpened { .. } => {}
            e => panic!("expected ConnectionLost, got {e:?}"),
        }
    }
    arena.finish().await;
    for w in writers {
        let _ = within("a writer to end", w).await;
    }
}

/// Peers that send part of a message and then nothing keep the budget exceeded; a good
/// peer's large message, held back meanwhile, must not be the one dropped: the quiet
/// sockets are dropped after 3 s, and the message then arrives whole.
#[tokio::test]
async fn past_the_budget_quiet_unfinished_messages_go_before_a_message_in_progress() {
    const BUDGET: usize = 1 << 20;
    let mut arena = Arena::new(config().with_max_memory(BUDGET)).await;
    let mut quiet = Vec::new();
    for i in 0..6 {
        let origin = format!("127.0.0.1:{}:0", 60 + i);
        let mut raw = Raw::accepted(arena.ep.address(), &origin).await;
        // A 2 MiB message, of which 200 KiB come (over the floor of seven sockets,
        // 1 MiB / 7, once the good one joins).
        raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024, 1024, 2 << 20]))
            .await;
        raw.write(&[0x55; 200 << 10]).await;
        quiet.push((origin, raw));
    }
    within("the budget to be exceeded", async {
        while arena.transport.stats().memory_held <= BUDGET as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let good_origin = "127.0.0.1:70:0";
    let mut good = Raw::accepted(arena.ep.address(), good_origin).await;
    good.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    let message = vec![0xa7; 900 << 10];
    let sent = tokio::spawn(async move {
        good.write(&data_frame(1024, &message)).await;
        good
    });
    let mut lost = 0;
    let received = loop {
        match arena.event().await {
            Event::Error {
                kind: EventErrorKind::ConnectionLost(a),
                message,
            } => {
                assert_ne!(a.as_bytes(), good_origin.as_bytes(), "{message}");
                assert!(message.contains("memory budget"), "{message}");
                lost += 1;
            }
            Event::Received { data, .. } => break data.iter().map(|b| b.len()).sum::<usize>(),
            Event::ConnectionOpened { .. } => {}
            e => panic!("unexpected {e:?}"),
        }
    };
    assert_eq!(received, 900 << 10, "the good message, whole");
    assert!(lost >= 1, "quiet sockets were dropped to make room");
    let _good = within("the good peer's write", sent).await.unwrap();
    arena.finish().await;
    drop(quiet);
}

/// At the socket limit, a new client ends the socket whose peer said nothing since its
/// handshake; a socket whose peer speaks is never ended for it, and with only such sockets
/// the newcomer waits until one ends.
#[tokio::test]
async fn at_the_socket_limit_a_new_client_replaces_a_socket_that_never_spoke() {
    // The friendly pinger's socket, and three raw ones.
    let arena = Arena::new(config().with_max_sockets(4)).await;
    let mut idle = Raw::accepted(arena.ep.address(), "127.0.0.1:50:0").await;
    let mut talkers = Vec::new();
    for origin in ["127.0.0.1:51:0", "127.0.0.1:52:0"] {
        let mut raw = Raw::accepted(arena.ep.address(), origin).await;
        raw.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
        talkers.push(raw);
    }
    assert_eq!(arena.transport.stats().sockets_in, 4);
    // Quiet for longer than a newcomer's grace (500 ms).
    tokio::time::sleep(Duration::from_millis(700)).await;
    for t in &mut talkers {
        t.write(&data_frame(1024, b"still here")).await;
    }
    let mut newcomer = Raw::accepted(arena.ep.address(), "127.0.0.1:53:0").await;
    newcomer.write(&u32s(&[CREATED_NEW_CONNECTION, 1024])).await;
    idle.read_to_close(STEP).await;
    arena.pinger.wait_rounds(5).await;
    // Every peer has spoken now: the next newcomer waits for room...
    for t in talkers.iter_mut().chain([&mut newcomer]) {
        t.write(&data_frame(1024, b"hello")).await;
    }
    let to = arena.ep.address().clone();
    let mut waiting = tokio::spawn(async move { Raw::handshake(&to, "127.0.0.1:54:0").await });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "no room: the newcomer waits"
    );
    assert!(arena.transport.stats().sockets_in <= 4);
    // ...and gets in when a socket ends.
    drop(talkers.pop());
    let (_admitted, response) = within("room", waiting).await.unwrap();
    assert_eq!(response, ACCEPTED);
    for t in &mut talkers {
        assert!(
            t.stays_quiet(Duration::from_millis(100)).await,
            "a talker was ended"
        );
    }
    drop((talkers, newcomer));
    arena.finish().await;
}

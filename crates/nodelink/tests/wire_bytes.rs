//! Byte-exact checks of what goes on the wire, captured by a raw peer.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use nodelink::{
    Config, ErrorCode, ErrorMessage, HandshakeError, Link, Message, Ping, Pong, Raw, Role,
    HEADER_LEN, MAX_PACKET_SIZE, MAX_PAYLOAD_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Concatenates byte pieces, to spell packets out field by field.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// ---------------------------------------------------------------------------------------
// handshake

#[tokio::test]
async fn handshake_sends_version_six_big_endian_in_both_roles() {
    for role in [Role::Client, Role::Server] {
        let (a, b) = tokio::io::duplex(1024);
        let mut raw = RawPeer::new(b);
        let peer = async {
            // Read first: the link must send its word without waiting for ours.
            let got = raw.read_exact(4).await;
            raw.write_all(&[0, 0, 0, 6]).await;
            got
        };
        let (link, got) = within("handshake", async {
            tokio::join!(Link::handshake(a, role, Config::default()), peer)
        })
        .await;
        link.unwrap();
        assert_eq!(got, [0x00, 0x00, 0x00, 0x06], "{role:?}");
    }
}

#[tokio::test]
async fn handshake_over_tcp_starts_with_a_zero_byte() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut dial = Box::pin(nodelink::connect(addr, Config::default()));
    let first = within("first bytes of a dial", async {
        tokio::select! {
            r = &mut dial => panic!("dial finished without a peer word: {r:?}"),
            got = async {
                let (mut s, _) = l.accept().await.unwrap();
                let mut w = [0u8; 4];
                s.read_exact(&mut w).await.unwrap();
                w
            } => got,
        }
    })
    .await;
    assert_eq!(first, [0, 0, 0, 6]);
    assert_eq!(
        first[0], 0,
        "unlike TLS (0x16) or HTTP, so a server can sniff"
    );
}

#[tokio::test]
async fn handshake_sends_a_custom_version_word() {
    for version in [0x0102_0304u32, 0xFFFF_FFFF, 0] {
        let (a, b) = tokio::io::duplex(1024);
        let mut raw = RawPeer::new(b);
        let config = Config::default().with_version(version);
        let (link, got) = within("handshake", async {
            tokio::join!(Link::handshake(a, Role::Client, config), async {
                let got = raw.read_exact(4).await;
                raw.write_all(&version.to_be_bytes()).await;
                got
            })
        })
        .await;
        link.unwrap();
        assert_eq!(got, version.to_be_bytes());
    }
}

#[tokio::test]
async fn version_mismatch_sends_our_word_then_closes() {
    let (a, b) = tokio::io::duplex(1024);
    let mut raw = RawPeer::new(b);
    raw.write_all(&[0, 0, 0, 2]).await;
    let e = within(
        "handshake",
        Link::handshake(a, Role::Server, Config::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e.handshake_error(),
            Some(HandshakeError::VersionMismatch { peer: 2, ours: 6 })
        ),
        "{e:?}"
    );
    assert!(e
        .to_string()
        .ends_with("protocol version mismatch: peer = 00000002 ; our side = 00000006"));
    // The peer sees our full word before the close, not a bare close.
    assert_eq!(within("our word", raw.read_exact(4)).await, [0, 0, 0, 6]);
    assert_eq!(within("then EOF", raw.expect_eof()).await, 0);
}

// ---------------------------------------------------------------------------------------
// flow-control extension frames

#[tokio::test]
async fn hello_bytes_to_a_server_and_to_a_client() {
    // A nodelink client greets a server on 0xFFFFFFFE, with its 4 MiB default window.
    let (_c, mut raw) = raw_and_link(Role::Client, Config::default(), 64 << 10).await;
    let p = within("hello", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(
        p.wire,
        cat(&[
            &[0xff, 0xff, 0xff, 0xfe],
            &[0xff, 0xff],
            &[0x00, 0x00, 0x00, 0x0a],
            b"NLFC",
            &[0x01, 0x01],
            &[0x00, 0x40, 0x00, 0x00],
        ])
    );
    // A nodelink server never speaks first: before anything else, a raw (strict NEO)
    // client's probe on an unknown id of the server's parity gets NEO's reply, nothing else.
    let (s, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    raw.send(0, 2, b"").await;
    let p = within("reply", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(p.wire, closed_reply(0));
    assert_eq!(s.peer_flow_control(), nodelink::PeerFlowControl::Off);
    assert_eq!(s.stats().packets_out, 1);
    // Offered the extension, it answers with its HELLO on 0xFFFFFFFF.
    let (s, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    raw.send(CONTROL_TO_SERVER, CONTROL_CODE, &hello_payload(64 << 10))
        .await;
    let p = within("hello", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(
        p.wire,
        cat(&[
            &[0xff, 0xff, 0xff, 0xff],
            &[0xff, 0xff],
            &[0x00, 0x00, 0x00, 0x0a],
            b"NLFC\x01\x01",
            &[0x00, 0x40, 0x00, 0x00],
        ])
    );
    assert_eq!(s.peer_flow_control(), nodelink::PeerFlowControl::On);
}

/// A closing side says BYE (`"NLFC" 05`) when it closes, only to a peer that agreed on
/// the extension; a strict peer sees the stream end and nothing else.
#[tokio::test]
async fn bye_bytes_only_after_an_agreement() {
    let (s, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    raw.send(CONTROL_TO_SERVER, CONTROL_CODE, &hello_payload(64 << 10))
        .await;
    let _hello = within("hello", raw.read_packet()).await.unwrap().unwrap();
    within("close", s.close()).await;
    let p = within("bye", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(
        p.wire,
        cat(&[
            &[0xff, 0xff, 0xff, 0xff],
            &[0xff, 0xff],
            &[0x00, 0x00, 0x00, 0x05],
            b"NLFC\x05",
        ])
    );
    assert_eq!(within("then EOF", raw.expect_eof()).await, 0);

    // A strict NEO client: nothing but the end of the stream.
    let (s, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    raw.send(1, 2, b"").await;
    let request = within("recv1", s.recv1()).await.unwrap();
    within("reply", request.reply(&nodelink::Pong))
        .await
        .unwrap();
    within("close", s.close()).await;
    let p = within("pong", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(p.wire, packet_bytes(1, 0x8002, b""));
    assert_eq!(within("then EOF", raw.expect_eof()).await, 0);

    // A BYE received ends the link as an end of stream would, after what came before it.
    let (c, mut raw) = raw_and_link(Role::Client, Config::default(), 64 << 10).await;
    let _offer = within("offer", raw.read_packet()).await.unwrap().unwrap();
    raw.send(CONTROL_TO_CLIENT, CONTROL_CODE, &hello_payload(64 << 10))
        .await;
    raw.send(0, 0x0300, b"first").await;
    let conn = within("accept", c.accept()).await.unwrap();
    raw.send(0, 0x0300, b"last words").await;
    raw.send(CONTROL_TO_CLIENT, CONTROL_CODE, b"NLFC\x05").await;
    assert_eq!(
        &within("recv", conn.recv()).await.unwrap().payload[..],
        b"first"
    );
    assert_eq!(
        &within("recv", conn.recv()).await.unwrap().payload[..],
        b"last words"
    );
    within("link ends", c.closed()).await;
    assert!(c.is_closed());
}

#[tokio::test]
async fn server_without_the_extension_declines_an_offer_as_neo_go_does() {
    let config = Config::default().with_flow_control(false);
    let (s, mut raw) = raw_and_link(Role::Server, config, 64 << 10).await;
    raw.send(CONTROL_TO_SERVER, CONTROL_CODE, &hello_payload(64 << 10))
        .await;
    let p = within("decline", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(p.wire, closed_reply(CONTROL_TO_SERVER));
    assert_eq!(s.peer_flow_control(), nodelink::PeerFlowControl::Off);
}

#[tokio::test]
async fn client_absorbs_neo_go_closed_answer_to_its_offer() {
    // The raw server behaves as NEO/go: "connection closed" on the offer's id. The client
    // then works as a plain NEO client; the application never sees that answer.
    let (c, mut raw) = raw_and_link(Role::Client, Config::default(), 64 << 10).await;
    let offer = within("offer", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(offer.id, CONTROL_TO_SERVER);
    raw.write_all(&closed_reply(CONTROL_TO_SERVER)).await;
    let ask = tokio::spawn({
        let c = c.clone();
        async move { c.ask1::<_, Pong>(&Ping).await }
    });
    let req = within("request", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(req.wire, [0, 0, 0, 1, 0, 2, 0, 0, 0, 0]);
    raw.send(1, 0x8002, b"").await;
    within("answer", ask).await.unwrap().unwrap();
    assert_eq!(c.peer_flow_control(), nodelink::PeerFlowControl::Off);
    assert_eq!(c.stats().control_dropped, 1);
}

#[tokio::test]
async fn hello_announces_the_configured_window() {
    for (budget, window) in [
        (1usize << 20, [0x00, 0x10, 0x00, 0x00]),
        (1000, [0x00, 0x01, 0x00, 0x00]),
    ] {
        let config = Config::default().with_conn_recv_budget(budget);
        let (_c, mut raw) = raw_and_link(Role::Client, config, 64 << 10).await;
        let p = within("hello", raw.read_packet()).await.unwrap().unwrap();
        assert_eq!(
            p.wire,
            cat(&[
                &[0xff; 3],
                &[0xfe, 0xff, 0xff, 0, 0, 0, 0x0a],
                b"NLFC\x01\x01",
                &window
            ])
        );
    }
}

#[tokio::test]
async fn no_hello_when_flow_control_is_off() {
    let config = Config::default().with_flow_control(false);
    let (c, mut raw) = raw_and_link(Role::Client, config, 64 << 10).await;
    let conn = c.open().unwrap();
    within("send", conn.send(&Ping)).await.unwrap();
    let first = within("first packet", raw.read_packet())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.wire, [0, 0, 0, 1, 0, 2, 0, 0, 0, 0]);
    assert_eq!(c.stats().packets_out, 1);
}

#[tokio::test]
async fn hello_then_credit_is_returned_as_consumed() {
    let config = Config::default().with_conn_recv_budget(64 << 10);
    let (link, mut raw) = raw_and_link(Role::Server, config, 1 << 20).await;
    raw.send(CONTROL_TO_SERVER, CONTROL_CODE, &hello_payload(64 << 10))
        .await;
    for _ in 0..3 {
        raw.send(1, 10, &[0x5a; 10_000]).await;
    }
    let conn = within("accept", link.accept()).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            within("recv", conn.recv()).await.unwrap().payload.len(),
            10_000
        );
    }
    assert_eq!(link.peer_flow_control(), nodelink::PeerFlowControl::On);
    // What the server sent: HELLO, then credit for the two packets read (2 x (10000 +
    // 64) = 20128 = 0x4ea0) once a quarter of the window was consumed.
    let hello = within("hello", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(
        hello.wire,
        cat(&[&[0xff; 6], &[0, 0, 0, 0x0a], b"NLFC\x01\x01", &[0, 1, 0, 0]])
    );
    let credit = within("credit", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(
        credit.wire,
        cat(&[
            &[0xff; 6],
            &[0, 0, 0, 0x0d],
            b"NLFC\x03",
            &[0, 0, 0, 1],
            &[0, 0, 0x4e, 0xa0]
        ])
    );
}

// ---------------------------------------------------------------------------------------
// the link's own Error replies

#[tokio::test]
async fn connection_closed_reply_bytes() {
    let (_link, mut raw) = raw_client_tcp(Config::default()).await;
    raw.send(0x0102_0304, 2, b"").await; // unknown id of the server's parity
    let p = within("reply", raw.next_packet()).await;
    assert_eq!(
        p.wire,
        cat(&[
            &[0x01, 0x02, 0x03, 0x04],
            &[0x80, 0x00],
            &[0x00, 0x00, 0x00, 0x19],
            &[0x00, 0x00, 0x00, 0x06],
            &[0x00, 0x00, 0x00, 0x11],
            b"connection closed",
        ])
    );
    assert_eq!(p.wire, closed_reply(0x0102_0304));
}

#[tokio::test]
async fn connection_refused_reply_bytes() {
    let (link, mut raw) = raw_and_link(Role::Client, Config::default(), 64 << 10).await;
    link.close_accept();
    raw.send(0x0000_0a0a, 2, b"").await; // new id of the server's parity
    let p = within("reply", raw.next_packet()).await;
    assert_eq!(
        p.wire,
        cat(&[
            &[0x00, 0x00, 0x0a, 0x0a],
            &[0x80, 0x00],
            &[0x00, 0x00, 0x00, 0x1a],
            &[0x00, 0x00, 0x00, 0x06],
            &[0x00, 0x00, 0x00, 0x12],
            b"connection refused",
        ])
    );
}

// ---------------------------------------------------------------------------------------
// header encoding of what the application sends

#[tokio::test]
async fn header_encoding_of_sent_messages() {
    let (c, mut raw) = raw_server_tcp(Config::default()).await;
    let conn = c.open().unwrap();
    within(
        "send",
        conn.send(&Raw::<0x1234>(Bytes::from_static(b"hello"))),
    )
    .await
    .unwrap();
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        cat(&[&[0, 0, 0, 1], &[0x12, 0x34], &[0, 0, 0, 5], b"hello"])
    );
    let conn3 = c.open().unwrap();
    within("send", conn3.send(&Pong)).await.unwrap();
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        [0, 0, 0, 3, 0x80, 0x02, 0, 0, 0, 0]
    );
    within(
        "send",
        conn.send(&ErrorMessage::new(ErrorCode::NOT_READY, "busy!")),
    )
    .await
    .unwrap();
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        cat(&[
            &[0, 0, 0, 1, 0x80, 0x00, 0, 0, 0, 0x0d],
            &[0, 0, 0, 2],
            &[0, 0, 0, 5],
            b"busy!"
        ])
    );
    // A large payload goes out by reference; the bytes are the same.
    let big: Vec<u8> = (0..20_480u32).map(|i| (i * 7) as u8).collect();
    within("send", conn.send_packet(0xabcd, Bytes::from(big.clone())))
        .await
        .unwrap();
    let p = within("raw read", raw.next_packet()).await;
    assert_eq!(
        &p.wire[..HEADER_LEN],
        &[0, 0, 0, 1, 0xab, 0xcd, 0, 0, 0x50, 0x00]
    );
    assert_eq!(&p.wire[HEADER_LEN..], &big[..]);
    // send1 takes the next id.
    within("send1", c.send1(&Raw::<7>(Bytes::from_static(b"\x00\x01"))))
        .await
        .unwrap();
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        [0, 0, 0, 5, 0, 7, 0, 0, 0, 2, 0, 1]
    );
}

#[tokio::test]
async fn request_reply_goes_out_on_the_request_id() {
    let (s, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    raw.send(0x11, 0x0042, b"q").await;
    let req = within("recv1", s.recv1()).await.unwrap();
    assert_eq!(
        (req.conn_id(), req.code(), &req.payload()[..]),
        (0x11, 0x42, &b"q"[..])
    );
    within(
        "reply",
        req.reply_packet(0x8042, Bytes::from_static(b"answer")),
    )
    .await
    .unwrap();
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        cat(&[&[0, 0, 0, 0x11, 0x80, 0x42, 0, 0, 0, 6], b"answer"])
    );
}

#[tokio::test]
async fn error_message_encoding_round_trips() {
    let m = ErrorMessage::new(ErrorCode::PROTOCOL_ERROR, "connection closed");
    let mut b = BytesMut::new();
    m.encode(&mut b);
    assert_eq!(&b[..], &closed_reply(0)[HEADER_LEN..]);
    assert_eq!(ErrorMessage::decode(b.freeze()).unwrap(), m);
    assert_eq!(ErrorMessage::CODE, 0x8000);
    assert_eq!((Ping::CODE, Pong::CODE), (2, 0x8002));
}

// ---------------------------------------------------------------------------------------
// size limit

#[test]
fn size_limit_constants() {
    assert_eq!(HEADER_LEN, 10);
    assert_eq!(MAX_PACKET_SIZE, 0x400_0000);
    assert_eq!(MAX_PAYLOAD_LEN, 0x400_0000 - 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_of_exactly_max_len_is_sent_and_one_more_is_packet_too_big() {
    let (c, s) = pair_over(1 << 20, Config::default(), Config::default()).await;
    let conn = c.open().unwrap();
    let mut max = vec![0u8; MAX_PAYLOAD_LEN];
    max[0] = 1;
    max[MAX_PAYLOAD_LEN - 1] = 2;
    let max = Bytes::from(max);
    let (sent, got) = within("64 MiB packet", async {
        tokio::join!(conn.send_packet(9, max.clone()), async {
            let inc = s.accept().await.unwrap();
            let p = inc.recv().await.unwrap();
            (inc, p)
        })
    })
    .await;
    sent.unwrap();
    let (inc, p) = got;
    assert_eq!((p.code, p.payload.len()), (9, MAX_PAYLOAD_LEN));
    assert_eq!((p.payload[0], p.payload[MAX_PAYLOAD_LEN - 1]), (1, 2));
    assert!(p.payload == max);
    drop((p, max));

    // One byte more is refused before anything is written, by every sending path.
    let over = Bytes::from(vec![0u8; MAX_PAYLOAD_LEN + 1]);
    let too_big = |e: nodelink::Error| {
        assert!(
            e.packet_too_big() == Some((MAX_PAYLOAD_LEN + 1, MAX_PAYLOAD_LEN)),
            "{e:?}"
        );
    };
    too_big(
        within("send_packet", conn.send_packet(9, over.clone()))
            .await
            .unwrap_err(),
    );
    too_big(
        within("send", conn.send(&Raw::<9>(over.clone())))
            .await
            .unwrap_err(),
    );
    too_big(
        within("send1", c.send1(&Raw::<9>(over.clone())))
            .await
            .unwrap_err(),
    );
    too_big(
        within("ask1", c.ask1_packet(9, over.clone()))
            .await
            .unwrap_err(),
    );
    drop(over);

    // The link and the connection are still fine.
    assert!(!c.is_closed());
    within("send", conn.send(&Ping)).await.unwrap();
    let _: Ping = within("recv", inc.expect()).await.unwrap();
    within("answer", inc.send(&Pong)).await.unwrap();
    let _: Pong = within("recv", conn.expect()).await.unwrap();
    assert_eq!(table(&c), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_packet_of_exactly_max_size_is_received() {
    let (link, raw) = raw_and_link(Role::Server, Config::default(), 1 << 20).await;
    let mut io = raw.io;
    let writer = tokio::spawn(async move {
        let mut packet = packet_bytes(1, 0x0033, &[]);
        packet[6..10].copy_from_slice(&(MAX_PAYLOAD_LEN as u32).to_be_bytes());
        packet.resize(MAX_PACKET_SIZE, 0xee);
        io.write_all(&packet).await.unwrap();
        io
    });
    let conn = within("accept", link.accept()).await.unwrap();
    let p = within("recv", conn.recv()).await.unwrap();
    assert_eq!(
        (p.conn_id, p.code, p.payload.len()),
        (1, 0x33, MAX_PAYLOAD_LEN)
    );
    assert!(p.payload.iter().all(|&b| b == 0xee));
    within("writer", writer).await.unwrap();
}

#[tokio::test]
async fn data_consumed_before_the_agreement_is_credited_once_agreed() {
    // A nodelink acceptor may send on its own connections before it has read our offer.
    // What the client consumed meanwhile is credited as soon as the HELLO comes back, or
    // the acceptor's sender could wait for it forever.
    let (c, mut raw) = raw_and_link(Role::Client, Config::default(), 1 << 20).await;
    let offer = within("offer", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(offer.id, CONTROL_TO_SERVER);
    raw.send(0, 0x0300, &[1u8; 30_000]).await;
    let conn = within("accept", c.accept()).await.unwrap();
    assert_eq!(
        within("recv", conn.recv()).await.unwrap().payload.len(),
        30_000
    );
    raw.send(CONTROL_TO_CLIENT, CONTROL_CODE, &hello_payload(64 << 10))
        .await;
    let credit = within("credit", raw.read_packet()).await.unwrap().unwrap();
    assert_eq!(credit.id, CONTROL_TO_SERVER);
    assert_eq!(credit.payload[..], credit_payload(&[(0, 30_064)])[..]);
    assert_eq!(c.peer_flow_control(), nodelink::PeerFlowControl::On);
}

//! The acceptance list of the link protocol spec (section 14), plus the defects of the
//! original that section 11 says this crate must not have. One test per behaviour.

mod common;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use nodelink::{
    Config, Conn, DecodeError, Error, ErrorCode, ErrorKind, ErrorMessage, HandshakeError, Link,
    Message, Ping, Pong, Role,
};

// ---------------------------------------------------------------------------------------
// helpers

/// A config with the smallest per-connection window, so that credit runs out quickly.
fn small_window() -> Config {
    Config::default().with_conn_recv_budget(64 << 10)
}

fn assert_kind(r: Result<impl std::fmt::Debug, Error>, what: &str, ok: fn(&Error) -> bool) {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => assert!(ok(&e), "{what}: unexpected error kind: {e} ({e:?})"),
    }
}

fn is_link_closed(e: &Error) -> bool {
    e.kind() == ErrorKind::LinkClosed
}

fn is_conn_closed(e: &Error) -> bool {
    e.kind() == ErrorKind::ConnectionClosed
}

/// The link is down, and the I/O error behind it is `kind`.
fn down_with(e: &Error, kind: io::ErrorKind) -> bool {
    e.kind() == ErrorKind::LinkDown && e.io_error().is_some_and(|c| c.kind() == kind)
}

/// The I/O error that took the link down, of `kind`.
fn io_with(e: &Error, kind: io::ErrorKind) -> bool {
    e.kind() == ErrorKind::Io && e.io_error().is_some_and(|c| c.kind() == kind)
}

fn is_link_down_eof(e: &Error) -> bool {
    down_with(e, io::ErrorKind::UnexpectedEof)
}

fn is_io_eof(e: &Error) -> bool {
    io_with(e, io::ErrorKind::UnexpectedEof)
}

/// Decodes a received packet as NEO's Error message.
fn as_error_message(p: &nodelink::Packet) -> ErrorMessage {
    assert_eq!(
        p.code, 0x8000,
        "expected an Error packet, got code {:#06x}",
        p.code
    );
    ErrorMessage::decode(p.payload.clone()).expect("well-formed Error payload")
}

/// Opens a connection on `client` (flow control on both sides, small window, warmed up)
/// and fills its send window, so that its next send must wait for credit.
async fn credit_exhausted_conn(client: &Link) -> Conn {
    assert_eq!(client.peer_flow_control(), nodelink::PeerFlowControl::On);
    let conn = client.open().unwrap();
    within(
        "first send of a full window",
        conn.send_packet(5, Bytes::from(vec![1u8; 64 << 10])),
    )
    .await
    .unwrap();
    conn
}

// ---------------------------------------------------------------------------------------
// close vs blocked operations

#[tokio::test]
async fn link_close_interrupts_blocked_accept_with_link_closed() {
    let (c, _s) = pair(Config::default()).await;
    let mut accept = Box::pin(c.accept());
    assert!(poll_once(&mut accept).await.is_pending());
    within("link close", c.close()).await;
    assert_kind(
        within("accept", accept).await,
        "blocked accept",
        is_link_closed,
    );
    assert_kind(c.accept().await, "later accept", is_link_closed);
}

#[tokio::test]
async fn link_close_interrupts_blocked_recv_with_link_closed() {
    let (c, _s) = pair(Config::default()).await;
    let conn = c.open().unwrap();
    let mut recv = Box::pin(conn.recv());
    assert!(poll_once(&mut recv).await.is_pending());
    within("link close", c.close()).await;
    assert_kind(within("recv", recv).await, "blocked recv", is_link_closed);
    assert_kind(conn.recv().await, "later recv", is_link_closed);
}

#[tokio::test]
async fn link_close_interrupts_send_blocked_on_credit_with_link_closed() {
    let (c, s) = pair(small_window()).await;
    warm_up(&c, &s).await;
    let conn = credit_exhausted_conn(&c).await;
    let mut send = Box::pin(conn.send(&Ping));
    assert!(
        poll_once(&mut send).await.is_pending(),
        "send must wait for credit"
    );
    within("link close", c.close()).await;
    assert_kind(within("send", send).await, "blocked send", is_link_closed);
    assert_kind(conn.send(&Ping).await, "later send", is_link_closed);
}

#[tokio::test]
async fn link_close_interrupts_send_blocked_on_socket_with_link_closed() {
    // The raw peer never reads and the pipe holds 1 KiB: the send blocks in the write.
    let config = Config::default()
        .with_flow_control(false)
        .with_close_linger(Duration::from_millis(100));
    let (c, _raw) = raw_and_link(Role::Client, config, 1024).await;
    let conn = c.open().unwrap();
    let mut send = Box::pin(conn.send_packet(9, Bytes::from(vec![0u8; 256 << 10])));
    assert!(
        poll_once(&mut send).await.is_pending(),
        "send must block on the full pipe"
    );
    let (_, sent) = within("close + blocked send", async {
        tokio::join!(c.close(), send)
    })
    .await;
    assert_kind(sent, "send blocked on the socket", is_link_closed);
}

#[tokio::test]
async fn conn_close_interrupts_blocked_recv_with_connection_closed() {
    let (c, _s) = pair(Config::default()).await;
    let conn = c.open().unwrap();
    let mut recv = Box::pin(conn.recv());
    assert!(poll_once(&mut recv).await.is_pending());
    conn.close();
    assert_kind(within("recv", recv).await, "blocked recv", is_conn_closed);
    assert_kind(conn.recv().await, "later recv", is_conn_closed);
    assert_kind(conn.send(&Ping).await, "later send", is_conn_closed);
}

#[tokio::test]
async fn conn_close_interrupts_send_blocked_on_credit_with_connection_closed() {
    let (c, s) = pair(small_window()).await;
    warm_up(&c, &s).await;
    let conn = credit_exhausted_conn(&c).await;
    let mut send = Box::pin(conn.send(&Ping));
    assert!(
        poll_once(&mut send).await.is_pending(),
        "send must wait for credit"
    );
    conn.close();
    assert_kind(within("send", send).await, "blocked send", is_conn_closed);
    // The link itself is unaffected: the window that was sent arrives, and new
    // connections work.
    let inc = within("accept", s.accept()).await.unwrap();
    assert_eq!(
        within("recv", inc.recv()).await.unwrap().payload.len(),
        64 << 10
    );
    warm_up(&c, &s).await;
}

#[tokio::test]
async fn close_accept_interrupts_blocked_accept_with_not_listening() {
    let (c, s) = pair(Config::default()).await;
    let mut accept = Box::pin(s.accept());
    assert!(poll_once(&mut accept).await.is_pending());
    s.close_accept();
    let not_listening = |e: &Error| e.kind() == ErrorKind::NotListening;
    assert_kind(
        within("accept", accept).await,
        "blocked accept",
        not_listening,
    );
    assert_kind(s.accept().await, "later accept", not_listening);
    assert_kind(s.recv1().await, "later recv1", not_listening);
    s.close_accept(); // repeating is fine
                      // Outgoing connections still work on a link that does not accept.
    let conn = s.open().unwrap();
    within("exchange on a non-listening link", async {
        conn.send(&Ping).await.unwrap();
        let inc = c.accept().await.unwrap();
        let _: Ping = inc.expect().await.unwrap();
        inc.send(&Pong).await.unwrap();
        let _: Pong = conn.expect().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn closed_conn_reports_connection_closed_while_link_lives() {
    let (c, s) = pair(Config::default()).await;
    let conn = c.open().unwrap();
    conn.close();
    conn.close(); // closing twice is not an error
    assert_kind(conn.recv().await, "recv", is_conn_closed);
    assert_kind(conn.send(&Ping).await, "send", is_conn_closed);
    assert_kind(conn.ask::<Ping, Pong>(&Ping).await, "ask", is_conn_closed);
    assert_eq!(table(&c), (0, 0));
    warm_up(&c, &s).await;
}

// ---------------------------------------------------------------------------------------
// the peer closes the link

#[tokio::test]
async fn peer_link_close_fails_waiting_recv_send_and_accept_then_link_down() {
    let (c, s) = pair(small_window()).await;
    warm_up(&c, &s).await;
    let c21 = c.open().unwrap();
    let c22 = credit_exhausted_conn(&c).await;
    let c23 = c.open().unwrap();

    let mut recv = Box::pin(c21.recv());
    let mut send = Box::pin(c22.send(&Ping));
    let mut accept = Box::pin(c.accept());
    assert!(poll_once(&mut recv).await.is_pending());
    assert!(poll_once(&mut send).await.is_pending());
    assert!(poll_once(&mut accept).await.is_pending());

    within("peer link close", s.close()).await;
    let (r, sent, acc) = within("blocked ops after peer close", async {
        tokio::join!(recv, send, accept)
    })
    .await;
    // The first receive reports the actual I/O error (EOF from the peer)...
    assert_kind(r, "waiting recv", is_io_eof);
    // ...senders and acceptors get "link down" carrying that cause.
    assert_kind(sent, "waiting send", is_link_down_eof);
    assert_kind(acc, "waiting accept", is_link_down_eof);
    assert!(c.is_closed());

    assert_kind(c.open(), "new_conn after link down", is_link_down_eof);
    assert_kind(c.accept().await, "accept after link down", is_link_down_eof);
    assert_kind(
        c.send1(&Ping).await,
        "send1 after link down",
        is_link_down_eof,
    );

    // Another connection's first receive also reports the I/O error, once.
    assert_kind(c23.recv().await, "first recv on another conn", is_io_eof);
    assert_kind(
        c23.recv().await,
        "second recv on another conn",
        is_link_down_eof,
    );
    // Second calls say "link is down".
    assert_kind(c21.recv().await, "second recv", is_link_down_eof);
    assert_kind(c22.send(&Ping).await, "second send", is_link_down_eof);
    assert_kind(
        c23.send(&Ping).await,
        "send on another conn",
        is_link_down_eof,
    );
    within("closed()", c.closed()).await;
}

#[tokio::test]

async fn conn_close_after_link_down_reports_connection_closed() {
    let (c, s) = pair(Config::default()).await;
    let conn = c.open().unwrap();
    within("peer link close", s.close()).await;
    within("link down", c.closed()).await;
    conn.close();
    // NEO: a closed connection says "connection closed" before anything about the link.
    assert_kind(
        conn.recv().await,
        "recv on closed conn of a down link",
        is_conn_closed,
    );
    assert_kind(
        conn.send(&Ping).await,
        "send on closed conn of a down link",
        is_conn_closed,
    );
}

#[tokio::test]

async fn link_close_after_link_down_reports_link_closed() {
    let (c, s) = pair(Config::default()).await;
    let conn = c.open().unwrap();
    within("peer link close", s.close()).await;
    within("link down", c.closed()).await;
    assert_kind(conn.recv().await, "first recv", is_io_eof);
    within("our close", c.close()).await;
    // NEO: once we closed the link ourselves, every operation says "link is closed".
    assert_kind(conn.recv().await, "recv after our close", is_link_closed);
    assert_kind(
        conn.send(&Ping).await,
        "send after our close",
        is_link_closed,
    );
    assert_kind(c.open(), "new_conn after our close", is_link_closed);
    assert_kind(c.accept().await, "accept after our close", is_link_closed);
}

// ---------------------------------------------------------------------------------------
// after close of link and connections

#[tokio::test]
async fn after_link_close_every_operation_reports_link_closed() {
    let (c, s) = pair(Config::default()).await;
    warm_up(&c, &s).await;
    let conn = c.open().unwrap();
    within("link close", c.close()).await;
    within("link close again", c.close()).await;
    assert!(c.is_closed());
    assert_kind(conn.recv().await, "recv", is_link_closed);
    assert_kind(conn.send(&Ping).await, "send", is_link_closed);
    assert_kind(c.open(), "new_conn", is_link_closed);
    assert_kind(c.accept().await, "accept", is_link_closed);
    assert_kind(c.send1(&Ping).await, "send1", is_link_closed);
    assert_kind(c.ask1::<Ping, Pong>(&Ping).await, "ask1", is_link_closed);
    assert_kind(c.recv1().await, "recv1", is_link_closed);
    assert_eq!(table(&c), (0, 0));
    // The peer sees the link go down.
    let e = within("peer accept", s.accept()).await.unwrap_err();
    assert!(e.is_link_gone(), "{e}");
}

#[tokio::test]

async fn conn_close_after_link_close_reports_connection_closed() {
    let (c, _s) = pair(Config::default()).await;
    let conn = c.open().unwrap();
    within("link close", c.close()).await;
    assert_kind(conn.recv().await, "recv after link close", is_link_closed);
    conn.close();
    // NEO order: link closed first, then the connection: the connection's own close wins.
    assert_kind(
        conn.recv().await,
        "recv after link + conn close",
        is_conn_closed,
    );
    assert_kind(
        conn.send(&Ping).await,
        "send after link + conn close",
        is_conn_closed,
    );
}

// ---------------------------------------------------------------------------------------
// accept + exchange, "connection closed" and "connection refused" (byte-exact)

#[tokio::test]
async fn accept_and_exchange_then_peer_close_answers_connection_closed_bytes() {
    let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    raw.send(1, 33, b"ping").await;
    let conn = within("accept", link.accept()).await.unwrap();
    assert_eq!(conn.id(), 1);
    let p = within("recv", conn.recv()).await.unwrap();
    assert_eq!((p.conn_id, p.code, &p.payload[..]), (1, 33, &b"ping"[..]));
    within("send", conn.send_packet(34, Bytes::from_static(b"pong")))
        .await
        .unwrap();
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        packet_bytes(1, 34, b"pong")
    );

    raw.send(1, 35, b"ping2").await;
    let p = within("recv", conn.recv()).await.unwrap();
    assert_eq!((p.code, &p.payload[..]), (35, &b"ping2"[..]));
    within("send", conn.send_packet(36, Bytes::from_static(b"pong2")))
        .await
        .unwrap();
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        packet_bytes(1, 36, b"pong2")
    );

    conn.close();
    raw.send(1, 37, b"ping3").await;
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        closed_reply(1)
    );
    raw.send(1, 39, b"ping4").await; // once again
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        closed_reply(1)
    );
}

#[tokio::test]
async fn peer_close_recv_answers_connection_closed_bytes() {
    let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    raw.send(1, 41, b"ping5").await;
    let conn = within("accept", link.accept()).await.unwrap();
    let p = within("recv", conn.recv()).await.unwrap();
    assert_eq!(p.code, 41);
    conn.close_recv();
    conn.close_recv(); // idempotent
    assert_kind(conn.recv().await, "recv after close_recv", is_conn_closed);
    // The sending side still works.
    within("send", conn.send_packet(42, Bytes::from_static(b"pong5")))
        .await
        .unwrap();
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        packet_bytes(1, 42, b"pong5")
    );
    raw.send(1, 43, b"ping6").await;
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        closed_reply(1)
    );
}

#[tokio::test]
async fn close_recv_answers_already_queued_packets_with_connection_closed() {
    let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    raw.send(1, 2, b"").await;
    raw.send(1, 2, b"").await;
    let conn = within("accept", link.accept()).await.unwrap();
    // Make sure both packets are queued: a sync packet on our parity comes back afterwards.
    raw.send(0, 2, b"").await;
    assert_eq!(
        within("sync", raw.next_packet()).await.wire,
        closed_reply(0)
    );
    conn.close_recv();
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        closed_reply(1)
    );
    assert_eq!((link.stats().rx_queued as usize), 0);
}

#[tokio::test]
async fn peer_close_accept_answers_connection_refused_bytes() {
    let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    link.close_accept();
    raw.send(1, 38, b"pong3").await;
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        refused_reply(1)
    );
    raw.send(1, 40, b"pong4").await; // once again
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        refused_reply(1)
    );
    assert_eq!(link.stats().conns_refused, 2);
    assert_eq!(link.stats().conns_accepted, 0);
    assert_eq!(table(&link), (0, 0));
}

#[tokio::test]
async fn close_accept_refuses_connections_queued_but_not_accepted() {
    let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    raw.send(1, 2, b"").await;
    raw.send(3, 2, b"").await;
    raw.send(0, 2, b"").await; // our parity: its reply proves 1 and 3 were routed
    assert_eq!(
        within("sync", raw.next_packet()).await.wire,
        closed_reply(0)
    );
    assert_eq!(table(&link), (2, 0));
    link.close_accept();
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        refused_reply(1)
    );
    assert_eq!(
        within("raw read", raw.next_packet()).await.wire,
        refused_reply(3)
    );
    assert_eq!(table(&link), (0, 0));
    assert_eq!((link.stats().rx_queued as usize), 0);
    let st = link.stats();
    assert_eq!((st.conns_accepted, st.conns_refused), (2, 2));
}

#[tokio::test]
async fn nodelink_peer_that_closed_accept_refuses_new_connections() {
    let (c, s) = pair(Config::default()).await;
    c.close_accept();
    let conn = s.open().unwrap();
    within("send", conn.send(&Ping)).await.unwrap();
    let p = within("recv", conn.recv()).await.unwrap();
    let m = as_error_message(&p);
    assert_eq!(
        m,
        ErrorMessage::new(ErrorCode::PROTOCOL_ERROR, "connection refused")
    );
    let e = within("ask", conn.ask::<Ping, Pong>(&Ping))
        .await
        .unwrap_err();
    assert!(
        matches!(e.peer_error(), Some(m) if m.message == "connection refused"),
        "{e}"
    );
    assert_eq!(c.stats().conns_refused, 2);
}

// ---------------------------------------------------------------------------------------
// keep-closed records

#[tokio::test(start_paused = true)]
async fn keep_closed_record_exists_after_close_and_is_gone_after_keep_time() {
    let config = Config::default().with_keep_closed(Duration::from_secs(10));
    let (c, s) = pair(config).await;
    let conn = c.open().unwrap();
    within("send", conn.send(&Ping)).await.unwrap();
    let inc = within("accept", s.accept()).await.unwrap();
    let id = inc.id();
    let _: Ping = within("recv", inc.expect()).await.unwrap();
    assert_eq!(s.id_state_for_tests(id), "open");
    inc.close();
    assert_eq!(s.id_state_for_tests(id), "kept-closed");
    assert_eq!(table(&s), (0, 1));

    // While the record lives, a late packet gets "connection closed", not a new connection.
    let e = within("ask", conn.ask::<Ping, Pong>(&Ping))
        .await
        .unwrap_err();
    assert!(
        matches!(e.peer_error(), Some(m) if m.message == "connection closed"),
        "{e}"
    );

    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(s.id_state_for_tests(id), "kept-closed");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(s.id_state_for_tests(id), "free");
    assert_eq!(table(&s), (0, 0));

    // Once forgotten, the same id opens a new incoming connection.
    within("send", conn.send(&Ping)).await.unwrap();
    let again = within("accept", s.accept()).await.unwrap();
    assert_eq!(again.id(), id);
}

#[tokio::test]
async fn keep_closed_record_only_for_peer_initiated_connections() {
    let (c, s) = pair(Config::default()).await;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..3 {
        let a = c.open().unwrap();
        within("send", a.send(&Ping)).await.unwrap();
        let b = within("accept", s.accept()).await.unwrap();
        assert_eq!(a.id(), b.id());
        ours.push(a);
        theirs.push(b);
    }
    for _ in 0..3 {
        let a = s.open().unwrap();
        within("send", a.send(&Ping)).await.unwrap();
        let b = within("accept", c.accept()).await.unwrap();
        assert_eq!(a.id(), b.id());
        theirs.push(a);
        ours.push(b);
    }
    // `ours`: client side (3 own, 3 accepted); `theirs`: server side (3 accepted, 3 own).
    let ids: Vec<u32> = ours.iter().map(Conn::id).collect();
    assert_eq!(ids, vec![1, 3, 5, 0, 2, 4]);
    for conn in ours.iter().chain(theirs.iter()) {
        conn.close();
    }
    for id in [1, 3, 5] {
        assert_eq!(c.id_state_for_tests(id), "free", "client's own conn {id}");
        assert_eq!(
            s.id_state_for_tests(id),
            "kept-closed",
            "server's accepted conn {id}"
        );
    }
    for id in [0, 2, 4] {
        assert_eq!(s.id_state_for_tests(id), "free", "server's own conn {id}");
        assert_eq!(
            c.id_state_for_tests(id),
            "kept-closed",
            "client's accepted conn {id}"
        );
    }
    assert_eq!(table(&c), (0, 3));
    assert_eq!(table(&s), (0, 3));
}

// ---------------------------------------------------------------------------------------
// no head-of-line coupling

#[tokio::test]
async fn replies_in_reverse_order_have_no_head_of_line_coupling() {
    let (c, s) = pair(Config::default()).await;
    let c1 = c.open().unwrap();
    let c2 = c.open().unwrap();
    within("send", c1.send_packet(1, Bytes::new()))
        .await
        .unwrap();
    within("send", c2.send_packet(2, Bytes::new()))
        .await
        .unwrap();
    let (second_seen_tx, second_seen_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let a = s.accept().await.unwrap();
        let b = s.accept().await.unwrap();
        let (pa, pb) = (a.recv().await.unwrap(), b.recv().await.unwrap());
        assert_eq!((pa.code, pb.code), (1, 2));
        // Answer the second request first, and the first only once the client has seen
        // the second answer: the first exchange must not hold the second one back.
        b.send_packet(2, Bytes::new()).await.unwrap();
        second_seen_rx.await.unwrap();
        a.send_packet(1, Bytes::new()).await.unwrap();
        (a, b, s)
    });
    let p2 = within("reply on c2", c2.recv()).await.unwrap();
    assert_eq!((p2.conn_id, p2.code), (c2.id(), 2));
    second_seen_tx.send(()).unwrap();
    let p1 = within("reply on c1", c1.recv()).await.unwrap();
    assert_eq!((p1.conn_id, p1.code), (c1.id(), 1));
    within("server task", server).await.unwrap();
}

#[tokio::test]
async fn unread_packet_on_one_conn_does_not_block_another() {
    let (c, s) = pair(Config::default()).await;
    let s1 = s.open().unwrap();
    let s2 = s.open().unwrap();
    // The server opens two connections; the client reads the one sent last first.
    within("send", s1.send_packet(11, Bytes::from_static(b"first")))
        .await
        .unwrap();
    within("send", s2.send_packet(12, Bytes::from_static(b"second")))
        .await
        .unwrap();
    let a = within("accept", c.accept()).await.unwrap();
    let b = within("accept", c.accept()).await.unwrap();
    assert_eq!(within("recv b", b.recv()).await.unwrap().code, 12);
    assert_eq!(within("recv a", a.recv()).await.unwrap().code, 11);
}

// ---------------------------------------------------------------------------------------
// lightweight mode

/// send1 reaches the peer's accept + recv. The sender keeps no state for the id, so when
/// the receiving side then sends a request on that connection, the sender answers
/// "connection closed", and that Error is what the receiver's next recv gets. (An answer
/// sent on it is silently dropped: never an automatic reply to the 0x8000 bit.)
#[tokio::test]
async fn send1_reaches_accept_and_recv_and_the_next_recv_gets_connection_closed() {
    let (c, s) = pair(Config::default()).await;
    within("send1", c.send1(&Ping)).await.unwrap();
    let inc = within("accept", s.accept()).await.unwrap();
    assert_eq!(inc.id(), 1);
    let _: Ping = within("recv", inc.expect()).await.unwrap();
    assert_eq!(table(&c), (0, 0), "send1 keeps no connection");

    within("send answer", inc.send(&Pong)).await.unwrap();
    within("send request", inc.send(&Ping)).await.unwrap();
    let p = within("recv", inc.recv()).await.unwrap();
    assert_eq!(
        as_error_message(&p),
        ErrorMessage::new(ErrorCode::PROTOCOL_ERROR, "connection closed")
    );
    let e = within("ask", inc.ask::<Ping, Pong>(&Ping))
        .await
        .unwrap_err();
    assert!(
        matches!(e.peer_error(), Some(m) if m.message == "connection closed"),
        "{e}"
    );
}

#[tokio::test]
async fn after_recv1_further_packets_with_the_same_id_get_connection_closed() {
    let (c, s) = pair(Config::default()).await;
    let conn = c.open().unwrap();
    within("send", conn.send(&Ping)).await.unwrap();
    let req = within("recv1", s.recv1()).await.unwrap();
    assert_eq!((req.conn_id(), req.code()), (conn.id(), Ping::CODE));
    let _: Ping = req.decode().unwrap();
    within("reply", req.reply(&Pong)).await.unwrap();
    let _: Pong = within("answer", conn.expect()).await.unwrap();
    assert_eq!(s.id_state_for_tests(conn.id()), "kept-closed");
    for _ in 0..2 {
        let e = within("ask", conn.ask::<Ping, Pong>(&Ping))
            .await
            .unwrap_err();
        assert!(
            matches!(e.peer_error(), Some(m) if m.message == "connection closed"),
            "{e}"
        );
    }
    assert_eq!(s.stats().conns_accepted, 1);
}

#[tokio::test]
async fn recv1_stateless_takes_later_packets_on_the_same_id_as_new_requests() {
    let (c, s) = pair(Config::default()).await;
    let conn = c.open().unwrap();
    for _ in 0..3 {
        within("send", conn.send(&Ping)).await.unwrap();
        let req = within("recv1_stateless", s.recv1_stateless())
            .await
            .unwrap();
        assert_eq!(req.conn_id(), conn.id());
        assert_eq!(s.id_state_for_tests(conn.id()), "free");
        within("reply", req.reply(&Pong)).await.unwrap();
        let _: Pong = within("answer", conn.expect()).await.unwrap();
    }
    assert_eq!(table(&s), (0, 0));
}

#[tokio::test]
async fn ask1_gets_the_answer_or_the_peer_error() {
    let (c, s) = pair(Config::default()).await;
    let server = tokio::spawn(async move {
        let req = s.recv1().await.unwrap();
        req.reply(&Pong).await.unwrap();
        let req = s.recv1().await.unwrap();
        req.reply(&ErrorMessage::new(ErrorCode::NOT_READY, "busy"))
            .await
            .unwrap();
        s
    });
    let _: Pong = within("ask1", c.ask1(&Ping)).await.unwrap();
    let e = within("ask1", c.ask1::<Ping, Pong>(&Ping))
        .await
        .unwrap_err();
    assert_eq!(
        e.peer_error(),
        Some(&ErrorMessage::new(ErrorCode::NOT_READY, "busy"))
    );
    let _s = within("server", server).await.unwrap();
    assert_eq!(table(&c), (0, 0));
}

// ---------------------------------------------------------------------------------------
// message exchange helpers (section 9)

#[tokio::test]
async fn expect_and_ask_report_unexpected_codes_and_peer_errors() {
    let (c, s) = pair(Config::default()).await;
    let conn = c.open().unwrap();
    within("send", conn.send(&Ping)).await.unwrap();
    let inc = within("accept", s.accept()).await.unwrap();
    let e = within("expect", inc.expect::<Pong>()).await.unwrap_err();
    assert!(
        matches!(
            e.decode_error(),
            Some(DecodeError::Unexpected { code: 2, expected }) if expected == &[0x8002]
        ),
        "{e}"
    );
    within("send", conn.send(&Ping)).await.unwrap();
    let e = within("expect_any", inc.expect_any(&[7, 9]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.decode_error(),
            Some(DecodeError::Unexpected { code: 2, .. })
        ),
        "{e}"
    );
    within("send", conn.send(&Ping)).await.unwrap();
    assert_eq!(
        within("expect_any", inc.expect_any(&[2]))
            .await
            .unwrap()
            .code,
        2
    );

    let answer = async {
        let _: Ping = inc.expect().await.unwrap();
        inc.send(&ErrorMessage::new(ErrorCode::OID_NOT_FOUND, "no such oid"))
            .await
            .unwrap();
    };
    let (e, ()) = within("ask", async {
        tokio::join!(conn.ask::<Ping, Pong>(&Ping), answer)
    })
    .await;
    let e = e.unwrap_err();
    assert!(
        matches!(e.peer_error(), Some(m) if m.code == ErrorCode::OID_NOT_FOUND && m.message == "no such oid"),
        "{e}"
    );
    assert_eq!(e.op(), "ask");
    assert_eq!(e.conn_id(), Some(conn.id()));
}

#[tokio::test]
async fn errors_name_the_link_the_connection_and_the_operation() {
    let (c, s) = tcp_pair(Config::default()).await;
    let conn = c.open().unwrap();
    within("peer close", s.close()).await;
    let e = within("recv", conn.recv()).await.unwrap_err();
    let prefix = format!(
        "{} - {} .{}: recv: ",
        c.local_addr().unwrap(),
        c.remote_addr().unwrap(),
        conn.id()
    );
    assert!(
        e.to_string().starts_with(&prefix),
        "{e} does not start with {prefix}"
    );
    let e = c.open().unwrap_err();
    let prefix = format!(
        "{} - {}: newconn: link is down",
        c.local_addr().unwrap(),
        c.remote_addr().unwrap()
    );
    assert!(
        e.to_string().starts_with(&prefix),
        "{e} does not start with {prefix}"
    );
}

// ---------------------------------------------------------------------------------------
// handshake

#[tokio::test]
async fn handshake_with_the_same_version_succeeds() {
    for version in [nodelink::DEFAULT_VERSION, 1, 0x0102_0304] {
        let config = Config::default().with_version(version);
        let (c, s) = pair(config).await;
        warm_up(&c, &s).await;
    }
}

#[tokio::test]
async fn handshake_version_mismatch_names_both_versions_on_both_sides() {
    let (a, b) = tokio::io::duplex(1024);
    let (client, server) = within("handshakes", async {
        tokio::join!(
            Link::handshake(a, Role::Client, Config::default().with_version(1)),
            Link::handshake(b, Role::Server, Config::default().with_version(2)),
        )
    })
    .await;
    let ce = client.unwrap_err();
    let se = server.unwrap_err();
    assert!(
        matches!(
            ce.handshake_error(),
            Some(HandshakeError::VersionMismatch { peer: 2, ours: 1 })
        ),
        "{ce:?}"
    );
    assert!(
        matches!(
            se.handshake_error(),
            Some(HandshakeError::VersionMismatch { peer: 1, ours: 2 })
        ),
        "{se:?}"
    );
    assert!(
        ce.to_string()
            .ends_with("protocol version mismatch: peer = 00000002 ; our side = 00000001"),
        "{ce}"
    );
    assert!(
        se.to_string()
            .ends_with("protocol version mismatch: peer = 00000001 ; our side = 00000002"),
        "{se}"
    );
    assert_eq!(ce.op(), "handshake");
}

#[tokio::test]
async fn handshake_version_mismatch_over_tcp_names_addresses() {
    let mut listener = nodelink::bind("127.0.0.1:0", Config::default())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let e = within("dial", async {
        tokio::select! {
            r = nodelink::connect(addr, Config::default().with_version(5)) => r,
            r = listener.accept() => panic!("the listener accepted a mismatched link: {r:?}"),
        }
    })
    .await
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&format!(" - {addr}: handshake: ")), "{msg}");
    assert!(
        msg.ends_with("protocol version mismatch: peer = 00000006 ; our side = 00000005"),
        "{msg}"
    );
}

#[tokio::test]
async fn handshake_peer_close_gives_peer_closed() {
    // The peer goes away without a byte.
    let (a, b) = tokio::io::duplex(1024);
    drop(b);
    let e = within(
        "handshake",
        Link::handshake(a, Role::Client, Config::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e.handshake_error(), Some(HandshakeError::PeerClosed)),
        "{e:?}"
    );

    // The peer sends half a version word, then goes away.
    let (a, mut b) = tokio::io::duplex(1024);
    use tokio::io::AsyncWriteExt;
    b.write_all(&[0, 0]).await.unwrap();
    drop(b);
    let e = within(
        "handshake",
        Link::handshake(a, Role::Server, Config::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e.handshake_error(), Some(HandshakeError::PeerClosed)),
        "{e:?}"
    );
}

#[tokio::test]
async fn handshake_peer_close_over_tcp_gives_peer_closed() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let peer = async {
        let (s, _) = l.accept().await.unwrap();
        let mut raw = RawPeer::new(s);
        // Read the dialer's word (so closing sends a clean FIN, not a reset), then leave.
        assert_eq!(raw.read_exact(4).await, vec![0, 0, 0, 6]);
    };
    let (r, ()) = within("dial", async {
        tokio::join!(nodelink::connect(addr, Config::default()), peer)
    })
    .await;
    let e = r.unwrap_err();
    assert!(
        matches!(e.handshake_error(), Some(HandshakeError::PeerClosed)),
        "{e:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn handshake_times_out_with_a_silent_peer() {
    let (a, _silent) = tokio::io::duplex(1024);
    let start = tokio::time::Instant::now();
    let config = Config::default().with_handshake_timeout(Duration::from_secs(3));
    let e = within("handshake", Link::handshake(a, Role::Client, config))
        .await
        .unwrap_err();
    assert!(
        matches!(e.handshake_error(), Some(HandshakeError::Timeout(d)) if *d == Duration::from_secs(3)),
        "{e:?}"
    );
    assert!(start.elapsed() >= Duration::from_secs(3));
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn handshake_times_out_with_a_silent_tcp_peer() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let config = Config::default().with_handshake_timeout(Duration::from_millis(200));
    let (r, held) = within("dial a silent peer", async {
        tokio::join!(nodelink::connect(addr, config), async {
            l.accept().await.unwrap()
        })
    })
    .await;
    let e = r.unwrap_err();
    assert!(
        matches!(e.handshake_error(), Some(HandshakeError::Timeout(_))),
        "{e:?}"
    );
    drop(held);
}

#[tokio::test]
async fn dropping_a_handshake_midway_releases_the_stream() {
    let (a, b) = tokio::io::duplex(1024);
    let mut raw = RawPeer::new(b);
    let mut hs = Box::pin(Link::handshake(a, Role::Client, Config::default()));
    assert!(poll_once(&mut hs).await.is_pending());
    drop(hs);
    assert_eq!(within("version", raw.read_exact(4)).await, vec![0, 0, 0, 6]);
    assert_eq!(within("eof", raw.expect_eof()).await, 0);
}

// ---------------------------------------------------------------------------------------
// cancellation

#[tokio::test]
async fn dropping_ask1_midway_leaves_the_link_usable() {
    let (c, s) = pair(Config::default()).await;
    let server = tokio::spawn(async move {
        while let Ok(req) = s.recv1().await {
            let _ = req.reply(&Pong).await;
        }
    });
    for _ in 0..3 {
        let mut ask = Box::pin(c.ask1::<Ping, Pong>(&Ping));
        assert!(
            poll_once(&mut ask).await.is_pending(),
            "request sent, answer pending"
        );
        drop(ask);
        assert_eq!(table(&c), (0, 0));
    }
    for _ in 0..10 {
        let _: Pong = within("ask1", c.ask1(&Ping)).await.unwrap();
    }
    assert_eq!(table(&c), (0, 0));
    // The late answers for the dropped exchanges were dropped without any Error reply: the
    // client sent HELLO, its 13 requests, and at most one CREDIT frame per late answer
    // (their cost is returned to the server's window).
    let out = c.stats().packets_out;
    assert!((1 + 13..=1 + 13 + 3).contains(&out), "{out}");
    within("close", c.close()).await;
    within("server", server).await.unwrap();
}

#[tokio::test]
async fn dropping_recv_and_accept_midway_loses_nothing() {
    let (c, s) = pair(Config::default()).await;
    let mut accept = Box::pin(s.accept());
    assert!(poll_once(&mut accept).await.is_pending());
    drop(accept);
    let conn = c.open().unwrap();
    within("send", conn.send_packet(7, Bytes::from_static(b"one")))
        .await
        .unwrap();
    let inc = within("accept", s.accept()).await.unwrap();
    assert_eq!(
        within("recv", inc.recv()).await.unwrap().payload,
        &b"one"[..]
    );

    let mut recv = Box::pin(inc.recv());
    assert!(poll_once(&mut recv).await.is_pending());
    drop(recv);
    within("send", conn.send_packet(7, Bytes::from_static(b"two")))
        .await
        .unwrap();
    assert_eq!(
        within("recv", inc.recv()).await.unwrap().payload,
        &b"two"[..]
    );
    drop((conn, inc));
    assert_eq!(table(&c), (0, 0));
    assert_eq!(table(&s).0, 0);
}

#[tokio::test]
async fn dropping_a_send_midway_keeps_the_framing() {
    // A 1 KiB pipe and a 100 KiB packet: the send is dropped in the middle of its write.
    let config = Config::default().with_flow_control(false);
    let (c, mut raw) = raw_and_link(Role::Client, config, 1024).await;
    let conn = c.open().unwrap();
    let big: Vec<u8> = (0..100 << 10).map(|i| (i % 251) as u8).collect();
    let mut send = Box::pin(conn.send_packet(7, Bytes::from(big.clone())));
    assert!(
        poll_once(&mut send).await.is_pending(),
        "the write must be partial"
    );
    drop(send);
    let (sent, (p1, p2)) = within("send after a dropped send", async {
        tokio::join!(conn.send(&Ping), async {
            (raw.next_packet().await, raw.next_packet().await)
        })
    })
    .await;
    sent.unwrap();
    assert_eq!((p1.id, p1.code), (1, 7));
    assert_eq!(
        &p1.payload[..],
        &big[..],
        "the dropped send was completed intact"
    );
    assert_eq!(p2.wire, packet_bytes(1, 2, b""));
}

#[tokio::test]
async fn dropping_a_send_waiting_for_credit_sends_nothing() {
    let (c, s) = pair(small_window()).await;
    warm_up(&c, &s).await;
    let conn = credit_exhausted_conn(&c).await;
    let mut send = Box::pin(conn.send_packet(77, Bytes::from_static(b"never")));
    assert!(poll_once(&mut send).await.is_pending());
    drop(send);
    let inc = within("accept", s.accept()).await.unwrap();
    assert_eq!(within("recv", inc.recv()).await.unwrap().code, 5);
    // Reading the window returned credit: the connection can send again.
    within("send after credit", conn.send(&Ping)).await.unwrap();
    assert_eq!(within("recv", inc.recv()).await.unwrap().code, Ping::CODE);
}

// ---------------------------------------------------------------------------------------
// no automatic reply to answers

#[tokio::test]
async fn never_an_automatic_reply_to_a_packet_with_the_answer_bit() {
    let (link, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    let mut err_payload = bytes::BytesMut::new();
    ErrorMessage::new(ErrorCode::PROTOCOL_ERROR, "connection closed").encode(&mut err_payload);
    // Unknown id of our parity, answer codes: no reply.
    raw.send(2, 0x8000, &err_payload).await;
    raw.send(4, 0x8002, b"").await;
    // A kept-closed id, answer code: no reply.
    raw.send(1, 2, b"").await;
    let inc = within("accept", link.accept()).await.unwrap();
    within("recv", inc.recv()).await.unwrap();
    inc.close();
    raw.send(1, 0x8000, &err_payload).await;
    // New ids of the peer's parity while not accepting, answer codes: refused silently.
    link.close_accept();
    raw.send(3, 0x8000, &err_payload).await;
    raw.send(5, 0x8123, b"x").await;
    // Requests get their replies; those must be the only packets that come back.
    raw.send(7, 2, b"").await;
    raw.send(6, 2, b"").await;
    raw.send(1, 2, b"").await;
    assert_eq!(
        within("reply", raw.next_packet()).await.wire,
        refused_reply(7)
    );
    assert_eq!(
        within("reply", raw.next_packet()).await.wire,
        closed_reply(6)
    );
    assert_eq!(
        within("reply", raw.next_packet()).await.wire,
        closed_reply(1)
    );
    assert_eq!(link.stats().conns_refused, 3);
}

// ---------------------------------------------------------------------------------------
// connection ids by role

#[tokio::test]
async fn connection_ids_by_role_on_the_wire() {
    // Client: odd ids from 1.
    let (c, mut raw) = raw_and_link(Role::Client, Config::default(), 64 << 10).await;
    let conns: Vec<Conn> = (0..3).map(|_| c.open().unwrap()).collect();
    for conn in &conns {
        within("send", conn.send(&Ping)).await.unwrap();
    }
    within("send1", c.send1(&Ping)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(within("raw read", raw.next_packet()).await.id);
    }
    assert_eq!(seen, vec![1, 3, 5, 7]);
    let (answer, ()) = within("ask1", async {
        tokio::join!(c.ask1::<Ping, Pong>(&Ping), async {
            let p = raw.next_packet().await;
            assert_eq!(p.id, 9);
            raw.send(p.id, Pong::CODE, b"").await;
        })
    })
    .await;
    answer.unwrap();

    // Server: even ids from 0.
    let (s, mut raw) = raw_and_link(Role::Server, Config::default(), 64 << 10).await;
    let conns: Vec<Conn> = (0..3).map(|_| s.open().unwrap()).collect();
    for conn in &conns {
        within("send", conn.send(&Ping)).await.unwrap();
    }
    within("send1", s.send1(&Ping)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(within("raw read", raw.next_packet()).await.id);
    }
    assert_eq!(seen, vec![0, 2, 4, 6]);
}

// ---------------------------------------------------------------------------------------
// concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_sending_on_one_conn_do_not_deadlock() {
    const TASKS: u8 = 16;
    const PER_TASK: u16 = 200;
    let (c, s) = pair(small_window()).await;
    let conn = Arc::new(c.open().unwrap());
    let mut senders = Vec::new();
    for t in 0..TASKS {
        let conn = conn.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let mut p = vec![0u8; 1024];
                p[0] = t;
                p[1..3].copy_from_slice(&i.to_be_bytes());
                conn.send_packet(3, Bytes::from(p)).await.unwrap();
            }
        }));
    }
    let receiver = tokio::spawn(async move {
        let inc = s.accept().await.unwrap();
        let mut next = [0u16; TASKS as usize];
        for _ in 0..u32::from(TASKS) * u32::from(PER_TASK) {
            let p = inc.recv().await.unwrap();
            let t = p.payload[0] as usize;
            let i = u16::from_be_bytes([p.payload[1], p.payload[2]]);
            assert_eq!(i, next[t], "per-task order on one connection");
            next[t] += 1;
        }
        next
    });
    within("senders", async {
        for h in senders {
            h.await.unwrap();
        }
    })
    .await;
    let next = within("receiver", receiver).await.unwrap();
    assert!(next.iter().all(|&n| n == PER_TASK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_receiving_on_one_conn_share_the_stream() {
    const N: u32 = 1000;
    const TASKS: u32 = 4;
    let (c, s) = pair(small_window()).await;
    let conn = c.open().unwrap();
    within(
        "first",
        conn.send_packet(1, Bytes::from(0u32.to_be_bytes().to_vec())),
    )
    .await
    .unwrap();
    let inc = Arc::new(within("accept", s.accept()).await.unwrap());
    let mut receivers = Vec::new();
    for _ in 0..TASKS {
        let inc = inc.clone();
        receivers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..N / TASKS {
                let p = inc.recv().await.unwrap();
                got.push(u32::from_be_bytes(p.payload[..4].try_into().unwrap()));
            }
            got
        }));
    }
    within("sends", async {
        for i in 1..N {
            let mut p = i.to_be_bytes().to_vec();
            p.resize(512, 0);
            conn.send_packet(1, Bytes::from(p)).await.unwrap();
        }
    })
    .await;
    let mut all = Vec::new();
    for r in receivers {
        all.extend(within("receiver", r).await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn light_close_racing_with_link_shutdown_ends_cleanly() {
    for close_client in [true, false] {
        let (c, s) = pair(Config::default()).await;
        let server = {
            let s = s.clone();
            tokio::spawn(async move {
                while let Ok(req) = s.recv1().await {
                    tokio::spawn(async move {
                        let _ = req.reply(&Pong).await;
                    });
                }
            })
        };
        let done = Arc::new(AtomicUsize::new(0));
        let (warm_tx, mut warm_rx) = tokio::sync::mpsc::channel::<()>(16);
        let mut askers = Vec::new();
        for _ in 0..8 {
            let (c, done, warm_tx) = (c.clone(), done.clone(), warm_tx.clone());
            askers.push(tokio::spawn(async move {
                let mut n = 0u32;
                loop {
                    match c.ask1::<Ping, Pong>(&Ping).await {
                        Ok(_) => {
                            n += 1;
                            done.fetch_add(1, Ordering::Relaxed);
                            if n == 20 {
                                let _ = warm_tx.send(()).await;
                            }
                        }
                        Err(e) => {
                            assert!(e.is_link_gone(), "unexpected error during shutdown: {e}");
                            return;
                        }
                    }
                }
            }));
        }
        drop(warm_tx);
        for _ in 0..8 {
            within("askers warming up", warm_rx.recv()).await.unwrap();
        }
        if close_client {
            within("client close", c.close()).await;
        } else {
            within("server close", s.close()).await;
        }
        for a in askers {
            within("asker ends", a).await.unwrap();
        }
        assert!(done.load(Ordering::Relaxed) >= 160);
        within("client closed", c.closed()).await;
        within("server closed", s.closed()).await;
        within("server loop", server).await.unwrap();
        assert_eq!(table(&c), (0, 0));
        assert_eq!(table(&s), (0, 0));
    }
}

// ---------------------------------------------------------------------------------------
// write errors take the link down

/// A link (without flow control) over a stream whose writes can be made to fail, with a
/// raw peer at the other end.
async fn breakable_link(
    role: Role,
) -> (
    Link,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    RawPeer<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(64 << 10);
    let stream = BreakableStream::new(a);
    let breaker = stream.breaker();
    let mut raw = RawPeer::new(b);
    let config = Config::default().with_flow_control(false);
    let (link, _) = within("handshake", async {
        tokio::join!(Link::handshake(stream, role, config), raw.handshake(6))
    })
    .await;
    (link.unwrap(), breaker, raw)
}

#[tokio::test]
async fn send_error_on_the_direct_path_takes_the_link_down() {
    let (link, breaker, mut raw) = breakable_link(Role::Client).await;
    let waiting = link.open().unwrap();
    let mut recv = Box::pin(waiting.recv());
    assert!(poll_once(&mut recv).await.is_pending());

    breaker.store(true, Ordering::SeqCst);
    let conn = link.open().unwrap();
    let e = within("send", conn.send(&Ping)).await.unwrap_err();
    // The send that hit the write error reports the I/O error itself.
    assert!(io_with(&e, io::ErrorKind::BrokenPipe), "{e:?}");
    assert!(link.is_closed(), "a write error must take the link down");
    let first = within("waiting recv", recv).await.unwrap_err();
    assert!(io_with(&first, io::ErrorKind::BrokenPipe), "{first:?}");
    // Later operations say the link is down, with the same cause.
    let down = |e: &Error| down_with(e, io::ErrorKind::BrokenPipe);
    assert_kind(link.accept().await, "accept", down);
    assert_kind(link.open(), "new_conn", down);
    within("link tasks end", link.closed()).await;
    within("peer sees the stream closed", raw.expect_eof()).await;
}

#[tokio::test]
async fn write_error_in_the_background_writer_takes_the_link_down() {
    let (link, breaker, mut raw) = breakable_link(Role::Server).await;
    breaker.store(true, Ordering::SeqCst);
    // A request on an unknown id of the server's parity makes the reader queue a
    // "connection closed" reply, which the background writer then fails to write.
    raw.send(0, 2, b"").await;
    let e = within("accept", link.accept()).await.unwrap_err();
    assert!(down_with(&e, io::ErrorKind::BrokenPipe), "{e:?}");
    within("link tasks end", link.closed()).await;
}

// ---------------------------------------------------------------------------------------
// the flow-control extension between two nodelink sides (agreed, never imposed)

#[tokio::test]
async fn nodelink_peers_agree_on_flow_control_and_a_never_read_conn_stalls_no_neighbour() {
    let config = Config::default().with_conn_recv_budget(64 << 10);
    let (client, server) = tcp_pair(config).await;
    // The dialer offered, the acceptor answered: both sides know before any data.
    within("agreement", async {
        while client.peer_flow_control() != nodelink::PeerFlowControl::On
            || server.peer_flow_control() != nodelink::PeerFlowControl::On
        {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    // One connection the server never reads: its sender stops at the window.
    let stuck = client.open().unwrap();
    let chunk = Bytes::from(vec![7u8; 16 << 10]);
    let blocked = tokio::spawn({
        let chunk = chunk.clone();
        async move {
            loop {
                if stuck.send_packet(0x0300, chunk.clone()).await.is_err() {
                    return;
                }
            }
        }
    });
    let _unread = within("accept the stuck conn", server.accept())
        .await
        .unwrap();
    // A neighbour moves 100 times the window meanwhile.
    let busy = client.open().unwrap();
    let sender = tokio::spawn({
        let chunk = chunk.clone();
        async move {
            for _ in 0..400 {
                busy.send_packet(0x0301, chunk.clone()).await.unwrap();
            }
            busy
        }
    });
    let reader = within("accept the busy conn", server.accept())
        .await
        .unwrap();
    for _ in 0..400 {
        let p = within("recv", reader.recv()).await.unwrap();
        assert_eq!((p.code, p.payload.len()), (0x0301, 16 << 10));
    }
    within("sender done", sender).await.unwrap();
    assert!(
        !blocked.is_finished(),
        "the unread connection is held at its window"
    );
    assert_eq!(server.stats().recv_overflows, 0);
    client.close().await;
    within("stuck sender fails on close", blocked)
        .await
        .unwrap();
}

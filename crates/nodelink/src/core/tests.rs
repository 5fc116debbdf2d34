//! Tests of the core alone: bytes in, transmits and wakeups out, time passed by hand.

use super::*;
use crate::frame::Header;
use bytes::BufMut;
use std::time::Duration;

fn core(role: Role, config: Config) -> LinkCore<()> {
    LinkCore::new(role, &config, Arc::from("test"), Instant::now())
}

fn packet(id: u32, code: u16, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    Header {
        conn_id: id,
        code,
        len: payload.len() as u32,
    }
    .put(&mut b);
    b.put_slice(payload);
    b
}

fn input(c: &mut LinkCore<()>, bytes: &[u8]) -> Input {
    let mut buf = BytesMut::from(bytes);
    let r = c.handle_input(&mut buf, Instant::now()).unwrap();
    assert!(buf.is_empty() || r == Input::Blocked);
    r
}

fn transmits(c: &mut LinkCore<()>) -> Vec<Transmit> {
    let mut out = Vec::new();
    c.take_transmits(&mut out);
    out
}

fn strict() -> Config {
    Config::default().with_flow_control(false)
}

#[test]
fn routing_by_parity_with_backpressure_and_refusal_after_close_accept() {
    let mut c = core(Role::Server, strict().with_accept_backlog(2));
    // Our parity, unknown: "connection closed"; answers are never answered.
    input(&mut c, &packet(2, 5, b""));
    input(&mut c, &packet(4, 0x8005, b""));
    assert_eq!(transmits(&mut c), vec![Transmit::Closed(2)]);
    // The peer's parity: new connections, until the backlog is full; then the reader
    // waits instead of refusing.
    input(&mut c, &packet(1, 5, b""));
    input(&mut c, &packet(1, 6, b""));
    input(&mut c, &packet(3, 5, b""));
    assert_eq!(input(&mut c, &packet(5, 5, b"")), Input::Blocked);
    assert!(c.reader_blocked());
    assert_eq!(c.counts(), (2, 0));
    let AcceptPoll::Ready((key, 1)) = c.accept() else {
        panic!("conn 1 first")
    };
    assert!(
        !c.reader_blocked(),
        "room in the backlog lets the reader go on"
    );
    assert_eq!(input(&mut c, b""), Input::Drained);
    assert_eq!(c.counts(), (3, 0));
    let Recv::Packet(p) = c.recv(key) else {
        panic!()
    };
    assert_eq!(p.code, 5);
    let Recv::Packet(p) = c.recv(key) else {
        panic!()
    };
    assert_eq!(p.code, 6);
    // Closing accept refuses what is queued, and what comes later.
    c.close_accept();
    input(&mut c, &packet(7, 5, b""));
    assert_eq!(
        transmits(&mut c),
        vec![
            Transmit::Refused(3),
            Transmit::Refused(5),
            Transmit::Refused(7)
        ]
    );
    assert_eq!(c.stats().conns_refused, 3);
}

#[test]
fn closed_records_answer_late_packets_then_expire() {
    let config = strict().with_keep_closed(Duration::from_secs(60));
    let mut c = core(Role::Server, config);
    input(&mut c, &packet(1, 5, b""));
    let AcceptPoll::Ready((key, 1)) = c.accept() else {
        panic!()
    };
    assert!(matches!(c.recv(key), Recv::Packet(_)));
    let now = Instant::now();
    c.close(key, now);
    assert_eq!(c.id_state(1, now), IdState::KeptClosed);
    input(&mut c, &packet(1, 5, b""));
    assert_eq!(transmits(&mut c), vec![Transmit::Closed(1)]);
    assert_eq!(c.id_state(1, now + Duration::from_secs(61)), IdState::Free);
}

#[test]
fn neo_py_routes_by_answer_bit_and_never_replies() {
    let mut c = core(Role::Client, Config::default().with_dialect(Dialect::NeoPy));
    assert!(transmits(&mut c).is_empty(), "nothing offered to NEO/py");
    let (mine, id) = c.open(Instant::now()).unwrap();
    assert_eq!(id, 0);
    // The peer's request 0 while our request 0 waits: a new request.
    input(&mut c, &packet(0, 2, b"theirs"));
    let AcceptPoll::Ready(taken) = c.accept_request(true, Instant::now()) else {
        panic!()
    };
    assert_eq!(&taken.packet.payload[..], b"theirs");
    // The answer to ours.
    input(&mut c, &packet(0, 0x8002, b"ours"));
    let Recv::Packet(p) = c.recv(mine) else {
        panic!()
    };
    assert_eq!(&p.payload[..], b"ours");
    // An answer for nothing pending, a request while not accepting: dropped silently.
    input(&mut c, &packet(9, 0x8002, b""));
    c.close_accept();
    input(&mut c, &packet(1, 2, b""));
    assert!(transmits(&mut c).is_empty());
    assert_eq!(c.stats().packets_dropped, 2);
    // Closing our request with something queued sends nothing either.
    input(&mut c, &packet(0, 0x8002, b"again"));
    c.finish_light(mine, None);
    assert!(transmits(&mut c).is_empty());
    assert_eq!(c.counts(), (0, 0));
}

#[test]
fn an_exchange_ends_with_its_answer_and_credits_a_large_one_back() {
    // A dialer whose peer agreed on the extension.
    let mut c = core(Role::Client, Config::default());
    let mut hello = BytesMut::new();
    control::encode_hello(1 << 20, &mut hello);
    let ctl = control::control_id_of(Role::Client);
    input(&mut c, &packet(ctl, control::CONTROL_CODE, &hello));
    assert!(matches!(c.mode(), PeerMode::Credit { .. }));
    transmits(&mut c);
    let every = c.credit_every().unwrap();
    // The answer alone (the short path): taken, the exchange released with it; an answer
    // worth a CREDIT frame is credited back, as `recv` would.
    for (len, credited) in [(10usize, false), (every, true)] {
        let (key, id) = c.open_light(cost_of(0), Instant::now).unwrap();
        input(&mut c, &packet(id, 0x8005, &vec![7; len]));
        assert_eq!(c.ready(), 1, "the waiting asker was woken");
        let Recv::Packet(p) = c.take_light(key) else {
            panic!("the answer")
        };
        assert_eq!(p.payload.len(), len);
        assert_eq!((c.ready(), c.rx_total(), c.counts()), (0, 0, (0, 0)));
        assert_eq!(c.id_state(id, Instant::now()), IdState::Free);
        let owed = credited.then_some(Transmit::Credit {
            id,
            bytes: cost_of(len) as u32,
        });
        assert_eq!(transmits(&mut c), owed.into_iter().collect::<Vec<_>>());
        assert!(matches!(c.take_light(key), Recv::Ended { .. }));
    }
    // Two answers queued (the general path): the first is taken, the second discarded
    // and credited back, and the exchange ends the same way.
    let (key, id) = c.open_light(cost_of(0), Instant::now).unwrap();
    let two = [packet(id, 0x8005, b"a"), packet(id, 0x8005, b"b")].concat();
    input(&mut c, &two);
    let Recv::Packet(p) = c.take_light(key) else {
        panic!("the first answer")
    };
    assert_eq!(&p.payload[..], b"a");
    assert_eq!((c.ready(), c.rx_total(), c.counts()), (0, 0, (0, 0)));
    assert_eq!(
        transmits(&mut c),
        vec![Transmit::Credit {
            id,
            bytes: cost_of(1) as u32
        }]
    );
}

#[test]
fn a_released_key_finds_nothing_even_when_its_slot_is_reused() {
    let mut c = core(Role::Client, strict());
    let (a, _) = c.open(Instant::now()).unwrap();
    c.finish_light(a, None);
    let (b, _) = c.open(Instant::now()).unwrap();
    assert_ne!(a, b);
    assert!(matches!(c.recv(a), Recv::Ended { .. }));
    assert!(matches!(c.recv(b), Recv::Empty));
    assert_eq!(c.reserve(a, 10), Reserve::Closed);
}

#[test]
fn packets_read_together_keep_their_order_across_pauses() {
    // One read brings three whole packets and half of a fourth; the backlog takes one
    // at a time, so the reader pauses twice with packets of that read still unrouted.
    let mut c = core(Role::Server, strict().with_accept_backlog(1));
    let mut buf = BytesMut::new();
    for id in [1, 3, 5] {
        buf.put_slice(&packet(id, 5, &[id as u8; 3]));
    }
    let last = packet(7, 5, b"seven");
    buf.put_slice(&last[..12]);
    let mut accepted = Vec::new();
    for _ in 0..3 {
        let r = c.handle_input(&mut buf, Instant::now()).unwrap();
        assert_eq!(r == Input::Drained, accepted.len() == 2);
        let AcceptPoll::Ready((_, id)) = c.accept() else {
            panic!("one connection per round")
        };
        accepted.push(id);
    }
    assert_eq!(accepted, vec![1, 3, 5]);
    assert_eq!(buf.len(), 12);
    // The half packet waited in the buffer, with room reserved for its rest.
    assert!(buf.capacity() >= last.len());
    buf.put_slice(&last[12..]);
    assert_eq!(
        c.handle_input(&mut buf, Instant::now()).unwrap(),
        Input::Drained
    );
    let AcceptPoll::Ready((key, 7)) = c.accept() else {
        panic!("conn 7 last")
    };
    let Recv::Packet(p) = c.recv(key) else {
        panic!()
    };
    assert_eq!(&p.payload[..], b"seven");
    assert!(buf.is_empty());
}

#[test]
fn a_broken_header_after_whole_packets_fails_the_link_after_routing_them() {
    // One read: a request, then a header announcing more than the dialect allows.
    let mut c = core(Role::Server, strict());
    let mut buf = BytesMut::from(&packet(1, 5, b"ok")[..]);
    Header {
        conn_id: 3,
        code: 5,
        len: u32::MAX,
    }
    .put(&mut buf);
    let e = c.handle_input(&mut buf, Instant::now()).unwrap_err();
    assert!(matches!(e, FrameError::TooBig { len: u32::MAX, .. }));
    assert_eq!(c.stats().protocol_errors, 1);
    // The request before it was routed, and nothing was reserved for the bogus length.
    assert!(matches!(c.accept(), AcceptPoll::Ready((_, 1))));
    assert!(buf.capacity() < 1 << 20);
}

#[test]
fn link_recv_limit_holds_the_reader_until_the_application_reads() {
    let config = strict()
        .with_link_recv_limit(1000)
        .with_conn_recv_budget(1 << 20);
    let mut c = core(Role::Server, config);
    input(&mut c, &packet(1, 5, &[0; 2000]));
    let AcceptPoll::Ready((key, _)) = c.accept() else {
        panic!()
    };
    assert_eq!(input(&mut c, &packet(1, 5, b"")), Input::Blocked);
    assert!(matches!(c.recv(key), Recv::Packet(_)));
    assert!(!c.reader_blocked());
    assert_eq!(input(&mut c, b""), Input::Drained);
    assert!(matches!(c.recv(key), Recv::Packet(_)));
}

#[test]
fn shutdown_ends_every_receive_and_send_and_refuses_opens() {
    let mut c = core(Role::Client, strict());
    let (key, _) = c.open(Instant::now()).unwrap();
    c.shutdown();
    assert!(matches!(
        c.recv(key),
        Recv::Ended {
            reason: RxClosed::Link,
            first_link_report: true
        }
    ));
    assert_eq!(c.reserve(key, 1), Reserve::Closed);
    assert_eq!(c.open(Instant::now()), Err(OpenError::Down));
    assert!(matches!(c.accept(), AcceptPoll::Down));
    c.finish_light(key, None);
    assert_eq!(c.counts(), (0, 0));
}

/// An answer that arrived before the link ended is still delivered (the peer replied,
/// then closed); the end is reported after it, and the accounting stays whole.
#[test]
fn what_arrived_before_the_link_ended_is_still_read() {
    let mut c = core(Role::Client, strict());
    let (key, id) = c.open(Instant::now()).unwrap();
    input(&mut c, &packet(id, 0x8002, b"answer"));
    c.shutdown();
    match c.recv(key) {
        Recv::Packet(p) => assert_eq!(&p.payload[..], b"answer"),
        _ => panic!("the answer was dropped by the shutdown"),
    }
    assert!(matches!(
        c.recv(key),
        Recv::Ended {
            reason: RxClosed::Link,
            first_link_report: true
        }
    ));
    assert_eq!(c.rx_total, 0);
    c.finish_light(key, None);
    assert_eq!(c.counts(), (0, 0));
}

/// Model test (loom): a lightweight exchange ending races with link shutdown and with the
/// reader delivering into the same connection, all through the one mutex the driver puts
/// around the core. Run with `RUSTFLAGS="--cfg nodelink_loom" cargo test -p nodelink --lib
/// loom`.
#[cfg(nodelink_loom)]
mod loom_model {
    use super::*;
    use loom::sync::{Arc as LArc, Mutex};
    use loom::thread;

    #[test]
    fn loom_light_close_races_link_shutdown() {
        loom::model(|| {
            let c = LArc::new(Mutex::new(core(Role::Client, strict())));
            let (key, id) = c.lock().unwrap().open(Instant::now()).unwrap();
            let c2 = c.clone();
            let shutdown = thread::spawn(move || c2.lock().unwrap().shutdown());
            let c3 = c.clone();
            let reader = thread::spawn(move || {
                let mut core = c3.lock().unwrap();
                // After shutdown the core ignores input, so the buffer may stay as it is.
                let mut buf = packet(id, 0x8002, b"");
                let _ = core.handle_input(&mut buf, Instant::now());
            });
            {
                let mut core = c.lock().unwrap();
                core.finish_light(key, None);
                if let Ok((next, _)) = core.open(Instant::now()) {
                    assert_ne!(next, key, "a released key is never handed out again");
                    core.finish_light(next, None);
                }
            }
            reader.join().unwrap();
            shutdown.join().unwrap();
            let core = c.lock().unwrap();
            assert_eq!(core.counts(), (0, 0));
            assert_eq!(core.rx_total(), 0);
        });
    }
}

/// A connection waits in the backlog without a slot until a second packet comes for it;
/// either way, recv1 takes its first packet, keeps a closed record (or none, stateless),
/// and the order of the backlog holds.
#[test]
fn requests_waiting_for_recv1_keep_their_order_and_records_with_or_without_a_slot() {
    let mut c = core(Role::Server, strict());
    input(&mut c, &packet(1, 5, b"a"));
    input(&mut c, &packet(3, 5, b"b"));
    // A second packet on 1: it gets its slot, in its place in the backlog.
    input(&mut c, &packet(1, 6, b"c"));
    input(&mut c, &packet(5, 5, b"d"));
    assert_eq!(c.counts(), (3, 0));
    let now = Instant::now();
    let AcceptPoll::Ready(t) = c.accept_request(true, now) else {
        panic!("conn 1 first")
    };
    assert_eq!((t.packet.conn_id, t.packet.code), (1, 5));
    // What followed on it is answered "connection closed" (recv1 keeps one request).
    assert_eq!(transmits(&mut c), vec![Transmit::Closed(1)]);
    let AcceptPoll::Ready(t) = c.accept_request(true, now) else {
        panic!("conn 3 next")
    };
    assert_eq!((t.packet.conn_id, &t.packet.payload[..]), (3, &b"b"[..]));
    assert_eq!(c.id_state(3, now), IdState::KeptClosed);
    input(&mut c, &packet(3, 5, b"late"));
    assert_eq!(transmits(&mut c), vec![Transmit::Closed(3)]);
    // Stateless: the id is forgotten, so the same id opens a new request.
    let AcceptPoll::Ready(t) = c.accept_request(false, now) else {
        panic!("conn 5 last")
    };
    assert_eq!(t.packet.conn_id, 5);
    assert_eq!(c.id_state(5, now), IdState::Free);
    assert_eq!(c.counts(), (0, 2));
    assert_eq!(c.rx_total(), 0);
    input(&mut c, &packet(5, 5, b"again"));
    assert!(matches!(c.accept_request(false, now), AcceptPoll::Ready(_)));
}

//! Property tests: two link cores back to back on the deterministic stream simulator
//! (`nodelink_testkit::sim`), driven by a seeded application model through random
//! interleavings of opens, sends, slow and fast reads, closes, requests, time and link
//! failure.
//!
//! What must hold in every run:
//! * nothing is lost, duplicated or reordered: every message of a connection arrives once,
//!   in order (only a strict peer's budget overflow, or a broken link, may cut a
//!   connection's stream short, and then what arrived is still an in-order prefix);
//! * every request gets exactly one answer;
//! * a side never sends an automatic reply to a packet with the answer bit;
//! * with the flow-control extension agreed, no budget ever overflows (senders keep to
//!   the credit);
//! * memory stays bounded: queued bytes within the link-wide limit (plus one packet), the
//!   accept backlog, connection count and closed records within their limits;
//! * once everything is read and closed, both cores hold nothing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use nodelink_testkit::sim::{Faults, StreamNode, StreamPair};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::frame::Header;
use crate::message::{ErrorCode, ErrorMessage, Message};

const DATA: u16 = 0x0300;
const ASK: u16 = 0x0301;

/// A stream of messages this side sends on a connection it opened.
struct Outgoing {
    key: ConnKey,
    id: u32,
    tag: u64,
    sizes: Vec<usize>,
    next: usize,
    close_when_done: bool,
    closed: bool,
}

/// A connection the peer opened, that this side reads.
struct Incoming {
    key: ConnKey,
    slow: bool,
    ended: bool,
}

/// One side: a core, the bytes it has not handled yet, and an application model.
struct Side {
    core: LinkCore<()>,
    name: &'static str,
    rng: StdRng,
    inbuf: BytesMut,
    /// The same bytes, decoded on the side to count the peer's requests.
    tapbuf: BytesMut,
    out: Vec<u8>,
    /// Bound on the link-wide queue: the limit plus one packet.
    rx_bound: usize,
    backlog_limit: usize,
    max_keep_closed: usize,
    sending: Vec<Outgoing>,
    receiving: Vec<Incoming>,
    /// Per stream tag: the next sequence number expected.
    seen: HashMap<u64, u32>,
    /// Our requests waiting for an answer: key and tag.
    asking: Vec<(ConnKey, u64)>,
    answered: HashSet<u64>,
    /// Per id: packets without the answer bit the peer sent, less automatic replies.
    requests_from_peer: HashMap<u32, i64>,
    next_tag: u64,
    /// Whether receivers may dawdle (slow connections).
    slow_readers: bool,
    broken: bool,
    now: Instant,
}

impl Side {
    fn new(role: Role, config: &Config, name: &'static str, seed: u64, now: Instant) -> Side {
        let mut side = Side {
            core: LinkCore::new(role, config, Arc::from(name), now),
            name,
            rng: StdRng::seed_from_u64(seed),
            inbuf: BytesMut::new(),
            tapbuf: BytesMut::new(),
            out: Vec::new(),
            rx_bound: config.link_recv_limit + cost_of(MAX_MESSAGE),
            backlog_limit: config.accept_backlog,
            max_keep_closed: config.max_keep_closed,
            sending: Vec::new(),
            receiving: Vec::new(),
            seen: HashMap::new(),
            asking: Vec::new(),
            answered: HashSet::new(),
            requests_from_peer: HashMap::new(),
            next_tag: if role == Role::Client {
                1 << 32
            } else {
                2 << 32
            },
            slow_readers: true,
            broken: false,
            now,
        };
        // As the driver does: an offering dialer's HELLO leaves before anything else.
        side.emit();
        side
    }

    /// Opens a connection and schedules `count` messages on it.
    fn open_stream(&mut self, count: usize, max_size: usize, close_when_done: bool) {
        let Ok((key, id)) = self.core.open(self.now) else {
            return;
        };
        self.next_tag += 1;
        let sizes = (0..count)
            .map(|_| 12 + self.rng.random_range(0..=max_size))
            .collect();
        self.sending.push(Outgoing {
            key,
            id,
            tag: self.next_tag,
            sizes,
            next: 0,
            close_when_done,
            closed: false,
        });
    }

    /// Sends one request, as ask1 does.
    fn ask(&mut self) {
        let Ok((key, id)) = self.core.open(self.now) else {
            return;
        };
        self.next_tag += 1;
        let tag = self.next_tag;
        assert_eq!(self.core.reserve(key, cost_of(8)), Reserve::Ok);
        frame(&mut self.out, id, ASK, &tag.to_be_bytes());
        self.asking.push((key, tag));
    }

    /// Closes one of our streams at random (what is still unsent is dropped).
    fn close_some_stream(&mut self) {
        if self.sending.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.sending.len());
        let s = &mut self.sending[i];
        if !s.closed {
            s.closed = true;
            s.sizes.truncate(s.next);
            self.core.close(s.key, self.now);
        }
    }

    /// What the application does whenever it gets to run: accept, read, answer, send.
    fn app(&mut self) {
        if self.broken {
            return;
        }
        let now = self.now;
        // Requests are taken with recv1 and answered at once; streams with accept.
        while self.core.backlog_len() > 0 {
            // (A connection whose queue overflowed before it was accepted has no packet:
            // it is accepted as a stream, and ends with the overflow.)
            match self.core.backlog_front_code() {
                Some(ASK) => {
                    let keep = self.rng.random_bool(0.5);
                    let AcceptPoll::Ready(taken) = self.core.accept_request(keep, now) else {
                        panic!("{}: a queued request vanished", self.name)
                    };
                    assert_eq!(taken.packet.code, ASK);
                    let id = taken.packet.conn_id;
                    frame(&mut self.out, id, ASK | 0x8000, &taken.packet.payload);
                }
                _ => {
                    let AcceptPoll::Ready((key, _)) = self.core.accept() else {
                        panic!("{}: a queued connection vanished", self.name)
                    };
                    let slow = self.slow_readers && self.rng.random_bool(0.3);
                    self.receiving.push(Incoming {
                        key,
                        slow,
                        ended: false,
                    });
                }
            }
        }
        for i in 0..self.receiving.len() {
            let r = &self.receiving[i];
            if r.ended || (r.slow && self.slow_readers && !self.rng.random_bool(0.05)) {
                continue;
            }
            let key = r.key;
            loop {
                match self.core.recv(key) {
                    Recv::Packet(p) => self.check_data(&p),
                    Recv::Empty => break,
                    Recv::Ended { reason, .. } => {
                        assert_ne!(
                            reason,
                            RxClosed::Local,
                            "{}: nobody closed it here",
                            self.name
                        );
                        self.receiving[i].ended = true;
                        if reason == RxClosed::Overflow {
                            assert!(
                                !matches!(self.core.mode(), PeerMode::Credit { .. }),
                                "{}: overflow although the peer takes credit",
                                self.name
                            );
                        }
                        break;
                    }
                }
            }
        }
        // Answers to our requests.
        let mut still = Vec::new();
        for (key, tag) in std::mem::take(&mut self.asking) {
            match self.core.take_light(key) {
                Recv::Packet(p) => {
                    assert_eq!(p.code, ASK | 0x8000, "{}: {p:?}", self.name);
                    assert_eq!(&p.payload[..], &tag.to_be_bytes(), "{}", self.name);
                    assert!(self.answered.insert(tag), "{}: answered twice", self.name);
                }
                Recv::Empty => still.push((key, tag)),
                Recv::Ended { reason, .. } => panic!("{}: request ended: {reason:?}", self.name),
            }
        }
        self.asking = still;
        self.pump();
        self.check_bounds();
    }

    /// Sends what the peer's window allows.
    fn pump(&mut self) {
        for s in &mut self.sending {
            while s.next < s.sizes.len() && !s.closed {
                let size = s.sizes[s.next];
                match self.core.reserve(s.key, cost_of(size)) {
                    Reserve::Ok => {}
                    Reserve::Wait => break,
                    Reserve::Closed => panic!("{}: send side closed", self.name),
                }
                let id = self.core.slots[s.key.index as usize].conn.id;
                let mut payload = vec![0u8; size];
                payload[..8].copy_from_slice(&s.tag.to_be_bytes());
                payload[8..12].copy_from_slice(&(s.next as u32).to_be_bytes());
                frame(&mut self.out, id, DATA, &payload);
                s.next += 1;
            }
            if s.next == s.sizes.len() && s.close_when_done && !s.closed {
                s.closed = true;
                self.core.close(s.key, self.now);
            }
        }
    }

    fn check_data(&mut self, p: &Packet) {
        assert_eq!(p.code, DATA, "{}: {p:?}", self.name);
        let tag = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
        let seq = u32::from_be_bytes(p.payload[8..12].try_into().unwrap());
        let next = self.seen.entry(tag).or_insert(0);
        assert_eq!(seq, *next, "{}: stream {tag:x} out of order", self.name);
        *next += 1;
    }

    fn check_bounds(&mut self) {
        let (open, closed) = self.core.counts();
        assert!(
            self.core.rx_total() <= self.rx_bound,
            "{}: queued {}",
            self.name,
            self.core.rx_total()
        );
        assert!(
            self.core.backlog_len() <= self.backlog_limit,
            "{}",
            self.name
        );
        assert!(closed <= self.max_keep_closed, "{}", self.name);
        assert!(open <= 1 << 20, "{}", self.name);
    }

    /// Hands buffered bytes to the core and moves its transmits onto the wire, checking
    /// that no automatic reply answers an answer.
    fn feed(&mut self) {
        if self.broken {
            return;
        }
        match self.core.handle_input(&mut self.inbuf, self.now) {
            Ok(_) => {}
            Err(e) => panic!("{}: framing error between two cores: {e}", self.name),
        }
        self.emit();
    }

    /// Frames the core's transmits.
    fn emit(&mut self) {
        let mut transmits = Vec::new();
        self.core.take_transmits(&mut transmits);
        for t in transmits {
            match t {
                Transmit::Closed(id) | Transmit::Refused(id) => {
                    let owed = self.requests_from_peer.entry(id).or_default();
                    *owed -= 1;
                    assert!(
                        *owed >= 0,
                        "{}: more automatic replies on {id} than requests from the peer",
                        self.name
                    );
                    let text = if matches!(t, Transmit::Closed(_)) {
                        "connection closed"
                    } else {
                        "connection refused"
                    };
                    let mut b = BytesMut::new();
                    ErrorMessage::encode_parts(ErrorCode::PROTOCOL_ERROR, text, &mut b);
                    frame(&mut self.out, id, ErrorMessage::CODE, &b);
                }
                Transmit::Negotiation(Reply::Hello { window }) => {
                    let mut b = BytesMut::new();
                    control::encode_hello(window, &mut b);
                    let role_peer_id = if self.name == "client" {
                        0xFFFF_FFFE
                    } else {
                        0xFFFF_FFFF
                    };
                    frame(&mut self.out, role_peer_id, control::CONTROL_CODE, &b);
                }
                Transmit::Negotiation(Reply::Decline) => {
                    let mut b = BytesMut::new();
                    ErrorMessage::encode_parts(
                        ErrorCode::PROTOCOL_ERROR,
                        "connection closed",
                        &mut b,
                    );
                    frame(&mut self.out, 0xFFFF_FFFE, ErrorMessage::CODE, &b);
                }
                Transmit::Ping | Transmit::Pong => {
                    let mut b = BytesMut::new();
                    if matches!(t, Transmit::Ping) {
                        control::encode_ping(&mut b);
                    } else {
                        control::encode_pong(&mut b);
                    }
                    let to_peer = if self.name == "client" {
                        0xFFFF_FFFE
                    } else {
                        0xFFFF_FFFF
                    };
                    frame(&mut self.out, to_peer, control::CONTROL_CODE, &b);
                }
                Transmit::Credit { id, bytes } => {
                    let mut b = BytesMut::new();
                    control::encode_credits(&[(id, bytes)], &mut b);
                    let to_peer = if self.name == "client" {
                        0xFFFF_FFFE
                    } else {
                        0xFFFF_FFFF
                    };
                    frame(&mut self.out, to_peer, control::CONTROL_CODE, &b);
                }
            }
        }
        // Wakeups matter to a driver with parked tasks; this model polls instead.
        let list = self.core.take_wakeups();
        self.core.recycle_wakeups(list);
    }

    /// Records the ids of requests in bytes about to be handed to the core.
    fn tap(&mut self, bytes: &[u8]) {
        // Only the bytes after what was already tapped: the partial packet at the end of
        // the unhandled input is completed by these.
        let mut copy = std::mem::take(&mut self.tapbuf);
        copy.put_slice(bytes);
        while let Ok(Some(p)) = crate::frame::decode_packet_with_limit(&mut copy, usize::MAX) {
            if !p.is_answer() {
                *self.requests_from_peer.entry(p.conn_id).or_default() += 1;
            }
        }
        self.tapbuf = copy;
    }
}

/// The biggest message the model sends.
const MAX_MESSAGE: usize = 40 << 10;

fn frame(out: &mut Vec<u8>, id: u32, code: u16, payload: &[u8]) {
    let h = Header {
        conn_id: id,
        code,
        len: payload.len() as u32,
    };
    out.extend_from_slice(&h.to_bytes());
    out.extend_from_slice(payload);
}

impl StreamNode for Side {
    fn on_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.now = now;
        self.tap(bytes);
        self.inbuf.extend_from_slice(bytes);
        self.feed();
    }

    fn poll_bytes(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.now = now;
        self.app();
        // Reading may have made room for a packet the core held back.
        self.feed();
        out.append(&mut self.out);
    }

    fn next_timer(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    fn on_timer(&mut self, now: Instant) {
        self.now = now;
        self.core.handle_timeout(now);
    }

    fn on_broken(&mut self, now: Instant) {
        self.now = now;
        self.broken = true;
        self.core.shutdown();
    }

    fn busy(&self) -> bool {
        // Input is unprocessed while it waits in the buffer or, cut off, in the core.
        !self.broken && (!self.inbuf.is_empty() || self.core.holds_input())
    }
}

impl<W: Ext> LinkCore<W> {
    /// The message code of the first packet of the next connection to accept.
    fn backlog_front_code(&self) -> Option<u16> {
        match self.backlog.front()? {
            super::Incoming::Slot(key) => self.slots[key.index as usize].conn.first_code(),
            super::Incoming::First { packet, .. } => Some(packet.code),
        }
    }
}

/// One randomised run; returns a summary for determinism checks.
fn run(seed: u64, dialect: Dialect) -> (u64, usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = |rng: &mut StdRng| {
        Config::default()
            .with_dialect(dialect)
            .with_flow_control(rng.random_bool(0.7))
            .with_conn_recv_budget(rng.random_range(64 << 10..=256 << 10))
            .with_link_recv_limit(rng.random_range(128 << 10..=1 << 20))
            .with_accept_backlog(rng.random_range(1..=8))
            .with_max_keep_closed(rng.random_range(0..=16))
            .with_keep_closed(Duration::from_millis(rng.random_range(0..=50)))
    };
    let (cc, sc) = (config(&mut rng), config(&mut rng));
    let now = Instant::now();
    let client = Side::new(Role::Client, &cc, "client", seed ^ 1, now);
    let server = Side::new(Role::Server, &sc, "server", seed ^ 2, now);
    let faults = Faults {
        max_chunk: rng.random_range(1..=16 << 10),
        max_delay: Duration::from_micros(rng.random_range(0..=2000)),
        break_after: rng
            .random_bool(0.15)
            .then(|| Duration::from_millis(rng.random_range(1..=300))),
    };
    let mut pair = StreamPair::new(client, server, seed, faults);
    let full = dialect == Dialect::NeoGo;
    for _ in 0..rng.random_range(20..=80) {
        let side: &mut Side = if rng.random_bool(0.5) {
            &mut pair.a
        } else {
            &mut pair.b
        };
        match rng.random_range(0..10) {
            0..=3 if full => {
                let count = rng.random_range(1..=40);
                let max = rng.random_range(0..=MAX_MESSAGE - 12);
                side.open_stream(count, max, rng.random_bool(0.5));
            }
            4 if full => side.close_some_stream(),
            _ => {
                for _ in 0..rng.random_range(1..=20) {
                    side.ask();
                }
            }
        }
        pair.run_for(Duration::from_micros(rng.random_range(0..=5000)));
    }
    // Everybody reads now; let it all flow.
    pair.a.slow_readers = false;
    pair.b.slow_readers = false;
    let settled = pair.settle(Duration::from_secs(30));
    let broken = pair.is_broken();
    assert!(settled || broken, "seed {seed}: the link never went quiet");
    if !broken {
        for (me, peer) in [(&pair.a, &pair.b), (&pair.b, &pair.a)] {
            assert!(
                me.asking.is_empty(),
                "seed {seed}: {} has {} unanswered requests",
                me.name,
                me.asking.len()
            );
            for s in &peer.sending {
                let got = me.seen.get(&s.tag).copied().unwrap_or(0);
                // Only a strict peer's overflow may cut a stream short.
                if me.core.stats().recv_overflows == 0 {
                    assert_eq!(
                        got as usize,
                        s.sizes.len(),
                        "seed {seed}: stream {:x} on {} to {} incomplete (sender mode {:?}, receiver mode {:?})",
                        s.tag,
                        s.id,
                        me.name,
                        peer.core.mode(),
                        me.core.mode(),
                    );
                }
            }
        }
        // Close everything that is left; both cores end empty.
        for side in [&mut pair.a, &mut pair.b] {
            let now = side.now;
            for s in side.sending.iter_mut().filter(|s| !s.closed) {
                s.closed = true;
                side.core.close(s.key, now);
            }
            for r in side.receiving.drain(..) {
                side.core.close(r.key, now);
            }
        }
        assert!(pair.settle(Duration::from_secs(5)), "seed {seed}");
        for side in [&pair.a, &pair.b] {
            assert_eq!(
                side.core.counts().0,
                0,
                "seed {seed}: {} keeps connections",
                side.name
            );
            assert_eq!(
                side.core.rx_total(),
                0,
                "seed {seed}: {} keeps bytes",
                side.name
            );
        }
    } else {
        for side in [&mut pair.a, &mut pair.b] {
            assert_eq!(side.core.open(side.now), Err(OpenError::Down));
            for r in &side.receiving {
                // What arrived before the end stays readable; then the end is reported.
                loop {
                    match side.core.recv(r.key) {
                        Recv::Packet(_) => continue,
                        Recv::Ended { .. } => break,
                        Recv::Empty => panic!("seed {seed}: a receive waits after the end"),
                    }
                }
            }
        }
    }
    (
        pair.delivered(),
        pair.a.answered.len(),
        pair.b.answered.len(),
    )
}

#[test]
fn neo_go_pairs_lose_nothing_under_random_schedules() {
    for seed in 0..150 {
        run(seed, Dialect::NeoGo);
    }
}

#[test]
fn neo_py_pairs_answer_every_request_under_random_schedules() {
    for seed in 1000..1100 {
        run(seed, Dialect::NeoPy);
    }
}

#[test]
fn runs_are_deterministic() {
    assert_eq!(run(42, Dialect::NeoGo), run(42, Dialect::NeoGo));
}

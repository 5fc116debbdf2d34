//! Property tests: two socket cores joined by the deterministic stream simulator
//! (`nodelink_testkit::sim`), each with a model application that opens, sends on and
//! closes connections at random moments, so closes cross, CloseSockets go stale and
//! closes are cancelled in every interleaving the seeds find. Checked for every seed:
//! - no side ever sees a protocol violation;
//! - every message arrives once, in order, on the connection it was sent on, and every
//!   connection opened is closed at the other end;
//! - once both sides have closed everything, the socket always ends by agreement on both
//!   sides (no socket stays open without connections, none is abandoned);
//! - a broken stream ends both sides, each reporting a loss only if it was in use;
//! - what the cores hold stays bounded by what is open.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use nodelink_testkit::sim::{Faults, StreamNode, StreamPair};
use nodelink_testkit::SeededRng;
use tokio::time::Instant;

use super::socket::{End, Phase, SocketCore, SocketEvent, SocketLimits};
use crate::wire::{encode_data_header, FrameDecoder};

/// One end: a core, the frames it gets, and a model application.
struct Node {
    core: SocketCore,
    decoder: FrameDecoder,
    input: BytesMut,
    output: BytesMut,
    /// Our open connections: lcid and messages sent so far.
    open: Vec<(u32, u64)>,
    /// Messages sent per lcid, over the whole run.
    sent: HashMap<u32, u64>,
    /// The peer's connections: messages received so far, and whether it closed.
    incoming: HashMap<u32, (u64, bool)>,
    ended: Option<End>,
    /// Whether the socket was still open (in use) when the stream broke.
    open_when_broken: Option<bool>,
    problems: Vec<String>,
}

impl Node {
    fn new() -> Self {
        Node {
            core: SocketCore::new(SocketLimits {
                max_incoming: 1000,
                answer_timeout: Some(Duration::from_secs(10)),
            }),
            decoder: FrameDecoder::new(1 << 20),
            input: BytesMut::new(),
            output: BytesMut::new(),
            open: Vec::new(),
            sent: HashMap::new(),
            incoming: HashMap::new(),
            ended: None,
            open_when_broken: None,
            problems: Vec::new(),
        }
    }

    /// Takes what the core produced: frames to the output, events to the model.
    fn drain(&mut self) {
        self.core.write_transmit(&mut self.output);
        while let Some(ev) = self.core.poll_event() {
            match ev {
                SocketEvent::Opened(lcid) => {
                    if self.incoming.insert(lcid, (0, false)).is_some() {
                        self.problems.push(format!("{lcid} opened twice"));
                    }
                }
                SocketEvent::Received(lcid, payload) => match self.incoming.get_mut(&lcid) {
                    Some((n, false)) => {
                        let seq = u64::from_be_bytes(payload[..8].try_into().unwrap());
                        if seq != *n {
                            self.problems
                                .push(format!("{lcid}: message {seq}, expected {n}"));
                        }
                        *n += 1;
                    }
                    _ => self.problems.push(format!("data on {lcid}, not open")),
                },
                SocketEvent::Closed(lcid) => match self.incoming.get_mut(&lcid) {
                    Some((_, closed @ false)) => *closed = true,
                    _ => self.problems.push(format!("{lcid} closed but not open")),
                },
                SocketEvent::Resumed => {}
                SocketEvent::Finished(end) => {
                    if self.ended.replace(end).is_some() {
                        self.problems.push("finished twice".into());
                    }
                }
            }
        }
    }

    fn open(&mut self) {
        if let Ok(lcid) = self.core.open() {
            self.open.push((lcid, 0));
            self.sent.insert(lcid, 0);
        }
        self.drain();
    }

    fn send(&mut self, i: usize) {
        if self.core.phase() == Phase::Finished {
            return;
        }
        let (lcid, n) = &mut self.open[i];
        encode_data_header(*lcid, 8, &mut self.output);
        self.output.put_u64(*n);
        *n += 1;
        self.sent.insert(*lcid, *n);
    }

    fn close(&mut self, i: usize, now: Instant) {
        let (lcid, _) = self.open.swap_remove(i);
        self.core.close(lcid, now);
        self.drain();
    }

    /// One random application step.
    fn act(&mut self, rng: &mut SeededRng, now: Instant) {
        match rng.range(0..10) {
            0..=2 => self.open(),
            3..=6 if !self.open.is_empty() => self.send(rng.range(0..self.open.len())),
            7..=9 if !self.open.is_empty() => self.close(rng.range(0..self.open.len()), now),
            _ => {}
        }
    }

    fn close_all(&mut self, now: Instant) {
        while !self.open.is_empty() {
            self.close(0, now);
        }
    }
}

impl StreamNode for Node {
    fn on_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        loop {
            match self.decoder.decode(&mut self.input) {
                Ok(Some(frame)) => {
                    if let Err(v) = self.core.on_frame(frame, now) {
                        self.problems.push(format!("violation: {}", v.0));
                        self.core.fail(v.0);
                    }
                    self.drain();
                }
                Ok(None) => break,
                Err(e) => {
                    self.problems.push(format!("undecodable: {e}"));
                    break;
                }
            }
        }
    }

    fn poll_bytes(&mut self, _now: Instant, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.output);
        self.output.clear();
    }

    fn next_timer(&self) -> Option<Instant> {
        self.core.next_timer()
    }

    fn on_timer(&mut self, now: Instant) {
        self.core.on_timer(now);
        self.drain();
    }

    fn on_broken(&mut self, _now: Instant) {
        self.open_when_broken = Some(self.core.phase() == Phase::Open);
        self.core.fail("broken");
        self.drain();
    }
}

fn faults(rng: &mut SeededRng) -> Faults {
    Faults {
        max_chunk: rng.range(1..64),
        max_delay: Duration::from_micros(rng.range(0..3000)),
        break_after: None,
    }
}

/// Random activity on both ends, then everything closed: the socket must end by
/// agreement on both sides, with every message delivered.
#[test]
fn teardown_always_completes_and_nothing_is_lost() {
    for seed in 0..300u64 {
        let mut rng = SeededRng::new(seed);
        let mut pair = StreamPair::new(Node::new(), Node::new(), seed, faults(&mut rng));
        // A socket exists because one side connected: its first connection comes at once.
        pair.a.open();
        for _ in 0..rng.range(1..80) {
            let now = pair.now();
            if rng.chance(500) {
                pair.a.act(&mut rng, now);
            } else {
                pair.b.act(&mut rng, now);
            }
            // Some steps happen at once (closes that cross), some after a while.
            if rng.chance(600) {
                pair.run_for(Duration::from_micros(rng.range(0..4000)));
            }
            let held = pair.a.core.incoming() + pair.b.core.incoming();
            assert!(held <= pair.a.sent.len() + pair.b.sent.len(), "seed {seed}");
        }
        // Both close what they have, possibly at the same moment.
        let now = pair.now();
        pair.a.close_all(now);
        if rng.chance(500) {
            pair.run_for(Duration::from_micros(rng.range(0..4000)));
        }
        let now = pair.now();
        pair.b.close_all(now);
        assert!(
            pair.settle(Duration::from_secs(5)),
            "seed {seed}: never settled"
        );

        for (name, me, peer) in [("a", &pair.a, &pair.b), ("b", &pair.b, &pair.a)] {
            assert!(
                me.problems.is_empty(),
                "seed {seed}, {name}: {:?}",
                me.problems
            );
            assert_eq!(
                me.ended,
                Some(End::Agreed),
                "seed {seed}, {name}: a socket with nothing open did not end by agreement: {:?} / {:?}", me.core, peer.core
            );
            // Every connection the peer opened arrived whole, then closed.
            for (lcid, sent) in &peer.sent {
                assert_eq!(
                    me.incoming.get(lcid),
                    Some(&(*sent, true)),
                    "seed {seed}, {name}: connection {lcid} (received, closed)"
                );
            }
        }
    }
}

/// Every message arrives once and in order while connections stay open: counted at the
/// receiver before the close.
#[test]
fn messages_arrive_once_in_order() {
    for seed in 0..100u64 {
        let mut rng = SeededRng::new(seed);
        let mut pair = StreamPair::new(Node::new(), Node::new(), seed, faults(&mut rng));
        for _ in 0..4 {
            pair.a.open();
            pair.b.open();
        }
        for _ in 0..200 {
            let i = rng.range(0..4);
            if rng.chance(500) {
                pair.a.send(i);
            } else {
                pair.b.send(i);
            }
            if rng.chance(300) {
                pair.run_for(Duration::from_micros(rng.range(0..2000)));
            }
        }
        assert!(pair.settle(Duration::from_secs(5)), "seed {seed}");
        for (me, peer) in [(&pair.a, &pair.b), (&pair.b, &pair.a)] {
            assert!(me.problems.is_empty(), "seed {seed}: {:?}", me.problems);
            for (lcid, sent) in &peer.sent {
                assert_eq!(me.incoming.get(lcid), Some(&(*sent, false)), "seed {seed}");
            }
        }
    }
}

/// A stream that breaks at a random moment ends both sides; each reports a loss exactly
/// when it still had the socket in use (not while closing).
#[test]
fn a_broken_stream_ends_both_sides() {
    for seed in 0..200u64 {
        let mut rng = SeededRng::new(seed);
        let mut f = faults(&mut rng);
        f.break_after = Some(Duration::from_micros(rng.range(0..20_000)));
        let mut pair = StreamPair::new(Node::new(), Node::new(), seed, f);
        for _ in 0..rng.range(1..60) {
            let now = pair.now();
            if rng.chance(500) {
                pair.a.act(&mut rng, now);
            } else {
                pair.b.act(&mut rng, now);
            }
            pair.run_for(Duration::from_micros(rng.range(0..1000)));
        }
        pair.run_for(Duration::from_millis(30));
        assert!(pair.is_broken() || pair.a.ended.is_some(), "seed {seed}");
        for node in [&pair.a, &pair.b] {
            assert!(node.problems.is_empty(), "seed {seed}: {:?}", node.problems);
            assert!(node.ended.is_some(), "seed {seed}: a side never ended");
            assert_eq!(node.core.phase(), Phase::Finished);
            // A loss is reported exactly when the socket was open, not while closing.
            if let (Some(open), Some(End::Lost { report, .. })) =
                (node.open_when_broken, &node.ended)
            {
                assert_eq!(*report, open, "seed {seed}");
            }
        }
    }
}

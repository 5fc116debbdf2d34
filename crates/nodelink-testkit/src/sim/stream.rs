//! Two I/O-free protocol cores joined by a simulated byte stream.
//!
//! Protocol logic that owns no socket and no clock (nodelink's link core, the endpoint
//! transport's socket core, smux) can be tested without a runtime: two [`StreamNode`]s
//! are wired back to back through a [`StreamPair`], which carries the bytes each one
//! produces to the other on a virtual clock. Seeded faults shape the stream the way a real
//! one behaves: bytes arrive in order but cut into chunks of any size, after delays, and
//! the stream may break. Nothing sleeps, nothing depends on the machine's speed: the same
//! seed gives the same run.
//!
//! ```
//! use std::time::Duration;
//! use nodelink_testkit::sim::{Faults, StreamNode, StreamPair};
//! use tokio::time::Instant;
//!
//! /// Counts what arrives; the echoing end also sends it back.
//! #[derive(Default)]
//! struct Node { echo: bool, out: Vec<u8>, seen: usize }
//! impl StreamNode for Node {
//!     fn on_bytes(&mut self, _now: Instant, bytes: &[u8]) {
//!         self.seen += bytes.len();
//!         if self.echo {
//!             self.out.extend_from_slice(bytes);
//!         }
//!     }
//!     fn poll_bytes(&mut self, _now: Instant, out: &mut Vec<u8>) {
//!         out.append(&mut self.out);
//!     }
//! }
//!
//! let echo = Node { echo: true, ..Node::default() };
//! let mut pair = StreamPair::new(Node::default(), echo, 7, Faults::default());
//! pair.a.out.extend_from_slice(b"ping");
//! pair.run_for(Duration::from_millis(100));
//! assert_eq!(pair.b.seen, 4);
//! assert_eq!(pair.a.seen, 4); // the echo came back
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// One end of a simulated stream: a protocol core plus whatever application model the
/// test puts around it.
pub trait StreamNode {
    /// Bytes arrived from the peer, in order.
    fn on_bytes(&mut self, now: Instant, bytes: &[u8]);
    /// Appends the bytes this node wants to send now.
    fn poll_bytes(&mut self, now: Instant, out: &mut Vec<u8>);
    /// When the node's next timer fires, if it has one.
    fn next_timer(&self) -> Option<Instant> {
        None
    }
    /// The timer of [`Self::next_timer`] is due.
    fn on_timer(&mut self, _now: Instant) {}
    /// The stream broke: nothing more arrives or leaves.
    fn on_broken(&mut self, _now: Instant) {}
    /// Whether the node still has work that needs no further input (bytes it received but
    /// has not handled yet): a pair is only settled when neither is busy.
    fn busy(&self) -> bool {
        false
    }
}

/// How badly the stream behaves.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Bytes are delivered in chunks of 1 to `max_chunk` bytes.
    pub max_chunk: usize,
    /// Each chunk is delayed by up to this much (order is kept, as in a real stream).
    pub max_delay: Duration,
    /// The stream breaks at this time after the start, if set.
    pub break_after: Option<Duration>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            max_chunk: 64 << 10,
            max_delay: Duration::from_millis(1),
            break_after: None,
        }
    }
}

/// Bytes in flight in one direction: (delivery time, chunk), in delivery order.
type Pipe = VecDeque<(Instant, Vec<u8>)>;

/// Two nodes joined by a simulated stream; `a` and `b` stay reachable for the test.
pub struct StreamPair<A, B> {
    /// One end.
    pub a: A,
    /// The other end.
    pub b: B,
    now: Instant,
    start: Instant,
    rng: StdRng,
    faults: Faults,
    a_to_b: Pipe,
    b_to_a: Pipe,
    broken: bool,
    scratch: Vec<u8>,
    delivered: u64,
}

impl<A: StreamNode, B: StreamNode> StreamPair<A, B> {
    /// Joins `a` and `b`; `seed` decides every chunk size and delay.
    pub fn new(a: A, b: B, seed: u64, faults: Faults) -> Self {
        let now = Instant::now();
        StreamPair {
            a,
            b,
            now,
            start: now,
            rng: StdRng::seed_from_u64(seed),
            faults,
            a_to_b: VecDeque::new(),
            b_to_a: VecDeque::new(),
            broken: false,
            scratch: Vec::new(),
            delivered: 0,
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Whether the stream broke.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Bytes delivered so far, both directions.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Bytes in flight, both directions.
    pub fn in_flight(&self) -> usize {
        self.a_to_b
            .iter()
            .chain(&self.b_to_a)
            .map(|(_, c)| c.len())
            .sum()
    }

    /// Breaks the stream now: both nodes are told, bytes in flight are lost.
    pub fn break_now(&mut self) {
        if self.broken {
            return;
        }
        self.broken = true;
        self.a_to_b.clear();
        self.b_to_a.clear();
        self.a.on_broken(self.now);
        self.b.on_broken(self.now);
    }

    /// Moves the virtual clock forward by `dt`, delivering bytes and firing timers on the
    /// way, in time order.
    pub fn run_for(&mut self, dt: Duration) {
        let end = self.now + dt;
        loop {
            self.collect_output();
            let next = [
                self.a_to_b.front().map(|(t, _)| *t),
                self.b_to_a.front().map(|(t, _)| *t),
                self.a.next_timer(),
                self.b.next_timer(),
                self.faults
                    .break_after
                    .map(|d| self.start + d)
                    .filter(|_| !self.broken),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|t| *t <= end) else {
                self.now = end;
                return;
            };
            self.now = self.now.max(next);
            self.step();
        }
    }

    /// Runs until no byte is in flight, neither node has anything to send and neither is
    /// [busy](StreamNode::busy) (timers may still be pending); returns false if that did not
    /// happen within `limit`.
    pub fn settle(&mut self, limit: Duration) -> bool {
        let end = self.now + limit;
        while self.now < end {
            self.run_for(Duration::from_millis(1));
            if self.a_to_b.is_empty() && self.b_to_a.is_empty() {
                self.collect_output();
                let quiet = self.a_to_b.is_empty() && self.b_to_a.is_empty();
                if quiet && !self.a.busy() && !self.b.busy() {
                    return true;
                }
            }
        }
        false
    }

    /// Handles everything due at `self.now`.
    fn step(&mut self) {
        let now = self.now;
        if let Some(at) = self.faults.break_after.map(|d| self.start + d) {
            if at <= now {
                self.break_now();
            }
        }
        while let Some((t, _)) = self.a_to_b.front() {
            if *t > now {
                break;
            }
            let (_, chunk) = self.a_to_b.pop_front().expect("front exists");
            self.delivered += chunk.len() as u64;
            self.b.on_bytes(now, &chunk);
        }
        while let Some((t, _)) = self.b_to_a.front() {
            if *t > now {
                break;
            }
            let (_, chunk) = self.b_to_a.pop_front().expect("front exists");
            self.delivered += chunk.len() as u64;
            self.a.on_bytes(now, &chunk);
        }
        if self.a.next_timer().is_some_and(|t| t <= now) {
            self.a.on_timer(now);
        }
        if self.b.next_timer().is_some_and(|t| t <= now) {
            self.b.on_timer(now);
        }
    }

    /// Takes what both nodes want to send and puts it on the wire in chunks.
    fn collect_output(&mut self) {
        let now = self.now;
        self.scratch.clear();
        self.a.poll_bytes(now, &mut self.scratch);
        let bytes = std::mem::take(&mut self.scratch);
        Self::enqueue(
            &mut self.rng,
            &self.faults,
            self.broken,
            now,
            &mut self.a_to_b,
            &bytes,
        );
        self.scratch = bytes;
        self.scratch.clear();
        self.b.poll_bytes(now, &mut self.scratch);
        let bytes = std::mem::take(&mut self.scratch);
        Self::enqueue(
            &mut self.rng,
            &self.faults,
            self.broken,
            now,
            &mut self.b_to_a,
            &bytes,
        );
        self.scratch = bytes;
    }

    fn enqueue(
        rng: &mut StdRng,
        faults: &Faults,
        broken: bool,
        now: Instant,
        pipe: &mut Pipe,
        bytes: &[u8],
    ) {
        if broken {
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = rng
                .random_range(1..=faults.max_chunk.max(1))
                .min(rest.len());
            let delay = if faults.max_delay.is_zero() {
                Duration::ZERO
            } else {
                rng.random_range(Duration::ZERO..=faults.max_delay)
            };
            // A stream keeps order: a chunk never overtakes the one before it.
            let at = pipe
                .back()
                .map_or(now + delay, |(t, _)| (*t).max(now + delay));
            pipe.push_back((at, rest[..n].to_vec()));
            rest = &rest[n..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what arrives; sends a scripted message once.
    #[derive(Default)]
    struct Recorder {
        to_send: Vec<u8>,
        got: Vec<u8>,
        chunks: usize,
        broken: bool,
        timer: Option<Instant>,
        fired: usize,
    }

    impl StreamNode for Recorder {
        fn on_bytes(&mut self, _now: Instant, bytes: &[u8]) {
            self.got.extend_from_slice(bytes);
            self.chunks += 1;
        }
        fn poll_bytes(&mut self, _now: Instant, out: &mut Vec<u8>) {
            out.append(&mut self.to_send);
        }
        fn next_timer(&self) -> Option<Instant> {
            self.timer
        }
        fn on_timer(&mut self, _now: Instant) {
            self.timer = None;
            self.fired += 1;
        }
        fn on_broken(&mut self, _now: Instant) {
            self.broken = true;
        }
    }

    fn run(seed: u64) -> (Vec<u8>, usize) {
        let faults = Faults {
            max_chunk: 7,
            max_delay: Duration::from_millis(5),
            break_after: None,
        };
        let mut pair = StreamPair::new(Recorder::default(), Recorder::default(), seed, faults);
        pair.a.to_send = (0..=255u8).collect();
        assert!(pair.settle(Duration::from_secs(1)));
        (pair.b.got.clone(), pair.b.chunks)
    }

    #[test]
    fn bytes_arrive_in_order_in_chunks_and_runs_repeat() {
        let (got, chunks) = run(1);
        assert_eq!(got, (0..=255u8).collect::<Vec<_>>());
        assert!(chunks >= 256 / 7);
        assert_eq!(run(1), (got, chunks), "same seed, same run");
    }

    #[test]
    fn timers_fire_on_the_virtual_clock_and_breaks_stop_everything() {
        let faults = Faults {
            break_after: Some(Duration::from_secs(10)),
            ..Faults::default()
        };
        let mut pair = StreamPair::new(Recorder::default(), Recorder::default(), 3, faults);
        pair.a.timer = Some(pair.now() + Duration::from_secs(5));
        pair.run_for(Duration::from_secs(4));
        assert_eq!(pair.a.fired, 0);
        pair.run_for(Duration::from_secs(2));
        assert_eq!(pair.a.fired, 1);
        pair.run_for(Duration::from_secs(5));
        assert!(pair.is_broken() && pair.a.broken && pair.b.broken);
        pair.a.to_send = b"lost".to_vec();
        pair.run_for(Duration::from_secs(1));
        assert!(pair.b.got.is_empty());
    }
}

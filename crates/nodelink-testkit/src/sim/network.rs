//! Messages between any number of simulated nodes, over channels with seeded faults.
//!
//! The test owns its nodes and drives the loop; the network owns the virtual clock and
//! what is in flight. A typical run:
//!
//! ```
//! use std::time::Duration;
//! use nodelink_testkit::sim::{Link, Network};
//!
//! let mut net = Network::new(7);
//! let lossy = net.open(Link::datagrams(Duration::from_millis(5), 100, 50));
//! for i in 0..100u32 {
//!     net.send(lossy, i);
//! }
//! let mut got = Vec::new();
//! while let Some(at) = net.next_delivery() {
//!     net.advance_to(at); // or to a node's timer, if that comes first
//!     while let Some((_, m)) = net.pop_due() {
//!         got.push(m);
//!     }
//! }
//! let stats = net.stats();
//! assert_eq!(got.len() as u64, 100 - stats.lost + stats.duplicated);
//! ```
//!
//! An ordered link ([`Link::stream`]) delivers every message once and in the order sent,
//! each after a random delay, like a TCP connection carrying whole frames. A datagram link
//! ([`Link::datagrams`]) gives each copy its own delay, so messages overtake each other,
//! and loses or duplicates them with the given chances. [`Network::partition`] cuts a
//! channel for a while: a datagram sent meanwhile is lost, a stream's message waits for the
//! partition to end (as TCP retransmits; its order is kept). [`Network::close`] ends a
//! channel: what is in flight on it is lost.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::SeededRng;

/// How a channel behaves.
#[derive(Clone, Debug)]
pub struct Link {
    /// Each message is delivered after a delay of at least this much,
    pub min_delay: Duration,
    /// and at most this much (never less than `min_delay`).
    pub max_delay: Duration,
    /// Messages arrive in the order sent (a stream) or in any order (datagrams).
    pub ordered: bool,
    /// Chance that a message is lost, per mille (datagram links only).
    pub loss_per_mille: u64,
    /// Chance that a message arrives twice, per mille (datagram links only).
    pub dup_per_mille: u64,
}

impl Link {
    /// An ordered, lossless channel.
    pub fn stream(max_delay: Duration) -> Link {
        Link {
            min_delay: Duration::ZERO,
            max_delay,
            ordered: true,
            loss_per_mille: 0,
            dup_per_mille: 0,
        }
    }

    /// A datagram channel: reorders, loses and duplicates with these chances per mille.
    pub fn datagrams(max_delay: Duration, loss_per_mille: u64, dup_per_mille: u64) -> Link {
        Link {
            min_delay: Duration::ZERO,
            max_delay,
            ordered: false,
            loss_per_mille,
            dup_per_mille,
        }
    }

    /// The same link with every delay at least `min_delay` (a fixed latency plus jitter).
    pub fn with_min_delay(mut self, min_delay: Duration) -> Link {
        self.min_delay = min_delay;
        self
    }
}

/// A channel of a [`Network`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId(usize);

/// What a [`Network`] did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Messages handed to [`Network::send`].
    pub sent: u64,
    /// Messages (copies included) popped by the test.
    pub delivered: u64,
    /// Messages (or extra copies) lost: by chance, in a partition, or on a closed
    /// channel.
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
}

struct Channel {
    link: Link,
    open: bool,
    /// Latest delivery time given on an ordered channel.
    last: Instant,
    partitioned_until: Option<Instant>,
}

/// Messages of type `M` in flight on a virtual clock.
pub struct Network<M> {
    now: Instant,
    rng: SeededRng,
    seq: u64,
    channels: Vec<Channel>,
    /// By delivery time, then by sending order: ties keep the order sent.
    in_flight: BTreeMap<(Instant, u64), (ChannelId, M)>,
    stats: NetworkStats,
}

impl<M: Clone> Network<M> {
    /// An empty network whose every draw comes from `seed`.
    pub fn new(seed: u64) -> Self {
        Network {
            now: Instant::now(),
            rng: SeededRng::new(seed),
            seq: 0,
            channels: Vec::new(),
            in_flight: BTreeMap::new(),
            stats: NetworkStats::default(),
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The network's generator, for the test's own random choices (one seed per run).
    pub fn rng(&mut self) -> &mut SeededRng {
        &mut self.rng
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetworkStats {
        self.stats
    }

    /// Opens a channel that behaves as `link`.
    pub fn open(&mut self, link: Link) -> ChannelId {
        self.channels.push(Channel {
            link,
            open: true,
            last: self.now,
            partitioned_until: None,
        });
        ChannelId(self.channels.len() - 1)
    }

    /// Whether `ch` is still open.
    pub fn is_open(&self, ch: ChannelId) -> bool {
        self.channels[ch.0].open
    }

    /// Ends `ch`: what is in flight on it and what is sent later is lost.
    pub fn close(&mut self, ch: ChannelId) {
        self.channels[ch.0].open = false;
        let before = self.in_flight.len();
        self.in_flight.retain(|_, (c, _)| *c != ch);
        self.stats.lost += (before - self.in_flight.len()) as u64;
    }

    /// Cuts `ch` for `dt` from now: datagrams sent on it meanwhile are lost, a stream's
    /// messages are held until the partition ends.
    pub fn partition(&mut self, ch: ChannelId, dt: Duration) {
        self.channels[ch.0].partitioned_until = Some(self.now + dt);
    }

    /// Sends `msg` on `ch`.
    pub fn send(&mut self, ch: ChannelId, msg: M) {
        self.stats.sent += 1;
        let now = self.now;
        let c = &self.channels[ch.0];
        let cut_until = c.partitioned_until.filter(|t| now < *t);
        let datagram = !c.link.ordered;
        let lost = datagram && (cut_until.is_some() || self.rng.chance(c.link.loss_per_mille));
        if !c.open || lost {
            self.stats.lost += 1;
            return;
        }
        let copies = if datagram && self.rng.chance(c.link.dup_per_mille) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let c = &self.channels[ch.0];
            let spread = c.link.max_delay.saturating_sub(c.link.min_delay);
            let jitter = self.rng.below(spread.as_micros() as u64 + 1);
            let sent = cut_until.unwrap_or(now);
            let mut at = sent + c.link.min_delay + Duration::from_micros(jitter);
            let c = &mut self.channels[ch.0];
            if c.link.ordered {
                at = at.max(c.last);
                c.last = at;
            }
            self.seq += 1;
            self.in_flight.insert((at, self.seq), (ch, msg.clone()));
        }
    }

    /// When the next message is due, if any is in flight.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|(t, _)| *t)
    }

    /// Moves the clock to `t` (never backwards).
    pub fn advance_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
    }

    /// Moves the clock forward by `dt`.
    pub fn advance(&mut self, dt: Duration) {
        self.now += dt;
    }

    /// The next message due by now, and its channel.
    pub fn pop_due(&mut self) -> Option<(ChannelId, M)> {
        let (&(at, seq), _) = self.in_flight.iter().next()?;
        if at > self.now {
            return None;
        }
        let (ch, msg) = self.in_flight.remove(&(at, seq))?;
        self.stats.delivered += 1;
        Some((ch, msg))
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(net: &mut Network<u32>) -> Vec<(ChannelId, u32)> {
        let mut got = Vec::new();
        while let Some(at) = net.next_delivery() {
            net.advance_to(at);
            while let Some(m) = net.pop_due() {
                got.push(m);
            }
        }
        got
    }

    #[test]
    fn streams_keep_order_and_lose_nothing() {
        let mut net = Network::new(3);
        let a = net.open(Link::stream(Duration::from_millis(10)));
        let b = net.open(Link::stream(Duration::from_millis(10)));
        for i in 0..200 {
            net.send(if i % 2 == 0 { a } else { b }, i);
        }
        let got = drain(&mut net);
        assert_eq!(got.len(), 200);
        for ch in [a, b] {
            let seq: Vec<u32> = got
                .iter()
                .filter(|(c, _)| *c == ch)
                .map(|(_, m)| *m)
                .collect();
            assert!(seq.windows(2).all(|w| w[0] < w[1]), "{seq:?}");
            assert_eq!(seq.len(), 100);
        }
    }

    #[test]
    fn datagrams_reorder_lose_and_duplicate_reproducibly() {
        let run = |seed| {
            let mut net = Network::new(seed);
            let ch = net.open(Link::datagrams(Duration::from_millis(10), 100, 100));
            for i in 0..1000 {
                net.send(ch, i);
            }
            (drain(&mut net), net.stats())
        };
        let (got, stats) = run(5);
        assert_eq!(run(5).0, got, "same seed, same run");
        assert!(stats.lost > 0 && stats.duplicated > 0);
        assert_eq!(got.len() as u64, 1000 - stats.lost + stats.duplicated);
        assert!(got.windows(2).any(|w| w[0].1 > w[1].1), "nothing overtook");
    }

    #[test]
    fn partitions_lose_datagrams_and_hold_streams() {
        let mut net = Network::new(1);
        let dgram = net.open(Link::datagrams(Duration::from_millis(1), 0, 0));
        let stream = net.open(Link::stream(Duration::from_millis(1)));
        let start = net.now();
        net.partition(dgram, Duration::from_millis(10));
        net.partition(stream, Duration::from_millis(10));
        net.send(dgram, 1);
        net.send(stream, 2);
        net.send(stream, 3);
        let got = drain(&mut net);
        assert_eq!(got, vec![(stream, 2), (stream, 3)]);
        assert!(
            net.now() >= start + Duration::from_millis(10),
            "held to the end"
        );
        assert_eq!(net.stats().lost, 1);
    }

    #[test]
    fn a_close_loses_what_is_in_flight_and_later() {
        let mut net = Network::new(1);
        let ch = net.open(Link::stream(Duration::from_millis(1)));
        net.send(ch, 1);
        net.send(ch, 2);
        net.close(ch);
        net.send(ch, 3);
        assert!(drain(&mut net).is_empty());
        assert_eq!(net.stats().lost, 3);
        assert!(!net.is_open(ch));
    }
}

//! Property tests: two session cores joined by the deterministic stream simulator
//! (`nodelink_testkit::sim`), each with a model application that opens streams at random
//! moments, writes a random amount in random pieces, reads with random buffer sizes and
//! random pauses, and ends each stream by flushing and shutting it down or by dropping it.
//! The model behaves like the driver's tasks: it retries a stream operation that returned
//! `Pending` only after the core's `Readable`/`Writable` event for it, reads input again
//! after `may_read` said no only on `Resume`, asks for frames again after none came only on
//! `Transmit`, and asks for the next deadline only after a timeout or `Rearm`; so a missed
//! wake-up shows as a stream that never finishes. Checked for every seed, smux v1 and v2,
//! with small buffers and, in v2, more data than a window so that windows and backpressure
//! are exercised:
//! - every byte arrives once and in order, on the stream it was written to, and every
//!   stream's end is seen by the reader that waited for it;
//! - once both applications are done, every stream is gone on both sides and the session
//!   is still up (keepalive NOPs keep an idle session alive);
//! - the unread data a core holds never exceeds its session bound by more than one
//!   delivery of input;
//! - a reader that never reads costs only its own stream (its sender waits or the stream
//!   is reset once it holds the session up): the others finish;
//! - a broken connection wakes and fails every operation still waiting.

use std::collections::BTreeMap;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use nodelink_testkit::sim::{Faults, StreamNode, StreamPair};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::{Event, SessionCore};
use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::frame::{HEADER_LEN, MAX_PAYLOAD_LEN};

/// Input handed to the core at most at once (a driver's read).
const FEED_CHUNK: usize = 16 << 10;

/// The byte at `offset` of what side `from` writes on stream `sid`.
fn pattern(from: bool, sid: u32, offset: usize) -> u8 {
    let x = (offset as u64).wrapping_mul(2_654_435_761) ^ (u64::from(sid) << 8) ^ (from as u64);
    (x >> 13) as u8 ^ (x as u8)
}

/// The model application's view of one stream.
struct Model {
    to_send: usize,
    sent: usize,
    /// Drop the stream as soon as everything is written, without reading to the end.
    drop_early: bool,
    /// Flush before shutting down.
    flush: bool,
    flushed: bool,
    shutdown_done: bool,
    received: usize,
    eof: bool,
    /// Never read (the stalled-reader test).
    stuck: bool,
    read_wait: bool,
    write_wait: bool,
    /// Reading sleeps until then.
    read_after: Option<Instant>,
    failed: Option<Error>,
    dropped: bool,
}

struct Node {
    side: bool,
    core: SessionCore,
    rng: StdRng,
    input: BytesMut,
    output: BytesMut,
    /// The reader task waits for `Resume`.
    reader_waiting: bool,
    /// The writer task waits for `Transmit`.
    writer_idle: bool,
    /// The timer task's deadline, as of its last look.
    timer_at: Option<Instant>,
    streams: BTreeMap<u32, Model>,
    to_open: usize,
    next_open: Option<Instant>,
    max_send: usize,
    /// Streams this side accepts and never reads (the stalled-reader test).
    stuck_accepts: usize,
    bound: usize,
    problems: Vec<String>,
}

impl Node {
    fn new(config: &Config, client: bool, seed: u64, now: Instant) -> Node {
        let mut rng = StdRng::seed_from_u64(seed);
        let to_open = rng.random_range(0..=5);
        let core = SessionCore::new(config, client, now);
        Node {
            side: client,
            timer_at: core.poll_timeout(),
            core,
            reader_waiting: false,
            writer_idle: false,
            next_open: Some(now + Duration::from_millis(rng.random_range(0..200))),
            rng,
            input: BytesMut::new(),
            output: BytesMut::new(),
            streams: BTreeMap::new(),
            to_open,
            // v2: more than the 256 KiB a sender may have in flight before the first UPD.
            max_send: if config.version == 2 {
                1 << 20
            } else {
                96 << 10
            },
            stuck_accepts: 0,
            bound: config.max_receive_buffer + FEED_CHUNK + HEADER_LEN + MAX_PAYLOAD_LEN,
            problems: Vec::new(),
        }
    }

    fn new_model(&mut self, stuck: bool) -> Model {
        let drop_early = self.rng.random_bool(0.25);
        Model {
            to_send: self.rng.random_range(0..=self.max_send),
            sent: 0,
            drop_early,
            // Dropping with unsent data after the peer's FIN gives the data up (v2), so a
            // stream that drops early flushes first, as an application that cares would.
            flush: drop_early || self.rng.random_bool(0.3),
            flushed: false,
            shutdown_done: false,
            received: 0,
            eof: false,
            stuck,
            read_wait: false,
            write_wait: false,
            read_after: None,
            failed: None,
            dropped: false,
        }
    }

    /// Whether the application has finished with every stream.
    fn done(&self) -> bool {
        self.to_open == 0 && self.streams.values().all(|m| m.dropped || m.stuck)
    }

    /// Does everything that can be done now, until nothing changes.
    fn act(&mut self, now: Instant) {
        for _ in 0..100_000 {
            let mut moved = self.take_events();
            moved |= self.open_due(now);
            let sids: Vec<u32> = self.streams.keys().copied().collect();
            for sid in sids {
                moved |= self.work_stream(sid, now);
            }
            moved |= self.feed(now);
            if !self.writer_idle {
                let before = self.output.len();
                self.core.write_transmit(&mut self.output);
                self.writer_idle = self.output.len() == before;
                moved |= !self.writer_idle;
            }
            if self.core.buffered > self.bound {
                self.problems.push(format!(
                    "{} bytes unread, bound {}",
                    self.core.buffered, self.bound
                ));
            }
            if !moved {
                return;
            }
        }
        self.problems.push("no quiescence".into());
    }

    fn take_events(&mut self) -> bool {
        let mut moved = false;
        while let Some(event) = self.core.poll_event() {
            moved = true;
            match event {
                Event::Readable(sid) => {
                    if let Some(m) = self.streams.get_mut(&sid) {
                        m.read_wait = false;
                    }
                }
                Event::Writable(sid) => {
                    if let Some(m) = self.streams.get_mut(&sid) {
                        m.write_wait = false;
                    }
                }
                Event::Incoming => {
                    while let Ok(Some(sid)) = self.core.accept() {
                        let stuck = self.stuck_accepts > 0;
                        self.stuck_accepts = self.stuck_accepts.saturating_sub(1);
                        let model = self.new_model(stuck);
                        self.streams.insert(sid, model);
                    }
                }
                Event::Transmit => self.writer_idle = false,
                Event::Resume => self.reader_waiting = false,
                Event::Rearm => self.timer_at = self.core.poll_timeout(),
                Event::Closed => {}
            }
        }
        moved
    }

    fn open_due(&mut self, now: Instant) -> bool {
        if self.to_open == 0 || self.next_open.is_none_or(|t| t > now) {
            return false;
        }
        self.to_open -= 1;
        self.next_open =
            (self.to_open > 0).then(|| now + Duration::from_millis(self.rng.random_range(0..500)));
        match self.core.open() {
            Ok(sid) => {
                let model = self.new_model(false);
                self.streams.insert(sid, model);
            }
            Err(e) if self.core.death().is_none() => {
                self.problems.push(format!("open failed: {e}"));
            }
            Err(_) => {}
        }
        true
    }

    /// One round of the application's work on stream `sid`; whether anything changed.
    fn work_stream(&mut self, sid: u32, now: Instant) -> bool {
        let side = self.side;
        let Some(m) = self.streams.get_mut(&sid) else {
            return false;
        };
        if m.dropped || m.failed.is_some() {
            return false;
        }
        let mut moved = false;
        // Write.
        if !m.write_wait && m.sent < m.to_send {
            let n = self.rng.random_range(1..=20_000).min(m.to_send - m.sent);
            let data: Vec<u8> = (m.sent..m.sent + n)
                .map(|i| pattern(side, sid, i))
                .collect();
            let polled = self.core.write(sid, &data, now);
            match outcome(polled, &mut self.core, sid, m, Side::Write) {
                Some(k) => {
                    m.sent += k;
                    moved = true;
                }
                None if m.dropped => return true,
                None => {}
            }
        }
        // Flush, if this stream does.
        if m.sent == m.to_send && m.flush && !m.flushed && !m.write_wait {
            let polled = self.core.flush(sid, now);
            match outcome(polled, &mut self.core, sid, m, Side::Write) {
                Some(()) => {
                    m.flushed = true;
                    moved = true;
                }
                None if m.dropped => return true,
                None => {}
            }
        }
        // End the writing side.
        let flushed = m.flushed || !m.flush;
        if m.sent == m.to_send && flushed && !m.write_wait && !m.shutdown_done {
            if m.drop_early {
                self.core.drop_stream(sid);
                m.dropped = true;
                return true;
            }
            let polled = self.core.shutdown(sid, now);
            match outcome(polled, &mut self.core, sid, m, Side::Write) {
                Some(()) => {
                    m.shutdown_done = true;
                    moved = true;
                }
                None if m.dropped => return true,
                None => {}
            }
        }
        // Read, unless asleep.
        let awake = m.read_after.is_none_or(|t| t <= now);
        if !m.stuck && !m.eof && !m.read_wait && awake {
            m.read_after = None;
            let mut buf = vec![0u8; self.rng.random_range(1..=40_000)];
            let polled = self.core.read(sid, &mut buf, now);
            match outcome(polled, &mut self.core, sid, m, Side::Read) {
                Some(0) => {
                    m.eof = true;
                    moved = true;
                }
                Some(n) => {
                    for (i, &b) in buf[..n].iter().enumerate() {
                        if b != pattern(!side, sid, m.received + i) {
                            self.problems
                                .push(format!("stream {sid}: wrong byte at {}", m.received + i));
                            break;
                        }
                    }
                    m.received += n;
                    moved = true;
                    if self.rng.random_bool(0.1) {
                        let ms = self.rng.random_range(1..1000);
                        m.read_after = Some(now + Duration::from_millis(ms));
                    }
                }
                None if m.dropped => return true,
                None => {}
            }
        }
        if m.eof && m.shutdown_done {
            self.core.drop_stream(sid);
            m.dropped = true;
            moved = true;
        }
        moved
    }

    /// Hands buffered input to the core while it may read, at most a driver's read
    /// buffer at a time.
    fn feed(&mut self, now: Instant) -> bool {
        let mut moved = false;
        while !self.input.is_empty() && !self.reader_waiting {
            if !self.core.may_read(now) {
                self.reader_waiting = true;
                break;
            }
            let n = self
                .input
                .len()
                .min(FEED_CHUNK + HEADER_LEN + MAX_PAYLOAD_LEN);
            let used = self.core.handle_input(&self.input[..n], now);
            if used == 0 {
                // An incomplete frame waits for the rest of its bytes.
                break;
            }
            self.input.advance(used);
            moved = true;
        }
        moved
    }

    /// The state of every stream, for failure messages.
    fn describe(&self) -> String {
        let streams: Vec<String> = self
            .streams
            .iter()
            .map(|(sid, m)| {
                format!(
                    "{sid}: sent {}/{} received {} eof {} shut {} dropped {} waits r{} w{} failed {:?}",
                    m.sent, m.to_send, m.received, m.eof, m.shutdown_done, m.dropped,
                    m.read_wait, m.write_wait, m.failed
                )
            })
            .collect();
        format!(
            "reader waiting {} writer idle {} input {} unread {} paused {}; {}",
            self.reader_waiting,
            self.writer_idle,
            self.input.len(),
            self.core.buffered,
            self.core.paused,
            streams.join("; ")
        )
    }

    fn model_timer(&self) -> Option<Instant> {
        let reads = self
            .streams
            .values()
            .filter(|m| !m.dropped && !m.eof && !m.read_wait && m.failed.is_none())
            .filter_map(|m| m.read_after)
            .min();
        let open = self.next_open.filter(|_| self.to_open > 0);
        [reads, open].into_iter().flatten().min()
    }
}

/// Which wait an operation's `Pending` means.
enum Side {
    Read,
    Write,
}

/// What the model application does with an operation's result: the value if it is
/// ready; on `Pending` it waits for the stream's event; on an error it gives the stream up
/// (drops it, recording why).
fn outcome<T>(
    polled: Poll<Result<T, Error>>,
    core: &mut SessionCore,
    sid: u32,
    m: &mut Model,
    side: Side,
) -> Option<T> {
    match polled {
        Poll::Ready(Ok(v)) => Some(v),
        Poll::Ready(Err(e)) => {
            m.failed = Some(e);
            core.drop_stream(sid);
            m.dropped = true;
            None
        }
        Poll::Pending => {
            match side {
                Side::Read => m.read_wait = true,
                Side::Write => m.write_wait = true,
            }
            None
        }
    }
}

impl StreamNode for Node {
    fn on_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        self.act(now);
    }

    fn poll_bytes(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.act(now);
        out.extend_from_slice(&self.output);
        self.output.clear();
    }

    fn next_timer(&self) -> Option<Instant> {
        [self.timer_at, self.model_timer()]
            .into_iter()
            .flatten()
            .min()
    }

    fn on_timer(&mut self, now: Instant) {
        if self.timer_at.is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
            self.timer_at = self.core.poll_timeout();
        }
        self.act(now);
    }

    fn on_broken(&mut self, _now: Instant) {
        let cause = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        self.core.die(Error::io("reading the connection", cause));
        let _ = self.take_events();
        for (sid, m) in &self.streams {
            if !m.dropped && (m.read_wait || m.write_wait) {
                self.problems
                    .push(format!("stream {sid} not woken by the break"));
            }
        }
    }
}

/// The seeds a property runs: `0..n`, or the one seed in `SMUX_SIM_SEED` (to replay a
/// failure).
fn seeds(n: u64) -> std::ops::Range<u64> {
    match std::env::var("SMUX_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => seed..seed + 1,
        None => 0..n,
    }
}

fn config(seed: u64) -> Config {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    Config::default()
        .with_version(1 + (seed % 2) as u8)
        .with_max_frame_size(rng.random_range(512..=32_768))
        .with_max_stream_buffer(16 << 10)
        .with_max_receive_buffer(64 << 10)
}

fn faults(seed: u64) -> Faults {
    Faults {
        max_chunk: [7, 1500, 64 << 10][(seed % 3) as usize],
        max_delay: Duration::from_millis(20),
        break_after: None,
    }
}

fn pair(seed: u64, faults: Faults) -> StreamPair<Node, Node> {
    let config = config(seed);
    let now = Instant::now();
    let a = Node::new(&config, true, seed * 2, now);
    let b = Node::new(&config, false, seed * 2 + 1, now);
    StreamPair::new(a, b, seed, faults)
}

/// Runs until both applications are done and the wire is quiet; false if that took more
/// than `limit` of virtual time.
fn run_to_end(p: &mut StreamPair<Node, Node>, limit: Duration) -> bool {
    let end = p.now() + limit;
    while p.now() < end {
        p.run_for(Duration::from_millis(50));
        if p.a.done() && p.b.done() && p.settle(Duration::from_secs(1)) {
            return true;
        }
    }
    false
}

/// What `to` received from `from` matches what `from` sent, stream by stream.
fn check_delivery(seed: u64, from: &Node, to: &Node) {
    for (sid, sent) in &from.streams {
        let Some(got) = to.streams.get(sid) else {
            panic!("seed {seed}: stream {sid} never reached the peer");
        };
        if got.drop_early || got.stuck {
            continue;
        }
        assert_eq!(got.received, sent.sent, "seed {seed}: stream {sid} bytes");
        assert!(got.eof, "seed {seed}: stream {sid} end not seen");
    }
}

#[test]
fn every_byte_arrives_once_in_order_and_every_stream_ends() {
    for seed in seeds(80) {
        let mut p = pair(seed, faults(seed));
        assert!(
            run_to_end(&mut p, Duration::from_secs(600)),
            "seed {seed}: did not finish\na: {}\nb: {}",
            p.a.describe(),
            p.b.describe()
        );
        for node in [&p.a, &p.b] {
            assert!(node.problems.is_empty(), "seed {seed}: {:?}", node.problems);
            let peer = if node.side { &p.b } else { &p.a };
            for (sid, m) in &node.streams {
                // The one failure allowed: a v2 write waiting for window after the peer
                // dropped the stream (a full close for a Go peer) is given up.
                if let Some(e) = &m.failed {
                    let peer_dropped = peer.streams.get(sid).is_some_and(|m| m.drop_early);
                    assert!(
                        peer_dropped && e.kind() == ErrorKind::StreamReset,
                        "seed {seed}: stream {sid}: {e}"
                    );
                }
            }
            assert_eq!(node.core.num_streams(), 0, "seed {seed}: streams left");
            let failed = node.streams.values().filter(|m| m.failed.is_some()).count();
            assert_eq!(
                node.core.stats().streams_reset,
                failed as u64,
                "seed {seed}: {}\npeer: {}",
                node.describe(),
                peer.describe()
            );
        }
        check_delivery(seed, &p.a, &p.b);
        check_delivery(seed, &p.b, &p.a);
        // Idle now: keepalives keep the session up well past the timeout.
        p.run_for(Duration::from_secs(120));
        assert!(
            p.a.core.death().is_none(),
            "seed {seed}: {:?}",
            p.a.core.death()
        );
        assert!(
            p.b.core.death().is_none(),
            "seed {seed}: {:?}",
            p.b.core.death()
        );
    }
}

#[test]
fn a_reader_that_never_reads_costs_only_its_own_stream() {
    for seed in seeds(40) {
        let mut p = pair(seed, faults(seed));
        p.a.to_open = 4;
        p.a.max_send = 200 << 10;
        p.b.to_open = 0;
        p.b.stuck_accepts = 1;
        // The first stream b accepts is never read; its sender may wait for good in v2.
        let _ = run_to_end(&mut p, Duration::from_secs(120));
        let stuck: Vec<u32> =
            p.b.streams
                .iter()
                .filter(|(_, m)| m.stuck)
                .map(|(s, _)| *s)
                .collect();
        assert_eq!(stuck.len(), 1, "seed {seed}");
        for (sid, sent) in &p.a.streams {
            if stuck.contains(sid) {
                continue;
            }
            let got = &p.b.streams[sid];
            if got.drop_early {
                continue;
            }
            assert_eq!(got.received, sent.sent, "seed {seed}: stream {sid}");
            assert!(got.eof, "seed {seed}: stream {sid}");
            // As in the main property: only a write the dropping peer will not take fails.
            if let Some(e) = &got.failed {
                assert!(
                    sent.drop_early && e.kind() == ErrorKind::StreamReset,
                    "seed {seed}: {e}"
                );
            }
        }
        assert!(
            p.a.problems.is_empty() && p.b.problems.is_empty(),
            "seed {seed}"
        );
        assert!(p.a.core.death().is_none() && p.b.core.death().is_none());
    }
}

#[test]
fn a_broken_connection_fails_every_waiting_operation() {
    for seed in seeds(60) {
        let mut f = faults(seed);
        f.break_after = Some(Duration::from_millis(
            StdRng::seed_from_u64(seed).random_range(1..1500),
        ));
        let mut p = pair(seed, f);
        p.run_for(Duration::from_secs(5));
        assert!(p.is_broken());
        let now = p.now();
        for node in [&mut p.a, &mut p.b] {
            assert!(node.problems.is_empty(), "seed {seed}: {:?}", node.problems);
            assert_eq!(
                node.core.death().map(Error::kind),
                Some(ErrorKind::Io),
                "seed {seed}"
            );
            assert_eq!(node.core.poll_timeout(), None, "seed {seed}");
            for (&sid, m) in &node.streams {
                if m.dropped || m.failed.is_some() {
                    continue;
                }
                // Whatever the stream still does ends now, with data already in or an error.
                let mut buf = [0u8; 1];
                assert!(
                    node.core.read(sid, &mut buf, now).is_ready(),
                    "seed {seed}: {sid}"
                );
                if !m.shutdown_done {
                    assert!(
                        node.core.shutdown(sid, now).is_ready(),
                        "seed {seed}: {sid}"
                    );
                }
            }
        }
    }
}

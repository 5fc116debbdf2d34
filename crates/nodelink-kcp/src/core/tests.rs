//! Deterministic tests of the state machine: two instances over a lossy, duplicating and
//! reordering link of the shared simulator (`nodelink_testkit::sim::Network`) driven by a
//! virtual clock, plus targeted behaviour and wire-format checks.

use super::segment::segments;
use super::*;
use crate::ErrorKind;
use std::time::Duration;

use nodelink_testkit::sim::{ChannelId, Link, Network};
use nodelink_testkit::SeededRng;

fn later(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Link impairments.
#[derive(Clone, Copy)]
struct Impair {
    loss: u64,
    dup: u64,
    delay: u32,
    jitter: u32,
}

const CLEAN: Impair = Impair {
    loss: 0,
    dup: 0,
    delay: 5,
    jitter: 0,
};

const LOSSY: Impair = Impair {
    loss: 100,
    dup: 50,
    delay: 20,
    jitter: 15, // reorders
};

/// One direction of the simulated network: a datagram channel of the shared simulator,
/// and every datagram offered to it (before loss), for wire inspection.
struct Dir {
    ch: ChannelId,
    log: Vec<Vec<u8>>,
}

/// Two peers, A (writer) and B (reader), over a `nodelink_testkit::sim::Network`. The
/// state machines' clock is `now` (milliseconds that wrap); the network's virtual clock
/// follows it forward.
struct Sim {
    a: Kcp,
    b: Kcp,
    net: Network<Vec<u8>>,
    ab: Dir,
    ba: Dir,
    now: u32,
    /// The state machines' time that the network's clock stands at.
    net_now: u32,
}

impl Sim {
    fn new(imp: Impair, seed: u64, setup: impl Fn(&mut Kcp)) -> Self {
        let mut a = Kcp::new(0xC0FF_EE01);
        let mut b = Kcp::new(0xC0FF_EE01);
        setup(&mut a);
        setup(&mut b);
        let mut net = Network::new(seed);
        let delay = Duration::from_millis(u64::from(imp.delay));
        let link = Link::datagrams(
            delay + Duration::from_millis(u64::from(imp.jitter)),
            imp.loss,
            imp.dup,
        )
        .with_min_delay(delay);
        let ab = Dir {
            ch: net.open(link.clone()),
            log: Vec::new(),
        };
        let ba = Dir {
            ch: net.open(link),
            log: Vec::new(),
        };
        Sim {
            a,
            b,
            net,
            ab,
            ba,
            now: 0,
            net_now: 0,
        }
    }

    /// Everything A sends from now on is lost (a silent path).
    fn cut_ab(&mut self) {
        self.net.close(self.ab.ch);
    }

    /// The test's seeded generator.
    fn rng(&mut self) -> &mut SeededRng {
        self.net.rng()
    }

    /// Moves the network's clock up to `now`. A test that sets `now` behind the network
    /// (to start near the wrap of the clock) moves the anchor, not the network.
    fn sync(&mut self) {
        let ahead = self.now.wrapping_sub(self.net_now);
        if (ahead as i32) > 0 {
            self.net.advance(Duration::from_millis(u64::from(ahead)));
        }
        self.net_now = self.now;
    }

    fn offer(net: &mut Network<Vec<u8>>, dir: &mut Dir, dgram: &[u8], headroom: usize) {
        assert!(
            dgram[..headroom].iter().all(|&b| b == 0),
            "headroom not zeroed"
        );
        let payload = dgram[headroom..].to_vec();
        dir.log.push(payload.clone());
        net.send(dir.ch, payload);
    }

    /// Delivers due datagrams and runs both timers at `self.now`.
    fn tick(&mut self) {
        self.sync();
        let now = self.now;
        while let Some((ch, d)) = self.net.pop_due() {
            let to = if ch == self.ab.ch {
                &mut self.b
            } else {
                &mut self.a
            };
            to.input(&d, now, true).unwrap();
        }
        let Sim {
            a, b, ab, ba, net, ..
        } = self;
        let (ha, hb) = (a.headroom(), b.headroom());
        a.update(now, |d| Self::offer(net, ab, d, ha));
        b.update(now, |d| Self::offer(net, ba, d, hb));
    }

    fn flush_a(&mut self) {
        self.sync();
        let now = self.now;
        let Sim { a, ab, net, .. } = self;
        let h = a.headroom();
        a.flush(now, |d| Self::offer(net, ab, d, h));
    }

    /// When the next datagram arrives, on the state machines' clock (rounded up to a
    /// whole millisecond).
    fn next_arrival(&self) -> Option<u32> {
        let at = self.net.next_delivery()?;
        let micros = at.saturating_duration_since(self.net.now()).as_micros();
        Some(self.net_now.wrapping_add(micros.div_ceil(1000) as u32))
    }

    /// Advances the clock to the next event (timer deadline or arrival): event-driven,
    /// so a `check` that kept returning `now` would show up as a stuck clock.
    fn advance(&mut self) {
        let mut next = self.a.check(self.now);
        for t in [Some(self.b.check(self.now)), self.next_arrival()]
            .into_iter()
            .flatten()
        {
            if later(next, t) {
                next = t;
            }
        }
        assert!(!later(self.now, next), "deadline in the past");
        self.now = if later(next, self.now) {
            next
        } else {
            self.now
        };
    }
}

/// Runs a transfer A -> B and returns what B received (message list).
fn transfer(sim: &mut Sim, chunks: &[Vec<u8>], stream: bool, max_ms: u32) -> (Vec<Vec<u8>>, usize) {
    let start = sim.now;
    let mut next = 0;
    let mut got: Vec<Vec<u8>> = Vec::new();
    let total: usize = chunks.iter().map(Vec::len).sum();
    let mut received = 0;
    let mut buf = vec![0u8; 300_000];
    let mut stuck = 0u32;
    let mut last_now = sim.now;
    while received < total || sim.a.wait_snd() > 0 {
        assert!(
            sim.now.wrapping_sub(start) < max_ms,
            "transfer timed out: {received}/{total} bytes"
        );
        // Writer, with backpressure.
        let mut wrote = false;
        while next < chunks.len() {
            let need = chunks[next].len().div_ceil(sim.a.mss()).max(1);
            if sim.a.send_capacity() < need && sim.a.wait_snd() > 0 {
                break;
            }
            sim.a.send(&chunks[next]).unwrap();
            next += 1;
            wrote = true;
        }
        if wrote {
            sim.flush_a();
        }
        sim.tick();
        // Reader, with random buffer sizes in stream mode.
        loop {
            let cap = if stream {
                1 + sim.rng().below(5000) as usize
            } else {
                buf.len()
            };
            match sim.b.recv(&mut buf[..cap]).unwrap() {
                Some(n) => {
                    received += n;
                    got.push(buf[..n].to_vec());
                }
                None => break,
            }
        }
        // A reader that freed window space owes a window update.
        sim.tick();
        sim.advance();
        if sim.now == last_now {
            stuck += 1;
            assert!(stuck < 10_000, "busy loop: clock stuck at {}", sim.now);
        } else {
            stuck = 0;
            last_now = sim.now;
        }
    }
    eprintln!(
        "transfer: {total} bytes in {} virtual ms; A {:?}; B {:?}",
        sim.now.wrapping_sub(start),
        sim.a.stats(),
        sim.b.stats()
    );
    (got, received)
}

fn random_messages(rng: &mut SeededRng, total: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut sum = 0;
    while sum < total {
        let len = 1 + rng.below(max_len as u64) as usize;
        v.push(rng.bytes(len));
        sum += len;
    }
    v
}

fn fast_setup(k: &mut Kcp) {
    k.set_nodelay(true, 10, 2, true);
    k.set_window(128, 128);
}

#[test]
fn message_mode_lossy_link_delivers_every_message_in_order() {
    let mut sim = Sim::new(LOSSY, 7, fast_setup);
    sim.now = u32::MAX - 3_000; // the clock wraps during the test
    sim.a.set_initial_sn(u32::MAX - 200); // and so does the sequence space
    sim.b.set_initial_sn(u32::MAX - 200);
    let msgs = random_messages(sim.rng(), 1 << 20, 20_000);
    let (got, _) = transfer(&mut sim, &msgs, false, 600_000);
    assert_eq!(got.len(), msgs.len());
    assert!(got == msgs, "messages corrupted or reordered");
    let s = sim.a.stats();
    assert!(s.retrans_segs > 0 && s.lost_segs + s.fast_retrans_segs > 0);
    assert_eq!(
        s.retrans_segs,
        s.lost_segs + s.fast_retrans_segs + s.early_retrans_segs
    );
    assert!(sim.b.stats().repeat_segs > 0, "duplicates were counted");
    assert!(!sim.a.is_dead());
}

#[test]
fn stream_mode_lossy_link_one_megabyte() {
    let mut sim = Sim::new(LOSSY, 99, |k| {
        fast_setup(k);
        k.set_stream(true);
        k.set_headroom(28).unwrap(); // AES header (20) + FEC header (8)
    });
    assert_eq!(sim.a.mss(), 1400 - 24 - 28);
    // Odd-sized writes, so segments get topped up.
    let writes = random_messages(sim.rng(), 1 << 20, 3000);
    let (got, n) = transfer(&mut sim, &writes, true, 600_000);
    let sent: Vec<u8> = writes.concat();
    assert_eq!(n, sent.len());
    assert!(got.concat() == sent, "stream corrupted");
    // Every datagram respected the MTU.
    assert!(sim.ab.log.iter().all(|d| d.len() + 28 <= 1400));
}

#[test]
fn default_settings_with_congestion_control_survive_loss() {
    // kcp-go defaults (interval 100, no fast resend, cwnd on): slow but correct.
    let mut sim = Sim::new(LOSSY, 3, |_| {});
    let msgs = random_messages(sim.rng(), 200_000, 30_000);
    let (got, _) = transfer(&mut sim, &msgs, false, 3_000_000);
    assert!(got == msgs);
}

/// For random paths, settings and seeds (`KCP_SIM_SEED=n` runs one): every message
/// arrives once and in order (in stream mode: every byte), and neither side declares a
/// live path dead.
#[test]
fn every_message_once_in_order_on_random_paths() {
    let run = |seed: u64| {
        let mut pick = SeededRng::new(seed ^ 0x5eed);
        let imp = Impair {
            loss: pick.below(250),
            dup: pick.below(100),
            delay: 1 + pick.below(50) as u32,
            jitter: pick.below(40) as u32,
        };
        let stream = pick.chance(500);
        let (nodelay, interval, resend) = (
            pick.chance(500),
            10 + pick.below(40) as u32,
            pick.below(4) as u32,
        );
        let (snd, rcv) = (8 + pick.below(256) as u16, 8 + pick.below(256) as u16);
        let mut sim = Sim::new(imp, seed, |k| {
            k.set_nodelay(nodelay, interval, resend, pick_nc(seed));
            k.set_window(snd, rcv);
            k.set_stream(stream);
        });
        let msgs = random_messages(sim.rng(), 100_000, 5_000);
        let (got, n) = transfer(&mut sim, &msgs, stream, 10_000_000);
        let sent: Vec<u8> = msgs.concat();
        assert_eq!(n, sent.len(), "seed {seed}");
        if stream {
            assert!(got.concat() == sent, "seed {seed}: stream corrupted");
        } else {
            assert!(
                got == msgs,
                "seed {seed}: messages lost, repeated or reordered"
            );
        }
        assert!(!sim.a.is_dead() && !sim.b.is_dead(), "seed {seed}");
    };
    if let Ok(seed) = std::env::var("KCP_SIM_SEED") {
        run(seed.parse().expect("a number"));
        return;
    }
    for seed in 0..64 {
        run(seed);
    }
}

/// Congestion control on or off, by seed.
fn pick_nc(seed: u64) -> bool {
    seed % 3 != 0
}

/// Kinds and sns of the segments in a datagram.
fn parse(d: &[u8]) -> Vec<(SegmentHeader, Vec<u8>)> {
    segments(d)
        .map(|r| {
            let (h, p) = r.unwrap();
            (h, p.to_vec())
        })
        .collect()
}

fn pushes(log: &[Vec<u8>]) -> Vec<SegmentHeader> {
    log.iter()
        .flat_map(|d| parse(d))
        .map(|(h, _)| h)
        .filter(|h| h.cmd == Command::Push)
        .collect()
}

#[test]
fn every_wire_field() {
    let mut sim = Sim::new(CLEAN, 1, |k| {
        k.set_nodelay(true, 10, 0, true);
        k.set_mtu(200).unwrap();
    });
    let mss = sim.a.mss();
    assert_eq!(mss, 176);
    // B -> A first, so A's una (its rcv_nxt) is 1 in what follows.
    let mut ba_out = Vec::new();
    sim.b.send(b"ping").unwrap();
    sim.b.flush(0, |d| ba_out.push(d.to_vec()));
    for d in &ba_out {
        sim.a.input(d, 0, true).unwrap();
    }
    sim.a.recv(&mut [0u8; 16]).unwrap();

    let msg: Vec<u8> = (0..(2 * mss + 10)).map(|i| i as u8).collect();
    sim.a.send(&msg).unwrap();
    sim.now = 1000;
    let mut out = Vec::new();
    sim.a.flush(1000, |d| out.push(d.to_vec()));
    let segs: Vec<_> = out.iter().flat_map(|d| parse(d)).collect();
    // ACK of B's ping first, then three fragments.
    assert_eq!(segs.len(), 4);
    let (ack, _) = &segs[0];
    assert_eq!(ack.cmd, Command::Ack);
    assert_eq!((ack.sn, ack.ts, ack.len), (0, 0, 0)); // echoes B's ts (0)
    for (i, (h, p)) in segs[1..].iter().enumerate() {
        assert_eq!(h.conv, 0xC0FF_EE01);
        assert_eq!(h.cmd, Command::Push);
        assert_eq!(h.frg as usize, 2 - i, "frg counts down");
        assert_eq!(h.wnd, 32, "free receive window");
        assert_eq!(h.ts, 1000);
        assert_eq!(h.sn, i as u32);
        assert_eq!(h.una, 1);
        assert_eq!(h.len as usize, p.len());
        assert_eq!(p[..], msg[i * mss..((i + 1) * mss).min(msg.len())]);
    }
    // Datagrams obey the MTU.
    assert!(out.iter().all(|d| d.len() <= 200));

    // B acknowledges, echoing ts. All three arrived in order, so ACKs below rcv_nxt
    // are filtered except the last of the list; its una covers all three.
    for d in &out {
        sim.b.input(d, 1010, true).unwrap();
    }
    let mut acks = Vec::new();
    sim.b.flush(1010, |d| acks.push(d.to_vec()));
    let acks: Vec<_> = acks.iter().flat_map(|d| parse(d)).collect();
    assert_eq!(acks.len(), 1);
    let (h, _) = &acks[0];
    assert_eq!(
        (h.cmd, h.sn, h.ts, h.una, h.len),
        (Command::Ack, 2, 1000, 3, 0)
    );
    // Three fragments are queued unread: 32 - 3.
    assert_eq!(h.wnd, 29);
    // Out of order, every ACK at or above rcv_nxt is sent.
    let mut c = Kcp::new(0xC0FF_EE01);
    for d in out.iter().rev() {
        for (h, p) in parse(d).into_iter().rev() {
            if h.cmd == Command::Push && h.sn > 0 {
                let mut one = Vec::new();
                h.append_to(&mut one);
                one.extend_from_slice(&p);
                c.input(&one, 1010, true).unwrap();
            }
        }
    }
    let mut c_acks = Vec::new();
    c.flush(1010, |d| c_acks.push(d.to_vec()));
    let sns: Vec<u32> = c_acks
        .iter()
        .flat_map(|d| parse(d))
        .map(|(h, _)| h.sn)
        .collect();
    assert_eq!(sns, vec![2, 1]);
    assert_eq!(sim.b.peek_size(), Some(msg.len()));
    let mut small = vec![0u8; msg.len() - 1];
    assert!(matches!(
        sim.b.recv(&mut small),
        Err(e) if e.kind() == ErrorKind::BufferTooSmall
            && e.to_string().contains(&format!("buffer of {} bytes", msg.len() - 1))
            && e.to_string().contains(&format!("message of {} bytes", msg.len()))
    ));
    let mut buf = vec![0u8; 1000];
    assert_eq!(sim.b.recv(&mut buf).unwrap(), Some(msg.len()));
    assert_eq!(buf[..msg.len()], msg[..]);
    assert_eq!(sim.b.recv(&mut buf).unwrap(), None);

    // RTT sample from the echoed ts: 1040 - 1000.
    let raw: Vec<u8> = {
        let mut v = Vec::new();
        for (h, _) in &acks {
            h.append_to(&mut v);
        }
        v
    };
    sim.a.input(&raw, 1040, true).unwrap();
    assert_eq!(sim.a.srtt(), 40);
    assert_eq!(sim.a.wait_snd(), 0);
}

#[test]
fn stream_mode_tops_up_and_sends_frg_zero() {
    let mut k = Kcp::new(5);
    k.set_stream(true);
    k.set_mtu(100).unwrap(); // mss 76
    k.send(&[1u8; 50]).unwrap();
    k.send(&[2u8; 50]).unwrap(); // tops up the first segment to 76
    k.send(&[3u8; 200]).unwrap();
    assert_eq!(k.wait_snd(), 300usize.div_ceil(76));
    let mut out = Vec::new();
    k.set_nodelay(false, 10, 0, true);
    k.flush(0, |d| out.push(d.to_vec()));
    let ps = pushes(&out);
    assert_eq!(ps.len(), 4);
    assert!(ps.iter().all(|h| h.frg == 0));
    assert_eq!(
        ps.iter().map(|h| h.len).collect::<Vec<_>>(),
        vec![76, 76, 76, 72]
    );
}

#[test]
fn message_size_limits() {
    let mut k = Kcp::new(1);
    let max = k.max_message_size();
    assert_eq!(max, 255 * 1376);
    assert!(k.send(&vec![0u8; max]).is_ok());
    assert!(matches!(
        k.send(&vec![0u8; max + 1]),
        Err(e) if e.kind() == ErrorKind::MessageTooLarge
            && e.to_string() == format!(
                "message of {} bytes is too large (at most {max} in message mode)",
                max + 1
            )
    ));
    assert_eq!(k.send(&[]).unwrap(), 0);
    assert!(k.set_mtu(49).is_err());
    assert!(k.set_mtu(MAX_MTU + 1).is_err());
    assert!(k.set_headroom(1400 - 24).is_err());
    k.set_headroom(100).unwrap();
    assert!(k.set_mtu(124).is_err());
    assert_eq!(k.mss(), 1400 - 124);
}

/// A's transmissions of sn 0 and their times, peer silent.
fn silent_peer_retransmissions(nodelay: bool, until: u32) -> (Vec<u32>, Kcp) {
    let mut k = Kcp::new(9);
    k.set_nodelay(nodelay, 10, 0, true);
    k.send(b"x").unwrap();
    let mut times = Vec::new();
    let mut now = 0u32;
    while now <= until {
        let mut n = 0;
        k.update(now, |d| {
            n += pushes(&[d.to_vec()]).iter().filter(|h| h.sn == 0).count()
        });
        for _ in 0..n {
            times.push(now);
        }
        now = k.check(now).max(now + 1);
    }
    (times, k)
}

#[test]
fn rto_backoff_normal_and_nodelay() {
    // No RTT sample: rx_rto stays 200. Normal: rto += 200 per timeout.
    let (t, k) = silent_peer_retransmissions(false, 3000);
    let gaps: Vec<u32> = t.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps[..4], [200, 400, 600, 800]);
    assert_eq!(k.stats().lost_segs as usize, t.len() - 1);
    // Nodelay: rto += 100 per timeout.
    let (t, _) = silent_peer_retransmissions(true, 3000);
    let gaps: Vec<u32> = t.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps[..4], [200, 300, 400, 500]);
}

#[test]
fn dead_link_after_max_transmissions() {
    for limit in [DEFAULT_DEAD_LINK, 5] {
        let mut k = Kcp::new(9);
        k.set_nodelay(true, 10, 0, true);
        k.set_dead_link(limit);
        k.send(b"x").unwrap();
        let mut now = 0u32;
        let mut sends = 0;
        while !k.is_dead() {
            assert!(now < 10_000_000, "never declared dead");
            k.update(now, |d| sends += pushes(&[d.to_vec()]).len());
            if !k.is_dead() {
                now = k.check(now).max(now + 1);
            }
        }
        assert_eq!(sends, limit as usize);
        assert_eq!(k.first_in_flight().unwrap().0, limit);
    }
}

#[test]
fn fast_and_early_retransmit() {
    for resend in [2u32, 0] {
        let mut sim = Sim::new(CLEAN, 5, |k| k.set_nodelay(true, 10, resend, true));
        for i in 0..10u8 {
            sim.a.send(&[i; 100]).unwrap();
        }
        let mut out = Vec::new();
        sim.a.flush(0, |d| out.push(d.to_vec()));
        // Re-split: deliver every segment except sn 0 to B.
        for (h, p) in out.iter().flat_map(|d| parse(d)) {
            if h.cmd == Command::Push && h.sn != 0 {
                let mut d = Vec::new();
                h.append_to(&mut d);
                d.extend_from_slice(&p);
                sim.b.input(&d, 5, true).unwrap();
            }
        }
        let mut acks = Vec::new();
        sim.b.flush(5, |d| acks.push(d.to_vec()));
        for d in &acks {
            sim.a.input(d, 10, true).unwrap();
        }
        assert!(!sim.a.needs_flush(), "una did not move");
        let mut again = Vec::new();
        sim.a.flush(11, |d| again.push(d.to_vec()));
        let ps = pushes(&again);
        assert_eq!(ps.iter().map(|h| h.sn).collect::<Vec<_>>(), vec![0]);
        let s = sim.a.stats();
        if resend == 2 {
            assert_eq!((s.fast_retrans_segs, s.early_retrans_segs), (1, 0));
        } else {
            assert_eq!((s.fast_retrans_segs, s.early_retrans_segs), (0, 1));
        }
        assert_eq!(s.retrans_segs, 1);
        assert_eq!(s.lost_segs, 0);
        // The retransmission completes the transfer.
        for d in &again {
            sim.b.input(d, 15, true).unwrap();
        }
        let mut buf = [0u8; 200];
        for i in 0..10u8 {
            assert_eq!(sim.b.recv(&mut buf).unwrap(), Some(100));
            assert_eq!(buf[0], i);
        }
    }
}

#[test]
fn congestion_window_slow_start_and_collapse() {
    let mut a = Kcp::new(3);
    let mut b = Kcp::new(3);
    a.set_nodelay(false, 10, 0, false);
    b.set_nodelay(false, 10, 0, true);
    for _ in 0..40 {
        a.send(&[7u8; 10]).unwrap();
    }
    let round = |a: &mut Kcp, b: &mut Kcp, now: u32| -> usize {
        let mut out = Vec::new();
        a.flush(now, |d| out.push(d.to_vec()));
        let n = pushes(&out).len();
        for d in &out {
            b.input(d, now, true).unwrap();
        }
        let mut acks = Vec::new();
        b.flush(now, |d| acks.push(d.to_vec()));
        for d in &acks {
            a.input(d, now + 1, true).unwrap();
        }
        n
    };
    // Slow start from one segment (ssthresh 2), then additive increase.
    let sent: Vec<usize> = (0..6).map(|i| round(&mut a, &mut b, i * 10)).collect();
    assert_eq!(sent[..3], [1, 2, 2]);
    assert!(sent.iter().all(|&n| n <= 32));
    assert!(a.cwnd() >= 2);
    // Every segment delivered so far is read; now the link dies: RTO collapses cwnd.
    let mut buf = [0u8; 64];
    while b.recv(&mut buf).unwrap().is_some() {}
    a.flush(100, |_| {});
    let before = a.cwnd();
    let mut now = 100;
    while a.stats().lost_segs == 0 {
        now += 10;
        a.flush(now, |_| {});
    }
    assert_eq!(a.cwnd(), 1);
    assert_eq!(a.ssthresh(), (before / 2).max(2));

    // With nc=1 the first flush fills the whole window (min(snd_wnd 32, rmt_wnd 32)).
    let mut c = Kcp::new(4);
    c.set_nodelay(false, 10, 0, true);
    for _ in 0..40 {
        c.send(&[1u8; 10]).unwrap();
    }
    let mut out = Vec::new();
    c.flush(0, |d| out.push(d.to_vec()));
    assert_eq!(pushes(&out).len(), 32);
    assert_eq!(c.wait_snd(), 40);
    assert_eq!(c.send_capacity(), 64 - 40);
}

#[test]
fn zero_window_probe_and_window_update() {
    let mut sim = Sim::new(CLEAN, 11, |k| {
        k.set_nodelay(true, 10, 2, true);
        k.set_window(32, 4);
    });
    for i in 0..10u8 {
        sim.a.send(&[i; 10]).unwrap();
    }
    sim.flush_a();
    // B never reads for 20 s: its window closes, A stops and probes.
    for _ in 0..20_000 {
        sim.tick();
        sim.now += 1;
    }
    assert_eq!(sim.a.remote_wnd(), 0);
    // A assumed a 32-segment window until B's first ACK: all 10 went out once; B keeps
    // 4 (queue) + 4 (out of order), and 8 and 9 fall outside its window.
    let sent: Vec<u32> = pushes(&sim.ab.log).iter().map(|h| h.sn).collect();
    assert_eq!(sent[..10], (0..10).collect::<Vec<u32>>()[..]);
    assert!(
        sent[10..].iter().all(|&sn| sn >= 8),
        "only unacked segments resent"
    );
    let wasks: Vec<_> = sim
        .ab
        .log
        .iter()
        .flat_map(|d| parse(d))
        .filter(|(h, _)| h.cmd == Command::WindowAsk)
        .collect();
    // First probe 7 s after the window closed, the next 10.5 s later.
    assert_eq!(wasks.len(), 2);
    assert!(wasks[0].0.ts >= 7000 && wasks[0].0.ts < 7100);
    assert_eq!(wasks[1].0.ts - wasks[0].0.ts, 10_500);
    let wins: Vec<_> = sim
        .ba
        .log
        .iter()
        .flat_map(|d| parse(d))
        .filter(|(h, _)| h.cmd == Command::WindowTell)
        .collect();
    assert_eq!(wins.len(), 2);
    assert!(wins.iter().all(|(h, _)| h.wnd == 0));

    // B reads: it tells A the window reopened (WINS with wnd > 0) without a probe.
    let mut buf = [0u8; 32];
    let mut got = Vec::new();
    let start = sim.now;
    while got.len() < 10 {
        assert!(sim.now - start < 1000);
        while let Some(n) = sim.b.recv(&mut buf).unwrap() {
            got.push(buf[..n].to_vec());
        }
        sim.tick();
        sim.now += 1;
    }
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m, &vec![i as u8; 10]);
    }
    assert!(sim
        .ba
        .log
        .iter()
        .flat_map(|d| parse(d))
        .any(|(h, _)| h.cmd == Command::WindowTell && h.wnd > 0));
}

#[test]
fn check_is_a_sane_deadline() {
    let mut sim = Sim::new(CLEAN, 13, |k| k.set_nodelay(false, 40, 2, true));
    // Before the first update: run now.
    assert_eq!(sim.a.check(123), 123);
    sim.now = 123;
    sim.tick();
    // Idle: next tick at most one interval ahead, and it sends nothing.
    for _ in 0..5 {
        let t = sim.a.check(sim.now);
        assert!(later(t, sim.now) && t - sim.now <= 40);
        sim.now = t;
        let mut n = 0;
        sim.a.update(sim.now, |_| n += 1);
        assert_eq!(n, 0, "idle flush emitted a datagram");
    }
    // One segment in flight, lost: the deadline tracks its resend time.
    sim.a.send(b"data").unwrap();
    sim.cut_ab();
    sim.flush_a();
    let (_, rto, resend_at) = sim.a.first_in_flight().unwrap();
    assert_eq!(rto, 200);
    let mut now = sim.now;
    while later(resend_at, now) {
        let t = sim.a.check(now);
        assert!(!later(now, t));
        assert!(!later(t, resend_at), "check skipped the retransmission");
        now = t;
        sim.a.update(now, |_| {});
        if later(resend_at, now) {
            assert_eq!(sim.a.first_in_flight().unwrap().0, 1);
        }
    }
    assert_eq!(now, resend_at);
    assert_eq!(sim.a.first_in_flight().unwrap().0, 2);
    // A far-away clock (jump) resynchronises instead of spinning.
    let far = now.wrapping_add(1_000_000);
    assert_eq!(sim.a.check(far), far);
}

#[test]
fn fec_recovered_input_gives_no_rtt_or_window_update() {
    let mut a = Kcp::new(8);
    let mut b = Kcp::new(8);
    a.send(b"abc").unwrap();
    let mut out = Vec::new();
    a.flush(100, |d| out.push(d.to_vec()));
    b.set_window(32, 10);
    b.input(&out[0], 120, true).unwrap();
    let mut acks = Vec::new();
    b.flush(120, |d| acks.push(d.to_vec()));
    assert_eq!(parse(&acks[0])[0].0.wnd, 9);
    a.input(&acks[0], 150, false).unwrap();
    assert_eq!(a.srtt(), 0, "no RTT sample from a recovered packet");
    assert_eq!(
        a.remote_wnd(),
        32,
        "no window update from a recovered packet"
    );
    assert_eq!(a.wait_snd(), 0, "but the ACK itself counts");
    // The same bytes as a regular packet do both.
    let mut a2 = Kcp::new(8);
    a2.send(b"abc").unwrap();
    a2.flush(100, |_| {});
    a2.input(&acks[0], 150, true).unwrap();
    assert_eq!((a2.srtt(), a2.remote_wnd()), (50, 9));
    // A repeated data segment counts as a repeat only when regular.
    b.input(&out[0], 130, false).unwrap();
    assert_eq!(b.stats().repeat_segs, 0);
    b.input(&out[0], 130, true).unwrap();
    assert_eq!(b.stats().repeat_segs, 1);
}

#[test]
fn bad_input_errors_after_processing_good_segments() {
    let mut a = Kcp::new(77);
    let mut b = Kcp::new(77);
    a.send(b"good").unwrap();
    let mut out = Vec::new();
    a.flush(0, |d| out.push(d.to_vec()));
    let good = out[0].clone();

    // Good segment, then an unknown command.
    let mut d = good.clone();
    let mut bad = good.clone();
    bad[4] = 99;
    d.extend_from_slice(&bad);
    assert!(matches!(b.input(&d, 1, true), Err(e) if e.kind() == ErrorKind::Malformed));
    let mut buf = [0u8; 8];
    assert_eq!(b.recv(&mut buf).unwrap(), Some(4));
    assert_eq!(b.stats().in_segs, 1);

    // Wrong conversation.
    let mut other = good.clone();
    other[0] ^= 1;
    assert!(matches!(
        b.input(&other, 1, true),
        Err(e) if e.kind() == ErrorKind::WrongConv && e.to_string().contains("got 0x4c, expected 0x4d")
    ));
    // Truncated header, truncated payload.
    assert!(matches!(
        b.input(&good[..23], 1, true),
        Err(e) if e.kind() == ErrorKind::Malformed
    ));
    assert!(matches!(
        b.input(&good[..good.len() - 1], 1, true),
        Err(e) if e.kind() == ErrorKind::Malformed
    ));
    // Data far beyond the receive window is ignored (not buffered, not acked).
    let mut far = good.clone();
    far[12..16].copy_from_slice(&1000u32.to_le_bytes());
    b.input(&far, 1, true).unwrap();
    assert_eq!(b.peek_size(), None);
    let mut acks = Vec::new();
    b.flush(2, |d| acks.push(d.to_vec()));
    assert!(acks
        .iter()
        .flat_map(|d| parse(d))
        .all(|(h, _)| h.sn != 1000));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = SeededRng::new(0xDEAD_BEEF);
    let mut k = Kcp::new(0x0102_0304);
    k.set_nodelay(true, 10, 2, false);
    k.send(&[1u8; 5000]).unwrap();
    k.flush(0, |_| {});
    let mut buf = vec![0u8; 1 << 16];
    for i in 0..20_000u32 {
        let len = rng.below(300) as usize;
        let mut d = rng.bytes(len);
        // Often make it look plausible so the deeper paths run.
        if len >= 24 && rng.chance(700) {
            d[..4].copy_from_slice(&0x0102_0304u32.to_le_bytes());
            d[4] = 81 + rng.below(4) as u8;
            if rng.chance(500) {
                let l = rng.below((len - 24) as u64 + 2) as u32;
                d[20..24].copy_from_slice(&l.to_le_bytes());
            }
            if rng.chance(500) {
                let sn = rng.below(64) as u32;
                d[12..16].copy_from_slice(&sn.to_le_bytes());
            }
        }
        let _ = k.input(&d, i, rng.chance(800));
        if i % 7 == 0 {
            let _ = k.recv(&mut buf);
        }
        if i % 13 == 0 {
            k.update(i, |d| assert!(d.len() <= 1400));
        }
        let t = k.check(i);
        assert!(!later(i, t));
        assert!(k.peek_size().unwrap_or(0) <= 255 * 1400);
    }
}

/// A session with nothing queued, in flight, to acknowledge or to probe is idle (its
/// driver then needs no timer); data in flight or owed ACKs make it busy until the
/// exchange is complete.
#[test]
fn idle_only_when_nothing_is_pending() {
    let mut a = Kcp::new(7);
    let mut b = Kcp::new(7);
    let mut now = 0u32;
    assert!(a.is_idle() && b.is_idle());
    a.send(b"hello").unwrap();
    assert!(!a.is_idle(), "queued data");
    let mut to_b = Vec::new();
    a.flush(now, |d| to_b.push(d.to_vec()));
    assert!(!a.is_idle(), "unacknowledged data");
    for d in &to_b {
        b.input(d, now, true).unwrap();
    }
    assert!(!b.is_idle(), "owes an ACK");
    let mut buf = [0u8; 16];
    assert_eq!(b.recv(&mut buf).unwrap(), Some(5));
    now += 10;
    let mut to_a = Vec::new();
    b.flush(now, |d| to_a.push(d.to_vec()));
    assert!(b.is_idle(), "ACK sent, nothing else pending");
    for d in &to_a {
        a.input(d, now, true).unwrap();
    }
    a.flush(now, |_| {});
    assert!(a.is_idle(), "everything acknowledged");
}

/// A read that reopens the window by half of it sends a window report at once, before
/// the next interval flush: a sender held back by our window learns it may go on.
#[test]
fn a_read_that_reopens_the_window_reports_it_at_once() {
    let mut a = Kcp::new(7);
    let mut b = Kcp::new(7);
    for k in [&mut a, &mut b] {
        k.set_nodelay(false, 30, 0, true);
        k.set_window(64, 32);
        k.set_stream(true);
    }
    a.send(&vec![5u8; 40 * a.mss()]).unwrap();
    let mut to_b = Vec::new();
    a.flush(0, |d| to_b.push(d.to_vec()));
    for d in &to_b {
        b.input(d, 1, true).unwrap();
    }
    // B acknowledges with a closed window (32 queued, nothing read).
    let mut to_a = Vec::new();
    b.flush(1, |d| to_a.push(d.to_vec()));
    for d in &to_a {
        a.input(d, 2, true).unwrap();
    }
    assert_eq!(a.remote_wnd(), 0);
    let tells = |out: &[Vec<u8>]| -> Vec<u16> {
        out.iter()
            .flat_map(|d| parse(d))
            .filter(|(h, _)| h.cmd == Command::WindowTell)
            .map(|(h, _)| h.wnd)
            .collect()
    };
    let mut buf = vec![0u8; 8 * b.mss()];
    // B reads a quarter of its closed window: reported at once (kcp-go waits for the
    // next interval flush, 30 ms later).
    b.recv(&mut buf).unwrap();
    assert_eq!(b.check(2), 2);
    let mut out = Vec::new();
    b.update(2, |d| out.push(d.to_vec()));
    assert_eq!(tells(&out), vec![8]);
    // Another quarter: the window grew by less than half since: no report.
    out.clear();
    b.recv(&mut buf).unwrap();
    b.update(3, |d| out.push(d.to_vec()));
    assert!(tells(&out).is_empty());
    // A third: half of the window more than last reported: reported at once.
    b.recv(&mut buf).unwrap();
    assert_eq!(b.check(4), 4);
    b.update(4, |d| out.push(d.to_vec()));
    assert_eq!(tells(&out), vec![24]);
    for d in &out {
        a.input(d, 5, true).unwrap();
    }
    assert_eq!(a.remote_wnd(), 24);
}

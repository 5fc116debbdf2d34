//! The KCP state machine (kcp-go 5.6.1 flavour), sans IO.

use std::collections::VecDeque;

mod input;
mod output;

use self::output::Packer;
use super::rtt::{RttEstimator, RTO_MIN, RTO_NODELAY_MIN};
use super::segment::HEADER_LEN;
use crate::{Error, Result};

/// Default MTU: largest datagram KCP emits, headroom included (kcp-go `IKCP_MTU_DEF`).
pub const DEFAULT_MTU: usize = 1400;
/// Smallest MTU accepted by [`Kcp::set_mtu`].
pub const MIN_MTU: usize = 50;
/// Largest MTU accepted by [`Kcp::set_mtu`] (the largest UDP payload over IPv4).
pub const MAX_MTU: usize = 65_507;
/// Default send window, in segments.
pub const DEFAULT_SND_WND: u16 = 32;
/// Default receive window, in segments (kcp-go: 32; C KCP: 128).
pub const DEFAULT_RCV_WND: u16 = 32;
/// Default flush interval (ms).
pub const DEFAULT_INTERVAL: u32 = 100;
/// Default number of transmissions of one segment after which the link counts as dead.
pub const DEFAULT_DEAD_LINK: u32 = 20;
/// Most fragments one message may be cut into (the `frg` byte counts down from 254).
pub const MAX_FRAGMENTS: usize = 255;
/// Initial and minimal slow-start threshold, in segments.
const THRESH_INIT: u32 = 2;
const THRESH_MIN: u32 = 2;
/// First window-probe delay once the peer advertised a zero window (kcp-go 5.6.1: 7 s).
const PROBE_INIT: u32 = 7_000;
/// Largest window-probe delay.
const PROBE_LIMIT: u32 = 120_000;
/// Probe flags: we must send a WASK / a WINS in the next flush.
const ASK_SEND: u8 = 1;
const ASK_TELL: u8 = 2;
/// A segment's backed-off RTO never grows past this, so resend times stay comparable
/// with wrapping arithmetic (kcp-go lets it grow without bound; dead-link fires long before).
const MAX_SEGMENT_RTO: u32 = 1 << 30;

/// `later - earlier` on the wrapping u32 clock (or sequence space).
#[inline]
fn diff(later: u32, earlier: u32) -> i32 {
    later.wrapping_sub(earlier) as i32
}

/// Counters, named after kcp-go's SNMP fields (a snapshot: [`Kcp::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KcpStats {
    /// Segments accepted by `input` (kcp-go `InSegs`).
    pub in_segs: u64,
    /// Segments emitted by flushes, ACKs and probes included (kcp-go `OutSegs`).
    pub out_segs: u64,
    /// Datagrams emitted by flushes.
    pub out_datagrams: u64,
    /// All retransmissions: lost + fast + early (kcp-go `RetransSegs`).
    pub retrans_segs: u64,
    /// Retransmissions triggered by `resend` later ACKs (kcp-go `FastRetransSegs`).
    pub fast_retrans_segs: u64,
    /// Retransmissions of segments with some later ACK while nothing new was sent
    /// (kcp-go `EarlyRetransSegs`).
    pub early_retrans_segs: u64,
    /// Retransmissions after an RTO expired (kcp-go `LostSegs`).
    pub lost_segs: u64,
    /// Regular data segments received that were already received (kcp-go `RepeatSegs`).
    pub repeat_segs: u64,
}

/// What an `input` asked of the next `update`, which kcp-go's Input does on the spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pending {
    Nothing,
    /// ACK-no-delay: send the ACK list now.
    Acks,
    /// The peer's una advanced: a full flush (the window slid).
    Full,
}

/// A segment of ours: queued (`snd_queue`) or in flight (`snd_buf`).
#[derive(Debug)]
struct OutSeg {
    sn: u32,
    frg: u8,
    /// Time of the latest transmission.
    ts: u32,
    /// When to retransmit if no ACK arrived.
    resend_at: u32,
    /// This segment's (backed-off) RTO.
    rto: u32,
    /// ACKs seen for later segments sent no earlier than this one.
    fastack: u32,
    /// Transmissions so far.
    xmit: u32,
    /// Selectively acknowledged; kept in place until `una` passes it.
    acked: bool,
    data: Vec<u8>,
}

impl OutSeg {
    fn new(frg: u8, data: Vec<u8>) -> OutSeg {
        OutSeg {
            sn: 0,
            frg,
            ts: 0,
            resend_at: 0,
            rto: 0,
            fastack: 0,
            xmit: 0,
            acked: false,
            data,
        }
    }
}

/// A received data segment (`rcv_buf` out of order, `rcv_queue` in order).
#[derive(Debug)]
struct InSeg {
    sn: u32,
    frg: u8,
    data: Vec<u8>,
}

/// One KCP conversation: reliability, ordering, flow and congestion control, as a pure
/// state machine. See the [module documentation](super) for how to drive it.
#[derive(Debug)]
pub struct Kcp {
    conv: u32,
    mtu: usize,
    headroom: usize,
    mss: usize,
    stream: bool,
    dead: bool,

    snd_una: u32,
    snd_nxt: u32,
    rcv_nxt: u32,

    rtt: RttEstimator,
    snd_wnd: u32,
    rcv_wnd: u32,
    rmt_wnd: u32,
    cwnd: u32,
    ssthresh: u32,
    /// Congestion-avoidance byte counter (cwnd grows when it passes `(cwnd + 1) * mss`).
    incr: u32,
    probe: u8,
    /// The receive window we last told the peer (in the `wnd` of our last ACK or flush).
    adv_wnd: u32,
    ts_probe: u32,
    probe_wait: u32,

    interval: u32,
    ts_flush: u32,
    updated: bool,
    nodelay: bool,
    fast_resend: u32,
    no_cwnd: bool,
    ack_nodelay: bool,
    dead_link: u32,
    pending: Pending,

    snd_queue: VecDeque<OutSeg>,
    snd_buf: VecDeque<OutSeg>,
    rcv_queue: VecDeque<InSeg>,
    rcv_buf: VecDeque<InSeg>,
    /// Bytes of the front `rcv_queue` segment already read (stream mode only).
    rcv_offset: usize,
    /// (sn, ts) of data segments to acknowledge in the next flush.
    acklist: Vec<(u32, u32)>,

    packer: Packer,
    stats: KcpStats,
}

impl Kcp {
    /// A conversation with kcp-go's defaults: MTU 1400, no headroom, windows 32/32,
    /// interval 100 ms, RTO 200 ms (min 100), no fast resend, congestion control on,
    /// message mode, dead link after 20 transmissions.
    pub fn new(conv: u32) -> Kcp {
        Kcp {
            conv,
            mtu: DEFAULT_MTU,
            headroom: 0,
            mss: DEFAULT_MTU - HEADER_LEN,
            stream: false,
            dead: false,
            snd_una: 0,
            snd_nxt: 0,
            rcv_nxt: 0,
            rtt: RttEstimator::new(),
            snd_wnd: u32::from(DEFAULT_SND_WND),
            rcv_wnd: u32::from(DEFAULT_RCV_WND),
            rmt_wnd: u32::from(DEFAULT_RCV_WND),
            // kcp-go starts at 0 and lifts it to 1 after the first flush, which only
            // delays the first segment by one interval.
            cwnd: 1,
            ssthresh: THRESH_INIT,
            incr: 0,
            probe: 0,
            // Until told, a peer assumes a whole window.
            adv_wnd: u32::from(DEFAULT_RCV_WND),
            ts_probe: 0,
            probe_wait: 0,
            interval: DEFAULT_INTERVAL,
            ts_flush: DEFAULT_INTERVAL,
            updated: false,
            nodelay: false,
            fast_resend: 0,
            no_cwnd: false,
            ack_nodelay: false,
            dead_link: DEFAULT_DEAD_LINK,
            pending: Pending::Nothing,
            snd_queue: VecDeque::new(),
            snd_buf: VecDeque::new(),
            rcv_queue: VecDeque::new(),
            rcv_buf: VecDeque::new(),
            rcv_offset: 0,
            acklist: Vec::new(),
            packer: Packer::new(DEFAULT_MTU, 0),
            stats: KcpStats::default(),
        }
    }

    // ----- configuration -------------------------------------------------------------

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.conv
    }

    /// kcp-go's `NoDelay`: `nodelay` lowers the minimum RTO to 30 ms and halves the RTO
    /// backoff; `interval_ms` (clamped to 10..=5000) is the flush period and floors the
    /// RTO's variance term; `resend` is the fast-retransmit threshold in later ACKs
    /// (0 = off); `no_congestion` disables the congestion window.
    pub fn set_nodelay(
        &mut self,
        nodelay: bool,
        interval_ms: u32,
        resend: u32,
        no_congestion: bool,
    ) {
        self.nodelay = nodelay;
        self.rtt
            .set_min_rto(if nodelay { RTO_NODELAY_MIN } else { RTO_MIN });
        self.interval = interval_ms.clamp(10, 5000);
        self.fast_resend = resend;
        self.no_cwnd = no_congestion;
    }

    /// Sets the send and receive windows in segments; 0 leaves a window unchanged
    /// (kcp-go `WndSize`, no lower bound on the receive window).
    pub fn set_window(&mut self, snd_wnd: u16, rcv_wnd: u16) {
        if snd_wnd > 0 {
            self.snd_wnd = u32::from(snd_wnd);
        }
        if rcv_wnd > 0 {
            self.rcv_wnd = u32::from(rcv_wnd);
            self.adv_wnd = self.adv_wnd.max(self.rcv_wnd);
        }
    }

    /// Sets the MTU: the largest datagram emitted, headroom included.
    /// `mss = mtu - 24 - headroom`. Set it before sending data.
    pub fn set_mtu(&mut self, mtu: usize) -> Result<()> {
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(Error::config(format!(
                "KCP MTU {mtu} outside {MIN_MTU}..={MAX_MTU}"
            )));
        }
        if self.headroom + HEADER_LEN >= mtu {
            return Err(Error::config(format!(
                "KCP MTU {mtu} leaves no payload after {} bytes of headroom",
                self.headroom
            )));
        }
        self.mtu = mtu;
        self.apply_sizes();
        Ok(())
    }

    /// Reserves `bytes` zeroed bytes at the front of every emitted datagram for the
    /// session layer's headers (crypto nonce + CRC, FEC); they count against the MTU
    /// (kcp-go `ReserveBytes`). Fails if no payload would be left.
    pub fn set_headroom(&mut self, bytes: usize) -> Result<()> {
        if bytes + HEADER_LEN >= self.mtu {
            return Err(Error::config(format!(
                "headroom {bytes} leaves no payload in an MTU of {}",
                self.mtu
            )));
        }
        self.headroom = bytes;
        self.apply_sizes();
        Ok(())
    }

    fn apply_sizes(&mut self) {
        self.mss = self.mtu - HEADER_LEN - self.headroom;
        self.packer = Packer::new(self.mtu, self.headroom);
    }

    /// Stream mode: no message boundaries; `send` tops up the last queued segment and
    /// `recv` returns whatever bytes are available. Both ends must agree.
    pub fn set_stream(&mut self, stream: bool) {
        self.stream = stream;
    }

    /// ACK-no-delay: every `input` carrying data makes the next `update` send the ACKs
    /// at once instead of waiting for the interval.
    pub fn set_ack_nodelay(&mut self, on: bool) {
        self.ack_nodelay = on;
    }

    /// Number of transmissions of a single segment after which [`is_dead`](Self::is_dead)
    /// turns true (default 20; 0 is treated as 1).
    pub fn set_dead_link(&mut self, max_transmissions: u32) {
        self.dead_link = max_transmissions.max(1);
    }

    // ----- accessors -----------------------------------------------------------------

    /// Largest payload of one segment.
    pub fn mss(&self) -> usize {
        self.mss
    }
    /// The MTU (largest datagram emitted, headroom included).
    pub fn mtu(&self) -> usize {
        self.mtu
    }
    /// Bytes reserved at the front of each emitted datagram.
    pub fn headroom(&self) -> usize {
        self.headroom
    }
    /// Flush interval (ms).
    pub fn interval(&self) -> u32 {
        self.interval
    }
    /// Whether stream mode is on.
    pub fn is_stream(&self) -> bool {
        self.stream
    }
    /// Largest message `send` accepts in message mode (255 fragments). The receiver's
    /// window must also hold all fragments of a message, or it is never delivered.
    pub fn max_message_size(&self) -> usize {
        MAX_FRAGMENTS * self.mss
    }
    /// Send window (segments).
    pub fn snd_wnd(&self) -> u32 {
        self.snd_wnd
    }
    /// Receive window (segments).
    pub fn rcv_wnd(&self) -> u32 {
        self.rcv_wnd
    }
    /// The peer's last advertised free receive window (segments).
    pub fn remote_wnd(&self) -> u32 {
        self.rmt_wnd
    }
    /// Congestion window (segments; ignored when congestion control is off).
    pub fn cwnd(&self) -> u32 {
        self.cwnd
    }
    /// Slow-start threshold (segments).
    pub fn ssthresh(&self) -> u32 {
        self.ssthresh
    }
    /// Current retransmission timeout (ms).
    pub fn rto(&self) -> u32 {
        self.rtt.rto()
    }
    /// Smoothed round-trip time (ms; 0 before the first sample).
    pub fn srtt(&self) -> u32 {
        self.rtt.srtt()
    }
    /// Round-trip time variation (ms).
    pub fn rttvar(&self) -> u32 {
        self.rtt.rttvar()
    }
    /// Counters.
    pub fn stats(&self) -> KcpStats {
        self.stats
    }
    /// Received segments not yet read: in order and waiting for the application, or out
    /// of order and waiting for a gap to fill (at most twice the receive window).
    pub fn unread_segments(&self) -> usize {
        self.rcv_queue.len() + self.rcv_buf.len()
    }
    /// Segments queued plus segments in flight (kcp-go `WaitSnd`).
    pub fn wait_snd(&self) -> usize {
        self.snd_queue.len() + self.snd_buf.len()
    }
    /// How many more segments (of up to [`mss`](Self::mss) bytes) the writer may queue
    /// before it should wait: the backlog is bounded by twice the send window.
    pub fn send_capacity(&self) -> usize {
        (2 * self.snd_wnd as usize).saturating_sub(self.wait_snd())
    }
    /// True once a segment was transmitted `dead_link` times without being acknowledged:
    /// the peer is gone. (kcp-go records this but never acts on it.)
    pub fn is_dead(&self) -> bool {
        self.dead
    }
    /// True when an `input` asked for a flush before the interval elapses (the peer's
    /// window slid, or ACK-no-delay); `update` performs it and `check` returns `now`.
    pub fn needs_flush(&self) -> bool {
        self.pending != Pending::Nothing
    }

    /// True when there is something to send at the next flush: owed ACKs, a window
    /// probe or window update, or a flush requested by `input`. A reader that just made
    /// room in the receive window uses it to get the window update out promptly.
    pub fn wants_to_send(&self) -> bool {
        self.needs_flush() || self.probe != 0 || !self.acklist.is_empty()
    }

    /// True when nothing at all is pending: no data queued or unacknowledged, nothing to
    /// acknowledge, no probe. An idle session needs no timer until a datagram arrives or
    /// the application writes; KCP's `check` alone would wake it every interval.
    pub fn is_idle(&self) -> bool {
        self.snd_queue.is_empty() && self.snd_buf.is_empty() && !self.wants_to_send()
    }

    // ----- user data -----------------------------------------------------------------

    /// Queues data for sending. Message mode: the whole message, cut into up to 255
    /// fragments, or [`ErrorKind::MessageTooLarge`](crate::ErrorKind::MessageTooLarge). Stream mode: appends to the byte stream.
    /// Returns `data.len()`; an empty `data` queues nothing. Nothing goes on the wire
    /// until the next `flush`/`update`; use [`send_capacity`](Self::send_capacity) for
    /// backpressure.
    pub fn send(&mut self, data: &[u8]) -> Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mss = self.mss;
        if self.stream {
            let mut rest = data;
            if let Some(last) = self.snd_queue.back_mut() {
                if last.data.len() < mss {
                    let take = (mss - last.data.len()).min(rest.len());
                    last.data.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                }
            }
            for chunk in rest.chunks(mss) {
                self.snd_queue.push_back(OutSeg::new(0, chunk.to_vec()));
            }
        } else {
            let count = data.len().div_ceil(mss);
            if count > MAX_FRAGMENTS {
                return Err(Error::message_too_large(
                    data.len(),
                    self.max_message_size(),
                ));
            }
            for (i, chunk) in data.chunks(mss).enumerate() {
                // count <= 255, so the countdown fits the frg byte.
                let frg = (count - 1 - i) as u8;
                self.snd_queue.push_back(OutSeg::new(frg, chunk.to_vec()));
            }
        }
        Ok(data.len())
    }

    /// Size of what the next `recv` returns: the next complete message (message mode) or
    /// all buffered bytes (stream mode). `None` when nothing is ready.
    pub fn peek_size(&self) -> Option<usize> {
        let front = self.rcv_queue.front()?;
        if self.stream {
            let total: usize = self.rcv_queue.iter().map(|s| s.data.len()).sum();
            let total = total.saturating_sub(self.rcv_offset);
            return (total > 0).then_some(total);
        }
        if front.frg == 0 {
            return Some(front.data.len());
        }
        if self.rcv_queue.len() < usize::from(front.frg) + 1 {
            return None;
        }
        let mut len = 0;
        for seg in &self.rcv_queue {
            len += seg.data.len();
            if seg.frg == 0 {
                break;
            }
        }
        Some(len)
    }

    /// Receives into `buf`: the next whole message (message mode; [`ErrorKind::BufferTooSmall`](crate::ErrorKind::BufferTooSmall)
    /// if it does not fit, nothing consumed) or as many stream bytes as fit (stream mode).
    /// `Ok(None)` when nothing is ready.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        let was_full = self.rcv_queue.len() >= self.rcv_wnd as usize;
        let Some(size) = self.peek_size() else {
            if self.stream && !self.rcv_queue.is_empty() {
                // Only empty segments are queued (a peer may send them): drop them.
                self.rcv_queue.clear();
                self.rcv_offset = 0;
                self.after_read(was_full);
            }
            return Ok(None);
        };
        let n = if self.stream {
            let mut n = 0;
            while n < buf.len() {
                let Some(front) = self.rcv_queue.front() else {
                    break;
                };
                // (`get` guards against an offset left over from a mode switch.)
                let avail = front.data.get(self.rcv_offset..).unwrap_or(&[]);
                let take = avail.len().min(buf.len() - n);
                buf[n..n + take].copy_from_slice(&avail[..take]);
                n += take;
                self.rcv_offset += take;
                if self.rcv_offset >= front.data.len() {
                    self.rcv_queue.pop_front();
                    self.rcv_offset = 0;
                }
            }
            n
        } else {
            if size > buf.len() {
                return Err(Error::buffer_too_small(buf.len(), size));
            }
            let mut n = 0;
            while let Some(seg) = self.rcv_queue.pop_front() {
                buf[n..n + seg.data.len()].copy_from_slice(&seg.data);
                n += seg.data.len();
                if seg.frg == 0 {
                    break;
                }
            }
            n
        };
        self.after_read(was_full);
        Ok(Some(n))
    }

    /// After the application consumed segments: refill the queue from `rcv_buf` and tell
    /// the peer at once (a window report, with the ACKs owed) when the window reopened:
    /// the queue was full (we advertised a zero window), or the window grew by half of
    /// `rcv_wnd` since we last advertised it. A sender held back by our window would
    /// otherwise wait for our next interval flush, or its own probe, to learn that it may
    /// go on (docs/protocols/kcp.md, "When segments leave").
    fn after_read(&mut self, was_full: bool) {
        self.refill_rcv_queue();
        let free = u32::from(self.wnd_unused());
        let reopened = was_full && free > 0;
        if reopened || free >= self.adv_wnd + (self.rcv_wnd / 2).max(1) {
            self.probe |= ASK_TELL;
            if self.pending == Pending::Nothing {
                self.pending = Pending::Acks;
            }
        }
    }

    /// Moves in-order segments from `rcv_buf` to `rcv_queue` while the window allows.
    fn refill_rcv_queue(&mut self) {
        while let Some(front) = self.rcv_buf.front() {
            if front.sn != self.rcv_nxt || self.rcv_queue.len() >= self.rcv_wnd as usize {
                break;
            }
            if let Some(seg) = self.rcv_buf.pop_front() {
                self.rcv_queue.push_back(seg);
            }
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        }
    }

    /// Free receive window advertised to the peer.
    fn wnd_unused(&self) -> u16 {
        let free = (self.rcv_wnd as usize).saturating_sub(self.rcv_queue.len());
        free.min(usize::from(u16::MAX)) as u16
    }

    /// Starts both sequence spaces at `sn` (tests of wrapping arithmetic).
    #[cfg(test)]
    pub(crate) fn set_initial_sn(&mut self, sn: u32) {
        self.snd_una = sn;
        self.snd_nxt = sn;
        self.rcv_nxt = sn;
    }

    /// Retransmission bookkeeping of the first in-flight segment: (xmit, rto, resend_at).
    #[cfg(test)]
    pub(crate) fn first_in_flight(&self) -> Option<(u32, u32, u32)> {
        self.snd_buf.front().map(|s| (s.xmit, s.rto, s.resend_at))
    }
}

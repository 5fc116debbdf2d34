//! Sending side of the state machine: packing segments into datagrams, window probes,
//! (re)transmission decisions, congestion-window reactions and the timers.

use super::{
    diff, Kcp, KcpStats, Pending, ASK_SEND, ASK_TELL, MAX_SEGMENT_RTO, PROBE_INIT, PROBE_LIMIT,
    THRESH_MIN,
};
use crate::core::segment::{Command, SegmentHeader, HEADER_LEN};

/// Packs segments into datagrams of at most `mtu` bytes, each starting with `headroom`
/// zero bytes, and hands full ones to the caller.
#[derive(Debug)]
pub(super) struct Packer {
    buf: Vec<u8>,
    mtu: usize,
    headroom: usize,
}

impl Packer {
    pub(super) fn new(mtu: usize, headroom: usize) -> Packer {
        let mut buf = Vec::with_capacity(mtu);
        buf.resize(headroom, 0);
        Packer { buf, mtu, headroom }
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(self.headroom, 0);
    }

    fn push(
        &mut self,
        hdr: &SegmentHeader,
        data: &[u8],
        stats: &mut KcpStats,
        out: &mut impl FnMut(&mut [u8]),
    ) {
        if self.buf.len() + HEADER_LEN + data.len() > self.mtu && self.buf.len() > self.headroom {
            self.emit(stats, out);
        }
        hdr.append_to(&mut self.buf);
        self.buf.extend_from_slice(data);
        stats.out_segs += 1;
    }

    fn finish(&mut self, stats: &mut KcpStats, out: &mut impl FnMut(&mut [u8])) {
        if self.buf.len() > self.headroom {
            self.emit(stats, out);
        }
    }

    fn emit(&mut self, stats: &mut KcpStats, out: &mut impl FnMut(&mut [u8])) {
        stats.out_datagrams += 1;
        out(&mut self.buf);
        self.reset();
    }
}

impl Kcp {
    /// Flushes now: ACKs, window probes, new data the windows allow, and retransmissions
    /// (RTO, fast, early). Each datagram handed to `out` is at most `mtu` bytes and starts
    /// with `headroom` zero bytes the caller may overwrite (then encrypt, FEC, send).
    pub fn flush(&mut self, now_ms: u32, mut out: impl FnMut(&mut [u8])) {
        let now = now_ms;
        self.pending = Pending::Nothing;
        let wnd = self.wnd_unused();
        self.adv_wnd = u32::from(wnd);
        let mut ctl = SegmentHeader {
            conv: self.conv,
            cmd: Command::Ack,
            frg: 0,
            wnd,
            ts: 0,
            sn: 0,
            una: self.rcv_nxt,
            len: 0,
        };
        self.write_acks(&mut ctl, &mut out);

        // Zero window at the peer: probe it, backing off from 7 s up to 120 s.
        if self.rmt_wnd == 0 {
            if self.probe_wait == 0 {
                self.probe_wait = PROBE_INIT;
                self.ts_probe = now.wrapping_add(self.probe_wait);
            } else if diff(now, self.ts_probe) >= 0 {
                self.probe_wait = self.probe_wait.max(PROBE_INIT);
                self.probe_wait = (self.probe_wait + self.probe_wait / 2).min(PROBE_LIMIT);
                self.ts_probe = now.wrapping_add(self.probe_wait);
                self.probe |= ASK_SEND;
            }
        } else {
            self.ts_probe = 0;
            self.probe_wait = 0;
        }
        ctl.ts = now;
        ctl.sn = 0;
        if self.probe & ASK_SEND != 0 {
            ctl.cmd = Command::WindowAsk;
            self.packer.push(&ctl, &[], &mut self.stats, &mut out);
        }
        if self.probe & ASK_TELL != 0 {
            ctl.cmd = Command::WindowTell;
            self.packer.push(&ctl, &[], &mut self.stats, &mut out);
        }
        self.probe = 0;

        // Move queued segments into flight as far as the effective window allows.
        let mut window = self.snd_wnd.min(self.rmt_wnd);
        if !self.no_cwnd {
            window = window.min(self.cwnd);
        }
        let mut new_segs = 0u32;
        while !self.snd_queue.is_empty()
            && diff(self.snd_nxt, self.snd_una.wrapping_add(window)) < 0
        {
            if let Some(mut seg) = self.snd_queue.pop_front() {
                seg.sn = self.snd_nxt;
                self.snd_buf.push_back(seg);
                self.snd_nxt = self.snd_nxt.wrapping_add(1);
                new_segs += 1;
            }
        }

        let resend = if self.fast_resend == 0 {
            u32::MAX
        } else {
            self.fast_resend
        };
        let rx_rto = self.rtt.rto();
        let (mut lost, mut fast, mut early) = (0u64, 0u64, 0u64);
        for seg in self.snd_buf.iter_mut() {
            if seg.acked {
                continue;
            }
            let send = if seg.xmit == 0 {
                seg.rto = rx_rto;
                true
            } else if seg.fastack >= resend {
                seg.rto = rx_rto;
                fast += 1;
                true
            } else if seg.fastack > 0 && new_segs == 0 {
                seg.rto = rx_rto;
                early += 1;
                true
            } else if diff(now, seg.resend_at) >= 0 {
                let backoff = if self.nodelay { rx_rto / 2 } else { rx_rto };
                seg.rto = seg.rto.saturating_add(backoff).min(MAX_SEGMENT_RTO);
                lost += 1;
                true
            } else {
                false
            };
            if !send {
                continue;
            }
            seg.fastack = 0;
            seg.resend_at = now.wrapping_add(seg.rto);
            seg.xmit += 1;
            seg.ts = now;
            let hdr = SegmentHeader {
                conv: self.conv,
                cmd: Command::Push,
                frg: seg.frg,
                wnd,
                ts: now,
                sn: seg.sn,
                una: self.rcv_nxt,
                len: seg.data.len() as u32,
            };
            self.packer.push(&hdr, &seg.data, &mut self.stats, &mut out);
            if seg.xmit >= self.dead_link {
                self.dead = true;
            }
        }
        self.packer.finish(&mut self.stats, &mut out);

        self.stats.lost_segs += lost;
        self.stats.fast_retrans_segs += fast;
        self.stats.early_retrans_segs += early;
        self.stats.retrans_segs += lost + fast + early;

        if !self.no_cwnd {
            let mss = self.mss as u32;
            if fast + early > 0 {
                // Rate halving after a fast/early retransmit.
                let inflight = self.snd_nxt.wrapping_sub(self.snd_una);
                self.ssthresh = (inflight / 2).max(THRESH_MIN);
                self.cwnd = self.ssthresh.saturating_add(resend);
                self.incr = self.cwnd.saturating_mul(mss);
            }
            if lost > 0 {
                // A timeout: back to one segment.
                self.ssthresh = (window / 2).max(THRESH_MIN);
                self.cwnd = 1;
                self.incr = mss;
            }
            if self.cwnd < 1 {
                self.cwnd = 1;
                self.incr = mss;
            }
        }
    }

    /// Writes the ACK list. Duplicate ACKs for data already delivered in order
    /// (`sn < rcv_nxt`) are dropped, except the last one of the list.
    fn write_acks(&mut self, ctl: &mut SegmentHeader, out: &mut impl FnMut(&mut [u8])) {
        let last = self.acklist.len().wrapping_sub(1);
        for (i, &(sn, ts)) in self.acklist.iter().enumerate() {
            if diff(sn, self.rcv_nxt) >= 0 || i == last {
                ctl.sn = sn;
                ctl.ts = ts;
                self.packer.push(ctl, &[], &mut self.stats, out);
            }
        }
        self.acklist.clear();
    }

    /// Sends only the pending ACKs (kcp-go `flush(ackOnly)`), and the window report a
    /// read asked for (`after_read`).
    fn flush_acks(&mut self, now: u32, mut out: impl FnMut(&mut [u8])) {
        self.pending = Pending::Nothing;
        let wnd = self.wnd_unused();
        self.adv_wnd = u32::from(wnd);
        let mut ctl = SegmentHeader {
            conv: self.conv,
            cmd: Command::Ack,
            frg: 0,
            wnd,
            ts: 0,
            sn: 0,
            una: self.rcv_nxt,
            len: 0,
        };
        self.write_acks(&mut ctl, &mut out);
        if self.probe & ASK_TELL != 0 {
            self.probe &= !ASK_TELL;
            ctl.cmd = Command::WindowTell;
            ctl.ts = now;
            ctl.sn = 0;
            self.packer.push(&ctl, &[], &mut self.stats, &mut out);
        }
        self.packer.finish(&mut self.stats, &mut out);
    }

    /// Drives the timers: flushes when the interval elapsed (kcp-go `Update`), when a
    /// retransmission is due, or when an `input` requested it; sends just the ACKs for
    /// ACK-no-delay. Call it at [`check`](Self::check)'s deadline and after `input`.
    pub fn update(&mut self, now_ms: u32, out: impl FnMut(&mut [u8])) {
        let now = now_ms;
        if !self.updated {
            self.updated = true;
            self.ts_flush = now;
        }
        let mut slap = diff(now, self.ts_flush);
        if !(-10_000..10_000).contains(&slap) {
            // The clock jumped: resynchronise.
            self.ts_flush = now;
            slap = 0;
        }
        if slap >= 0 {
            self.ts_flush = self.ts_flush.wrapping_add(self.interval);
            if diff(now, self.ts_flush) >= 0 {
                self.ts_flush = now.wrapping_add(self.interval);
            }
            self.flush(now, out);
        } else if self.pending == Pending::Full || self.retransmit_due(now) {
            self.flush(now, out);
        } else if self.pending == Pending::Acks {
            self.flush_acks(now, out);
        }
    }

    fn retransmit_due(&self, now: u32) -> bool {
        self.snd_buf
            .iter()
            .any(|seg| !seg.acked && diff(now, seg.resend_at) >= 0)
    }

    /// When `update` next has work: `now` if it has work already, otherwise the earlier
    /// of the next interval tick and the earliest retransmission, never more than one
    /// interval ahead. Never earlier than `now`.
    pub fn check(&self, now_ms: u32) -> u32 {
        let now = now_ms;
        if !self.updated || self.pending != Pending::Nothing {
            return now;
        }
        let mut ts_flush = self.ts_flush;
        let slap = diff(now, ts_flush);
        if !(-10_000..10_000).contains(&slap) {
            ts_flush = now;
        }
        if diff(now, ts_flush) >= 0 {
            return now;
        }
        let mut minimal = diff(ts_flush, now) as u32;
        for seg in self.snd_buf.iter().filter(|s| !s.acked) {
            let d = diff(seg.resend_at, now);
            if d <= 0 {
                return now;
            }
            minimal = minimal.min(d as u32);
        }
        now.wrapping_add(minimal.min(self.interval))
    }
}

//! Receiving side of the state machine: decoding datagrams, ACK processing, RTT samples,
//! congestion-window growth and the receive buffer.

use super::{diff, InSeg, Kcp, Pending, ASK_TELL};
use crate::core::segment::{split_segment, Command, HEADER_LEN};
use crate::{Error, Result};

impl Kcp {
    /// Feeds one datagram from the peer (headroom already stripped by the session
    /// layer). `regular` is false for datagrams recovered by FEC: those give no RTT
    /// sample and no remote-window update. Segments before a bad one are processed;
    /// the error is returned: [`ErrorKind::WrongConv`](crate::ErrorKind::WrongConv) for another conversation's segment,
    /// [`ErrorKind::Malformed`](crate::ErrorKind::Malformed) for a short datagram, a length past the end or an unknown
    /// command. Afterwards, call `update` (see [`needs_flush`](Self::needs_flush)).
    pub fn input(&mut self, datagram: &[u8], now_ms: u32, regular: bool) -> Result<()> {
        if datagram.len() < HEADER_LEN {
            return Err(Error::malformed(
                "datagram shorter than a KCP segment header",
            ));
        }
        let prev_una = self.snd_una;
        let mut newest_ack_ts: Option<u32> = None;
        let mut window_slid = false;
        let mut outcome = Ok(());
        let mut rest = datagram;
        while rest.len() >= HEADER_LEN {
            let conv = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if conv != self.conv {
                outcome = Err(Error::wrong_conv(conv, self.conv));
                break;
            }
            let (hdr, payload, tail) = match split_segment(rest) {
                Ok(parts) => parts,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            rest = tail;
            self.stats.in_segs += 1;

            if regular {
                self.rmt_wnd = u32::from(hdr.wnd);
            }
            if self.parse_una(hdr.una) > 0 {
                window_slid = true;
            }
            self.shrink_buf();

            match hdr.cmd {
                Command::Ack => {
                    self.parse_ack(hdr.sn);
                    self.parse_fastack(hdr.sn, hdr.ts);
                    newest_ack_ts = Some(match newest_ack_ts {
                        Some(t) if diff(t, hdr.ts) > 0 => t,
                        _ => hdr.ts,
                    });
                }
                Command::Push => {
                    let mut repeat = true;
                    if diff(hdr.sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) < 0 {
                        self.ack_push(hdr.sn, hdr.ts);
                        if diff(hdr.sn, self.rcv_nxt) >= 0 {
                            repeat = self.parse_data(hdr.sn, hdr.frg, payload);
                        }
                    }
                    if regular && repeat {
                        self.stats.repeat_segs += 1;
                    }
                }
                Command::WindowAsk => self.probe |= ASK_TELL,
                Command::WindowTell => {}
            }
        }

        if regular {
            if let Some(ts) = newest_ack_ts {
                let rtt = diff(now_ms, ts);
                if rtt >= 0 {
                    self.rtt.sample(rtt as u32, self.interval);
                }
            }
        }

        if !self.no_cwnd && diff(self.snd_una, prev_una) > 0 {
            self.grow_cwnd();
        }

        if window_slid {
            self.pending = Pending::Full;
        } else if self.ack_nodelay && !self.acklist.is_empty() {
            self.pending = self.pending.max(Pending::Acks);
        }
        outcome
    }

    /// Reno-like growth on a cumulative ACK: +1 per ACK in slow start, about +1 per
    /// window in congestion avoidance; never beyond the peer's window.
    fn grow_cwnd(&mut self) {
        if self.cwnd >= self.rmt_wnd {
            return;
        }
        let mss = self.mss as u32;
        if self.cwnd < self.ssthresh {
            self.cwnd += 1;
            self.incr = self.incr.saturating_add(mss);
        } else {
            self.incr = self.incr.max(mss);
            self.incr = self
                .incr
                .saturating_add(mss.saturating_mul(mss) / self.incr + mss / 16);
            if (self.cwnd + 1).saturating_mul(mss) <= self.incr {
                self.cwnd = self.incr.div_ceil(mss.max(1));
            }
        }
        if self.cwnd > self.rmt_wnd {
            self.cwnd = self.rmt_wnd;
            self.incr = self.rmt_wnd.saturating_mul(mss);
        }
    }

    /// Drops in-flight segments below the peer's cumulative ACK; returns how many.
    fn parse_una(&mut self, una: u32) -> usize {
        let count = self
            .snd_buf
            .iter()
            .take_while(|seg| diff(una, seg.sn) > 0)
            .count();
        self.snd_buf.drain(..count);
        count
    }

    fn shrink_buf(&mut self) {
        self.snd_una = self.snd_buf.front().map_or(self.snd_nxt, |seg| seg.sn);
    }

    /// Marks the selectively acknowledged segment (it stays until `una` passes it).
    fn parse_ack(&mut self, sn: u32) {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        for seg in self.snd_buf.iter_mut() {
            if seg.sn == sn {
                seg.acked = true;
                seg.data = Vec::new();
                break;
            }
            if diff(sn, seg.sn) < 0 {
                break;
            }
        }
    }

    /// Counts an ACK of `sn` against every earlier segment sent no later than it.
    fn parse_fastack(&mut self, sn: u32, ts: u32) {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        for seg in self.snd_buf.iter_mut() {
            if diff(sn, seg.sn) < 0 {
                break;
            }
            if sn != seg.sn && diff(seg.ts, ts) <= 0 {
                seg.fastack = seg.fastack.saturating_add(1);
            }
        }
    }

    /// Queues an ACK. The list is bounded: past the cap further ACKs are dropped (the
    /// peer retransmits, and `una` covers in-order data) and a flush is requested.
    fn ack_push(&mut self, sn: u32, ts: u32) {
        let cap = (self.rcv_wnd as usize * 4).max(1024);
        if self.acklist.len() >= cap {
            self.pending = self.pending.max(Pending::Acks);
            return;
        }
        self.acklist.push((sn, ts));
    }

    /// Stores a data segment inside the receive window; returns true if it was a duplicate.
    fn parse_data(&mut self, sn: u32, frg: u8, payload: &[u8]) -> bool {
        if diff(sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) >= 0 || diff(sn, self.rcv_nxt) < 0 {
            return true;
        }
        let mut insert_at = 0;
        for (i, seg) in self.rcv_buf.iter().enumerate().rev() {
            if seg.sn == sn {
                return true;
            }
            if diff(sn, seg.sn) > 0 {
                insert_at = i + 1;
                break;
            }
        }
        self.rcv_buf.insert(
            insert_at,
            InSeg {
                sn,
                frg,
                data: payload.to_vec(),
            },
        );
        self.refill_rcv_queue();
        false
    }
}

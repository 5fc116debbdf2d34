//! The receiving side of FEC.

use std::collections::VecDeque;
use std::sync::Arc;

use reed_solomon_erasure::galois_8::ReedSolomon;

use super::autotune::AutoTune;
use super::{
    check_shards, seq_diff, shared_codec, FEC_DATA_HEADER_SIZE, FEC_HEADER_SIZE, MAX_FEC_PACKET,
    MAX_TOTAL_SHARDS, RX_FEC_MULTI, TYPE_DATA, TYPE_PARITY,
};
use crate::{Error, Result};

/// FEC counters, named after kcp-go's SNMP fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FecStats {
    /// `FECParityShards`: parity packets received.
    pub parity_shards: u64,
    /// `FECErrs`: groups or recovered packets that could not be used (inconsistent
    /// shard lengths, a failed reconstruction, a recovered size field out of range).
    pub errs: u64,
    /// `FECRecovered`: lost data packets rebuilt and handed back. (kcp-go counts only
    /// those KCP then accepts; the session layer may count KCP's rejections apart.)
    pub recovered: u64,
    /// `FECShortShards`: data packets dropped from the queue before their group could
    /// be completed or rebuilt.
    pub short_shards: u64,
}

/// What one FEC packet yields.
#[derive(Debug, Default)]
pub struct Decoded<'p> {
    /// A data packet's own KCP bytes (everything after its 8-byte header, as kcp-go
    /// feeds them), to be input to KCP as a *regular* packet. `None` for parity.
    pub regular: Option<&'p [u8]>,
    /// KCP bytes of lost data packets rebuilt from the group, to be input to KCP as
    /// *not regular* (no RTT sample, no window update). Hand the vectors back with
    /// [`FecDecoder::recycle`] to save allocations.
    pub recovered: Vec<Vec<u8>>,
}

/// One queued packet.
#[derive(Debug)]
struct Entry {
    seqid: u32,
    is_data: bool,
    /// The packet from offset 6 on: the RS shard (not yet padded).
    shard: Vec<u8>,
}

/// kcp-go's FEC decoder.
///
/// Feed it every FEC packet received ([`super::is_fec`], after decryption), in arrival
/// order. It keeps the last `3 × (ds + ps)` packets ordered by seqid; when a group has at
/// least `ds` of its packets but misses data packets, it rebuilds them. Like kcp-go, it
/// infers the sender's `ds`/`ps` from the pattern of data and parity seqids when a packet
/// does not fit its configuration, so a receiver without FEC configured can start with
/// [`FecDecoder::auto`] (kcp-go's lazy (1, 1) decoder).
#[derive(Debug)]
pub struct FecDecoder {
    ds: usize,
    ps: usize,
    pub(super) codec: Arc<ReedSolomon>,
    /// Ordered by seqid (wrapping).
    rx: VecDeque<Entry>,
    /// Reconstruction scratch: one (shard, present) slot per position.
    slots: Vec<(Vec<u8>, bool)>,
    /// Spare buffers.
    pool: Vec<Vec<u8>>,
    tune: AutoTune,
    /// First seqids of the groups completed or rebuilt last: their late packets are
    /// not queued (so a group is never rebuilt twice).
    done: VecDeque<u32>,
    stats: FecStats,
}

/// Completed groups remembered.
const DONE_GROUPS: usize = 8;

impl FecDecoder {
    /// A decoder for groups of `ds` data and `ps` parity packets. Fails unless `ds >= 1`,
    /// `ps >= 1` and `ds + ps <= 256`.
    pub fn new(ds: usize, ps: usize) -> Result<Self> {
        check_shards(ds, ps)?;
        Ok(FecDecoder {
            ds,
            ps,
            codec: shared_codec(ds, ps)?,
            rx: VecDeque::with_capacity(RX_FEC_MULTI * (ds + ps) + 1),
            slots: Vec::new(),
            pool: Vec::new(),
            tune: AutoTune::new(),
            done: VecDeque::with_capacity(DONE_GROUPS),
            stats: FecStats::default(),
        })
    }

    /// The decoder of a session without FEC configured: starts at (1, 1) and adopts the
    /// sender's parameters from the traffic, as kcp-go does.
    pub fn auto() -> Self {
        // (1, 1) is always valid.
        Self::new(1, 1).unwrap_or_else(|_| unreachable!("(1, 1) is a valid FEC setting"))
    }

    /// The (data, parity) shard counts in use (changed by auto-tuning).
    pub fn params(&self) -> (usize, usize) {
        (self.ds, self.ps)
    }

    /// The counters so far.
    pub fn stats(&self) -> FecStats {
        self.stats
    }

    /// Packets queued now (at most `3 × (ds + ps)` between calls).
    pub fn queued(&self) -> usize {
        self.rx.len()
    }

    /// Gives back a buffer from [`Decoded::recovered`] for reuse.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < RX_FEC_MULTI * (self.ds + self.ps) {
            buf.clear();
            self.pool.push(buf);
        }
    }

    /// Drops every queued packet.
    pub fn clear(&mut self) {
        while let Some(e) = self.rx.pop_front() {
            self.recycle(e.shard);
        }
    }

    /// Takes one FEC packet (decrypted, from the FEC header on). Returns the data
    /// packet's own KCP bytes for regular input, and any data packets of its group
    /// rebuilt thanks to it. Errors (the caller counts them as input errors and drops the
    /// packet): shorter than 8 bytes, longer than [`MAX_FEC_PACKET`], or not of type
    /// 0xF1/0xF2. Problems within a group are counted in [`FecStats::errs`] instead.
    pub fn decode<'p>(&mut self, pkt: &'p [u8]) -> Result<Decoded<'p>> {
        if pkt.len() < FEC_DATA_HEADER_SIZE {
            return Err(Error::malformed("FEC packet shorter than its header"));
        }
        if pkt.len() > MAX_FEC_PACKET {
            return Err(Error::malformed("FEC packet too long"));
        }
        let seqid = u32::from_le_bytes([pkt[0], pkt[1], pkt[2], pkt[3]]);
        let is_data = match u16::from_le_bytes([pkt[4], pkt[5]]) {
            TYPE_DATA => true,
            TYPE_PARITY => false,
            _ => return Err(Error::malformed("not an FEC packet")),
        };
        let mut out = Decoded {
            regular: is_data.then(|| &pkt[FEC_DATA_HEADER_SIZE..]),
            recovered: Vec::new(),
        };
        if !is_data {
            self.stats.parity_shards += 1;
        }

        self.tune.sample(is_data, seqid);
        let total = (self.ds + self.ps) as u32;
        if (((seqid % total) as usize) < self.ds) != is_data {
            self.retune();
        }
        let total = (self.ds + self.ps) as u32;
        self.trim();
        if self.done.contains(&(seqid - seqid % total)) {
            return Ok(out);
        }

        // Insert in seqid order, dropping duplicates.
        let mut idx = 0;
        for (i, e) in self.rx.iter().enumerate().rev() {
            let d = seq_diff(seqid, e.seqid);
            if d == 0 {
                return Ok(out);
            }
            if d > 0 {
                idx = i + 1;
                break;
            }
        }
        let mut shard = self.pool.pop().unwrap_or_default();
        shard.clear();
        shard.extend_from_slice(&pkt[FEC_HEADER_SIZE..]);
        self.rx.insert(
            idx,
            Entry {
                seqid,
                is_data,
                shard,
            },
        );

        self.try_group(seqid, idx, total, &mut out.recovered);
        self.trim();
        Ok(out)
    }

    /// Keeps the queue bounded; data packets that fall off were never recovered.
    fn trim(&mut self) {
        let limit = RX_FEC_MULTI * (self.ds + self.ps);
        while self.rx.len() > limit {
            if let Some(e) = self.rx.pop_front() {
                if e.is_data {
                    self.stats.short_shards += 1;
                }
                self.recycle(e.shard);
            }
        }
    }

    /// Remembers that the group starting at `begin` is finished.
    fn mark_done(&mut self, begin: u32) {
        if self.done.len() == DONE_GROUPS {
            self.done.pop_front();
        }
        self.done.push_back(begin);
    }

    /// Adopts the (ds, ps) seen in the traffic, if a consistent pattern is there.
    fn retune(&mut self) {
        let (Some(ds), Some(ps)) = (self.tune.find_period(true), self.tune.find_period(false))
        else {
            return;
        };
        if ds + ps > MAX_TOTAL_SHARDS || (ds, ps) == (self.ds, self.ps) {
            return;
        }
        if let Ok(codec) = shared_codec(ds, ps) {
            tracing::debug!(ds, ps, "FEC decoder auto-tuned");
            self.ds = ds;
            self.ps = ps;
            self.codec = codec;
            self.done.clear();
        }
    }

    /// Looks at the group of the packet just inserted at `idx`: frees it when all its data
    /// is there, rebuilds the missing data when enough packets are.
    fn try_group(&mut self, seqid: u32, idx: usize, total: u32, recovered: &mut Vec<Vec<u8>>) {
        let begin = seqid - seqid % total;
        let end = begin.wrapping_add(total - 1);
        let pos = (seqid % total) as usize;
        let search_begin = idx.saturating_sub(pos);
        let search_end = (search_begin + total as usize - 1).min(self.rx.len() - 1);
        if search_end + 1 - search_begin < self.ds {
            return;
        }

        // The group's packets are contiguous in the ordered queue.
        let mut first = None;
        let (mut count, mut data_count) = (0usize, 0usize);
        for i in search_begin..=search_end {
            let s = self.rx[i].seqid;
            if seq_diff(s, end) > 0 {
                break;
            }
            if seq_diff(s, begin) >= 0 {
                first.get_or_insert(i);
                count += 1;
                if ((s % total) as usize) < self.ds {
                    data_count += 1;
                }
            }
        }
        let Some(first) = first else { return };
        if data_count == self.ds {
            // Nothing lost.
            self.free(first, count);
            self.mark_done(begin);
            return;
        }
        if count < self.ds {
            return;
        }
        self.mark_done(begin);

        // Recoverable. Parity shards all have the length of the group's longest data
        // packet; anything else is corrupt or hostile, and rebuilding from it would hand
        // garbage to KCP.
        let entries = self.rx.range(first..first + count);
        let parity_len = entries
            .clone()
            .filter(|e| (e.seqid % total) as usize >= self.ds)
            .map(|e| e.shard.len())
            .try_fold(None, |acc: Option<usize>, l| match acc {
                Some(a) if a != l => Err(()),
                _ => Ok(Some(l)),
            });
        let max_data = entries
            .filter(|e| ((e.seqid % total) as usize) < self.ds)
            .map(|e| e.shard.len())
            .max()
            .unwrap_or(0);
        let shard_len = match parity_len {
            Ok(Some(p)) if p >= max_data => p,
            _ => {
                self.stats.errs += 1;
                self.free(first, count);
                return;
            }
        };

        let n = total as usize;
        self.slots.resize_with(n, Default::default);
        for (buf, present) in &mut self.slots {
            buf.clear();
            *present = false;
        }
        for e in self.rx.drain(first..first + count) {
            let slot = &mut self.slots[(e.seqid % total) as usize];
            slot.0 = e.shard;
            slot.0.resize(shard_len, 0);
            slot.1 = true;
        }
        for k in 0..self.ds {
            if !self.slots[k].1 {
                let mut buf = self.pool.pop().unwrap_or_default();
                buf.clear();
                buf.resize(shard_len, 0);
                self.slots[k].0 = buf;
            }
        }
        let missing: Vec<usize> = (0..self.ds).filter(|&k| !self.slots[k].1).collect();
        match self.codec.reconstruct_data(&mut self.slots[..]) {
            Ok(()) => {
                for k in missing {
                    let mut r = std::mem::take(&mut self.slots[k].0);
                    let sz = usize::from(u16::from_le_bytes([r[0], r[1]]));
                    if (2..=r.len()).contains(&sz) {
                        r.truncate(sz);
                        r.drain(..2);
                        self.stats.recovered += 1;
                        recovered.push(r);
                    } else {
                        self.stats.errs += 1;
                        self.recycle(r);
                    }
                }
            }
            Err(_) => self.stats.errs += 1,
        }
        for k in 0..n {
            let buf = std::mem::take(&mut self.slots[k].0);
            if buf.capacity() > 0 {
                self.recycle(buf);
            }
        }
    }

    /// Removes `n` queued packets from index `first` on.
    fn free(&mut self, first: usize, n: usize) {
        let limit = RX_FEC_MULTI * (self.ds + self.ps);
        for mut e in self.rx.drain(first..first + n) {
            if self.pool.len() < limit {
                e.shard.clear();
                self.pool.push(e.shard);
            }
        }
    }
}

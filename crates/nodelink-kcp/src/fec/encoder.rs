//! The sending side of FEC.

use std::sync::Arc;

use reed_solomon_erasure::galois_8::ReedSolomon;

use super::{
    check_shards, shared_codec, FEC_DATA_HEADER_SIZE, FEC_HEADER_SIZE, TYPE_DATA, TYPE_PARITY,
};
use crate::{Error, Result};

/// kcp-go's FEC encoder: numbers every outgoing datagram and produces parity datagrams.
///
/// Call [`encode`](Self::encode) once per outgoing datagram, in sending order, with the
/// datagram laid out as `[headroom bytes | 8 bytes of FEC header room | KCP bytes]`; it
/// fills in the FEC header. When the datagram completes a group, `encode` returns the
/// group's `ps` parity packets, each laid out as `[headroom bytes (zero) | seqid | 0xF2 |
/// parity shard]`, to be sealed by the crypto layer (in place) and sent after the data
/// datagram. The returned buffers belong to the encoder and are reused by the next group.
#[derive(Debug)]
pub struct FecEncoder {
    ds: usize,
    ps: usize,
    /// Protect against wrapped sequence numbers: seqids wrap to 0 at this multiple of
    /// `ds + ps`.
    paws: u32,
    next: u32,
    headroom: usize,
    /// Data shards collected for the current group (from the size field on).
    data: Vec<Vec<u8>>,
    /// Number of data shards collected.
    count: usize,
    /// Length of the longest collected data shard.
    max_len: usize,
    /// Parity shards of the last group.
    parity_shards: Vec<Vec<u8>>,
    /// Parity packets of the last group (headroom + header + shard).
    parity_packets: Vec<Vec<u8>>,
    pub(super) codec: Arc<ReedSolomon>,
}

impl FecEncoder {
    /// An encoder with `ds` data and `ps` parity shards per group, leaving `headroom`
    /// bytes in front of every packet for the crypto header (20 for kcp-go's CFB ciphers,
    /// 0 without encryption). Fails unless `ds >= 1`, `ps >= 1` and `ds + ps <= 256`.
    pub fn new(ds: usize, ps: usize, headroom: usize) -> Result<Self> {
        check_shards(ds, ps)?;
        let codec = shared_codec(ds, ps)?;
        let total = (ds + ps) as u32;
        Ok(FecEncoder {
            ds,
            ps,
            paws: u32::MAX / total * total,
            next: 0,
            headroom,
            data: (0..ds).map(|_| Vec::new()).collect(),
            count: 0,
            max_len: 0,
            parity_shards: (0..ps).map(|_| Vec::new()).collect(),
            parity_packets: (0..ps).map(|_| Vec::new()).collect(),
            codec,
        })
    }

    /// Data shards per group.
    pub fn data_shards(&self) -> usize {
        self.ds
    }

    /// Parity shards per group.
    pub fn parity_shards(&self) -> usize {
        self.ps
    }

    /// Bytes of room left in front of every packet for the crypto header.
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// The seqid the next packet (data or parity) gets.
    pub fn next_seqid(&self) -> u32 {
        self.next
    }

    /// Makes the next group start at `seqid` (for tests and golden vectors). Only allowed
    /// between groups, and `seqid` must be the start of a group below the wrap point.
    pub fn set_next_seqid(&mut self, seqid: u32) -> Result<()> {
        let total = (self.ds + self.ps) as u32;
        if self.count != 0 || seqid % total != 0 || seqid >= self.paws {
            return Err(Error::config(format!(
                "FEC seqid {seqid} is not the start of a group"
            )));
        }
        self.next = seqid;
        Ok(())
    }

    /// Fills in the FEC header of `datagram` (`[headroom | 8 bytes room | KCP bytes]`)
    /// and collects it into the current group. Returns the group's parity packets when
    /// this datagram completes it, otherwise an empty slice. Fails (and numbers nothing)
    /// if the datagram has no room for the headers or is longer than the u16 size field
    /// can describe.
    pub fn encode(&mut self, datagram: &mut [u8]) -> Result<&mut [Vec<u8>]> {
        let h = self.headroom;
        if datagram.len() < h + FEC_DATA_HEADER_SIZE {
            return Err(Error::malformed("datagram has no room for the FEC header"));
        }
        let shard_len = datagram.len() - h - FEC_HEADER_SIZE;
        let size = u16::try_from(shard_len)
            .map_err(|_| Error::malformed("datagram too long for the FEC size field"))?;

        datagram[h..h + 4].copy_from_slice(&self.next.to_le_bytes());
        datagram[h + 4..h + 6].copy_from_slice(&TYPE_DATA.to_le_bytes());
        datagram[h + 6..h + 8].copy_from_slice(&size.to_le_bytes());
        self.next = self.next.wrapping_add(1);

        let shard = &mut self.data[self.count];
        shard.clear();
        shard.extend_from_slice(&datagram[h + FEC_HEADER_SIZE..]);
        self.count += 1;
        self.max_len = self.max_len.max(shard_len);

        if self.count < self.ds {
            return Ok(&mut self.parity_packets[..0]);
        }

        // The group is complete: pad, encode, emit parity.
        let max_len = self.max_len;
        self.count = 0;
        self.max_len = 0;
        for shard in &mut self.data {
            shard.resize(max_len, 0);
        }
        for shard in &mut self.parity_shards {
            shard.clear();
            shard.resize(max_len, 0);
        }
        let encoded = self.codec.encode_sep(&self.data, &mut self.parity_shards);
        // Parity seqids are consumed whether or not encoding worked, so that the group
        // layout never shifts.
        let first_parity = self.next;
        self.advance_parity();
        encoded.map_err(|e| Error::config(format!("reed-solomon encode: {e:?}")))?;

        let mut seqid = first_parity;
        for (pkt, shard) in self.parity_packets.iter_mut().zip(&self.parity_shards) {
            pkt.clear();
            pkt.resize(h, 0);
            pkt.extend_from_slice(&seqid.to_le_bytes());
            pkt.extend_from_slice(&TYPE_PARITY.to_le_bytes());
            pkt.extend_from_slice(shard);
            seqid = (seqid + 1) % self.paws;
        }
        Ok(&mut self.parity_packets[..])
    }

    /// Consumes the `ps` parity seqids; the sequence wraps only here (the last parity
    /// seqid before the wrap point is `paws - 1`).
    fn advance_parity(&mut self) {
        for _ in 0..self.ps {
            self.next = (self.next + 1) % self.paws;
        }
    }
}

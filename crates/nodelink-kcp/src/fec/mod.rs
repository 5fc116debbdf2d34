//! kcp-go's forward error correction: Reed-Solomon over GF(2^8) across groups of
//! datagrams.
//!
//! Every outgoing datagram (data and ACK-only alike) is a *data packet* of a group and gets
//! an 8-byte header in front of its KCP bytes:
//!
//! ```text
//! | seqid u32 LE | type u16 LE (0xF1) | size u16 LE (= 2 + len(KCP)) | KCP bytes… |
//! ```
//!
//! Group = `seqid / (ds + ps)`, position = `seqid % (ds + ps)`; positions below `ds` are data
//! packets. Once `ds` data packets are collected, `ps` *parity packets*
//! (`seqid | 0xF2 | parity bytes`) are sent. The Reed-Solomon shard of a data packet is the
//! packet from its size field to the end, zero-padded to the longest data packet of the
//! group; parity packets carry their shard right after the 6-byte header. The code is
//! klauspost/reedsolomon's (Vandermonde × inverse of its top square), which the
//! `reed-solomon-erasure` crate (galois_8) reproduces byte for byte.
//!
//! * [`FecEncoder`] assigns seqids, writes the header into room the caller leaves in each
//!   datagram, and hands back parity packets when a group is full;
//! * [`FecDecoder`] keeps a bounded, ordered queue of recent packets, rebuilds lost data
//!   packets of a group from any `ds` of its `ds + ps` packets, and (like kcp-go) infers
//!   `ds`/`ps` from the traffic when they do not match its configuration;
//! * [`is_fec`] tells an FEC packet from a plain KCP datagram.
//!
//! Both sides work on datagram payloads *after* the crypto layer's header: the encoder is
//! given `headroom` bytes of room for that header in front of the FEC header, and the
//! decoder is given the decrypted bytes from the FEC header on.

use std::sync::{Arc, Mutex, Weak};

use reed_solomon_erasure::galois_8::ReedSolomon;

mod autotune;
mod decoder;
mod encoder;
#[cfg(test)]
mod tests;

pub use decoder::{Decoded, FecDecoder, FecStats};
pub use encoder::FecEncoder;

/// FEC header of a parity packet: seqid (4) and type (2).
pub const FEC_HEADER_SIZE: usize = 6;
/// FEC header of a data packet: seqid (4), type (2) and size (2). This is what FEC adds
/// to every data datagram, and what the MTU arithmetic subtracts.
pub const FEC_DATA_HEADER_SIZE: usize = 8;
/// Type field of a data packet.
pub const TYPE_DATA: u16 = 0xF1;
/// Type field of a parity packet.
pub const TYPE_PARITY: u16 = 0xF2;
/// Largest `ds + ps` (GF(2^8) has 256 elements).
pub const MAX_TOTAL_SHARDS: usize = 256;
/// Groups of packets the decoder keeps: it holds at most `RX_FEC_MULTI * (ds + ps)`
/// packets (kcp-go's `rxFECMulti`).
pub const RX_FEC_MULTI: usize = 3;
/// Largest FEC packet accepted or produced: the size field is a u16, so a data packet
/// has at most `6 + 65535` bytes.
pub const MAX_FEC_PACKET: usize = FEC_HEADER_SIZE + u16::MAX as usize;

/// Whether a (decrypted) datagram payload is an FEC packet rather than plain KCP: the u16
/// at offset 4 is 0xF1 or 0xF2. For plain KCP those bytes are `cmd | frg << 8` with cmd
/// 81..=84, so they never collide. (Upstream kcp-go's out-of-band type 0xF3 is not
/// handled: kcp-go 5.6.1 does not know it either, and KCP input rejects it.)
pub fn is_fec(datagram_payload: &[u8]) -> bool {
    match datagram_payload.get(4..6) {
        Some(t) => {
            let t = u16::from_le_bytes([t[0], t[1]]);
            t == TYPE_DATA || t == TYPE_PARITY
        }
        None => false,
    }
}

/// Checks `ds`/`ps` as kcp-go and the Reed-Solomon code need them.
fn check_shards(ds: usize, ps: usize) -> crate::Result<()> {
    if ds == 0 || ps == 0 {
        return Err(crate::Error::config(format!(
            "FEC needs at least one data and one parity shard (got {ds}/{ps})"
        )));
    }
    if ds + ps > MAX_TOTAL_SHARDS {
        return Err(crate::Error::config(format!(
            "FEC data + parity shards must be at most {MAX_TOTAL_SHARDS} (got {ds}+{ps})"
        )));
    }
    Ok(())
}

/// The Reed-Solomon code for `ds`/`ps`, shared by every encoder and decoder of the process
/// that uses it while any of them lives.
///
/// A code is about 9 KiB (its cache of decoding matrices is sized up front): twice that
/// per session, when each built its own, was a good part of what a session opened by one
/// forged datagram cost a listener. Encoding takes no lock; rebuilding a group takes the
/// code's cache lock briefly. Codes no session uses any more are dropped (a peer's traffic
/// can make an auto-tuning decoder switch to any of thousands of settings).
fn shared_codec(ds: usize, ps: usize) -> crate::Result<Arc<ReedSolomon>> {
    /// Codes by (data, parity) shard counts.
    type Codes = Vec<((usize, usize), Weak<ReedSolomon>)>;
    static CODES: Mutex<Codes> = Mutex::new(Vec::new());
    check_shards(ds, ps)?;
    let find = |codes: &Codes| {
        codes
            .iter()
            .find(|(key, _)| *key == (ds, ps))
            .and_then(|(_, code)| code.upgrade())
    };
    if let Some(code) = find(&CODES.lock().unwrap_or_else(|e| e.into_inner())) {
        return Ok(code);
    }
    // Built outside the lock (a large code takes a while), then shared unless another
    // thread got there first.
    let built = Arc::new(
        ReedSolomon::new(ds, ps)
            .map_err(|e| crate::Error::config(format!("reed-solomon {ds}/{ps}: {e:?}")))?,
    );
    let mut codes = CODES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(code) = find(&codes) {
        return Ok(code);
    }
    codes.retain(|(key, code)| *key != (ds, ps) && code.strong_count() > 0);
    codes.push(((ds, ps), Arc::downgrade(&built)));
    Ok(built)
}

/// `a - b` on the wrapping u32 seqid circle, as kcp-go's `_itimediff`.
fn seq_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

//! One session's datagram pipeline: crypto + FEC + KCP, sans IO.
//!
//! A kcp-go datagram is built in layers (docs/protocols/kcp.md, section 4). Outgoing, innermost first:
//!
//! ```text
//! KCP segments                              (core::Kcp, mss = mtu - 24 - headroom)
//! [seqid | 0xF1 | size] KCP segments        (fec::FecEncoder, 8 bytes, if FEC is on)
//! nonce | crc32 | [FEC header] KCP…          (crypt::DatagramCrypto::seal, whole thing encrypted)
//! ```
//!
//! The KCP state machine reserves room for the outer headers at the front of every datagram
//! it emits (its *headroom* = crypto header + 8 if FEC), and the MTU it packs to is the UDP
//! payload limit minus the crypto trailer (the 16-byte GCM tag), so a sealed datagram never
//! exceeds [`Config::mtu`]. With kcptun's defaults (aes, FEC 10/3, MTU 1350) that
//! leaves `1350 - 24 - 20 - 8 = 1298` bytes of payload per segment.
//!
//! Incoming, [`Pipeline::input`] undoes the layers: open (decrypt + CRC), then, if the
//! payload is an FEC packet ([`crate::fec::is_fec`]), run the FEC decoder and feed the data
//! packet's own KCP bytes to KCP as *regular* and every rebuilt packet as *not regular*
//! (no RTT sample, no window update); plain KCP goes straight in. A session without FEC
//! still decodes the peer's FEC ([`FecDecoder::auto`]), as kcp-go does.
//!
//! [`Pipeline::transmit`] drives KCP's timers (`update`) and runs every datagram KCP emits
//! through FEC and sealing, parity packets included, reusing one scratch buffer: nothing
//! is allocated per datagram in steady state.
//!
//! Nothing here touches a socket or a clock: times are milliseconds on any wrapping `u32`
//! clock, the same for every call. [`crate::session`] drives pipelines over tokio UDP.
//!
//! ```
//! use nodelink_kcp::pipeline::{Pipeline, Config};
//!
//! let cfg = Config::default(); // kcptun defaults: aes, FEC 10/3, fast, MTU 1350
//! let mut a = Pipeline::new(7, &cfg).unwrap();
//! let mut b = Pipeline::new(7, &cfg).unwrap();
//! a.send(b"hello").unwrap();
//! let mut wire = Vec::new();
//! a.transmit(0, |d| wire.push(d.to_vec()));
//! for mut d in wire {
//!     assert!(d.len() <= 1350);
//!     b.input(&mut d, 1).unwrap();
//! }
//! let mut buf = [0u8; 16];
//! assert_eq!(b.recv(&mut buf).unwrap(), Some(5));
//! assert_eq!(&buf[..5], b"hello");
//! ```

use std::sync::Arc;

pub use crate::config::{AckTiming, Config, Mode, DEFAULT_KEY, MAX_SESSION_MTU};
pub use crate::stats::Stats;
pub(crate) use crate::stats::{AtomicStats, Own};

use crate::core::{Kcp, HEADER_LEN};
use crate::crypt::DatagramCrypto;
use crate::fec::{is_fec, FecDecoder, FecEncoder};
use crate::{Error, ErrorKind, Result};

/// One session's crypto + FEC + KCP, sans IO. See the [module docs](self).
#[derive(Debug)]
pub struct Pipeline {
    kcp: Kcp,
    crypto: Arc<DatagramCrypto>,
    encoder: Option<FecEncoder>,
    decoder: FecDecoder,
    scratch: Vec<u8>,
    own: Own,
}

impl Pipeline {
    /// A pipeline for conversation `conv` configured by `cfg` (derives the key: see
    /// [`with_crypto`](Self::with_crypto) to share one cipher between sessions).
    pub fn new(conv: u32, cfg: &Config) -> Result<Pipeline> {
        cfg.validate()?;
        Self::with_crypto(conv, cfg, Arc::new(cfg.crypto()?))
    }

    /// Like [`new`](Self::new) with an already keyed cipher (must be `cfg.crypt`'s kind).
    pub fn with_crypto(conv: u32, cfg: &Config, crypto: Arc<DatagramCrypto>) -> Result<Pipeline> {
        cfg.validate()?;
        if crypto.kind() != cfg.crypt {
            return Err(Error::config(format!(
                "cipher {} given for a session configured with {}",
                crypto.kind(),
                cfg.crypt
            )));
        }
        let (mtu, headroom) = cfg.kcp_mtu_and_headroom();
        let mut kcp = Kcp::new(conv);
        kcp.set_mtu(mtu)?;
        kcp.set_headroom(headroom)?;
        let (nd, iv, rs, nc) = cfg.nodelay_params();
        kcp.set_nodelay(nd, iv, rs, nc);
        kcp.set_window(cfg.sndwnd, cfg.rcvwnd);
        kcp.set_stream(cfg.stream);
        kcp.set_ack_nodelay(cfg.acks == AckTiming::Prompt);
        kcp.set_dead_link(cfg.dead_link);
        let encoder = if cfg.fec_enabled() {
            Some(FecEncoder::new(
                cfg.data_shards,
                cfg.parity_shards,
                crypto.header_len(),
            )?)
        } else {
            None
        };
        let decoder = if cfg.fec_enabled() {
            FecDecoder::new(cfg.data_shards, cfg.parity_shards)?
        } else {
            FecDecoder::auto()
        };
        Ok(Pipeline {
            kcp,
            crypto,
            encoder,
            decoder,
            scratch: Vec::with_capacity(cfg.mtu + 64),
            own: Own::default(),
        })
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.kcp.conv()
    }

    /// The KCP state machine (read-only, for inspection).
    pub fn kcp(&self) -> &Kcp {
        &self.kcp
    }

    /// The cipher.
    pub fn crypto(&self) -> &Arc<DatagramCrypto> {
        &self.crypto
    }

    /// Opens, FEC-decodes and feeds one received UDP datagram (decrypted in place).
    ///
    /// Errors (bad checksum, malformed, wrong conv) are counted and returned; the session
    /// stays usable. Never panics.
    pub fn input(&mut self, datagram: &mut [u8], now_ms: u32) -> Result<()> {
        self.own.in_pkts += 1;
        self.own.in_bytes += datagram.len() as u64;
        let crypto = Arc::clone(&self.crypto);
        let payload = match crypto.open(datagram) {
            Ok(p) => p,
            Err(e) => {
                match e.kind() {
                    ErrorKind::Checksum => self.own.in_csum_errors += 1,
                    _ => self.own.in_errs += 1,
                }
                return Err(e);
            }
        };
        self.input_payload(payload, now_ms)
    }

    /// Feeds a datagram payload already opened by the crypto layer (what a listener's
    /// demultiplexer does after decrypting to find the conv). Does not count `InPkts`;
    /// see [`count_received`](Self::count_received).
    pub fn input_payload(&mut self, payload: &[u8], now_ms: u32) -> Result<()> {
        if !is_fec(payload) {
            return self.kcp_input(payload, now_ms, true);
        }
        let decoded = match self.decoder.decode(payload) {
            Ok(d) => d,
            Err(e) => {
                self.own.in_errs += 1;
                return Err(e);
            }
        };
        let mut result = Ok(());
        if let Some(regular) = decoded.regular {
            if let Err(e) = self.kcp_input(regular, now_ms, true) {
                result = Err(e);
            }
        }
        for rec in decoded.recovered {
            if rec.len() >= HEADER_LEN {
                if let Err(e) = self.kcp_input(&rec, now_ms, false) {
                    result = Err(e);
                }
            } else if !rec.is_empty() {
                self.own.fec_errs += 1;
            }
            self.decoder.recycle(rec);
        }
        result
    }

    /// Counts a datagram received and opened elsewhere (listener demux).
    pub fn count_received(&mut self, len: usize) {
        self.own.in_pkts += 1;
        self.own.in_bytes += len as u64;
    }

    fn kcp_input(&mut self, kcp_bytes: &[u8], now_ms: u32, regular: bool) -> Result<()> {
        if kcp_bytes.is_empty() {
            // An FEC data packet of an empty datagram: nothing for KCP.
            return Ok(());
        }
        self.kcp.input(kcp_bytes, now_ms, regular).inspect_err(|_| {
            self.own.kcp_in_errors += 1;
        })
    }

    /// Runs KCP's timers (`update`) and emits every datagram due, sealed (FEC data and
    /// parity alike), to `out`. Call it at [`check`](Self::check)'s deadline and after
    /// `input`/`recv`.
    pub fn transmit(&mut self, now_ms: u32, mut out: impl FnMut(&[u8])) {
        let Pipeline {
            kcp,
            crypto,
            encoder,
            scratch,
            own,
            ..
        } = self;
        kcp.update(now_ms, |d| {
            emit(crypto, encoder.as_mut(), scratch, own, d, &mut out)
        });
    }

    /// Flushes KCP now (new data goes out without waiting for the interval: kcp-go's
    /// behaviour without write delay), emitting sealed datagrams to `out`.
    pub fn flush(&mut self, now_ms: u32, mut out: impl FnMut(&[u8])) {
        let Pipeline {
            kcp,
            crypto,
            encoder,
            scratch,
            own,
            ..
        } = self;
        kcp.flush(now_ms, |d| {
            emit(crypto, encoder.as_mut(), scratch, own, d, &mut out)
        });
    }

    /// Queues application data (see [`Kcp::send`]).
    pub fn send(&mut self, data: &[u8]) -> Result<usize> {
        let n = self.kcp.send(data)?;
        self.own.bytes_sent += n as u64;
        Ok(n)
    }

    /// Receives application data (see [`Kcp::recv`]).
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        let r = self.kcp.recv(buf)?;
        if let Some(n) = r {
            self.own.bytes_received += n as u64;
        }
        Ok(r)
    }

    /// Size of the next `recv` (see [`Kcp::peek_size`]).
    pub fn peek_size(&self) -> Option<usize> {
        self.kcp.peek_size()
    }

    /// When `transmit` next has work (see [`Kcp::check`]).
    pub fn check(&self, now_ms: u32) -> u32 {
        self.kcp.check(now_ms)
    }

    /// KCP's dead-link state (a segment sent `dead_link` times without an ACK).
    pub fn is_dead(&self) -> bool {
        self.kcp.is_dead()
    }

    /// Segments more the writer may queue (see [`Kcp::send_capacity`]).
    pub fn send_capacity(&self) -> usize {
        self.kcp.send_capacity()
    }

    /// Segments queued or unacknowledged.
    pub fn wait_snd(&self) -> usize {
        self.kcp.wait_snd()
    }

    /// Largest segment payload.
    pub fn mss(&self) -> usize {
        self.kcp.mss()
    }

    /// About how many bytes of received data wait to be read (whole segments counted).
    pub fn unread_bytes(&self) -> usize {
        self.kcp.unread_segments() * self.kcp.mss()
    }

    /// About how many bytes this session holds both ways: received and unread, and
    /// queued or in flight unacknowledged (whole segments counted).
    pub fn held_bytes(&self) -> usize {
        (self.kcp.unread_segments() + self.kcp.wait_snd()) * self.kcp.mss()
    }

    /// This session's counters (connection-level ones, such as `CurrEstab`, are zero).
    pub fn stats(&self) -> Stats {
        let k = self.kcp.stats();
        let f = self.decoder.stats();
        let o = &self.own;
        Stats {
            bytes_received: o.bytes_received,
            bytes_sent: o.bytes_sent,
            in_errs: o.in_errs,
            in_csum_errors: o.in_csum_errors,
            kcp_in_errors: o.kcp_in_errors,
            in_pkts: o.in_pkts,
            out_pkts: o.out_pkts,
            in_segs: k.in_segs,
            out_segs: k.out_segs,
            in_bytes: o.in_bytes,
            out_bytes: o.out_bytes,
            retrans_segs: k.retrans_segs,
            fast_retrans_segs: k.fast_retrans_segs,
            early_retrans_segs: k.early_retrans_segs,
            lost_segs: k.lost_segs,
            repeat_segs: k.repeat_segs,
            fec_parity_shards: f.parity_shards,
            fec_errs: f.errs + o.fec_errs,
            fec_recovered: f.recovered,
            fec_short_shards: f.short_shards,
            ..Stats::default()
        }
    }
}

/// FEC-encodes (if on), seals and emits one KCP datagram, then any parity packets.
fn emit(
    crypto: &DatagramCrypto,
    encoder: Option<&mut FecEncoder>,
    scratch: &mut Vec<u8>,
    own: &mut Own,
    dgram: &mut [u8],
    out: &mut impl FnMut(&[u8]),
) {
    let mut seal_out = |bytes: &[u8], scratch: &mut Vec<u8>, own: &mut Own| {
        scratch.clear();
        scratch.extend_from_slice(bytes);
        crypto.seal(scratch);
        own.out_pkts += 1;
        own.out_bytes += scratch.len() as u64;
        out(scratch);
    };
    match encoder {
        None => seal_out(dgram, scratch, own),
        Some(enc) => match enc.encode(dgram) {
            Ok(parity) => {
                // The data packet first (its header was just written), then parity.
                // `parity` borrows the encoder, not `dgram`.
                seal_out(dgram, scratch, own);
                for p in parity.iter() {
                    seal_out(p, scratch, own);
                }
            }
            Err(_) => own.fec_errs += 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypt::CipherKind;

    fn pair(cfg: &Config) -> (Pipeline, Pipeline) {
        (
            Pipeline::new(9, cfg).unwrap(),
            Pipeline::new(9, cfg).unwrap(),
        )
    }

    fn shuttle(a: &mut Pipeline, b: &mut Pipeline, now: u32, drop_every: usize) -> usize {
        let mut wire = Vec::new();
        a.transmit(now, |d| wire.push(d.to_vec()));
        let n = wire.len();
        for (i, mut d) in wire.into_iter().enumerate() {
            if drop_every > 0 && i % drop_every == 1 {
                continue;
            }
            let _ = b.input(&mut d, now);
        }
        n
    }

    /// A receiver with prompt ACKs answers a data datagram in the same step; with
    /// kcp-go's interval timing it stays silent until its next flush tick.
    #[test]
    fn prompt_acks_leave_with_the_batch_interval_acks_wait_for_the_tick() {
        for (timing, acks_at_once) in [(AckTiming::Prompt, true), (AckTiming::Interval, false)] {
            let cfg = Config::default()
                .with_fec(0, 0)
                .with_crypt(CipherKind::Null)
                .with_acks(timing);
            let (mut a, mut b) = pair(&cfg);
            // Both have run their first update at 0: the next ticks are at the interval.
            a.transmit(0, |_| {});
            b.transmit(0, |_| {});
            a.send(b"hello").unwrap();
            let mut wire = Vec::new();
            a.flush(1, |d| wire.push(d.to_vec()));
            assert_eq!(wire.len(), 1, "{timing:?}");
            b.input(&mut wire[0], 2).unwrap();
            let mut answer = 0;
            b.transmit(2, |_| answer += 1);
            assert_eq!(answer > 0, acks_at_once, "{timing:?}");
            // Either way the ACK has left by the next tick.
            let tick = b.check(2);
            b.transmit(tick, |_| answer += 1);
            assert!(answer > 0, "{timing:?}");
        }
    }

    #[test]
    fn manual_nodelay_overrides_the_mode() {
        let cfg = Config::default().with_nodelay(true, 15, 3, true);
        let pipe = Pipeline::new(7, &cfg).unwrap();
        assert_eq!(pipe.kcp().interval(), 15);
        let preset = Pipeline::new(7, &Config::default().with_mode(Mode::Fast3)).unwrap();
        assert_eq!(preset.kcp().interval(), 10);
    }

    #[test]
    fn mss_matches_spec() {
        assert_eq!(Config::default().mss(), 1298);
        let gcm = Config::default().with_crypt(CipherKind::Aes128Gcm);
        assert_eq!(gcm.mss(), 1350 - 24 - 12 - 16 - 8);
        let null = Config::default()
            .with_crypt(CipherKind::Null)
            .with_fec(0, 0);
        assert_eq!(null.mss(), 1350 - 24);
    }

    #[test]
    fn round_trip_every_cipher_with_loss() {
        for kind in CipherKind::ALL {
            for fec in [(0, 0), (10, 3)] {
                let cfg = Config::default().with_crypt(kind).with_fec(fec.0, fec.1);
                let (mut a, mut b) = pair(&cfg);
                let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
                a.send(&data).unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; 65536];
                let mut now = 0;
                while got.len() < data.len() && now < 60_000 {
                    shuttle(&mut a, &mut b, now, 7);
                    shuttle(&mut b, &mut a, now, 0);
                    while let Some(n) = b.recv(&mut buf).unwrap() {
                        got.extend_from_slice(&buf[..n]);
                    }
                    now += 10;
                }
                assert_eq!(got, data, "{kind} {fec:?}");
                assert_eq!(b.stats().in_csum_errors, 0);
                if fec.0 > 0 {
                    assert!(b.stats().fec_recovered > 0, "{kind}");
                }
            }
        }
    }

    #[test]
    fn sealed_datagrams_respect_mtu() {
        for kind in CipherKind::ALL {
            let cfg = Config::default().with_crypt(kind);
            let mut a = Pipeline::new(1, &cfg).unwrap();
            a.send(&vec![1u8; 50_000]).unwrap();
            let mut max = 0;
            a.transmit(0, |d| max = max.max(d.len()));
            assert!(max <= cfg.mtu && max > cfg.mtu - 40, "{kind}: {max}");
        }
    }

    #[test]
    fn wrong_key_counts_checksum_errors() {
        let cfg = Config::default();
        let mut a = Pipeline::new(1, &cfg).unwrap();
        let mut b = Pipeline::new(1, &cfg.clone().with_key("other")).unwrap();
        a.send(b"x").unwrap();
        let mut wire = Vec::new();
        a.transmit(0, |d| wire.push(d.to_vec()));
        for mut d in wire {
            assert!(b.input(&mut d, 0).is_err());
        }
        assert!(b.stats().in_csum_errors > 0);
        let mut garbage = [0u8; 3];
        assert!(b.input(&mut garbage, 0).is_err());
        assert_eq!(b.stats().in_errs, 1);
    }

    #[test]
    fn no_fec_session_decodes_peer_fec() {
        let fec = Config::default();
        let plain = fec.clone().with_fec(0, 0);
        let mut a = Pipeline::new(3, &fec).unwrap();
        let mut b = Pipeline::new(3, &plain).unwrap();
        a.send(b"hello").unwrap();
        shuttle(&mut a, &mut b, 0, 0);
        let mut buf = [0u8; 8];
        assert_eq!(b.recv(&mut buf).unwrap(), Some(5));
    }
}

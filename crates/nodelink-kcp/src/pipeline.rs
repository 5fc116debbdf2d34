//! One session's datagram pipeline: crypto + FEC + KCP, sans IO.
//!
//! A kcp-go datagram is built in layers (spec section 4). Outgoing, innermost first:
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
//! exceeds [`SessionConfig::mtu`]. With kcptun's defaults (aes, FEC 10/3, MTU 1350) that
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
//! use nodelink_kcp::pipeline::{Pipeline, SessionConfig};
//!
//! let cfg = SessionConfig::default(); // kcptun defaults: aes, FEC 10/3, fast, MTU 1350
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

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::core::{Kcp, DEFAULT_DEAD_LINK, HEADER_LEN};
use crate::crypt::{derive_key, CipherKind, DatagramCrypto};
use crate::fec::{is_fec, FecDecoder, FecEncoder, FEC_DATA_HEADER_SIZE};
use crate::{Error, Result};

/// kcptun's default passphrase (sic).
pub const DEFAULT_KEY: &str = "it's a secrect";
/// Largest UDP payload kcptun accepts as MTU.
pub const MAX_SESSION_MTU: usize = 1500;

/// kcptun's `-mode` presets: `(nodelay, interval, resend, nc)` for [`Kcp::set_nodelay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `normal`: (0, 40, 2, 1).
    Normal,
    /// `fast` (kcptun's default): (0, 30, 2, 1).
    #[default]
    Fast,
    /// `fast2`: (1, 20, 2, 1).
    Fast2,
    /// `fast3`: (1, 10, 2, 1).
    Fast3,
}

impl Mode {
    /// `(nodelay, interval_ms, resend, no_congestion)` of this preset.
    pub const fn params(self) -> (bool, u32, u32, bool) {
        match self {
            Mode::Normal => (false, 40, 2, true),
            Mode::Fast => (false, 30, 2, true),
            Mode::Fast2 => (true, 20, 2, true),
            Mode::Fast3 => (true, 10, 2, true),
        }
    }

    /// kcptun's name of the preset.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Fast => "fast",
            Mode::Fast2 => "fast2",
            Mode::Fast3 => "fast3",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "normal" => Ok(Mode::Normal),
            "fast" => Ok(Mode::Fast),
            "fast2" => Ok(Mode::Fast2),
            "fast3" => Ok(Mode::Fast3),
            _ => Err(Error::Config(format!(
                "unknown mode {s:?} (normal, fast, fast2, fast3)"
            ))),
        }
    }
}

/// Everything a session needs to talk to a kcp-go / kcptun peer. Both ends must agree on
/// cipher, key, stream vs message mode, and (for efficiency, not correctness) FEC.
///
/// [`Default`] is kcptun's client defaults (kcptun `client/main.go`): `-crypt aes`,
/// `-key "it's a secrect"`, `-datashard 10 -parityshard 3`, `-mode fast`, `-mtu 1350`,
/// `-sndwnd 128 -rcvwnd 512` (kcptun's *server* defaults to 1024/1024), `-acknodelay`
/// off, stream mode (kcptun runs smux over a KCP stream). The settings kcptun does not
/// have are this crate's: dead link after 20 transmissions (kcp-go), dead after 30 s
/// without ACK progress, no read/write timeouts, 5 s linger on close, accept backlog 128.
///
/// Build variations with the `with_*` methods:
///
/// ```
/// use nodelink_kcp::pipeline::{Mode, SessionConfig};
/// let cfg = SessionConfig::default().with_fec(0, 0).with_mode(Mode::Fast3).with_mtu(1400);
/// assert_eq!(cfg.data_shards, 0);
/// ```
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Cipher (kcptun `-crypt`).
    pub crypt: CipherKind,
    /// Passphrase (kcptun `-key`), stretched with PBKDF2 as kcptun does.
    pub key: String,
    /// FEC data shards (0 with `parity_shards` 0 = no FEC).
    pub data_shards: usize,
    /// FEC parity shards.
    pub parity_shards: usize,
    /// Nodelay preset.
    pub mode: Mode,
    /// Largest UDP payload sent, all headers included.
    pub mtu: usize,
    /// Send window (segments).
    pub sndwnd: u16,
    /// Receive window (segments).
    pub rcvwnd: u16,
    /// Stream mode (true) or message mode.
    pub stream: bool,
    /// Send ACKs at once instead of at the next interval.
    pub ack_nodelay: bool,
    /// Transmissions of one segment after which the peer counts as dead.
    pub dead_link: u32,
    /// The peer counts as dead after this long without any ACK progress while data is
    /// waiting to be acknowledged.
    pub dead_timeout: Duration,
    /// Fail a read that waits longer than this (`None`: wait forever).
    pub read_timeout: Option<Duration>,
    /// Fail a write that waits longer than this for send capacity (`None`: forever).
    pub write_timeout: Option<Duration>,
    /// How long a closed or dropped session keeps sending what is queued.
    pub linger: Duration,
    /// Listener: sessions created but not yet accepted; new sessions are refused while full.
    pub backlog: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            crypt: CipherKind::Aes,
            key: DEFAULT_KEY.to_owned(),
            data_shards: 10,
            parity_shards: 3,
            mode: Mode::Fast,
            mtu: 1350,
            sndwnd: 128,
            rcvwnd: 512,
            stream: true,
            ack_nodelay: false,
            dead_link: DEFAULT_DEAD_LINK,
            dead_timeout: Duration::from_secs(30),
            read_timeout: None,
            write_timeout: None,
            linger: Duration::from_secs(5),
            backlog: 128,
        }
    }
}

impl SessionConfig {
    /// Sets the cipher.
    pub fn with_crypt(mut self, crypt: CipherKind) -> Self {
        self.crypt = crypt;
        self
    }
    /// Sets the passphrase.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }
    /// Sets FEC shards; `(0, 0)` disables FEC.
    pub fn with_fec(mut self, data_shards: usize, parity_shards: usize) -> Self {
        self.data_shards = data_shards;
        self.parity_shards = parity_shards;
        self
    }
    /// Sets the nodelay preset.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Sets the MTU (UDP payload limit).
    pub fn with_mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }
    /// Sets the send and receive windows (segments).
    pub fn with_window(mut self, sndwnd: u16, rcvwnd: u16) -> Self {
        self.sndwnd = sndwnd;
        self.rcvwnd = rcvwnd;
        self
    }
    /// Stream (true) or message mode.
    pub fn with_stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }
    /// ACK-no-delay.
    pub fn with_ack_nodelay(mut self, on: bool) -> Self {
        self.ack_nodelay = on;
        self
    }
    /// Dead link after this many transmissions of one segment.
    pub fn with_dead_link(mut self, transmissions: u32) -> Self {
        self.dead_link = transmissions;
        self
    }
    /// Dead after this long without ACK progress.
    pub fn with_dead_timeout(mut self, timeout: Duration) -> Self {
        self.dead_timeout = timeout;
        self
    }
    /// Read timeout.
    pub fn with_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.read_timeout = timeout;
        self
    }
    /// Write timeout.
    pub fn with_write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.write_timeout = timeout;
        self
    }
    /// Linger on close.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }
    /// Listener accept backlog.
    pub fn with_backlog(mut self, backlog: usize) -> Self {
        self.backlog = backlog;
        self
    }

    /// Whether FEC encoding is on (both shard counts non-zero).
    pub fn fec_enabled(&self) -> bool {
        self.data_shards > 0 && self.parity_shards > 0
    }

    /// Derives the key and builds the cipher (PBKDF2 with 4096 rounds: build it once and
    /// share it between sessions, see [`Pipeline::with_crypto`]).
    pub fn crypto(&self) -> Result<DatagramCrypto> {
        DatagramCrypto::new(self.crypt, &derive_key(&self.key))
    }

    /// KCP's MTU (UDP MTU minus the crypto trailer) and headroom (crypto header + FEC
    /// header), per spec section 4.
    pub fn kcp_mtu_and_headroom(&self) -> (usize, usize) {
        let fec = if self.fec_enabled() {
            FEC_DATA_HEADER_SIZE
        } else {
            0
        };
        (
            self.mtu.saturating_sub(self.crypt.trailer_len()),
            self.crypt.header_len() + fec,
        )
    }

    /// Largest segment payload: `mtu - 24 - header` (1298 with kcptun's defaults).
    pub fn mss(&self) -> usize {
        let (mtu, headroom) = self.kcp_mtu_and_headroom();
        mtu.saturating_sub(HEADER_LEN + headroom)
    }

    fn validate(&self) -> Result<()> {
        if self.mtu > MAX_SESSION_MTU {
            return Err(Error::Config(format!(
                "MTU {} above {MAX_SESSION_MTU}",
                self.mtu
            )));
        }
        if (self.data_shards == 0) != (self.parity_shards == 0) {
            return Err(Error::Config(format!(
                "FEC needs both shard counts or neither (got {}/{})",
                self.data_shards, self.parity_shards
            )));
        }
        if self.sndwnd == 0 || self.rcvwnd == 0 {
            return Err(Error::Config("windows must be at least 1".into()));
        }
        Ok(())
    }
}

macro_rules! stats_struct {
    ($( $(#[$doc:meta])* $field:ident => $name:literal, )*) => {
        /// Counters named after kcp-go's SNMP fields (spec section 7), merged from the
        /// crypto, FEC and KCP layers. Per session ([`Pipeline::stats`]) or process-wide
        /// ([`crate::session::snmp`]).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Stats {
            $( $(#[$doc])* pub $field: u64, )*
        }

        impl Stats {
            /// `(kcp-go name, value)` of every counter, in kcp-go's order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$( ($name, self.$field), )*]
            }

            /// Field-wise `self - earlier` (saturating).
            pub fn delta(&self, earlier: &Stats) -> Stats {
                Stats { $( $field: self.$field.saturating_sub(earlier.$field), )* }
            }

            /// Field-wise sum.
            pub fn add(&mut self, other: &Stats) {
                $( self.$field += other.$field; )*
            }
        }

        /// Process-wide atomic counters (kcp-go `DefaultSnmp`).
        #[derive(Debug, Default)]
        pub(crate) struct AtomicStats {
            $( pub(crate) $field: std::sync::atomic::AtomicU64, )*
        }

        impl AtomicStats {
            pub(crate) const fn new() -> Self {
                AtomicStats { $( $field: std::sync::atomic::AtomicU64::new(0), )* }
            }
            pub(crate) fn add(&self, d: &Stats) {
                use std::sync::atomic::Ordering::Relaxed;
                $( if d.$field != 0 { self.$field.fetch_add(d.$field, Relaxed); } )*
            }
            pub(crate) fn snapshot(&self) -> Stats {
                use std::sync::atomic::Ordering::Relaxed;
                Stats { $( $field: self.$field.load(Relaxed), )* }
            }
        }
    };
}

stats_struct! {
    /// Bytes handed to the application by reads.
    bytes_received => "BytesReceived",
    /// Bytes accepted from the application by writes.
    bytes_sent => "BytesSent",
    /// Most sessions open at once.
    max_conn => "MaxConn",
    /// Client sessions opened.
    active_opens => "ActiveOpens",
    /// Listener sessions opened.
    passive_opens => "PassiveOpens",
    /// Sessions open now.
    curr_estab => "CurrEstab",
    /// Datagrams dropped as malformed (too short, bad FEC) or refused.
    in_errs => "InErrs",
    /// Datagrams failing the CRC / authentication (wrong key, corruption).
    in_csum_errors => "InCsumErrors",
    /// Datagrams KCP rejected (wrong conv, bad segment).
    kcp_in_errors => "KCPInErrors",
    /// UDP datagrams received.
    in_pkts => "InPkts",
    /// UDP datagrams sent.
    out_pkts => "OutPkts",
    /// KCP segments received.
    in_segs => "InSegs",
    /// KCP segments sent.
    out_segs => "OutSegs",
    /// UDP payload bytes received.
    in_bytes => "InBytes",
    /// UDP payload bytes sent.
    out_bytes => "OutBytes",
    /// Retransmitted segments.
    retrans_segs => "RetransSegs",
    /// Fast retransmissions.
    fast_retrans_segs => "FastRetransSegs",
    /// Early retransmissions.
    early_retrans_segs => "EarlyRetransSegs",
    /// Retransmissions after an RTO.
    lost_segs => "LostSegs",
    /// Duplicate data segments received.
    repeat_segs => "RepeatSegs",
    /// FEC parity packets received.
    fec_parity_shards => "FECParityShards",
    /// FEC errors.
    fec_errs => "FECErrs",
    /// Data packets rebuilt by FEC.
    fec_recovered => "FECRecovered",
    /// Data packets lost to FEC (group incomplete).
    fec_short_shards => "FECShortShards",
}

/// Counters kept by the pipeline itself (the rest come from KCP and FEC).
#[derive(Debug, Default, Clone, Copy)]
struct Own {
    in_errs: u64,
    in_csum_errors: u64,
    kcp_in_errors: u64,
    in_pkts: u64,
    out_pkts: u64,
    in_bytes: u64,
    out_bytes: u64,
    bytes_sent: u64,
    bytes_received: u64,
    fec_errs: u64,
}

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
    pub fn new(conv: u32, cfg: &SessionConfig) -> Result<Pipeline> {
        cfg.validate()?;
        Self::with_crypto(conv, cfg, Arc::new(cfg.crypto()?))
    }

    /// Like [`new`](Self::new) with an already keyed cipher (must be `cfg.crypt`'s kind).
    pub fn with_crypto(
        conv: u32,
        cfg: &SessionConfig,
        crypto: Arc<DatagramCrypto>,
    ) -> Result<Pipeline> {
        cfg.validate()?;
        if crypto.kind() != cfg.crypt {
            return Err(Error::Config(format!(
                "cipher {} given for a session configured with {}",
                crypto.kind(),
                cfg.crypt
            )));
        }
        let (mtu, headroom) = cfg.kcp_mtu_and_headroom();
        let mut kcp = Kcp::new(conv);
        kcp.set_mtu(mtu)?;
        kcp.set_headroom(headroom)?;
        let (nd, iv, rs, nc) = cfg.mode.params();
        kcp.set_nodelay(nd, iv, rs, nc);
        kcp.set_window(cfg.sndwnd, cfg.rcvwnd);
        kcp.set_stream(cfg.stream);
        kcp.set_ack_nodelay(cfg.ack_nodelay);
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
                match e {
                    Error::Checksum => self.own.in_csum_errors += 1,
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

    fn pair(cfg: &SessionConfig) -> (Pipeline, Pipeline) {
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

    #[test]
    fn mss_matches_spec() {
        assert_eq!(SessionConfig::default().mss(), 1298);
        let gcm = SessionConfig::default().with_crypt(CipherKind::Aes128Gcm);
        assert_eq!(gcm.mss(), 1350 - 24 - 12 - 16 - 8);
        let null = SessionConfig::default()
            .with_crypt(CipherKind::Null)
            .with_fec(0, 0);
        assert_eq!(null.mss(), 1350 - 24);
    }

    #[test]
    fn round_trip_every_cipher_with_loss() {
        for kind in CipherKind::ALL {
            for fec in [(0, 0), (10, 3)] {
                let cfg = SessionConfig::default()
                    .with_crypt(kind)
                    .with_fec(fec.0, fec.1);
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
            let cfg = SessionConfig::default().with_crypt(kind);
            let mut a = Pipeline::new(1, &cfg).unwrap();
            a.send(&vec![1u8; 50_000]).unwrap();
            let mut max = 0;
            a.transmit(0, |d| max = max.max(d.len()));
            assert!(max <= cfg.mtu && max > cfg.mtu - 40, "{kind}: {max}");
        }
    }

    #[test]
    fn wrong_key_counts_checksum_errors() {
        let cfg = SessionConfig::default();
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
        let fec = SessionConfig::default();
        let plain = fec.clone().with_fec(0, 0);
        let mut a = Pipeline::new(3, &fec).unwrap();
        let mut b = Pipeline::new(3, &plain).unwrap();
        a.send(b"hello").unwrap();
        shuttle(&mut a, &mut b, 0, 0);
        let mut buf = [0u8; 8];
        assert_eq!(b.recv(&mut buf).unwrap(), Some(5));
    }
}

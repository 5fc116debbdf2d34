//! Settings of a KCP session: kcptun's modes, flags and defaults.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::core::{DEFAULT_DEAD_LINK, HEADER_LEN};
use crate::crypt::{derive_key, CipherKind, DatagramCrypto};
use crate::fec::FEC_DATA_HEADER_SIZE;
use crate::{Error, Result};

/// kcptun's default passphrase (sic).
pub const DEFAULT_KEY: &str = "it's a secrect";
/// When the ACKs for received data leave. Only timing: the ACK segments are kcp-go's either
/// way, so a kcp-go or kcptun peer sees nothing new (docs/protocols/kcp.md, "When
/// segments leave").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckTiming {
    /// Right after the batch of datagrams that carried the data was processed (nodelink's
    /// default; kcp-go's `acknodelay`): the sender learns at once that its window opened,
    /// so throughput follows the round trip instead of the flush interval.
    #[default]
    Prompt,
    /// With the next `interval` flush, as kcp-go without `acknodelay`: fewer ACK
    /// datagrams, but a sender can move at most one window per interval.
    Interval,
}

/// Largest UDP payload kcptun accepts as MTU.
pub const MAX_SESSION_MTU: usize = 1500;

/// kcptun's `-mode` presets: `(nodelay, interval, resend, nc)` for [`Kcp::set_nodelay`](crate::core::Kcp::set_nodelay).
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
            _ => Err(Error::config(format!(
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
/// `-sndwnd 128 -rcvwnd 512` (kcptun's *server* defaults to 1024/1024), stream mode
/// (kcptun runs smux over a KCP stream). The settings kcptun does not have are this
/// crate's: ACKs sent promptly ([`AckTiming::Prompt`], where kcptun's `-acknodelay` is
/// off by default), dead link after 20 transmissions (kcp-go), dead after 30 s without
/// ACK progress, no read/write timeouts, 5 s linger on close, accept backlog 128.
///
/// Build variations with the `with_*` methods:
///
/// ```
/// use nodelink_kcp::pipeline::{Mode, Config};
/// let cfg = Config::default().with_fec(0, 0).with_mode(Mode::Fast3).with_mtu(1400);
/// assert_eq!(cfg.data_shards, 0);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
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
    /// When ACKs leave (default [`AckTiming::Prompt`]).
    pub acks: AckTiming,
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
    /// Listener: most sessions kept at once (default 4096). A new session past it evicts
    /// the oldest session that has not proven itself (only its first datagram came, as
    /// from a flood of forged source addresses), or is refused if every session has.
    pub max_sessions: usize,
    /// Listener: most sessions from one IP address (default 256; clients behind one NAT
    /// share an address). Past it, as for [`Config::max_sessions`] but among that
    /// address's sessions.
    pub max_sessions_per_ip: usize,
    /// Listeners only: new sessions created per second at most (default 1000, with a
    /// burst of as many). A flood of forged first datagrams then costs a bounded amount of
    /// work a second; past the rate a datagram that would start a session is dropped and
    /// counted (`InErrs`), and its sender, if real, gets in with KCP's retransmission.
    /// Sessions already running are never affected.
    pub session_rate: u32,
    /// Listeners only: bytes all sessions may hold together, both ways: received and not
    /// yet read by the application, and written by it and not yet acknowledged by the
    /// peer (default 1 GiB; each session is bounded by twice its receive window and by
    /// its send window as well). Past it, datagrams carrying data for sessions holding
    /// more than their share (`max_memory / sessions`) are dropped and counted (`InErrs`)
    /// until their applications read and their peers acknowledge (acknowledgements still
    /// pass); KCP resends them. Sessions under
    /// their share are not touched. A peer that never reads what its session sends thus
    /// cannot make the server hold more than its share for it.
    pub max_memory: usize,
    /// kcptun's manual mode: `(nodelay, interval ms, resend, no congestion window)` for
    /// [`Kcp::set_nodelay`](crate::core::Kcp::set_nodelay), overriding [`Config::mode`]'s preset when set.
    pub nodelay: Option<(bool, u32, u32, bool)>,
    /// Write delay (kcp-go `SetWriteDelay`): when on, written data waits for the next
    /// interval's flush instead of going out at once, trading latency for fuller packets.
    pub write_delay: bool,
    /// UDP socket send and receive buffer size in bytes (kcptun `-sockbuf`, default 4 MiB;
    /// 0 keeps the system default; a larger buffer already set is kept). A full window sent at once overflows the kernel's
    /// default buffers even on loopback, which shows up as loss and retransmissions.
    pub sockbuf: usize,
    /// DSCP (6 bits, kcptun `-dscp`) written into the TOS / traffic-class byte of every
    /// datagram, so routers can prioritise the tunnel; 0 leaves the socket's default.
    pub dscp: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            crypt: CipherKind::Aes,
            key: DEFAULT_KEY.to_owned(),
            data_shards: 10,
            parity_shards: 3,
            mode: Mode::Fast,
            mtu: 1350,
            sndwnd: 128,
            rcvwnd: 512,
            stream: true,
            acks: AckTiming::Prompt,
            dead_link: DEFAULT_DEAD_LINK,
            dead_timeout: Duration::from_secs(30),
            read_timeout: None,
            write_timeout: None,
            linger: Duration::from_secs(5),
            backlog: 128,
            max_sessions: 4096,
            max_sessions_per_ip: 256,
            session_rate: 1000,
            max_memory: 1 << 30,
            sockbuf: 4 << 20,
            dscp: 0,
            nodelay: None,
            write_delay: false,
        }
    }
}

impl Config {
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
    /// When ACKs leave.
    pub fn with_acks(mut self, timing: AckTiming) -> Self {
        self.acks = timing;
        self
    }
    /// Sets [`Config::max_sessions`] (at least 1).
    pub fn with_max_sessions(mut self, sessions: usize) -> Self {
        self.max_sessions = sessions.max(1);
        self
    }
    /// Sets [`Config::session_rate`] (at least 1 a second).
    pub fn with_session_rate(mut self, per_second: u32) -> Self {
        self.session_rate = per_second.max(1);
        self
    }

    /// Sets [`Config::max_sessions_per_ip`] (at least 1).
    pub fn with_max_sessions_per_ip(mut self, sessions: usize) -> Self {
        self.max_sessions_per_ip = sessions.max(1);
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

    /// Sets kcptun's manual-mode parameters ([`Config::nodelay`]): `nodelay` (min
    /// RTO 30 ms and softer backoff), flush `interval_ms`, fast-retransmit threshold
    /// `resend` (0 = off) and `no_congestion` (no congestion window).
    pub fn with_nodelay(
        mut self,
        nodelay: bool,
        interval_ms: u32,
        resend: u32,
        no_congestion: bool,
    ) -> Self {
        self.nodelay = Some((nodelay, interval_ms, resend, no_congestion));
        self
    }

    /// Sets [`Config::write_delay`].
    pub fn with_write_delay(mut self, on: bool) -> Self {
        self.write_delay = on;
        self
    }

    /// The `(nodelay, interval, resend, nc)` in force: manual parameters, or the mode's.
    pub fn nodelay_params(&self) -> (bool, u32, u32, bool) {
        self.nodelay.unwrap_or_else(|| self.mode.params())
    }

    /// Sets [`Config::max_memory`].
    pub fn with_max_memory(mut self, bytes: usize) -> Self {
        self.max_memory = bytes;
        self
    }

    /// Sets [`Config::sockbuf`].
    pub fn with_sockbuf(mut self, bytes: usize) -> Self {
        self.sockbuf = bytes;
        self
    }

    /// Sets [`Config::dscp`] (only the low 6 bits are meaningful).
    pub fn with_dscp(mut self, dscp: u8) -> Self {
        self.dscp = dscp;
        self
    }

    /// Applies [`Config::sockbuf`] and [`Config::dscp`] to a socket. Buffers are only
    /// raised, never lowered: a socket the caller handed over
    /// ([`KcpListener::from_socket`](crate::KcpListener::from_socket),
    /// [`KcpStream::connect_on`](crate::KcpStream::connect_on)) keeps larger buffers it
    /// was given, and `sockbuf` 0 and `dscp` 0 leave its settings alone. The kernel may
    /// cap the buffer size (`net.core.rmem_max`) or refuse a TOS value; neither is an
    /// error, the session just works without it (logged at debug level).
    pub(crate) fn apply_socket_options(&self, sock: &tokio::net::UdpSocket) {
        let s = socket2::SockRef::from(sock);
        if self.sockbuf != 0 {
            let raised = (|| {
                if s.recv_buffer_size()? < self.sockbuf {
                    s.set_recv_buffer_size(self.sockbuf)?;
                }
                if s.send_buffer_size()? < self.sockbuf {
                    s.set_send_buffer_size(self.sockbuf)?;
                }
                Ok::<(), std::io::Error>(())
            })();
            if let Err(e) = raised {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "could not set the UDP socket buffer sizes"
                );
            }
        }
        if self.dscp != 0 {
            // DSCP is the upper six bits of the IPv4 TOS byte and of the IPv6 traffic
            // class alike.
            let tos = u32::from(self.dscp & 0x3f) << 2;
            let result = match sock.local_addr() {
                Ok(std::net::SocketAddr::V6(_)) => s.set_tclass_v6(tos),
                _ => s.set_tos_v4(tos),
            };
            if let Err(e) = result {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    dscp = self.dscp,
                    "could not set DSCP"
                );
            }
        }
    }

    /// Whether FEC encoding is on (both shard counts non-zero).
    pub fn fec_enabled(&self) -> bool {
        self.data_shards > 0 && self.parity_shards > 0
    }

    /// Derives the key and builds the cipher (PBKDF2 with 4096 rounds: build it once and
    /// share it between sessions, see [`Pipeline::with_crypto`](crate::pipeline::Pipeline::with_crypto)).
    pub fn crypto(&self) -> Result<DatagramCrypto> {
        DatagramCrypto::new(self.crypt, &derive_key(&self.key))
    }

    /// KCP's MTU (UDP MTU minus the crypto trailer) and headroom (crypto header + FEC
    /// header), per docs/protocols/kcp.md, section 4.
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

    pub(crate) fn validate(&self) -> Result<()> {
        if self.mtu > MAX_SESSION_MTU {
            return Err(Error::config(format!(
                "MTU {} above {MAX_SESSION_MTU}",
                self.mtu
            )));
        }
        if (self.data_shards == 0) != (self.parity_shards == 0) {
            return Err(Error::config(format!(
                "FEC needs both shard counts or neither (got {}/{})",
                self.data_shards, self.parity_shards
            )));
        }
        if self.sndwnd == 0 || self.rcvwnd == 0 {
            return Err(Error::config("windows must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod socket_option_tests {
    use super::Config;

    #[tokio::test]
    async fn dscp_lands_in_the_tos_byte_of_ipv4_and_ipv6_sockets() {
        let cfg = Config::default().with_dscp(46);
        let v4 = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        cfg.apply_socket_options(&v4);
        assert_eq!(socket2::SockRef::from(&v4).tos_v4().unwrap(), 46 << 2);
        if let Ok(v6) = tokio::net::UdpSocket::bind("[::1]:0").await {
            cfg.apply_socket_options(&v6);
            assert_eq!(socket2::SockRef::from(&v6).tclass_v6().unwrap(), 46 << 2);
        }
    }

    #[tokio::test]
    async fn dscp_zero_leaves_the_default() {
        let v4 = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Config::default().apply_socket_options(&v4);
        assert_eq!(socket2::SockRef::from(&v4).tos_v4().unwrap(), 0);
    }
}

//! [`Config`]: every kcptun setting, typed, for either end, with kcptun's names and
//! defaults (docs/CONVENTIONS.md, rule 2).
//!
//! The fields are named after kcptun's flags and JSON keys (`sndwnd`, `smuxver`,
//! `scavengettl`), so that one name means the same thing in the CLI, in a kcptun JSON file
//! and here; only the two addresses are named by what they are ([`Config::listen`],
//! [`Config::target`]), since kcptun names them by role. A configuration is built like
//! every nodelink `Config`:
//!
//! 1. [`Config::default`] (a client) or [`Config::server`]; the values that differ by
//!    role in kcptun (the addresses and the KCP windows) are `None` until set and take the
//!    role's default when the tunnel starts;
//! 2. `with_*` setters (the CLI sets the flags it was given);
//! 3. optionally a kcptun JSON file ([`Config::apply_json`], kcptun's `-c`), whose keys
//!    **override** what was set before, as kcptun's do;
//! 4. [`Config::validate`] (also run by `bind`) checks the values that must fit or agree
//!    and derives the KCP [`KcpConfig`] and the smux settings; its one-line errors name the
//!    kcptun flag (`--mtu 9000: ...`), which is also the field's name.
//!
//! kcptun's `acknodelay` has no field: nodelink always sends ACKs right after the
//! datagrams they acknowledge were processed ([`nodelink_kcp::AckTiming::Prompt`]), which
//! is kcptun's `-acknodelay` at a batch's granularity. The JSON key and the CLI flag are
//! accepted and change nothing.
//!
//! ```
//! use nodelink_tunnel::Config;
//! let mut cfg = Config::default().with_target("127.0.0.1:29900");
//! cfg.apply_json(r#"{"crypt": "salsa20", "mode": "fast3", "conn": 2}"#).unwrap();
//! let checked = cfg.validate().unwrap();
//! assert_eq!(checked.session.mode.name(), "fast3");
//! assert_eq!((checked.session.sndwnd, checked.session.rcvwnd), (128, 512));
//! let cfg = cfg.with_smuxver(3);
//! assert_eq!(cfg.validate().unwrap_err().to_string(), "--smuxver 3: unsupported smux version (1 or 2)");
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use nodelink_kcp::crypt::CipherKind;
use nodelink_kcp::pipeline::MAX_SESSION_MTU;
use nodelink_kcp::{Config as KcpConfig, Mode};

use crate::Error;

mod json;

/// kcptun's default passphrase (sic).
pub const DEFAULT_KEY: &str = "it's a secrect";

/// smux's keepalive timeout (kcptun never changes it): a session without any frame from the
/// peer for this long is dead. The keepalive interval must not exceed it.
pub const SMUX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which end of the tunnel: the client accepts TCP connections and carries them over KCP
/// to a server (`kcptun-client`), the server accepts KCP sessions and forwards their
/// streams to a TCP target (`kcptun-server`). The role type every nodelink crate shares.
pub use nodelink_driver::Role;

/// kcptun's `--mode`: one of KCP's presets, or `manual`, which takes KCP's
/// `(nodelay, interval, resend, nc)` from [`Config::manual`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Profile {
    /// `normal`, `fast`, `fast2` or `fast3`.
    Preset(Mode),
    /// `manual`.
    Manual,
}

impl Default for Profile {
    /// `fast`, kcptun's default.
    fn default() -> Profile {
        Profile::Preset(Mode::Fast)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Profile::Preset(mode) => f.write_str(mode.name()),
            Profile::Manual => f.write_str("manual"),
        }
    }
}

impl FromStr for Profile {
    type Err = Error;

    /// A kcptun `--mode` name; the error does not repeat the value (the caller names the
    /// flag or key and the value).
    fn from_str(s: &str) -> Result<Profile, Error> {
        match s {
            "manual" => Ok(Profile::Manual),
            _ => s
                .parse::<Mode>()
                .map(Profile::Preset)
                .map_err(|_| Error::config("unknown mode (normal, fast, fast2, fast3, manual)")),
        }
    }
}

/// kcptun's manual-mode flags (`--nodelay --interval --resend --nc`), used when
/// [`Config::mode`] is [`Profile::Manual`]. kcptun keeps them whatever the mode, and so do
/// we: a JSON file may set them before or after `"mode": "manual"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Manual {
    /// KCP nodelay (kcptun's `0|1`). Default false.
    pub nodelay: bool,
    /// KCP flush interval in milliseconds (10 to 5000). Default 50.
    pub interval: u32,
    /// Fast-retransmit threshold (0: off, at most 255). Default 0.
    pub resend: u32,
    /// True turns congestion control off (kcptun's `nc 1`). Default false.
    pub nc: bool,
}

impl Default for Manual {
    fn default() -> Manual {
        Manual {
            nodelay: false,
            interval: 50,
            resend: 0,
            nc: false,
        }
    }
}

/// Every kcptun setting, typed. See the [module documentation](self) for how one is built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Which end this is. Default [`Role::Client`].
    pub role: Role,
    /// Where to listen: a TCP address for the client (kcptun `localaddr`, default
    /// `:12948`), a UDP address for the server (kcptun `listen`, default `:29900`). An empty
    /// host means every interface.
    pub listen: Option<String>,
    /// Where to forward: the server's UDP address for the client (kcptun `remoteaddr`,
    /// required), the TCP target (or a Unix socket path) for the server (kcptun `target`,
    /// default `127.0.0.1:12948`).
    pub target: Option<String>,
    /// Pre-shared passphrase, stretched with PBKDF2 (salt `kcp-go`). Default
    /// [`DEFAULT_KEY`].
    pub key: String,
    /// The cipher. Default AES-256.
    pub crypt: CipherKind,
    /// KCP's timing profile. Default `fast`.
    pub mode: Profile,
    /// KCP's timing in `manual` mode.
    pub manual: Manual,
    /// Client: number of KCP sessions streams are spread over (round robin). Default 1.
    pub conn: u16,
    /// Client: age after which a session takes no new streams and is replaced (zero:
    /// never, the default).
    pub autoexpire: Duration,
    /// Client: how long an expired session may live on for its streams before it is
    /// closed. Default 600 s.
    pub scavengettl: Duration,
    /// Largest UDP payload. Default 1350.
    pub mtu: usize,
    /// KCP send window in segments (default 128 for a client, 1024 for a server).
    pub sndwnd: Option<u16>,
    /// KCP receive window in segments (default 512 for a client, 1024 for a server).
    pub rcvwnd: Option<u16>,
    /// Reed-Solomon data shards (0 with `parityshard` 0: no FEC). Default 10.
    pub datashard: u8,
    /// Reed-Solomon parity shards. Default 3.
    pub parityshard: u8,
    /// DSCP of outgoing datagrams (6 bits). Default 0.
    pub dscp: u8,
    /// No snappy compression (must match the peer). Default false.
    pub nocomp: bool,
    /// UDP socket buffer size in bytes (each direction). Default 4 MiB.
    pub sockbuf: usize,
    /// Server: bytes its sessions may hold together (not a kcptun setting; default
    /// 1 GiB). Half of it is the KCP sessions' budget for received data not yet read:
    /// past it, datagrams of sessions holding more than their share are dropped until
    /// their smux sessions read (see nodelink-kcp's `Config::max_memory`). The other half
    /// is the smux sessions' budget for unread stream data and data queued to send: past
    /// it, smux sessions holding more than their share (at most 256 KiB) stop reading
    /// their KCP sessions until their streams catch up (see nodelink-smux's
    /// `Config::memory_budget`).
    pub max_memory: usize,
    /// smux protocol version, 1 or 2 (must match the peer). Default 1.
    pub smuxver: u8,
    /// smux session-wide receive buffer in bytes. Default 4 MiB.
    pub smuxbuf: usize,
    /// smux per-stream receive buffer in bytes (flow-control window in v2). Default 2 MiB.
    pub streambuf: usize,
    /// Time between smux keepalives (1 to 30 s). Default 10 s.
    pub keepalive: Duration,
    /// SNMP counter log file, through Go's time layout (`./snmp-20060102.log`); empty
    /// (the default): off.
    pub snmplog: String,
    /// Time between SNMP log lines (zero: off). Default 60 s.
    pub snmpperiod: Duration,
    /// No "stream opened/closed" logs. Default false.
    pub quiet: bool,
}

impl Default for Config {
    /// kcptun-client's defaults; [`Config::target`] must still be set.
    fn default() -> Config {
        Config {
            role: Role::Client,
            listen: None,
            target: None,
            key: DEFAULT_KEY.into(),
            crypt: CipherKind::Aes,
            mode: Profile::default(),
            manual: Manual::default(),
            conn: 1,
            autoexpire: Duration::ZERO,
            scavengettl: Duration::from_secs(600),
            mtu: 1350,
            sndwnd: None,
            rcvwnd: None,
            datashard: 10,
            parityshard: 3,
            dscp: 0,
            nocomp: false,
            sockbuf: 4 << 20,
            max_memory: 1 << 30,
            smuxver: 1,
            smuxbuf: 4 << 20,
            streambuf: 2 << 20,
            keepalive: Duration::from_secs(10),
            snmplog: String::new(),
            snmpperiod: Duration::from_secs(60),
            quiet: false,
        }
    }
}

/// One `with_*` setter per field whose type is the field's.
macro_rules! setters {
    ($($name:ident: $field:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("Sets [`Config::", stringify!($field), "`].")]
        pub fn $name(mut self, value: $ty) -> Config {
            self.$field = value;
            self
        }
    )*};
}

impl Config {
    /// kcptun-server's defaults.
    pub fn server() -> Config {
        Config::default().with_role(Role::Server)
    }

    /// The defaults of `role`.
    pub fn for_role(role: Role) -> Config {
        Config::default().with_role(role)
    }

    /// Sets [`Config::listen`].
    pub fn with_listen(mut self, addr: impl Into<String>) -> Config {
        self.listen = Some(addr.into());
        self
    }

    /// Sets [`Config::target`].
    pub fn with_target(mut self, addr: impl Into<String>) -> Config {
        self.target = Some(addr.into());
        self
    }

    /// Sets [`Config::key`].
    pub fn with_key(mut self, key: impl Into<String>) -> Config {
        self.key = key.into();
        self
    }

    /// Sets [`Config::sndwnd`].
    pub fn with_sndwnd(mut self, segments: u16) -> Config {
        self.sndwnd = Some(segments);
        self
    }

    /// Sets [`Config::rcvwnd`].
    pub fn with_rcvwnd(mut self, segments: u16) -> Config {
        self.rcvwnd = Some(segments);
        self
    }

    /// Sets [`Config::snmplog`].
    pub fn with_snmplog(mut self, path: impl Into<String>) -> Config {
        self.snmplog = path.into();
        self
    }

    setters! {
        with_role: role: Role,
        with_crypt: crypt: CipherKind,
        with_mode: mode: Profile,
        with_manual: manual: Manual,
        with_conn: conn: u16,
        with_autoexpire: autoexpire: Duration,
        with_scavengettl: scavengettl: Duration,
        with_mtu: mtu: usize,
        with_datashard: datashard: u8,
        with_parityshard: parityshard: u8,
        with_dscp: dscp: u8,
        with_nocomp: nocomp: bool,
        with_sockbuf: sockbuf: usize,
        with_max_memory: max_memory: usize,
        with_smuxver: smuxver: u8,
        with_smuxbuf: smuxbuf: usize,
        with_streambuf: streambuf: usize,
        with_keepalive: keepalive: Duration,
        with_snmpperiod: snmpperiod: Duration,
        with_quiet: quiet: bool,
    }

    /// The listen address in force: [`Config::listen`] or the role's default.
    pub fn listen_addr(&self) -> &str {
        self.listen.as_deref().unwrap_or(match self.role {
            Role::Client => ":12948",
            Role::Server => ":29900",
        })
    }

    /// The target in force: [`Config::target`] or the role's default (none for a client).
    pub fn target_addr(&self) -> Option<&str> {
        self.target.as_deref().or(match self.role {
            Role::Client => None,
            Role::Server => Some("127.0.0.1:12948"),
        })
    }

    /// The KCP `(send, receive)` windows in force: the fields or the role's defaults.
    pub fn windows(&self) -> (u16, u16) {
        let (snd, rcv) = match self.role {
            Role::Client => (128, 512),
            Role::Server => (1024, 1024),
        };
        (self.sndwnd.unwrap_or(snd), self.rcvwnd.unwrap_or(rcv))
    }

    /// The `(nodelay, interval, resend, nc)` in force: the preset's, or the manual ones.
    pub fn nodelay_params(&self) -> (bool, u32, u32, bool) {
        match self.mode {
            Profile::Preset(mode) => mode.params(),
            Profile::Manual => {
                let m = self.manual;
                (m.nodelay, m.interval, m.resend, m.nc)
            }
        }
    }

    /// The KCP sessions' half of [`max_memory`](Config::max_memory).
    pub(crate) fn kcp_memory(&self) -> usize {
        self.max_memory / 2
    }

    /// The smux sessions' half of [`max_memory`](Config::max_memory).
    pub(crate) fn smux_memory(&self) -> usize {
        self.max_memory - self.kcp_memory()
    }

    /// Checks every value and derives the typed settings of the layers below.
    ///
    /// # Errors
    ///
    /// An error of kind [`ErrorKind::Config`](crate::ErrorKind::Config) with a one-line
    /// message naming the flag (`--mtu 9000: ...`).
    pub fn validate(&self) -> Result<Checked, Error> {
        let listen = self.listen_addr();
        if listen.trim().is_empty() {
            return Err(bad("--listen", "", "an address is required"));
        }
        let target = match self.target_addr() {
            Some(t) if !t.trim().is_empty() => t,
            _ => {
                let flag = match self.role {
                    Role::Client => "--remote",
                    Role::Server => "--target",
                };
                return Err(Error::config(format!("{flag} is required")));
            }
        };
        let nodelay = self.nodelay_params();
        if self.mode == Profile::Manual {
            range("--interval", self.manual.interval.into(), 10, 5000)?;
            range("--resend", self.manual.resend.into(), 0, 255)?;
        }
        if self.role == Role::Client {
            range("--conn", self.conn.into(), 1, 65535)?;
        }
        // kcptun's seconds are 32-bit; bounding them also keeps `now + d` from overflowing.
        let max_secs = u64::from(u32::MAX);
        for (flag, d) in [
            ("--autoexpire", self.autoexpire),
            ("--scavengettl", self.scavengettl),
            ("--snmpperiod", self.snmpperiod),
        ] {
            if d > Duration::from_secs(max_secs) {
                return Err(bad(
                    flag,
                    &seconds(d),
                    &format!("must be between 0 and {max_secs} seconds"),
                ));
            }
        }
        let (sndwnd, rcvwnd) = self.windows();
        range("--sndwnd", sndwnd.into(), 1, 65535)?;
        range("--rcvwnd", rcvwnd.into(), 1, 65535)?;
        let (ds, ps) = (usize::from(self.datashard), usize::from(self.parityshard));
        if (ds == 0) != (ps == 0) {
            return Err(Error::config(format!(
                "--datashard {ds} --parityshard {ps}: FEC needs both shard counts above 0 \
                 (or both 0 to turn it off)"
            )));
        }
        if ds + ps > 256 {
            return Err(Error::config(format!(
                "--datashard {ds} --parityshard {ps}: at most 256 shards in all"
            )));
        }
        range("--dscp", self.dscp.into(), 0, 63)?;
        range("--sockbuf", self.sockbuf as u64, 0, i32::MAX as u64)?;
        range("--mtu", self.mtu as u64, 1, MAX_SESSION_MTU as u64)?;
        let mut session = KcpConfig::default()
            .with_crypt(self.crypt)
            .with_key(self.key.clone())
            .with_fec(ds, ps)
            .with_mtu(self.mtu)
            .with_window(sndwnd, rcvwnd)
            .with_stream(true)
            .with_write_delay(false)
            .with_sockbuf(self.sockbuf)
            .with_max_memory(self.kcp_memory())
            .with_dscp(self.dscp);
        session = match self.mode {
            Profile::Preset(preset) => session.with_mode(preset),
            Profile::Manual => {
                let (nd, interval, resend, nc) = nodelay;
                session.with_nodelay(nd, interval, resend, nc)
            }
        };
        // The KCP header (24 bytes) plus the crypto and FEC headers must leave room for data.
        let largest = session.clone().with_mtu(MAX_SESSION_MTU);
        let min_mtu = (MAX_SESSION_MTU - largest.mss() + 1).max(50);
        if self.mtu < min_mtu {
            return Err(bad(
                "--mtu",
                &self.mtu.to_string(),
                &format!("must be between {min_mtu} and {MAX_SESSION_MTU} with these settings"),
            ));
        }
        let smux = self.smux_settings()?;
        Ok(Checked {
            listen: listen.to_owned(),
            target: target.to_owned(),
            session,
            smux,
            nodelay,
        })
    }

    fn smux_settings(&self) -> Result<SmuxSettings, Error> {
        if !matches!(self.smuxver, 1 | 2) {
            return Err(bad(
                "--smuxver",
                &self.smuxver.to_string(),
                "unsupported smux version (1 or 2)",
            ));
        }
        let (smuxbuf, streambuf) = (self.smuxbuf, self.streambuf);
        range("--smuxbuf", smuxbuf as u64, 1, i32::MAX as u64)?;
        range("--streambuf", streambuf as u64, 1, i32::MAX as u64)?;
        if streambuf > smuxbuf {
            return Err(Error::config(format!(
                "--streambuf {streambuf}: must not be larger than --smuxbuf {smuxbuf}"
            )));
        }
        let max_keepalive = SMUX_KEEPALIVE_TIMEOUT.as_secs();
        if self.keepalive < Duration::from_secs(1) || self.keepalive > SMUX_KEEPALIVE_TIMEOUT {
            return Err(bad(
                "--keepalive",
                &seconds(self.keepalive),
                &format!("must be between 1 and {max_keepalive} seconds"),
            ));
        }
        Ok(SmuxSettings {
            version: self.smuxver,
            max_receive_buffer: smuxbuf,
            max_stream_buffer: streambuf,
            keep_alive_interval: self.keepalive,
        })
    }
}

/// What [`Config::validate`] derives: everything the layers below need, checked.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Checked {
    /// The listen address in force (the role's default if none was set).
    pub listen: String,
    /// The target in force.
    pub target: String,
    /// The KCP session settings.
    pub session: KcpConfig,
    /// The smux settings.
    pub smux: SmuxSettings,
    /// The KCP `(nodelay, interval, resend, nc)` in force (preset or manual).
    pub nodelay: (bool, u32, u32, bool),
}

/// The smux settings kcptun exposes; everything else keeps smux's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmuxSettings {
    /// Protocol version (1 or 2).
    pub version: u8,
    /// Session-wide receive buffer.
    pub max_receive_buffer: usize,
    /// Per-stream receive buffer.
    pub max_stream_buffer: usize,
    /// Keepalive interval.
    pub keep_alive_interval: Duration,
}

/// Parses a kcptun `--crypt` name; the error does not repeat the value.
pub fn parse_crypt(name: &str) -> Result<CipherKind, Error> {
    name.parse().map_err(|_| {
        let names: Vec<&str> = CipherKind::ALL.iter().map(|k| k.name()).collect();
        Error::config(format!("unknown cipher ({})", names.join(", ")))
    })
}

/// An address with an empty host (`:12948`, as Go accepts) made explicit: every interface
/// for a listener, this host for a dial.
pub fn normalize_addr(addr: &str, listening: bool) -> String {
    if let Some(port) = addr.strip_prefix(':') {
        let host = if listening { "0.0.0.0" } else { "127.0.0.1" };
        format!("{host}:{port}")
    } else {
        addr.to_string()
    }
}

/// A duration as kcptun's flags give it: whole seconds, else with its unit.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{d:?}")
    }
}

fn bad(flag: &str, value: &str, why: &str) -> Error {
    if value.is_empty() {
        Error::config(format!("{flag}: {why}"))
    } else {
        Error::config(format!("{flag} {value}: {why}"))
    }
}

fn range(flag: &str, value: u64, min: u64, max: u64) -> Result<u64, Error> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(bad(
            flag,
            &value.to_string(),
            &format!("must be between {min} and {max}"),
        ))
    }
}

#[cfg(test)]
mod tests;

//! KCP flags, named as kcptun names them, and turning them into a session configuration.
//!
//! Two spellings of the same settings:
//!
//! * `nodelink kcp serve|bench` take kcptun's own names: `--crypt`, `--key`,
//!   `--datashard`/`--ds`, `--parityshard`/`--ps`, `--mode`, and kcptun's tuning flags
//!   [`KcpTuning`] (`--nodelay --interval --resend --nc --sndwnd --rcvwnd --mtu --dscp
//!   --sockbuf`), the same struct `nodelink tunnel` flattens into its arguments; and
//!   `--acknodelay`, accepted and without effect: ACKs always leave at once;
//! * `nodelink serve|ping --kcp` take them prefixed with `kcp-` (`--kcp-crypt`,
//!   `--kcp-ds`, `--kcp-interval`, ...), since `ping` has a `--mode` of its own; they
//!   fill the same [`KcpTuning`].
//!
//! Defaults are kcptun's: `aes`, key `it's a secrect`, FEC 10/3, mode `fast`, MTU 1350,
//! windows 128/512 for a client and 1024/1024 for a server; ACKs leave as soon as the data
//! they acknowledge was processed (`nodelink_kcp::AckTiming::Prompt`), where kcptun waits
//! for the flush interval unless `-acknodelay` is given.
//! As in kcp-go, FEC is off when either shard count is 0. kcptun's `manual` mode takes
//! `--nodelay --interval --resend --nc`; given with a preset they are an error here (the
//! tunnel, like kcptun, keeps them for when its profile is manual).
//!
//! The values are checked here, not by clap, so a bad one is a one-line
//! `nodelink: error: ...` with exit code 1.

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use nodelink::kcp::{KcpConfig, Mode};
use nodelink::{Config, Link, LinkListener};
use nodelink_kcp::crypt::CipherKind;
use nodelink_kcp::pipeline::MAX_SESSION_MTU;
use nodelink_kcp::Stats;

/// kcptun's default passphrase (sic).
pub const DEFAULT_KEY: &str = "it's a secrect";

/// kcptun's default MTU.
const DEFAULT_MTU: usize = 1350;

/// How long dialing over KCP (session setup and the version handshake) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Which end a session is: kcptun's window defaults differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The dialing end (kcptun client: sndwnd 128, rcvwnd 512).
    Client,
    /// The listening end (kcptun server: sndwnd 1024, rcvwnd 1024).
    Server,
}

impl Side {
    /// kcptun's `(sndwnd, rcvwnd)` for this end.
    pub fn default_windows(self) -> (u32, u32) {
        match self {
            Side::Client => (128, 512),
            Side::Server => (1024, 1024),
        }
    }
}

/// The KCP settings as given on the command line, before checking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KcpFlags {
    /// Prefix of the flag names in messages (`""` or `"kcp-"`).
    pub prefix: &'static str,
    /// Cipher name.
    pub crypt: String,
    /// Passphrase.
    pub key: String,
    /// FEC data shards.
    pub datashard: usize,
    /// FEC parity shards.
    pub parityshard: usize,
    /// Preset name.
    pub mode: String,
    /// kcptun's tuning flags, each `None` when not given.
    pub tuning: KcpTuning,
}

/// kcptun's tuning flags, as given: manual mode's four parameters, the windows, the MTU
/// and the socket options. One struct for every command that speaks KCP: `kcp serve`,
/// `kcp bench` and both tunnel ends flatten it (so the flags, their help and their
/// checks are the same everywhere), and `serve|ping --kcp` fill it from their
/// `--kcp-`-prefixed spellings. Values are taken as integers and checked by
/// [`KcpTuning::check`], so a bad one is a one-line error naming the flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Args)]
pub struct KcpTuning {
    /// With --mode manual: KCP nodelay, 0 or 1 [default: 0]
    #[arg(long, value_name = "0|1")]
    pub nodelay: Option<i64>,
    /// With --mode manual: flush interval in milliseconds, 10 to 5000 [default: 50]
    #[arg(long, value_name = "MS")]
    pub interval: Option<i64>,
    /// With --mode manual: fast retransmit after this many skipping ACKs, 0 for off
    /// [default: 0]
    #[arg(long, value_name = "N")]
    pub resend: Option<i64>,
    /// With --mode manual: 1 turns congestion control off [default: 0]
    #[arg(long, value_name = "0|1")]
    pub nc: Option<i64>,
    /// Send window in segments [default: 128 dialling, 1024 serving]
    #[arg(long, value_name = "W")]
    pub sndwnd: Option<i64>,
    /// Receive window in segments [default: 512 dialling, 1024 serving]
    #[arg(long, value_name = "W")]
    pub rcvwnd: Option<i64>,
    /// Largest UDP payload, all headers included [default: 1350]
    #[arg(long, value_name = "BYTES")]
    pub mtu: Option<i64>,
    /// DSCP, 0 to 63, written into every datagram's IP header [default: 0]
    #[arg(long, value_name = "N")]
    pub dscp: Option<i64>,
    /// UDP socket send and receive buffer size in bytes [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    pub sockbuf: Option<i64>,
}

/// [`KcpTuning`] with each given value fitted to its type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    pub nodelay: Option<bool>,
    pub interval: Option<u32>,
    pub resend: Option<u32>,
    pub nc: Option<bool>,
    pub sndwnd: Option<u16>,
    pub rcvwnd: Option<u16>,
    pub mtu: Option<usize>,
    pub dscp: Option<u8>,
    pub sockbuf: Option<usize>,
}

/// `value` if it lies in `min..=max`, else an error naming `flag`.
pub fn fit(flag: &str, value: i64, min: u64, max: u64) -> anyhow::Result<u64> {
    u64::try_from(value)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| anyhow::anyhow!("{flag} {value}: must be between {min} and {max}"))
}

impl KcpTuning {
    /// Fits each given value to its type (`prefix` is `""` or `"kcp-"`, for messages).
    /// The ranges that depend on the command (windows of at least 1, DSCP below 64) are
    /// the caller's: [`KcpFlags::session`] or the tunnel's `Config::validate`.
    pub fn check(&self, prefix: &str) -> anyhow::Result<Tuning> {
        let flag = |name: &str| format!("--{prefix}{name}");
        let get = |name: &str, v: Option<i64>, max: u64| -> anyhow::Result<Option<u64>> {
            v.map(|v| fit(&flag(name), v, 0, max)).transpose()
        };
        let max_usize = usize::MAX as u64;
        Ok(Tuning {
            nodelay: get("nodelay", self.nodelay, 1)?.map(|v| v == 1),
            interval: get("interval", self.interval, u32::MAX.into())?.map(|v| v as u32),
            resend: get("resend", self.resend, u32::MAX.into())?.map(|v| v as u32),
            nc: get("nc", self.nc, 1)?.map(|v| v == 1),
            sndwnd: get("sndwnd", self.sndwnd, u16::MAX.into())?.map(|v| v as u16),
            rcvwnd: get("rcvwnd", self.rcvwnd, u16::MAX.into())?.map(|v| v as u16),
            mtu: get("mtu", self.mtu, max_usize)?.map(|v| v as usize),
            dscp: get("dscp", self.dscp, u8::MAX.into())?.map(|v| v as u8),
            sockbuf: get("sockbuf", self.sockbuf, max_usize)?.map(|v| v as usize),
        })
    }
}

impl Tuning {
    /// Whether any of manual mode's four parameters was given.
    fn manual_given(&self) -> bool {
        self.nodelay.is_some()
            || self.interval.is_some()
            || self.resend.is_some()
            || self.nc.is_some()
    }

    /// `(nodelay, interval, resend, nc)` with kcptun's defaults for what is not given.
    fn manual_params(&self) -> (bool, u32, u32, bool) {
        (
            self.nodelay.unwrap_or(false),
            self.interval.unwrap_or(50),
            self.resend.unwrap_or(0),
            self.nc.unwrap_or(false),
        )
    }

    /// Writes what was given into a tunnel configuration (its `validate` checks ranges).
    pub fn apply_to_tunnel(&self, cfg: &mut nodelink_tunnel::Config) {
        if let Some(v) = self.nodelay {
            cfg.manual.nodelay = v;
        }
        if let Some(v) = self.interval {
            cfg.manual.interval = v;
        }
        if let Some(v) = self.resend {
            cfg.manual.resend = v;
        }
        if let Some(v) = self.nc {
            cfg.manual.nc = v;
        }
        if self.sndwnd.is_some() {
            cfg.sndwnd = self.sndwnd;
        }
        if self.rcvwnd.is_some() {
            cfg.rcvwnd = self.rcvwnd;
        }
        if let Some(v) = self.mtu {
            cfg.mtu = v;
        }
        if let Some(v) = self.dscp {
            cfg.dscp = v;
        }
        if let Some(v) = self.sockbuf {
            cfg.sockbuf = v;
        }
    }
}

impl KcpFlags {
    /// Checks the flags and builds the session configuration for `side`.
    pub fn session(&self, side: Side) -> anyhow::Result<KcpConfig> {
        let p = self.prefix;
        let crypt: CipherKind = self
            .crypt
            .parse()
            .map_err(|e| anyhow::anyhow!("--{p}crypt {}: {e}", self.crypt))?;
        let tuning = self.tuning.check(p)?;
        let manual = self.mode == "manual";
        let mode: Mode = if manual {
            Mode::default()
        } else {
            if tuning.manual_given() {
                bail!("--{p}nodelay, --{p}interval, --{p}resend and --{p}nc need --{p}mode manual");
            }
            self.mode
                .parse()
                .map_err(|e| anyhow::anyhow!("--{p}mode {}: {e} (or manual)", self.mode))?
        };
        let (ds, ps) = if self.datashard == 0 || self.parityshard == 0 {
            (0, 0)
        } else {
            (self.datashard, self.parityshard)
        };
        if ds + ps > 256 {
            bail!(
                "--{p}datashard {} --{p}parityshard {}: at most 256 shards in all",
                self.datashard,
                self.parityshard
            );
        }
        let (default_snd, default_rcv) = side.default_windows();
        let sndwnd = window(p, "sndwnd", tuning.sndwnd.unwrap_or(default_snd as u16))?;
        let rcvwnd = window(p, "rcvwnd", tuning.rcvwnd.unwrap_or(default_rcv as u16))?;
        let mtu = tuning.mtu.unwrap_or(DEFAULT_MTU);
        let defaults = KcpConfig::default();
        let dscp = tuning.dscp.unwrap_or(defaults.dscp);
        if dscp > 63 {
            bail!("--{p}dscp {dscp}: must be between 0 and 63");
        }
        let sockbuf = tuning.sockbuf.unwrap_or(defaults.sockbuf);
        if sockbuf > i32::MAX as usize {
            bail!("--{p}sockbuf {sockbuf}: must be between 0 and {}", i32::MAX);
        }
        let session = defaults
            .with_crypt(crypt)
            .with_key(self.key.clone())
            .with_fec(ds, ps)
            .with_mode(mode)
            .with_mtu(mtu)
            .with_window(sndwnd, rcvwnd)
            .with_dscp(dscp)
            .with_sockbuf(sockbuf)
            .with_stream(true);
        let session = if manual {
            let (nodelay, interval, resend, nc) = tuning.manual_params();
            if !(10..=5000).contains(&interval) {
                bail!("--{p}interval {interval}: must be between 10 and 5000");
            }
            session.with_nodelay(nodelay, interval, resend, nc)
        } else {
            session
        };
        // The segment header (24 bytes), the crypto and FEC headers must leave room for data.
        let overhead = mtu - session.mss().min(mtu);
        let min_mtu = (overhead + 1).max(50);
        if mtu > MAX_SESSION_MTU || mtu < min_mtu {
            bail!("--{p}mtu {mtu}: must be between {min_mtu} and {MAX_SESSION_MTU} with these settings");
        }
        Ok(session)
    }
}

fn window(prefix: &str, name: &str, value: u16) -> anyhow::Result<u16> {
    if value == 0 {
        bail!("--{prefix}{name} {value}: must be between 1 and 65535");
    }
    Ok(value)
}

/// One line describing a session configuration.
pub struct Describe<'a>(pub &'a KcpConfig);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(f, "crypt {}, ", s.crypt)?;
        if s.fec_enabled() {
            write!(f, "fec {}/{}, ", s.data_shards, s.parity_shards)?;
        } else {
            f.write_str("no fec, ")?;
        }
        match s.nodelay {
            Some((nodelay, interval, resend, nc)) => write!(
                f,
                "mode manual (nodelay {}, interval {interval} ms, resend {resend}, nc {}), ",
                u8::from(nodelay),
                u8::from(nc)
            )?,
            None => write!(f, "mode {}, ", s.mode)?,
        }
        write!(f, "mtu {}, sndwnd {}, rcvwnd {}", s.mtu, s.sndwnd, s.rcvwnd)?;
        if s.dscp != 0 {
            write!(f, ", dscp {}", s.dscp)?;
        }
        if s.sockbuf != KcpConfig::default().sockbuf {
            write!(f, ", sockbuf {}", s.sockbuf)?;
        }
        if s.acks == nodelink_kcp::AckTiming::Interval {
            f.write_str(", acks on the interval")?;
        }
        Ok(())
    }
}

/// `Name=value` for every counter, in kcp-go's order, on one line.
pub fn counters_line(stats: &Stats) -> String {
    stats
        .fields()
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// KCP flags of `nodelink kcp serve|bench`, with kcptun's names.
#[derive(Debug, Args)]
pub struct KcpArgs {
    /// Cipher: aes, aes-128, aes-192, salsa20, blowfish, twofish, cast5, 3des, tea, xtea,
    /// sm4, xor, none, null, aes-128-gcm (both ends must agree).
    #[arg(long, value_name = "NAME", default_value = "aes")]
    pub crypt: String,
    /// Pre-shared passphrase (stretched with PBKDF2 as kcptun does).
    #[arg(long, value_name = "KEY", default_value = DEFAULT_KEY)]
    pub key: String,
    /// FEC data shards (0 turns FEC off).
    #[arg(long, visible_alias = "ds", value_name = "N", default_value_t = 10)]
    pub datashard: usize,
    /// FEC parity shards (0 turns FEC off).
    #[arg(long, visible_alias = "ps", value_name = "M", default_value_t = 3)]
    pub parityshard: usize,
    /// Preset: normal, fast, fast2, fast3, or manual (--nodelay --interval --resend --nc).
    #[arg(long, value_name = "MODE", default_value = "fast")]
    pub mode: String,
    /// kcptun's tuning flags.
    #[command(flatten)]
    pub tuning: KcpTuning,
    /// Accepted for kcp-go compatibility: ACKs always leave as soon as the data they
    /// acknowledge was processed
    #[arg(long)]
    pub acknodelay: bool,
}

impl KcpArgs {
    /// The flags, unchecked.
    pub fn flags(&self) -> KcpFlags {
        KcpFlags {
            prefix: "",
            crypt: self.crypt.clone(),
            key: self.key.clone(),
            datashard: self.datashard,
            parityshard: self.parityshard,
            mode: self.mode.clone(),
            tuning: self.tuning,
        }
    }
}

/// `--kcp` and its settings, for `nodelink serve` and `nodelink ping`.
#[derive(Debug, Args)]
pub struct LinkKcpArgs {
    /// Run the link over KCP (reliable UDP, kcp-go compatible) instead of TCP.
    #[arg(long, conflicts_with = "tls_ca")]
    pub kcp: bool,
    /// KCP cipher (see `nodelink kcp bench --help`).
    #[arg(long, value_name = "NAME", default_value = "aes", requires = "kcp")]
    pub kcp_crypt: String,
    /// KCP pre-shared passphrase.
    #[arg(long, value_name = "KEY", default_value = DEFAULT_KEY, requires = "kcp")]
    pub kcp_key: String,
    /// KCP FEC data shards (0 turns FEC off).
    #[arg(
        long,
        visible_alias = "kcp-ds",
        value_name = "N",
        default_value_t = 10,
        requires = "kcp"
    )]
    pub kcp_datashard: usize,
    /// KCP FEC parity shards (0 turns FEC off).
    #[arg(
        long,
        visible_alias = "kcp-ps",
        value_name = "M",
        default_value_t = 3,
        requires = "kcp"
    )]
    pub kcp_parityshard: usize,
    /// KCP preset: normal, fast, fast2, fast3, or manual (--kcp-nodelay --kcp-interval
    /// --kcp-resend --kcp-nc).
    #[arg(long, value_name = "MODE", default_value = "fast", requires = "kcp")]
    pub kcp_mode: String,
    /// KCP manual mode: nodelay, 0 or 1 [default: 0]
    #[arg(long, value_name = "0|1", requires = "kcp")]
    pub kcp_nodelay: Option<i64>,
    /// KCP manual mode: flush interval in milliseconds, 10 to 5000 [default: 50]
    #[arg(long, value_name = "MS", requires = "kcp")]
    pub kcp_interval: Option<i64>,
    /// KCP manual mode: fast retransmit after this many skipping ACKs [default: 0]
    #[arg(long, value_name = "N", requires = "kcp")]
    pub kcp_resend: Option<i64>,
    /// KCP manual mode: 1 turns congestion control off [default: 0]
    #[arg(long, value_name = "0|1", requires = "kcp")]
    pub kcp_nc: Option<i64>,
    /// KCP MTU (largest UDP payload) [default: 1350]
    #[arg(long, value_name = "BYTES", requires = "kcp")]
    pub kcp_mtu: Option<i64>,
    /// KCP send window [default: 128 for ping, 1024 for serve].
    #[arg(long, value_name = "W", requires = "kcp")]
    pub kcp_sndwnd: Option<i64>,
    /// KCP receive window [default: 512 for ping, 1024 for serve].
    #[arg(long, value_name = "W", requires = "kcp")]
    pub kcp_rcvwnd: Option<i64>,
    /// KCP: DSCP, 0 to 63, written into every datagram's IP header [default: 0]
    #[arg(long, value_name = "N", requires = "kcp")]
    pub kcp_dscp: Option<i64>,
    /// KCP: UDP socket buffer size in bytes [default: 4194304]
    #[arg(long, value_name = "BYTES", requires = "kcp")]
    pub kcp_sockbuf: Option<i64>,
    /// KCP: accepted for kcp-go compatibility (ACKs always leave at once).
    #[arg(long, requires = "kcp")]
    pub kcp_acknodelay: bool,
}

impl LinkKcpArgs {
    /// The checked session configuration, when `--kcp` was given.
    pub fn session(&self, side: Side) -> anyhow::Result<Option<KcpConfig>> {
        if !self.kcp {
            return Ok(None);
        }
        KcpFlags {
            prefix: "kcp-",
            crypt: self.kcp_crypt.clone(),
            key: self.kcp_key.clone(),
            datashard: self.kcp_datashard,
            parityshard: self.kcp_parityshard,
            mode: self.kcp_mode.clone(),
            tuning: KcpTuning {
                nodelay: self.kcp_nodelay,
                interval: self.kcp_interval,
                resend: self.kcp_resend,
                nc: self.kcp_nc,
                sndwnd: self.kcp_sndwnd,
                rcvwnd: self.kcp_rcvwnd,
                mtu: self.kcp_mtu,
                dscp: self.kcp_dscp,
                sockbuf: self.kcp_sockbuf,
            },
        }
        .session(side)
        .map(Some)
    }
}

/// Dials `addr` over KCP within [`DIAL_TIMEOUT`].
pub async fn connect(addr: &str, session: KcpConfig, config: Config) -> anyhow::Result<Link> {
    match tokio::time::timeout(DIAL_TIMEOUT, nodelink::connect_kcp(addr, session, config)).await {
        Ok(Ok(link)) => Ok(link),
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot connect over KCP to {addr}")),
        Err(_) => bail!("cannot connect over KCP to {addr}: timed out after {DIAL_TIMEOUT:?}"),
    }
}

/// Binds a KCP link listener on `addr` (a TCP or TLS one is the other
/// [`nodelink::LinkListener`] the CLI serves with the same loop).
pub async fn bind_kcp(
    addr: &str,
    session: KcpConfig,
    config: Config,
) -> anyhow::Result<Box<dyn LinkListener>> {
    let listener = nodelink::bind_kcp(addr, session, config)
        .await
        .with_context(|| format!("cannot listen over KCP on {addr}"))?;
    Ok(Box::new(listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> KcpFlags {
        KcpFlags {
            prefix: "",
            crypt: "aes".into(),
            key: DEFAULT_KEY.into(),
            datashard: 10,
            parityshard: 3,
            mode: "fast".into(),
            tuning: KcpTuning::default(),
        }
    }

    fn tuned(tuning: KcpTuning) -> KcpFlags {
        KcpFlags { tuning, ..flags() }
    }

    #[test]
    fn manual_mode_takes_kcptuns_four_parameters() {
        let manual = |nodelay, interval, resend, nc| KcpTuning {
            nodelay,
            interval,
            resend,
            nc,
            ..KcpTuning::default()
        };
        let s = KcpFlags {
            mode: "manual".into(),
            tuning: manual(Some(1), Some(15), Some(2), Some(1)),
            ..flags()
        }
        .session(Side::Client)
        .unwrap();
        assert_eq!(s.nodelay_params(), (true, 15, 2, true));
        assert_eq!(
            Describe(&s).to_string(),
            "crypt aes, fec 10/3, mode manual (nodelay 1, interval 15 ms, resend 2, nc 1), \
             mtu 1350, sndwnd 128, rcvwnd 512"
        );
        // kcptun's defaults for what is not given.
        let s = KcpFlags {
            mode: "manual".into(),
            ..flags()
        }
        .session(Side::Client)
        .unwrap();
        assert_eq!(s.nodelay_params(), (false, 50, 0, false));
        // Manual parameters with a preset are a mistake, not silently ignored.
        let e = KcpFlags {
            tuning: manual(None, Some(10), None, None),
            ..flags()
        }
        .session(Side::Client)
        .unwrap_err();
        assert!(e.to_string().contains("need --mode manual"), "{e}");
    }

    #[test]
    fn kcptun_defaults() {
        let s = flags().session(Side::Client).unwrap();
        assert_eq!(s.crypt, CipherKind::Aes);
        assert_eq!(s.key, "it's a secrect");
        assert_eq!((s.data_shards, s.parity_shards), (10, 3));
        assert_eq!(s.mode, Mode::Fast);
        assert_eq!(s.mtu, 1350);
        assert_eq!((s.sndwnd, s.rcvwnd), (128, 512));
        assert!(s.stream);
        assert_eq!(s.acks, nodelink_kcp::AckTiming::Prompt);
        assert_eq!(s.mss(), 1298);
        let s = flags().session(Side::Server).unwrap();
        assert_eq!((s.sndwnd, s.rcvwnd), (1024, 1024));
        assert_eq!(
            Describe(&s).to_string(),
            "crypt aes, fec 10/3, mode fast, mtu 1350, sndwnd 1024, rcvwnd 1024"
        );
    }

    #[test]
    fn presets_and_ciphers() {
        for (name, params) in [
            ("normal", (false, 40, 2, true)),
            ("fast", (false, 30, 2, true)),
            ("fast2", (true, 20, 2, true)),
            ("fast3", (true, 10, 2, true)),
        ] {
            let s = KcpFlags {
                mode: name.into(),
                ..flags()
            }
            .session(Side::Client)
            .unwrap();
            assert_eq!(s.mode.params(), params, "{name}");
        }
        for kind in CipherKind::ALL {
            let s = KcpFlags {
                crypt: kind.name().into(),
                ..flags()
            }
            .session(Side::Client)
            .unwrap();
            assert_eq!(s.crypt, kind);
        }
    }

    #[test]
    fn fec_off_when_either_count_is_zero() {
        for (ds, ps) in [(0, 0), (0, 3), (10, 0)] {
            let s = KcpFlags {
                datashard: ds,
                parityshard: ps,
                ..flags()
            }
            .session(Side::Client)
            .unwrap();
            assert!(!s.fec_enabled());
            assert_eq!((s.data_shards, s.parity_shards), (0, 0));
        }
        let s = KcpFlags {
            datashard: 0,
            parityshard: 0,
            crypt: "none".into(),
            ..flags()
        }
        .session(Side::Client)
        .unwrap();
        assert_eq!(
            Describe(&s).to_string(),
            "crypt none, no fec, mode fast, mtu 1350, sndwnd 128, rcvwnd 512"
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = |f: KcpFlags| f.session(Side::Client).unwrap_err().to_string();
        let e = err(KcpFlags {
            crypt: "rot13".into(),
            ..flags()
        });
        assert!(e.starts_with("--crypt rot13: "), "{e}");
        let e = err(KcpFlags {
            prefix: "kcp-",
            mode: "turbo".into(),
            ..flags()
        });
        assert!(e.starts_with("--kcp-mode turbo: "), "{e}");
        for mtu in [-1, 0, 49, 52, 1501, 9000] {
            let e = err(tuned(KcpTuning {
                mtu: Some(mtu),
                ..KcpTuning::default()
            }));
            assert!(e.starts_with(&format!("--mtu {mtu}: ")), "{e}");
        }
        let e = err(tuned(KcpTuning {
            sndwnd: Some(0),
            ..KcpTuning::default()
        }));
        assert!(e.starts_with("--sndwnd 0: "), "{e}");
        let e = err(tuned(KcpTuning {
            rcvwnd: Some(70000),
            ..KcpTuning::default()
        }));
        assert!(e.starts_with("--rcvwnd 70000: "), "{e}");
        let e = err(tuned(KcpTuning {
            dscp: Some(64),
            ..KcpTuning::default()
        }));
        assert!(e.starts_with("--dscp 64: must be between 0 and 63"), "{e}");
        let e = err(KcpFlags {
            prefix: "kcp-",
            mode: "manual".into(),
            tuning: KcpTuning {
                interval: Some(5),
                ..KcpTuning::default()
            },
            ..flags()
        });
        assert!(
            e.starts_with("--kcp-interval 5: must be between 10 and 5000"),
            "{e}"
        );
        let e = err(tuned(KcpTuning {
            nc: Some(2),
            ..KcpTuning::default()
        }));
        assert!(e.starts_with("--nc 2: must be between 0 and 1"), "{e}");
        let e = err(KcpFlags {
            datashard: 200,
            parityshard: 100,
            ..flags()
        });
        assert!(e.contains("256"), "{e}");
    }

    #[test]
    fn socket_options_reach_the_session() {
        let s = tuned(KcpTuning {
            dscp: Some(46),
            sockbuf: Some(1 << 20),
            mtu: Some(1200),
            ..KcpTuning::default()
        })
        .session(Side::Server)
        .unwrap();
        assert_eq!((s.dscp, s.sockbuf, s.mtu), (46, 1 << 20, 1200));
        assert_eq!(
            Describe(&s).to_string(),
            "crypt aes, fec 10/3, mode fast, mtu 1200, sndwnd 1024, rcvwnd 1024, dscp 46, \
             sockbuf 1048576"
        );
    }

    #[test]
    fn the_tunnel_takes_the_same_flags() {
        let tuning = KcpTuning {
            nodelay: Some(1),
            interval: Some(20),
            resend: Some(2),
            nc: Some(1),
            sndwnd: Some(256),
            rcvwnd: Some(2048),
            mtu: Some(1400),
            dscp: Some(10),
            sockbuf: Some(1 << 22),
        }
        .check("")
        .unwrap();
        let mut cfg = nodelink_tunnel::Config::for_role(nodelink_tunnel::Role::Client);
        tuning.apply_to_tunnel(&mut cfg);
        assert_eq!(
            (
                cfg.manual.nodelay,
                cfg.manual.interval,
                cfg.manual.resend,
                cfg.manual.nc
            ),
            (true, 20, 2, true)
        );
        assert_eq!((cfg.sndwnd, cfg.rcvwnd), (Some(256), Some(2048)));
        assert_eq!((cfg.mtu, cfg.dscp, cfg.sockbuf), (1400, 10, 1 << 22));
    }
}

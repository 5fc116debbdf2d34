//! KCP flags, named as kcptun names them, and turning them into a session configuration.
//!
//! Two spellings of the same settings:
//!
//! * `nodelink kcp serve|bench` take kcptun's own names: `--crypt`, `--key`,
//!   `--datashard`/`--ds`, `--parityshard`/`--ps`, `--mode`, `--mtu`, `--sndwnd`,
//!   `--rcvwnd` (and `--acknodelay`, accepted and without effect: ACKs always leave at
//!   once);
//! * `nodelink serve|ping --kcp` take them prefixed with `kcp-` (`--kcp-crypt`,
//!   `--kcp-ds`, ...), since `ping` has a `--mode` of its own.
//!
//! Defaults are kcptun's: `aes`, key `it's a secrect`, FEC 10/3, mode `fast`, MTU 1350,
//! windows 128/512 for a client and 1024/1024 for a server; ACKs leave as soon as the data
//! they acknowledge was processed (`nodelink_kcp::AckTiming::Prompt`), where kcptun waits
//! for the flush interval unless `-acknodelay` is given.
//! As in kcp-go, FEC is off when either shard count is 0. kcptun's `manual` mode
//! (`--nodelay --interval --resend --nc`) is not offered: only the four presets.
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
    /// UDP payload limit.
    pub mtu: usize,
    /// Send window; `None` for the side's default.
    pub sndwnd: Option<u32>,
    /// Receive window; `None` for the side's default.
    pub rcvwnd: Option<u32>,
    /// Manual mode's parameters (`--mode manual`), each `None` when not given.
    pub manual: ManualFlags,
}

/// kcptun's manual-mode flags: `--nodelay --interval --resend --nc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Args)]
pub struct ManualFlags {
    /// With --mode manual: KCP nodelay, 0 or 1 [default: 0]
    #[arg(long, value_name = "0|1", value_parser = clap::value_parser!(u8).range(0..=1))]
    pub nodelay: Option<u8>,
    /// With --mode manual: flush interval in milliseconds, 1 to 5000 [default: 50]
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub interval: Option<u32>,
    /// With --mode manual: fast retransmit after this many skipping ACKs, 0 for off
    /// [default: 0]
    #[arg(long, value_name = "N")]
    pub resend: Option<u32>,
    /// With --mode manual: 1 turns congestion control off [default: 0]
    #[arg(long, value_name = "0|1", value_parser = clap::value_parser!(u8).range(0..=1))]
    pub nc: Option<u8>,
}

impl ManualFlags {
    fn any(&self) -> bool {
        *self != ManualFlags::default()
    }

    /// `(nodelay, interval, resend, nc)` with kcptun's defaults for what is not given.
    fn params(&self) -> (bool, u32, u32, bool) {
        (
            self.nodelay == Some(1),
            self.interval.unwrap_or(50),
            self.resend.unwrap_or(0),
            self.nc == Some(1),
        )
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
        let manual = self.mode == "manual";
        let mode: Mode = if manual {
            Mode::default()
        } else {
            if self.manual.any() {
                bail!("--nodelay, --interval, --resend and --nc need --{p}mode manual");
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
        let sndwnd = window(p, "sndwnd", self.sndwnd.unwrap_or(default_snd))?;
        let rcvwnd = window(p, "rcvwnd", self.rcvwnd.unwrap_or(default_rcv))?;
        let session = KcpConfig::default()
            .with_crypt(crypt)
            .with_key(self.key.clone())
            .with_fec(ds, ps)
            .with_mode(mode)
            .with_mtu(self.mtu)
            .with_window(sndwnd, rcvwnd)
            .with_stream(true);
        let session = if manual {
            let (nodelay, interval, resend, nc) = self.manual.params();
            session.with_nodelay(nodelay, interval, resend, nc)
        } else {
            session
        };
        // The segment header (24 bytes), the crypto and FEC headers must leave room for data.
        let overhead = self.mtu - session.mss().min(self.mtu);
        let min_mtu = (overhead + 1).max(50);
        if self.mtu > MAX_SESSION_MTU || self.mtu < min_mtu {
            bail!(
                "--{p}mtu {}: must be between {min_mtu} and {MAX_SESSION_MTU} with these settings",
                self.mtu
            );
        }
        Ok(session)
    }
}

fn window(prefix: &str, name: &str, value: u32) -> anyhow::Result<u16> {
    match u16::try_from(value) {
        Ok(w) if w > 0 => Ok(w),
        _ => bail!("--{prefix}{name} {value}: must be between 1 and 65535"),
    }
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
    /// Manual mode's parameters.
    #[command(flatten)]
    pub manual: ManualFlags,
    /// Largest UDP payload, all headers included.
    #[arg(long, value_name = "BYTES", default_value_t = 1350)]
    pub mtu: usize,
    /// Send window in segments [default: 128 for bench, 1024 for serve].
    #[arg(long, value_name = "W")]
    pub sndwnd: Option<u32>,
    /// Receive window in segments [default: 512 for bench, 1024 for serve].
    #[arg(long, value_name = "W")]
    pub rcvwnd: Option<u32>,
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
            mtu: self.mtu,
            sndwnd: self.sndwnd,
            rcvwnd: self.rcvwnd,
            manual: self.manual,
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
    /// KCP preset: normal, fast, fast2, fast3.
    #[arg(long, value_name = "MODE", default_value = "fast", requires = "kcp")]
    pub kcp_mode: String,
    /// KCP MTU (largest UDP payload).
    #[arg(long, value_name = "BYTES", default_value_t = 1350, requires = "kcp")]
    pub kcp_mtu: usize,
    /// KCP send window [default: 128 for ping, 1024 for serve].
    #[arg(long, value_name = "W", requires = "kcp")]
    pub kcp_sndwnd: Option<u32>,
    /// KCP receive window [default: 512 for ping, 1024 for serve].
    #[arg(long, value_name = "W", requires = "kcp")]
    pub kcp_rcvwnd: Option<u32>,
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
            mtu: self.kcp_mtu,
            sndwnd: self.kcp_sndwnd,
            rcvwnd: self.kcp_rcvwnd,
            manual: ManualFlags::default(),
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
            mtu: 1350,
            sndwnd: None,
            rcvwnd: None,
            manual: ManualFlags::default(),
        }
    }

    #[test]
    fn manual_mode_takes_kcptuns_four_parameters() {
        let manual = |nodelay, interval, resend, nc| ManualFlags {
            nodelay,
            interval,
            resend,
            nc,
        };
        let s = KcpFlags {
            mode: "manual".into(),
            manual: manual(Some(1), Some(5), Some(2), Some(1)),
            ..flags()
        }
        .session(Side::Client)
        .unwrap();
        assert_eq!(s.nodelay_params(), (true, 5, 2, true));
        assert_eq!(
            Describe(&s).to_string(),
            "crypt aes, fec 10/3, mode manual (nodelay 1, interval 5 ms, resend 2, nc 1), \
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
            manual: manual(None, Some(10), None, None),
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
        for mtu in [0, 49, 52, 1501, 9000] {
            let e = err(KcpFlags { mtu, ..flags() });
            assert!(e.starts_with(&format!("--mtu {mtu}: ")), "{e}");
        }
        let e = err(KcpFlags {
            sndwnd: Some(0),
            ..flags()
        });
        assert!(e.starts_with("--sndwnd 0: "), "{e}");
        let e = err(KcpFlags {
            rcvwnd: Some(70000),
            ..flags()
        });
        assert!(e.starts_with("--rcvwnd 70000: "), "{e}");
        let e = err(KcpFlags {
            datashard: 200,
            parityshard: 100,
            ..flags()
        });
        assert!(e.contains("256"), "{e}");
    }
}

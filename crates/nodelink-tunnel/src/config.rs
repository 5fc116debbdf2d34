//! [`TunnelConfig`]: every kcptun setting, for either end, with kcptun's names and defaults.
//!
//! A configuration is built in kcptun's order:
//!
//! 1. the role's defaults ([`TunnelConfig::client`] or [`TunnelConfig::server`]; they differ
//!    in the addresses and the KCP windows);
//! 2. the command line (the CLI sets the fields it was given);
//! 3. a JSON file ([`TunnelConfig::apply_json`], kcptun's `-c`), whose keys **override** the
//!    command line, as kcptun's do;
//! 4. [`TunnelConfig::validate`], which turns the raw values into a KCP
//!    [`KcpConfig`] and the smux settings, or a one-line error naming the flag.
//!
//! The numeric fields are `i64`, like kcptun's `int`s, so that a negative value read from a
//! file reaches validation and gets a message rather than a parse failure.
//!
//! ```
//! use nodelink_tunnel::TunnelConfig;
//! let mut cfg = TunnelConfig::client();
//! cfg.target = "127.0.0.1:29900".into();
//! cfg.apply_json(r#"{"crypt": "salsa20", "mode": "fast3", "conn": 2}"#).unwrap();
//! let checked = cfg.validate().unwrap();
//! assert_eq!(checked.session.mode.name(), "fast3");
//! assert_eq!((checked.session.sndwnd, checked.session.rcvwnd), (128, 512));
//! cfg.smuxver = 3;
//! assert_eq!(cfg.validate().unwrap_err().to_string(), "--smuxver 3: unsupported smux version (1 or 2)");
//! ```

use std::path::Path;
use std::time::Duration;

use nodelink_kcp::crypt::CipherKind;
use nodelink_kcp::pipeline::MAX_SESSION_MTU;
use nodelink_kcp::{Config as KcpConfig, Mode};
use serde_json::Value;

use crate::{Error, ErrorKind};

/// kcptun's default passphrase (sic).
pub const DEFAULT_KEY: &str = "it's a secrect";

/// smux's keepalive timeout (kcptun never changes it): a session without any frame from the
/// peer for this long is dead. The keepalive interval must not exceed it.
pub const SMUX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which end of the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts TCP connections and carries them over KCP to a server (`kcptun-client`).
    Client,
    /// Accepts KCP sessions and forwards their streams to a TCP target (`kcptun-server`).
    Server,
}

/// Every kcptun setting. Field names are kcptun's flag and JSON key names, except the two
/// addresses, which kcptun names by role (see [`TunnelConfig::listen`] and
/// [`TunnelConfig::target`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Which end this is.
    pub role: Role,
    /// Where to listen: a TCP address for the client (kcptun `localaddr`, default
    /// `:12948`), a UDP address for the server (kcptun `listen`, default `:29900`). An empty
    /// host means every interface.
    pub listen: String,
    /// Where to forward: the server's UDP address for the client (kcptun `remoteaddr`, no
    /// usable default), the TCP target (or a Unix socket path) for the server (kcptun
    /// `target`, default `127.0.0.1:12948`).
    pub target: String,
    /// Pre-shared passphrase, stretched with PBKDF2 (salt `kcp-go`).
    pub key: String,
    /// Cipher name (`aes`, `salsa20`, `xor`, `none`, ...).
    pub crypt: String,
    /// `normal`, `fast`, `fast2`, `fast3`, or `manual` (use `nodelay`/`interval`/`resend`/`nc`).
    pub mode: String,
    /// Client: number of KCP sessions streams are spread over (round robin).
    pub conn: i64,
    /// Client: seconds after which a session takes no new streams and is replaced (0: never).
    pub autoexpire: i64,
    /// Client: seconds an expired session may live on for its streams before it is closed.
    pub scavengettl: i64,
    /// Largest UDP payload.
    pub mtu: i64,
    /// KCP send window (segments): 128 client, 1024 server.
    pub sndwnd: i64,
    /// KCP receive window (segments): 512 client, 1024 server.
    pub rcvwnd: i64,
    /// Reed-Solomon data shards (0 with `parityshard` 0: no FEC).
    pub datashard: i64,
    /// Reed-Solomon parity shards.
    pub parityshard: i64,
    /// DSCP of outgoing datagrams (6 bits).
    pub dscp: i64,
    /// No snappy compression (must match the peer).
    pub nocomp: bool,
    /// Flush ACKs as soon as a packet arrives.
    pub acknodelay: bool,
    /// Manual mode: KCP nodelay (0 or 1).
    pub nodelay: i64,
    /// Manual mode: flush interval in ms.
    pub interval: i64,
    /// Manual mode: fast-retransmit threshold (0: off).
    pub resend: i64,
    /// Manual mode: 1 turns congestion control off.
    pub nc: i64,
    /// UDP socket buffer size in bytes (each direction).
    pub sockbuf: i64,
    /// smux protocol version, 1 or 2 (must match the peer).
    pub smuxver: i64,
    /// smux session-wide receive buffer in bytes.
    pub smuxbuf: i64,
    /// smux per-stream receive buffer in bytes (flow-control window in v2).
    pub streambuf: i64,
    /// Seconds between smux keepalives.
    pub keepalive: i64,
    /// SNMP counter log file, through Go's time layout (`./snmp-20060102.log`); empty: off.
    pub snmplog: String,
    /// Seconds between SNMP log lines (0: off).
    pub snmpperiod: i64,
    /// No "stream opened/closed" logs.
    pub quiet: bool,
}

/// What [`TunnelConfig::validate`] derives: everything typed and checked.
#[derive(Debug, Clone)]
pub struct Checked {
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

impl TunnelConfig {
    /// kcptun-client's defaults. `target` (the server) is empty and must be set.
    pub fn client() -> TunnelConfig {
        TunnelConfig {
            role: Role::Client,
            listen: ":12948".into(),
            target: String::new(),
            sndwnd: 128,
            rcvwnd: 512,
            ..TunnelConfig::server()
        }
    }

    /// kcptun-server's defaults.
    pub fn server() -> TunnelConfig {
        TunnelConfig {
            role: Role::Server,
            listen: ":29900".into(),
            target: "127.0.0.1:12948".into(),
            key: DEFAULT_KEY.into(),
            crypt: "aes".into(),
            mode: "fast".into(),
            conn: 1,
            autoexpire: 0,
            scavengettl: 600,
            mtu: 1350,
            sndwnd: 1024,
            rcvwnd: 1024,
            datashard: 10,
            parityshard: 3,
            dscp: 0,
            nocomp: false,
            acknodelay: false,
            nodelay: 0,
            interval: 50,
            resend: 0,
            nc: 0,
            sockbuf: 4 << 20,
            smuxver: 1,
            smuxbuf: 4 << 20,
            streambuf: 2 << 20,
            keepalive: 10,
            snmplog: String::new(),
            snmpperiod: 60,
            quiet: false,
        }
    }

    /// The defaults of `role`.
    pub fn for_role(role: Role) -> TunnelConfig {
        match role {
            Role::Client => TunnelConfig::client(),
            Role::Server => TunnelConfig::server(),
        }
    }

    /// kcptun's JSON key of the listen address for this role.
    fn listen_key(&self) -> &'static str {
        match self.role {
            Role::Client => "localaddr",
            Role::Server => "listen",
        }
    }

    /// kcptun's JSON key of the target address for this role.
    fn target_key(&self) -> &'static str {
        match self.role {
            Role::Client => "remoteaddr",
            Role::Server => "target",
        }
    }

    /// Reads a kcptun JSON configuration file and applies it ([`TunnelConfig::apply_json`]).
    ///
    /// # Errors
    ///
    /// an error of kind [`ErrorKind::ConfigFile`] when the file cannot be read or a value has the wrong type.
    pub fn load_json(&mut self, path: &Path) -> Result<(), Error> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::config_file(path.display(), e))?;
        self.apply_json(&text).map_err(|e| match e.kind() {
            ErrorKind::Config => Error::config_file(path.display(), e),
            _ => e,
        })
    }

    /// Applies a kcptun JSON configuration: every key present overrides the current value.
    /// Keys match case-insensitively (as Go's decoder does); keys kcptun has but this tunnel
    /// does not act on (`log`, `pprof`, the other role's addresses) and unknown keys are
    /// ignored with a warning, as kcptun ignores unknown keys. `"tcp": true` is refused
    /// (the raw-TCP emulation is not implemented).
    ///
    /// # Errors
    ///
    /// an error of kind [`ErrorKind::Config`] for text that is not a JSON object or a value of the wrong type.
    pub fn apply_json(&mut self, text: &str) -> Result<(), Error> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(format!("not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::config("the JSON configuration must be an object"));
        };
        let (listen_key, target_key) = (self.listen_key(), self.target_key());
        for (raw_key, v) in &map {
            let key = raw_key.to_ascii_lowercase();
            let k = key.as_str();
            if v.is_null() {
                // Go leaves a field unchanged for a JSON null.
                continue;
            }
            match k {
                _ if k == listen_key => self.listen = string(k, v)?,
                _ if k == target_key => self.target = string(k, v)?,
                "key" => self.key = string(k, v)?,
                "crypt" => self.crypt = string(k, v)?,
                "mode" => self.mode = string(k, v)?,
                "snmplog" => self.snmplog = string(k, v)?,
                "nocomp" => self.nocomp = boolean(k, v)?,
                "acknodelay" => self.acknodelay = boolean(k, v)?,
                "quiet" => self.quiet = boolean(k, v)?,
                "conn" if self.role == Role::Client => self.conn = int(k, v)?,
                "autoexpire" if self.role == Role::Client => self.autoexpire = int(k, v)?,
                "scavengettl" if self.role == Role::Client => self.scavengettl = int(k, v)?,
                "mtu" => self.mtu = int(k, v)?,
                "sndwnd" => self.sndwnd = int(k, v)?,
                "rcvwnd" => self.rcvwnd = int(k, v)?,
                "datashard" => self.datashard = int(k, v)?,
                "parityshard" => self.parityshard = int(k, v)?,
                "dscp" => self.dscp = int(k, v)?,
                "nodelay" => self.nodelay = int(k, v)?,
                "interval" => self.interval = int(k, v)?,
                "resend" => self.resend = int(k, v)?,
                "nc" => self.nc = int(k, v)?,
                "sockbuf" => self.sockbuf = int(k, v)?,
                "smuxver" => self.smuxver = int(k, v)?,
                "smuxbuf" => self.smuxbuf = int(k, v)?,
                "streambuf" => self.streambuf = int(k, v)?,
                "keepalive" => self.keepalive = int(k, v)?,
                "snmpperiod" => self.snmpperiod = int(k, v)?,
                "tcp" => {
                    if boolean(k, v)? {
                        return Err(Error::config(
                            "\"tcp\": true: the raw-TCP emulation is not supported",
                        ));
                    }
                }
                "log" => {
                    if !string(k, v)?.is_empty() {
                        tracing::warn!("\"log\" is ignored: logs go to stderr");
                    }
                }
                _ => tracing::warn!(key = %raw_key, "unknown configuration key ignored"),
            }
        }
        Ok(())
    }

    /// Checks every value and derives the typed settings.
    ///
    /// # Errors
    ///
    /// an error of kind [`ErrorKind::Config`] with a one-line message naming the flag (`--mtu 9000: ...`).
    pub fn validate(&self) -> Result<Checked, Error> {
        if self.listen.trim().is_empty() {
            return Err(bad("--listen", "", "an address is required"));
        }
        if self.target.trim().is_empty() {
            let flag = match self.role {
                Role::Client => "--remote",
                Role::Server => "--target",
            };
            return Err(Error::config(format!("{flag} is required")));
        }
        let crypt: CipherKind = self
            .crypt
            .parse()
            .map_err(|_| bad("--crypt", &self.crypt, &cipher_names()))?;
        let nodelay = self.nodelay_params()?;
        if self.role == Role::Client {
            range("--conn", self.conn, 1, 65535)?;
            range("--autoexpire", self.autoexpire, 0, i64::from(u32::MAX))?;
            range("--scavengettl", self.scavengettl, 0, i64::from(u32::MAX))?;
        }
        let sndwnd = range("--sndwnd", self.sndwnd, 1, 65535)? as u16;
        let rcvwnd = range("--rcvwnd", self.rcvwnd, 1, 65535)? as u16;
        let ds = range("--datashard", self.datashard, 0, 255)? as usize;
        let ps = range("--parityshard", self.parityshard, 0, 255)? as usize;
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
        let dscp = range("--dscp", self.dscp, 0, 63)? as u8;
        let sockbuf = range("--sockbuf", self.sockbuf, 0, i64::from(i32::MAX))? as usize;
        let mtu = range("--mtu", self.mtu, 1, MAX_SESSION_MTU as i64)? as usize;
        let mut session = KcpConfig::default()
            .with_crypt(crypt)
            .with_key(self.key.clone())
            .with_fec(ds, ps)
            .with_mtu(mtu)
            .with_window(sndwnd, rcvwnd)
            .with_stream(true)
            .with_write_delay(false)
            .with_ack_nodelay(self.acknodelay)
            .with_sockbuf(sockbuf)
            .with_dscp(dscp);
        match self.mode.parse::<Mode>() {
            Ok(preset) => session = session.with_mode(preset),
            Err(_) => {
                let (nd, interval, resend, nc) = nodelay;
                session = session.with_nodelay(nd, interval, resend, nc);
            }
        }
        // The KCP header (24 bytes) plus the crypto and FEC headers must leave room for data.
        let largest = session.clone().with_mtu(MAX_SESSION_MTU);
        let min_mtu = (MAX_SESSION_MTU - largest.mss() + 1).max(50);
        if mtu < min_mtu {
            return Err(bad(
                "--mtu",
                &self.mtu.to_string(),
                &format!("must be between {min_mtu} and {MAX_SESSION_MTU} with these settings"),
            ));
        }
        let smux = self.smux_settings()?;
        range("--snmpperiod", self.snmpperiod, 0, i64::from(u32::MAX))?;
        Ok(Checked {
            session,
            smux,
            nodelay,
        })
    }

    /// The `(nodelay, interval, resend, nc)` of the mode, or of the manual flags.
    fn nodelay_params(&self) -> Result<(bool, u32, u32, bool), Error> {
        if let Ok(preset) = self.mode.parse::<Mode>() {
            return Ok(preset.params());
        }
        if self.mode != "manual" {
            return Err(bad(
                "--mode",
                &self.mode,
                "unknown mode (normal, fast, fast2, fast3, manual)",
            ));
        }
        let nd = range("--nodelay", self.nodelay, 0, 1)? == 1;
        let interval = range("--interval", self.interval, 10, 5000)? as u32;
        let resend = range("--resend", self.resend, 0, 255)? as u32;
        let nc = range("--nc", self.nc, 0, 1)? == 1;
        Ok((nd, interval, resend, nc))
    }

    fn smux_settings(&self) -> Result<SmuxSettings, Error> {
        let version = match self.smuxver {
            1 | 2 => self.smuxver as u8,
            v => {
                return Err(bad(
                    "--smuxver",
                    &v.to_string(),
                    "unsupported smux version (1 or 2)",
                ))
            }
        };
        let smuxbuf = range("--smuxbuf", self.smuxbuf, 1, i64::from(i32::MAX))? as usize;
        let streambuf = range("--streambuf", self.streambuf, 1, i64::from(i32::MAX))? as usize;
        if streambuf > smuxbuf {
            return Err(Error::config(format!(
                "--streambuf {streambuf}: must not be larger than --smuxbuf {smuxbuf}"
            )));
        }
        let max_keepalive = SMUX_KEEPALIVE_TIMEOUT.as_secs() as i64;
        let keepalive = range("--keepalive", self.keepalive, 1, max_keepalive)? as u64;
        Ok(SmuxSettings {
            version,
            max_receive_buffer: smuxbuf,
            max_stream_buffer: streambuf,
            keep_alive_interval: Duration::from_secs(keepalive),
        })
    }
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

fn cipher_names() -> String {
    let names: Vec<&str> = CipherKind::ALL.iter().map(|k| k.name()).collect();
    format!("unknown cipher ({})", names.join(", "))
}

fn bad(flag: &str, value: &str, why: &str) -> Error {
    if value.is_empty() {
        Error::config(format!("{flag}: {why}"))
    } else {
        Error::config(format!("{flag} {value}: {why}"))
    }
}

fn range(flag: &str, value: i64, min: i64, max: i64) -> Result<i64, Error> {
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

fn type_error(key: &str, want: &str, v: &Value) -> Error {
    Error::config(format!("\"{key}\": expected {want}, found {v}"))
}

fn string(key: &str, v: &Value) -> Result<String, Error> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| type_error(key, "a string", v))
}

fn boolean(key: &str, v: &Value) -> Result<bool, Error> {
    v.as_bool()
        .ok_or_else(|| type_error(key, "true or false", v))
}

fn int(key: &str, v: &Value) -> Result<i64, Error> {
    v.as_i64().ok_or_else(|| type_error(key, "an integer", v))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

//! `nodelink tunnel client|server`: kcptun-compatible TCP port forwarding over KCP.
//!
//! ```text
//! nodelink tunnel server --listen UDPADDR --target TCPADDR [flags]
//! nodelink tunnel client --listen TCPADDR --remote UDPADDR [flags]
//! ```
//!
//! The flags are kcptun's, with its names and per-role defaults (`--key --crypt --mode
//! --mtu --sndwnd --rcvwnd --datashard/--ds --parityshard/--ps --nocomp --smuxver --smuxbuf
//! --streambuf --keepalive --conn --autoexpire --scavengettl --sockbuf --dscp --snmplog
//! --snmpperiod --quiet -c`, and manual mode's `--nodelay --interval --resend --nc
//! --acknodelay`); kcptun's address flags are accepted as aliases (`--localaddr`/`-l`,
//! `--remoteaddr`/`-r`, `--targetaddr`/`-t`), and the key can come from `KCPTUN_KEY`.
//! A JSON file given with `-c` uses kcptun's keys and overrides the command line, as in
//! kcptun. Values are checked by the tunnel library, so a bad one is a one-line
//! `nodelink: error: --smuxver 3: ...` with exit code 1.
//!
//! The first stdout line is `listening on <addr>` (the bound address, so port 0 works).
//! Logs go to stderr at `info` (`RUST_LOG` overrides): the settings, sessions, and every
//! stream opened and closed unless `--quiet`. SIGINT or SIGTERM stops accepting, closes
//! the sessions and exits with code 0.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use nodelink_tunnel::{Role, Tunnel, TunnelConfig};
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;

use crate::out::say;
use crate::shutdown::Signals;

/// The `tunnel` subcommands.
#[derive(Debug, Subcommand)]
pub enum TunnelCommand {
    /// Accept TCP connections and carry each one over KCP to a tunnel server (kcptun-client).
    Client(ClientArgs),
    /// Accept KCP sessions and forward their streams to a TCP target (kcptun-server).
    Server(ServerArgs),
}

/// Arguments of `nodelink tunnel client`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct ClientArgs {
    /// TCP address to accept connections on [default: :12948]
    #[arg(long, short = 'l', visible_alias = "localaddr", value_name = "TCPADDR")]
    pub listen: Option<String>,
    /// UDP address of the tunnel server (required, here or in the -c file)
    #[arg(
        long,
        short = 'r',
        visible_alias = "remoteaddr",
        value_name = "UDPADDR"
    )]
    pub remote: Option<String>,
    /// Number of KCP sessions to the server; streams are spread over them in turn
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub conn: i64,
    /// Seconds after which a session takes no new streams and is replaced (0: never)
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub autoexpire: i64,
    /// Seconds an expired session may live on for its remaining streams
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub scavengettl: i64,
    /// KCP send window (packets)
    #[arg(long, value_name = "W", default_value_t = 128)]
    pub sndwnd: i64,
    /// KCP receive window (packets)
    #[arg(long, value_name = "W", default_value_t = 512)]
    pub rcvwnd: i64,
    /// Settings shared with the server.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `nodelink tunnel server`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct ServerArgs {
    /// UDP address to accept KCP sessions on [default: :29900]
    #[arg(long, short = 'l', value_name = "UDPADDR")]
    pub listen: Option<String>,
    /// Where streams go: a TCP address, or a Unix socket path [default: 127.0.0.1:12948]
    #[arg(
        long,
        short = 't',
        visible_alias = "targetaddr",
        value_name = "TCPADDR"
    )]
    pub target: Option<String>,
    /// KCP send window (packets)
    #[arg(long, value_name = "W", default_value_t = 1024)]
    pub sndwnd: i64,
    /// KCP receive window (packets)
    #[arg(long, value_name = "W", default_value_t = 1024)]
    pub rcvwnd: i64,
    /// Settings shared with the client.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// kcptun's flags common to both ends.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Pre-shared secret (both ends) [default: $KCPTUN_KEY, else "it's a secrect"]
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Cipher: aes, aes-128, aes-192, salsa20, blowfish, twofish, cast5, 3des, tea, xtea,
    /// xor, sm4, none (also null, aes-128-gcm of newer kcptun)
    #[arg(long, value_name = "NAME", default_value = "aes")]
    pub crypt: String,
    /// Profile: fast3, fast2, fast, normal, or manual (--nodelay --interval --resend --nc)
    #[arg(long, value_name = "MODE", default_value = "fast")]
    pub mode: String,
    /// Largest UDP payload
    #[arg(long, value_name = "BYTES", default_value_t = 1350)]
    pub mtu: i64,
    /// Reed-Solomon data shards (0 with --parityshard 0: no FEC)
    #[arg(long, visible_alias = "ds", value_name = "N", default_value_t = 10)]
    pub datashard: i64,
    /// Reed-Solomon parity shards
    #[arg(long, visible_alias = "ps", value_name = "M", default_value_t = 3)]
    pub parityshard: i64,
    /// DSCP of outgoing packets (6 bits)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub dscp: i64,
    /// Disable snappy compression (must match the other end)
    #[arg(long)]
    pub nocomp: bool,
    /// Flush ACKs as soon as a packet arrives
    #[arg(long)]
    pub acknodelay: bool,
    /// Manual mode: KCP nodelay, 0 or 1
    #[arg(long, value_name = "0|1", default_value_t = 0)]
    pub nodelay: i64,
    /// Manual mode: KCP flush interval in ms
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub interval: i64,
    /// Manual mode: fast retransmit after this many skipping ACKs (0: off)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub resend: i64,
    /// Manual mode: 1 turns congestion control off
    #[arg(long, value_name = "0|1", default_value_t = 0)]
    pub nc: i64,
    /// UDP socket buffer in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 4194304)]
    pub sockbuf: i64,
    /// smux version, 1 or 2 (must match the other end)
    #[arg(long, value_name = "1|2", default_value_t = 1)]
    pub smuxver: i64,
    /// smux session receive buffer in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 4194304)]
    pub smuxbuf: i64,
    /// smux per-stream receive buffer in bytes (the v2 flow-control window)
    #[arg(long, value_name = "BYTES", default_value_t = 2097152)]
    pub streambuf: i64,
    /// Seconds between smux keepalives
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub keepalive: i64,
    /// Append KCP counters to this CSV file, named through Go's time layout
    /// (./snmp-20060102.log)
    #[arg(long, value_name = "FILE", default_value = "")]
    pub snmplog: String,
    /// Seconds between SNMP log rows
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub snmpperiod: i64,
    /// Do not log every stream opened and closed
    #[arg(long)]
    pub quiet: bool,
    /// kcptun JSON configuration file; its keys override the command line
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl CommonArgs {
    fn apply(&self, cfg: &mut TunnelConfig) {
        if let Some(key) = &self.key {
            cfg.key = key.clone();
        } else if let Ok(key) = std::env::var("KCPTUN_KEY") {
            cfg.key = key;
        }
        cfg.crypt = self.crypt.clone();
        cfg.mode = self.mode.clone();
        cfg.mtu = self.mtu;
        cfg.datashard = self.datashard;
        cfg.parityshard = self.parityshard;
        cfg.dscp = self.dscp;
        cfg.nocomp = self.nocomp;
        cfg.acknodelay = self.acknodelay;
        cfg.nodelay = self.nodelay;
        cfg.interval = self.interval;
        cfg.resend = self.resend;
        cfg.nc = self.nc;
        cfg.sockbuf = self.sockbuf;
        cfg.smuxver = self.smuxver;
        cfg.smuxbuf = self.smuxbuf;
        cfg.streambuf = self.streambuf;
        cfg.keepalive = self.keepalive;
        cfg.snmplog = self.snmplog.clone();
        cfg.snmpperiod = self.snmpperiod;
        cfg.quiet = self.quiet;
    }
}

/// The configuration in kcptun's order: role defaults, then flags, then the JSON file.
pub fn config(command: &TunnelCommand) -> anyhow::Result<TunnelConfig> {
    let (mut cfg, common) = match command {
        TunnelCommand::Client(a) => {
            let mut cfg = TunnelConfig::for_role(Role::Client);
            if let Some(l) = &a.listen {
                cfg.listen = l.clone();
            }
            if let Some(r) = &a.remote {
                cfg.target = r.clone();
            }
            cfg.conn = a.conn;
            cfg.autoexpire = a.autoexpire;
            cfg.scavengettl = a.scavengettl;
            cfg.sndwnd = a.sndwnd;
            cfg.rcvwnd = a.rcvwnd;
            (cfg, &a.common)
        }
        TunnelCommand::Server(a) => {
            let mut cfg = TunnelConfig::for_role(Role::Server);
            if let Some(l) = &a.listen {
                cfg.listen = l.clone();
            }
            if let Some(t) = &a.target {
                cfg.target = t.clone();
            }
            cfg.sndwnd = a.sndwnd;
            cfg.rcvwnd = a.rcvwnd;
            (cfg, &a.common)
        }
    };
    common.apply(&mut cfg);
    if let Some(path) = &common.config {
        cfg.load_json(path)?;
    }
    Ok(cfg)
}

/// Runs a `tunnel` subcommand until SIGINT or SIGTERM.
pub async fn run(command: TunnelCommand) -> anyhow::Result<()> {
    // The tunnel's own logs (settings, sessions, streams) are what its users watch: show
    // them at `info` unless RUST_LOG says otherwise. The rest of the CLI defaults to `warn`,
    // so the tunnel gets a subscriber of its own for the duration of the command.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,nodelink_tunnel=info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .finish();
    serve(command).with_subscriber(subscriber).await
}

async fn serve(command: TunnelCommand) -> anyhow::Result<()> {
    let cfg = config(&command)?;
    // Handlers go in before the address is printed: whoever reads it may signal at once.
    let mut signals = Signals::install()?;
    let tunnel = Tunnel::bind(cfg).await?;
    say!("listening on {}", tunnel.local_addr());
    let stop = CancellationToken::new();
    let mut task = tokio::spawn(tunnel.run(stop.clone()).with_current_subscriber());
    tokio::select! {
        signal = signals.recv() => {
            tracing::info!(target: "nodelink_tunnel", "{signal} received, shutting down");
            stop.cancel();
            task.await??;
        }
        r = &mut task => r??,
    }
    Ok(())
}

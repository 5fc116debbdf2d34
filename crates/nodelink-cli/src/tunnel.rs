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
use std::time::Duration;

use clap::{Args, Subcommand};
use nodelink_tunnel::config::parse_crypt;
use nodelink_tunnel::{Config, Profile, Role, Tunnel};
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
    /// [default: 1]
    #[arg(long, value_name = "N")]
    pub conn: Option<u16>,
    /// Seconds after which a session takes no new streams and is replaced (0: never)
    /// [default: 0]
    #[arg(long, value_name = "SECONDS")]
    pub autoexpire: Option<u32>,
    /// Seconds an expired session may live on for its remaining streams [default: 600]
    #[arg(long, value_name = "SECONDS")]
    pub scavengettl: Option<u32>,
    /// KCP send window (packets) [default: 128]
    #[arg(long, value_name = "W")]
    pub sndwnd: Option<u16>,
    /// KCP receive window (packets) [default: 512]
    #[arg(long, value_name = "W")]
    pub rcvwnd: Option<u16>,
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
    /// KCP send window (packets) [default: 1024]
    #[arg(long, value_name = "W")]
    pub sndwnd: Option<u16>,
    /// KCP receive window (packets) [default: 1024]
    #[arg(long, value_name = "W")]
    pub rcvwnd: Option<u16>,
    /// Settings shared with the client.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// kcptun's flags common to both ends. Defaults are the tunnel library's
/// (`nodelink_tunnel::Config`), so a flag left out changes nothing.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Pre-shared secret (both ends) [default: $KCPTUN_KEY, else "it's a secrect"]
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Cipher: aes, aes-128, aes-192, salsa20, blowfish, twofish, cast5, 3des, tea, xtea,
    /// xor, sm4, none (also null, aes-128-gcm of newer kcptun) [default: aes]
    #[arg(long, value_name = "NAME")]
    pub crypt: Option<String>,
    /// Profile: fast3, fast2, fast, normal, or manual (--nodelay --interval --resend --nc)
    /// [default: fast]
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// Largest UDP payload [default: 1350]
    #[arg(long, value_name = "BYTES")]
    pub mtu: Option<usize>,
    /// Reed-Solomon data shards (0 with --parityshard 0: no FEC) [default: 10]
    #[arg(long, visible_alias = "ds", value_name = "N")]
    pub datashard: Option<u8>,
    /// Reed-Solomon parity shards [default: 3]
    #[arg(long, visible_alias = "ps", value_name = "M")]
    pub parityshard: Option<u8>,
    /// DSCP of outgoing packets (6 bits) [default: 0]
    #[arg(long, value_name = "N")]
    pub dscp: Option<u8>,
    /// Disable snappy compression (must match the other end)
    #[arg(long)]
    pub nocomp: bool,
    /// Accepted for kcptun compatibility: nodelink always sends ACKs as soon as the data
    /// they acknowledge was processed
    #[arg(long)]
    pub acknodelay: bool,
    /// Manual mode: KCP nodelay, 0 or 1 [default: 0]
    #[arg(long, value_name = "0|1", value_parser = clap::value_parser!(u8).range(0..=1))]
    pub nodelay: Option<u8>,
    /// Manual mode: KCP flush interval in ms [default: 50]
    #[arg(long, value_name = "MS")]
    pub interval: Option<u32>,
    /// Manual mode: fast retransmit after this many skipping ACKs (0: off) [default: 0]
    #[arg(long, value_name = "N")]
    pub resend: Option<u32>,
    /// Manual mode: 1 turns congestion control off [default: 0]
    #[arg(long, value_name = "0|1", value_parser = clap::value_parser!(u8).range(0..=1))]
    pub nc: Option<u8>,
    /// UDP socket buffer in bytes [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    pub sockbuf: Option<usize>,
    /// smux version, 1 or 2 (must match the other end) [default: 1]
    #[arg(long, value_name = "1|2")]
    pub smuxver: Option<u8>,
    /// smux session receive buffer in bytes [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    pub smuxbuf: Option<usize>,
    /// smux per-stream receive buffer in bytes (the v2 flow-control window)
    /// [default: 2097152]
    #[arg(long, value_name = "BYTES")]
    pub streambuf: Option<usize>,
    /// Seconds between smux keepalives [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub keepalive: Option<u32>,
    /// Append KCP counters to this CSV file, named through Go's time layout
    /// (./snmp-20060102.log)
    #[arg(long, value_name = "FILE")]
    pub snmplog: Option<String>,
    /// Seconds between SNMP log rows [default: 60]
    #[arg(long, value_name = "SECONDS")]
    pub snmpperiod: Option<u32>,
    /// Do not log every stream opened and closed
    #[arg(long)]
    pub quiet: bool,
    /// kcptun JSON configuration file; its keys override the command line
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Sets `cfg.$field` from the flag of the same name when it was given, through `$map`.
macro_rules! given {
    ($cfg:ident, $args:ident, $($field:ident $(=> $map:expr)?),* $(,)?) => {$(
        if let Some(v) = $args.$field.clone() {
            $cfg.$field = given!(@map v $(, $map)?);
        }
    )*};
    (@map $v:ident) => { $v };
    (@map $v:ident, $map:expr) => { $map($v) };
}

impl CommonArgs {
    fn apply(&self, cfg: &mut Config) -> anyhow::Result<()> {
        if let Some(key) = &self.key {
            cfg.key = key.clone();
        } else if let Ok(key) = std::env::var("KCPTUN_KEY") {
            cfg.key = key;
        }
        if let Some(name) = &self.crypt {
            cfg.crypt = parse_crypt(name).map_err(|e| anyhow::anyhow!("--crypt {name}: {e}"))?;
        }
        if let Some(name) = &self.mode {
            cfg.mode = name
                .parse::<Profile>()
                .map_err(|e| anyhow::anyhow!("--mode {name}: {e}"))?;
        }
        let secs = |s: u32| Duration::from_secs(s.into());
        let args = self;
        given!(cfg, args, mtu, datashard, parityshard, dscp, sockbuf, smuxver, smuxbuf,
            streambuf, snmplog, keepalive => secs, snmpperiod => secs);
        let manual = &mut cfg.manual;
        given!(manual, args, interval, resend, nodelay => |v: u8| v == 1, nc => |v: u8| v == 1);
        cfg.nocomp |= self.nocomp;
        cfg.quiet |= self.quiet;
        Ok(())
    }
}

/// The configuration in kcptun's order: role defaults, then flags, then the JSON file.
pub fn config(command: &TunnelCommand) -> anyhow::Result<Config> {
    let secs = |s: u32| Duration::from_secs(s.into());
    let (mut cfg, common) = match command {
        TunnelCommand::Client(a) => {
            let mut cfg = Config::for_role(Role::Client);
            cfg.listen.clone_from(&a.listen);
            cfg.target.clone_from(&a.remote);
            given!(cfg, a, conn, autoexpire => secs, scavengettl => secs,
                sndwnd => Some, rcvwnd => Some);
            (cfg, &a.common)
        }
        TunnelCommand::Server(a) => {
            let mut cfg = Config::for_role(Role::Server);
            cfg.listen.clone_from(&a.listen);
            cfg.target.clone_from(&a.target);
            given!(cfg, a, sndwnd => Some, rcvwnd => Some);
            (cfg, &a.common)
        }
    };
    common.apply(&mut cfg)?;
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

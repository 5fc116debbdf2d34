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
//! --snmpperiod --quiet -c`, manual mode's `--nodelay --interval --resend --nc`, and
//! `--acknodelay`, accepted and without effect: nodelink always acknowledges at once).
//! kcptun's address flags are accepted as aliases (`--localaddr`/`-l`, `--remoteaddr`/`-r`,
//! `--targetaddr`/`-t`), and the key can come from `KCPTUN_KEY`. A JSON file given with
//! `-c` uses kcptun's keys and overrides the command line, as in kcptun. A bad value is a
//! one-line `nodelink: error: --smuxver 3: ...` with exit code 1, whether it does not fit
//! the setting's type (checked here) or breaks a rule of the tunnel library's
//! `Config::validate`. `--crypt` and `--mode` are checked when given, even if the file
//! sets them too.
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

use crate::kcp_args::{fit, KcpTuning};
use crate::out::say;
use crate::shutdown::Signals;

/// The `tunnel` subcommands.
#[derive(Debug, Subcommand)]
pub enum TunnelCommand {
    /// Accept TCP connections and carry each one over KCP to a tunnel server (kcptun-client).
    Client(Box<ClientArgs>),
    /// Accept KCP sessions and forward their streams to a TCP target (kcptun-server).
    Server(Box<ServerArgs>),
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
    pub conn: Option<i64>,
    /// Seconds after which a session takes no new streams and is replaced (0: never)
    /// [default: 0]
    #[arg(long, value_name = "SECONDS")]
    pub autoexpire: Option<i64>,
    /// Seconds an expired session may live on for its remaining streams [default: 600]
    #[arg(long, value_name = "SECONDS")]
    pub scavengettl: Option<i64>,
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
    /// Reed-Solomon data shards (0 with --parityshard 0: no FEC) [default: 10]
    #[arg(long, visible_alias = "ds", value_name = "N")]
    pub datashard: Option<i64>,
    /// Reed-Solomon parity shards [default: 3]
    #[arg(long, visible_alias = "ps", value_name = "M")]
    pub parityshard: Option<i64>,
    /// Disable snappy compression (must match the other end)
    #[arg(long)]
    pub nocomp: bool,
    /// Accepted for kcptun compatibility: nodelink always sends ACKs as soon as the data
    /// they acknowledge was processed
    #[arg(long)]
    pub acknodelay: bool,
    /// kcptun's tuning flags (manual mode, windows, MTU, DSCP, socket buffers), the same
    /// struct as `nodelink kcp serve|bench`.
    #[command(flatten)]
    pub tuning: KcpTuning,
    /// smux version, 1 or 2 (must match the other end) [default: 1]
    #[arg(long, value_name = "1|2")]
    pub smuxver: Option<i64>,
    /// smux session receive buffer in bytes [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    pub smuxbuf: Option<i64>,
    /// smux per-stream receive buffer in bytes (the v2 flow-control window)
    /// [default: 2097152]
    #[arg(long, value_name = "BYTES")]
    pub streambuf: Option<i64>,
    /// Seconds between smux keepalives [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub keepalive: Option<i64>,
    /// Append KCP counters to this CSV file, named through Go's time layout
    /// (./snmp-20060102.log)
    #[arg(long, value_name = "FILE")]
    pub snmplog: Option<String>,
    /// Seconds between SNMP log rows [default: 60]
    #[arg(long, value_name = "SECONDS")]
    pub snmpperiod: Option<i64>,
    /// Do not log every stream opened and closed
    #[arg(long)]
    pub quiet: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (printed as the second line; not a
    /// kcptun flag)
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Server: memory its sessions' data may cost, both ways (default 1G, two fifths of
    /// it for the bytes, the rest for what holding them costs; not a kcptun flag): half
    /// for the KCP sessions (past it, datagrams of sessions holding more than their share
    /// are dropped until they are read and acknowledged), half for the smux sessions
    /// (past it, those over their floor stop reading). Suffixes k, M, G.
    #[arg(long, value_name = "BYTES", value_parser = crate::cli::parse_bytes)]
    pub max_memory: Option<usize>,
    /// kcptun JSON configuration file; its keys override the command line
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Sets `cfg.$field` from the flag of the same name when it was given: the value must fit
/// the field's type (else a one-line error naming the flag, exit code 1, like the range
/// checks of `Config::validate`), then goes through `$map`.
macro_rules! given {
    ($cfg:expr, $args:ident, $($field:ident: $ty:ty $(=> $map:expr)?),* $(,)?) => {$(
        if let Some(v) = $args.$field {
            let v = fit(concat!("--", stringify!($field)), v, 0, <$ty>::MAX as u64)? as $ty;
            $cfg.$field = given!(@map v $(, $map)?);
        }
    )*};
    (@map $v:ident) => { $v };
    (@map $v:ident, $map:expr) => { $map($v) };
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(s.into())
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
        if let Some(path) = &self.snmplog {
            cfg.snmplog = path.clone();
        }
        let args = self;
        given!(cfg, args, datashard: u8, parityshard: u8, smuxver: u8, smuxbuf: usize,
            streambuf: usize, keepalive: u32 => secs, snmpperiod: u32 => secs);
        self.tuning.check("")?.apply_to_tunnel(cfg);
        cfg.max_memory = crate::cli::held_budget(self.max_memory);
        cfg.nocomp |= self.nocomp;
        cfg.quiet |= self.quiet;
        Ok(())
    }
}

/// The configuration in kcptun's order: role defaults, then flags, then the JSON file.
/// `--crypt` and `--mode` are checked when given, even if the file sets them too.
pub fn config(command: &TunnelCommand) -> anyhow::Result<Config> {
    let (mut cfg, common) = match command {
        TunnelCommand::Client(a) => {
            let mut cfg = Config::for_role(Role::Client);
            cfg.listen.clone_from(&a.listen);
            cfg.target.clone_from(&a.remote);
            given!(cfg, a, conn: u16, autoexpire: u32 => secs, scavengettl: u32 => secs);
            (cfg, &a.common)
        }
        TunnelCommand::Server(a) => {
            let mut cfg = Config::for_role(Role::Server);
            cfg.listen.clone_from(&a.listen);
            cfg.target.clone_from(&a.target);
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
    let metrics_at = match &command {
        TunnelCommand::Client(a) => a.common.metrics.as_deref(),
        TunnelCommand::Server(a) => a.common.metrics.as_deref(),
    };
    if let Some(at) = metrics_at {
        let handle = tunnel.stats_handle();
        let collect: crate::metrics::Collect = std::sync::Arc::new(move || {
            use crate::metrics::Metric;
            let t = handle.stats();
            let mut v = vec![
                Metric::counter(
                    "nodelink_tunnel_sessions_opened_total",
                    "KCP sessions dialled (client) or accepted (server).",
                    t.sessions_opened,
                ),
                Metric::counter(
                    "nodelink_tunnel_streams_forwarded_total",
                    "Streams forwarded.",
                    t.streams_forwarded,
                ),
                Metric::counter(
                    "nodelink_tunnel_streams_failed_total",
                    "Streams given up (no session, target unreachable).",
                    t.streams_failed,
                ),
                Metric::counter(
                    "nodelink_tunnel_streams_closed_total",
                    "Streams whose copying ended.",
                    t.streams_closed,
                ),
                Metric::counter(
                    "nodelink_tunnel_streams_refused_total",
                    "Streams refused over the stream limit.",
                    t.streams_refused,
                ),
                Metric::gauge(
                    "nodelink_tunnel_streams",
                    "Streams being forwarded now.",
                    t.streams_forwarded.saturating_sub(t.streams_closed) as f64,
                ),
            ];
            v.extend(crate::metrics::kcp_snmp());
            v
        });
        crate::metrics::start(at, collect, stop.child_token()).await?;
    }
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

//! Command-line syntax.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::kcp_args::{KcpArgs, LinkKcpArgs};
use crate::tls_args::{ClientTlsArgs, ServerTlsArgs};

/// Serve, ping and tour NEO-compatible multiplexed links.
#[derive(Debug, Parser)]
#[command(name = "nodelink", version, propagate_version = true, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// More log output on stderr: -v info, -vv debug, -vvv trace (default warn; RUST_LOG is
    /// honoured when neither this nor --log-level is given).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log filter: a level (error, warn, info, debug, trace) or RUST_LOG-style directives
    /// such as `nodelink=debug`. Overrides -v and RUST_LOG.
    #[arg(long, value_name = "FILTER", global = true)]
    pub log_level: Option<String>,
    /// Worker threads of the async runtime (default: one per CPU the process may use).
    #[arg(long, value_name = "N", global = true,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

/// Which NEO implementation's rules a link follows (`--dialect`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum DialectArg {
    /// NEO/go's neonet: ids by role (odd/even), many messages per connection; nodelink
    /// peers agree on flow control on top of it.
    #[default]
    NeoGo,
    /// NEO/py 1.12: ids 0, 1, 2, ... on both sides, routing by the answer bit, one request
    /// and at most one answer, nothing else ever sent.
    NeoPy,
}

impl From<DialectArg> for nodelink::Dialect {
    fn from(d: DialectArg) -> Self {
        match d {
            DialectArg::NeoGo => nodelink::Dialect::NeoGo,
            DialectArg::NeoPy => nodelink::Dialect::NeoPy,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an echo server: every request with code C is answered with code C|0x8000 and
    /// the same payload (so NEO's Ping gets a Pong). Stops on Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Measure round trips to a node: NEO's Ping/Pong, or echoed payloads with --size.
    Ping(PingArgs),
    /// Start a server and a client in this process and show what happens, and how fast:
    /// the link (over TCP, then TLS), then KCP (also through a lossy relay), the endpoint
    /// transport and the tunnel.
    Tour(TourArgs),
    /// Raw KCP sessions (reliable UDP, kcp-go / kcptun compatible): an echo server and a
    /// throughput bench.
    #[command(subcommand)]
    Kcp(KcpCommand),
    /// Endpoint transport compatible with Haskell's network-transport-tcp: an echo
    /// server and a ping client.
    #[command(subcommand)]
    Nt(crate::nt::NtCommand),
    /// kcptun-compatible TCP port forwarding over KCP (smux, snappy framing).
    #[command(subcommand)]
    Tunnel(crate::tunnel::TunnelCommand),
}

/// The `kcp` subcommands.
#[derive(Debug, Subcommand)]
pub enum KcpCommand {
    /// Echo every stream byte back on every KCP session. Stops on Ctrl-C or SIGTERM.
    Serve(KcpServeArgs),
    /// Send pseudo-random bytes over one KCP session, verify the echo, report throughput
    /// and the session counters.
    Bench(KcpBenchArgs),
}

/// Arguments of `nodelink kcp serve`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct KcpServeArgs {
    /// UDP address to listen on, such as 127.0.0.1:29900 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (printed as the second line).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Memory the sessions' data may cost, both ways: unread, and echoed but not yet
    /// acknowledged (default 1 GiB; two fifths of it for the bytes themselves, the rest
    /// for what holding them costs); past it, datagrams of sessions holding more than
    /// their share are dropped until they are read and acknowledged (KCP resends them).
    /// Suffixes k, M, G.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_memory: Option<usize>,
    /// KCP settings (kcptun's flag names and server defaults).
    #[command(flatten)]
    pub kcp: KcpArgs,
}

/// Arguments of `nodelink kcp bench`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct KcpBenchArgs {
    /// UDP address of the echo server.
    #[arg(value_name = "ADDR")]
    pub addr: String,
    /// Bytes to send (and expect back).
    #[arg(long, short = 's', value_name = "BYTES", default_value_t = 4 << 20)]
    pub size: usize,
    /// Seed of the pseudo-random bytes.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub timeout: f64,
    /// Print the result as one JSON object on stdout instead of text lines.
    #[arg(long)]
    pub json: bool,
    /// KCP settings (kcptun's flag names and client defaults).
    #[command(flatten)]
    pub kcp: KcpArgs,
}

/// Arguments of `nodelink tour`.
#[derive(Debug, Args)]
pub struct TourArgs {
    /// The dialect both sides speak.
    #[arg(long, value_enum, default_value_t = DialectArg::NeoGo)]
    pub dialect: DialectArg,
    /// Show the link layer over TCP only (leave out TLS, KCP, the endpoint transport and
    /// the tunnel).
    #[arg(long)]
    pub link_only: bool,
    /// Print each step's figures as one JSON object per line instead of the text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `nodelink serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, such as 127.0.0.1:5551 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (printed as the second line).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// The dialect to speak: neo-go (NEO/go's neonet) or neo-py (NEO/py 1.12).
    #[arg(long, value_enum, default_value_t = DialectArg::NeoGo)]
    pub dialect: DialectArg,
    /// NEO protocol version word sent in the handshake (`--version` prints the tool's).
    #[arg(long, value_name = "N", default_value_t = nodelink::DEFAULT_VERSION)]
    pub protocol_version: u32,
    /// Most links served at once; more clients wait until one ends (default: the
    /// open-file limit, raised to its maximum at start, less 320).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_links: Option<u32>,
    /// Memory all links may cost together (default 1 GiB; two fifths of it for the bytes
    /// held, the rest for what holding them costs): requests received and not yet handled, and
    /// answers not yet taken by the client; past it, links holding more than their share
    /// stop being read, and queue at most their share, until they catch up. Suffixes k,
    /// M, G (powers of 1024) are accepted.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_memory: Option<usize>,
    /// End links whose client sent nothing for this many seconds (nodelink clients are
    /// probed first, so only dead ones go; strict NEO clients are not probed). Off by
    /// default.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..))]
    pub idle_timeout: Option<u32>,
    /// TLS settings.
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// KCP settings (`--kcp` and `--kcp-*`).
    #[command(flatten)]
    pub kcp: LinkKcpArgs,
}

/// How `ping` sends its requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PingMode {
    /// One lightweight connection per request (`Link::ask1`).
    Ask1,
    /// One full connection per worker, requests sent one after another on it.
    Conn,
}

impl PingMode {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PingMode::Ask1 => "ask1",
            PingMode::Conn => "conn",
        }
    }
}

/// Arguments of `nodelink ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// Address of the node, such as 127.0.0.1:5551.
    #[arg(value_name = "ADDR")]
    pub addr: String,
    /// Number of requests in total.
    #[arg(long, short = 'c', value_name = "N", default_value_t = 10)]
    pub count: u64,
    /// Payload bytes per request. 0 sends NEO's Ping (code 2) and expects Pong (0x8002);
    /// more sends code 0x0100 with pseudo-random bytes and expects them echoed with code
    /// 0x8100 (what `nodelink serve` does).
    #[arg(long, short = 's', value_name = "BYTES", default_value_t = 0)]
    pub size: usize,
    /// ask1: a lightweight connection per request; conn: one full connection per worker.
    #[arg(long, value_enum, default_value_t = PingMode::Ask1)]
    pub mode: PingMode,
    /// The dialect to speak: neo-go (NEO/go's neonet) or neo-py (NEO/py 1.12, ask1 only).
    #[arg(long, value_enum, default_value_t = DialectArg::NeoGo)]
    pub dialect: DialectArg,
    /// Workers running at once; they share the requests.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// NEO protocol version word sent in the handshake (`--version` prints the tool's).
    #[arg(long, value_name = "N", default_value_t = nodelink::DEFAULT_VERSION)]
    pub protocol_version: u32,
    /// TLS settings.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// KCP settings (`--kcp` and `--kcp-*`).
    #[command(flatten)]
    pub kcp: LinkKcpArgs,
    /// Print the result as one JSON object on stdout instead of text lines.
    #[arg(long)]
    pub json: bool,
}

/// What `--max-memory` is when not given.
pub(crate) const DEFAULT_MAX_MEMORY: usize = 1 << 30;

/// The library budget for a server's `--max-memory`.
///
/// The flag is the memory an operator lets a server spend on what its clients make it
/// hold, as the system counts it (resident memory). The libraries' budgets count the held
/// bytes themselves, and holding a byte costs more than a byte: the allocator's size
/// classes and partly used pages, read buffers, per-session state. Under a flood of
/// 64 KiB requests that nobody reads, resident memory grew by 1.5 to 1.7 times the bytes
/// held (docs/PERFORMANCE.md, "What --max-memory means"), so the libraries get two fifths
/// of the flag, and the process with its own baseline stays under it.
pub(crate) fn held_budget(max_memory: Option<usize>) -> usize {
    (max_memory.unwrap_or(DEFAULT_MAX_MEMORY) / 5 * 2).max(1)
}

/// A byte count with an optional binary suffix (`512k`, `64M`, `1G`).
pub(crate) fn parse_bytes(text: &str) -> Result<usize, String> {
    let (digits, shift) = match text.chars().last() {
        Some('k' | 'K') => (&text[..text.len() - 1], 10),
        Some('m' | 'M') => (&text[..text.len() - 1], 20),
        Some('g' | 'G') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count (such as 1048576, 512k, 64M, 1G)"))?;
    n.checked_mul(1 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod byte_count_tests {
    use super::parse_bytes;

    #[test]
    fn the_libraries_get_two_fifths_of_max_memory() {
        use super::{held_budget, DEFAULT_MAX_MEMORY};
        assert_eq!(held_budget(Some(100 << 20)), 40 << 20);
        assert_eq!(held_budget(None), DEFAULT_MAX_MEMORY / 5 * 2);
        assert_eq!(held_budget(Some(1)), 1);
    }

    #[test]
    fn byte_counts_take_binary_suffixes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("512k"), Ok(512 << 10));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        for bad in ["", "G", "12x", "-1", "0", "99999999999999999999G"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }
}

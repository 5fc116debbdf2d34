//! `nodelink`: serve, ping and tour NEO-compatible multiplexed links.
//!
//! * `nodelink serve --listen ADDR` runs an echo server: every request with code `c` is
//!   answered with code `c | 0x8000` and the same payload.
//! * `nodelink ping ADDR` measures round trips against any NEO node (Ping/Pong), or against
//!   `nodelink serve` with payloads (code [`ping::ECHO_CODE`]).
//! * `nodelink kcp serve|bench` echo and measure raw KCP sessions (kcp-go / kcptun
//!   compatible); `serve --kcp` and `ping --kcp` run links over KCP instead of TCP.
//! * `nodelink tour` starts a server and a client in one process and shows what the link
//!   does and how fast.
//!
//! Errors are printed as one line, `nodelink: error: <message>`, and exit with code 1.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use std::ffi::OsString;

use clap::{CommandFactory, Parser};

mod alloc;
mod cli;
mod kcp;
mod kcp_args;
mod metrics;
mod nt;
mod nt_echo;
mod out;
mod ping;
mod serve;
mod shutdown;
mod stats;
mod tls_args;
mod tour;
mod tour_layers;
mod tour_tls;
mod tunnel;

use cli::{Cli, Command};

fn main() -> ExitCode {
    install_panic_hook();
    let cli = Cli::parse_from(kcptun_style_args(std::env::args_os().collect()));
    init_logging(cli.verbose, cli.log_level.as_deref());
    raise_descriptor_limit();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// kcptun, like Go programs generally, accepts long flags with a single dash (`-crypt aes`,
/// `-key=x`); clap wants two. For `nodelink tunnel` only, `-name` and `-name=value` become
/// `--name...` when `name` is one of the tunnel's long flags, so kcptun command lines work
/// unchanged. Single-letter flags (`-l`, `-r`, `-t`, `-c`) are left as they are. (A value
/// that is itself spelled like a flag, such as `--key -crypt`, would be rewritten too; use
/// `--key=-crypt` for such a key.)
fn kcptun_style_args(args: Vec<OsString>) -> Vec<OsString> {
    if args.get(1).and_then(|a| a.to_str()) != Some("tunnel") {
        return args;
    }
    let command = Cli::command();
    let Some(tunnel) = command.find_subcommand("tunnel") else {
        return args;
    };
    let longs: Vec<String> = tunnel
        .get_subcommands()
        .flat_map(|sub| sub.get_arguments())
        .flat_map(|arg| arg.get_long_and_visible_aliases().unwrap_or_default())
        .map(str::to_owned)
        .collect();
    args.into_iter()
        .map(|arg| {
            let Some(text) = arg.to_str() else { return arg };
            let Some(rest) = text.strip_prefix('-') else {
                return arg;
            };
            let name = rest.split('=').next().unwrap_or(rest);
            if rest.starts_with('-') || name.len() < 2 || !longs.iter().any(|l| l == name) {
                return arg;
            }
            OsString::from(format!("-{text}"))
        })
        .collect()
}

/// Builds the runtime and runs the chosen command.
fn run(cli: Cli) -> anyhow::Result<()> {
    let threads = cli.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .on_thread_park(alloc::collect_when_idle)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    alloc::start_watcher(runtime.handle().clone());
    // The command runs as a task on the workers, not on this thread: a future given to
    // `block_on` runs on the calling thread, so every event it waited for (an echo
    // server's next message, a ping's echo) crossed from a worker to this thread and back,
    // two futex wake-ups a message (docs/PERFORMANCE.md, "Where the two-process time
    // goes").
    let command = runtime.spawn(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Ping(args) => ping::run(args).await,
            Command::Tour(args) => tour::run(args).await,
            Command::Kcp(command) => kcp::run(command).await,
            Command::Nt(command) => nt::run(command).await,
            Command::Tunnel(command) => tunnel::run(command).await,
        }
    });
    let result = runtime.block_on(command).unwrap_or_else(|e| {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        Err(anyhow::anyhow!("the command's task was cancelled"))
    });
    // Do not wait for tasks that are still blocked (for example a link the peer never
    // closes): everything worth finishing was awaited by the command itself.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

/// Prints an error chain as one line on stderr.
fn report(e: &anyhow::Error) {
    let message = one_line(e).replace(['\n', '\r'], " ");
    let _ = writeln!(std::io::stderr(), "nodelink: error: {message}");
}

/// Joins an error's chain with `": "`, leaving out causes that the message so far already
/// shows (a context that repeats its cause's words, an I/O error some layer quoted).
fn one_line(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        // A cause that repeats everything said so far (a context naming what the cause
        // already names) replaces it rather than doubling it.
        if !message.is_empty() && text.contains(&message) {
            message = text;
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// Raises the soft limit on open files to the hard one, as servers commonly do: the usual
/// soft limit of 1024 would otherwise cap a server at about a thousand links while the
/// system allows far more. A failure only means the limit stays as it was.
fn raise_descriptor_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::info!(
            error = &e as &dyn std::error::Error,
            "cannot raise the open-file limit; keeping the current one"
        ),
    }
}

/// Logs go to stderr, filtered by `--log-level`, else `-v` (info, debug, trace), else
/// `RUST_LOG`, else `warn`.
fn init_logging(verbose: u8, log_level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let from_flags = match (log_level, verbose) {
        (Some(filter), _) => Some(filter.to_string()),
        (None, 0) => None,
        (None, 1) => Some("info".to_string()),
        (None, 2) => Some("debug".to_string()),
        (None, _) => Some("trace".to_string()),
    };
    let filter = match from_flags {
        Some(f) => EnvFilter::try_new(&f).unwrap_or_else(|e| {
            let _ = writeln!(
                std::io::stderr(),
                "nodelink: warning: --log-level {f:?}: {e}; using warn"
            );
            EnvFilter::new("warn")
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// A panic is a bug, but the user still gets one line in the usual format rather than a
/// backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let what = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "unknown cause".to_string()
        };
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "nodelink: error: internal error{place}: {what}"
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        kcptun_style_args(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn kcptun_single_dash_flags_are_accepted_for_tunnel_only() {
        assert_eq!(
            rewrite(&["nodelink", "tunnel", "client", "-crypt", "salsa20", "-key=k", "-l", ":1"]),
            ["nodelink", "tunnel", "client", "--crypt", "salsa20", "--key=k", "-l", ":1"]
        );
        assert_eq!(
            rewrite(&["nodelink", "tunnel", "server", "-ds", "5", "--ps", "2", "-bogus"]),
            ["nodelink", "tunnel", "server", "--ds", "5", "--ps", "2", "-bogus"]
        );
        // Other commands keep clap's rules.
        assert_eq!(
            rewrite(&["nodelink", "kcp", "serve", "-crypt", "x"]),
            ["nodelink", "kcp", "serve", "-crypt", "x"]
        );
    }

    #[test]
    fn causes_already_shown_are_not_repeated() {
        let e = anyhow::Error::from(std::io::Error::other("refused"))
            .context("dial: connect: refused")
            .context("cannot connect to x");
        assert_eq!(one_line(&e), "cannot connect to x: dial: connect: refused");
        let e = anyhow::Error::from(std::io::Error::other("refused")).context("cannot connect");
        assert_eq!(one_line(&e), "cannot connect: refused");
        // A context that the cause repeats in full is said once.
        let e = anyhow::Error::from(std::io::Error::other("cannot listen on h:1: in use"))
            .context("cannot listen on h:1");
        assert_eq!(one_line(&e), "cannot listen on h:1: in use");
    }
}

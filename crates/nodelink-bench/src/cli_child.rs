//! The `nodelink` CLI as a child process: the second process of the two-process scenarios
//! and the servers of the hostile-load harness.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, ChildStderr, ChildStdout};

/// A running `nodelink`: the child (killed on drop), the rest of its first line after the
/// expected prefix, and its stderr when asked for.
pub struct CliChild {
    pub child: Child,
    pub first: String,
    pub stderr: Option<ChildStderr>,
    /// Held open so that the child's later lines do not meet a closed pipe.
    _stdout: tokio::io::BufReader<ChildStdout>,
}

/// Starts the `nodelink` binary next to this one with `args` and waits (at most 20 s) for
/// its first stdout line, which must start with one of `prefixes`. Stderr is piped when
/// `keep_stderr`, dropped otherwise.
pub async fn start(args: &[&str], prefixes: &[&str], keep_stderr: bool) -> Result<CliChild> {
    start_limited(args, prefixes, keep_stderr, None).await
}

/// [`start`], the child limited to `fd_limit` open files if given (soft and hard limit,
/// set by the shell's `ulimit -n` as an operator would).
pub async fn start_limited(
    args: &[&str],
    prefixes: &[&str],
    keep_stderr: bool,
    fd_limit: Option<u32>,
) -> Result<CliChild> {
    let cli = std::env::current_exe()?
        .parent()
        .context("no directory for this binary")?
        .join("nodelink");
    ensure!(
        cli.is_file(),
        "{} not found: build it with `cargo build --release -p nodelink-cli`",
        cli.display()
    );
    let stderr = if keep_stderr {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    };
    let mut command = match fd_limit {
        None => tokio::process::Command::new(cli),
        Some(n) => {
            let mut sh = tokio::process::Command::new("sh");
            sh.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(cli);
            sh
        }
    };
    let mut child = command
        .args(args)
        // The log lines counted are the server's defaults, whatever this shell exports.
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()?;
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().context("no stdout")?);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut line))
        .await
        .with_context(|| format!("no first line from nodelink {}", args.join(" ")))??;
    let line = line.trim();
    let first = prefixes
        .iter()
        .find_map(|p| line.strip_prefix(p))
        .with_context(|| format!("unexpected first line {line:?}"))?
        .to_owned();
    let stderr = child.stderr.take();
    Ok(CliChild {
        child,
        first,
        stderr,
        _stdout: stdout,
    })
}

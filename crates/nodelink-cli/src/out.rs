//! Writing to stdout without panicking when it is closed (`nodelink ping ... | head -1`),
//! as text lines for people or, with `--json`, as one JSON object for programs.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

/// Set once by a measuring command given `--json`: its text lines are then left out and
/// its result is printed by [`json`] alone, so stdout is exactly one JSON object.
static JSON: AtomicBool = AtomicBool::new(false);

/// Switches this process to JSON output (see [`JSON`]).
pub fn use_json() {
    JSON.store(true, Ordering::Relaxed);
}

/// Whether this process prints JSON ([`use_json`]).
pub fn json_mode() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Waits for `work`, showing a spinner with `label` on stderr once it has taken longer
/// than a second: for people watching a terminal only (not in JSON mode, not when stderr
/// is a file or a pipe), and cleared when the work is done.
pub async fn progress<F: std::future::Future>(label: &str, work: F) -> F::Output {
    use std::io::IsTerminal;
    use std::time::Duration;
    if json_mode() || !std::io::stderr().is_terminal() {
        return work.await;
    }
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => return done,
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(label.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(100));
    let done = work.await;
    spinner.finish_and_clear();
    done
}

/// Writes one line to stdout and flushes it (nothing in JSON mode).
pub fn line(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    if JSON.load(Ordering::Relaxed) {
        return Ok(());
    }
    write_line(args)
}

/// Writes `value` as one line of JSON to stdout, in JSON mode only.
pub fn json(value: &serde_json::Value) -> anyhow::Result<()> {
    if !JSON.load(Ordering::Relaxed) {
        return Ok(());
    }
    write_line(format_args!("{value}"))
}

fn write_line(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// `say!("format", args...)`: prints one line to stdout, returning early with an error if
/// stdout is gone.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))?
    };
}

pub(crate) use say;

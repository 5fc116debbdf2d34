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

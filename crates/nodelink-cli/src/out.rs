//! Writing to stdout without panicking when it is closed (`nodelink ping ... | head -1`).

use std::fmt;
use std::io::Write;

use anyhow::Context;

/// Writes one line to stdout and flushes it.
pub fn line(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
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

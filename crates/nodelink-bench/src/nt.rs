//! `nodelink-bench nt` (being written).

use anyhow::Result;

/// Options of `nodelink-bench nt`.
#[derive(clap::Args)]
pub struct NtArgs {
    /// Small sizes, one run (a smoke test).
    #[arg(long)]
    quick: bool,
}

/// Runs the nt benchmark.
pub async fn run(args: &NtArgs) -> Result<()> {
    let _ = args.quick;
    anyhow::bail!("not yet available")
}

//! `nodelink-bench tunnel` (being written).

use anyhow::Result;

/// Options of `nodelink-bench tunnel`.
#[derive(clap::Args)]
pub struct TunnelArgs {
    /// Small sizes, one run (a smoke test).
    #[arg(long)]
    quick: bool,
}

/// Runs the tunnel benchmark.
pub async fn run(args: &TunnelArgs) -> Result<()> {
    let _ = args.quick;
    anyhow::bail!("not yet available")
}

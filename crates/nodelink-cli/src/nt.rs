//! `nodelink nt` (being written).

use clap::Subcommand;

/// The `nt` subcommands.
#[derive(Debug, Subcommand)]
pub enum NtCommand {
    /// Placeholder until the real subcommands land.
    Placeholder,
}

/// Runs a `nt` subcommand.
pub async fn run(command: NtCommand) -> anyhow::Result<()> {
    match command {
        NtCommand::Placeholder => anyhow::bail!("not yet available"),
    }
}

//! `nodelink tunnel` (being written).

use clap::Subcommand;

/// The `tunnel` subcommands.
#[derive(Debug, Subcommand)]
pub enum TunnelCommand {
    /// Placeholder until the real subcommands land.
    Placeholder,
}

/// Runs a `tunnel` subcommand.
pub async fn run(command: TunnelCommand) -> anyhow::Result<()> {
    match command {
        TunnelCommand::Placeholder => anyhow::bail!("not yet available"),
    }
}

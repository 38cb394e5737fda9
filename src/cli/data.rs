//! `isoflop data`: tokenize C4 files into shards, inspect and verify shards.

/// Arguments of `isoflop data`.
#[derive(clap::Args, Debug)]
pub struct DataArgs {}

/// Run `isoflop data`.
pub fn run(_args: DataArgs) -> anyhow::Result<()> {
    anyhow::bail!("isoflop data is not built yet")
}

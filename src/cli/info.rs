//! `isoflop info`: parameter counts, FLOPs per token and token budgets of a model.

/// Arguments of `isoflop info`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {}

/// Run `isoflop info`.
pub fn run(_args: InfoArgs) -> anyhow::Result<()> {
    Ok(())
}

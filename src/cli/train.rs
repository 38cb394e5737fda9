//! `isoflop train`: train one model.

/// Arguments of `isoflop train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {}

/// Run `isoflop train`.
pub fn run(_args: TrainArgs) -> anyhow::Result<()> {
    Ok(())
}

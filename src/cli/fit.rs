//! `isoflop fit`: scaling-law fits of sweep exports or CSVs.

/// Arguments of `isoflop fit`.
#[derive(clap::Args, Debug)]
pub struct FitArgs {}

/// Run `isoflop fit`.
pub fn run(_args: FitArgs) -> anyhow::Result<()> {
    anyhow::bail!("isoflop fit is not built yet")
}

//! `isoflop export`: one tidy CSV of the per-step records of one or more runs.

use anyhow::Context;
use isoflop::train::export::write_steps_csv;
use std::path::PathBuf;

/// Output format of `isoflop export`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
}

/// Arguments of `isoflop export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Run directories (each with run.json and metrics.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// Output file (default: standard output).
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// Run `isoflop export`.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let Format::Csv = args.format;
    let runs: Vec<(String, &std::path::Path)> = args
        .runs
        .iter()
        .map(|d| {
            (
                d.file_name().map_or_else(
                    || d.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                ),
                d.as_path(),
            )
        })
        .collect();
    let mut buf = Vec::new();
    let rows = write_steps_csv(&runs, &mut buf)?;
    match &args.out {
        Some(p) => {
            std::fs::write(p, &buf).with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "wrote {rows} rows from {} run(s) to {}",
                runs.len(),
                p.display()
            );
        }
        None => std::io::Write::write_all(&mut std::io::stdout(), &buf)?,
    }
    Ok(())
}

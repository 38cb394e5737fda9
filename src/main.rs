//! The `isoflop` command line.
#![allow(non_snake_case)]

mod cli;

use clap::{Parser, Subcommand};

/// isoflop: train NanoDO-style language models, run scaling sweeps and fit scaling laws.
#[derive(Parser, Debug)]
#[command(name = "isoflop", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train one model (defaults: the bundled sample, on the GPU if there is one, else the CPU).
    Train(cli::train::TrainArgs),
    /// Parameter counts, FLOPs per token under each convention, and token budgets of a model.
    Info(cli::info::InfoArgs),
    /// Tokenize C4 files into shards; inspect and verify shards.
    Data(cli::data::DataArgs),
    /// Fit scaling laws to sweep exports or CSVs.
    Fit(cli::fit::FitArgs),
    /// Compare training recipes (arms) across scale: ΔL(C), crossover, exponents, paired bootstrap.
    Compare(cli::compare::CompareArgs),
    /// Predict losses and compute-optimal allocations of planned runs from a fit, with intervals.
    Predict(cli::predict::PredictArgs),
    /// Write the per-step records of runs as one tidy CSV.
    Export(cli::export::ExportArgs),
    /// Held-out loss of a checkpoint.
    Eval(cli::eval::EvalArgs),
    /// Scaling sweeps: plan, run, resume, export and scale out (Slurm) grids of runs.
    Sweep(cli::sweep::SweepArgs),
    /// Training throughput and MFU of a fixed set of model sizes (GPU, or small sizes on the CPU).
    Bench(cli::bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cli::train::run(a),
        Command::Info(a) => cli::info::run(a),
        Command::Data(a) => cli::data::run(a),
        Command::Fit(a) => cli::fit::run(a),
        Command::Compare(a) => cli::compare::run(a),
        Command::Predict(a) => cli::predict::run(a),
        Command::Export(a) => cli::export::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Sweep(a) => cli::sweep::run(a),
        Command::Bench(a) => cli::bench::run(a),
    };
    if let Err(e) = result {
        // Not eprintln!: with the terminal gone (a run stopped by --stop-on-hangup) it would panic.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        std::process::exit(1);
    }
}

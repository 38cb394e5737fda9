//! `isoflop bench`: training throughput and MFU of a fixed set of model sizes, as a table and a JSON file;
//! `--export-inputs` writes the step-0 weights and token batches for bench/torch_reference.py instead.

use isoflop::bench::{self, report, BackendKind, BenchPlan};
use isoflop::device::DeviceChoice;
use std::path::PathBuf;

/// Arguments of `isoflop bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model sizes as DxL or DxL:T, comma-separated [default: 512x8,1024x16,2048x24 on a GPU;
    /// 64x2:128,128x4:256,256x4:256 on the CPU].
    #[arg(long)]
    sizes: Option<String>,
    /// Context T of sizes that do not give their own [default: 512 on a GPU, 256 on the CPU].
    #[arg(long)]
    seq_len: Option<usize>,
    /// Vocabulary size [default: 32101].
    #[arg(long)]
    vocab_size: Option<usize>,
    /// Timed optimizer steps per size [default: 20 on a GPU, 10 on the CPU].
    #[arg(long)]
    steps: Option<u64>,
    /// Untimed steps before them [default: 5 on a GPU, 2 on the CPU].
    #[arg(long)]
    warmup: Option<u64>,
    /// Global batch in sequences per step [default: 256 on a GPU, 8 on the CPU].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Sequences per forward/backward [default: the largest divisor of the batch that fits].
    #[arg(long)]
    micro_batch: Option<usize>,
    /// Peak learning rate of the steps' schedule [default: 1e-3].
    #[arg(long)]
    lr: Option<f64>,
    /// Learning-rate warmup steps of that schedule [default: 10].
    #[arg(long)]
    lr_warmup: Option<u64>,
    /// Seed of the initial weights and the synthetic tokens [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// auto (GPU if usable, else CPU), cpu, or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Result file [default: bench/results/<date>-<device>.json].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print the table only; write no result file.
    #[arg(long, conflicts_with = "out")]
    no_save: bool,
    /// Peak FLOP/s of the device for MFU [default: the datasheet's dense bf16 peak of known GPUs].
    #[arg(long)]
    peak_flops: Option<f64>,
    /// Write each size's step-0 weights (model.safetensors), training config and token batches
    /// (warmup + steps batches) under DIR/<size>/ for bench/torch_reference.py, and exit.
    #[arg(long, value_name = "DIR")]
    export_inputs: Option<PathBuf>,
    /// No per-step progress lines.
    #[arg(long, short)]
    quiet: bool,
}

impl BenchArgs {
    fn plan(&self, kind: BackendKind) -> anyhow::Result<BenchPlan> {
        let mut p = BenchPlan::defaults(kind);
        if let Some(s) = &self.sizes {
            p.sizes = bench::parse_sizes(s)?;
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { p.$f = v; } )* };
        }
        set!(seq_len, vocab_size, steps, warmup, batch_size, lr, lr_warmup, seed);
        if self.micro_batch.is_some() {
            p.micro_batch = self.micro_batch;
        }
        p.validate()?;
        Ok(p)
    }
}

fn shell_words() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `isoflop bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.export_inputs {
        let kind = match args.device {
            DeviceChoice::Cpu => BackendKind::Cpu,
            DeviceChoice::Cuda(_) => BackendKind::Gpu,
            DeviceChoice::Auto => bench::detect_backend(args.device)?.0,
        };
        let plan = args.plan(kind)?;
        for size in &plan.sizes {
            let e = bench::inputs::export_size(&plan, size, dir)?;
            eprintln!(
                "{size}: wrote {} and {} ({} steps of {} sequences)",
                e.model.display(),
                e.batches.display(),
                plan.total_steps(),
                plan.batch_size
            );
        }
        return Ok(());
    }
    let (kind, _, _) = bench::detect_backend(args.device)?;
    let plan = args.plan(kind)?;
    let quiet = args.quiet;
    let mut log = |line: &str| {
        if !quiet || line.starts_with("NOTE") {
            eprintln!("{line}");
        }
    };
    let rep = bench::run(&plan, args.device, args.peak_flops, shell_words(), &mut log)?;
    print!("{}", report::table(&rep));
    if !args.no_save {
        let path = args
            .out
            .clone()
            .unwrap_or_else(|| report::default_path(std::path::Path::new("."), &rep));
        report::write_json(&rep, &path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

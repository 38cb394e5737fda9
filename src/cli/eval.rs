//! `isoflop eval`: held-out loss of any checkpoint.

use anyhow::Context;
use isoflop::data::{bundled_sample_shards, ShardLoader, Split, TokenSource};
use isoflop::device::{self, DeviceChoice};
use isoflop::train::checkpoint;
use std::path::PathBuf;

/// Arguments of `isoflop eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint directory (`checkpoints/step-N`) or a `model.safetensors` file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Held-out data: `bundled` (the sample's held-out part) or a directory of shards.
    #[arg(long, default_value = "bundled")]
    data: String,
    /// Which part of the shards: the held-out split (default) or the training split.
    #[arg(long, default_value = "eval", value_parser = ["eval", "train"])]
    split: String,
    /// Sequences to evaluate (default: every window of the split, up to 4096).
    #[arg(long)]
    sequences: Option<usize>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    micro_batch: usize,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Run `isoflop eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let ck = checkpoint::load(&args.checkpoint, None)?;
    let cfg = ck.model;
    let dir = match args.data.as_str() {
        "bundled" => bundled_sample_shards()?,
        d => PathBuf::from(d),
    };
    let split = if args.split == "train" {
        Split::Train
    } else {
        Split::Eval
    };
    let mut loader = ShardLoader::open(&dir, cfg.seq_len, 0, split, cfg.vocab_size)?;
    let n = args.sequences.map_or(loader.num_windows().min(4096), |s| {
        (s as u64).min(loader.num_windows())
    }) as usize;
    let windows = loader
        .next_batch(n)
        .with_context(|| format!("reading {}", dir.display()))?;
    let mut opened = device::open_backend(args.device, &cfg, ck.params)?;
    eprintln!("{}", opened.note);
    let e = isoflop::train::evaluate(
        opened.backend.as_mut(),
        &windows,
        args.micro_batch,
        cfg.seq_len,
    )?
    .context("no held-out windows to evaluate")?;
    // The standard error comes from the spread of per-micro-batch means: one micro-batch has none.
    let no_interval = (!e.stderr.is_finite()).then(|| {
        let mb = args.micro_batch.max(1);
        if n.div_ceil(mb) < 2 {
            format!(
                "all {n} sequences fit in one micro-batch of {mb}, and the standard error needs at least 2 \
                 (lower --micro-batch or raise --sequences)"
            )
        } else {
            "fewer than 2 micro-batches had targets to score".to_string()
        }
    });
    if args.json {
        let mut j = serde_json::json!({"checkpoint": args.checkpoint, "data": dir, "sequences": n, "eval_loss": e.loss, "eval_loss_se": e.stderr, "eval_tokens": e.tokens});
        if let Some(why) = &no_interval {
            j["eval_loss_se_missing"] = why.clone().into();
        }
        println!("{j}");
    } else if let Some(why) = &no_interval {
        println!(
            "eval loss {:.4} over {} tokens ({n} sequences of {}); no interval: {why}",
            e.loss,
            e.tokens,
            dir.display()
        );
    } else {
        println!(
            "eval loss {:.4} ± {:.4} over {} tokens ({n} sequences of {})",
            e.loss,
            e.stderr,
            e.tokens,
            dir.display()
        );
    }
    Ok(())
}

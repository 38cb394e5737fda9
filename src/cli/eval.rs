//! `isoflop eval`: held-out loss of any checkpoint, or its scores on downstream tasks (`--task`).

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
    /// Score the checkpoint on a task file (multiple choice or cloze jsonl) instead of the held-out
    /// loss; repeat for several tasks.
    #[arg(long)]
    task: Vec<PathBuf>,
    /// With --task: score only the first N items of each task.
    #[arg(long)]
    limit: Option<usize>,
    /// With --task: also write the JSON result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `isoflop eval --task`: score the checkpoint on every task file and print a table or JSON.
fn run_tasks(args: &EvalArgs) -> anyhow::Result<()> {
    use isoflop::train::task::{count_rows, evaluate_tasks, task_encoder};
    let tasks = args
        .task
        .iter()
        .map(|p| isoflop::data::task::read_task(p, args.limit))
        .collect::<Result<Vec<_>, _>>()?;
    let ck = checkpoint::load(&args.checkpoint, None)?;
    let cfg = ck.model;
    // The run directory (RUN/checkpoints/step-N) records the tokenizer of its data, when it has one.
    let identity = args
        .checkpoint
        .parent()
        .and_then(|p| p.parent())
        .and_then(|run| isoflop::train::manifest::Manifest::load(run).ok())
        .and_then(|m| m.data.tokenizer_sha256);
    let enc = task_encoder(cfg.vocab_size, identity.as_deref())?;
    let mut opened = device::open_eval_backend(args.device, &cfg, ck.params)?;
    eprintln!("{}", opened.note);
    let total = count_rows(&tasks) as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "scoring {bar:30} {pos}/{len} sequences  {per_sec}  eta {eta}",
        )
        .expect("a valid template"),
    );
    let report = evaluate_tasks(
        opened.backend.as_mut(),
        &tasks,
        enc.as_ref(),
        args.micro_batch,
        |n| bar.inc(n as u64),
    )?;
    bar.finish_and_clear();
    let j = serde_json::json!({
        "checkpoint": args.checkpoint,
        "limit": args.limit,
        "tasks": report.tasks,
        "err_avg": report.err_avg,
        "acc_avg": report.acc_avg,
    });
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{j:#}\n"))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if args.json {
        println!("{j}");
        return Ok(());
    }
    for r in &report.tasks {
        let trunc = if r.truncated > 0 {
            format!(", {} sequences truncated on the left", r.truncated)
        } else {
            String::new()
        };
        match (r.acc, r.acc_norm, r.exact) {
            (Some(a), Some(an), _) => println!(
                "{}: {} items, acc {a:.4} ± {:.4}, acc_norm {an:.4} ± {:.4} (chance {:.4}), err {:.4}{trunc}",
                r.name,
                r.items,
                r.acc_se.unwrap_or(f64::NAN),
                r.acc_norm_se.unwrap_or(f64::NAN),
                r.chance.unwrap_or(f64::NAN),
                r.err
            ),
            (_, _, Some(e)) => println!(
                "{}: {} items, exact {e:.4} ± {:.4}, target log-likelihood {:.4}, err {:.4}{trunc}",
                r.name,
                r.items,
                r.exact_se.unwrap_or(f64::NAN),
                r.target_loglik.unwrap_or(f64::NAN),
                r.err
            ),
            _ => {}
        }
    }
    println!(
        "average over {} tasks: err {:.4} (acc {:.4})",
        report.tasks.len(),
        report.err_avg,
        report.acc_avg
    );
    Ok(())
}

/// Run `isoflop eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if !args.task.is_empty() {
        return run_tasks(&args);
    }
    if args.limit.is_some() || args.out.is_some() {
        anyhow::bail!("--limit and --out apply to --task evaluation only");
    }
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
    let mut opened = device::open_eval_backend(args.device, &cfg, ck.params)?;
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

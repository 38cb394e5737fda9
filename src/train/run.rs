//! A whole run in a run directory: start or resume, train with progress, evaluate, checkpoint, record.
//!
//! Run directory: `run.json` (manifest), `metrics.jsonl` (per-step and eval records),
//! `checkpoints/step-NNNNNNNN/` (the last K checkpoints).

use super::checkpoint::{self, CheckpointState, CHECKPOINT_FORMAT};
use super::config::{DataSpec, TrainConfig};
use super::manifest::{self, DataInfo, FinalFigures, Manifest, RunStatus, ShardRef, SoftwareInfo};
use super::metrics::{cumulative_flops, EvalRecord, MetricsWriter, StepRecord};
use super::progress::{fmt_duration, Progress};
use super::trainer::{TrainError, Trainer};
use crate::data::shard::{list_shards, Shard};
use crate::data::{bundled_sample_shards, ShardLoader, Split, SyntheticSource, TokenSource};
use crate::device::{self, DeviceChoice};
use crate::model::{init_params, FlopsPerToken, ParamCounts};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How to run (not part of the reproducible configuration).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Run directory.
    pub dir: PathBuf,
    /// Where to train.
    pub device: DeviceChoice,
    /// Checkpoint every this many steps (0 = only at the end and on interruption).
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Write the final checkpoint and the one on interruption (false: `--no-final-checkpoint`; an
    /// interrupted run then cannot be resumed).
    pub final_checkpoint: bool,
    /// Peak FLOP/s for MFU (overrides the device table).
    pub peak_flops: Option<f64>,
    /// Stop (as if interrupted) after this step; for tests and for splitting long runs.
    pub stop_after: Option<u64>,
}

/// Why a run did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Problem with the run directory or its files.
    #[error("{0}")]
    Setup(String),
    /// Training failed; the run is marked failed in run.json.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// SIGINT/SIGTERM (or `stop_after`): a checkpoint was written; resume with `--resume`.
    #[error("interrupted at step {step}; checkpoint written; continue with: isoflop train --resume {dir}")]
    Interrupted {
        /// Last completed step.
        step: u64,
        /// The run directory.
        dir: String,
    },
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The run directory.
    pub dir: PathBuf,
    /// Final figures.
    pub figures: FinalFigures,
    /// Steps done.
    pub steps: u64,
}

fn setup<E: std::fmt::Display>(ctx: impl std::fmt::Display) -> impl FnOnce(E) -> RunError {
    move |e| RunError::Setup(format!("{ctx}: {e}"))
}

/// Training source and held-out windows for a data spec.
pub fn open_data(
    cfg: &TrainConfig,
) -> Result<(Box<dyn TokenSource>, Vec<u16>, DataInfo), RunError> {
    let (t, v) = (cfg.model.seq_len, cfg.model.vocab_size);
    let (train_dir, eval_dir) = match &cfg.data {
        DataSpec::Synthetic => {
            let train = SyntheticSource::new(t, v, cfg.seed);
            // Held-out windows: a far-away stretch of the same stream, never reached by training.
            let mut eval = SyntheticSource::new(t, v, cfg.seed);
            eval.restore(&serde_json::json!({"kind": "synthetic", "seed": cfg.seed, "next_window": 1u64 << 40}))
                .map_err(setup("synthetic eval stream"))?;
            let windows = eval
                .next_batch(cfg.eval_sequences)
                .map_err(setup("synthetic eval stream"))?;
            let info = DataInfo {
                train: train.describe(),
                eval: format!("{} synthetic windows from 2^40 on", cfg.eval_sequences),
                shards: vec![],
            };
            return Ok((Box::new(train), windows, info));
        }
        DataSpec::Bundled => {
            let dir = bundled_sample_shards().map_err(setup("preparing the bundled sample"))?;
            (dir.clone(), dir)
        }
        DataSpec::Shards { dir, eval_dir } => {
            (dir.clone(), eval_dir.clone().unwrap_or_else(|| dir.clone()))
        }
    };
    let train = ShardLoader::open(&train_dir, t, cfg.seed, Split::Train, v)
        .map_err(|e| RunError::Setup(e.to_string()))?;
    let mut eval = ShardLoader::open(&eval_dir, t, cfg.seed, Split::Eval, v)
        .map_err(|e| RunError::Setup(e.to_string()))?;
    let n_eval = (cfg.eval_sequences as u64).min(eval.num_windows()) as usize;
    let windows = eval.next_batch(n_eval).map_err(setup(eval_dir.display()))?;
    let mut shards = Vec::new();
    for d in [&train_dir, &eval_dir] {
        for p in list_shards(d).map_err(|e| RunError::Setup(e.to_string()))? {
            let s = Shard::open(&p).map_err(|e| RunError::Setup(e.to_string()))?;
            let path = p.display().to_string();
            if !shards.iter().any(|r: &ShardRef| r.path == path) {
                shards.push(ShardRef {
                    path,
                    checksum: s
                        .header
                        .checksum
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                });
            }
        }
    }
    let info = DataInfo {
        train: format!(
            "{} ({} windows of {} tokens)",
            train.describe(),
            train.num_windows(),
            t + 1
        ),
        eval: format!("{n_eval} held-out windows of {}", eval.describe()),
        shards,
    };
    Ok((Box::new(train), windows, info))
}

/// NVIDIA driver and CUDA driver-API versions of a GPU run (None on the CPU).
fn driver_for(device: &str) -> Option<String> {
    if device.starts_with("cpu") {
        return None;
    }
    let mi = crate::bench::peak::machine_info();
    match (mi.driver, mi.cuda_driver_api) {
        (Some(d), Some(api)) => Some(format!("{d} (CUDA driver API {api})")),
        (d, api) => d.or(api.map(|a| format!("CUDA driver API {a}"))),
    }
}

fn peak_flops_for(device: &str, given: Option<f64>) -> Option<f64> {
    match crate::bench::peak::datasheet_peak(device, given) {
        Some(p) => Some(p.flops),
        None if device.starts_with("cpu") => Some(device::measure_cpu_peak_flops()),
        None => None,
    }
}

/// Start a new run in `opts.dir` (which must not hold a run yet).
pub fn start(cfg: TrainConfig, opts: &RunOptions) -> Result<RunSummary, RunError> {
    cfg.validate().map_err(|e| RunError::Setup(e.to_string()))?;
    if opts.dir.join("run.json").exists() {
        return Err(RunError::Setup(format!(
            "{} already holds a run; continue it with --resume {0}, or choose another --out",
            opts.dir.display()
        )));
    }
    std::fs::create_dir_all(&opts.dir).map_err(setup(opts.dir.display()))?;
    let (source, eval, data) = open_data(&cfg)?;
    if let DeviceChoice::Cuda(index) = opts.device {
        // A missing GPU fails at once, before the parameters are initialised (seconds at D=2048).
        device::check_gpu(index).map_err(|e| RunError::Setup(e.to_string()))?;
    }
    let params = init_params(&cfg.model, cfg.seed);
    let opened = device::open_backend(opts.device, &cfg.model, params)
        .map_err(|e| RunError::Setup(e.to_string()))?;
    eprintln!("{}", opened.note);
    eprintln!("data: {}", data.train);
    let device = opened.backend.device_name();
    let manifest = Manifest {
        format: 1,
        status: RunStatus::Running,
        reason: None,
        params: ParamCounts::of(&cfg.model),
        flops_per_token: FlopsPerToken::of(&cfg.model),
        seed: cfg.seed,
        data,
        peak_flops: peak_flops_for(&device, opts.peak_flops),
        driver: driver_for(&device),
        device,
        software: software_info(),
        host: manifest::hostname(),
        started_at: manifest::now(),
        ended_at: None,
        steps_done: 0,
        resumed_at: vec![],
        final_figures: FinalFigures::default(),
        warnings: vec![],
        config: cfg.clone(),
    };
    manifest
        .save(&opts.dir)
        .map_err(setup(opts.dir.join("run.json").display()))?;
    let trainer = Trainer::new(cfg, opened.backend, source, eval);
    let metrics = MetricsWriter::open(&opts.dir, Some(0))
        .map_err(setup(opts.dir.join("metrics.jsonl").display()))?;
    drive(trainer, manifest, metrics, opts, 0.0)
}

/// Continue the run in `opts.dir` from its newest checkpoint, exactly where it stopped.
pub fn resume(opts: &RunOptions) -> Result<RunSummary, RunError> {
    if !opts.final_checkpoint {
        return Err(RunError::Setup(
            "--no-final-checkpoint cannot be used with --resume (the resumed run would end without \
             a checkpoint of its last steps)"
                .into(),
        ));
    }
    let mut manifest =
        Manifest::load(&opts.dir).map_err(|e| RunError::Setup(format!("cannot resume: {e}")))?;
    if manifest.status == RunStatus::Finished {
        return Err(RunError::Setup(format!(
            "{} is already finished ({} steps)",
            opts.dir.display(),
            manifest.steps_done
        )));
    }
    let cfg = manifest.config.clone();
    let (mut source, eval, _) = open_data(&cfg)?;
    let ckpt_root = opts.dir.join("checkpoints");
    let (params, moments, state) = match checkpoint::list(&ckpt_root).pop() {
        Some((_, path)) => {
            let c = checkpoint::load(&path, Some(&cfg.model))
                .map_err(|e| RunError::Setup(format!("cannot resume: {e}")))?;
            let st = c
                .state
                .ok_or_else(|| RunError::Setup(format!("{}: no state.json", path.display())))?;
            if st.config != cfg {
                return Err(RunError::Setup(format!(
                    "{}: the checkpoint's configuration differs from run.json's; refusing to resume",
                    path.display()
                )));
            }
            source.restore(&st.source).map_err(setup(path.display()))?;
            (c.params, c.m.zip(c.v), Some(st))
        }
        // Killed before the first checkpoint: start over from the seed, which is the same run.
        None => (init_params(&cfg.model, cfg.seed), None, None),
    };
    let opened = device::open_backend(opts.device, &cfg.model, params)
        .map_err(|e| RunError::Setup(e.to_string()))?;
    let step = state.as_ref().map_or(0, |s| s.step);
    eprintln!("{}", opened.note);
    eprintln!(
        "resuming {} at step {step}/{}",
        opts.dir.display(),
        cfg.steps
    );
    let mut trainer = Trainer::new(cfg, opened.backend, source, eval);
    if let Some((m, v)) = moments {
        trainer
            .backend_mut()
            .write_moments(&m, &v)
            .map_err(setup("restoring optimizer state"))?;
    }
    trainer.step = step;
    manifest.status = RunStatus::Running;
    manifest.reason = None;
    manifest.ended_at = None;
    manifest.resumed_at.push(step);
    manifest.device = trainer.backend().device_name();
    manifest.driver = driver_for(&manifest.device);
    manifest
        .save(&opts.dir)
        .map_err(setup(opts.dir.join("run.json").display()))?;
    let metrics = MetricsWriter::open(&opts.dir, Some(step))
        .map_err(setup(opts.dir.join("metrics.jsonl").display()))?;
    drive(
        trainer,
        manifest,
        metrics,
        opts,
        state.map_or(0.0, |s| s.elapsed_s),
    )
}

fn software_info() -> SoftwareInfo {
    SoftwareInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: manifest::git_commit(),
        kernels_sha256: crate::kernel_sources_sha256(),
    }
}

fn save_checkpoint(
    trainer: &mut Trainer,
    dir: &Path,
    elapsed_s: f64,
    keep: usize,
) -> Result<PathBuf, String> {
    let params = trainer.backend().read_params().map_err(|e| e.to_string())?;
    let (m, v) = trainer
        .backend()
        .read_moments()
        .map_err(|e| e.to_string())?;
    let state = CheckpointState {
        format: CHECKPOINT_FORMAT,
        step: trainer.step,
        elapsed_s,
        source: trainer.source_mut().state(),
        config: trainer.config().clone(),
    };
    let root = dir.join("checkpoints");
    let path = checkpoint::save(&root, &params, &m, &v, &state).map_err(|e| e.to_string())?;
    checkpoint::prune(&root, keep).map_err(|e| e.to_string())?;
    Ok(path)
}

fn drive(
    mut trainer: Trainer,
    mut manifest: Manifest,
    mut metrics: MetricsWriter,
    opts: &RunOptions,
    elapsed0: f64,
) -> Result<RunSummary, RunError> {
    let stop = Arc::new(AtomicBool::new(false));
    // A second Ctrl-C while the first is being handled (a checkpoint in progress) exits at once. Only
    // SIGINT: a sweep forwards SIGTERM to trainers that already got the terminal's SIGINT.
    signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        Arc::clone(&stop),
    )
    .map_err(setup("installing signal handlers"))?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(setup("installing signal handlers"))?;
    }
    let cfg = trainer.config().clone();
    let fpt = *trainer.flops_per_token();
    let tps = cfg.tokens_per_step();
    let progress = Progress::new(cfg.steps, trainer.step, cfg.log_every);
    let t0 = Instant::now();
    let elapsed = |t0: &Instant| elapsed0 + t0.elapsed().as_secs_f64();
    let first_step = trainer.step;
    let mut last_loss = None;
    let mut last_eval: Option<(f64, f64)> = None;
    let fail = |manifest: &mut Manifest, steps: u64, reason: String, dir: &Path| {
        manifest.status = RunStatus::Failed;
        manifest.reason = Some(reason);
        manifest.steps_done = steps;
        manifest.ended_at = Some(manifest::now());
        let _ = manifest.save(dir);
    };
    let eval_now = |trainer: &mut Trainer,
                    metrics: &mut MetricsWriter,
                    elapsed_s: f64,
                    write: bool|
     -> Result<Option<(f64, f64)>, RunError> {
        let Some(e) = trainer.evaluate()? else {
            return Ok(None);
        };
        let tokens = trainer.step * tps;
        let f = cumulative_flops(&fpt, tokens);
        let rec = EvalRecord {
            kind: "eval".into(),
            step: trainer.step,
            tokens,
            eval_loss: e.loss,
            eval_loss_se: e.stderr,
            eval_tokens: e.tokens,
            flops_kaplan: f[0],
            flops_standard: f[1],
            flops_attention: f[2],
            flops_exact: f[3],
            elapsed_s,
        };
        if write {
            metrics
                .write(&rec)
                .map_err(setup(metrics.path().display()))?;
        }
        progress.println(&format!(
            "step {}: eval loss {:.4} ± {:.4} ({} tokens)",
            trainer.step, e.loss, e.stderr, e.tokens
        ));
        Ok(Some((e.loss, e.stderr)))
    };
    while !trainer.finished() {
        let ts = Instant::now();
        let out = match trainer.train_step() {
            Ok(o) => o,
            Err(e) => {
                progress.finish();
                let keep = checkpoint::list(&opts.dir.join("checkpoints"))
                    .pop()
                    .map_or("no checkpoint was written yet".to_string(), |(s, _)| {
                        format!("last good checkpoint: step {s}")
                    });
                fail(
                    &mut manifest,
                    trainer.step,
                    format!("{e} ({keep})"),
                    &opts.dir,
                );
                return Err(e.into());
            }
        };
        let dt = ts.elapsed().as_secs_f64();
        let tokens = out.step * tps;
        let f = cumulative_flops(&fpt, tokens);
        let now = elapsed(&t0);
        let rec = StepRecord {
            kind: "train".into(),
            step: out.step,
            tokens,
            loss: out.loss,
            lr: out.lr,
            grad_norm: out.grad_norm,
            step_flops_kaplan: fpt.kaplan * tps as f64,
            step_flops_standard: fpt.standard * tps as f64,
            step_flops_attention: fpt.attention * tps as f64,
            step_flops_exact: fpt.exact * tps as f64,
            flops_kaplan: f[0],
            flops_standard: f[1],
            flops_attention: f[2],
            flops_exact: f[3],
            elapsed_s: now,
            step_time_s: dt,
            tokens_per_s: tps as f64 / dt,
            mfu: manifest
                .peak_flops
                .map(|p| fpt.attention * tps as f64 / dt / p),
        };
        metrics
            .write(&rec)
            .map_err(setup(metrics.path().display()))?;
        last_loss = Some(out.loss);
        let done_here = (out.step - first_step) as f64;
        let eta = (cfg.steps - out.step) as f64 * t0.elapsed().as_secs_f64() / done_here;
        progress.step(out.step, out.loss, rec.tokens_per_s, eta);
        if cfg.eval_every > 0 && out.step % cfg.eval_every == 0 && !trainer.finished() {
            last_eval = eval_now(&mut trainer, &mut metrics, elapsed(&t0), true)?.or(last_eval);
        }
        let interrupted =
            stop.load(Ordering::SeqCst) || opts.stop_after.is_some_and(|s| out.step >= s);
        let periodic = opts.checkpoint_every > 0 && out.step % opts.checkpoint_every == 0;
        if (periodic || (interrupted && opts.final_checkpoint)) && !trainer.finished() {
            if let Err(e) =
                save_checkpoint(&mut trainer, &opts.dir, elapsed(&t0), opts.keep_checkpoints)
            {
                let w = format!(
                    "step {}: checkpoint not written ({e}); the previous one is intact",
                    out.step
                );
                progress.println(&format!("warning: {w}"));
                manifest.warnings.push(w);
            }
            manifest.steps_done = out.step;
            manifest
                .save(&opts.dir)
                .map_err(setup(opts.dir.join("run.json").display()))?;
        }
        if interrupted && !trainer.finished() {
            progress.finish();
            manifest.status = RunStatus::Interrupted;
            manifest.reason = Some(format!("interrupted after step {}", out.step));
            manifest.ended_at = Some(manifest::now());
            manifest
                .save(&opts.dir)
                .map_err(setup(opts.dir.join("run.json").display()))?;
            if !opts.final_checkpoint {
                return Err(RunError::Setup(format!(
                    "interrupted at step {}; no checkpoint written (--no-final-checkpoint), so {} \
                     cannot be resumed",
                    out.step,
                    opts.dir.display()
                )));
            }
            return Err(RunError::Interrupted {
                step: out.step,
                dir: opts.dir.display().to_string(),
            });
        }
    }
    progress.finish();
    // Resumed from the final checkpoint (killed before run.json said finished): the final eval row was
    // written before that checkpoint; evaluate again for the manifest, deterministically, without a new row.
    let write_final = first_step < cfg.steps;
    last_eval = eval_now(&mut trainer, &mut metrics, elapsed(&t0), write_final)?.or(last_eval);
    if opts.final_checkpoint {
        if let Err(e) =
            save_checkpoint(&mut trainer, &opts.dir, elapsed(&t0), opts.keep_checkpoints)
        {
            let w = format!("final checkpoint not written: {e}");
            eprintln!("warning: {w}");
            manifest.warnings.push(w);
        }
    }
    let figures = FinalFigures {
        train_loss: last_loss,
        eval_loss: last_eval.map(|e| e.0),
        eval_loss_se: last_eval.map(|e| e.1),
        tokens: trainer.step * tps,
    };
    manifest.status = RunStatus::Finished;
    manifest.steps_done = trainer.step;
    manifest.ended_at = Some(manifest::now());
    manifest.final_figures = figures.clone();
    manifest
        .save(&opts.dir)
        .map_err(setup(opts.dir.join("run.json").display()))?;
    eprintln!(
        "finished {} steps in {}: train loss {}, eval loss {}  → {}",
        trainer.step,
        fmt_duration(elapsed(&t0)),
        figures.train_loss.map_or("-".into(), |l| format!("{l:.4}")),
        figures.eval_loss.map_or("-".into(), |l| format!("{l:.4}")),
        opts.dir.display()
    );
    Ok(RunSummary {
        dir: opts.dir.clone(),
        figures,
        steps: trainer.step,
    })
}

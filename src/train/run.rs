//! A whole run in a run directory: start or resume, train with progress, evaluate, checkpoint, record.
//!
//! Run directory: `run.json` (manifest), `metrics.jsonl` (per-step and eval records),
//! `checkpoints/step-NNNNNNNN/` (the last K checkpoints), `run.lock` (one trainer at a time),
//! `run.log` (notes that must survive a lost terminal).

use super::checkpoint::{self, CheckpointError, CheckpointState, CHECKPOINT_FORMAT};
use super::config::TrainConfigError;
use super::config::{DataSpec, TrainConfig};
use super::lock::{LockError, RunLock};
use super::manifest::{
    self, DataInfo, FinalFigures, Manifest, ManifestError, Operational, RunStatus, SettingOverride,
    ShardRef, SoftwareInfo,
};
use super::metrics::{EvalRecord, MetricsWriter, StepRecord};
use super::progress::{fmt_duration, Console, Progress};
use super::trainer::{StepOutcome, TrainError, Trainer};
use crate::backend::BackendError;
use crate::data::shard::{list_shards, Shard};
use crate::data::{
    bundled_shards, describe_identity, BundledCorpus, DataError, ShardLoader, SourceError, Split,
    SyntheticSource, TokenSource,
};
use crate::device::{self, DeviceChoice, DeviceError, DeviceKind};
use crate::error::error_chain;
use crate::model::{init_params, Flops, ParamCounts};
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
    /// Operational settings given as flags: for a new run, None takes the default; on resume, None keeps
    /// the run's own value and a given one overrides it (recorded in run.json's `overrides`).
    pub settings: SettingFlags,
    /// Write the final checkpoint and the one on interruption (false: `--no-final-checkpoint`; an
    /// interrupted run then cannot be resumed).
    pub final_checkpoint: bool,
    /// Stop (as if interrupted) after this step; for tests and for splitting long runs.
    pub stop_after: Option<u64>,
    /// Treat SIGHUP like SIGTERM (checkpoint and stop); by default it is ignored once training started.
    pub stop_on_hangup: bool,
}

/// Operational settings: how a run checkpoints and reports, not what it computes (None = not given).
/// Eval and log cadence and eval size live in [`TrainConfig`], the others in run.json.
#[derive(Clone, Debug, Default)]
pub struct SettingFlags {
    /// Checkpoint every this many steps (0 = only at the end and on interruption).
    pub checkpoint_every: Option<u64>,
    /// Checkpoints kept.
    pub keep_checkpoints: Option<usize>,
    /// Evaluate every this many steps (0 = only at the end).
    pub eval_every: Option<u64>,
    /// Held-out sequences per evaluation.
    pub eval_sequences: Option<usize>,
    /// Plain log line every this many steps.
    pub log_every: Option<u64>,
    /// Peak FLOP/s for MFU (overrides the device table).
    pub peak_flops: Option<f64>,
}

impl SettingFlags {
    /// Apply the given settings to a resumed run's manifest; returns what changed (flag, from, to).
    fn apply(&self, m: &mut Manifest) -> Vec<(String, String, String)> {
        let mut changed = Vec::new();
        fn set<T: PartialEq + serde::Serialize + Copy>(
            changed: &mut Vec<(String, String, String)>,
            flag: &str,
            given: Option<T>,
            slot: &mut T,
        ) {
            if let Some(v) = given {
                if v != *slot {
                    let show = |x: &T| serde_json::to_string(x).unwrap_or_default();
                    changed.push((flag.into(), show(slot), show(&v)));
                    *slot = v;
                }
            }
        }
        let (c, o) = (&mut m.config, &mut m.operational);
        set(
            &mut changed,
            "--checkpoint-every",
            self.checkpoint_every,
            &mut o.checkpoint_every,
        );
        set(
            &mut changed,
            "--keep-checkpoints",
            self.keep_checkpoints,
            &mut o.keep_checkpoints,
        );
        set(
            &mut changed,
            "--eval-every",
            self.eval_every,
            &mut c.eval_every,
        );
        set(
            &mut changed,
            "--eval-sequences",
            self.eval_sequences,
            &mut c.eval_sequences,
        );
        set(
            &mut changed,
            "--log-every",
            self.log_every,
            &mut c.log_every,
        );
        set(
            &mut changed,
            "--peak-flops",
            self.peak_flops.map(Some),
            &mut m.peak_flops,
        );
        changed
    }
}

/// Why a run did not finish. Where a cause underlies it, the message names the file, step or setting
/// and `source()` is the cause: `{e:#}` (as the command line prints it) shows the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A run that cannot start or continue as asked; the message says why and what to do.
    #[error("{0}")]
    Setup(String),
    /// The configuration cannot run.
    #[error(transparent)]
    Config(#[from] TrainConfigError),
    /// The run directory's lock.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// `run.json` cannot be read or written.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The run to resume has no readable `run.json`.
    #[error("cannot resume")]
    Resume(#[source] ManifestError),
    /// The device cannot be opened.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Shards cannot be opened.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A file or system call failed while doing `what`.
    #[error("{what}")]
    Io {
        /// What was being done (names the file).
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Preparing data for `what` failed.
    #[error("{what}")]
    Prepare {
        /// What was being prepared.
        what: String,
        /// The cause.
        #[source]
        source: DataError,
    },
    /// A token source failed (reading windows, restoring a position) for `what`.
    #[error("{what}")]
    Source {
        /// The source or checkpoint concerned.
        what: String,
        /// The cause.
        #[source]
        source: SourceError,
    },
    /// The backend failed while doing `what` outside a training step.
    #[error("{what}")]
    Backend {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: BackendError,
    },
    /// A checkpoint cannot be written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
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

impl RunError {
    fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> RunError {
        move |source| RunError::Io {
            what: what.to_string(),
            source,
        }
    }

    fn stream(what: impl std::fmt::Display) -> impl FnOnce(SourceError) -> RunError {
        move |source| RunError::Source {
            what: what.to_string(),
            source,
        }
    }

    fn prepare(what: &str) -> impl FnOnce(DataError) -> RunError + '_ {
        move |source| RunError::Prepare {
            what: what.to_string(),
            source,
        }
    }

    fn backend(what: &str) -> impl FnOnce(BackendError) -> RunError + '_ {
        move |source| RunError::Backend {
            what: what.to_string(),
            source,
        }
    }
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

/// A run's training source, its held-out windows (`n × (T+1)` ids) and their description for run.json.
pub type OpenedData = (Box<dyn TokenSource>, Vec<u16>, DataInfo);

/// Training source and held-out windows for a data spec.
pub fn open_data(cfg: &TrainConfig) -> Result<OpenedData, RunError> {
    let (t, v) = (cfg.model.seq_len, cfg.model.vocab_size);
    let (train_dir, eval_dir) = match &cfg.data {
        DataSpec::Synthetic => {
            let train = SyntheticSource::new(t, v, cfg.seed);
            // Held-out windows: a far-away stretch of the same stream, never reached by training.
            let mut eval = SyntheticSource::starting_at(t, v, cfg.seed, 1 << 40);
            let windows = eval
                .next_batch(cfg.eval_sequences)
                .map_err(RunError::stream("synthetic eval stream"))?;
            let info = DataInfo {
                train: train.describe(),
                eval: format!("{} synthetic windows from 2^40 on", cfg.eval_sequences),
                shards: vec![],
                tokenizer_sha256: None,
            };
            return Ok((Box::new(train), windows, info));
        }
        DataSpec::Bundled { tokenizer } => {
            let dir = bundled_shards(BundledCorpus::Sample, *tokenizer)
                .map_err(RunError::prepare("preparing the bundled sample"))?;
            (dir.clone(), dir)
        }
        DataSpec::Books { tokenizer } => {
            let dir = bundled_shards(BundledCorpus::Books, *tokenizer)
                .map_err(RunError::prepare("preparing the bundled books"))?;
            (dir.clone(), dir)
        }
        DataSpec::Shards { dir, eval_dir } => {
            (dir.clone(), eval_dir.clone().unwrap_or_else(|| dir.clone()))
        }
    };
    let train = ShardLoader::open(&train_dir, t, cfg.seed, Split::Train, v)?;
    let mut eval = ShardLoader::open(&eval_dir, t, cfg.seed, Split::Eval, v)?;
    // Each loader checks its own directory; across the two, the tokenizer must agree as well.
    if eval.tokenizer_sha256() != train.tokenizer_sha256() {
        return Err(RunError::Setup(format!(
            "the training shards in {} were made with {} but the held-out shards in {} with {}: \
             tokenize both with the same tokenizer",
            train_dir.display(),
            describe_identity(&train.tokenizer_sha256()),
            eval_dir.display(),
            describe_identity(&eval.tokenizer_sha256())
        )));
    }
    let n_eval = (cfg.eval_sequences as u64).min(eval.num_windows()) as usize;
    let windows = eval
        .next_batch(n_eval)
        .map_err(RunError::stream(eval_dir.display()))?;
    let mut shards = Vec::new();
    for d in [&train_dir, &eval_dir] {
        for p in list_shards(d)? {
            let s = Shard::open(&p)?;
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
        tokenizer_sha256: Some(
            train
                .tokenizer_sha256()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        ),
    };
    Ok((Box::new(train), windows, info))
}

/// NVIDIA driver and CUDA driver-API versions of a GPU run (None on the CPU).
fn driver_for(kind: DeviceKind) -> Option<String> {
    if kind == DeviceKind::Cpu {
        return None;
    }
    let mi = device::peak::machine_info();
    match (mi.driver, mi.cuda_driver_api) {
        (Some(d), Some(api)) => Some(format!("{d} (CUDA driver API {api})")),
        (d, api) => d.or(api.map(|a| format!("CUDA driver API {a}"))),
    }
}

fn peak_flops_for(kind: DeviceKind, device: &str, given: Option<f64>) -> Option<f64> {
    match device::peak::datasheet_peak(kind, device, given) {
        Some(p) => Some(p.flops),
        None if kind == DeviceKind::Cpu => Some(device::peak::measure_cpu_peak_flops()),
        None => None,
    }
}

/// Memory this process may still take: `MemAvailable`, lowered by a cgroup (v2) limit when there is one.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let mut avail = kib * 1024;
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    if let (Some(max), Some(cur)) = (read("memory.max"), read("memory.current")) {
        avail = avail.min(max.saturating_sub(cur));
    }
    Some(avail)
}

/// Refuse a run whose memory need exceeds what the machine has, before allocating anything: a failed
/// allocation aborts the process (no error, no checkpoint, run.json left `running`). On the CPU the whole
/// need is host memory; on a GPU the host holds the parameters (the CUDA backend checks device memory
/// against its own plan before allocating).
fn check_memory(cfg: &TrainConfig, choice: DeviceChoice) -> Result<(), RunError> {
    let on_cpu = match choice {
        DeviceChoice::Cpu => true,
        DeviceChoice::Cuda(_) => false,
        DeviceChoice::Auto => device::probe_gpus().is_err(),
    };
    let n_params = ParamCounts::of(&cfg.model).total as usize;
    let mb = cfg.micro_batch;
    let tokens_bytes = 2usize
        .saturating_mul(mb.saturating_add(cfg.eval_sequences))
        .saturating_mul(cfg.model.seq_len + 1);
    let (need, what) = if on_cpu {
        let state = n_params * 4 * 7;
        let total = crate::cpu::memory_bytes(&cfg.model, n_params, mb);
        let acts = total - state;
        (
            total.saturating_add(tokens_bytes),
            format!(
                "on the CPU: parameters, gradients, AdamW moments and checkpoint copies {:.2} GiB, activations \
                 of one micro-batch of {mb} sequences {:.2} GiB",
                gib(state),
                gib(acts)
            ),
        )
    } else {
        (
            n_params * 4 * 3 + tokens_bytes,
            "in host memory next to the GPU (parameters and checkpoint copies)".to_string(),
        )
    };
    let Some(avail) = available_memory() else {
        return Ok(()); // not Linux-like: nothing to check against
    };
    if need as u64 > avail {
        return Err(RunError::Setup(format!(
            "this run needs about {:.2} GiB {what}, but only {:.2} GiB of memory is available; choose a \
             smaller --micro-batch (--batch-size {} stays the same through gradient accumulation) or a \
             smaller model",
            gib(need),
            gib(avail as usize),
            cfg.batch_size
        )));
    }
    Ok(())
}

fn gib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Start a new run in `opts.dir` (which must not hold a run yet).
pub fn start(cfg: TrainConfig, opts: &RunOptions) -> Result<RunSummary, RunError> {
    cfg.validate()?;
    check_memory(&cfg, opts.device)?;
    std::fs::create_dir_all(&opts.dir).map_err(RunError::io(opts.dir.display()))?;
    let _lock = RunLock::acquire(&opts.dir)?;
    if opts.dir.join("run.json").exists() {
        return Err(RunError::Setup(format!(
            "{} already holds a run; continue it with --resume {0}, or choose another --out",
            opts.dir.display()
        )));
    }
    let (source, eval, data) = open_data(&cfg)?;
    if let DeviceChoice::Cuda(index) = opts.device {
        // A missing GPU fails at once, before the parameters are initialised (seconds at D=2048).
        device::check_gpu(index)?;
    }
    let params = init_params(&cfg.model, cfg.seed);
    let opened = device::open_backend(opts.device, &cfg.model, params)?;
    let console = Console::new(&opts.dir);
    console.line(&opened.note);
    console.line(&format!("data: {}", data.train));
    let device = opened.backend.device().to_string();
    let manifest = Manifest {
        peak_flops: peak_flops_for(opened.kind, &device, opts.settings.peak_flops),
        driver: driver_for(opened.kind),
        operational: Operational {
            checkpoint_every: opts
                .settings
                .checkpoint_every
                .unwrap_or(manifest::DEFAULT_CHECKPOINT_EVERY),
            keep_checkpoints: opts
                .settings
                .keep_checkpoints
                .unwrap_or(manifest::DEFAULT_KEEP_CHECKPOINTS),
        },
        ..Manifest::start(
            cfg.clone(),
            data,
            device,
            software_info(),
            manifest::hostname(),
        )
    };
    manifest.save(&opts.dir)?;
    let trainer = Trainer::new(cfg, opened.backend, source, eval);
    let metrics = MetricsWriter::open(&opts.dir, Some(0))
        .map_err(RunError::io(opts.dir.join("metrics.jsonl").display()))?;
    drive(trainer, manifest, metrics, opts, &console, 0.0)
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
    // Lock before reading anything (a missing directory is reported by the manifest load below).
    let _lock = match opts.dir.is_dir() {
        true => Some(RunLock::acquire(&opts.dir)?),
        false => None,
    };
    let mut manifest = Manifest::load(&opts.dir).map_err(RunError::Resume)?;
    if manifest.status == RunStatus::Finished {
        return Err(RunError::Setup(format!(
            "{} is already finished ({} steps)",
            opts.dir.display(),
            manifest.steps_done
        )));
    }
    // The run's own operational settings, unless a flag of this command overrides them.
    let changed = opts.settings.apply(&mut manifest);
    let cfg = manifest.config.clone();
    cfg.validate()?;
    check_memory(&cfg, opts.device)?;
    let (mut source, eval, _) = open_data(&cfg)?;
    let ckpt_root = opts.dir.join("checkpoints");
    let (chosen, refused) = newest_good_checkpoint(&ckpt_root, &cfg)?;
    let (params, moments, state, history) = match chosen {
        Some((path, c, st)) => {
            source
                .restore(&st.source)
                .map_err(RunError::stream(path.display()))?;
            (c.params, c.m.zip(c.v), Some(st), c.history)
        }
        // Killed before the first checkpoint: start over from the seed, which is the same run.
        None => (init_params(&cfg.model, cfg.seed), None, None, None),
    };
    let opened = device::open_backend(opts.device, &cfg.model, params)?;
    let step = state.as_ref().map_or(0, |s| s.step);
    let console = Console::new(&opts.dir);
    console.line(&opened.note);
    console.line(&format!(
        "resuming {} at step {step}/{}",
        opts.dir.display(),
        cfg.steps
    ));
    for (flag, from, to) in changed {
        console.line(&format!("{flag}: {to} from now on (the run had {from})"));
        manifest.overrides.push(SettingOverride {
            step,
            flag,
            from,
            to,
        });
    }
    let kind = opened.kind;
    let mut trainer = Trainer::new(cfg, opened.backend, source, eval);
    if let Some((m, v)) = moments {
        trainer
            .backend_mut()
            .write_moments(&m, &v)
            .map_err(RunError::backend("restoring optimizer state"))?;
    }
    trainer.step = step;
    manifest.status = RunStatus::Running;
    manifest.reason = None;
    manifest.ended_at = None;
    manifest.resumed_at.push(step);
    manifest.device = trainer.backend().device().to_string();
    manifest.driver = driver_for(kind);
    // Checkpoints refused on the way to the one resumed from, then the metrics history's check.
    let (metrics, check) = MetricsWriter::open_checked(&opts.dir, step, history.as_deref())
        .map_err(RunError::io(opts.dir.join("metrics.jsonl").display()))?;
    let record = format!("the record in checkpoint {}", checkpoint::dir_name(step));
    for w in refused.into_iter().chain(check.warnings(&record)) {
        console.line(&format!("warning: {w}"));
        manifest.warnings.push(w);
    }
    save_manifest(&manifest, &opts.dir, step)?;
    drive(
        trainer,
        manifest,
        metrics,
        opts,
        &console,
        state.map_or(0.0, |s| s.elapsed_s),
    )
}

/// The newest checkpoint under `root` that loads, verifies and belongs to this configuration, with one warning
/// per newer checkpoint refused on the way. No checkpoints at all is `None` (the run restarts from its seed);
/// checkpoints of which none is usable is an error listing why each was refused.
#[allow(clippy::type_complexity)]
fn newest_good_checkpoint(
    root: &Path,
    cfg: &TrainConfig,
) -> Result<
    (
        Option<(PathBuf, checkpoint::Checkpoint, CheckpointState)>,
        Vec<String>,
    ),
    RunError,
> {
    let all = checkpoint::list(root);
    let mut refused = Vec::new();
    for (_, path) in all.iter().rev() {
        let loaded = checkpoint::load(path, Some(&cfg.model))
            .map_err(|e| error_chain(&e))
            .and_then(|mut c| {
                let st = c
                    .state
                    .take()
                    .ok_or_else(|| format!("{}: no state.json", path.display()))?;
                if st.config.contract() != cfg.contract() {
                    return Err(format!(
                        "{}: the checkpoint's configuration differs from run.json's",
                        path.display()
                    ));
                }
                Ok((c, st))
            });
        match loaded {
            Ok((c, st)) => {
                // Refused checkpoints are moved aside, kept for inspection: left in place, pruning would
                // count them among the newest and could delete the good ones.
                let refused = refused
                    .into_iter()
                    .map(|(bad, r): (&PathBuf, String)| {
                        let aside = bad.with_extension("refused");
                        let moved = std::fs::remove_dir_all(&aside)
                            .or_else(|e| match e.kind() {
                                std::io::ErrorKind::NotFound => Ok(()),
                                _ => Err(e),
                            })
                            .and_then(|_| std::fs::rename(bad, &aside))
                            .map_or_else(
                                |e| format!("could not be moved aside: {e}"),
                                |_| format!("moved to {}", aside.display()),
                            );
                        format!(
                            "{r}; resuming from the previous good checkpoint, step {} (the refused one is {moved})",
                            st.step
                        )
                    })
                    .collect();
                return Ok((Some((path.clone(), c, st)), refused));
            }
            Err(e) => refused.push((path, format!("checkpoint refused: {e}"))),
        }
    }
    if refused.is_empty() {
        return Ok((None, vec![]));
    }
    let why: Vec<String> = refused.into_iter().map(|(_, r)| r).collect();
    Err(RunError::Setup(format!(
        "cannot resume: no usable checkpoint in {}:\n  {}\nTo train this run again from step 0, move {0} away first.",
        root.display(),
        why.join("\n  ")
    )))
}

/// Write run.json or stop: a run whose manifest cannot be written (a full disk) must not go on with a record
/// that says something else.
fn save_manifest(manifest: &Manifest, dir: &Path, step: u64) -> Result<(), RunError> {
    manifest.save(dir).map_err(|e| {
        let ck = checkpoint::list(&dir.join("checkpoints"))
            .pop()
            .map_or("no checkpoint".to_string(), |(s, _)| format!("checkpoint step {s}"));
        RunError::Setup(format!(
            "{}; stopping after step {step} (newest on disk: {ck}). Free space, then continue with: isoflop train --resume {}",
            error_chain(&e),
            dir.display()
        ))
    })
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
    metrics: &MetricsWriter,
    dir: &Path,
    elapsed_s: f64,
    keep: usize,
) -> Result<PathBuf, RunError> {
    let params = trainer
        .backend()
        .read_params()
        .map_err(RunError::backend("reading the parameters"))?;
    let (m, v) = trainer
        .backend()
        .read_moments()
        .map_err(RunError::backend("reading the optimizer moments"))?;
    let state = CheckpointState {
        format: CHECKPOINT_FORMAT,
        step: trainer.step,
        elapsed_s,
        source: trainer.source_mut().state(),
        config: trainer.config().clone(),
    };
    let root = dir.join("checkpoints");
    let history = metrics.history(state.step);
    let path = checkpoint::save(&root, &params, &m, &v, &state, &history)?;
    checkpoint::prune(&root, keep)?;
    Ok(path)
}

/// What a failed checkpoint at `step` leaves: the newest earlier one, or the truth that there is none.
fn previous_checkpoint(dir: &Path, step: u64) -> String {
    match checkpoint::list(&dir.join("checkpoints"))
        .into_iter()
        .rfind(|(s, _)| *s < step)
    {
        Some((s, _)) => format!("the previous checkpoint (step {s}) is kept"),
        None => {
            "there is no earlier checkpoint: a resume would start again from step 0".to_string()
        }
    }
}

/// SIGINT/SIGTERM (and SIGHUP with `--stop-on-hangup`) set the first flag, asking the run to checkpoint and
/// stop; SIGHUP otherwise sets the second, only noted.
fn install_signal_handlers(
    stop_on_hangup: bool,
) -> Result<(Arc<AtomicBool>, Arc<AtomicBool>), RunError> {
    let stop = Arc::new(AtomicBool::new(false));
    // A closed terminal or ssh session sends SIGHUP: a run survives it unless asked to stop (then like
    // SIGTERM). A flag, not SIG_IGN, so that its arrival can be noted in the run log.
    let hangup = Arc::new(AtomicBool::new(false));
    let on_hup = if stop_on_hangup { &stop } else { &hangup };
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(on_hup))
        .map_err(RunError::io("installing signal handlers"))?;
    // A second Ctrl-C while the first is being handled (a checkpoint in progress) exits at once. Only
    // SIGINT: a sweep forwards SIGTERM to trainers that already got the terminal's SIGINT.
    signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        Arc::clone(&stop),
    )
    .map_err(RunError::io("installing signal handlers"))?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(RunError::io("installing signal handlers"))?;
    }
    Ok((stop, hangup))
}

/// A run being trained: its record on disk (`run.json`, `metrics.jsonl`, checkpoints) and the figures it
/// reports at the end. Every write of `run.json` goes through [`RunState::save`].
struct RunState<'a> {
    manifest: Manifest,
    metrics: MetricsWriter,
    opts: &'a RunOptions,
    console: &'a Console,
    progress: Progress<'a>,
    /// Steps of the whole run.
    steps: u64,
    tokens_per_step: u64,
    per_token: Flops,
    /// Wall time of the sessions before this one (a resumed run), and this session's start.
    elapsed0: f64,
    t0: Instant,
    /// The step this session started from.
    first_step: u64,
    last_loss: Option<f64>,
    /// Last held-out loss and its standard error.
    last_eval: Option<(f64, f64)>,
}

impl<'a> RunState<'a> {
    fn new(
        trainer: &Trainer,
        manifest: Manifest,
        metrics: MetricsWriter,
        opts: &'a RunOptions,
        console: &'a Console,
        elapsed0: f64,
    ) -> Self {
        let cfg = trainer.config();
        RunState {
            progress: Progress::new(cfg.steps, trainer.step, cfg.log_every, console),
            steps: cfg.steps,
            tokens_per_step: cfg.tokens_per_step(),
            per_token: *trainer.flops_per_token(),
            manifest,
            metrics,
            opts,
            console,
            elapsed0,
            t0: Instant::now(),
            first_step: trainer.step,
            last_loss: None,
            last_eval: None,
        }
    }

    /// Wall time since the run started, across resumes.
    fn elapsed(&self) -> f64 {
        self.elapsed0 + self.t0.elapsed().as_secs_f64()
    }

    /// Write run.json or stop: a run whose manifest cannot be written (a full disk) must not go on with a
    /// record that says something else.
    fn save(&self, step: u64) -> Result<(), RunError> {
        save_manifest(&self.manifest, &self.opts.dir, step)
    }

    /// Mark the run failed after `steps` steps, best effort: the error that stops it matters more than a
    /// run.json that cannot be written.
    fn fail(&mut self, steps: u64, reason: String) {
        self.progress.finish();
        self.manifest.status = RunStatus::Failed;
        self.manifest.reason = Some(reason);
        self.manifest.steps_done = steps;
        self.manifest.ended_at = Some(manifest::now());
        let _ = self.save(steps);
    }

    /// A training step failed: the run is marked failed, naming the last good checkpoint.
    fn fail_step(&mut self, step: u64, e: TrainError) -> RunError {
        let keep = checkpoint::list(&self.opts.dir.join("checkpoints"))
            .pop()
            .map_or("no checkpoint was written yet".to_string(), |(s, _)| {
                format!("last good checkpoint: step {s}")
            });
        self.fail(step, format!("{e} ({keep})"));
        e.into()
    }

    /// Record the step `out`, which took `step_time_s`: its metrics row and the progress display.
    fn record_step(&mut self, out: &StepOutcome, step_time_s: f64) -> Result<(), RunError> {
        let rec = StepRecord::new(
            out,
            self.tokens_per_step,
            &self.per_token,
            self.elapsed(),
            step_time_s,
            self.manifest.peak_flops,
        );
        if let Err(e) = self.metrics.write(&rec) {
            let reason = format!(
                "cannot write {} ({e}); stopped after step {}",
                self.metrics.path().display(),
                out.step
            );
            self.fail(out.step - 1, reason.clone());
            return Err(RunError::Setup(format!(
                "{reason}. Free space, then continue with: isoflop train --resume {}",
                self.opts.dir.display()
            )));
        }
        self.last_loss = Some(out.loss);
        let done_here = (out.step - self.first_step) as f64;
        let eta = (self.steps - out.step) as f64 * self.t0.elapsed().as_secs_f64() / done_here;
        self.progress
            .step(out.step, out.loss, rec.tokens_per_s, eta);
        Ok(())
    }

    /// Evaluate on the held-out windows (nothing without them); `write`: append the eval row.
    fn record_eval(&mut self, trainer: &mut Trainer, write: bool) -> Result<(), RunError> {
        let Some(e) = trainer.evaluate()? else {
            return Ok(());
        };
        let rec = EvalRecord::new(
            &e,
            trainer.step,
            self.tokens_per_step,
            &self.per_token,
            self.elapsed(),
        );
        if write {
            self.metrics
                .write(&rec)
                .map_err(RunError::io(self.metrics.path().display()))?;
        }
        // The standard error needs at least two micro-batches of eval windows (see `isoflop eval`).
        let spread = match e.stderr.is_finite() {
            true => format!(" ± {:.4}", e.stderr),
            false => " (no interval: the eval windows fit in one micro-batch)".into(),
        };
        self.progress.println(&format!(
            "step {}: eval loss {:.4}{spread} ({} tokens)",
            trainer.step, e.loss, e.tokens
        ));
        self.last_eval = Some((e.loss, e.stderr));
        Ok(())
    }

    /// Write a checkpoint of `trainer` and prune old ones. One that cannot be written is a warning (the
    /// previous one is kept); training goes on.
    fn write_checkpoint(&mut self, trainer: &mut Trainer, last: bool) {
        let ops = &self.manifest.operational;
        let written = save_checkpoint(
            trainer,
            &self.metrics,
            &self.opts.dir,
            self.elapsed(),
            ops.keep_checkpoints,
        );
        if let Err(e) = written {
            let e = error_chain(&e);
            let previous = previous_checkpoint(&self.opts.dir, trainer.step);
            let w = match last {
                false => format!(
                    "step {}: checkpoint not written ({e}); {previous}",
                    trainer.step
                ),
                true => format!("final checkpoint not written ({e}); {previous}"),
            };
            match last {
                false => self.progress.println(&format!("warning: {w}")),
                true => self.console.line(&format!("warning: {w}")),
            }
            self.manifest.warnings.push(w);
        }
    }

    /// A checkpoint during training, then run.json records the steps done.
    fn checkpoint(&mut self, trainer: &mut Trainer) -> Result<(), RunError> {
        self.write_checkpoint(trainer, false);
        self.manifest.steps_done = trainer.step;
        if let Err(e) = self.save(trainer.step) {
            self.progress.finish();
            return Err(e);
        }
        Ok(())
    }

    /// Stop after `step` on a signal or `stop_after` (the checkpoint is already written, unless
    /// `--no-final-checkpoint`): the error that tells how to continue.
    fn interrupt(&mut self, step: u64) -> RunError {
        self.progress.finish();
        self.manifest.status = RunStatus::Interrupted;
        self.manifest.reason = Some(format!("interrupted after step {step}"));
        self.manifest.ended_at = Some(manifest::now());
        if let Err(e) = self.save(step) {
            return e;
        }
        if !self.opts.final_checkpoint {
            return RunError::Setup(format!(
                "interrupted at step {step}; no checkpoint written (--no-final-checkpoint), so {} \
                 cannot be resumed",
                self.opts.dir.display()
            ));
        }
        RunError::Interrupted {
            step,
            dir: self.opts.dir.display().to_string(),
        }
    }

    /// The end of training: final evaluation and checkpoint, a check of the metrics history, run.json
    /// marked finished.
    fn finish(mut self, trainer: &mut Trainer) -> Result<RunSummary, RunError> {
        self.progress.finish();
        // Resumed from the final checkpoint (killed before run.json said finished): the final eval row was
        // written before that checkpoint; evaluate again for the manifest, deterministically, without a
        // new row.
        let write_final = self.first_step < self.steps;
        self.record_eval(trainer, write_final)?;
        if self.opts.final_checkpoint {
            self.write_checkpoint(trainer, true);
        }
        self.check_history(trainer.step);
        let figures = FinalFigures {
            train_loss: self.last_loss,
            eval_loss: self.last_eval.map(|e| e.0),
            eval_loss_se: self.last_eval.map(|e| e.1),
            tokens: trainer.step * self.tokens_per_step,
        };
        self.manifest.status = RunStatus::Finished;
        self.manifest.steps_done = trainer.step;
        self.manifest.ended_at = Some(manifest::now());
        self.manifest.final_figures = figures.clone();
        self.save(trainer.step)?;
        let done = format!(
            "finished {} steps in {}: train loss {}, eval loss {}  → {}",
            trainer.step,
            fmt_duration(self.elapsed()),
            figures.train_loss.map_or("-".into(), |l| format!("{l:.4}")),
            figures.eval_loss.map_or("-".into(), |l| format!("{l:.4}")),
            self.opts.dir.display()
        );
        self.console.line(&done);
        if self.console.is_lost() {
            self.console.note(&done);
        }
        Ok(RunSummary {
            dir: self.opts.dir.clone(),
            figures,
            steps: trainer.step,
        })
    }

    /// A finished run never has silent holes (e.g. metrics.jsonl deleted or damaged during the run): rows
    /// missing through `step` are rewritten from memory, or named in a warning.
    fn check_history(&mut self, step: u64) {
        let path = self.metrics.path().to_path_buf();
        let w = match super::metrics::missing_train_steps(&path, step) {
            Ok(missing) if missing.is_empty() => return,
            Ok(missing) => {
                let steps = super::metrics::ranges(&missing);
                let restored = self
                    .metrics
                    .rewrite_from_memory()
                    .and_then(|_| super::metrics::missing_train_steps(&path, step));
                match restored {
                    Ok(still) if still.is_empty() => format!(
                        "metrics.jsonl: step(s) {steps} were missing at the end of the run (damaged while it ran); rewritten from memory"
                    ),
                    Ok(still) => format!(
                        "metrics.jsonl: step(s) {} are missing; the history has holes",
                        super::metrics::ranges(&still)
                    ),
                    Err(e) => format!(
                        "metrics.jsonl: step(s) {steps} are missing and the file could not be rewritten ({e}); the history has holes"
                    ),
                }
            }
            Err(e) => format!("{}: cannot be read back ({e})", path.display()),
        };
        self.console.line(&format!("warning: {w}"));
        self.manifest.warnings.push(w);
    }
}

/// Train from `trainer`'s step to the end of the schedule, recording as it goes; stops on a signal or
/// `opts.stop_after` with a checkpoint.
fn drive(
    mut trainer: Trainer,
    manifest: Manifest,
    metrics: MetricsWriter,
    opts: &RunOptions,
    console: &Console,
    elapsed0: f64,
) -> Result<RunSummary, RunError> {
    let (stop, hangup) = install_signal_handlers(opts.stop_on_hangup)?;
    let mut run = RunState::new(&trainer, manifest, metrics, opts, console, elapsed0);
    let eval_every = trainer.config().eval_every;
    let checkpoint_every = run.manifest.operational.checkpoint_every;
    while !trainer.finished() {
        let ts = Instant::now();
        let out = match trainer.train_step() {
            Ok(o) => o,
            Err(e) => return Err(run.fail_step(trainer.step, e)),
        };
        run.record_step(&out, ts.elapsed().as_secs_f64())?;
        if hangup.swap(false, Ordering::SeqCst) {
            console.note(&format!(
                "SIGHUP after step {} ignored (the terminal closed?); training goes on \
                 (--stop-on-hangup would checkpoint and stop)",
                out.step
            ));
        }
        if eval_every > 0 && out.step % eval_every == 0 && !trainer.finished() {
            run.record_eval(&mut trainer, true)?;
        }
        let interrupted =
            stop.load(Ordering::SeqCst) || opts.stop_after.is_some_and(|s| out.step >= s);
        let periodic = checkpoint_every > 0 && out.step % checkpoint_every == 0;
        if (periodic || (interrupted && opts.final_checkpoint)) && !trainer.finished() {
            run.checkpoint(&mut trainer)?;
        }
        if interrupted && !trainer.finished() {
            return Err(run.interrupt(out.step));
        }
    }
    run.finish(&mut trainer)
}

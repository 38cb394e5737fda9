//! `isoflop train`: train one model, or resume a run.

use anyhow::Context;
use isoflop::backend::DecayMode;
use isoflop::data::TokenizerKind;
use isoflop::device::DeviceChoice;
use isoflop::model::config::{preset, PRESETS};
use isoflop::model::ModelConfig;
use isoflop::train::run::{self, RunOptions, SettingFlags};
use isoflop::train::{DataSpec, OptimizerConfig, TrainConfig};
use std::path::PathBuf;

/// Model shape flags shared by `train` and `info`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// Named shape: tiny (64/2, T=128), small (128/4, T=256), d256, d512, d1024, d2048 (T=512).
    #[arg(long)]
    pub preset: Option<String>,
    /// Width D (multiple of 64).
    #[arg(long)]
    pub d_model: Option<usize>,
    /// Depth L.
    #[arg(long)]
    pub n_layers: Option<usize>,
    /// Context length T.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Vocabulary size V.
    #[arg(long)]
    pub vocab_size: Option<usize>,
}

impl ModelArgs {
    /// The model shape: `base` (from a config file) or the preset, then the individual flags.
    pub fn resolve(&self, base: Option<ModelConfig>) -> anyhow::Result<ModelConfig> {
        let mut cfg = match &self.preset {
            Some(p) => preset(p).with_context(|| {
                format!(
                    "--preset {p:?} is unknown; choose one of {}",
                    PRESETS.join(", ")
                )
            })?,
            None => base.unwrap_or_else(|| ModelConfig::new(512, 8)),
        };
        if let Some(d) = self.d_model {
            cfg.d_model = d;
        }
        if let Some(l) = self.n_layers {
            cfg.n_layers = l;
        }
        if let Some(t) = self.seq_len {
            cfg.seq_len = t;
        }
        if let Some(v) = self.vocab_size {
            cfg.vocab_size = v;
        }
        Ok(cfg)
    }

    fn any(&self) -> bool {
        self.preset.is_some()
            || self.d_model.is_some()
            || self.n_layers.is_some()
            || self.seq_len.is_some()
            || self.vocab_size.is_some()
    }
}

/// The optimizer flags of `isoflop train`: each one not given keeps the value of the config file (or the
/// default); [`OptimizerArgs::apply`] sets the given ones on a [`TrainConfig`].
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OptimizerArgs {
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warmup steps.
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Final learning rate as a fraction of the peak.
    #[arg(long)]
    pub final_lr_frac: Option<f64>,
    /// AdamW β1.
    #[arg(long)]
    pub beta1: Option<f32>,
    /// AdamW β2.
    #[arg(long)]
    pub beta2: Option<f32>,
    /// AdamW ε.
    #[arg(long)]
    pub eps: Option<f32>,
    /// Weight decay λ.
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Decay coupled to the learning rate, or independent of it.
    #[arg(long, value_enum)]
    pub decay_mode: Option<DecayMode>,
    /// Clip the global gradient norm to this value.
    #[arg(long)]
    pub clip: Option<f64>,
}

impl OptimizerArgs {
    /// Set the flags given on `c` (the peak learning rate and warmup, and its [`OptimizerConfig`]).
    pub fn apply(&self, c: &mut TrainConfig) {
        let o: &mut OptimizerConfig = &mut c.optimizer;
        if let Some(v) = self.lr {
            c.lr = v;
        }
        if let Some(v) = self.warmup_steps {
            c.warmup_steps = v;
        }
        if let Some(v) = self.final_lr_frac {
            o.final_lr_frac = v;
        }
        if let Some(v) = self.beta1 {
            o.beta1 = v;
        }
        if let Some(v) = self.beta2 {
            o.beta2 = v;
        }
        if let Some(v) = self.eps {
            o.eps = v;
        }
        if let Some(v) = self.weight_decay {
            o.weight_decay = v;
        }
        if let Some(v) = self.decay_mode {
            o.decay_mode = v;
        }
        if self.clip.is_some() {
            o.clip = self.clip;
        }
    }
}

/// Arguments of `isoflop train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Configuration file (TOML or JSON, fields as in run.json's `config`); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Global batch size in sequences per optimizer step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Sequences per forward/backward pass (gradient accumulation makes up the global batch).
    #[arg(long)]
    micro_batch: Option<usize>,
    /// Optimizer steps.
    #[arg(long, conflicts_with_all = ["tokens", "token_multiplier"])]
    steps: Option<u64>,
    /// Train for this many tokens (sets the number of steps).
    #[arg(long, conflicts_with = "token_multiplier")]
    tokens: Option<f64>,
    /// Train for M tokens per parameter (20 = Chinchilla-optimal).
    #[arg(long, value_name = "M")]
    token_multiplier: Option<f64>,
    #[command(flatten)]
    optimizer: OptimizerArgs,
    /// Seed of initialisation and data order.
    #[arg(long)]
    seed: Option<u64>,
    /// Training data: `bundled` (the sample in data/sample), `books` (the sample and data/books),
    /// `synthetic`, or a directory of shards.
    #[arg(long)]
    data: Option<String>,
    /// Tokenizer of `--data bundled|books`: `sentencepiece` (default, V 32101) or `bytes` (V 260;
    /// the vocabulary follows unless --vocab-size is given).
    #[arg(long, requires = "data")]
    tokenizer: Option<String>,
    /// Directory of held-out shards (default: a declared split of --data).
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Evaluate every N steps (0 = only at the end). On --resume: overrides the run's own.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Held-out sequences per evaluation. On --resume: overrides the run's own.
    #[arg(long)]
    eval_sequences: Option<usize>,
    /// Plain log line every N steps when stderr is not a terminal. On --resume: overrides the run's own.
    #[arg(long)]
    log_every: Option<u64>,
    /// Run directory (default runs/<date>-<time>-d<D>l<L>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its own operational settings
    /// (checkpoint, eval and log cadence, eval size, peak FLOP/s); those flags given here override them.
    /// Flags that would change the model, data or optimizer configuration are refused.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = [
        "config", "out", "preset", "d_model", "n_layers", "seq_len", "vocab_size", "batch_size", "micro_batch",
        "steps", "tokens", "token_multiplier", "lr", "warmup_steps", "final_lr_frac", "beta1", "beta2", "eps",
        "weight_decay", "decay_mode", "clip", "seed", "data", "eval_data", "print_config",
    ])]
    resume: Option<PathBuf>,
    /// auto (GPU if usable, else CPU), cpu, or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Write a checkpoint every N steps (0 = only at the end and on SIGINT/SIGTERM) [default: 100; on
    /// --resume: the run's own].
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Keep the newest K checkpoints [default: 2; on --resume: the run's own].
    #[arg(long, value_name = "K")]
    keep_checkpoints: Option<usize>,
    /// Write no checkpoint at the end, nor on SIGINT/SIGTERM (with --checkpoint-every 0: none at all;
    /// such a run cannot be resumed). For throughput and memory checks of large models.
    #[arg(long, conflicts_with = "resume")]
    no_final_checkpoint: bool,
    /// Peak FLOP/s of the device for MFU (default: datasheet bf16 peak of known GPUs).
    #[arg(long)]
    peak_flops: Option<f64>,
    /// Checkpoint and stop on SIGHUP (a closed terminal), like SIGTERM; by default SIGHUP is ignored once
    /// training has started.
    #[arg(long)]
    stop_on_hangup: bool,
    /// Stop as if interrupted after this step (checkpoint written; resumable).
    #[arg(long, hide = true)]
    stop_after: Option<u64>,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

impl TrainArgs {
    fn resolve(&self) -> anyhow::Result<TrainConfig> {
        for (flag, v) in [
            ("--tokens", self.tokens),
            ("--token-multiplier", self.token_multiplier),
        ] {
            if let Some(v) = v {
                anyhow::ensure!(v.is_finite() && v > 0.0, "{flag} must be positive, got {v}");
            }
        }
        if self.batch_size == Some(0) {
            anyhow::bail!("--batch-size must be at least 1");
        }
        if self.micro_batch == Some(0) {
            anyhow::bail!("--micro-batch must be at least 1");
        }
        let mut c = match &self.config {
            Some(p) => TrainConfig::from_file(p)?,
            None => TrainConfig::default(),
        };
        if self.model.any() {
            c.model = self.model.resolve(Some(c.model))?;
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$f = v; } )* };
        }
        set!(
            batch_size,
            micro_batch,
            steps,
            seed,
            eval_every,
            eval_sequences,
            log_every
        );
        if self.batch_size.is_some() && self.micro_batch.is_none() {
            c.micro_batch = c.micro_batch.min(c.batch_size);
            if c.micro_batch == 0 || !c.batch_size.is_multiple_of(c.micro_batch) {
                c.micro_batch = c.batch_size;
            }
        }
        if self.micro_batch.is_some() && self.batch_size.is_none() && c.batch_size < c.micro_batch {
            c.batch_size = c.micro_batch;
        }
        self.optimizer.apply(&mut c);
        if let Some(d) = &self.data {
            let tokenizer = match &self.tokenizer {
                None => TokenizerKind::SentencePiece,
                Some(t) => TokenizerKind::parse(t).with_context(|| {
                    format!("--tokenizer {t:?}: expected `sentencepiece` or `bytes`")
                })?,
            };
            c.data = match d.as_str() {
                "bundled" => DataSpec::Bundled { tokenizer },
                "books" => DataSpec::Books { tokenizer },
                _ if self.tokenizer.is_some() => anyhow::bail!(
                    "--tokenizer applies to --data bundled or books; shards record their own \
                     tokenizer (isoflop data tokenize --tokenizer)"
                ),
                "synthetic" => DataSpec::Synthetic,
                dir => DataSpec::Shards {
                    dir: PathBuf::from(dir),
                    eval_dir: self.eval_data.clone(),
                },
            };
            if c.data.tokenizer().is_some() && self.model.vocab_size.is_none() {
                c.model.vocab_size = tokenizer.vocab_size();
            }
        } else if let (Some(e), DataSpec::Shards { eval_dir, .. }) = (&self.eval_data, &mut c.data)
        {
            *eval_dir = Some(e.clone());
        }
        if let Some(t) = self.tokens {
            c.steps = c.steps_for_tokens(t);
        }
        if let Some(m) = self.token_multiplier {
            c.steps = c.steps_for_multiplier(m);
        }
        c.validate()?;
        Ok(c)
    }
}

/// Run `isoflop train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if args.keep_checkpoints == Some(0) {
        anyhow::bail!("--keep-checkpoints must be at least 1");
    }
    if let Some(p) = args.peak_flops {
        anyhow::ensure!(
            p.is_finite() && p > 0.0,
            "--peak-flops must be positive, got {p}"
        );
    }
    if args.eval_sequences == Some(0) {
        anyhow::bail!("--eval-sequences must be at least 1");
    }
    let options = |dir: PathBuf| RunOptions {
        dir,
        device: args.device,
        settings: SettingFlags {
            checkpoint_every: args.checkpoint_every,
            keep_checkpoints: args.keep_checkpoints,
            eval_every: args.eval_every,
            eval_sequences: args.eval_sequences,
            log_every: args.log_every,
            peak_flops: args.peak_flops,
        },
        final_checkpoint: !args.no_final_checkpoint,
        stop_after: args.stop_after,
        stop_on_hangup: args.stop_on_hangup,
    };
    if let Some(dir) = &args.resume {
        run::resume(&options(dir.clone()))?;
        return Ok(());
    }
    let cfg = args.resolve()?;
    if args.print_config {
        print!("{}", toml::to_string(&cfg)?);
        return Ok(());
    }
    let dir = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "{}-d{}l{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S"),
            cfg.model.d_model,
            cfg.model.n_layers
        ))
    });
    run::start(cfg, &options(dir))?;
    Ok(())
}

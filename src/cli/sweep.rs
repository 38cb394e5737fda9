//! `isoflop sweep`: plan, run, watch, export and scale out grids of training runs.

use anyhow::Context;
use isoflop::device::DeviceChoice;
use isoflop::sweep::estimate::Throughput;
use isoflop::sweep::runner::{self, RunnerOptions};
use isoflop::sweep::slurm::{self, SlurmOptions};
use isoflop::sweep::{self as sw, RunState, SweepDir};
use isoflop::train::progress::fmt_duration;
use std::path::{Path, PathBuf};

/// Arguments of `isoflop sweep`.
#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    #[command(subcommand)]
    command: SweepCommand,
}

#[derive(clap::Subcommand, Debug)]
enum SweepCommand {
    /// Print the table of runs a spec plans, with FLOPs and estimated wall time.
    Plan(PlanArgs),
    /// Run a sweep (resumable: finished runs are skipped, unfinished ones resumed).
    Run(RunArgs),
    /// Show the state and progress of every run of a sweep directory.
    Status(StatusArgs),
    /// Write DIR/runs.csv and DIR/steps.csv (the input of `isoflop fit`).
    Export(ExportArgs),
    /// Write a Slurm array job script (one task per run) to DIR/sweep.sbatch.
    Slurm(SlurmArgs),
}

#[derive(clap::Args, Debug)]
struct PlanArgs {
    /// Sweep spec (TOML).
    spec: PathBuf,
    /// Throughput of the smallest model in tokens/s (instead of timing the CPU backend).
    #[arg(long, conflicts_with = "flops_per_s")]
    tokens_per_s: Option<f64>,
    /// Throughput in FLOP/s, exact convention (e.g. a GPU's sustained rate).
    #[arg(long)]
    flops_per_s: Option<f64>,
    /// No wall-time estimate (skips the CPU timing).
    #[arg(long, conflicts_with_all = ["tokens_per_s", "flops_per_s"])]
    no_timing: bool,
    /// Print the resolved plan as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Sweep spec (TOML).
    spec: PathBuf,
    /// Sweep directory (runs go to DIR/runs/<name>).
    #[arg(long)]
    out: PathBuf,
    /// Device of every run: auto, cpu or cuda:N (one run at a time).
    #[arg(long, default_value = "auto", conflicts_with = "devices")]
    device: DeviceChoice,
    /// Run one run per device at once: GPU numbers (0,1,2,3) or device names (cpu, cuda:N).
    #[arg(long, value_name = "LIST")]
    devices: Option<String>,
    /// Run only this run (repeatable); used by the Slurm array tasks.
    #[arg(long, value_name = "RUN")]
    only: Vec<String>,
    /// Checkpoint every N steps of each run.
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// Run failed runs again (resumed after a crash, from scratch after a training error).
    #[arg(long)]
    retry_failed: bool,
}

#[derive(clap::Args, Debug)]
struct StatusArgs {
    /// Sweep directory.
    dir: PathBuf,
}

#[derive(clap::Args, Debug)]
struct ExportArgs {
    /// Sweep directory.
    dir: PathBuf,
}

#[derive(clap::Args, Debug)]
struct SlurmArgs {
    /// Sweep spec (TOML).
    spec: PathBuf,
    /// Sweep directory on a filesystem every node sees.
    #[arg(long)]
    out: PathBuf,
    /// Wall-time limit per task (Slurm syntax); default from --flops-per-s (×1.5 + 10 min), else 12:00:00.
    #[arg(long)]
    time: Option<String>,
    /// Throughput per GPU in FLOP/s (exact convention), to size --time.
    #[arg(long)]
    flops_per_s: Option<f64>,
    /// GPUs per task (0 = CPU-only tasks).
    #[arg(long, default_value_t = 1)]
    gpus: u32,
    /// CPUs per task.
    #[arg(long)]
    cpus_per_task: Option<u32>,
    /// Memory per task (Slurm syntax, e.g. 64G).
    #[arg(long)]
    mem: Option<String>,
    /// Slurm partition.
    #[arg(long)]
    partition: Option<String>,
    /// Slurm account.
    #[arg(long)]
    account: Option<String>,
    /// At most this many tasks at once.
    #[arg(long)]
    max_parallel: Option<usize>,
    /// --device of each task (auto = the GPU Slurm assigned, else the CPU).
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Checkpoint every N steps of each run.
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// The isoflop binary the tasks run (default: this one).
    #[arg(long)]
    bin: Option<PathBuf>,
}

/// Run `isoflop sweep`.
pub fn run(args: SweepArgs) -> anyhow::Result<()> {
    match args.command {
        SweepCommand::Plan(a) => plan(a),
        SweepCommand::Run(a) => run_sweep(a),
        SweepCommand::Status(a) => status(a),
        SweepCommand::Export(a) => export(a),
        SweepCommand::Slurm(a) => slurm(a),
    }
}

fn positive(flag: &str, x: Option<f64>) -> anyhow::Result<()> {
    match x {
        Some(v) if !(v.is_finite() && v > 0.0) => anyhow::bail!("{flag} must be positive, got {v}"),
        _ => Ok(()),
    }
}

fn plan(a: PlanArgs) -> anyhow::Result<()> {
    let (_, _, plan) = sw::load(&a.spec)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    positive("--tokens-per-s", a.tokens_per_s)?;
    positive("--flops-per-s", a.flops_per_s)?;
    let throughput = if a.no_timing {
        None
    } else if let Some(t) = a.tokens_per_s {
        Throughput::from_tokens_per_s(&plan, t)
    } else if let Some(f) = a.flops_per_s {
        Some(Throughput::from_flops_per_s(f))
    } else {
        eprintln!("timing the CPU backend on the smallest model (use --tokens-per-s or --flops-per-s to skip)…");
        Some(Throughput::measure_cpu(&plan, 2)?)
    };
    print!("{}", sw::table::plan_table(&plan, throughput.as_ref()));
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn run_sweep(a: RunArgs) -> anyhow::Result<()> {
    let (_, text, plan) = sw::load(&a.spec)?;
    let devices = match &a.devices {
        Some(list) => runner::parse_devices(list).map_err(anyhow::Error::msg)?,
        None => vec![a.device],
    };
    runner::check_devices(&devices)?;
    runner::check_only(&plan, &a.only)?;
    let sd = SweepDir::prepare(&a.out, &text, &plan)?;
    let bin = std::env::current_exe().context("locating the isoflop binary")?;
    let opts = RunnerOptions {
        bin,
        devices,
        only: a.only.clone(),
        checkpoint_every: a.checkpoint_every,
        retry_failed: a.retry_failed,
    };
    let n = if a.only.is_empty() {
        plan.runs.len()
    } else {
        a.only.len()
    };
    eprintln!(
        "sweep {:?}: {n} of {} runs → {}",
        plan.name,
        plan.runs.len(),
        a.out.display()
    );
    let o = runner::run_sweep(&sd, &opts)?;
    eprintln!(
        "sweep {:?}: {} finished now, {} already finished, {} failed, {} unfinished",
        plan.name,
        o.finished.len(),
        o.skipped.len(),
        o.failed.len(),
        o.unfinished.len()
    );
    if !o.failed.is_empty() || !o.unfinished.is_empty() {
        let mut msg = Vec::new();
        for (n, r) in &o.failed {
            msg.push(format!("{n} failed: {r}"));
        }
        if !o.unfinished.is_empty() {
            msg.push(format!(
                "unfinished: {} (run the same command again to continue)",
                o.unfinished.join(", ")
            ));
        }
        anyhow::bail!("{}", msg.join("\n"));
    }
    Ok(())
}

fn status(a: StatusArgs) -> anyhow::Result<()> {
    let sd = SweepDir::open(&a.dir)?;
    // For a directory given to Slurm, the scheduler's state of each run's array task (task i = run i).
    let slurm_tasks = slurm::query(&sd.dir).filter(|t| !t.is_empty());
    let latest = slurm_tasks
        .as_deref()
        .map(slurm::latest_per_task)
        .unwrap_or_default();
    let mut rows = vec![vec![
        "name".to_string(),
        "state".into(),
        "steps".into(),
        "progress".into(),
        "loss".into(),
        "eval_loss".into(),
        "note".into(),
    ]];
    if slurm_tasks.is_some() {
        rows[0].insert(6, "slurm".into());
    }
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (i, r) in sd.plan.runs.iter().enumerate() {
        let state = sd.state(&r.name);
        *counts.entry(state.label()).or_default() += 1;
        let done = match state {
            RunState::Finished => r.config.steps,
            _ => sd.steps_done(&r.name),
        };
        let m = isoflop::train::manifest::Manifest::load(&sd.run_dir(&r.name)).ok();
        let fmt = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.4}"));
        let (loss, eval) = match (&state, &m) {
            (RunState::Finished, Some(m)) => (
                fmt(m.final_figures.train_loss),
                fmt(m.final_figures.eval_loss),
            ),
            _ => ("-".into(), "-".into()),
        };
        let note = match &state {
            RunState::Failed { reason } => reason.clone(),
            RunState::Running { pid } => format!("pid {pid}"),
            RunState::Finished => m
                .and_then(|m| {
                    let s = m.config.steps;
                    let t =
                        std::fs::read_to_string(sd.run_dir(&r.name).join("metrics.jsonl")).ok()?;
                    let last = t.lines().rev().find(|l| l.contains("\"train\""))?;
                    let v: serde_json::Value = serde_json::from_str(last).ok()?;
                    let e = v.get("elapsed_s")?.as_f64()?;
                    Some(format!("{s} steps in {}", fmt_duration(e)))
                })
                .unwrap_or_default(),
            _ => String::new(),
        };
        let mut row = vec![
            r.name.clone(),
            state.label().into(),
            format!("{done}/{}", r.config.steps),
            format!("{:.0}%", 100.0 * done as f64 / r.config.steps.max(1) as f64),
            loss,
            eval,
            note,
        ];
        if slurm_tasks.is_some() {
            row.insert(6, latest.get(&i).map_or("-".into(), |t| t.label()));
        }
        rows.push(row);
    }
    let ncols = rows[0].len();
    let widths: Vec<usize> = (0..ncols)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (s, w))| match i {
                0 | 1 | 6 | 7 => format!("{s:<w$}"),
                _ => format!("{s:>w$}"),
            })
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "sweep {:?}: {} runs: {}",
        sd.plan.name,
        sd.plan.runs.len(),
        summary.join(", ")
    );
    if slurm_tasks.is_some() {
        let mut jobs: std::collections::BTreeMap<u64, std::collections::BTreeMap<&str, usize>> =
            Default::default();
        for t in latest.values() {
            *jobs.entry(t.job).or_default().entry(&t.state).or_default() += 1;
        }
        let parts: Vec<String> = jobs
            .iter()
            .map(|(job, states)| {
                let s: Vec<String> = states
                    .iter()
                    .map(|(k, v)| format!("{v} {}", k.to_lowercase()))
                    .collect();
                format!("job {job}: {}", s.join(", "))
            })
            .collect();
        println!("slurm: {}", parts.join("; "));
    }
    Ok(())
}

fn export(a: ExportArgs) -> anyhow::Result<()> {
    let sd = SweepDir::open(&a.dir)?;
    let s = sw::export::export(&sd)?;
    eprintln!(
        "wrote {} ({} runs) and {} ({} steps)",
        s.runs_csv.display(),
        s.runs,
        s.steps_csv.display(),
        s.steps
    );
    Ok(())
}

fn slurm(a: SlurmArgs) -> anyhow::Result<()> {
    positive("--flops-per-s", a.flops_per_s)?;
    let (_, text, plan) = sw::load(&a.spec)?;
    let out = absolute(&a.out);
    let time = match (&a.time, a.flops_per_s) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            let t = Throughput::from_flops_per_s(f);
            let worst = plan.runs.iter().map(|r| t.seconds(r)).fold(0.0, f64::max);
            let mins = ((worst * 1.5) / 60.0).ceil() as u64 + 10;
            format!("{:02}:{:02}:00", mins / 60, mins % 60)
        }
        (None, None) => "12:00:00".into(),
    };
    let bin = match &a.bin {
        Some(b) => absolute(b),
        None => std::env::current_exe().context("locating the isoflop binary")?,
    };
    let opts = SlurmOptions {
        bin,
        spec: out.join(sw::dir::SPEC_FILE),
        out: out.clone(),
        time,
        gpus: a.gpus,
        cpus_per_task: a.cpus_per_task,
        mem: a.mem,
        partition: a.partition,
        account: a.account,
        max_parallel: a.max_parallel,
        device: runner::device_arg(a.device),
        checkpoint_every: a.checkpoint_every,
    };
    let script = slurm::script(&plan, &opts).map_err(anyhow::Error::msg)?;
    SweepDir::prepare(&out, &text, &plan)?;
    std::fs::create_dir_all(out.join("slurm"))
        .with_context(|| format!("creating {}", out.join("slurm").display()))?;
    let path = out.join("sweep.sbatch");
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "wrote {} ({} array tasks); submit with: sbatch {}",
        path.display(),
        plan.runs.len(),
        path.display()
    );
    println!("{}", path.display());
    Ok(())
}

//! Running a sweep: each run in a child `isoflop train` process (so a crash of one run cannot take the sweep
//! down), finished runs skipped, unfinished ones resumed, failures recorded, one worker per device.

use super::dir::{self, RunState, SweepDir};
use super::plan::PlannedRun;
use super::SweepError;
use crate::device::{probe_gpus, DeviceChoice};
use crate::train::manifest::{Manifest, RunStatus};
use crate::train::progress::fmt_duration;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How to run a sweep.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// The `isoflop` binary that trains each run (normally `std::env::current_exe()`).
    pub bin: PathBuf,
    /// One worker per entry, each passing its device to its runs' `--device`.
    pub devices: Vec<DeviceChoice>,
    /// Run only these runs (by name); empty = all.
    pub only: Vec<String>,
    /// `--checkpoint-every` of each run.
    pub checkpoint_every: u64,
    /// Run failed runs again (from their last checkpoint after a crash, from scratch after a training error).
    pub retry_failed: bool,
}

/// What happened to the selected runs.
#[derive(Clone, Debug, Default)]
pub struct SweepOutcome {
    /// Trained to the end in this invocation.
    pub finished: Vec<String>,
    /// Already finished before.
    pub skipped: Vec<String>,
    /// Failed (now or before), with reasons.
    pub failed: Vec<(String, String)>,
    /// Stopped part-way or never started (the sweep was interrupted).
    pub unfinished: Vec<String>,
}

/// `--device` text of a choice.
pub fn device_arg(d: DeviceChoice) -> String {
    match d {
        DeviceChoice::Auto => "auto".into(),
        DeviceChoice::Cpu => "cpu".into(),
        DeviceChoice::Cuda(n) => format!("cuda:{n}"),
    }
}

/// Parse `--devices`: comma-separated GPU ordinals (`0,1,3`) or device names (`cpu`, `cuda:2`).
pub fn parse_devices(s: &str) -> Result<Vec<DeviceChoice>, String> {
    let v: Result<Vec<DeviceChoice>, String> = s
        .split(',')
        .map(|p| {
            let p = p.trim();
            match p.parse::<usize>() {
                Ok(n) => Ok(DeviceChoice::Cuda(n)),
                Err(_) => p
                    .parse::<DeviceChoice>()
                    .map_err(|_| format!("--devices: {p:?} is not a GPU number, cpu or cuda:N")),
            }
        })
        .collect();
    let v = v?;
    if v.is_empty() {
        return Err("--devices is empty".into());
    }
    Ok(v)
}

/// Check that every `--only` name is a run of the plan.
pub fn check_only(plan: &super::Plan, only: &[String]) -> Result<(), SweepError> {
    for name in only {
        if plan.get(name).is_none() {
            let names: Vec<&str> = plan.runs.iter().map(|r| r.name.as_str()).collect();
            return Err(SweepError::Usage(format!(
                "--only {name:?}: no such run in the plan; runs: {}",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// Check that every `cuda:N` asked for exists; a clear error otherwise.
pub fn check_devices(devices: &[DeviceChoice]) -> Result<(), SweepError> {
    let wanted: Vec<usize> = devices
        .iter()
        .filter_map(|d| match d {
            DeviceChoice::Cuda(n) => Some(*n),
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let gpus = probe_gpus().map_err(|why| {
        SweepError::Device(format!(
            "--devices asks for GPU(s) {wanted:?}, but {why}; use --device cpu to run on the CPU"
        ))
    })?;
    if let Some(n) = wanted.iter().find(|&&n| n >= gpus.len()) {
        return Err(SweepError::Device(format!(
            "--devices asks for cuda:{n}, but only {} GPU(s) are present",
            gpus.len()
        )));
    }
    Ok(())
}

enum Event {
    Started {
        name: String,
        device: DeviceChoice,
        resume: bool,
    },
    Waiting {
        name: String,
        pid: u32,
    },
    Done {
        name: String,
        state: RunState,
        secs: f64,
        fresh: bool,
    },
}

/// Run the selected runs of the sweep in `sd`. Returns what happened; errors only for problems of the sweep
/// itself (bad `--only`, missing devices, unwritable directory).
pub fn run_sweep(sd: &SweepDir, opts: &RunnerOptions) -> Result<SweepOutcome, SweepError> {
    check_only(&sd.plan, &opts.only)?;
    if opts.devices.is_empty() {
        return Err(SweepError::Usage("no device to run on".into()));
    }
    check_devices(&opts.devices)?;
    let selected: Vec<&PlannedRun> = sd
        .plan
        .runs
        .iter()
        .filter(|r| opts.only.is_empty() || opts.only.contains(&r.name))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| SweepError::Usage(format!("cannot install signal handlers: {e}")))?;
    }
    let queue = Mutex::new(selected.iter().copied().collect::<VecDeque<_>>());
    let active: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    let out = Output::new(selected.len() as u64);
    let mut outcome = SweepOutcome::default();
    let mut done_names = Vec::new();
    let (tx, rx) = mpsc::channel::<Event>();
    std::thread::scope(|s| {
        for &device in &opts.devices {
            let tx = tx.clone();
            let (queue, active, stop) = (&queue, &active, &stop);
            s.spawn(move || worker(sd, opts, device, queue, active, stop, tx));
        }
        drop(tx);
        let mut forwarded = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Started {
                    name,
                    device,
                    resume,
                }) => {
                    let what = if resume { "resuming" } else { "starting" };
                    out.set_message(&format!("{what} {name} on {}", device_arg(device)));
                    if !out.is_bar() {
                        out.line(&format!("{what} {name} on {}", device_arg(device)));
                    }
                }
                Ok(Event::Waiting { name, pid }) => out.line(&format!(
                    "{name}: waiting for process {pid}, which is still training it"
                )),
                Ok(Event::Done {
                    name,
                    state,
                    secs,
                    fresh,
                }) => {
                    out.inc();
                    let run_dir = sd.run_dir(&name);
                    let line = match &state {
                        RunState::Finished if fresh => {
                            outcome.finished.push(name.clone());
                            let f = Manifest::load(&run_dir).map(|m| m.final_figures).ok();
                            let fmt = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.4}"));
                            format!(
                                "finished {name} in {}: train loss {}, eval loss {}",
                                fmt_duration(secs),
                                fmt(f.as_ref().and_then(|f| f.train_loss)),
                                fmt(f.as_ref().and_then(|f| f.eval_loss)),
                            )
                        }
                        RunState::Finished => {
                            outcome.skipped.push(name.clone());
                            format!("skipped {name}: already finished")
                        }
                        RunState::Failed { reason } => {
                            outcome.failed.push((name.clone(), reason.clone()));
                            format!(
                                "FAILED {name}: {reason} (log: {})",
                                run_dir.join("train.log").display()
                            )
                        }
                        other => {
                            outcome.unfinished.push(name.clone());
                            format!("{} {name}", other.label())
                        }
                    };
                    out.line(&line);
                    done_names.push(name);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if stop.load(Ordering::SeqCst) && !forwarded {
                        forwarded = true;
                        out.line("stopping: asking running trainers to checkpoint and exit");
                        for &pid in active.lock().map(|a| a.clone()).unwrap_or_default().iter() {
                            // SAFETY: sending a signal to a child we spawned.
                            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    out.finish();
    for r in &selected {
        if !done_names.contains(&r.name) {
            outcome.unfinished.push(r.name.clone());
        }
    }
    Ok(outcome)
}

fn worker(
    sd: &SweepDir,
    opts: &RunnerOptions,
    device: DeviceChoice,
    queue: &Mutex<VecDeque<&PlannedRun>>,
    active: &Mutex<Vec<u32>>,
    stop: &AtomicBool,
    tx: mpsc::Sender<Event>,
) {
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(run) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
            return;
        };
        let t0 = Instant::now();
        let (mut state, fresh) = match run_one(sd, opts, device, run, active, stop, &tx) {
            Ok(x) => x,
            Err(e) => (
                RunState::Failed {
                    // The whole cause chain: failure.json is all a later reader has.
                    reason: format!("{:#}", anyhow::Error::new(e)),
                },
                true,
            ),
        };
        if state == RunState::Finished && !stop.load(Ordering::SeqCst) {
            if let Err(reason) = evaluate_tasks(sd, opts, device, run) {
                state = RunState::Failed { reason };
            }
        }
        let _ = tx.send(Event::Done {
            name: run.name.clone(),
            state,
            secs: t0.elapsed().as_secs_f64(),
            fresh,
        });
    }
}

/// Bring one run to an end state. Returns the state and whether a trainer ran in this call.
fn run_one(
    sd: &SweepDir,
    opts: &RunnerOptions,
    device: DeviceChoice,
    run: &PlannedRun,
    active: &Mutex<Vec<u32>>,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Event>,
) -> Result<(RunState, bool), SweepError> {
    let dir = sd.run_dir(&run.name);
    let mut state = sd.state(&run.name);
    // Another process (e.g. the trainer of a sweep that was just killed, finishing its checkpoint) still
    // trains this run: wait for it, then look again.
    if let RunState::Running { pid } = state {
        let _ = tx.send(Event::Waiting {
            name: run.name.clone(),
            pid,
        });
        while dir::live_trainer(&dir).is_some() {
            if stop.load(Ordering::SeqCst) {
                return Ok((RunState::Running { pid }, false));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        state = sd.state(&run.name);
    }
    let resume = match &state {
        RunState::Finished => return Ok((state, false)),
        RunState::Failed { .. } if !opts.retry_failed => return Ok((state, false)),
        RunState::Failed { .. } => {
            let _ = std::fs::remove_file(dir.join("failure.json"));
            match Manifest::load(&dir) {
                // A training error (e.g. NaN) would recur from the checkpoint: start over.
                Ok(m) if m.status == RunStatus::Failed => {
                    std::fs::remove_dir_all(&dir).map_err(|source| SweepError::File {
                        path: dir.clone(),
                        source,
                    })?;
                    false
                }
                Ok(_) => true,
                Err(_) => false,
            }
        }
        RunState::Interrupted => dir.join("run.json").exists(),
        RunState::Pending | RunState::Running { .. } => false,
    };
    std::fs::create_dir_all(&dir).map_err(|source| SweepError::File {
        path: dir.clone(),
        source,
    })?;
    let mut cmd = Command::new(&opts.bin);
    cmd.arg("train");
    if resume {
        cmd.arg("--resume").arg(&dir);
    } else {
        let cfg_path = dir.join("config.json");
        let json = serde_json::to_vec_pretty(&run.config).map_err(|source| SweepError::Json {
            path: cfg_path.clone(),
            source,
        })?;
        dir::write_atomic(&cfg_path, &json)?;
        cmd.arg("--config").arg(&cfg_path).arg("--out").arg(&dir);
    }
    cmd.args([
        "--device",
        &device_arg(device),
        "--checkpoint-every",
        &opts.checkpoint_every.to_string(),
    ]);
    let log_path = dir.join("train.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| SweepError::File {
            path: log_path.clone(),
            source,
        })?;
    let log2 = log.try_clone().map_err(|source| SweepError::File {
        path: log_path.clone(),
        source,
    })?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    // If the sweep dies (even by SIGKILL), its trainers get SIGTERM: they checkpoint and stop.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the sweep exited"));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| SweepError::Trainer {
        bin: opts.bin.clone(),
        what: "cannot start",
        source,
    })?;
    let pid = child.id();
    if let Ok(mut a) = active.lock() {
        a.push(pid);
    }
    dir::write_trainer(&dir, pid)?;
    let _ = tx.send(Event::Started {
        name: run.name.clone(),
        device,
        resume,
    });
    let status = child.wait();
    if let Ok(mut a) = active.lock() {
        a.retain(|&p| p != pid);
    }
    let status = status.map_err(|source| SweepError::Trainer {
        bin: opts.bin.clone(),
        what: "waiting for",
        source,
    })?;
    let manifest = Manifest::load(&dir).ok();
    let recorded = manifest.as_ref().map(|m| m.status);
    let state = match recorded {
        Some(RunStatus::Finished) => RunState::Finished,
        Some(RunStatus::Failed) => RunState::Failed {
            reason: manifest
                .and_then(|m| m.reason)
                .unwrap_or_else(|| "no reason recorded".into()),
        },
        Some(RunStatus::Interrupted) => RunState::Interrupted,
        _ if stop.load(Ordering::SeqCst) => RunState::Interrupted,
        _ => {
            let reason = format!(
                "trainer {} {}{}",
                pid,
                describe_exit(&status),
                last_error_line(&log_path)
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            );
            dir::write_failure(&dir, &reason)?;
            RunState::Failed { reason }
        }
    };
    Ok((state, true))
}

/// The file a finished run's task scores go to (the JSON of `isoflop eval --task`).
pub const TASKS_FILE: &str = "tasks.json";

/// Score a finished run's last checkpoint on the plan's `[eval]` tasks with `isoflop eval --task` (a child
/// process, output in `eval.log`), writing `tasks.json` atomically; nothing to do without tasks or when
/// `tasks.json` exists. The error says why and where the log is (training itself stays finished, and the
/// next `sweep run` tries again).
fn evaluate_tasks(
    sd: &SweepDir,
    opts: &RunnerOptions,
    device: DeviceChoice,
    run: &PlannedRun,
) -> Result<(), String> {
    let ev = &sd.plan.eval;
    let dir = sd.run_dir(&run.name);
    let out = dir.join(TASKS_FILE);
    if ev.is_empty() || out.exists() {
        return Ok(());
    }
    let (_, ck) = crate::train::checkpoint::list(&dir.join("checkpoints"))
        .pop()
        .ok_or_else(|| {
            format!(
                "task evaluation: no checkpoint under {} to score",
                dir.display()
            )
        })?;
    let log_path = dir.join("eval.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("task evaluation: {}: {e}", log_path.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("task evaluation: {}: {e}", log_path.display()))?;
    let tmp = dir.join(format!("{TASKS_FILE}.tmp"));
    let mut cmd = Command::new(&opts.bin);
    cmd.arg("eval").arg("--checkpoint").arg(&ck);
    for t in &ev.tasks {
        cmd.arg("--task").arg(t);
    }
    if let Some(n) = ev.limit {
        cmd.args(["--limit", &n.to_string()]);
    }
    cmd.args([
        "--micro-batch",
        &ev.micro_batch.unwrap_or(16).to_string(),
        "--device",
        &device_arg(device),
        "--json",
    ])
    .arg("--out")
    .arg(&tmp);
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    let status = cmd
        .status()
        .map_err(|e| format!("task evaluation: cannot start {}: {e}", opts.bin.display()))?;
    if !status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "task evaluation {}{} (log: {})",
            describe_exit(&status),
            last_error_line(&log_path)
                .map(|l| format!(": {l}"))
                .unwrap_or_default(),
            log_path.display()
        ));
    }
    std::fs::rename(&tmp, &out).map_err(|e| format!("task evaluation: {}: {e}", out.display()))
}

fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// The last `error:` line of a trainer log, else its last non-empty line.
fn last_error_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("error:") || l.contains("panicked"))
        .or(lines.last())
        .map(|l| l.trim_start_matches("error: ").to_string())
}

/// A progress bar over runs on a terminal; plain lines otherwise.
struct Output {
    bar: Option<ProgressBar>,
}

impl Output {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:30.green/blue} {pos}/{len} runs  {msg}  [{elapsed_precise}]",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.enable_steady_tick(Duration::from_millis(500));
            b
        });
        Output { bar }
    }
    fn is_bar(&self) -> bool {
        self.bar.is_some()
    }
    fn line(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }
    fn set_message(&self, s: &str) {
        if let Some(b) = &self.bar {
            b.set_message(s.to_string());
        }
    }
    fn inc(&self) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

//! The sweep directory: `spec.toml` and `plan.json`, one run directory per run under `runs/`, and the
//! state of each run as read from its files.
//!
//! Per run, besides what `isoflop train` writes (`run.json`, `metrics.jsonl`, `checkpoints/`):
//! `config.json` (the run's config), `train.log` (the trainer's output), `trainer.json` (pid and host of
//! the process training it) and `failure.json` (why it failed, when the trainer died without saying).

use super::plan::Plan;
use super::SweepError;
use crate::train::manifest::{Manifest, RunStatus};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File names inside the sweep directory.
pub const SPEC_FILE: &str = "spec.toml";
/// The resolved plan.
pub const PLAN_FILE: &str = "plan.json";

/// A sweep directory with its plan.
#[derive(Clone, Debug)]
pub struct SweepDir {
    /// The directory.
    pub dir: PathBuf,
    /// Its plan.
    pub plan: Plan,
}

/// Who trains a run right now (or trained it last).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainerRef {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
}

/// Why a run failed when its trainer could not record it (crash, abort, bad setup).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Why the run failed, with its cause chain.
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

/// State of one run of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    /// Not started.
    Pending,
    /// A live process is training it.
    Running {
        /// Process id of the trainer.
        pid: u32,
    },
    /// Every step done.
    Finished,
    /// Stopped by an error; not retried unless asked (`--retry-failed`).
    Failed {
        /// Why.
        reason: String,
    },
    /// Stopped part-way (signal, or its process died); resumable from its last checkpoint.
    Interrupted,
}

impl RunState {
    /// `pending`, `running`, `finished`, `failed`, `interrupted`.
    pub fn label(&self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running { .. } => "running",
            RunState::Finished => "finished",
            RunState::Failed { .. } => "failed",
            RunState::Interrupted => "interrupted",
        }
    }
}

/// Write the spec's text and the plan (`plan.json`) into the sweep directory `dir`.
fn write_spec_and_plan(dir: &Path, spec_text: &str, plan: &Plan) -> Result<(), SweepError> {
    write_atomic(&dir.join(SPEC_FILE), spec_text.as_bytes())?;
    let plan_path = dir.join(PLAN_FILE);
    let json = serde_json::to_vec_pretty(plan).map_err(|source| SweepError::Json {
        path: plan_path.clone(),
        source,
    })?;
    write_atomic(&plan_path, &json)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SweepError + '_ {
    move |source| SweepError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// Write a file atomically (temporary file with a unique name, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SweepError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

#[derive(Deserialize)]
struct PlanHead {
    fingerprint: String,
    #[serde(default)]
    eval: super::spec::EvalSpec,
    name: String,
    runs: Vec<serde_json::Value>,
}

impl SweepDir {
    /// Create (or re-open) the sweep directory `dir` for `plan`, saving the spec text and the plan. Refuses
    /// a directory that holds another spec's plan.
    pub fn prepare(dir: &Path, spec_text: &str, plan: &Plan) -> Result<Self, SweepError> {
        std::fs::create_dir_all(dir.join("runs")).map_err(io_err(dir))?;
        let plan_path = dir.join(PLAN_FILE);
        if plan_path.exists() {
            let text = std::fs::read_to_string(&plan_path).map_err(io_err(&plan_path))?;
            let head: PlanHead =
                serde_json::from_str(&text).map_err(|source| SweepError::Json {
                    path: plan_path.clone(),
                    source,
                })?;
            if head.fingerprint != plan.fingerprint {
                let old: Vec<String> = head
                    .runs
                    .iter()
                    .filter_map(|r| r.get("name").and_then(|n| n.as_str()).map(String::from))
                    .collect();
                let differ: Vec<&str> = plan
                    .runs
                    .iter()
                    .filter(|r| {
                        let new = serde_json::to_value(r).unwrap_or_default();
                        !head.runs.contains(&new)
                    })
                    .map(|r| r.name.as_str())
                    .take(5)
                    .collect();
                return Err(SweepError::OtherSpec(format!(
                    "{} holds the plan of a different spec (sweep {:?}, {} runs, saved in {}); this spec \
                     plans {} runs{}. Use another --out, or delete that directory to start over",
                    dir.display(),
                    head.name,
                    old.len(),
                    dir.join(SPEC_FILE).display(),
                    plan.runs.len(),
                    if differ.is_empty() {
                        String::new()
                    } else {
                        format!(", these new or changed: {}", differ.join(", "))
                    }
                )));
            }
            if head.eval != plan.eval {
                // Same runs, other `[eval]` tasks: keep the runs, record the new tasks.
                write_spec_and_plan(dir, spec_text, plan)?;
            }
        } else {
            write_spec_and_plan(dir, spec_text, plan)?;
        }
        Ok(SweepDir {
            dir: dir.to_path_buf(),
            plan: plan.clone(),
        })
    }

    /// Open an existing sweep directory (for `status` and `export`).
    pub fn open(dir: &Path) -> Result<Self, SweepError> {
        let p = dir.join(PLAN_FILE);
        let text = std::fs::read_to_string(&p).map_err(|source| SweepError::NotASweep {
            path: p.clone(),
            dir: dir.to_path_buf(),
            source,
        })?;
        let plan: Plan = serde_json::from_str(&text).map_err(|source| SweepError::Json {
            path: p.clone(),
            source,
        })?;
        Ok(SweepDir {
            dir: dir.to_path_buf(),
            plan,
        })
    }

    /// The directory of run `name`.
    pub fn run_dir(&self, name: &str) -> PathBuf {
        self.dir.join("runs").join(name)
    }

    /// The state of run `name`, read from its files.
    pub fn state(&self, name: &str) -> RunState {
        let dir = self.run_dir(name);
        let live = live_trainer(&dir);
        let manifest = Manifest::load(&dir).ok();
        if manifest.as_ref().map(|m| m.status) == Some(RunStatus::Finished) {
            return RunState::Finished;
        }
        if let Some(pid) = live {
            return RunState::Running { pid };
        }
        if let Some(f) = read_failure(&dir) {
            return RunState::Failed { reason: f.reason };
        }
        match manifest {
            None if dir.join("metrics.jsonl").exists() => RunState::Interrupted,
            None => RunState::Pending,
            Some(m) => match m.status {
                RunStatus::Failed => RunState::Failed {
                    reason: m.reason.unwrap_or_else(|| "no reason recorded".into()),
                },
                _ => RunState::Interrupted,
            },
        }
    }

    /// Last step recorded in the run's metrics (0 when none).
    pub fn steps_done(&self, name: &str) -> u64 {
        let p = self.run_dir(name).join("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(p) else {
            return 0;
        };
        text.lines()
            .rev()
            .filter(|l| l.contains("\"train\""))
            .find_map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()?
                    .get("step")?
                    .as_u64()
            })
            .unwrap_or(0)
    }
}

/// `failure.json` of a run directory.
pub fn read_failure(dir: &Path) -> Option<Failure> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("failure.json")).ok()?).ok()
}

/// Record why a run failed.
pub fn write_failure(dir: &Path, reason: &str) -> Result<(), SweepError> {
    let f = Failure {
        reason: reason.to_string(),
        at: crate::train::manifest::now(),
    };
    let json = serde_json::to_vec_pretty(&f).unwrap_or_default();
    write_atomic(&dir.join("failure.json"), &json)
}

/// Record the process now training the run in `dir`.
pub fn write_trainer(dir: &Path, pid: u32) -> Result<(), SweepError> {
    let t = TrainerRef {
        pid,
        host: crate::train::manifest::hostname(),
    };
    write_atomic(
        &dir.join("trainer.json"),
        &serde_json::to_vec(&t).unwrap_or_default(),
    )
}

/// The pid of a live process training the run in `dir` on this host, if any. A process counts only if its
/// command line names the run directory (so a recycled pid is not mistaken for the trainer). A trainer
/// recorded on another host is taken as gone (a scheduler gives each run to one task at a time).
pub fn live_trainer(dir: &Path) -> Option<u32> {
    let t: TrainerRef =
        serde_json::from_str(&std::fs::read_to_string(dir.join("trainer.json")).ok()?).ok()?;
    if t.host != crate::train::manifest::hostname() {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", t.pid)).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", t.pid)).ok()?;
    // Zombies (state Z) are dead.
    let state = stat.rsplit(')').next()?.split_whitespace().next()?;
    if state == "Z" {
        return None;
    }
    let name = dir.file_name()?.as_encoded_bytes();
    let names_dir = cmdline
        .split(|&b| b == 0)
        .any(|arg| arg.ends_with(name) && arg.len() >= name.len());
    names_dir.then_some(t.pid)
}

//! `run.json`: the self-describing manifest of a run directory.

use super::config::TrainConfig;
use crate::model::{FlopsPerToken, ParamCounts};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// State of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Training (or killed without a chance to say so).
    Running,
    /// Every step done.
    Finished,
    /// Stopped by an error; see `reason`.
    Failed,
    /// Stopped by SIGINT/SIGTERM after writing a checkpoint; resumable.
    Interrupted,
}

/// Versions of the software that produced the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoftwareInfo {
    /// isoflop crate version.
    pub version: String,
    /// Git commit of the isoflop checkout, when known.
    pub git_commit: Option<String>,
    /// sha256 over the CUDA kernel sources compiled into the binary.
    pub kernels_sha256: String,
}

/// The data a run trains and evaluates on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// One line: where the training tokens come from.
    pub train: String,
    /// One line: the held-out set.
    pub eval: String,
    /// Shard files with their payload checksums (empty for synthetic data).
    pub shards: Vec<ShardRef>,
    /// The tokenizer identity of the shards (64 hex digits; none for synthetic data):
    /// `crate::data::tokenizer_for_identity_hex` gives the tokenizer back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_sha256: Option<String>,
}

/// One data shard used by the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardRef {
    /// Path of the shard.
    pub path: String,
    /// Checksum of its payload, as stored in its header.
    pub checksum: String,
}

/// Summary figures at the end of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalFigures {
    /// Loss of the last training step.
    pub train_loss: Option<f64>,
    /// Last evaluation loss.
    pub eval_loss: Option<f64>,
    /// Its standard error.
    pub eval_loss_se: Option<f64>,
    /// Training tokens seen.
    pub tokens: u64,
}

/// Checkpoint cadence when `--checkpoint-every` is not given.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 100;
/// Checkpoints kept when `--keep-checkpoints` is not given.
pub const DEFAULT_KEEP_CHECKPOINTS: usize = 2;

/// How the run checkpoints: operational settings outside `config` (which holds the eval and log cadence),
/// restored on resume unless a flag of the resume command overrides them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Operational {
    /// Checkpoint every this many steps (0 = only at the end and on interruption).
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
}

impl Default for Operational {
    fn default() -> Self {
        Operational {
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            keep_checkpoints: DEFAULT_KEEP_CHECKPOINTS,
        }
    }
}

/// An operational setting changed by a flag of a resume command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingOverride {
    /// The step the run resumed at.
    pub step: u64,
    /// The flag, e.g. `--checkpoint-every`.
    pub flag: String,
    /// The run's value before.
    pub from: String,
    /// The value from then on.
    pub to: String,
}

/// `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// Current state.
    pub status: RunStatus,
    /// Why the run failed or stopped.
    pub reason: Option<String>,
    /// The full resolved configuration.
    pub config: TrainConfig,
    /// Exact parameter counts.
    pub params: ParamCounts,
    /// Training FLOPs per token under each convention.
    pub flops_per_token: FlopsPerToken,
    /// Seed (also inside `config`).
    pub seed: u64,
    /// Data used.
    pub data: DataInfo,
    /// Device description, e.g. `cpu (2 threads)`.
    pub device: String,
    /// GPU driver version, when on a GPU.
    pub driver: Option<String>,
    /// Peak FLOP/s used for MFU: `--peak-flops`, else the datasheet dense bf16 peak of a known GPU, else on
    /// the CPU the measured f32 matmul rate of the CPU backend.
    pub peak_flops: Option<f64>,
    /// Software versions.
    pub software: SoftwareInfo,
    /// Host name.
    pub host: String,
    /// RFC 3339 start time of the first session of the run.
    pub started_at: String,
    /// RFC 3339 end time (when finished, failed or interrupted).
    pub ended_at: Option<String>,
    /// Optimizer steps done so far.
    pub steps_done: u64,
    /// Steps at which the run was resumed.
    pub resumed_at: Vec<u64>,
    /// End-of-run figures.
    pub final_figures: FinalFigures,
    /// Non-fatal problems (e.g. a checkpoint that could not be written).
    pub warnings: Vec<String>,
    /// Checkpoint cadence and count (older run.json files without it: the defaults).
    #[serde(default)]
    pub operational: Operational,
    /// Operational settings changed by flags of resume commands, in order.
    #[serde(default)]
    pub overrides: Vec<SettingOverride>,
}

impl Manifest {
    /// The manifest of a run of `config` starting now: running, no steps, default operational
    /// settings, no driver, peak or overrides (the caller sets those it knows).
    pub fn start(
        config: TrainConfig,
        data: DataInfo,
        device: String,
        software: SoftwareInfo,
        host: String,
    ) -> Manifest {
        Manifest {
            format: 1,
            status: RunStatus::Running,
            reason: None,
            params: ParamCounts::of(&config.model),
            flops_per_token: FlopsPerToken::of(&config.model),
            seed: config.seed,
            data,
            device,
            driver: None,
            peak_flops: None,
            software,
            host,
            started_at: now(),
            ended_at: None,
            steps_done: 0,
            resumed_at: vec![],
            final_figures: FinalFigures::default(),
            warnings: vec![],
            operational: Operational::default(),
            overrides: vec![],
            config,
        }
    }
    /// Write `dir/run.json` atomically. On failure (e.g. a full disk) the temporary `run.json.tmp` is
    /// removed and the previous `run.json` is left as it was; the error names the file.
    pub fn save(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = dir.join("run.json");
        let tmp = dir.join("run.json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(|source| ManifestError::Encode {
            path: path.clone(),
            source,
        })?;
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        written.map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            ManifestError::Write { path, source }
        })
    }

    /// Read `dir/run.json`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join("run.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ManifestError::Parse { path, source })
    }
}

/// `run.json` could not be read or written; the message names the file, the source says why.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Reading it failed.
    #[error("{}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not a valid manifest.
    #[error("{}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest could not be encoded.
    #[error("cannot write {}", path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// Writing it (or its temporary) failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Current time, RFC 3339.
pub fn now() -> String {
    chrono::Local::now().to_rfc3339()
}

pub use crate::device::peak::hostname;

/// Git commit of the source checkout this binary was built from, when it is still there.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A manifest of the default configuration, for tests.
    pub(crate) fn manifest() -> Manifest {
        let software = SoftwareInfo {
            version: "0".into(),
            git_commit: None,
            kernels_sha256: String::new(),
        };
        Manifest::start(
            TrainConfig::default(),
            DataInfo::default(),
            "cpu".into(),
            software,
            "h".into(),
        )
    }

    #[test]
    fn a_failed_save_removes_its_temporary_and_names_run_json() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest();
        m.save(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
        assert!(!dir.path().join("run.json.tmp").exists());
        // run.json replaced by a non-empty directory: the temporary is written, the rename fails.
        let rj = dir.path().join("run.json");
        std::fs::remove_file(&rj).unwrap();
        std::fs::create_dir_all(rj.join("x")).unwrap();
        let e = m.save(dir.path()).unwrap_err().to_string();
        assert!(e.contains("cannot write") && e.contains("run.json"), "{e}");
        assert!(!dir.path().join("run.json.tmp").exists());
    }
}

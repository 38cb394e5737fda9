//! Checkpoints: safetensors files with the model contract's names and `[in, out]` layout, readable by
//! PyTorch, JAX or numpy without isoflop, with the optimizer moments and the run's position beside them.
//!
//! A checkpoint is a directory `checkpoints/step-NNNNNNNN/` holding `model.safetensors` (f32 parameters),
//! `optimizer.safetensors` (`m.<name>` and `v.<name>`), `state.json`, `metrics.jsonl` (the run's metrics rows
//! through this step, to repair a damaged history on resume) and `XXH128SUMS` (an XXH3-128 of each other
//! file, in the format `xxhsum -c` checks). It is written under a `.tmp` name, every file fsynced, then renamed: a directory
//! without `.tmp` is always complete. Loading verifies the checksums, that the step and configuration hash in
//! the safetensors metadata agree with `state.json` and the directory name, and that every value is finite.

use super::config::TrainConfig;
use crate::model::{ModelConfig, ParamLayout};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use xxhash_rust::xxh3::{xxh3_128, Xxh3};

/// Version of the checkpoint layout (2: `SHA256SUMS`, `metrics.jsonl`, `isoflop.config_sha256` metadata).
pub const CHECKPOINT_FORMAT: u32 = 2;

/// The checksum file of a checkpoint directory: `HASH  FILE` lines, XXH3-128 (`xxhsum -H2` format). XXH3
/// rather than sha256: at 1.4 GB/s per core (with the CPU's SHA extensions) sha256 cannot keep up with a
/// fast disk writing a 16 GB d2048 checkpoint; XXH3 hashes 7-9 GB/s (README, "Checkpoints, resume and faults").
pub const SUMS_FILE: &str = "XXH128SUMS";
/// The run's metrics rows (train and eval) through the checkpoint's step.
pub const HISTORY_FILE: &str = "metrics.jsonl";
/// Files of a checkpoint directory covered by [`SUMS_FILE`], in the order listed there.
const SUMMED: [&str; 4] = [
    "model.safetensors",
    "optimizer.safetensors",
    "state.json",
    HISTORY_FILE,
];

/// A checkpoint that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File-system failure.
    #[error("{}", path.display())]
    Io {
        /// Path concerned.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file that cannot be encoded or decoded.
    #[error("{}: {what}", path.display())]
    Safetensors {
        /// Path concerned.
        path: PathBuf,
        /// What failed.
        what: &'static str,
        /// Cause.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// JSON content (state.json, the `isoflop.model` metadata) that does not parse.
    #[error("{}: {what}", path.display())]
    Json {
        /// Path concerned.
        path: PathBuf,
        /// What failed.
        what: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A model shape the contract does not allow.
    #[error("{}", path.display())]
    Model {
        /// Path concerned.
        path: PathBuf,
        /// Cause.
        #[source]
        source: crate::model::config::ConfigError,
    },
    /// Unreadable or inconsistent content.
    #[error("{path}: {msg}")]
    Invalid {
        /// Path concerned.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}
fn invalid(path: &Path, msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Where the run stood when the checkpoint was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// [`CHECKPOINT_FORMAT`].
    pub format: u32,
    /// Optimizer steps done.
    pub step: u64,
    /// Wall time of the run so far.
    pub elapsed_s: f64,
    /// Training data position ([`crate::data::TokenSource::state`]).
    pub source: serde_json::Value,
    /// The run's resolved configuration.
    pub config: TrainConfig,
}

/// A loaded checkpoint.
pub struct Checkpoint {
    /// f32 parameters, flat in layout order.
    pub params: Vec<f32>,
    /// AdamW first moments (None for a model-only file).
    pub m: Option<Vec<f32>>,
    /// AdamW second moments.
    pub v: Option<Vec<f32>>,
    /// Position (None for a model-only file).
    pub state: Option<CheckpointState>,
    /// Model shape, from the file's metadata.
    pub model: ModelConfig,
    /// The run's metrics rows through this step ([`HISTORY_FILE`]; None for a model-only file).
    pub history: Option<String>,
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The checksum of a checkpoint file's bytes: XXH3-128, 32 lowercase hex digits.
pub fn file_hash(bytes: &[u8]) -> String {
    format!("{:032x}", xxh3_128(bytes))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// [`file_hash`] of a file that another thread is writing, reading it back as it grows so that hashing overlaps
/// the write (a d2048 checkpoint is ~16 GB); `done` is set by the writer once the file is complete (or
/// failed). Linux never shows a reader bytes past the end the writer has reached.
fn hash_following(path: &Path, done: &AtomicBool) -> Result<String, CheckpointError> {
    let pause = || std::thread::sleep(std::time::Duration::from_millis(1));
    let mut f = loop {
        let finished = done.load(Ordering::Acquire);
        match File::open(path) {
            Ok(f) => break f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !finished => pause(),
            Err(e) => return Err(io(path)(e)),
        }
    };
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        // Read `done` before reading: at the end of the file, a writer already done means the end is final.
        let finished = done.load(Ordering::Acquire);
        let n = f.read(&mut buf).map_err(io(path))?;
        if n > 0 {
            h.update(&buf[..n]);
        } else if finished {
            return Ok(format!("{:032x}", h.digest128()));
        } else {
            pause();
        }
    }
}

/// Run `write` (which creates `path`) while hashing the file as it is written.
fn write_hashed(
    path: &Path,
    write: impl FnOnce() -> Result<(), CheckpointError>,
) -> Result<String, CheckpointError> {
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let hasher = sc.spawn(|| hash_following(path, &done));
        let written = write();
        done.store(true, Ordering::Release);
        let sum = hasher.join().expect("hashing thread");
        written.and(sum)
    })
}

/// Hash of a run configuration, stored in the safetensors metadata (`isoflop.config_sha256`): sha256 of its
/// compact JSON.
pub fn config_hash(cfg: &TrainConfig) -> String {
    sha256_hex(&serde_json::to_vec(cfg).expect("config serialises"))
}

/// The first non-finite value of `buf`, as `(tensor name, index in the tensor, value)`.
fn first_non_finite(layout: &ParamLayout, buf: &[f32]) -> Option<(String, usize, f32)> {
    let i = buf.iter().position(|x| !x.is_finite())?;
    let t = layout.tensors.iter().find(|t| t.range().contains(&i))?;
    Some((t.name.clone(), i - t.range().start, buf[i]))
}

fn check_finite(
    path: &Path,
    layout: &ParamLayout,
    prefix: &str,
    buf: &[f32],
) -> Result<(), CheckpointError> {
    match first_non_finite(layout, buf) {
        None => Ok(()),
        Some((name, i, x)) => Err(invalid(
            path,
            format!("tensor {prefix}{name} holds a non-finite value ({x}) at index {i}; refusing this checkpoint"),
        )),
    }
}

fn write_tensors(
    path: &Path,
    layout: &ParamLayout,
    prefix: &str,
    bufs: &[&[f32]],
    meta: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let mut views = Vec::new();
    for (k, buf) in bufs.iter().enumerate() {
        if buf.len() != layout.total {
            return Err(invalid(
                path,
                format!(
                    "buffer has {} values, layout needs {}",
                    buf.len(),
                    layout.total
                ),
            ));
        }
        let pre = if bufs.len() > 1 {
            ["m.", "v."][k]
        } else {
            prefix
        };
        for t in &layout.tensors {
            let bytes: &[u8] = bytemuck::cast_slice(&buf[t.range()]);
            let view = TensorView::new(Dtype::F32, t.shape.clone(), bytes).map_err(|source| {
                CheckpointError::Safetensors {
                    path: path.to_path_buf(),
                    what: "cannot describe a tensor",
                    source,
                }
            })?;
            views.push((format!("{pre}{}", t.name), view));
        }
    }
    safetensors::serialize_to_file(views, Some(meta), path).map_err(|source| {
        CheckpointError::Safetensors {
            path: path.to_path_buf(),
            what: "cannot write",
            source,
        }
    })?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

fn read_tensors(
    path: &Path,
    bytes: &[u8],
    layout: &ParamLayout,
    prefix: &str,
) -> Result<Vec<f32>, CheckpointError> {
    let st = SafeTensors::deserialize(bytes).map_err(|source| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        what: "not a readable safetensors file",
        source,
    })?;
    let mut out = vec![0.0f32; layout.total];
    for t in &layout.tensors {
        let name = format!("{prefix}{}", t.name);
        let view = st
            .tensor(&name)
            .map_err(|_| invalid(path, format!("tensor {name} is missing")))?;
        if view.dtype() != Dtype::F32 || view.shape() != t.shape.as_slice() {
            return Err(invalid(
                path,
                format!(
                    "tensor {name} is {:?} {:?}, the model needs F32 {:?}",
                    view.dtype(),
                    view.shape(),
                    t.shape
                ),
            ));
        }
        for (o, c) in out[t.range()].iter_mut().zip(view.data().chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    Ok(out)
}

/// Read the model shape stored in a `model.safetensors` file's metadata.
pub fn read_model_config(path: &Path) -> Result<ModelConfig, CheckpointError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    model_config_of(path, &read_meta(path, &bytes)?)
}

/// The `__metadata__` of a safetensors file's bytes.
fn read_meta(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>, CheckpointError> {
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|source| CheckpointError::Safetensors {
            path: path.to_path_buf(),
            what: "not a readable safetensors file",
            source,
        })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

fn model_config_of(
    path: &Path,
    meta: &HashMap<String, String>,
) -> Result<ModelConfig, CheckpointError> {
    let cfg = meta
        .get("isoflop.model")
        .ok_or_else(|| invalid(path, "no isoflop.model metadata: not an isoflop checkpoint"))?;
    serde_json::from_str(cfg).map_err(|source| CheckpointError::Json {
        path: path.to_path_buf(),
        what: "bad isoflop.model metadata",
        source,
    })
}

/// Name of the checkpoint directory of `step`.
pub fn dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Write a complete checkpoint into `root/step-NNNNNNNN` atomically; returns its path. `history` is the
/// run's metrics rows through `state.step` (JSON lines), kept as [`HISTORY_FILE`].
///
/// Parameters or moments holding a NaN/inf are refused (such a checkpoint would never be resumable). On any
/// failure (e.g. a full disk) the partial `.tmp` directory is removed and an existing checkpoint is untouched.
pub fn save(
    root: &Path,
    params: &[f32],
    m: &[f32],
    v: &[f32],
    state: &CheckpointState,
    history: &str,
) -> Result<PathBuf, CheckpointError> {
    let layout = ParamLayout::new(&state.config.model);
    let final_dir = root.join(dir_name(state.step));
    for (prefix, buf) in [("", params), ("m.", m), ("v.", v)] {
        if buf.len() == layout.total {
            check_finite(&final_dir, &layout, prefix, buf)?;
        }
    }
    std::fs::create_dir_all(root).map_err(io(root))?;
    let tmp = root.join(format!("{}.tmp", dir_name(state.step)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    let written = write_dir(&tmp, &final_dir, &layout, params, m, v, state, history);
    if written.is_err() {
        // Leave nothing behind: a partial temporary directory would keep a full disk full.
        let _ = std::fs::remove_dir_all(&tmp);
        return written.map(|_| final_dir);
    }
    File::open(root)
        .and_then(|f| f.sync_all())
        .map_err(io(root))?;
    Ok(final_dir)
}

#[allow(clippy::too_many_arguments)]
fn write_dir(
    tmp: &Path,
    final_dir: &Path,
    layout: &ParamLayout,
    params: &[f32],
    m: &[f32],
    v: &[f32],
    state: &CheckpointState,
    history: &str,
) -> Result<(), CheckpointError> {
    let mut meta = HashMap::new();
    meta.insert(
        "isoflop.model".to_string(),
        serde_json::to_string(&state.config.model).expect("config serialises"),
    );
    meta.insert("isoflop.step".to_string(), state.step.to_string());
    meta.insert(
        "isoflop.config_sha256".to_string(),
        config_hash(&state.config),
    );
    meta.insert(
        "isoflop.layout".to_string(),
        "matrices [in, out], row-major, y = x @ W".to_string(),
    );
    let (model, opt) = (
        tmp.join("model.safetensors"),
        tmp.join("optimizer.safetensors"),
    );
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    write_synced(&tmp.join("state.json"), &json)?;
    write_synced(&tmp.join(HISTORY_FILE), history.as_bytes())?;
    // The tensor files are hashed while they are written (see `hash_following`): hashing costs little time.
    let sums = [
        write_hashed(&model, || {
            write_tensors(&model, layout, "", &[params], meta.clone())
        })?,
        write_hashed(&opt, || write_tensors(&opt, layout, "", &[m, v], meta))?,
        file_hash(&json),
        file_hash(history.as_bytes()),
    ];
    let mut text = String::new();
    for (f, sum) in SUMMED.iter().zip(sums) {
        text.push_str(&format!("{sum}  {f}\n"));
    }
    write_synced(&tmp.join(SUMS_FILE), text.as_bytes())?;
    if final_dir.exists() {
        std::fs::remove_dir_all(final_dir).map_err(io(final_dir))?;
    }
    std::fs::rename(tmp, final_dir).map_err(io(final_dir))
}

/// Write `bytes` to `path` and fsync it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut f = File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Complete checkpoints under `root`, oldest first.
pub fn list(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            e.path()
                .join("state.json")
                .exists()
                .then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Delete all but the newest `keep` complete checkpoints (and stale `.tmp` directories).
pub fn prune(root: &Path, keep: usize) -> Result<(), CheckpointError> {
    let all = list(root);
    for (_, p) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(p).map_err(io(p))?;
    }
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(".tmp") {
            let p = e.path();
            std::fs::remove_dir_all(&p).map_err(io(&p))?;
        }
    }
    Ok(())
}

/// Parse a [`SUMS_FILE`]: file name → recorded hash.
fn read_sums(path: &Path) -> Result<HashMap<String, String>, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let (sum, name) = line
            .split_once("  ")
            .filter(|(s, _)| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| invalid(path, format!("line {}: not `HASH  FILE`: {line:?}", i + 1)))?;
        out.insert(name.to_string(), sum.to_ascii_lowercase());
    }
    Ok(out)
}

/// Refuse `bytes` (the content of `dir/name`) unless it matches the sum recorded for it.
fn verify_sum(
    dir: &Path,
    sums: &HashMap<String, String>,
    name: &str,
    bytes: &[u8],
) -> Result<(), CheckpointError> {
    let path = dir.join(name);
    let want = sums
        .get(name)
        .ok_or_else(|| invalid(&path, format!("not listed in {SUMS_FILE}")))?;
    let got = file_hash(bytes);
    if &got != want {
        return Err(invalid(
            &path,
            format!("checksum (xxh3-128) {got} differs from {want} recorded in {SUMS_FILE} when it was written: the file is corrupt"),
        ));
    }
    Ok(())
}

/// The step in a `step-NNNNNNNN` directory name.
fn step_of_dir(dir: &Path) -> Option<u64> {
    dir.file_name()?
        .to_str()?
        .strip_prefix("step-")?
        .parse()
        .ok()
}

/// Load a checkpoint directory (with optimizer state) or a bare `model.safetensors` file.
/// `expect` refuses a checkpoint whose model shape differs.
///
/// A directory is verified: every file against `XXH128SUMS`, the step of the directory name, of
/// `state.json` and of both safetensors files' metadata against each other, the configuration hash in the
/// metadata against `state.json`'s configuration. A bare file is checked against a `XXH128SUMS` beside it
/// when there is one. Any NaN/inf value is refused.
pub fn load(path: &Path, expect: Option<&ModelConfig>) -> Result<Checkpoint, CheckpointError> {
    let (model_file, dir) = if path.is_dir() {
        (path.join("model.safetensors"), Some(path))
    } else {
        (path.to_path_buf(), None)
    };
    let model_bytes = std::fs::read(&model_file).map_err(io(&model_file))?;
    let model_meta = read_meta(&model_file, &model_bytes)?;
    let model = model_config_of(&model_file, &model_meta)?;
    model.validate().map_err(|source| CheckpointError::Model {
        path: model_file.clone(),
        source,
    })?;
    if let Some(e) = expect {
        if e != &model {
            return Err(invalid(
                &model_file,
                format!("checkpoint is for model {model:?}, but this run is {e:?}"),
            ));
        }
    }
    let layout = ParamLayout::new(&model);
    let Some(dir) = dir else {
        // A bare file: verify it when it still sits in its checkpoint directory.
        if let Some(parent) = model_file.parent() {
            let sp = parent.join(SUMS_FILE);
            if sp.exists()
                && model_file
                    .file_name()
                    .is_some_and(|n| n == "model.safetensors")
            {
                verify_sum(parent, &read_sums(&sp)?, "model.safetensors", &model_bytes)?;
            }
        }
        let params = read_tensors(&model_file, &model_bytes, &layout, "")?;
        check_finite(&model_file, &layout, "", &params)?;
        return Ok(Checkpoint {
            params,
            m: None,
            v: None,
            state: None,
            model,
            history: None,
        });
    };
    let sp = dir.join("state.json");
    let text = std::fs::read_to_string(&sp).map_err(io(&sp))?;
    let sums_path = dir.join(SUMS_FILE);
    let sums = if sums_path.exists() {
        Some(read_sums(&sums_path)?)
    } else {
        None
    };
    let st: CheckpointState = serde_json::from_str(&text).map_err(|e| {
        // A damaged state.json: say it is corrupt when its checksum says so.
        sums.as_ref()
            .and_then(|s| verify_sum(dir, s, "state.json", text.as_bytes()).err())
            .unwrap_or(CheckpointError::Json {
                path: sp.clone(),
                what: "not a valid state.json",
                source: e,
            })
    })?;
    if st.format != CHECKPOINT_FORMAT {
        return Err(invalid(
            &sp,
            format!(
                "checkpoint format {} (this isoflop reads {CHECKPOINT_FORMAT})",
                st.format
            ),
        ));
    }
    if st.config.model != model {
        return Err(invalid(
            &sp,
            "state.json's model differs from model.safetensors' metadata",
        ));
    }
    let op = dir.join("optimizer.safetensors");
    let opt_bytes = std::fs::read(&op).map_err(io(&op))?;
    let opt_meta = read_meta(&op, &opt_bytes)?;
    // The step and configuration are stored with the tensors too; every record must agree.
    if let Some(d) = step_of_dir(dir) {
        if d != st.step {
            return Err(invalid(
                &sp,
                format!(
                    "state.json says step {}, but the directory is step {d}",
                    st.step
                ),
            ));
        }
    }
    let want_hash = config_hash(&st.config);
    for (file, meta) in [(&model_file, &model_meta), (&op, &opt_meta)] {
        let step = meta.get("isoflop.step").map(String::as_str);
        if step != Some(st.step.to_string().as_str()) {
            return Err(invalid(
                file,
                format!(
                    "metadata says step {}, but state.json says step {}",
                    step.unwrap_or("(none)"),
                    st.step
                ),
            ));
        }
        let hash = meta.get("isoflop.config_sha256").map(String::as_str);
        if hash != Some(want_hash.as_str()) {
            return Err(invalid(
                file,
                format!(
                    "the configuration differs: metadata has configuration hash {}, state.json's configuration hashes to {want_hash}",
                    hash.unwrap_or("(none)")
                ),
            ));
        }
    }
    let sums =
        sums.ok_or_else(|| invalid(&sums_path, "missing: the checkpoint cannot be verified"))?;
    verify_sum(dir, &sums, "model.safetensors", &model_bytes)?;
    verify_sum(dir, &sums, "optimizer.safetensors", &opt_bytes)?;
    verify_sum(dir, &sums, "state.json", text.as_bytes())?;
    let hp = dir.join(HISTORY_FILE);
    let history = std::fs::read_to_string(&hp).map_err(io(&hp))?;
    verify_sum(dir, &sums, HISTORY_FILE, history.as_bytes())?;
    let params = read_tensors(&model_file, &model_bytes, &layout, "")?;
    check_finite(&model_file, &layout, "", &params)?;
    let m = read_tensors(&op, &opt_bytes, &layout, "m.")?;
    check_finite(&op, &layout, "m.", &m)?;
    let v = read_tensors(&op, &opt_bytes, &layout, "v.")?;
    check_finite(&op, &layout, "v.", &v)?;
    Ok(Checkpoint {
        params,
        m: Some(m),
        v: Some(v),
        state: Some(st),
        model,
        history: Some(history),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> CheckpointState {
        let config = TrainConfig {
            model: ModelConfig {
                d_model: 64,
                n_layers: 1,
                seq_len: 8,
                vocab_size: 32,
            },
            ..Default::default()
        };
        CheckpointState {
            format: CHECKPOINT_FORMAT,
            step,
            elapsed_s: 1.5,
            source: serde_json::json!({"k": 1}),
            config,
        }
    }

    #[test]
    fn save_load_round_trip_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(3);
        let n = ParamLayout::new(&st.config.model).total;
        let p: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let m: Vec<f32> = (0..n).map(|i| -(i as f32)).collect();
        let v: Vec<f32> = (0..n).map(|i| i as f32 + 0.25).collect();
        let path = save(dir.path(), &p, &m, &v, &st, "{}\n").unwrap();
        let c = load(&path, Some(&st.config.model)).unwrap();
        assert_eq!(c.params, p);
        assert_eq!(c.m.unwrap(), m);
        assert_eq!(c.v.unwrap(), v);
        assert_eq!(c.state.unwrap(), st);
        assert_eq!(c.history.as_deref(), Some("{}\n"));
        let bare = load(&path.join("model.safetensors"), None).unwrap();
        assert_eq!(bare.params, p);
        for s in [5, 7, 9] {
            save(dir.path(), &p, &m, &v, &state(s), "").unwrap();
        }
        prune(dir.path(), 2).unwrap();
        let steps: Vec<u64> = list(dir.path()).into_iter().map(|x| x.0).collect();
        assert_eq!(steps, vec![7, 9]);
    }

    #[test]
    fn corrupt_or_mismatched_checkpoints_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(1);
        let n = ParamLayout::new(&st.config.model).total;
        let z = vec![0.0f32; n];
        let path = save(dir.path(), &z, &z, &z, &st, "").unwrap();
        let other = ModelConfig {
            d_model: 128,
            ..st.config.model
        };
        let e = load(&path, Some(&other)).err().unwrap().to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("this run"),
            "{e}"
        );
        // Truncated file.
        let mf = path.join("model.safetensors");
        let bytes = std::fs::read(&mf).unwrap();
        std::fs::write(&mf, &bytes[..bytes.len() / 2]).unwrap();
        let e = load(&path, None).err().unwrap().to_string();
        assert!(e.contains("model.safetensors"), "{e}");
        // Not a safetensors file at all.
        std::fs::write(&mf, b"hello").unwrap();
        assert!(load(&path, None)
            .err()
            .unwrap()
            .to_string()
            .contains("model.safetensors"));
    }

    #[test]
    fn failed_write_keeps_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(1);
        let n = ParamLayout::new(&st.config.model).total;
        let z = vec![1.0f32; n];
        save(dir.path(), &z, &z, &z, &st, "").unwrap();
        // Make the temporary directory of step 2 impossible to create: a file stands in its place
        // and cannot be removed as a directory.
        std::fs::write(dir.path().join("step-00000002.tmp"), b"x").unwrap();
        assert!(save(dir.path(), &z, &z, &z, &state(2), "").is_err());
        let all = list(dir.path());
        assert_eq!(all.len(), 1);
        assert_eq!(load(&all[0].1, None).unwrap().params, z);
    }

    fn err(path: &Path) -> String {
        load(path, None).err().expect("refused").to_string()
    }

    #[test]
    fn flipped_bytes_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(4);
        let n = ParamLayout::new(&st.config.model).total;
        let z = vec![0.5f32; n];
        let path = save(dir.path(), &z, &z, &z, &st, "{}\n").unwrap();
        let sums = std::fs::read_to_string(path.join(SUMS_FILE)).unwrap();
        for f in SUMMED {
            assert!(sums.contains(&format!("  {f}\n")), "{sums}");
        }
        for f in SUMMED {
            let p = path.join(f);
            let good = std::fs::read(&p).unwrap();
            let mut bad = good.clone();
            // A byte inside the tensor data (or the text), where the format itself stays valid.
            let i = bad.len() - 3;
            bad[i] ^= 0x01;
            std::fs::write(&p, &bad).unwrap();
            let e = err(&path);
            assert!(e.contains(f) && e.contains("checksum"), "{f}: {e}");
            std::fs::write(&p, &good).unwrap();
        }
        std::fs::remove_file(path.join(SUMS_FILE)).unwrap();
        assert!(err(&path).contains(SUMS_FILE));
    }

    #[test]
    fn step_disagreements_are_refused_naming_both_values() {
        let dir = tempfile::tempdir().unwrap();
        let n = ParamLayout::new(&state(1).config.model).total;
        let z = vec![0.5f32; n];
        let p10 = save(dir.path(), &z, &z, &z, &state(10), "").unwrap();
        let p20 = save(dir.path(), &z, &z, &z, &state(20), "").unwrap();
        // state.json of step 10 copied into step 20.
        std::fs::copy(p10.join("state.json"), p20.join("state.json")).unwrap();
        let e = err(&p20);
        assert!(e.contains("step 10") && e.contains("step 20"), "{e}");
        // A directory renamed along with an edited state.json: the tensors still say step 10.
        let p999 = dir.path().join(dir_name(999));
        std::fs::rename(&p10, &p999).unwrap();
        let sp = p999.join("state.json");
        let text = std::fs::read_to_string(&sp).unwrap();
        std::fs::write(&sp, text.replace("\"step\": 10", "\"step\": 999")).unwrap();
        let e = err(&p999);
        assert!(
            e.contains("model.safetensors") && e.contains("step 10") && e.contains("step 999"),
            "{e}"
        );
        // Another configuration in state.json (same model): the metadata hash differs.
        let p30 = save(dir.path(), &z, &z, &z, &state(30), "").unwrap();
        let sp = p30.join("state.json");
        let mut st: CheckpointState =
            serde_json::from_str(&std::fs::read_to_string(&sp).unwrap()).unwrap();
        st.config.seed += 1;
        std::fs::write(&sp, serde_json::to_vec_pretty(&st).unwrap()).unwrap();
        let e = err(&p30);
        assert!(e.contains("configuration hash"), "{e}");
    }

    #[test]
    fn non_finite_values_are_never_saved_nor_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(2);
        let layout = ParamLayout::new(&st.config.model);
        let z = vec![0.5f32; layout.total];
        let mut bad = z.clone();
        bad[layout.total - 1] = f32::NAN;
        let e = save(dir.path(), &bad, &z, &z, &st, "")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("non-finite") && e.contains("NaN"), "{e}");
        assert!(list(dir.path()).is_empty());
        // Written anyway (bypassing the check, checksums valid): refused on load, naming the tensor.
        let last = &layout.tensors.last().unwrap().name;
        let fin = dir.path().join(dir_name(2));
        let tmp = dir.path().join("x.tmp");
        std::fs::create_dir(&tmp).unwrap();
        write_dir(&tmp, &fin, &layout, &bad, &z, &z, &st, "").unwrap();
        let e = err(&fin);
        assert!(e.contains("non-finite") && e.contains(last.as_str()), "{e}");
        let e = err(&fin.join("model.safetensors"));
        assert!(e.contains("non-finite"), "{e}");
        let mut inf = z.clone();
        inf[0] = f32::INFINITY;
        std::fs::create_dir(&tmp).unwrap();
        write_dir(&tmp, &fin, &layout, &z, &z, &inf, &st, "").unwrap();
        let e = err(&fin);
        assert!(
            e.contains("optimizer.safetensors") && e.contains("v."),
            "{e}"
        );
    }

    #[test]
    fn a_failed_write_removes_its_temporary_directory() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(5);
        let z = vec![0.5f32; ParamLayout::new(&st.config.model).total];
        // The final name is taken by a file that cannot be removed as a directory: everything is written
        // under step-00000005.tmp, then the last step fails.
        std::fs::write(dir.path().join(dir_name(5)), b"x").unwrap();
        assert!(save(dir.path(), &z, &z, &z, &st, "").is_err());
        assert!(!dir.path().join("step-00000005.tmp").exists());
        assert_eq!(std::fs::read(dir.path().join(dir_name(5))).unwrap(), b"x");
    }
}

//! Checkpoints: safetensors files with the model contract's names and `[in, out]` layout, readable by
//! PyTorch, JAX or numpy without isoflop, with the optimizer moments and the run's position beside them.
//!
//! A checkpoint is a directory `checkpoints/step-NNNNNNNN/` holding `model.safetensors` (f32 parameters),
//! `optimizer.safetensors` (`m.<name>` and `v.<name>`) and `state.json`. It is written under a `.tmp` name,
//! every file fsynced, then renamed: a directory without `.tmp` is always complete.

use super::config::TrainConfig;
use crate::model::{ModelConfig, ParamLayout};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Version of the checkpoint layout.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// A checkpoint that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File-system failure.
    #[error("{path}: {err}")]
    Io {
        /// Path concerned.
        path: PathBuf,
        /// Cause.
        err: std::io::Error,
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
    move |err| CheckpointError::Io {
        path: path.to_path_buf(),
        err,
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
            let view = TensorView::new(Dtype::F32, t.shape.clone(), bytes)
                .map_err(|e| invalid(path, e.to_string()))?;
            views.push((format!("{pre}{}", t.name), view));
        }
    }
    safetensors::serialize_to_file(views, Some(meta), path)
        .map_err(|e| invalid(path, e.to_string()))?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

fn read_tensors(
    path: &Path,
    layout: &ParamLayout,
    prefix: &str,
) -> Result<Vec<f32>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| invalid(path, format!("not a readable safetensors file ({e})")))?;
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
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| invalid(path, format!("not a readable safetensors file ({e})")))?;
    let cfg = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("isoflop.model"))
        .ok_or_else(|| invalid(path, "no isoflop.model metadata: not an isoflop checkpoint"))?;
    serde_json::from_str(cfg).map_err(|e| invalid(path, format!("bad isoflop.model metadata: {e}")))
}

/// Name of the checkpoint directory of `step`.
pub fn dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Write a complete checkpoint into `root/step-NNNNNNNN` atomically; returns its path.
pub fn save(
    root: &Path,
    params: &[f32],
    m: &[f32],
    v: &[f32],
    state: &CheckpointState,
) -> Result<PathBuf, CheckpointError> {
    let layout = ParamLayout::new(&state.config.model);
    std::fs::create_dir_all(root).map_err(io(root))?;
    let final_dir = root.join(dir_name(state.step));
    let tmp = root.join(format!("{}.tmp", dir_name(state.step)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    let mut meta = HashMap::new();
    meta.insert(
        "isoflop.model".to_string(),
        serde_json::to_string(&state.config.model).expect("config serialises"),
    );
    meta.insert("isoflop.step".to_string(), state.step.to_string());
    meta.insert(
        "isoflop.layout".to_string(),
        "matrices [in, out], row-major, y = x @ W".to_string(),
    );
    write_tensors(
        &tmp.join("model.safetensors"),
        &layout,
        "",
        &[params],
        meta.clone(),
    )?;
    write_tensors(
        &tmp.join("optimizer.safetensors"),
        &layout,
        "",
        &[m, v],
        meta,
    )?;
    let sp = tmp.join("state.json");
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    std::fs::write(&sp, json).map_err(io(&sp))?;
    File::open(&sp)
        .and_then(|f| f.sync_all())
        .map_err(io(&sp))?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    File::open(root)
        .and_then(|f| f.sync_all())
        .map_err(io(root))?;
    Ok(final_dir)
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

/// Load a checkpoint directory (with optimizer state) or a bare `model.safetensors` file.
/// `expect` refuses a checkpoint whose model shape differs.
pub fn load(path: &Path, expect: Option<&ModelConfig>) -> Result<Checkpoint, CheckpointError> {
    let (model_file, dir) = if path.is_dir() {
        (path.join("model.safetensors"), Some(path))
    } else {
        (path.to_path_buf(), None)
    };
    let model = read_model_config(&model_file)?;
    model
        .validate()
        .map_err(|e| invalid(&model_file, e.to_string()))?;
    if let Some(e) = expect {
        if e != &model {
            return Err(invalid(
                &model_file,
                format!("checkpoint is for model {model:?}, but this run is {e:?}"),
            ));
        }
    }
    let layout = ParamLayout::new(&model);
    let params = read_tensors(&model_file, &layout, "")?;
    let (mut m, mut v, mut state) = (None, None, None);
    if let Some(dir) = dir {
        let sp = dir.join("state.json");
        let text = std::fs::read_to_string(&sp).map_err(io(&sp))?;
        let st: CheckpointState =
            serde_json::from_str(&text).map_err(|e| invalid(&sp, e.to_string()))?;
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
        m = Some(read_tensors(&op, &layout, "m.")?);
        v = Some(read_tensors(&op, &layout, "v.")?);
        state = Some(st);
    }
    Ok(Checkpoint {
        params,
        m,
        v,
        state,
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> CheckpointState {
        let mut config = TrainConfig::default();
        config.model = ModelConfig {
            d_model: 64,
            n_layers: 1,
            seq_len: 8,
            vocab_size: 32,
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
        let path = save(dir.path(), &p, &m, &v, &st).unwrap();
        let c = load(&path, Some(&st.config.model)).unwrap();
        assert_eq!(c.params, p);
        assert_eq!(c.m.unwrap(), m);
        assert_eq!(c.v.unwrap(), v);
        assert_eq!(c.state.unwrap(), st);
        let bare = load(&path.join("model.safetensors"), None).unwrap();
        assert_eq!(bare.params, p);
        for s in [5, 7, 9] {
            save(dir.path(), &p, &m, &v, &state(s)).unwrap();
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
        let path = save(dir.path(), &z, &z, &z, &st).unwrap();
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
        save(dir.path(), &z, &z, &z, &st).unwrap();
        // Make the temporary directory of step 2 impossible to create: a file stands in its place
        // and cannot be removed as a directory.
        std::fs::write(dir.path().join("step-00000002.tmp"), b"x").unwrap();
        assert!(save(dir.path(), &z, &z, &z, &state(2)).is_err());
        let all = list(dir.path());
        assert_eq!(all.len(), 1);
        assert_eq!(load(&all[0].1, None).unwrap().params, z);
    }
}

//! Inputs for running the same training elsewhere (bench/torch_reference.py): the step-0 weights of each
//! size as a safetensors file in the checkpoint format, the resolved training configuration, and the exact
//! token batches `isoflop bench` trains on.
//!
//! Per size, `DIR/<label>/` receives:
//! - `model.safetensors`: `init_params()` in f32, contract names, `[in, out]` matrices, with the
//!   `isoflop.model` metadata that [`crate::train::checkpoint::load`] reads;
//! - `train_config.json`: the [`TrainConfig`] the benchmark runs the size with (lr, schedule, AdamW);
//! - `batches.u16`: `steps × batch_size × (T+1)` token ids, u16 little-endian, step after step, in the
//!   order the training loop draws them (inputs `row[..T]`, targets `row[1..]`);
//! - `batches.json`: the shape of that file.

use super::plan::{BenchPlan, SizeSpec};
use super::BenchError;
use crate::data::{SyntheticSource, TokenSource};
use crate::model::{init_params, ParamLayout};
use crate::train::TrainConfig;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Description of a `batches.u16` file (its JSON sidecar).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchFile {
    /// Always 1.
    pub format: u32,
    /// Always `uint16`.
    pub dtype: String,
    /// Always `little`.
    pub byteorder: String,
    /// Optimizer steps in the file.
    pub steps: u64,
    /// Sequences per step (the global batch).
    pub rows_per_step: usize,
    /// Ids per row (T + 1).
    pub row_len: usize,
    /// Context T.
    pub seq_len: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Where the ids come from.
    pub source: String,
}

/// Paths written for one size.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The size's directory.
    pub dir: PathBuf,
    /// `model.safetensors`.
    pub model: PathBuf,
    /// `batches.u16`.
    pub batches: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |err| BenchError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// Write `params` (flat, layout order) as a model-only safetensors file in the checkpoint format.
pub fn write_model_safetensors(
    path: &Path,
    cfg: &TrainConfig,
    params: &[f32],
) -> Result<(), BenchError> {
    let layout = ParamLayout::new(&cfg.model);
    if params.len() != layout.total {
        return Err(BenchError::Device(format!(
            "{}: {} parameters, the layout needs {}",
            path.display(),
            params.len(),
            layout.total
        )));
    }
    let mut views = Vec::with_capacity(layout.tensors.len());
    for t in &layout.tensors {
        let bytes: &[u8] = bytemuck::cast_slice(&params[t.range()]);
        let view = TensorView::new(Dtype::F32, t.shape.clone(), bytes).map_err(|source| {
            BenchError::Safetensors {
                path: path.to_path_buf(),
                source,
            }
        })?;
        views.push((t.name.clone(), view));
    }
    let meta = HashMap::from([
        (
            "isoflop.model".to_string(),
            serde_json::to_string(&cfg.model).expect("config serialises"),
        ),
        ("isoflop.step".to_string(), "0".to_string()),
        (
            "isoflop.layout".to_string(),
            "matrices [in, out], row-major, y = x @ W".to_string(),
        ),
    ]);
    safetensors::serialize_to_file(views, Some(meta), path).map_err(|source| {
        BenchError::Safetensors {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Write the inputs of one size under `root/<label>/`.
pub fn export_size(plan: &BenchPlan, size: &SizeSpec, root: &Path) -> Result<Exported, BenchError> {
    let micro = plan.micro_batch.unwrap_or(plan.batch_size);
    let cfg = plan.train_config(size, micro);
    cfg.validate().map_err(|source| BenchError::Config {
        size: size.to_string(),
        source,
    })?;
    let dir = root.join(size.label());
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let model = dir.join("model.safetensors");
    write_model_safetensors(&model, &cfg, &init_params(&cfg.model, cfg.seed))?;
    let cfg_path = dir.join("train_config.json");
    let text = serde_json::to_string_pretty(&cfg).expect("config serialises");
    std::fs::write(&cfg_path, text).map_err(io(&cfg_path))?;
    let batches = dir.join("batches.u16");
    let (t, v) = (cfg.model.seq_len, cfg.model.vocab_size);
    let mut src = SyntheticSource::new(t, v, cfg.seed);
    let file = std::fs::File::create(&batches).map_err(io(&batches))?;
    let mut w = std::io::BufWriter::new(file);
    for _ in 0..plan.total_steps() {
        let ids = src
            .next_batch(cfg.batch_size)
            .map_err(|source| BenchError::Tokens {
                what: "synthetic batch",
                source,
            })?;
        for id in ids {
            w.write_all(&id.to_le_bytes()).map_err(io(&batches))?;
        }
    }
    w.flush().map_err(io(&batches))?;
    let side = BatchFile {
        format: 1,
        dtype: "uint16".into(),
        byteorder: "little".into(),
        steps: plan.total_steps(),
        rows_per_step: cfg.batch_size,
        row_len: t + 1,
        seq_len: t,
        vocab_size: v,
        source: SyntheticSource::new(t, v, cfg.seed).describe(),
    };
    let side_path = dir.join("batches.json");
    let text = serde_json::to_string_pretty(&side).expect("sidecar serialises");
    std::fs::write(&side_path, text).map_err(io(&side_path))?;
    Ok(Exported {
        dir,
        model,
        batches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::{parse_sizes, BackendKind};

    #[test]
    fn exported_inputs_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let mut plan = BenchPlan::defaults(BackendKind::Cpu);
        plan.sizes = parse_sizes("64x1:16").unwrap();
        plan.vocab_size = 100;
        plan.batch_size = 3;
        plan.warmup = 1;
        plan.steps = 2;
        let e = export_size(&plan, &plan.sizes[0], tmp.path()).unwrap();
        let ck = crate::train::checkpoint::load(&e.model, None).unwrap();
        assert_eq!(ck.model, plan.model(&plan.sizes[0]));
        assert_eq!(ck.params, init_params(&ck.model, plan.seed));
        let bytes = std::fs::read(&e.batches).unwrap();
        assert_eq!(bytes.len(), 3 * 3 * 17 * 2);
        let ids: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let mut src = SyntheticSource::new(16, 100, plan.seed);
        assert_eq!(ids, src.next_batch(9).unwrap());
        let side: BatchFile =
            serde_json::from_str(&std::fs::read_to_string(e.dir.join("batches.json")).unwrap())
                .unwrap();
        assert_eq!((side.steps, side.rows_per_step, side.row_len), (3, 3, 17));
        let cfg: TrainConfig = serde_json::from_str(
            &std::fs::read_to_string(e.dir.join("train_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg.steps, 3);
        assert_eq!(cfg.batch_size, 3);
    }
}

//! Parameter names, shapes and initialisation: the checkpoint format of the model contract.
//!
//! All parameters live in one flat f32 buffer (the master copy), tensor after tensor in the order of
//! [`ParamLayout::tensors`]. Matrices are stored `[in, out]`, row-major, so `y = x · W`.

use super::config::{ModelConfig, HEAD_DIM};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

/// What a tensor is, which decides its initialisation and whether weight decay applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TensorKind {
    /// Token embedding `[V, D]`: normal with std 1/√D (NanoDO's fan-in normal). Decayed.
    Embedding,
    /// A weight matrix `[in, out]`: Xavier-uniform, U(±√(6/(in+out))). Decayed.
    Matrix,
    /// A norm scale: ones. Not decayed.
    Scale,
}

/// One named tensor inside the flat parameter buffer.
#[derive(Clone, Debug, Serialize)]
pub struct TensorSpec {
    /// Contract name, e.g. `blocks.0.attn.wq`.
    pub name: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// Offset (in f32 elements) inside the flat buffer.
    pub offset: usize,
    /// Kind (initialisation and decay).
    pub kind: TensorKind,
}

impl TensorSpec {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Element range inside the flat buffer.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.numel()
    }
    /// Whether AdamW's weight decay applies (matrices and the embedding, not norm scales).
    pub fn decayed(&self) -> bool {
        self.kind != TensorKind::Scale
    }
}

/// Offsets of one block's tensors inside the flat buffer.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BlockOffsets {
    /// `blocks.{i}.ln1.scale` `[D]`
    pub ln1: usize,
    /// `blocks.{i}.attn.wq` [D, D]
    pub wq: usize,
    /// `blocks.{i}.attn.wk` [D, D]
    pub wk: usize,
    /// `blocks.{i}.attn.wv` [D, D]
    pub wv: usize,
    /// `blocks.{i}.attn.wo` [D, D]
    pub wo: usize,
    /// `blocks.{i}.attn.q_norm.scale` `[64]`
    pub q_norm: usize,
    /// `blocks.{i}.attn.k_norm.scale` `[64]`
    pub k_norm: usize,
    /// `blocks.{i}.ln2.scale` `[D]`
    pub ln2: usize,
    /// `blocks.{i}.mlp.w1` [D, 4D]
    pub w1: usize,
    /// `blocks.{i}.mlp.w2` [4D, D]
    pub w2: usize,
}

/// The ordered list of every parameter tensor of a model.
#[derive(Clone, Debug, Serialize)]
pub struct ParamLayout {
    /// Tensors in buffer order.
    pub tensors: Vec<TensorSpec>,
    /// Total number of f32 elements.
    pub total: usize,
    /// Offset of `embed` [V, D].
    pub embed: usize,
    /// Per-block offsets.
    pub blocks: Vec<BlockOffsets>,
    /// Offset of `final_norm.scale` `[D]`.
    pub final_norm: usize,
    /// Offset of `head` [D, V].
    pub head: usize,
}

impl ParamLayout {
    /// Build the layout of `cfg` (which must be valid).
    pub fn new(cfg: &ModelConfig) -> Self {
        let (d, v, f) = (cfg.d_model, cfg.vocab_size, cfg.d_ff());
        let mut tensors = Vec::new();
        let mut offset = 0usize;
        let mut push = |name: String, shape: Vec<usize>, kind: TensorKind| -> usize {
            let spec = TensorSpec {
                name,
                shape,
                offset,
                kind,
            };
            let at = offset;
            offset += spec.numel();
            tensors.push(spec);
            at
        };
        let embed = push("embed".into(), vec![v, d], TensorKind::Embedding);
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = |s: &str| format!("blocks.{i}.{s}");
            let ln1 = push(p("ln1.scale"), vec![d], TensorKind::Scale);
            let wq = push(p("attn.wq"), vec![d, d], TensorKind::Matrix);
            let wk = push(p("attn.wk"), vec![d, d], TensorKind::Matrix);
            let wv = push(p("attn.wv"), vec![d, d], TensorKind::Matrix);
            let wo = push(p("attn.wo"), vec![d, d], TensorKind::Matrix);
            let q_norm = push(p("attn.q_norm.scale"), vec![HEAD_DIM], TensorKind::Scale);
            let k_norm = push(p("attn.k_norm.scale"), vec![HEAD_DIM], TensorKind::Scale);
            let ln2 = push(p("ln2.scale"), vec![d], TensorKind::Scale);
            let w1 = push(p("mlp.w1"), vec![d, f], TensorKind::Matrix);
            let w2 = push(p("mlp.w2"), vec![f, d], TensorKind::Matrix);
            blocks.push(BlockOffsets {
                ln1,
                wq,
                wk,
                wv,
                wo,
                q_norm,
                k_norm,
                ln2,
                w1,
                w2,
            });
        }
        let final_norm = push("final_norm.scale".into(), vec![d], TensorKind::Scale);
        let head = push("head".into(), vec![d, v], TensorKind::Matrix);
        ParamLayout {
            tensors,
            total: offset,
            embed,
            blocks,
            final_norm,
            head,
        }
    }

    /// Look a tensor up by its contract name.
    pub fn get(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A mask over the flat buffer: 1.0 where weight decay applies, 0.0 elsewhere.
    pub fn decay_mask(&self) -> Vec<f32> {
        let mut m = vec![0.0f32; self.total];
        for t in &self.tensors {
            if t.decayed() {
                m[t.range()].fill(1.0);
            }
        }
        m
    }
}

/// Seeded initialisation of the flat parameter buffer.
///
/// Each tensor draws from its own ChaCha8 stream (seed = `seed`, stream = tensor index), so a tensor's
/// initial values depend only on the seed and its position in the layout, not on the other tensors' sizes.
pub fn init_params(cfg: &ModelConfig, seed: u64) -> Vec<f32> {
    let layout = ParamLayout::new(cfg);
    let mut buf = vec![0.0f32; layout.total];
    for (i, t) in layout.tensors.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(i as u64);
        let out = &mut buf[t.range()];
        match t.kind {
            TensorKind::Scale => out.fill(1.0),
            TensorKind::Embedding => {
                let std = 1.0 / (cfg.d_model as f32).sqrt();
                let normal = Normal::new(0.0f32, std).expect("std is finite and positive");
                out.iter_mut().for_each(|x| *x = normal.sample(&mut rng));
            }
            TensorKind::Matrix => {
                let (fan_in, fan_out) = (t.shape[0] as f32, t.shape[1] as f32);
                let a = (6.0 / (fan_in + fan_out)).sqrt();
                out.iter_mut().for_each(|x| *x = rng.random_range(-a..a));
            }
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_and_sizes() {
        let cfg = ModelConfig {
            d_model: 128,
            n_layers: 2,
            seq_len: 16,
            vocab_size: 1000,
        };
        let l = ParamLayout::new(&cfg);
        assert_eq!(l.tensors.len(), 1 + 2 * 10 + 2);
        assert_eq!(l.get("embed").unwrap().shape, vec![1000, 128]);
        assert_eq!(l.get("blocks.1.attn.q_norm.scale").unwrap().shape, vec![64]);
        assert_eq!(l.get("blocks.0.mlp.w1").unwrap().shape, vec![128, 512]);
        assert_eq!(l.get("head").unwrap().shape, vec![128, 1000]);
        let sum: usize = l.tensors.iter().map(|t| t.numel()).sum();
        assert_eq!(sum, l.total);
        assert_eq!(l.tensors.last().unwrap().range().end, l.total);
        assert_eq!(l.blocks[1].wq, l.get("blocks.1.attn.wq").unwrap().offset);
    }

    #[test]
    fn init_is_seeded_and_in_range() {
        let cfg = ModelConfig {
            d_model: 64,
            n_layers: 1,
            seq_len: 16,
            vocab_size: 300,
        };
        let a = init_params(&cfg, 7);
        let b = init_params(&cfg, 7);
        let c = init_params(&cfg, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let l = ParamLayout::new(&cfg);
        let wq = &a[l.get("blocks.0.attn.wq").unwrap().range()];
        let bound = (6.0f32 / 128.0).sqrt();
        assert!(wq.iter().all(|x| x.abs() <= bound));
        let mean_sq: f32 = wq.iter().map(|x| x * x).sum::<f32>() / wq.len() as f32;
        assert!((mean_sq - bound * bound / 3.0).abs() < 0.1 * bound * bound / 3.0);
        assert!(a[l.get("final_norm.scale").unwrap().range()]
            .iter()
            .all(|&x| x == 1.0));
        let emb = &a[l.get("embed").unwrap().range()];
        let var: f32 = emb.iter().map(|x| x * x).sum::<f32>() / emb.len() as f32;
        assert!(
            (var - 1.0 / 64.0).abs() < 0.1 / 64.0,
            "embedding variance {var}"
        );
    }
}

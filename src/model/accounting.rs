//! Parameter counts, training FLOPs per token under each published convention, and token budgets.
//!
//! The conventions differ in what they count, and the choice moves fitted scaling exponents
//! (Porian et al. 2024), so every run exports all of them.

use super::config::{ModelConfig, HEAD_DIM};
use serde::{Deserialize, Serialize};

/// Chinchilla's compute-optimal ratio of training tokens to parameters.
pub const CHINCHILLA_TOKENS_PER_PARAM: f64 = 20.0;

/// A FLOP-counting convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FlopConvention {
    /// Kaplan et al. 2020: 6 × non-embedding parameters, head excluded.
    Kaplan,
    /// Chinchilla-style 6·N with N = non-embedding parameters + head ≈ 12·D²·L + D·V.
    Standard,
    /// `standard` plus Kaplan's context term 6·L·T·D.
    Attention,
    /// 2 × every multiply-add of the matmuls performed forward and backward, attention at causal cost.
    Exact,
}

impl FlopConvention {
    /// All conventions, in export order.
    pub const ALL: [FlopConvention; 4] = [
        FlopConvention::Kaplan,
        FlopConvention::Standard,
        FlopConvention::Attention,
        FlopConvention::Exact,
    ];

    /// The convention's name as used in exports and flags.
    pub fn name(&self) -> &'static str {
        match self {
            FlopConvention::Kaplan => "kaplan",
            FlopConvention::Standard => "standard",
            FlopConvention::Attention => "attention",
            FlopConvention::Exact => "exact",
        }
    }

    /// Parse a convention name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// Exact parameter counts of one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamCounts {
    /// Every parameter.
    pub total: u64,
    /// The token embedding `embed` (V·D).
    pub embedding: u64,
    /// The output head `head` (D·V).
    pub head: u64,
    /// Everything except `embed` and `head`: the blocks and the final norm.
    pub non_embedding: u64,
    /// N as Chinchilla-style budgets use it: non-embedding + head.
    pub n: u64,
    /// The seed approximation 12·D²·L + D·V.
    pub approx: u64,
}

impl ParamCounts {
    /// Count the parameters of `cfg`.
    pub fn of(cfg: &ModelConfig) -> Self {
        let (d, l, v) = (
            cfg.d_model as u64,
            cfg.n_layers as u64,
            cfg.vocab_size as u64,
        );
        let per_block = 12 * d * d + 2 * d + 2 * HEAD_DIM as u64;
        let embedding = v * d;
        let head = d * v;
        let non_embedding = l * per_block + d;
        ParamCounts {
            total: embedding + non_embedding + head,
            embedding,
            head,
            non_embedding,
            n: non_embedding + head,
            approx: 12 * d * d * l + d * v,
        }
    }
}

/// A FLOP figure under every convention (per token, per step or cumulative): the four travel together,
/// named, never as an array indexed by position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Flops {
    /// See [`FlopConvention::Kaplan`].
    pub kaplan: f64,
    /// See [`FlopConvention::Standard`].
    pub standard: f64,
    /// See [`FlopConvention::Attention`].
    pub attention: f64,
    /// See [`FlopConvention::Exact`].
    pub exact: f64,
}

/// Training FLOPs per token (forward + backward) under every convention: [`Flops::of`].
pub type FlopsPerToken = Flops;

impl Flops {
    /// Training FLOPs per token of `cfg` under each convention.
    pub fn of(cfg: &ModelConfig) -> Self {
        let p = ParamCounts::of(cfg);
        let (d, l, t, v) = (
            cfg.d_model as f64,
            cfg.n_layers as f64,
            cfg.seq_len as f64,
            cfg.vocab_size as f64,
        );
        let kaplan = 6.0 * p.non_embedding as f64;
        let standard = 6.0 * p.n as f64;
        let attention = standard + 6.0 * l * t * d;
        // Forward multiply-adds per token: q,k,v,o (4D²) and the MLP (8D²) per layer, the head (D·V), and
        // attention scores and values at causal cost: position i attends to i+1 keys, so the mean over a
        // window of T is (T+1)/2 keys, times D (= H·64) for scores and again for values.
        let fwd_macs = l * (12.0 * d * d + d * (t + 1.0)) + d * v;
        // Backward performs two products per forward product (input and weight gradients).
        let exact = 2.0 * 3.0 * fwd_macs;
        Flops {
            kaplan,
            standard,
            attention,
            exact,
        }
    }

    /// The figure for one convention.
    pub fn get(&self, c: FlopConvention) -> f64 {
        match c {
            FlopConvention::Kaplan => self.kaplan,
            FlopConvention::Standard => self.standard,
            FlopConvention::Attention => self.attention,
            FlopConvention::Exact => self.exact,
        }
    }

    /// Each convention with its figure, in the documented (export) order of [`FlopConvention::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (FlopConvention, f64)> + '_ {
        FlopConvention::ALL.into_iter().map(|c| (c, self.get(c)))
    }

    /// The figure of every convention times `k` (e.g. per-token FLOPs × tokens).
    pub fn scale(&self, k: f64) -> Flops {
        Flops {
            kaplan: self.kaplan * k,
            standard: self.standard * k,
            attention: self.attention * k,
            exact: self.exact * k,
        }
    }
}

impl std::ops::Mul<f64> for Flops {
    type Output = Flops;
    fn mul(self, k: f64) -> Flops {
        self.scale(k)
    }
}

/// Training tokens for a token multiplier `m` (tokens per parameter N); `m = 20` is Chinchilla-optimal.
pub fn token_budget(cfg: &ModelConfig, m: f64) -> f64 {
    m * ParamCounts::of(cfg).n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    // Hand-computed for D=512, L=8, T=512, V=32101:
    // per block 12·512² + 2·512 + 128 = 3,145,728 + 1,152 = 3,146,880; ×8 = 25,175,040; + final norm 512.
    #[test]
    fn counts_d512_l8() {
        let c = ModelConfig::new(512, 8);
        let p = ParamCounts::of(&c);
        assert_eq!(p.embedding, 16_435_712);
        assert_eq!(p.head, 16_435_712);
        assert_eq!(p.non_embedding, 25_175_552);
        assert_eq!(p.total, 25_175_552 + 2 * 16_435_712);
        assert_eq!(p.n, 25_175_552 + 16_435_712);
        assert_eq!(p.approx, 25_165_824 + 16_435_712);
        let f = FlopsPerToken::of(&c);
        assert_eq!(f.kaplan, 6.0 * 25_175_552.0);
        assert_eq!(f.standard, 6.0 * 41_611_264.0);
        assert_eq!(f.attention, 6.0 * 41_611_264.0 + 6.0 * 8.0 * 512.0 * 512.0);
        // exact: 6·(8·(12·512² + 512·513) + 512·32101) = 6·(8·3,408,384 + 16,435,712) = 6·43,702,784
        assert_eq!(f.exact, 6.0 * 43_702_784.0);
        assert_eq!(
            token_budget(&c, CHINCHILLA_TOKENS_PER_PARAM),
            20.0 * 41_611_264.0
        );
    }

    #[test]
    fn counts_match_layout() {
        let c = ModelConfig {
            d_model: 192,
            n_layers: 3,
            seq_len: 64,
            vocab_size: 777,
        };
        let layout = crate::model::params::ParamLayout::new(&c);
        assert_eq!(ParamCounts::of(&c).total, layout.total as u64);
    }

    #[test]
    fn flops_iterate_in_export_order_and_scale() {
        let f = Flops {
            kaplan: 1.0,
            standard: 2.0,
            attention: 3.0,
            exact: 4.0,
        };
        let names: Vec<&str> = f.iter().map(|(c, _)| c.name()).collect();
        assert_eq!(names, ["kaplan", "standard", "attention", "exact"]);
        for (c, x) in f.iter() {
            assert_eq!(x, f.get(c));
        }
        let g = f * 10.0;
        assert_eq!(
            g.iter().map(|(_, x)| x).collect::<Vec<_>>(),
            [10.0, 20.0, 30.0, 40.0]
        );
        assert_eq!(g, f.scale(10.0));
    }

    #[test]
    fn convention_names_round_trip() {
        for c in FlopConvention::ALL {
            assert_eq!(FlopConvention::from_name(c.name()), Some(c));
        }
    }
}

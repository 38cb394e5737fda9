//! The model contract's shape parameters: width, depth, context and vocabulary.

use serde::{Deserialize, Serialize};

/// Every attention head is 64 wide; the number of heads follows from the width.
pub const HEAD_DIM: usize = 64;
/// Default context length (NanoDO's).
pub const DEFAULT_SEQ_LEN: usize = 512;
/// Vocabulary of T5's C4 SentencePiece model (32000 pieces + `<s>` + 100 extra ids).
pub const DEFAULT_VOCAB: usize = 32101;
/// Padding id: targets equal to it are masked out of the loss.
pub const PAD_ID: u16 = 0;
/// End-of-sequence id.
pub const EOS_ID: u16 = 1;
/// Beginning-of-sequence id.
pub const BOS_ID: u16 = 2;
/// Epsilon of every LayerNorm (the block norms, the final norm and QK-Norm).
pub const LN_EPS: f32 = 1e-6;
/// Base of the rotary position embedding frequencies.
pub const ROPE_BASE: f32 = 10000.0;

/// Shape of one model of the family. `n_heads = d_model / 64`, `d_ff = 4 * d_model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Width D (a multiple of 64).
    pub d_model: usize,
    /// Depth L (number of blocks).
    pub n_layers: usize,
    /// Context length T.
    pub seq_len: usize,
    /// Vocabulary size V.
    pub vocab_size: usize,
}

/// A model configuration that breaks the contract.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Width is not a positive multiple of the head dimension.
    #[error("--d-model must be a positive multiple of 64 (the head dimension), got {0}")]
    Width(usize),
    /// Depth is zero.
    #[error("--n-layers must be at least 1")]
    Depth,
    /// Context too short.
    #[error("--seq-len must be at least 2, got {0}")]
    SeqLen(usize),
    /// Vocabulary must fit u16 ids and contain the special ids.
    #[error("--vocab-size must be between 4 and 65536 (tokens are stored as u16), got {0}")]
    Vocab(usize),
}

impl ModelConfig {
    /// A model of width `d_model` and depth `n_layers` with the default context and vocabulary.
    pub fn new(d_model: usize, n_layers: usize) -> Self {
        ModelConfig {
            d_model,
            n_layers,
            seq_len: DEFAULT_SEQ_LEN,
            vocab_size: DEFAULT_VOCAB,
        }
    }

    /// Number of heads H = D / 64.
    pub fn n_heads(&self) -> usize {
        self.d_model / HEAD_DIM
    }

    /// MLP hidden width F = 4D.
    pub fn d_ff(&self) -> usize {
        4 * self.d_model
    }

    /// Check the contract's constraints.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.d_model == 0 || !self.d_model.is_multiple_of(HEAD_DIM) {
            return Err(ConfigError::Width(self.d_model));
        }
        if self.n_layers == 0 {
            return Err(ConfigError::Depth);
        }
        if self.seq_len < 2 {
            return Err(ConfigError::SeqLen(self.seq_len));
        }
        if !(4..=65536).contains(&self.vocab_size) {
            return Err(ConfigError::Vocab(self.vocab_size));
        }
        Ok(())
    }
}

/// Named shapes for quick use: `tiny` trains in about a minute on 2 CPU cores.
pub fn preset(name: &str) -> Option<ModelConfig> {
    let (d, l, t) = match name {
        "tiny" => (64, 2, 128),
        "small" => (128, 4, 256),
        "d256" => (256, 4, 512),
        "d512" => (512, 8, 512),
        "d1024" => (1024, 16, 512),
        "d2048" => (2048, 24, 512),
        _ => return None,
    };
    Some(ModelConfig {
        d_model: d,
        n_layers: l,
        seq_len: t,
        vocab_size: DEFAULT_VOCAB,
    })
}

/// Names accepted by [`preset`].
pub const PRESETS: &[&str] = &["tiny", "small", "d256", "d512", "d1024", "d2048"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_ff_follow_width() {
        let c = ModelConfig::new(512, 8);
        assert_eq!(c.n_heads(), 8);
        assert_eq!(c.d_ff(), 2048);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_configs_are_refused() {
        assert_eq!(
            ModelConfig::new(100, 2).validate(),
            Err(ConfigError::Width(100))
        );
        assert_eq!(ModelConfig::new(64, 0).validate(), Err(ConfigError::Depth));
        let mut c = ModelConfig::new(64, 1);
        c.vocab_size = 70000;
        assert_eq!(c.validate(), Err(ConfigError::Vocab(70000)));
    }

    #[test]
    fn presets_are_valid() {
        for p in PRESETS {
            preset(p).unwrap().validate().unwrap();
        }
        assert!(preset("nope").is_none());
    }
}

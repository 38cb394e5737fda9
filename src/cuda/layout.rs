//! The CUDA backend's parameter layout: the model contract's ([`ParamLayout`]) with the rows of the head
//! padded from V to Vp columns, a multiple of [`VOCAB_ALIGN`].
//!
//! Why: with V = 32101 the rows of the head weight `[D, V]`, of the logits and of their gradient start
//! at odd element offsets, and cuBLASLt's fast Hopper kernels need 16-byte aligned rows, so the three head
//! products (the largest matmuls of a small model) would fall back to slower unaligned kernels. llm.c pads
//! its vocabulary for the same reason.
//!
//! The padding columns hold 0 in the weights, moments and gradients: their logits are 0, the softmax skips
//! them (`kernels/cross_entropy.cu`), their gradient is 0, and AdamW keeps a zero weight with zero moments
//! at 0, so the model trained is exactly the contract's. The head is the last tensor of the contract
//! layout, so every other offset is unchanged; only the conversions to and from the contract layout
//! (checkpoints, `read_*`/`write_*` of the backend) copy the head row by row, and reading back checks that
//! the padding is still 0.

use crate::model::{ModelConfig, ParamLayout};

/// The head's row length on the device is a multiple of this (elements): 256 bytes of bf16.
pub const VOCAB_ALIGN: usize = 128;

/// `v` rounded up to a multiple of [`VOCAB_ALIGN`] (32101 → 32128).
pub fn padded_vocab(v: usize) -> usize {
    v.div_ceil(VOCAB_ALIGN) * VOCAB_ALIGN
}

/// The device layout of one model and its conversions from and to the contract layout.
#[derive(Clone, Debug)]
pub struct DeviceLayout {
    /// The device layout: the contract's, with the head's shape `[D, Vp]`.
    pub params: ParamLayout,
    /// Elements of the contract layout.
    pub contract_total: usize,
    /// Model width D (rows of the head).
    pub d: usize,
    /// Vocabulary V.
    pub v: usize,
    /// Padded vocabulary Vp (row length of the head, the logits and their gradient on the device).
    pub vp: usize,
}

impl DeviceLayout {
    /// The device layout of `cfg` (which must be valid).
    pub fn new(cfg: &ModelConfig) -> DeviceLayout {
        let contract = ParamLayout::new(cfg);
        let (d, v) = (cfg.d_model, cfg.vocab_size);
        let vp = padded_vocab(v);
        let contract_total = contract.total;
        let mut params = contract;
        let head = params
            .tensors
            .last_mut()
            .filter(|t| t.name == "head" && t.offset == params.head)
            .expect("the head is the last tensor of the contract layout");
        head.shape = vec![d, vp];
        params.total = params.head + d * vp;
        DeviceLayout {
            params,
            contract_total,
            d,
            v,
            vp,
        }
    }

    /// Elements of the device layout.
    pub fn total(&self) -> usize {
        self.params.total
    }

    /// A contract-layout buffer in the device layout (padding columns 0). `x.len()` must be
    /// [`DeviceLayout::contract_total`].
    pub fn pad(&self, x: &[f32]) -> Vec<f32> {
        let head = self.params.head;
        let mut out = vec![0f32; self.total()];
        out[..head].copy_from_slice(&x[..head]);
        for r in 0..self.d {
            let (src, dst) = (head + r * self.v, head + r * self.vp);
            out[dst..dst + self.v].copy_from_slice(&x[src..src + self.v]);
        }
        out
    }

    /// A device-layout buffer in the contract layout. Errors (naming `what` and the first offending
    /// element) when a padding column is not 0 (NaN included), which would mean the device computed a different
    /// model than the contract's. `x.len()` must be [`DeviceLayout::total`].
    pub fn unpad(&self, x: &[f32], what: &str) -> Result<Vec<f32>, String> {
        let head = self.params.head;
        let mut out = Vec::with_capacity(self.contract_total);
        out.extend_from_slice(&x[..head]);
        for r in 0..self.d {
            let row = &x[head + r * self.vp..head + (r + 1) * self.vp];
            out.extend_from_slice(&row[..self.v]);
            if let Some(j) = row[self.v..].iter().position(|&p| p != 0.0) {
                return Err(format!(
                    "{what}: padding column {} of head row {r} is {} instead of 0 (internal error)",
                    self.v + j,
                    row[self.v + j]
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::preset;

    #[test]
    fn padded_vocab_rounds_up_to_128() {
        assert_eq!(padded_vocab(32101), 32128);
        assert_eq!(padded_vocab(128), 128);
        assert_eq!(padded_vocab(129), 256);
    }

    #[test]
    fn pad_and_unpad_round_trip_and_keep_other_offsets() {
        let mut cfg = preset("tiny").unwrap();
        cfg.vocab_size = 300; // small enough to check element by element
        let lay = DeviceLayout::new(&cfg);
        let contract = ParamLayout::new(&cfg);
        assert_eq!(lay.vp, 384);
        assert_eq!(lay.params.head, contract.head);
        assert_eq!(lay.total(), contract.head + cfg.d_model * 384);
        assert_eq!(lay.params.get("head").unwrap().numel(), cfg.d_model * 384);
        let x: Vec<f32> = (0..contract.total).map(|i| i as f32 + 1.0).collect();
        let p = lay.pad(&x);
        assert_eq!(p.len(), lay.total());
        // Head element (r, c) of the contract sits at head + r·Vp + c on the device.
        let (r, c) = (3, 299);
        assert_eq!(
            p[lay.params.head + r * 384 + c],
            x[contract.head + r * 300 + c]
        );
        assert_eq!(p[lay.params.head + r * 384 + 300], 0.0);
        assert_eq!(lay.unpad(&p, "test").unwrap(), x);
    }

    #[test]
    fn unpad_refuses_a_nonzero_padding_column() {
        let mut cfg = preset("tiny").unwrap();
        cfg.vocab_size = 300;
        let lay = DeviceLayout::new(&cfg);
        let mut p = lay.pad(&vec![0.5; lay.contract_total]);
        p[lay.params.head + 2 * lay.vp + 310] = 1e-30;
        let e = lay.unpad(&p, "read_params").unwrap_err();
        assert!(
            e.contains("read_params") && e.contains("column 310 of head row 2"),
            "{e}"
        );
    }
}

//! The CPU reference backend (f32): forward and backward of every op of the model contract.
//!
//! [`ops`] holds one file per op (the oracle the CUDA kernels are tested against); [`CpuBackend`]
//! composes them into the whole model behind the [`crate::backend::Backend`] trait.

mod activations;
pub mod backend;
mod model;
pub mod ops;

pub use backend::{cpu_threads, CpuBackend};

/// Bytes of host memory the CPU backend needs for `cfg` (with `n_params` parameters) at micro-batch `b`:
/// f32 parameters, gradients and both AdamW moments, the copies a checkpoint reads out (parameters and
/// moments), and the activations.
pub fn memory_bytes(cfg: &crate::model::ModelConfig, n_params: usize, b: usize) -> usize {
    (n_params * 4 * (4 + 3)).saturating_add(activations::Activations::bytes(cfg, b))
}

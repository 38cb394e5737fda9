//! The CPU reference backend (f32): forward and backward of every op of the model contract.
//!
//! [`ops`] holds one file per op (the oracle the CUDA kernels are tested against); [`CpuBackend`]
//! composes them into the whole model behind the [`crate::backend::Backend`] trait.

mod activations;
pub mod backend;
mod model;
pub mod ops;

pub use backend::{cpu_threads, CpuBackend};

//! The model contract: shapes, parameter layout and initialisation, and FLOP/parameter accounting.
//!
//! The math itself (forward and backward of every op) lives in the CPU reference backend, `crate::cpu`,
//! which every other backend is tested against.

pub mod accounting;
pub mod config;
pub mod params;

pub use accounting::{FlopConvention, Flops, FlopsPerToken, ParamCounts};
pub use config::{ModelConfig, HEAD_DIM};
pub use params::{init_params, ParamLayout, TensorKind, TensorSpec};

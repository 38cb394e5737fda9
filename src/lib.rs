//! isoflop: a trainer for NanoDO-style decoder-only language models, built for scaling-law research.
//!
//! Layout: [`model`] is the math contract and accounting; [`cpu`] the f32 reference backend (the oracle);
//! [`cuda`] the GPU backend; [`data`] token sources; [`train`] the training loop; [`fit`] scaling-law fits.
#![allow(non_snake_case)] // tensor names carry their shapes, NanoDO style: x_BTxD, att_BxHxTxT
#![warn(missing_docs)]

pub mod backend;
pub mod bench;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod device;
pub mod error;
pub mod fit;
pub mod model;
pub mod sweep;
pub mod train;

/// sha256 (hex) over every CUDA kernel source compiled into this binary (sources and headers embedded
/// with `include_str!`), in file-name order: each file's name, then its bytes.
pub fn kernel_sources_sha256() -> String {
    cuda::nvrtc::sources_sha256()
}

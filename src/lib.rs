//! isoflop: a trainer for NanoDO-style decoder-only language models, built for scaling-law research.
//!
//! Layout: [`model`] is the math contract and accounting; [`cpu`] the f32 reference backend (the oracle);
//! `cuda` the GPU backend; [`data`] token sources; [`train`] the training loop; [`fit`] scaling-law fits.
#![allow(non_snake_case)] // tensor names carry their shapes, NanoDO style: x_BTxD, att_BxHxTxT
#![warn(missing_docs)]

pub mod backend;
pub mod bench;
pub mod cpu;
pub mod data;
pub mod device;
pub mod fit;
pub mod model;
pub mod sweep;
pub mod train;

/// sha256 (hex) over every CUDA kernel source compiled into this binary, in file-name order.
pub fn kernel_sources_sha256() -> String {
    use sha2::{Digest, Sha256};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        if let Ok(b) = std::fs::read(&f) {
            h.update(
                f.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            h.update(&b);
        }
    }
    format!("{:x}", h.finalize())
}

//! Tests of the scaling-law fitter: published data, synthetic laws with known parameters, and the `fit`,
//! `compare` and `predict` commands through the binary. One test binary (`cargo test --release --test fit`);
//! each file is a module, [`util`] their shared synthetic data.

// Shared by several test binaries, each of which uses only part of it.
#[allow(dead_code)]
#[path = "../common/cli.rs"]
mod cli;
mod fit_chinchilla;
mod fit_cli;
mod fit_synthetic;
mod util;

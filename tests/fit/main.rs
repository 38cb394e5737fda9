//! Tests of the scaling-law fitter: published data, synthetic laws with known parameters, and the `fit`,
//! `compare` and `predict` commands through the binary. One test binary (`cargo test --release --test fit`);
//! each file is a module, [`util`] their shared synthetic data.

mod fit_chinchilla;
mod fit_cli;
mod fit_synthetic;
mod util;

//! End-to-end tests of `isoflop sweep` through the binary: plans, runs, status, export, Slurm, and the
//! micro sweeps that train real models and fit them. One test binary (`cargo test --release --test sweep`),
//! so its slow tests run side by side; each file is a module.

// Shared by several test binaries, each of which uses only part of it.
#[allow(dead_code)]
#[path = "../common/cli.rs"]
mod cli;
mod sweep_cli;
mod sweep_micro;

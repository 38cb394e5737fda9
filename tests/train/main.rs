//! End-to-end tests of `isoflop train` and `isoflop bench` through the binary, on the CPU. One test binary
//! (`cargo test --release --test train`); each file is a module.

mod bench_cli;
mod train_run;

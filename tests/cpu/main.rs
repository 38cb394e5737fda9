//! Tests of the CPU reference backend: its ops against naive references and finite differences, and the
//! whole model's step. One test binary (`cargo test --release --test cpu`); each file is a module.

mod cpu_model;
mod cpu_ops;

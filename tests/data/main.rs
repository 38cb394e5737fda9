//! Tests of the data pipeline: tokenizer, shards, loader, the bundled sample, bad input, and the `data`
//! commands through the binary. One test binary (`cargo test --release --test data`); each file is a module.

// Shared by several test binaries, each of which uses only part of it.
#[allow(dead_code)]
#[path = "../common/cli.rs"]
mod cli;
mod data_bad_input;
mod data_cli;
mod data_pipeline;
mod data_sample;
mod data_tokenizer;

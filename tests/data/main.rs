//! Tests of the data pipeline: tokenizer, shards, loader, the bundled sample, bad input, and the `data`
//! commands through the binary. One test binary (`cargo test --release --test data`); each file is a module.

mod data_bad_input;
mod data_cli;
mod data_pipeline;
mod data_sample;
mod data_tokenizer;

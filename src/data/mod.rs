//! Token data: the source interface the trainer reads, and the sources behind it.
//!
//! The C4 path: [`input`] reads C4 release files / jsonl / txt, [`tokenizer`] is a pure-Rust
//! SentencePiece Unigram encoder, [`tokenize`] writes [`shard`] files, [`loader`] serves packed windows
//! from memory-mapped shards, [`sample`] tokenizes the bundled sample on first use.

pub mod error;
pub mod input;
pub mod loader;
mod normalizer;
mod piece_trie;
mod protobuf;
pub mod sample;
pub mod shard;
pub mod source;
pub mod synthetic;
pub mod task;
pub mod tokenize;
pub mod tokenizer;

pub use error::DataError;
pub use loader::{ShardLoader, Split};
pub use sample::bundled_sample_shards;
pub use source::{SourceError, TokenSource};
pub use synthetic::SyntheticSource;
pub use tokenizer::Tokenizer;

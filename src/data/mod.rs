//! Token data: the source interface the trainer reads, and the sources behind it.
//!
//! The C4 path: [`input`] reads C4 release files / jsonl / txt, [`tokenizer`] is a pure-Rust
//! SentencePiece Unigram encoder, [`tokenize`] writes [`shard`] files, [`loader`] serves packed windows
//! from memory-mapped shards, [`sample`] tokenizes the bundled sample on first use. [`bytes`] is the
//! byte-level tokenizer; [`text_tokenizer`] puts both behind one interface and maps a shard's recorded
//! tokenizer identity back to its tokenizer.

pub mod bytes;
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
pub mod text_tokenizer;
pub mod tokenize;
pub mod tokenizer;

pub use error::DataError;
pub use loader::{ShardLoader, Split};
pub use sample::{bundled_sample_shards, bundled_shards, BundledCorpus};
pub use source::{SourceError, TokenSource};
pub use synthetic::SyntheticSource;
pub use text_tokenizer::{
    describe_identity, tokenizer_for_identity, tokenizer_for_identity_hex, AnyTokenizer,
    DocumentEncoder, TokenizerKind,
};
pub use tokenizer::Tokenizer;

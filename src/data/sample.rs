//! The bundled data, tokenized on first use into a cache directory and reused afterwards: the sample
//! (the King James Bible in C4's file format, `data/sample/`) and the books corpus (the sample plus
//! the public-domain dictionaries of `data/books/`), with either tokenizer.

use super::error::DataError;
use super::text_tokenizer::{DocumentEncoder, TokenizerKind};
use super::tokenize::{tokenize_files, TokenizeOptions};
use super::tokenizer::{hex, BUNDLED_MODEL};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// File names of the sample, train file first.
pub const SAMPLE_FILES: [&str; 2] = [
    "c4-train.00000-of-00001.json.gz",
    "c4-validation.00000-of-00001.json.gz",
];
static EMBEDDED: [&[u8]; 2] = [
    include_bytes!("../../data/sample/c4-train.00000-of-00001.json.gz"),
    include_bytes!("../../data/sample/c4-validation.00000-of-00001.json.gz"),
];
/// File names of the books added to the sample by [`BundledCorpus::Books`], train file first.
pub const BOOKS_FILES: [&str; 2] = ["books-train.json.gz", "books-validation.json.gz"];
static EMBEDDED_BOOKS: [&[u8]; 2] = [
    include_bytes!("../../data/books/books-train.json.gz"),
    include_bytes!("../../data/books/books-validation.json.gz"),
];

/// Which bundled text to train on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundledCorpus {
    /// The King James Bible (`data/sample/`): 4.3 MB of text.
    Sample,
    /// The sample plus The Devil's Dictionary and the Jargon File (`data/books/`): 5.9 MB of text.
    Books,
}

/// The sample's folder in the source checkout (`<crate>/data/sample`).
pub fn sample_source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("sample")
}

/// The sample files' bytes: from the checkout when it is there, else the copies built into the binary.
fn sample_bytes() -> Vec<Vec<u8>> {
    let dir = sample_source_dir();
    SAMPLE_FILES
        .iter()
        .zip(EMBEDDED)
        .map(|(name, embedded)| std::fs::read(dir.join(name)).unwrap_or_else(|_| embedded.to_vec()))
        .collect()
}

/// The books files' bytes (`data/books/`), from the checkout or the binary as [`sample_bytes`].
fn books_bytes() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("books");
    BOOKS_FILES
        .iter()
        .zip(EMBEDDED_BOOKS)
        .map(|(name, embedded)| std::fs::read(dir.join(name)).unwrap_or_else(|_| embedded.to_vec()))
        .collect()
}

/// isoflop's cache root: `$ISOFLOP_CACHE`, else `$XDG_CACHE_HOME/isoflop`, else `~/.cache/isoflop`.
pub fn cache_root() -> Result<PathBuf, DataError> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("ISOFLOP_CACHE") {
        return Ok(p);
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        return Ok(p.join("isoflop"));
    }
    var("HOME")
        .map(|h| h.join(".cache").join("isoflop"))
        .ok_or_else(|| {
            DataError::Invalid(
                "no cache directory: set ISOFLOP_CACHE (or XDG_CACHE_HOME or HOME)".into(),
            )
        })
}

/// Directory of the bundled sample's shards (`c4-train.00000-of-00001.tok` and the validation
/// shard) made with the C4 SentencePiece model, tokenizing it on first use.
pub fn bundled_sample_shards() -> Result<PathBuf, DataError> {
    bundled_shards(BundledCorpus::Sample, TokenizerKind::SentencePiece)
}

/// Directory of the shards of `corpus` made with `tokenizer` (one shard per file; the validation
/// files are the held-out split), tokenizing on first use. Keyed by the files' and the tokenizer's
/// hashes, so each tokenizer has its own cache entry.
pub fn bundled_shards(
    corpus: BundledCorpus,
    tokenizer: TokenizerKind,
) -> Result<PathBuf, DataError> {
    let mut files = sample_bytes();
    let mut names: Vec<&str> = SAMPLE_FILES.to_vec();
    if corpus == BundledCorpus::Books {
        files.extend(books_bytes());
        names.extend(BOOKS_FILES);
    }
    let mut key = Sha256::new();
    for f in &files {
        key.update(Sha256::digest(f));
    }
    // The SentencePiece key is the one isoflop always used, so existing caches stay valid.
    match tokenizer {
        TokenizerKind::SentencePiece => key.update(Sha256::digest(BUNDLED_MODEL)),
        TokenizerKind::Bytes => key.update(tokenizer.sha256()),
    }
    let key = hex(&key.finalize())[..16].to_string();
    let stem = match (corpus, tokenizer) {
        (BundledCorpus::Sample, TokenizerKind::SentencePiece) => "sample-kjv".to_string(),
        (BundledCorpus::Sample, t) => format!("sample-kjv-{}", t.name()),
        (BundledCorpus::Books, t) => format!("books-{}", t.name()),
    };
    let root = cache_root()?;
    let dir = root.join(format!("{stem}-{key}"));
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root).map_err(|e| DataError::io(&root, e))?;
    let tmp = root.join(format!(".{stem}-{key}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        let src = tmp.join("src");
        std::fs::create_dir_all(&src).map_err(|e| DataError::io(&src, e))?;
        let mut inputs = Vec::new();
        for (name, bytes) in names.iter().zip(&files) {
            let p = src.join(name);
            std::fs::write(&p, bytes).map_err(|e| DataError::io(&p, e))?;
            inputs.push(p);
        }
        let shards = tmp.join("shards");
        let tok = tokenizer.load()?;
        debug_assert_eq!(tok.vocab_size(), tokenizer.vocab_size());
        tokenize_files(&inputs, &shards, &tok, &TokenizeOptions::default())?;
        let done = shards.join(".complete");
        std::fs::write(&done, b"").map_err(|e| DataError::io(&done, e))?;
        match std::fs::rename(&shards, &dir) {
            Ok(()) => Ok(()),
            // Another process finished first.
            Err(_) if dir.join(".complete").exists() => Ok(()),
            Err(e) => Err(DataError::io(&dir, e)),
        }
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| dir)
}

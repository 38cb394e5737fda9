//! The bundled sample (the King James Bible in C4's file format, `data/sample/`), tokenized on first
//! use into a cache directory and reused afterwards.

use super::error::DataError;
use super::tokenize::{tokenize_files, TokenizeOptions};
use super::tokenizer::{hex, Tokenizer, BUNDLED_MODEL};
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
/// shard), tokenizing it on first use. Keyed by the sample's and the tokenizer's hashes.
pub fn bundled_sample_shards() -> Result<PathBuf, DataError> {
    let files = sample_bytes();
    let mut key = Sha256::new();
    for f in &files {
        key.update(Sha256::digest(f));
    }
    key.update(Sha256::digest(BUNDLED_MODEL));
    let key = hex(&key.finalize())[..16].to_string();
    let root = cache_root()?;
    let dir = root.join(format!("sample-kjv-{key}"));
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root).map_err(|e| DataError::io(&root, e))?;
    let tmp = root.join(format!(".sample-kjv-{key}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        let src = tmp.join("src");
        std::fs::create_dir_all(&src).map_err(|e| DataError::io(&src, e))?;
        let mut inputs = Vec::new();
        for (name, bytes) in SAMPLE_FILES.iter().zip(&files) {
            let p = src.join(name);
            std::fs::write(&p, bytes).map_err(|e| DataError::io(&p, e))?;
            inputs.push(p);
        }
        let shards = tmp.join("shards");
        tokenize_files(
            &inputs,
            &shards,
            &Tokenizer::bundled()?,
            &TokenizeOptions::default(),
        )?;
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

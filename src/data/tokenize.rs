//! `isoflop data tokenize`: input files in, one shard per input out, on all cores. A re-run skips shards
//! that are already finished (shards appear only complete, by rename).

use super::error::DataError;
use super::input::{DocumentReader, InputFile};
use super::shard::{
    remove_stale_temporaries, Shard, ShardHeader, ShardWriter, SpecialIds, SHARD_EXT,
};
use super::text_tokenizer::{describe_identity, DocumentEncoder};
use crate::model::config::{BOS_ID, EOS_ID, PAD_ID};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Instant;

/// Options of [`tokenize_files`].
#[derive(Clone, Debug)]
pub struct TokenizeOptions {
    /// For `.txt` inputs: every blank-line-separated block is a document (else the whole file).
    pub txt_blocks: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Bytes of text per batch handed to the worker threads.
    pub batch_bytes: usize,
}

impl Default for TokenizeOptions {
    fn default() -> Self {
        TokenizeOptions {
            txt_blocks: false,
            progress: false,
            batch_bytes: 4 << 20,
        }
    }
}

/// What happened to one input.
#[derive(Clone, Debug)]
pub struct ShardOutcome {
    /// The input file.
    pub input: PathBuf,
    /// The shard written (or found).
    pub shard: PathBuf,
    /// Its header.
    pub header: ShardHeader,
    /// True when a finished shard was already there and the input was skipped.
    pub skipped: bool,
}

/// Totals of a [`tokenize_files`] run.
#[derive(Clone, Debug, Default)]
pub struct TokenizeReport {
    /// One entry per input, in input order.
    pub shards: Vec<ShardOutcome>,
    /// Bytes of document text tokenized (skipped inputs not counted).
    pub text_bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Stale shard temporaries removed from the output directory before starting, with the PID of
    /// the (no longer running) process that left each.
    pub removed_temporaries: Vec<(PathBuf, u32)>,
}

/// The special ids isoflop writes into shards.
pub fn special_ids<T: DocumentEncoder + ?Sized>(tok: &T) -> SpecialIds {
    SpecialIds {
        pad: PAD_ID as u32,
        eos: EOS_ID as u32,
        bos: BOS_ID as u32,
        unk: tok.unk_id(),
    }
}

/// Shard path for an input: `<out_dir>/<stem>.tok`.
pub fn shard_path(out_dir: &Path, input: &InputFile) -> PathBuf {
    out_dir.join(format!("{}.{SHARD_EXT}", input.stem))
}

/// Tokenizes every input into `out_dir` (created if missing), one shard per input, all cores.
pub fn tokenize_files<T: DocumentEncoder + ?Sized>(
    inputs: &[PathBuf],
    out_dir: &Path,
    tok: &T,
    opts: &TokenizeOptions,
) -> Result<TokenizeReport, DataError> {
    if inputs.is_empty() {
        return Err(DataError::Invalid("no input files given".into()));
    }
    let files = inputs
        .iter()
        .map(|p| InputFile::new(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for f in &files {
        if let Some(prev) = seen.insert(&f.stem, &f.path) {
            return Err(DataError::input(
                &f.path,
                0,
                format!("same shard name {:?} as {}", f.stem, prev.display()),
            ));
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::io(out_dir, e))?;
    // A killed run leaves `<stem>.tok.<pid>.tmp` behind; nothing else would ever remove it.
    let removed_temporaries = remove_stale_temporaries(out_dir)?;
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = if opts.progress {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} of input ({eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let counters = Counters {
        compressed: Arc::new(AtomicU64::new(0)),
        text: AtomicU64::new(0),
        docs: AtomicU64::new(0),
        tokens: AtomicU64::new(0),
        start: Instant::now(),
    };
    let results: Vec<Result<ShardOutcome, DataError>> = files
        .par_iter()
        .map(|f| tokenize_one(f, out_dir, tok, opts, &counters, &bar))
        .collect();
    bar.finish_and_clear();
    let shards = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(TokenizeReport {
        shards,
        text_bytes: counters.text.load(Ordering::Relaxed),
        seconds: counters.start.elapsed().as_secs_f64(),
        removed_temporaries,
    })
}

struct Counters {
    compressed: Arc<AtomicU64>,
    text: AtomicU64,
    docs: AtomicU64,
    tokens: AtomicU64,
    start: Instant,
}

impl Counters {
    fn show(&self, bar: &ProgressBar) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let text = self.text.load(Ordering::Relaxed) as f64 / 1e6;
        bar.set_position(self.compressed.load(Ordering::Relaxed));
        bar.set_message(format!(
            "{text:.1} MB text ({:.1} MB/s), {} docs, {} tokens",
            text / secs,
            self.docs.load(Ordering::Relaxed),
            self.tokens.load(Ordering::Relaxed)
        ));
    }
}

fn tokenize_one<T: DocumentEncoder + ?Sized>(
    f: &InputFile,
    out_dir: &Path,
    tok: &T,
    opts: &TokenizeOptions,
    counters: &Counters,
    bar: &ProgressBar,
) -> Result<ShardOutcome, DataError> {
    let path = shard_path(out_dir, f);
    let source = f
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if path.exists() {
        let shard = Shard::open(&path)?;
        let h = &shard.header;
        if h.tokenizer_sha256 != tok.sha256() || h.vocab_size as usize != tok.vocab_size() {
            return Err(DataError::shard(
                &path,
                format!(
                    "already exists but was made with a different tokenizer, {} (vocab {}), not {}; remove it to re-tokenize",
                    describe_identity(&h.tokenizer_sha256),
                    h.vocab_size,
                    describe_identity(&tok.sha256())
                ),
            ));
        }
        if h.source != source {
            return Err(DataError::shard(
                &path,
                format!(
                    "already exists but was made from {:?}, not {source:?}",
                    h.source
                ),
            ));
        }
        counters.compressed.fetch_add(
            std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0),
            Ordering::Relaxed,
        );
        counters.show(bar);
        return Ok(ShardOutcome {
            input: f.path.clone(),
            shard: path,
            header: shard.header.clone(),
            skipped: true,
        });
    }
    let mut reader = DocumentReader::open(f, opts.txt_blocks, counters.compressed.clone())?;
    let mut writer = ShardWriter::create(
        &path,
        tok.vocab_size() as u32,
        special_ids(tok),
        tok.sha256(),
        &source,
    )?;
    let special = special_ids(tok);
    // A reader thread decompresses and parses the next batch while the pool tokenizes this one.
    let (tx, rx) = sync_channel::<Result<Vec<String>, DataError>>(2);
    let batch_bytes = opts.batch_bytes.max(1);
    std::thread::scope(|scope| -> Result<(), DataError> {
        // Owned here so that an early return drops it and unblocks the reader thread.
        let rx = rx;
        scope.spawn(move || loop {
            let batch = reader.next_batch(batch_bytes);
            let stop = !matches!(&batch, Ok(b) if !b.is_empty());
            if tx.send(batch).is_err() || stop {
                break;
            }
        });
        for batch in rx.iter() {
            let docs = batch?;
            if docs.is_empty() {
                break;
            }
            let bytes: usize = docs.iter().map(String::len).sum();
            let encoded: Vec<Vec<u16>> = docs
                .par_iter()
                .with_min_len(8)
                .map(|d| {
                    let mut v = Vec::with_capacity(d.len() / 3 + 2);
                    tok.encode_document_u16(d, special.bos as u16, special.eos as u16, &mut v);
                    v
                })
                .collect();
            let mut ntok = 0;
            for doc in &encoded {
                writer.push_document(doc)?;
                ntok += doc.len() as u64;
            }
            counters.text.fetch_add(bytes as u64, Ordering::Relaxed);
            counters
                .docs
                .fetch_add(docs.len() as u64, Ordering::Relaxed);
            counters.tokens.fetch_add(ntok, Ordering::Relaxed);
            counters.show(bar);
        }
        Ok(())
    })?;
    let header = writer.finish()?;
    Ok(ShardOutcome {
        input: f.path.clone(),
        shard: path,
        header,
        skipped: false,
    })
}

//! `isoflop data`: tokenize C4 files into shards, inspect and verify shards.

use anyhow::Context;
use isoflop::data::shard::{check_same_tokenizer, list_shards, remove_stale_temporaries, Shard};
use isoflop::data::tokenize::{tokenize_files, TokenizeOptions};
use isoflop::data::tokenizer::{hex, Tokenizer};
use isoflop::data::{
    bundled_shards, describe_identity, tokenizer_for_identity, AnyTokenizer, BundledCorpus,
    TokenizerKind,
};
use rayon::prelude::*;
use std::path::PathBuf;

/// Arguments of `isoflop data`.
#[derive(clap::Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(clap::Subcommand, Debug)]
enum DataCommand {
    /// Tokenize C4 release files (.json.gz), .jsonl or .txt into shards, one per input, on all cores.
    /// A re-run skips shards that are already finished.
    Tokenize {
        /// Input files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output directory for the shards.
        #[arg(long)]
        out: PathBuf,
        /// For .txt inputs: every blank-line-separated block is a document (default: the whole file).
        #[arg(long)]
        txt_blocks: bool,
        /// `bytes` (byte-level, V 260), `sentencepiece` (the bundled C4 model, the default) or a
        /// SentencePiece .model file (the trainer only accepts the first two).
        #[arg(long)]
        tokenizer: Option<String>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Print a shard's header and decode its first documents.
    Inspect {
        /// The shard file.
        shard: PathBuf,
        /// How many documents to decode.
        #[arg(long, default_value_t = 1)]
        docs: usize,
    },
    /// Check every shard in a directory: checksum, document index, token range and special ids, and
    /// that all shards share one vocabulary and tokenizer.
    Verify {
        /// Directory of shards.
        dir: PathBuf,
    },
    /// Tokenize the bundled sample (if not cached) and print its shard directory.
    Sample {
        /// `sentencepiece` (default) or `bytes`.
        #[arg(long, default_value = "sentencepiece")]
        tokenizer: String,
        /// Also the public-domain books of data/books (the `books` data of train and sweeps).
        #[arg(long)]
        books: bool,
    },
    /// Downstream task files: `data task convert` turns a benchmark's released file into a task file.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
}

#[derive(clap::Subcommand, Debug)]
enum TaskCommand {
    /// Convert HellaSwag, ARC, PIQA or LAMBADA files into an `isoflop eval --task` file (jsonl).
    Convert {
        /// The benchmark's format.
        #[arg(long, value_enum)]
        format: isoflop::data::task::SourceFormat,
        /// The benchmark file (e.g. hellaswag_val.jsonl, ARC-Easy-Test.jsonl, valid.jsonl, lambada_test.jsonl).
        input: PathBuf,
        /// PIQA only: its labels file (e.g. valid-labels.lst).
        labels: Option<PathBuf>,
        /// The task file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Run `isoflop data`.
pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Task {
            command:
                TaskCommand::Convert {
                    format,
                    input,
                    labels,
                    out,
                },
        } => {
            use isoflop::data::task::{convert, write_task};
            let items = convert(format, &input, labels.as_deref())?;
            write_task(&items, &out)?;
            println!(
                "{}: {} items from {} ({format:?})",
                out.display(),
                items.len(),
                input.display()
            );
            Ok(())
        }
        DataCommand::Tokenize {
            inputs,
            out,
            txt_blocks,
            tokenizer,
            threads,
            quiet,
        } => {
            let tok = match tokenizer.as_deref() {
                None => TokenizerKind::SentencePiece.load()?,
                Some(t) => match TokenizerKind::parse(t) {
                    Some(kind) => kind.load()?,
                    None => AnyTokenizer::SentencePiece(Box::new(Tokenizer::from_file(
                        std::path::Path::new(t),
                    )?)),
                },
            };
            let opts = TokenizeOptions {
                txt_blocks,
                progress: !quiet,
                ..Default::default()
            };
            // Also done inside tokenize_files; here first so the removals are reported even if
            // tokenizing fails later.
            let mut removed = remove_stale_temporaries(&out)?;
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads.unwrap_or(0))
                .build()
                .context("cannot start worker threads")?;
            let report = pool.install(|| tokenize_files(&inputs, &out, &tok, &opts))?;
            removed.extend(report.removed_temporaries.iter().cloned());
            for (p, pid) in &removed {
                println!(
                    "removed stale temporary {} (left by process {pid}, which no longer runs)",
                    p.display()
                );
            }
            let (mut made, mut skipped, mut tokens, mut docs) = (0, 0, 0u64, 0u64);
            for s in &report.shards {
                if s.skipped {
                    skipped += 1;
                } else {
                    made += 1;
                }
                tokens += s.header.token_count;
                docs += s.header.doc_count;
            }
            println!(
                "{made} shards written, {skipped} already done, in {}: {docs} documents, {tokens} tokens; \
                 {:.1} MB of text in {:.1} s ({:.1} MB/s)",
                out.display(),
                report.text_bytes as f64 / 1e6,
                report.seconds,
                report.text_bytes as f64 / 1e6 / report.seconds.max(1e-9)
            );
            Ok(())
        }
        DataCommand::Inspect { shard, docs } => {
            let s = Shard::open(&shard)?;
            let h = &s.header;
            println!("shard            {}", shard.display());
            println!("format version   {}", h.version);
            println!("token dtype      u16");
            println!("vocab size       {}", h.vocab_size);
            println!(
                "special ids      pad {} eos {} bos {} unk {}",
                h.special.pad, h.special.eos, h.special.bos, h.special.unk
            );
            println!("tokens           {}", h.token_count);
            println!("documents        {}", h.doc_count);
            println!(
                "tokenizer sha256 {} ({})",
                hex(&h.tokenizer_sha256),
                describe_identity(&h.tokenizer_sha256)
            );
            println!("payload sha256   {}", hex(&h.checksum));
            println!("source           {}", h.source);
            let tok = tokenizer_for_identity(&h.tokenizer_sha256).ok();
            for i in 0..docs.min(h.doc_count as usize) {
                let d = s
                    .document(i)
                    .with_context(|| format!("{}: bad document index", shard.display()))?;
                let ids: Vec<u32> = d.iter().map(|&t| u32::from(t)).collect();
                println!(
                    "\ndocument {i}: {} tokens; first ids {:?}",
                    ids.len(),
                    &ids[..ids.len().min(16)]
                );
                if let Some(tok) = &tok {
                    println!("{}", tok.decode(&ids));
                } else {
                    println!("(made with another tokenizer: not decoded)");
                }
            }
            Ok(())
        }
        DataCommand::Verify { dir } => {
            let paths = list_shards(&dir)?;
            anyhow::ensure!(
                !paths.is_empty(),
                "{}: no token shards (*.tok)",
                dir.display()
            );
            let results: Vec<_> = paths
                .par_iter()
                .map(|p| Shard::open(p).and_then(|s| s.verify().map(|()| s.header.clone())))
                .collect();
            let mut bad = 0;
            let (mut tokens, mut docs) = (0u64, 0u64);
            let mut good = Vec::new();
            for (p, r) in paths.iter().zip(results) {
                match r {
                    Ok(h) => {
                        tokens += h.token_count;
                        docs += h.doc_count;
                        println!(
                            "ok   {} ({} tokens, {} documents)",
                            p.display(),
                            h.token_count,
                            h.doc_count
                        );
                        good.push((p.clone(), h));
                    }
                    Err(e) => {
                        bad += 1;
                        println!("FAIL {e}");
                    }
                }
            }
            // Each shard may be fine on its own, yet the trainer reads the directory as one stream.
            let mixed = check_same_tokenizer(&good).err();
            if let Some(e) = &mixed {
                println!("FAIL {e}");
            }
            anyhow::ensure!(
                bad == 0,
                "{bad} of {} shards failed verification{}",
                paths.len(),
                if mixed.is_some() {
                    "; the others disagree on vocabulary or tokenizer"
                } else {
                    ""
                }
            );
            if let Some(e) = mixed {
                return Err(e.into());
            }
            println!(
                "{} shards verified: {docs} documents, {tokens} tokens",
                paths.len()
            );
            Ok(())
        }
        DataCommand::Sample { tokenizer, books } => {
            let kind = TokenizerKind::parse(&tokenizer).with_context(|| {
                format!("--tokenizer {tokenizer:?}: expected `sentencepiece` or `bytes`")
            })?;
            let corpus = if books {
                BundledCorpus::Books
            } else {
                BundledCorpus::Sample
            };
            println!("{}", bundled_shards(corpus, kind)?.display());
            Ok(())
        }
    }
}

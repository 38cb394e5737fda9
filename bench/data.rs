//! Criterion benches of the data path: tokenizer throughput (MB/s of text, one thread and all
//! threads) on the bundled sample, and loader throughput (tokens/s served from warm shards).
//! Python's sentencepiece on the same text: `python3 data/tokenizer/bench_python_sentencepiece.py`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use isoflop::data::input::{DocumentReader, InputFile};
use isoflop::data::{bundled_sample_shards, ShardLoader, Split, TokenSource, Tokenizer};
use rayon::prelude::*;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

fn sample_docs() -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/c4-train.00000-of-00001.json.gz");
    let mut r = DocumentReader::open(
        &InputFile::new(&path).unwrap(),
        false,
        Arc::new(AtomicU64::new(0)),
    )
    .unwrap();
    let mut docs = Vec::new();
    loop {
        let b = r.next_batch(1 << 20).unwrap();
        if b.is_empty() {
            break;
        }
        docs.extend(b);
    }
    docs
}

fn tokenizer(c: &mut Criterion) {
    let tok = Tokenizer::bundled().unwrap();
    let docs = sample_docs();
    let bytes: usize = docs.iter().map(String::len).sum();
    let mut g = c.benchmark_group("tokenizer");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("kjv_sample_1_thread", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            for d in &docs {
                tok.encode_document_u16(d, 2, 1, &mut out);
            }
            out.len()
        })
    });
    g.bench_function(
        format!("kjv_sample_{}_threads", rayon::current_num_threads()),
        |b| {
            b.iter(|| {
                docs.par_iter()
                    .map(|d| {
                        let mut out = Vec::new();
                        tok.encode_document_u16(d, 2, 1, &mut out);
                        out.len()
                    })
                    .sum::<usize>()
            })
        },
    );
    g.finish();
}

fn loader(c: &mut Criterion) {
    let dir = bundled_sample_shards().unwrap();
    let (t, b) = (512, 64);
    let mut l = ShardLoader::open(&dir, t, 0, Split::Train, 32101).unwrap();
    let mut g = c.benchmark_group("loader");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements((b * (t + 1)) as u64));
    g.bench_function("next_batch_b64_t512_shuffled", |bench| {
        bench.iter(|| l.next_batch(b).unwrap().len())
    });
    g.finish();
}

criterion_group!(benches, tokenizer, loader);
criterion_main!(benches);

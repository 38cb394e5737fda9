//! C4-format inputs → shards → verified shards → loader: end-to-end, determinism and resume.

use flate2::write::GzEncoder;
use isoflop::data::input::{DocumentReader, InputFile};
use isoflop::data::loader::bundled_tokenizer_sha256;
use isoflop::data::shard::{list_shards, Shard, ShardWriter, SpecialIds};
use isoflop::data::tokenize::{tokenize_files, TokenizeOptions};
use isoflop::data::{ShardLoader, Split, TokenSource, Tokenizer};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

const V: usize = 32101;

fn write_gz(path: &Path, text: &str) {
    let mut e = GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap();
}

/// Deterministic pseudo-English documents.
fn synthetic_docs(n: usize, seed: u64) -> Vec<String> {
    let words = [
        "the",
        "model",
        "loss",
        "falls",
        "as",
        "compute",
        "grows",
        "tokens",
        "and",
        "data",
        "scaling",
        "law",
        "Chinchilla",
        "isoFLOP",
        "{curve}",
        "naïve",
        "😀",
        "width",
        "depth",
        "\t",
    ];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|i| {
            let len = 5 + i % 70;
            (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    words[(x >> 33) as usize % words.len()]
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn c4_lines(docs: &[String]) -> String {
    docs.iter()
        .enumerate()
        .map(|(i, d)| {
            serde_json::json!({"text": d, "timestamp": "2019-04-25T12:57:54Z", "url": format!("https://example.com/{i}")})
                .to_string()
                + "\n"
        })
        .collect()
}

fn expected_tokens(tok: &Tokenizer, docs: &[String]) -> Vec<u16> {
    let mut v = Vec::new();
    for d in docs {
        tok.encode_document_u16(d, 2, 1, &mut v);
    }
    v
}

#[test]
fn synthetic_c4_jsonl_and_txt_tokenize_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = Tokenizer::bundled().unwrap();
    let train = synthetic_docs(300, 1);
    let valid = synthetic_docs(20, 2);
    let jsonl = synthetic_docs(7, 3);
    let inputs = vec![
        tmp.path().join("c4-train.00000-of-01024.json.gz"),
        tmp.path().join("c4-validation.00000-of-00008.json.gz"),
        tmp.path().join("extra.jsonl"),
        tmp.path().join("book.txt"),
    ];
    write_gz(&inputs[0], &c4_lines(&train));
    write_gz(&inputs[1], &c4_lines(&valid));
    std::fs::write(&inputs[2], c4_lines(&jsonl)).unwrap();
    std::fs::write(
        &inputs[3],
        "First block\nstill first.\n\n\n  \nSecond block.\n",
    )
    .unwrap();
    let out = tmp.path().join("shards");
    let opts = TokenizeOptions {
        txt_blocks: true,
        batch_bytes: 2000,
        ..Default::default()
    };
    let report = tokenize_files(&inputs, &out, &tok, &opts).unwrap();
    assert_eq!(report.shards.len(), 4);
    assert!(report.shards.iter().all(|s| !s.skipped));
    let names: Vec<String> = list_shards(&out)
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "book.tok",
            "c4-train.00000-of-01024.tok",
            "c4-validation.00000-of-00008.tok",
            "extra.tok"
        ]
    );
    for (name, docs) in [
        ("c4-train.00000-of-01024.tok", &train),
        ("c4-validation.00000-of-00008.tok", &valid),
        ("extra.tok", &jsonl),
    ] {
        let s = Shard::open(&out.join(name)).unwrap();
        s.verify().unwrap();
        assert_eq!(s.header.doc_count, docs.len() as u64);
        assert_eq!(s.tokens(), &expected_tokens(&tok, docs)[..], "{name}");
        assert_eq!(s.header.tokenizer_sha256, bundled_tokenizer_sha256());
        let d0: Vec<u32> = s.document(0).unwrap().iter().map(|&t| t as u32).collect();
        assert_eq!(tok.decode(&d0), tok.decode(&tok.encode(&docs[0])));
    }
    let book = Shard::open(&out.join("book.tok")).unwrap();
    assert_eq!(book.header.doc_count, 2);
    assert_eq!(book.header.source, "book.txt");
    // A re-run skips every finished shard and leaves it untouched.
    let before = std::fs::read(out.join("extra.tok")).unwrap();
    let again = tokenize_files(&inputs, &out, &tok, &opts).unwrap();
    assert!(again.shards.iter().all(|s| s.skipped));
    assert_eq!(std::fs::read(out.join("extra.tok")).unwrap(), before);
    // No temp files left behind.
    assert!(std::fs::read_dir(&out).unwrap().all(|e| !e
        .unwrap()
        .path()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn sample_ids_match_python_sentencepiece() {
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tokenizer_sample_parity.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let tok = Tokenizer::bundled().unwrap();
    let mut checked_bytes = 0;
    for (name, docs) in fixture["files"].as_object().unwrap() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("data/sample")
            .join(name);
        let mut r = DocumentReader::open(
            &InputFile::new(&path).unwrap(),
            false,
            Arc::new(AtomicU64::new(0)),
        )
        .unwrap();
        let mut texts = Vec::new();
        while texts.len() < docs.as_array().unwrap().len() {
            let b = r.next_batch(1 << 16).unwrap();
            assert!(!b.is_empty());
            texts.extend(b);
        }
        for (i, (want, text)) in docs.as_array().unwrap().iter().zip(&texts).enumerate() {
            let ids = tok.encode(text);
            let bytes: Vec<u8> = ids.iter().flat_map(|&t| (t as u16).to_le_bytes()).collect();
            let h: String = Sha256::digest(&bytes)[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                (ids.len() as u64, h.as_str()),
                (want[0].as_u64().unwrap(), want[1].as_str().unwrap()),
                "{name} document {i}"
            );
            checked_bytes += text.len();
        }
    }
    assert!(checked_bytes > 250_000, "{checked_bytes}");
}

/// A shard dir whose token stream is 0,1,2,... (ids 4.. mod 1000) in documents of varying length.
fn counting_shards(dir: &Path, shards: &[(&str, usize)]) -> Vec<u16> {
    std::fs::create_dir_all(dir).unwrap();
    let special = SpecialIds {
        pad: 0,
        eos: 1,
        bos: 2,
        unk: 3,
    };
    let mut all = Vec::new();
    let mut next = 0u32;
    for (name, n) in shards {
        let mut w = ShardWriter::create(
            &dir.join(format!("{name}.tok")),
            V as u32,
            special,
            bundled_tokenizer_sha256(),
            &format!("{name}.json.gz"),
        )
        .unwrap();
        let mut left = *n;
        let mut len = 3;
        while left > 0 {
            let k = len.min(left);
            let doc: Vec<u16> = (0..k)
                .map(|_| {
                    next += 1;
                    (4 + next % 1000) as u16
                })
                .collect();
            w.push_document(&doc).unwrap();
            all.extend(&doc);
            left -= k;
            len = len * 7 % 23 + 1;
        }
        w.finish().unwrap();
    }
    all
}

#[test]
fn loader_windows_cover_the_stream_once_per_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let stream = counting_shards(tmp.path(), &[("a", 1000), ("b", 37), ("c", 2500)]);
    let t = 16;
    let mut l = ShardLoader::open(tmp.path(), t, 7, Split::Train, V).unwrap();
    let total = stream.len() / (t + 1);
    let eval = (total * 2 / 100).max(1);
    assert_eq!(l.num_windows() as usize, total - eval);
    let mut ev = ShardLoader::open(tmp.path(), t, 7, Split::Eval, V).unwrap();
    assert_eq!(ev.num_windows() as usize, eval);
    // Eval: the last windows, in order.
    let e = ev.next_batch(eval).unwrap();
    assert_eq!(&e[..], &stream[(total - eval) * (t + 1)..total * (t + 1)]);
    // Train: every training window exactly once per epoch, shuffled, then a new order.
    let n = l.num_windows() as usize;
    let epoch0 = l.next_batch(n).unwrap();
    assert_eq!(l.epoch(), 1);
    let mut got: Vec<&[u16]> = epoch0.chunks(t + 1).collect();
    let mut want: Vec<&[u16]> = stream[..n * (t + 1)].chunks(t + 1).collect();
    assert_ne!(got, want, "not shuffled");
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let epoch1 = l.next_batch(n).unwrap();
    assert_ne!(epoch0, epoch1);
    assert_eq!(l.epoch(), 2);
}

#[test]
fn same_seed_same_batches_and_restore_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    counting_shards(tmp.path(), &[("x", 3000), ("y", 1500)]);
    let t = 32;
    let run = |seed| {
        let mut l = ShardLoader::open(tmp.path(), t, seed, Split::Train, V).unwrap();
        (0..10)
            .map(|_| l.next_batch(3).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
    let mut a = ShardLoader::open(tmp.path(), t, 5, Split::Train, V).unwrap();
    let n = a.num_windows() as usize;
    // Stop just before an epoch boundary, save, and continue across it.
    a.next_batch(n - 2).unwrap();
    let state = a.state();
    let state = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    let cont: Vec<Vec<u16>> = (0..5).map(|_| a.next_batch(3).unwrap()).collect();
    let mut b = ShardLoader::open(tmp.path(), t, 5, Split::Train, V).unwrap();
    b.next_batch(1).unwrap(); // a running loader restores too
    b.restore(&state).unwrap();
    let resumed: Vec<Vec<u16>> = (0..5).map(|_| b.next_batch(3).unwrap()).collect();
    assert_eq!(cont, resumed);
    assert_eq!(b.epoch(), 1);
    // A state from another seed, length or data is refused.
    assert!(ShardLoader::open(tmp.path(), t, 6, Split::Train, V)
        .unwrap()
        .restore(&state)
        .is_err());
    assert!(ShardLoader::open(tmp.path(), t + 1, 5, Split::Train, V)
        .unwrap()
        .restore(&state)
        .is_err());
    assert!(ShardLoader::open(tmp.path(), t, 5, Split::Eval, V)
        .unwrap()
        .restore(&state)
        .is_err());
}

#[test]
fn validation_files_form_the_eval_split() {
    let tmp = tempfile::tempdir().unwrap();
    let stream = counting_shards(
        tmp.path(),
        &[
            ("c4-train.00000-of-00002", 800),
            ("c4-train.00001-of-00002", 900),
            ("c4-validation.00000-of-00001", 400),
        ],
    );
    let t = 8;
    let mut tr = ShardLoader::open(tmp.path(), t, 1, Split::Train, V).unwrap();
    let mut ev = ShardLoader::open(tmp.path(), t, 1, Split::Eval, V).unwrap();
    assert_eq!(tr.num_windows() as usize, 1700 / (t + 1));
    assert_eq!(ev.num_windows() as usize, 400 / (t + 1));
    let e = ev.next_batch(ev.num_windows() as usize).unwrap();
    assert_eq!(&e[..], &stream[1700..1700 + e.len()]);
    let all = tr.next_batch(tr.num_windows() as usize).unwrap();
    let mut got: Vec<&[u16]> = all.chunks(t + 1).collect();
    let mut want: Vec<&[u16]> = stream[..all.len()].chunks(t + 1).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "train windows come from the train files only");
}

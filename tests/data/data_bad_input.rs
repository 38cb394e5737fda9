//! Bad inputs and corrupt shards: each gives a clear error naming the file (and line), never a panic,
//! never a shard or batch built from it.

use crate::cli::{bin, run_joined};
use flate2::write::GzEncoder;
use isoflop::data::loader::bundled_tokenizer_sha256;
use isoflop::data::shard::{Shard, ShardWriter, SpecialIds, HEADER_SIZE};
use isoflop::data::tokenize::{tokenize_files, TokenizeOptions};
use isoflop::data::{DataError, ShardLoader, Split, Tokenizer};
use std::io::Write;
use std::path::{Path, PathBuf};

const V: usize = 32101;
const SPECIAL: SpecialIds = SpecialIds {
    pad: 0,
    eos: 1,
    bos: 2,
    unk: 3,
};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Tokenizes one input file made of `bytes`; returns the error and checks that no shard appeared.
fn tokenize_err(name: &str, bytes: &[u8]) -> (String, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join(name);
    std::fs::write(&input, bytes).unwrap();
    let out = tmp.path().join("out");
    let err = tokenize_files(
        std::slice::from_ref(&input),
        &out,
        &Tokenizer::bundled().unwrap(),
        &TokenizeOptions::default(),
    )
    .expect_err("bad input accepted");
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    (err.to_string(), input)
}

/// A valid shard of `tokens` (single document), with the given vocab and tokenizer hash.
fn shard(dir: &Path, name: &str, tokens: &[u16], vocab: u32, sha: [u8; 32]) -> PathBuf {
    let p = dir.join(name);
    let mut w = ShardWriter::create(&p, vocab, SPECIAL, sha, "src.json.gz").unwrap();
    w.push_document(tokens).unwrap();
    w.finish().unwrap();
    p
}

fn good_shard(dir: &Path) -> PathBuf {
    let toks: Vec<u16> = (0..500).map(|i| 4 + (i * 37 % 30000) as u16).collect();
    shard(dir, "good.tok", &toks, V as u32, bundled_tokenizer_sha256())
}

fn open_err(dir: &Path) -> String {
    match ShardLoader::open(dir, 16, 0, Split::Train, V) {
        Ok(_) => panic!("loader accepted bad shards in {}", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn patch(path: &Path, at: usize, bytes: &[u8]) {
    let mut b = std::fs::read(path).unwrap();
    b[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, b).unwrap();
}

#[test]
fn wrong_magic() {
    let tmp = tempfile::tempdir().unwrap();
    let p = good_shard(tmp.path());
    patch(&p, 0, b"NOTASHRD");
    let e = Shard::open(&p).err().unwrap().to_string();
    assert!(e.contains("good.tok") && e.contains("magic"), "{e}");
    assert!(open_err(tmp.path()).contains("magic"));
}

#[test]
fn wrong_version() {
    let tmp = tempfile::tempdir().unwrap();
    let p = good_shard(tmp.path());
    patch(&p, 8, &7u32.to_le_bytes());
    let e = Shard::open(&p).err().unwrap().to_string();
    assert!(e.contains("good.tok") && e.contains("version 7"), "{e}");
}

#[test]
fn truncated_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let p = good_shard(tmp.path());
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 100]).unwrap();
    let e = open_err(tmp.path());
    assert!(e.contains("good.tok") && e.contains("truncated"), "{e}");
    std::fs::write(&p, &b[..100]).unwrap();
    let e = Shard::open(&p).err().unwrap().to_string();
    assert!(e.contains("good.tok") && e.contains("truncated"), "{e}");
}

#[test]
fn checksum_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let p = good_shard(tmp.path());
    patch(&p, HEADER_SIZE + 10, &[9, 0]);
    let e = Shard::open(&p).unwrap().verify().err().unwrap().to_string();
    assert!(
        e.contains("good.tok") && e.contains("checksum mismatch"),
        "{e}"
    );
    assert!(open_err(tmp.path()).contains("checksum mismatch"));
}

#[test]
fn token_id_outside_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let mut toks = vec![5u16; 300];
    toks[123] = 40000;
    let p = shard(
        tmp.path(),
        "big.tok",
        &toks,
        V as u32,
        bundled_tokenizer_sha256(),
    );
    let e = Shard::open(&p).unwrap().verify().err().unwrap().to_string();
    assert!(
        e.contains("big.tok") && e.contains("token id 40000 at token 123"),
        "{e}"
    );
    let e = open_err(tmp.path());
    assert!(e.contains("token id 40000"), "{e}");
}

#[test]
fn shards_from_another_tokenizer_or_vocab() {
    let tmp = tempfile::tempdir().unwrap();
    shard(tmp.path(), "other.tok", &[5; 100], V as u32, [7; 32]);
    let e = open_err(tmp.path());
    assert!(
        e.contains("other.tok") && e.contains("different tokenizer"),
        "{e}"
    );
    let tmp = tempfile::tempdir().unwrap();
    good_shard(tmp.path());
    let e = ShardLoader::open(tmp.path(), 16, 0, Split::Train, 50257)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("good.tok") && e.contains("vocabulary of 32101") && e.contains("50257"),
        "{e}"
    );
    // And tokenize refuses to "skip" a finished shard made with another tokenizer.
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("other.jsonl");
    std::fs::write(&input, "{\"text\": \"hello\"}\n").unwrap();
    shard(tmp.path(), "other.tok", &[5; 10], V as u32, [7; 32]);
    let e = tokenize_files(
        &[input],
        tmp.path(),
        &Tokenizer::bundled().unwrap(),
        &TokenizeOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("other.tok") && e.contains("different tokenizer")
            || e.contains("made with tokenizer"),
        "{e}"
    );
}

#[test]
fn empty_input() {
    let (e, _) = tokenize_err("c4-train.00000-of-01024.json.gz", &gz(b""));
    assert!(
        e.contains("c4-train.00000-of-01024.json.gz") && e.contains("empty input"),
        "{e}"
    );
    let (e, _) = tokenize_err("blank.jsonl", b"\n\n{\"text\": \"   \"}\n");
    assert!(
        e.contains("blank.jsonl") && e.contains("empty input"),
        "{e}"
    );
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        tokenize_files(
            &[],
            tmp.path(),
            &Tokenizer::bundled().unwrap(),
            &TokenizeOptions::default()
        ),
        Err(DataError::Invalid(_))
    ));
}

#[test]
fn json_line_without_text() {
    let body = b"{\"text\": \"fine\", \"url\": \"u\"}\n{\"text\": \"also fine\"}\n{\"url\": \"no text here\"}\n";
    let (e, _) = tokenize_err("c4-train.00001-of-01024.json.gz", &gz(body));
    assert!(
        e.contains("c4-train.00001-of-01024.json.gz:3") && e.contains("no \"text\" field"),
        "{e}"
    );
    let (e, _) = tokenize_err("bad.jsonl", b"{\"text\": \"ok\"}\nnot json\n");
    assert!(e.contains("bad.jsonl:2") && e.contains("bad JSON"), "{e}");
}

#[test]
fn invalid_utf8() {
    let (e, _) = tokenize_err(
        "latin1.jsonl",
        b"{\"text\": \"ok\"}\n{\"text\": \"caf\xe9\"}\n",
    );
    assert!(
        e.contains("latin1.jsonl:2") && e.contains("invalid UTF-8"),
        "{e}"
    );
    let (e, _) = tokenize_err("latin1.txt", b"line one\nline \xff two\n");
    assert!(
        e.contains("latin1.txt:2") && e.contains("invalid UTF-8"),
        "{e}"
    );
}

#[test]
fn gzip_stream_cut_short() {
    let lines: String = (0..2000)
        .map(|i| format!("{{\"text\": \"document number {i} with some words\"}}\n"))
        .collect();
    let full = gz(lines.as_bytes());
    let (e, _) = tokenize_err("c4-train.00002-of-01024.json.gz", &full[..full.len() / 2]);
    assert!(
        e.contains("c4-train.00002-of-01024.json.gz") && e.contains("gzip"),
        "{e}"
    );
}

/// `isoflop data verify DIR`: (success, stdout + stderr).
fn verify_cli(dir: &Path) -> (bool, String) {
    let (ok, text) = run_joined(bin().args(["data", "verify"]).arg(dir));
    assert!(!text.contains("panicked"), "{text}");
    (ok, text)
}

#[test]
fn verify_refuses_shards_with_mixed_vocabularies_or_tokenizers() {
    // Each shard is valid on its own; together they cannot be one training set.
    let tmp = tempfile::tempdir().unwrap();
    good_shard(tmp.path());
    shard(
        tmp.path(),
        "wide.tok",
        &[40000; 50],
        50257,
        bundled_tokenizer_sha256(),
    );
    let (ok, out) = verify_cli(tmp.path());
    assert!(!ok, "mixed vocabularies accepted:\n{out}");
    assert!(
        out.contains("good.tok")
            && out.contains("wide.tok")
            && out.contains("32101")
            && out.contains("50257"),
        "{out}"
    );
    let tmp = tempfile::tempdir().unwrap();
    good_shard(tmp.path());
    shard(tmp.path(), "other.tok", &[5; 50], V as u32, [7; 32]);
    let (ok, out) = verify_cli(tmp.path());
    assert!(!ok, "mixed tokenizers accepted:\n{out}");
    assert!(
        out.contains("good.tok") && out.contains("other.tok") && out.contains("tokenizer"),
        "{out}"
    );
}

#[test]
fn special_ids_other_than_the_contracts_are_refused() {
    for (at, name, want) in [
        (20, "pad", 5u32),
        (24, "eos", 0),
        (28, "bos", 7),
        (32, "unk", 9),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let p = good_shard(tmp.path());
        patch(&p, at, &want.to_le_bytes());
        let e = Shard::open(&p).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("good.tok")
                && e.contains(&format!("{name} id {want}"))),
            "{name} id {want} accepted: {e:?}"
        );
        let (ok, out) = verify_cli(tmp.path());
        assert!(!ok && out.contains("good.tok"), "{out}");
    }
    // Nor can a shard with other special ids be written.
    let tmp = tempfile::tempdir().unwrap();
    let bad = SpecialIds { pad: 5, ..SPECIAL };
    let e = ShardWriter::create(
        &tmp.path().join("x.tok"),
        V as u32,
        bad,
        bundled_tokenizer_sha256(),
        "x",
    )
    .err()
    .map(|e| e.to_string());
    assert!(
        e.as_deref().is_some_and(|e| e.contains("pad id 5")),
        "{e:?}"
    );
}

#[test]
fn stale_tokenize_temporaries_of_dead_processes_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // A process that has exited: its PID names a stale temporary.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = out.join(format!("doc.tok.{dead}.tmp"));
    std::fs::write(&stale, vec![0u8; 8192]).unwrap();
    // This test process is alive: its temporary must never be touched.
    let live = out.join(format!("busy.tok.{}.tmp", std::process::id()));
    std::fs::write(&live, b"in progress").unwrap();
    let unrelated = out.join("notes.tmp");
    std::fs::write(&unrelated, b"not ours").unwrap();
    let input = tmp.path().join("doc.jsonl");
    std::fs::write(&input, "{\"text\": \"hello world\"}\n").unwrap();
    let (ok, text) = run_joined(
        bin()
            .args(["data", "tokenize", "--quiet", "--out"])
            .arg(&out)
            .arg(&input),
    );
    assert!(ok, "{text}");
    assert!(
        !stale.exists(),
        "stale temporary of dead PID {dead} left behind"
    );
    assert!(
        text.contains(&format!("doc.tok.{dead}.tmp")) && text.contains("removed"),
        "{text}"
    );
    assert!(live.exists(), "temporary of a live process removed");
    assert!(
        unrelated.exists(),
        "a file that is not a shard temporary removed"
    );
    assert!(out.join("doc.tok").exists());
}

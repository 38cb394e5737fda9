//! The data commands through the binary, as the README shows them: tokenize the bundled sample and a
//! synthetic C4-format file, verify, inspect, re-run (skips), then train and evaluate on the shards.

use crate::cli::{bin, isoflop, run, run_joined};
use std::io::Write;

/// `isoflop train` of a one-layer d=64 model on `data`, `batch` sequences a step for `steps` steps,
/// evaluated on `eval` held-out sequences, written to `out`.
fn tiny_train<'a>(
    data: &'a str,
    batch: &'a str,
    steps: &'a str,
    eval: &'a str,
    out: &'a str,
) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--device",
        "cpu",
        "--d-model",
        "64",
        "--n-layers",
        "1",
        "--seq-len",
        "32",
        "--batch-size",
        batch,
        "--steps",
        steps,
        "--eval-sequences",
        eval,
        "--out",
        out,
    ]
}

#[test]
fn tokenize_verify_inspect_train_and_eval_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    // A synthetic file in C4's own release format.
    let c4 = tmp.path().join("c4-train.00007-of-01024.json.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&c4).unwrap(),
        flate2::Compression::fast(),
    );
    for i in 0..200 {
        let text = format!("Document {i}: the quick brown fox jumps over the lazy dog.\nSecond line, with tabs\tand ünïcödé {{}}.");
        let line = serde_json::json!({"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": format!("https://example.org/{i}")});
        writeln!(gz, "{line}").unwrap();
    }
    gz.finish().unwrap();
    let shards = tmp.path().join("shards");
    let s = shards.to_str().unwrap();
    let train = format!("{root}/data/sample/c4-train.00000-of-00001.json.gz");
    let val = format!("{root}/data/sample/c4-validation.00000-of-00001.json.gz");
    // The same command twice: the second run finds every shard done and skips it.
    let tokenize = [
        "data",
        "tokenize",
        &train,
        &val,
        c4.to_str().unwrap(),
        "--out",
        s,
        "--quiet",
    ];
    let out = isoflop(&tokenize);
    assert!(out.contains("3 shards written"), "{out}");
    let out = isoflop(&tokenize);
    assert!(out.contains("3 already done"), "{out}");
    let out = isoflop(&["data", "verify", s]);
    assert!(!out.to_lowercase().contains("error"), "{out}");
    let shard = shards.join("c4-train.00007-of-01024.tok");
    let out = isoflop(&["data", "inspect", shard.to_str().unwrap()]);
    assert!(
        out.contains("quick brown fox") && out.contains("32101"),
        "{out}"
    );
    // Train a few steps on the shards (the validation file is the held-out split), then evaluate.
    let run = tmp.path().join("run");
    isoflop(&tiny_train(s, "4", "5", "8", run.to_str().unwrap()));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["status"], "finished");
    assert_eq!(manifest["data"]["shards"].as_array().unwrap().len(), 3);
    let ck = run.join("checkpoints/step-00000005");
    let eval = |sequences: &str, micro_batch: &str| {
        isoflop(&[
            "eval",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--data",
            s,
            "--sequences",
            sequences,
            "--micro-batch",
            micro_batch,
            "--device",
            "cpu",
        ])
    };
    let out = eval("8", "4");
    assert!(
        out.contains("eval loss") && out.contains(" ± ") && !out.contains("NaN"),
        "{out}"
    );
    // One micro-batch gives no spread to estimate an interval from: say so, never "± NaN".
    let out = eval("4", "8");
    assert!(
        out.contains("eval loss") && !out.contains("NaN") && out.contains("no interval"),
        "{out}"
    );
}

/// Runs isoflop with `ISOFLOP_CACHE` set; returns (success, stdout + stderr).
fn isoflop_cached(cache: &std::path::Path, args: &[&str]) -> (bool, String) {
    run_joined(bin().env("ISOFLOP_CACHE", cache).args(args))
}

#[test]
fn byte_tokenizer_shards_train_at_v260_and_never_mix_with_sentencepiece_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let run_ok = |args: &[&str]| {
        let (ok, out) = isoflop_cached(&cache, args);
        assert!(ok, "isoflop {args:?} failed:\n{out}");
        out
    };
    let run_err = |args: &[&str]| {
        let (ok, out) = isoflop_cached(&cache, args);
        assert!(!ok, "isoflop {args:?} should have failed:\n{out}");
        out
    };
    let jsonl = tmp.path().join("docs.jsonl");
    let mut f = std::fs::File::create(&jsonl).unwrap();
    for i in 0..300 {
        let text = format!("Doc {i}: caf\u{e9} \u{1f600} the quick brown fox, line {i}.");
        writeln!(f, "{}", serde_json::json!({ "text": text })).unwrap();
    }
    drop(f);
    let (bytes, sp) = (tmp.path().join("bytes"), tmp.path().join("sp"));
    let (b, s) = (bytes.to_str().unwrap(), sp.to_str().unwrap());
    let j = jsonl.to_str().unwrap();
    let out = run_ok(&[
        "data",
        "tokenize",
        j,
        "--out",
        b,
        "--tokenizer",
        "bytes",
        "--quiet",
    ]);
    assert!(out.contains("1 shards written"), "{out}");
    run_ok(&["data", "tokenize", j, "--out", s, "--quiet"]);
    // Byte ids are byte + 4 and decode back to the exact text; the header names the tokenizer.
    let out = run_ok(&["data", "inspect", bytes.join("docs.tok").to_str().unwrap()]);
    assert!(
        out.contains("vocab size       260")
            && out.contains("byte-level")
            && out.contains("first ids [2, 72, 115, 103, 36, 52")
            && out.contains("Doc 0: caf\u{e9} \u{1f600} the quick brown fox, line 0."),
        "{out}"
    );
    // Re-tokenizing into the same directory with the other tokenizer is refused, naming both.
    let out = run_err(&["data", "tokenize", j, "--out", b, "--quiet"]);
    assert!(
        out.contains("docs.tok") && out.contains("byte-level") && out.contains("SentencePiece"),
        "{out}"
    );
    // Train a few steps at V = 260 on the byte shards; run.json records the tokenizer identity.
    let run = tmp.path().join("run");
    let train = |data: &str, extra: &[&str], out: &std::path::Path| {
        let mut a = tiny_train(data, "4", "3", "4", out.to_str().unwrap());
        a.extend_from_slice(extra);
        isoflop_cached(&cache, &a)
    };
    let (ok, out) = train(b, &["--vocab-size", "260"], &run);
    assert!(ok, "{out}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["status"], "finished");
    let id = manifest["data"]["tokenizer_sha256"].as_str().unwrap();
    let tok = isoflop::data::tokenizer_for_identity_hex(id).unwrap();
    assert_eq!(tok.kind(), isoflop::data::TokenizerKind::Bytes);
    // Byte shards with the default V = 32101 model: refused, naming the file and the tokenizer.
    let (ok, out) = train(b, &[], &tmp.path().join("r2"));
    assert!(
        !ok && out.contains("docs.tok") && out.contains("byte-level"),
        "{out}"
    );
    // Held-out shards of the other tokenizer: refused.
    let (ok, out) = train(
        b,
        &["--vocab-size", "260", "--eval-data", s],
        &tmp.path().join("r3"),
    );
    assert!(!ok && out.contains("SentencePiece"), "{out}");
    // A directory holding shards of both tokenizers: verify and training refuse it, listing which
    // file holds which.
    std::fs::copy(sp.join("docs.tok"), bytes.join("docs-sp.tok")).unwrap();
    let out = run_err(&["data", "verify", b]);
    assert!(
        out.contains("different vocabularies/tokenizers")
            && out.contains("docs.tok")
            && out.contains("docs-sp.tok"),
        "{out}"
    );
    for vocab in ["260", "32101"] {
        let (ok, out) = train(b, &["--vocab-size", vocab], &tmp.path().join("r4"));
        assert!(
            !ok && out.contains("different vocabularies/tokenizers") && out.contains("docs-sp.tok"),
            "{out}"
        );
    }
    // The bundled sample in byte mode: its own cache entry, and the vocabulary follows the
    // tokenizer; a contradicting --vocab-size is refused before anything is written.
    let sp_dir = run_ok(&["data", "sample"]);
    let byte_dir = run_ok(&["data", "sample", "--tokenizer", "bytes"]);
    assert_ne!(sp_dir.trim(), byte_dir.trim());
    let out = run_ok(&["data", "verify", byte_dir.trim()]);
    assert!(out.contains("2 shards verified"), "{out}");
    let r5 = tmp.path().join("r5");
    let (ok, out) = train("bundled", &["--tokenizer", "bytes"], &r5);
    assert!(ok, "{out}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r5.join("run.json")).unwrap()).unwrap();
    assert_eq!(cfg["config"]["model"]["vocab_size"], 260);
    assert_eq!(cfg["config"]["data"]["tokenizer"], "bytes");
    let r6 = tmp.path().join("r6");
    let (ok, out) = train(
        "bundled",
        &["--tokenizer", "bytes", "--vocab-size", "32101"],
        &r6,
    );
    assert!(
        !ok && out.contains("vocab") && out.contains("260") && !r6.join("run.json").exists(),
        "{out}"
    );
}

/// Run the binary expecting failure; returns stderr.
fn isoflop_err(args: &[&str]) -> String {
    let (ok, _, stderr) = run(bin().args(args));
    assert!(!ok, "isoflop {args:?} should fail");
    stderr
}

/// `isoflop eval` of checkpoint `ck` on the first 3 items of each of `tasks`, on the CPU, then `extra`.
fn eval_tasks<'a>(ck: &'a str, tasks: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["eval", "--checkpoint", ck];
    for task in tasks {
        args.extend(["--task", task]);
    }
    args.extend(["--limit", "3", "--device", "cpu"]);
    args.extend_from_slice(extra);
    args
}

#[test]
fn task_convert_and_eval_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let p = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    // Writes `text` to the temporary file `n`.
    let put = |n: &str, text: &str| std::fs::write(p(n), text).unwrap();
    // LAMBADA plain text → cloze task; ARC jsonl → multiple choice.
    put(
        "lambada.txt",
        "he looked at the old man and said goodbye to his friend george\n",
    );
    let out = isoflop(&[
        "data",
        "task",
        "convert",
        "--format",
        "lambada",
        &p("lambada.txt"),
        "--out",
        &p("lambada.jsonl"),
    ]);
    assert!(out.contains("1 items"), "{out}");
    put(
        "arc.jsonl",
        r#"{"id": "q1", "question": {"stem": "Which is a gas?", "choices": [{"text": "ice", "label": "A"}, {"text": "steam", "label": "B"}]}, "answerKey": "B"}"#,
    );
    isoflop(&[
        "data",
        "task",
        "convert",
        "--format",
        "arc",
        &p("arc.jsonl"),
        "--out",
        &p("arc-t.jsonl"),
    ]);
    // PIQA without its labels file: a clear error.
    let e = isoflop_err(&[
        "data",
        "task",
        "convert",
        "--format",
        "piqa",
        &p("arc.jsonl"),
        "--out",
        &p("x.jsonl"),
    ]);
    assert!(e.contains("labels file"), "{e}");
    // A model with the sample's vocabulary (2 steps on synthetic data) to score with.
    let run = p("run");
    let mut train = tiny_train("synthetic", "2", "2", "2", &run);
    train.extend(["--vocab-size", "32101"]);
    isoflop(&train);
    let ck = format!("{run}/checkpoints/step-00000002");
    let verse = format!("{root}/data/tasks/kjv-verse.jsonl");
    let out = isoflop(&eval_tasks(
        &ck,
        &[&p("lambada.jsonl"), &p("arc-t.jsonl"), &verse],
        &["--json", "--out", &p("res.json")],
    ));
    let j: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(
        j,
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p("res.json")).unwrap())
            .unwrap()
    );
    let t = j["tasks"].as_array().unwrap();
    assert_eq!(
        (t[0]["name"].as_str(), t[0]["kind"].as_str()),
        (Some("lambada"), Some("cloze"))
    );
    assert!(t[0]["exact"].as_f64().is_some() && t[0]["target_loglik"].as_f64().unwrap() < 0.0);
    assert_eq!(
        (t[1]["items"].as_u64(), t[1]["chance"].as_f64()),
        (Some(1), Some(0.5))
    );
    assert_eq!(
        (t[2]["name"].as_str(), t[2]["items"].as_u64()),
        (Some("kjv-verse"), Some(3))
    );
    // Two verses and a choice do not fit in T = 32: truncated on the left, and counted.
    assert!(t[2]["truncated"].as_u64().unwrap() > 0, "{j}");
    for x in t {
        let acc = x["acc"]
            .as_f64()
            .unwrap_or_else(|| x["exact"].as_f64().unwrap());
        assert!((x["err"].as_f64().unwrap() - (1.0 - acc)).abs() < 1e-12);
    }
    let mean = t.iter().map(|x| x["err"].as_f64().unwrap()).sum::<f64>() / 3.0;
    assert!((j["err_avg"].as_f64().unwrap() - mean).abs() < 1e-12);
    // The table form says the same, with the truncation count.
    let out = isoflop(&eval_tasks(&ck, &[&verse], &[]));
    assert!(
        out.contains("kjv-verse: 3 items, acc ") && out.contains("truncated on the left"),
        "{out}"
    );
    // A bad line is an error naming the file and the line.
    put(
        "bad.jsonl",
        "{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"label\": 1}\n{\"context\": \"a\", \"choices\": [\" b\"], \"label\": 3}\n",
    );
    let e = isoflop_err(&[
        "eval",
        "--checkpoint",
        &ck,
        "--task",
        &p("bad.jsonl"),
        "--device",
        "cpu",
    ]);
    assert!(
        e.contains(&format!("{}:2: label 3 is out of range", p("bad.jsonl"))),
        "{e}"
    );
}

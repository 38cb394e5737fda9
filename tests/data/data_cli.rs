//! The data commands through the binary, as the README shows them: tokenize the bundled sample and a
//! synthetic C4-format file, verify, inspect, re-run (skips), then train and evaluate on the shards.

use std::io::Write;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_isoflop");

fn isoflop(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "isoflop {args:?} failed:\n{text}");
    text
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
    let out = isoflop(&[
        "data",
        "tokenize",
        &train,
        &val,
        c4.to_str().unwrap(),
        "--out",
        s,
        "--quiet",
    ]);
    assert!(out.contains("3 shards written"), "{out}");
    let out = isoflop(&[
        "data",
        "tokenize",
        &train,
        &val,
        c4.to_str().unwrap(),
        "--out",
        s,
        "--quiet",
    ]);
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
    isoflop(&[
        "train",
        "--data",
        s,
        "--device",
        "cpu",
        "--d-model",
        "64",
        "--n-layers",
        "1",
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--steps",
        "5",
        "--eval-sequences",
        "8",
        "--out",
        run.to_str().unwrap(),
    ]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["status"], "finished");
    assert_eq!(manifest["data"]["shards"].as_array().unwrap().len(), 3);
    let ck = run.join("checkpoints/step-00000005");
    let out = isoflop(&[
        "eval",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--data",
        s,
        "--sequences",
        "8",
        "--micro-batch",
        "4",
        "--device",
        "cpu",
    ]);
    assert!(
        out.contains("eval loss") && out.contains(" ± ") && !out.contains("NaN"),
        "{out}"
    );
    // One micro-batch gives no spread to estimate an interval from: say so, never "± NaN".
    let out = isoflop(&[
        "eval",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--data",
        s,
        "--sequences",
        "4",
        "--micro-batch",
        "8",
        "--device",
        "cpu",
    ]);
    assert!(
        out.contains("eval loss") && !out.contains("NaN") && out.contains("no interval"),
        "{out}"
    );
}

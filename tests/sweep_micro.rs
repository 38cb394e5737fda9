//! The README's micro sweep, run for real on the bundled sample as CI runs it, and its export fed to
//! `isoflop fit` without hand editing.

use serde_json::Value;
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
fn micro_sweep_runs_exports_and_fits() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sweeps/micro.toml");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("micro");
    let d = dir.to_str().unwrap();
    isoflop(&["sweep", "run", spec, "--out", d, "--device", "cpu"]);
    let status = isoflop(&["sweep", "status", d]);
    assert!(status.contains("6 runs: 6 finished"), "{status}");
    isoflop(&["sweep", "export", d]);
    let runs = std::fs::read_to_string(dir.join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 7, "{runs}");
    // Every run learned something: final eval loss well below ln V at initialisation.
    let header: Vec<&str> = runs.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|c| *c == "eval_loss").unwrap();
    for line in runs.lines().skip(1) {
        let loss: f64 = line.split(',').nth(col).unwrap().parse().unwrap();
        assert!(loss < 9.0, "eval loss {loss} in {line}");
    }
    let fit = isoflop(&["fit", d]);
    let fit_json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fit/fit.json")).unwrap()).unwrap();
    // Approach 3 needs more than one tokens-per-parameter ratio, which an IsoFLOP sweep provides.
    assert!(
        fit_json["approach3"]["params"]["alpha"]["value"]
            .as_f64()
            .is_some(),
        "{fit}"
    );
    // Whatever the data cannot support is listed with its reason, not silently dropped.
    for s in fit_json["skipped"].as_array().unwrap() {
        assert!(!s.to_string().is_empty());
    }
    assert!(dir.join("fit/loss_vs_flops.png").exists());
}

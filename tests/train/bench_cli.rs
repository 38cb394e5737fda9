//! End-to-end tests of `isoflop bench` on the CPU: one tiny size for 2 timed steps, the JSON it writes,
//! the exported inputs, and flag errors.

use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_isoflop");

/// `isoflop bench` on one tiny size; `set` replaces default flag values, `extra` adds flags.
fn bench_with(set: &[(&str, &str)], extra: &[&str]) -> std::process::Output {
    let mut flags = vec![
        ("--device", "cpu"),
        ("--sizes", "64x1:32"),
        ("--vocab-size", "300"),
        ("--batch-size", "4"),
        ("--micro-batch", "2"),
        ("--steps", "2"),
        ("--warmup", "1"),
    ];
    for (k, v) in set {
        match flags.iter_mut().find(|f| f.0 == *k) {
            Some(f) => f.1 = v,
            None => flags.push((k, v)),
        }
    }
    Command::new(BIN)
        .args(["bench", "--quiet"])
        .args(flags.iter().flat_map(|(k, v)| [*k, *v]))
        .args(extra)
        .output()
        .expect("isoflop runs")
}

fn bench(extra: &[&str]) -> std::process::Output {
    bench_with(&[], extra)
}

#[test]
fn tiny_cpu_bench_writes_a_labelled_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub").join("r.json");
    let o = bench(&["--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("64x1:32"), "{stdout}");
    assert!(stdout.contains("NOT GPU figures"), "{stdout}");
    assert!(stderr.contains("NOTE: --device cpu was given"), "{stderr}");

    let j: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(j["backend"], "cpu");
    assert!(j["notice"].as_str().unwrap().contains("CPU figures"));
    assert!(j["command"].as_str().unwrap().contains("--sizes 64x1:32"));
    assert!(j["date"].as_str().unwrap().len() >= 10);
    assert!(j["machine"]["cpus"].as_u64().unwrap() >= 1);
    let r = &j["results"][0];
    assert_eq!(j["results"].as_array().unwrap().len(), 1);
    assert_eq!(r["model"]["d_model"], 64);
    assert_eq!(r["model"]["seq_len"], 32);
    assert_eq!(r["micro_batch"], 2);
    assert_eq!(r["tokens_per_step"], 4 * 32);
    assert_eq!(r["step_time_s"]["n"], 2);
    let median = r["step_time_s"]["median"].as_f64().unwrap();
    let tps = r["tokens_per_s"].as_f64().unwrap();
    assert!(median > 0.0 && (tps - 128.0 / median).abs() < 1e-6 * tps);
    // MFU against the measured CPU matmul rate is present and plausible; no datasheet peak on a CPU.
    let mfu = r["mfu"]["exact_measured"].as_f64().unwrap();
    assert!(mfu > 0.0 && mfu < 1.5, "{mfu}");
    assert!(r["mfu"]["exact_datasheet"].is_null());
    let fpt = &r["flops_per_token"];
    let ratio = r["achieved_flops_exact"].as_f64().unwrap() / tps;
    assert!((ratio - fpt["exact"].as_f64().unwrap()).abs() < 1e-6 * ratio);
    assert!(r["peak_memory_bytes"].as_u64().unwrap() > 1 << 20);
    // Phases: 2 forward_backward calls per step (batch 4, micro-batch 2), shares sum to ~1.
    let shares: f64 = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["share"].as_f64().unwrap())
        .sum();
    assert!((0.9..1.2).contains(&shares), "{shares}");
    // Losses of the warm-up step and both timed steps, finite and near ln(300) at the start.
    let losses: Vec<f64> = r["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 3);
    assert!((losses[0] - 300f64.ln()).abs() < 1.0, "{losses:?}");
}

#[test]
fn same_seed_same_losses_and_export_matches() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    assert!(bench(&["--out", a.to_str().unwrap()]).status.success());
    assert!(
        bench_with(&[("--micro-batch", "4")], &["--out", b.to_str().unwrap()])
            .status
            .success()
    );
    let losses = |p: &std::path::Path| -> Vec<f64> {
        let j: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        j["results"][0]["losses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    // Micro-batching changes only the summation grouping: equal to rounding.
    for (x, y) in losses(&a).iter().zip(losses(&b)) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
    let inputs = dir.path().join("inputs");
    let o = bench(&["--export-inputs", inputs.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let size = inputs.join("d64l1t32");
    for f in [
        "model.safetensors",
        "train_config.json",
        "batches.u16",
        "batches.json",
    ] {
        assert!(size.join(f).exists(), "{f}");
    }
    // (1 warm-up + 2 timed) steps × 4 sequences × 33 ids × 2 bytes.
    assert_eq!(
        std::fs::metadata(size.join("batches.u16")).unwrap().len(),
        3 * 4 * 33 * 2
    );
}

#[test]
fn bad_flags_are_named() {
    let o = bench_with(&[("--sizes", "100x2")], &["--no-save"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--sizes") && e.contains("100x2"), "{e}");
    let o = bench_with(&[("--micro-batch", "3")], &["--no-save"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--micro-batch"));
}

//! End-to-end tests of `isoflop train` on the CPU: outputs, exact resume after SIGKILL and SIGTERM,
//! faults, exports and flag errors.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_isoflop");

/// A small synthetic-data run that takes a few seconds for 100 steps.
fn small_args(dir: &Path, steps: u64) -> Vec<String> {
    [
        "train",
        "--device",
        "cpu",
        "--data",
        "synthetic",
        "--d-model",
        "128",
        "--n-layers",
        "2",
        "--seq-len",
        "64",
        "--vocab-size",
        "512",
        "--batch-size",
        "8",
        "--micro-batch",
        "4",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "5",
        "--eval-every",
        "25",
        "--eval-sequences",
        "8",
        "--seed",
        "11",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--steps".into(),
        steps.to_string(),
        "--out".into(),
        dir.display().to_string(),
    ])
    .collect()
}

fn losses(dir: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].to_string()))
        .collect()
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

fn train_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map_or(0, |s| s.lines().filter(|l| l.contains("\"train\"")).count())
}

fn run_ok(args: &[String]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "isoflop {args:?} failed:\n{err}");
    err
}

fn reference(steps: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ref");
    run_ok(&small_args(&dir, steps));
    (tmp, dir)
}

#[test]
fn train_writes_records_manifest_and_checkpoint() {
    let (_t, dir) = reference(30);
    let rows: Vec<Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let train: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "train").collect();
    let eval: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "eval").collect();
    assert_eq!(train.len(), 30);
    assert_eq!(
        eval.iter()
            .map(|e| e["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![25, 30]
    );
    for (i, r) in train.iter().enumerate() {
        assert_eq!(r["step"].as_u64().unwrap(), i as u64 + 1);
        assert_eq!(r["tokens"].as_u64().unwrap(), (i as u64 + 1) * 8 * 64);
        for k in [
            "loss",
            "lr",
            "grad_norm",
            "flops_kaplan",
            "flops_standard",
            "flops_attention",
            "flops_exact",
            "step_flops_exact",
            "elapsed_s",
            "tokens_per_s",
        ] {
            assert!(
                r[k].as_f64().is_some_and(f64::is_finite),
                "{k} missing in {r}"
            );
        }
    }
    let first = train[0]["loss"].as_f64().unwrap();
    let last = train[29]["loss"].as_f64().unwrap();
    assert!(
        (first - (512f64).ln()).abs() < 0.3,
        "initial loss {first} should be near ln V"
    );
    assert!(last < first - 0.5, "loss did not fall: {first} → {last}");
    assert!(eval[1]["eval_loss_se"].as_f64().unwrap() > 0.0);
    let m = manifest(&dir);
    assert_eq!(m["status"], "finished");
    assert_eq!(m["steps_done"], 30);
    assert_eq!(m["config"]["model"]["d_model"], 128);
    assert!(m["params"]["total"].as_u64().unwrap() > 0);
    assert!(dir
        .join("checkpoints/step-00000030/model.safetensors")
        .exists());
    // The same seed reproduces the same losses bit for bit.
    let (_t2, again) = reference(30);
    assert_eq!(losses(&dir), losses(&again));
}

#[test]
fn sigkill_at_a_random_step_then_resume_is_bitwise_identical() {
    let steps = 100;
    let (_t, refdir) = reference(steps);
    let expected = losses(&refdir);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("killed");
    // A step chosen at random (from the clock) in 10..60, printed so a failure can be reproduced.
    let kill_at = 10
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as usize
            % 50);
    eprintln!("killing after {kill_at} steps");
    let mut args = small_args(&dir, steps);
    args.extend(["--checkpoint-every".into(), "7".into()]);
    let mut child = Command::new(BIN)
        .args(&args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while train_lines(&dir) < kill_at {
        assert!(t0.elapsed() < Duration::from_secs(120), "run too slow");
        assert!(
            child.try_wait().unwrap().is_none(),
            "run finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(manifest(&dir)["status"], "running");
    run_ok(&[
        "train".into(),
        "--resume".into(),
        dir.display().to_string(),
        "--device".into(),
        "cpu".into(),
    ]);
    assert_eq!(losses(&dir), expected);
    let m = manifest(&dir);
    assert_eq!(m["status"], "finished");
    assert_eq!(m["resumed_at"].as_array().unwrap().len(), 1);
}

#[test]
fn sigterm_writes_a_checkpoint_and_resume_matches() {
    let steps = 60;
    let (_t, refdir) = reference(steps);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("term");
    let mut args = small_args(&dir, steps);
    args.extend(["--checkpoint-every".into(), "0".into()]);
    let child = Command::new(BIN)
        .args(&args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while train_lines(&dir) < 5 {
        assert!(t0.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(2));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("interrupted at step") && err.contains("--resume"),
        "{err}"
    );
    let m = manifest(&dir);
    assert_eq!(m["status"], "interrupted");
    let step = m["steps_done"].as_u64().unwrap();
    assert!(dir
        .join(format!("checkpoints/step-{step:08}/state.json"))
        .exists());
    run_ok(&["train".into(), "--resume".into(), dir.display().to_string()]);
    assert_eq!(losses(&dir), losses(&refdir));
}

#[test]
fn nan_loss_stops_the_run_and_marks_it_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nan");
    let mut args = small_args(&dir, 20);
    for (flag, value) in [("--lr", "1e30"), ("--warmup-steps", "0")] {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = value.into();
    }
    args.extend(["--checkpoint-every".into(), "1".into()]);
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("step ") && err.contains("not finite"), "{err}");
    let m = manifest(&dir);
    assert_eq!(m["status"], "failed");
    let reason = m["reason"].as_str().unwrap();
    assert!(
        reason.contains("not finite") && reason.contains("checkpoint"),
        "{reason}"
    );
    // The last good checkpoint is still loadable.
    let ck = std::fs::read_dir(dir.join("checkpoints")).unwrap().count();
    assert!(ck >= 1);
}

#[test]
fn export_writes_a_tidy_csv() {
    let (_t, dir) = reference(10);
    let out = dir.parent().unwrap().join("steps.csv");
    run_ok(&[
        "export".into(),
        dir.display().to_string(),
        "--format".into(),
        "csv".into(),
        "--out".into(),
        out.display().to_string(),
    ]);
    let text = std::fs::read_to_string(out).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert!(
        header.contains(&"flops_exact") && header.contains(&"d_model") && header.contains(&"loss")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|r| r.len() == header.len()));
}

#[test]
fn bad_flags_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["train", "--d-model", "100", "--data", "synthetic"],
            "--d-model",
        ),
        (
            &[
                "train",
                "--batch-size",
                "6",
                "--micro-batch",
                "4",
                "--data",
                "synthetic",
            ],
            "--micro-batch",
        ),
        (&["train", "--preset", "huge"], "--preset"),
        (&["train", "--device", "tpu"], "--device"),
        (&["train", "--resume", "/nonexistent/run"], "run.json"),
        (
            &["train", "--resume", "/nonexistent/run", "--steps", "5"],
            "--steps",
        ),
        (&["train", "--config", "/nonexistent/c.toml"], "c.toml"),
        (
            &[
                "train",
                "--device",
                "cuda:7",
                "--data",
                "synthetic",
                "--steps",
                "1",
            ],
            "cuda:7",
        ),
    ];
    for (args, needle) in cases {
        let out = Command::new(BIN)
            .args(*args)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            err.contains(needle),
            "{args:?}: error should mention {needle}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

#[test]
fn info_prints_counts_and_budgets() {
    let out = Command::new(BIN)
        .args(["info", "--d-model", "512", "--n-layers", "8", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["params"]["n"], 41_611_264u64);
    assert_eq!(
        v["flops_per_token"]["standard"].as_f64().unwrap(),
        6.0 * 41_611_264.0
    );
    assert_eq!(
        v["chinchilla_tokens"].as_f64().unwrap(),
        20.0 * 41_611_264.0
    );
}

#[test]
fn resume_refuses_a_checkpoint_from_another_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mismatch");
    let mut args = small_args(&dir, 20);
    args.extend([
        "--stop-after".into(),
        "5".into(),
        "--checkpoint-every".into(),
        "0".into(),
    ]);
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(manifest(&dir)["status"], "interrupted");
    // Tamper with the checkpoint's recorded configuration.
    let state = dir.join("checkpoints/step-00000005/state.json");
    let text = std::fs::read_to_string(&state)
        .unwrap()
        .replace("\"seed\": 11", "\"seed\": 12");
    std::fs::write(&state, text).unwrap();
    let out = Command::new(BIN)
        .args(["train", "--resume", &dir.display().to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("state.json") || err.contains("step-00000005"),
        "{err}"
    );
    assert!(err.contains("configuration differs"), "{err}");
    // A truncated model file is refused, naming the file.
    let model = dir.join("checkpoints/step-00000005/model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 3]).unwrap();
    let out = Command::new(BIN)
        .args(["train", "--resume", &dir.display().to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("model.safetensors"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn resume_from_the_final_checkpoint_adds_no_duplicate_rows() {
    // A run killed after its final checkpoint but before run.json said `finished`.
    let (_t, dir) = reference(10);
    let before = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let text = std::fs::read_to_string(dir.join("run.json"))
        .unwrap()
        .replace("\"finished\"", "\"running\"");
    std::fs::write(dir.join("run.json"), text).unwrap();
    run_ok(&["train".into(), "--resume".into(), dir.display().to_string()]);
    let after = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(before, after);
    let m = manifest(&dir);
    assert_eq!(m["status"], "finished");
    assert!(m["final_figures"]["eval_loss"].as_f64().is_some());
}

#[test]
fn no_final_checkpoint_writes_no_checkpoint_and_refuses_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nockpt");
    let mut args = small_args(&dir, 6);
    args.extend(["--checkpoint-every", "0", "--no-final-checkpoint"].map(String::from));
    run_ok(&args);
    assert_eq!(train_lines(&dir), 6);
    assert_eq!(manifest(&dir)["status"], "finished");
    let ckpts = dir.join("checkpoints");
    let n = std::fs::read_dir(&ckpts).map_or(0, |d| d.count());
    assert_eq!(n, 0, "{} holds checkpoints", ckpts.display());
    // Interrupted (as by SIGTERM from `timeout`): still no checkpoint, and the error says why.
    let dir2 = tmp.path().join("stopped");
    let mut args = small_args(&dir2, 6);
    args.extend(
        [
            "--checkpoint-every",
            "0",
            "--no-final-checkpoint",
            "--stop-after",
            "2",
        ]
        .map(String::from),
    );
    let out = Command::new(BIN).args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no checkpoint written"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir2.join("checkpoints")).map_or(0, |d| d.count()),
        0
    );
    assert_eq!(manifest(&dir2)["status"], "interrupted");
    // Refused together with --resume, naming both flags.
    let out = Command::new(BIN)
        .args([
            "train",
            "--resume",
            &dir2.display().to_string(),
            "--no-final-checkpoint",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--no-final-checkpoint") && err.contains("--resume"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

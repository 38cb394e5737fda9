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

/// [`small_args`] followed by `extra`.
fn small_args_with(dir: &Path, steps: u64, extra: &[&str]) -> Vec<String> {
    let mut args = small_args(dir, steps);
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// `train --resume DIR --device cpu`.
fn resume_on_cpu(dir: &Path) -> Vec<String> {
    [
        "train",
        "--resume",
        &dir.display().to_string(),
        "--device",
        "cpu",
    ]
    .map(String::from)
    .to_vec()
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
    let args = small_args_with(&dir, steps, &["--checkpoint-every", "7"]);
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
    run_ok(&resume_on_cpu(&dir));
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
    let args = small_args_with(&dir, steps, &["--checkpoint-every", "0"]);
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
        // Issue 14 item 8: each of these ran (or panicked) before.
        (
            &["train", "--batch-size", "0", "--data", "synthetic"],
            "--batch-size",
        ),
        (&["train", "--eps=-1", "--data", "synthetic"], "--eps"),
        (
            &["train", "--weight-decay=-1", "--data", "synthetic"],
            "--weight-decay",
        ),
        (
            &["train", "--tokens", "0", "--data", "synthetic"],
            "--tokens",
        ),
        (
            &["train", "--token-multiplier", "0", "--data", "synthetic"],
            "--token-multiplier",
        ),
        (
            &["train", "--token-multiplier=-1", "--data", "synthetic"],
            "--token-multiplier",
        ),
        (
            &["train", "--eval-sequences", "0", "--data", "synthetic"],
            "--eval-sequences",
        ),
        (
            &["train", "--keep-checkpoints", "0", "--data", "synthetic"],
            "--keep-checkpoints",
        ),
        (
            &[
                "train",
                "--resume",
                "/nonexistent/run",
                "--eval-sequences",
                "0",
            ],
            "--eval-sequences",
        ),
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
    let args = small_args_with(&dir, 20, &["--stop-after", "5", "--checkpoint-every", "0"]);
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

/// Issue 14 item 8: a batch that cannot fit in memory is refused before anything is allocated or written.
#[test]
fn a_batch_that_does_not_fit_in_memory_is_refused_before_starting() {
    let tmp = tempfile::tempdir().unwrap();
    for extra in [
        &["--batch-size", "100000000", "--micro-batch", "100000000"][..],
        // Not a multiple of the default micro-batch (8): the whole batch becomes one micro-batch.
        &["--batch-size", "99999999"][..],
    ] {
        let dir = tmp.path().join("huge");
        let out = Command::new(BIN)
            .args([
                "train",
                "--device",
                "cpu",
                "--data",
                "synthetic",
                "--steps",
                "2",
            ])
            .args(extra)
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} should fail: {err}");
        assert!(
            err.contains("--micro-batch") && err.contains("GiB") && err.contains("available"),
            "{extra:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dir.join("run.json").exists(), "no run.json may be left");
    }
}

/// Issue 14 item 1: a reader of stderr that goes away (`| head -3`, a closed ssh session) must not stop
/// the run: it finishes with its final checkpoint, and the run log says output was dropped.
#[test]
fn a_closed_stderr_does_not_stop_training() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pipe");
    let args = small_args_with(&dir, 30, &["--log-every", "1"]);
    let mut child = Command::new(BIN)
        .args(&args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        for _ in 0..3 {
            lines.next().unwrap().unwrap();
        }
    } // the read end is closed here
    let status = child.wait().unwrap();
    assert!(status.success(), "the run died with {status}");
    let m = manifest(&dir);
    assert_eq!(m["status"], "finished");
    assert_eq!(m["steps_done"], 30);
    assert_eq!(train_lines(&dir), 30);
    assert!(dir
        .join("checkpoints/step-00000030/model.safetensors")
        .exists());
    let log = std::fs::read_to_string(dir.join("run.log")).unwrap();
    assert_eq!(log.matches("stderr cannot be written").count(), 1, "{log}");
}

/// Start `args`, wait for `lines` train rows, send `sig`, wait for the end.
fn signal_after(args: &[String], dir: &Path, lines: usize, sig: i32) -> std::process::Output {
    let child = Command::new(BIN)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while train_lines(dir) < lines {
        assert!(t0.elapsed() < Duration::from_secs(120), "run too slow");
        std::thread::sleep(Duration::from_millis(2));
    }
    unsafe { libc::kill(child.id() as i32, sig) };
    child.wait_with_output().unwrap()
}

/// Issue 14 item 1: SIGHUP (a closed terminal) is ignored once training started; with
/// `--stop-on-hangup` it checkpoints and stops like SIGTERM.
#[test]
fn sighup_is_ignored_unless_stop_on_hangup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hup");
    let out = signal_after(&small_args(&dir, 40), &dir, 3, libc::SIGHUP);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(manifest(&dir)["status"], "finished");
    let log = std::fs::read_to_string(dir.join("run.log")).unwrap();
    assert!(log.contains("SIGHUP"), "{log}");

    let dir = tmp.path().join("hup-stop");
    let args = small_args_with(&dir, 60, &["--stop-on-hangup", "--checkpoint-every", "0"]);
    let out = signal_after(&args, &dir, 3, libc::SIGHUP);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("interrupted at step"),
        "{err}"
    );
    let m = manifest(&dir);
    assert_eq!(m["status"], "interrupted");
    let step = m["steps_done"].as_u64().unwrap();
    assert!(step < 60);
    assert!(dir
        .join(format!("checkpoints/step-{step:08}/state.json"))
        .exists());
}

/// Issue 14 item 3: while a trainer runs, a second one on the same directory (`--resume` or `--out`) is
/// refused naming the holder's PID; after a SIGKILL the kernel has released the lock.
#[test]
fn a_second_trainer_on_a_run_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("locked");
    let mut child = Command::new(BIN)
        .args(small_args(&dir, 400))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while train_lines(&dir) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(120), "run too slow");
        std::thread::sleep(Duration::from_millis(2));
    }
    let holder = format!("process {}", child.id());
    let resume = [
        "train".to_string(),
        "--resume".into(),
        dir.display().to_string(),
    ];
    for args in [resume.to_vec(), small_args(&dir, 400)] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started a second trainer");
        assert!(err.contains(&holder) && err.contains("in use"), "{err}");
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(dir.join("run.lock").exists());
    let mut args = resume.to_vec();
    args.extend(["--stop-after".into(), "3".into()]);
    let out = Command::new(BIN).args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // (The killed run may have checkpointed at step 100 already; either way it continues.)
    assert!(err.contains("interrupted at step"), "{err}");
    assert_eq!(manifest(&dir)["status"], "interrupted");
}

/// Issue 14 item 2: resume keeps the run's checkpoint cadence and count (and eval/log settings); flags
/// on the resume command override them and are recorded in run.json; losses stay bitwise identical.
#[test]
fn resume_keeps_the_runs_settings_and_records_overrides() {
    let (_t, refdir) = reference(30);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ops");
    let args = small_args_with(
        &dir,
        30,
        &[
            "--checkpoint-every",
            "5",
            "--keep-checkpoints",
            "3",
            "--stop-after",
            "12",
        ],
    );
    let _ = Command::new(BIN).args(&args).output().unwrap();
    assert_eq!(manifest(&dir)["status"], "interrupted");
    let ckpts = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let resume = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["train", "--resume", &dir.display().to_string()])
            .args(extra)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // No flags: every 5 steps, 3 kept, as the run was started.
    let err = resume(&["--stop-after", "22"]);
    assert!(err.contains("interrupted at step 22"), "{err}");
    assert_eq!(
        ckpts(&dir),
        ["step-00000015", "step-00000020", "step-00000022"]
    );
    let m = manifest(&dir);
    assert_eq!(m["operational"]["checkpoint_every"], 5);
    assert_eq!(m["overrides"].as_array().unwrap().len(), 0);
    // Flags override the operational settings (recorded), from this resume on.
    let err = resume(&[
        "--checkpoint-every",
        "4",
        "--keep-checkpoints",
        "1",
        "--eval-every",
        "3",
    ]);
    assert!(err.contains("--checkpoint-every: 4"), "{err}");
    assert_eq!(ckpts(&dir), ["step-00000030"]);
    let m = manifest(&dir);
    assert_eq!(m["status"], "finished");
    assert_eq!(m["operational"]["checkpoint_every"], 4);
    assert_eq!(m["config"]["eval_every"], 3);
    let o: Vec<(u64, &str, &str, &str)> = m["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["step"].as_u64().unwrap(),
                o["flag"].as_str().unwrap(),
                o["from"].as_str().unwrap(),
                o["to"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        o,
        [
            (22, "--checkpoint-every", "5", "4"),
            (22, "--keep-checkpoints", "3", "1"),
            (22, "--eval-every", "25", "3"),
        ]
    );
    let evals: Vec<u64> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "eval")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(evals, [24, 27, 30]);
    assert_eq!(losses(&dir), losses(&refdir));
}

#[test]
fn damaged_checkpoints_and_metrics_are_refused_or_repaired_on_resume() {
    let steps = 30;
    let (_t, refdir) = reference(steps);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("damaged");
    let mut args = small_args(&dir, steps);
    for a in [
        "--checkpoint-every",
        "5",
        "--keep-checkpoints",
        "5",
        "--stop-after",
        "20",
    ] {
        args.push(a.into());
    }
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(manifest(&dir)["status"], "interrupted");
    let ck = |s: u64| dir.join(format!("checkpoints/step-{s:08}"));
    // Item 4: one flipped bit inside step 20's optimizer tensors (the file stays a valid safetensors).
    let op = ck(20).join("optimizer.safetensors");
    let mut bytes = std::fs::read(&op).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    std::fs::write(&op, bytes).unwrap();
    // Item 5: step 5's state.json copied into step 15.
    std::fs::copy(ck(5).join("state.json"), ck(15).join("state.json")).unwrap();
    // Item 7: the row of step 3 becomes garbage, the row of step 8 disappears.
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let damaged: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            match (v["kind"].as_str(), v["step"].as_u64()) {
                (Some("train"), Some(3)) => Some("{\"kind\": \"train\", \"st\u{0}".to_string()),
                (Some("train"), Some(8)) => None,
                _ => Some(l.to_string()),
            }
        })
        .collect();
    std::fs::write(dir.join("metrics.jsonl"), damaged.join("\n") + "\n").unwrap();
    let err = run_ok(&resume_on_cpu(&dir));
    let m = manifest(&dir);
    let warnings: Vec<&str> = m["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    for want in [
        "step-00000020/optimizer.safetensors: checksum",
        "state.json says step 5, but the directory is step 15",
        "resuming from the previous good checkpoint, step 10",
        "unreadable line(s) 3 dropped",
        "step(s) 3, 8 restored from the record in checkpoint step-00000010",
    ] {
        assert!(err.contains(want), "terminal lacks {want:?}:\n{err}");
        assert!(
            warnings.iter().any(|w| w.contains(want)),
            "run.json lacks {want:?}: {warnings:?}"
        );
    }
    assert_eq!(m["status"], "finished");
    assert_eq!(m["resumed_at"], serde_json::json!([10]));
    // The refused checkpoints were moved aside, not deleted.
    assert!(dir
        .join("checkpoints/step-00000020.refused/optimizer.safetensors")
        .exists());
    assert!(dir
        .join("checkpoints/step-00000015.refused/state.json")
        .exists());
    // `isoflop eval` verifies the same way.
    let out = Command::new(BIN)
        .args(["eval", "--checkpoint"])
        .arg(dir.join("checkpoints/step-00000020.refused"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("optimizer.safetensors: checksum"),
        "{e}"
    );
    // Resumed from step 10 with the history whole: bitwise the uninterrupted run.
    assert_eq!(losses(&dir), losses(&refdir));
}

/// A real small disk: a tmpfs of `bytes` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Tmpfs {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("fs");
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test needs a real full disk: `mount -t tmpfs` failed (run the tests as root or with \
             CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "disk-full mechanism: a {bytes}-byte tmpfs mounted at {}",
            dir.display()
        );
        Tmpfs { dir, _tmp: tmp }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Every `*.tmp` file or directory under `dir`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.to_string_lossy().ends_with(".tmp") {
            out.push(p.clone());
        }
        if p.is_dir() {
            out.extend(temporaries(&p));
        }
    }
    out
}

#[test]
fn checkpoints_that_do_not_fit_are_skipped_and_training_goes_on() {
    // 3 MiB: run.json and metrics fit, a checkpoint (2 MB of parameters, 4 MB of moments) does not.
    let fs = Tmpfs::mount(3 << 20);
    let dir = fs.dir.join("run");
    let args = small_args_with(&dir, 20, &["--checkpoint-every", "10"]);
    let err = run_ok(&args);
    assert!(
        err.contains("checkpoint not written") && err.contains("No space left on device"),
        "{err}"
    );
    assert!(!err.contains("is kept") && !err.contains("intact"), "{err}");
    let m = manifest(&dir);
    assert_eq!(m["status"], "finished");
    let warnings = m["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    for w in warnings {
        let w = w.as_str().unwrap();
        assert!(w.contains("there is no earlier checkpoint"), "{w}");
    }
    assert_eq!(temporaries(&dir), Vec::<PathBuf>::new());
    assert_eq!(train_lines(&dir), 20);
}

#[test]
fn a_disk_that_fills_up_stops_the_run_cleanly_and_it_resumes() {
    let steps = 40;
    let (_t, refdir) = reference(steps);
    let fs = Tmpfs::mount(40 << 20);
    let dir = fs.dir.join("run");
    let args = small_args_with(&dir, steps, &["--checkpoint-every", "25"]);
    let mut child = Command::new(BIN)
        .args(&args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    // After the checkpoint of step 25, fill the disk: the 14 rows (~480 bytes each) before the final
    // checkpoint need at least one new page.
    while train_lines(&dir) < 26 {
        assert!(t0.elapsed() < Duration::from_secs(120), "run too slow");
        assert!(child.try_wait().unwrap().is_none(), "run ended too early");
        std::thread::sleep(Duration::from_millis(2));
    }
    let filler = fs.dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 4096];
        while f.write_all(&chunk).is_ok() {}
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("No space left on device")
            && (err.contains("metrics.jsonl") || err.contains("run.json"))
            && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(temporaries(&dir), Vec::<PathBuf>::new());
    std::fs::remove_file(&filler).unwrap();
    run_ok(&["train".into(), "--resume".into(), dir.display().to_string()]);
    assert_eq!(manifest(&dir)["status"], "finished");
    assert_eq!(losses(&dir), losses(&refdir));
}

#[test]
fn no_final_checkpoint_writes_no_checkpoint_and_refuses_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nockpt");
    let args = small_args_with(
        &dir,
        6,
        &["--checkpoint-every", "0", "--no-final-checkpoint"],
    );
    run_ok(&args);
    assert_eq!(train_lines(&dir), 6);
    assert_eq!(manifest(&dir)["status"], "finished");
    let ckpts = dir.join("checkpoints");
    let n = std::fs::read_dir(&ckpts).map_or(0, |d| d.count());
    assert_eq!(n, 0, "{} holds checkpoints", ckpts.display());
    // Interrupted (as by SIGTERM from `timeout`): still no checkpoint, and the error says why.
    let dir2 = tmp.path().join("stopped");
    let args = small_args_with(
        &dir2,
        6,
        &[
            "--checkpoint-every",
            "0",
            "--no-final-checkpoint",
            "--stop-after",
            "2",
        ],
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

/// Copy the directory tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// `(kind, step, loss)` of every row of a metrics file, the loss as written (train or eval).
fn loss_rows(path: &Path) -> Vec<(String, u64, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            let loss = match v["kind"].as_str().unwrap() {
                "train" => v["loss"].to_string(),
                _ => v["eval_loss"].to_string(),
            };
            (v["kind"].to_string(), v["step"].as_u64().unwrap(), loss)
        })
        .collect()
}

/// A run interrupted by main's binary before the run driver, loader state and records were refactored
/// (tests/fixtures/run-main-4a61c73.md) resumes with this binary to exactly the losses of that binary's
/// uninterrupted run: old checkpoints keep loading and resuming bit for bit.
#[test]
fn a_run_interrupted_by_main_resumes_bitwise() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run-main-4a61c73");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("old");
    copy_tree(&fixture, &dir);
    let expected = loss_rows(&dir.join("uninterrupted-metrics.jsonl"));
    std::fs::remove_file(dir.join("uninterrupted-metrics.jsonl")).unwrap();
    assert_eq!(manifest(&dir)["status"], "interrupted");
    let err = run_ok(&resume_on_cpu(&dir));
    assert!(
        err.contains("resuming") && err.contains("at step 3/6"),
        "{err}"
    );
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(loss_rows(&dir.join("metrics.jsonl")), expected);
    let m = manifest(&dir);
    assert_eq!(m["status"], "finished");
    assert_eq!(m["resumed_at"], serde_json::json!([3]));
    // The new final checkpoint's loader state has the JSON form of the old one.
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("checkpoints/step-00000006/state.json")).unwrap(),
    )
    .unwrap();
    let old: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture.join("checkpoints/step-00000003/state.json")).unwrap(),
    )
    .unwrap();
    let keys = |v: &Value| {
        v["source"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&state), keys(&old));
    assert_eq!(state["source"]["position"], 12);
}

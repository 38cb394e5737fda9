//! End-to-end tests of `isoflop sweep` on the CPU with synthetic data and tiny models: plan table, run,
//! SIGKILL + rerun, failures, status, exports, Slurm script, `--only`, spec refusal and determinism.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_isoflop");

/// A synthetic-data IsoFLOP spec; every run takes about a second on 2 cores.
fn spec_text(flops: &str, sizes: &str, train_extra: &str) -> String {
    format!(
        "name = \"t\"\ndata = {{ kind = \"synthetic\" }}\nseed = 5\n\
         [model]\nseq_len = 64\nvocab_size = 512\nsizes = [{sizes}]\n\
         [budget]\nstyle = \"isoflop\"\nflops = [{flops}]\n\
         [train]\nbatch_size = 8\nmicro_batch = 4\neval_sequences = 8\n{train_extra}\n"
    )
}

const TWO_SIZES: &str = "{ d_model = 64, n_layers = 1 }, { d_model = 128, n_layers = 2 }";

fn write_spec(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn isoflop(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = isoflop(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "isoflop {args:?} failed:\n{err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn plan_names(dir: &Path) -> Vec<String> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

fn manifest(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap()
}

fn train_lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map_or(0, |s| s.lines().filter(|l| l.contains("\"train\"")).count())
}

/// Parse a CSV written by the exporter (no quoted fields expected here): header and rows.
fn csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    for r in &rows {
        assert_eq!(
            r.len(),
            header.len(),
            "{}: ragged row {r:?}",
            path.display()
        );
    }
    (header, rows)
}

fn col<'a>(header: &[String], row: &'a [String], name: &str) -> &'a str {
    let i = header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    &row[i]
}

#[test]
fn plan_table_lists_every_run_with_flops_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(
        tmp.path(),
        "s.toml",
        &spec_text("3e10, 6e10", TWO_SIZES, "lr = 3e-3"),
    );
    let out = ok(&["sweep", "plan", s(&spec), "--tokens-per-s", "10000"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("name") && lines[0].contains("FLOPs(standard)"));
    assert!(lines[0].contains("est. time"));
    let names: Vec<&str> = lines[1..5]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "c3e10-d64l1-s0",
            "c3e10-d128l2-s0",
            "c6e10-d64l1-s0",
            "c6e10-d128l2-s0"
        ]
    );
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    // name D L params tokens tok/param steps batch lr warmup FLOPs budget seed time
    assert_eq!((row[1], row[2]), ("128", "2"));
    let steps: u64 = row[6].parse().unwrap();
    // Standard FLOPs of the run: 6·N·steps·8·64 with N = 2·(12·128² + 2·128 + 128) + 128 + 128·512.
    let n = 2 * (12 * 128 * 128 + 2 * 128 + 128) + 128 + 128 * 512;
    let flops = 6.0 * n as f64 * (steps * 8 * 64) as f64;
    assert_eq!(row[10], format!("{flops:.3e}"));
    assert!(flops >= 3e10 && flops < 3e10 + 6.0 * n as f64 * 512.0);
    assert!(lines[5].starts_with("4 runs") && lines[6].contains("10000 tokens/s"));
    // JSON plan: the same runs.
    let v: Value = serde_json::from_str(&ok(&["sweep", "plan", s(&spec), "--json"])).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 4);
    assert_eq!(v["runs"][1]["config"]["steps"].as_u64(), Some(steps));
}

#[test]
fn micro_sweep_plans_two_budgets_of_three_sizes_on_the_bundled_sample() {
    let micro = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sweeps/micro.toml");
    let v: Value = serde_json::from_str(&ok(&["sweep", "plan", s(&micro), "--json"])).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6);
    let budgets: std::collections::BTreeSet<String> =
        runs.iter().map(|r| r["budget"].to_string()).collect();
    assert_eq!(budgets.len(), 2);
    for r in runs {
        assert_eq!(r["config"]["data"]["kind"], "bundled");
        assert_eq!(r["config"]["model"]["vocab_size"], 32101);
    }
}

#[test]
fn sigkill_mid_sweep_then_rerun_finishes_without_redoing_runs_and_matches_parallel_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(
        tmp.path(),
        "s.toml",
        &spec_text("3e10, 6e10", TWO_SIZES, "lr = 3e-3"),
    );
    let dir = tmp.path().join("sweep");
    let runs = dir.join("runs");
    let mut sweep = Command::new(BIN)
        .args([
            "sweep",
            "run",
            s(&spec),
            "--out",
            s(&dir),
            "--device",
            "cpu",
        ])
        .args(["--checkpoint-every", "5"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the sweep once the first run is finished and the second is part-way.
    let t0 = Instant::now();
    let (first, second) = (runs.join("c3e10-d64l1-s0"), runs.join("c3e10-d128l2-s0"));
    loop {
        assert!(t0.elapsed() < Duration::from_secs(120), "sweep too slow");
        assert!(
            sweep.try_wait().unwrap().is_none(),
            "sweep ended before it could be killed"
        );
        let first_done =
            first.join("run.json").exists() && manifest(&first)["status"] == "finished";
        if first_done && train_lines(&second) >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    sweep.kill().unwrap(); // SIGKILL
    sweep.wait().unwrap();
    let status = ok(&["sweep", "status", s(&dir)]);
    let state = |name: &str| -> String {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(state("c3e10-d64l1-s0"), "finished", "{status}");
    assert!(
        ["running", "interrupted"].contains(&state("c3e10-d128l2-s0").as_str()),
        "{status}"
    );
    assert_eq!(state("c6e10-d128l2-s0"), "pending", "{status}");
    assert!(status.contains("1 finished") && status.contains("pending"));
    let before = std::fs::read(first.join("metrics.jsonl")).unwrap();
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before_t = (
        mtime(&first.join("metrics.jsonl")),
        mtime(&first.join("run.json")),
    );

    let out = isoflop(&[
        "sweep",
        "run",
        s(&spec),
        "--out",
        s(&dir),
        "--device",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("skipped c3e10-d64l1-s0: already finished"),
        "{err}"
    );
    assert!(err.contains("3 finished now, 1 already finished"), "{err}");
    assert_eq!(std::fs::read(first.join("metrics.jsonl")).unwrap(), before);
    assert_eq!(
        (
            mtime(&first.join("metrics.jsonl")),
            mtime(&first.join("run.json"))
        ),
        before_t
    );
    // The interrupted run was resumed from its checkpoint, not restarted.
    let m = manifest(&second);
    assert_eq!(m["status"], "finished");
    assert_eq!(m["resumed_at"].as_array().unwrap().len(), 1, "{m}");
    assert!(m["resumed_at"][0].as_u64().unwrap() >= 3);

    // A third invocation has nothing to do.
    let out = isoflop(&[
        "sweep",
        "run",
        s(&spec),
        "--out",
        s(&dir),
        "--device",
        "cpu",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 finished now, 4 already finished"));

    // Exports parse, and equal (bit for bit) those of the same spec run uninterrupted, two runs at a time.
    ok(&["sweep", "export", s(&dir)]);
    let par = tmp.path().join("parallel");
    ok(&[
        "sweep",
        "run",
        s(&spec),
        "--out",
        s(&par),
        "--devices",
        "cpu,cpu",
    ]);
    ok(&["sweep", "export", s(&par)]);
    let (h, rows) = csv(&dir.join("runs.csv"));
    let (h2, rows2) = csv(&par.join("runs.csv"));
    assert_eq!(h, h2);
    assert_eq!(rows.len(), 4);
    for name in [
        "n_params",
        "n_params_total",
        "non_embedding",
        "tokens",
        "loss",
        "eval_loss",
        "eval_loss_se",
        "flops_kaplan",
        "flops_standard",
        "flops_attention",
        "flops_exact",
        "budget",
        "seed",
    ] {
        for r in &rows {
            let v = col(&h, r, name);
            assert!(v.parse::<f64>().is_ok_and(f64::is_finite), "{name} = {v:?}");
        }
    }
    for (a, b) in rows.iter().zip(&rows2) {
        assert_eq!(col(&h, a, "status"), "finished");
        for name in ["name", "seed", "loss", "eval_loss", "tokens", "flops_exact"] {
            assert_eq!(col(&h, a, name), col(&h, b, name), "{name}");
        }
    }
    let (sh, srows) = csv(&dir.join("steps.csv"));
    let total_steps: usize = rows
        .iter()
        .map(|r| col(&h, r, "steps").parse::<usize>().unwrap())
        .sum();
    assert_eq!(srows.len(), total_steps);
    for r in &srows {
        for name in ["step", "tokens", "loss", "flops_standard", "n_params"] {
            assert!(col(&sh, r, name).parse::<f64>().is_ok(), "{name}");
        }
    }
    let (_, srows2) = csv(&par.join("steps.csv"));
    let loss_of = |rows: &[Vec<String>]| -> Vec<String> {
        rows.iter()
            .map(|r| col(&sh, r, "loss").to_string())
            .collect()
    };
    assert_eq!(loss_of(&srows), loss_of(&srows2));
}

#[test]
fn a_failed_run_is_recorded_and_the_sweep_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    // d64 diverges (lr 1e30 → NaN); d128 trains normally.
    let spec = write_spec(
        tmp.path(),
        "s.toml",
        &spec_text(
            "1e10",
            "{ d_model = 64, n_layers = 1 }, { d_model = 128, n_layers = 1 }",
            "lr = { table = { 64 = 1e30, 128 = 3e-3 } }\nwarmup = { steps = 0 }",
        ),
    );
    let dir = tmp.path().join("sweep");
    let out = isoflop(&[
        "sweep",
        "run",
        s(&spec),
        "--out",
        s(&dir),
        "--device",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("FAILED c1e10-d64l1-s0") && err.contains("not finite"),
        "{err}"
    );
    assert!(err.contains("finished c1e10-d128l1-s0"), "{err}");
    let status = ok(&["sweep", "status", s(&dir)]);
    let failed = status
        .lines()
        .find(|l| l.starts_with("c1e10-d64l1-s0"))
        .unwrap();
    assert!(
        failed.contains("failed") && failed.contains("not finite"),
        "{status}"
    );
    ok(&["sweep", "export", s(&dir)]);
    let (h, rows) = csv(&dir.join("runs.csv"));
    assert_eq!(col(&h, &rows[0], "status"), "failed");
    assert_eq!(col(&h, &rows[0], "loss"), "");
    assert_eq!(col(&h, &rows[1], "status"), "finished");
    // A rerun leaves the failed run alone (it would fail again) unless asked.
    let log = dir.join("runs/c1e10-d64l1-s0/train.log");
    let log_before = std::fs::read(&log).unwrap();
    let out = isoflop(&[
        "sweep",
        "run",
        s(&spec),
        "--out",
        s(&dir),
        "--device",
        "cpu",
    ]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&log).unwrap(), log_before);
    let out = isoflop(&[
        "sweep",
        "run",
        s(&spec),
        "--out",
        s(&dir),
        "--device",
        "cpu",
        "--retry-failed",
    ]);
    assert!(!out.status.success());
    // Retried from scratch (a fresh directory, so a fresh log) and failed again.
    let retried = std::fs::read_to_string(&log).unwrap();
    assert!(retried.contains("not finite"), "{retried}");
    assert_eq!(
        manifest(&dir.join("runs/c1e10-d64l1-s0"))["resumed_at"],
        serde_json::json!([])
    );
}

#[test]
fn a_trainer_that_dies_without_a_manifest_is_recorded_as_failed() {
    let tmp = tempfile::tempdir().unwrap();
    // A shards directory without shards: the trainer exits before writing run.json. (A directory that
    // does not exist is refused by the spec check already.)
    let empty = tmp.path().join("no-shards");
    std::fs::create_dir(&empty).unwrap();
    let text = spec_text("1e10", "{ d_model = 64, n_layers = 1 }", "").replace(
        "data = { kind = \"synthetic\" }",
        &format!(
            "data = {{ kind = \"shards\", dir = \"{}\" }}",
            empty.display()
        ),
    );
    let spec = write_spec(tmp.path(), "s.toml", &text);
    let dir = tmp.path().join("sweep");
    let out = isoflop(&[
        "sweep",
        "run",
        s(&spec),
        "--out",
        s(&dir),
        "--device",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("FAILED c1e10-d64l1-s0: trainer") && err.contains("exited with status"),
        "{err}"
    );
    let f: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("runs/c1e10-d64l1-s0/failure.json")).unwrap(),
    )
    .unwrap();
    assert!(f["reason"].as_str().unwrap().contains("exited with status"));
    assert!(ok(&["sweep", "status", s(&dir)]).contains("failed"));
}

#[test]
fn slurm_script_is_well_formed_and_each_task_runs_exactly_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(
        tmp.path(),
        "s.toml",
        &spec_text(
            "5e9, 1e10",
            "{ d_model = 64, n_layers = 1 }, { d_model = 64, n_layers = 2 }",
            "",
        ),
    );
    let dir = tmp.path().join("sweep");
    ok(&[
        "sweep",
        "slurm",
        s(&spec),
        "--out",
        s(&dir),
        "--bin",
        BIN,
        "--device",
        "cpu",
        "--gpus",
        "0",
        "--time",
        "00:30:00",
        "--partition",
        "debug",
        "--max-parallel",
        "2",
    ]);
    let script = dir.join("sweep.sbatch");
    let text = std::fs::read_to_string(&script).unwrap();
    let st = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success(), "bash -n rejects the script:\n{text}");
    let names = plan_names(&dir);
    assert_eq!(names.len(), 4);
    assert!(text.contains("#SBATCH --array=0-3%2\n"), "{text}");
    assert!(
        text.contains("#SBATCH --time=00:30:00\n") && text.contains("#SBATCH --partition=debug\n")
    );
    assert!(!text.contains("--gpus="));
    assert!(text.contains(&format!("#SBATCH --output={}/slurm/", dir.display())));
    // Every #SBATCH line comes before the first command.
    let first_cmd = text
        .lines()
        .position(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap();
    assert!(text
        .lines()
        .skip(first_cmd)
        .all(|l| !l.starts_with("#SBATCH")));
    // The task → run map, as bash sees it.
    for (i, name) in names.iter().enumerate() {
        let script_body = text.replace("exec ", "echo ");
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script_body)
            .env("SLURM_ARRAY_TASK_ID", i.to_string())
            .output()
            .unwrap();
        let o = String::from_utf8_lossy(&out.stdout);
        assert!(
            o.contains(&format!("--only {name} ")),
            "task {i} should run {name}: {o}"
        );
    }
    // Run task 2 for real: exactly that run is trained.
    let out = Command::new("bash")
        .arg(&script)
        .env("SLURM_ARRAY_TASK_ID", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, name) in names.iter().enumerate() {
        let done = dir.join("runs").join(name).join("run.json").exists();
        assert_eq!(done, i == 2, "{name}");
    }
    assert_eq!(
        manifest(&dir.join("runs").join(&names[2]))["status"],
        "finished"
    );
    // Out-of-range task ids and a missing task id are refused.
    for env in [Some("4"), None] {
        let mut c = Command::new("bash");
        c.arg(&script);
        match env {
            Some(v) => c.env("SLURM_ARRAY_TASK_ID", v),
            None => c.env_remove("SLURM_ARRAY_TASK_ID"),
        };
        assert_eq!(c.output().unwrap().status.code(), Some(2));
    }
    // --only with an unknown name lists the runs.
    let out = isoflop(&[
        "sweep",
        "run",
        s(&spec),
        "--out",
        s(&dir),
        "--device",
        "cpu",
        "--only",
        "nope",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--only") && err.contains(&names[0]),
        "{err}"
    );
}

#[test]
fn a_directory_holding_another_specs_plan_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let text = spec_text("1e10", TWO_SIZES, "");
    let spec = write_spec(tmp.path(), "a.toml", &text);
    let dir = tmp.path().join("sweep");
    ok(&["sweep", "slurm", s(&spec), "--out", s(&dir)]);
    // The same plan with a comment added is the same sweep.
    let same = write_spec(tmp.path(), "same.toml", &format!("# a comment\n{text}"));
    ok(&["sweep", "slurm", s(&same), "--out", s(&dir)]);
    // A different learning rate is a different sweep.
    let other = write_spec(
        tmp.path(),
        "b.toml",
        &spec_text("1e10", TWO_SIZES, "lr = 1e-3"),
    );
    let out = isoflop(&[
        "sweep",
        "run",
        s(&other),
        "--out",
        s(&dir),
        "--device",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("different spec") && err.contains("c1e10-d64l1-s0"),
        "{err}"
    );
    assert!(!dir.join("runs/c1e10-d64l1-s0/run.json").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("spec.toml")).unwrap(),
        text
    );
}

#[test]
fn bad_specs_and_flags_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = write_spec(
        tmp.path(),
        "bad.toml",
        &spec_text("1e10", "{ d_model = 100, n_layers = 1 }", ""),
    );
    let good = write_spec(tmp.path(), "good.toml", &spec_text("1e10", TWO_SIZES, ""));
    let d = tmp.path().join("d");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["sweep", "plan", s(&bad), "--no-timing"], "bad.toml"),
        (vec!["sweep", "plan", "/nonexistent/x.toml"], "x.toml"),
        (
            vec!["sweep", "run", s(&good), "--out", s(&d), "--devices", "99"],
            "--devices",
        ),
        (
            vec!["sweep", "run", s(&good), "--out", s(&d), "--devices", "gpu"],
            "--devices",
        ),
        (vec!["sweep", "status", "/nonexistent/sweep"], "plan.json"),
        (
            vec![
                "sweep",
                "run",
                s(&good),
                "--out",
                s(&d),
                "--only",
                "c9-d64l1-s0",
            ],
            "c1e10-d64l1-s0",
        ),
        (
            vec!["sweep", "slurm", s(&good), "--out", s(&d), "--time", "soon"],
            "--time",
        ),
    ];
    for (args, needle) in cases {
        let out = isoflop(&args);
        assert!(!d.exists(), "{args:?} left a sweep directory behind");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

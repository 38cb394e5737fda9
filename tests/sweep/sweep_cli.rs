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
    // One line per size (runs and compute), then the total.
    assert!(
        lines[5].starts_with("size d64l1") && lines[5].contains("2 runs"),
        "{out}"
    );
    assert!(
        lines[6].starts_with("size d128l2") && lines[6].contains("2 runs"),
        "{out}"
    );
    assert!(
        lines[7].starts_with("4 runs") && lines[8].contains("10000 tokens/s"),
        "{out}"
    );
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
        assert!(t0.elapsed() < Duration::from_secs(300), "sweep too slow");
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
        .env("SLURM_ARRAY_JOB_ID", "41")
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
    // The task recorded its array job id; `sweep status` shows the scheduler's state of each task next to
    // its run when squeue is there (here a stand-in printing squeue's answer), and nothing extra without.
    assert_eq!(
        std::fs::read_to_string(dir.join("slurm/jobs")).unwrap(),
        "41\n"
    );
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let sb = script.display();
    std::fs::write(
        bin.join("squeue"),
        format!(
            "#!/bin/sh\necho \"$@\" >> {args}\n\
             printf '41|0|COMPLETED|None|{sb}\\n41|1|CANCELLED|None|{sb}\\n\
             41|2|COMPLETED|None|{sb}\\n41|3|PENDING|JobArrayTaskLimit|{sb}\\n\
             45|1|RUNNING|None|{sb}\\n46|0|RUNNING|None|/elsewhere/sweep.sbatch\\n'\n",
            args = tmp.path().join("squeue.args").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("squeue"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let status = |path: &str| {
        let out = Command::new(BIN)
            .args(["sweep", "status", s(&dir)])
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let st = status(s(&bin));
    let row = |i: usize| st.lines().find(|l| l.starts_with(&names[i])).unwrap();
    assert!(
        row(0).contains("pending") && row(0).contains("41_0 COMPLETED"),
        "{st}"
    );
    assert!(
        row(1).contains("45_1 RUNNING"),
        "the newest job of a task wins:\n{st}"
    );
    assert!(
        row(2).contains("finished") && row(2).contains("41_2 COMPLETED"),
        "{st}"
    );
    assert!(row(3).contains("41_3 PENDING (JobArrayTaskLimit)"), "{st}");
    assert!(!st.contains("46_"), "{st}");
    assert!(
        st.contains("slurm: job 41: 2 completed, 1 pending; job 45: 1 running"),
        "{st}"
    );
    let args = std::fs::read_to_string(tmp.path().join("squeue.args")).unwrap();
    assert!(
        args.contains("--me") && args.contains("--states=all"),
        "{args}"
    );
    let st = status("/nonexistent");
    assert!(!st.contains("slurm") && !st.contains("41_"), "{st}");
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

/// A one-node Slurm cluster of `tests/slurm/cluster.sh` whose state lives in a temporary directory; the
/// guard stops its daemons (by PID) when dropped, also when the test panics.
struct Cluster {
    state: PathBuf,
}

const CLUSTER_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slurm/cluster.sh");

impl Cluster {
    fn start(state: &Path) -> Cluster {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the Slurm test runs a real slurmctld/slurmd (and installs slurm-wlm and munge with apt-get \
             when missing): it needs root, and this runs as uid {euid}"
        );
        // The guard exists before the daemons do: whatever start leaves running is stopped.
        let c = Cluster {
            state: state.to_path_buf(),
        };
        let out = Command::new("bash")
            .arg(CLUSTER_SH)
            .arg("start")
            .arg(state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tests/slurm/cluster.sh start failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    /// A Slurm client command talking to this cluster.
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("SLURM_CONF", self.state.join("slurm.conf"));
        c
    }

    fn run(&self, prog: &str, args: &[&str]) -> String {
        let out = self.cmd(prog).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{prog} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `isoflop` with this cluster's `SLURM_CONF` (so `sweep status` can ask `squeue`).
    fn isoflop(&self, args: &[&str]) -> String {
        let out = self.cmd(BIN).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "isoflop {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn sbatch(&self, args: &[&str]) -> u64 {
        let out = self.run("sbatch", &[&["--parsable"], args].concat());
        out.trim().split(';').next().unwrap().parse().unwrap()
    }

    /// (task id, state) of each array task of `job`, as the controller knows it.
    fn tasks(&self, job: u64) -> Vec<(usize, String)> {
        self.run(
            "squeue",
            &[
                "--array",
                "--noheader",
                "--states=all",
                &format!("--jobs={job}"),
                "--format=%K|%T",
            ],
        )
        .lines()
        .filter_map(|l| {
            let (k, t) = l.trim().split_once('|')?;
            Some((k.parse().ok()?, t.to_string()))
        })
        .collect()
    }

    /// What the test saw, for a failure message: the cluster's queue and the daemons' logs.
    fn diagnose(&self, dir: &Path) -> String {
        let mut s = String::new();
        for f in ["slurmctld.log", "slurmd.log"] {
            let t = std::fs::read_to_string(self.state.join(f)).unwrap_or_default();
            let tail: Vec<&str> = t.lines().rev().take(15).collect();
            s += &format!(
                "--- {f}\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        for e in std::fs::read_dir(dir.join("slurm"))
            .into_iter()
            .flatten()
            .flatten()
        {
            s += &format!(
                "--- {}\n{}\n",
                e.path().display(),
                std::fs::read_to_string(e.path()).unwrap_or_default()
            );
        }
        s
    }

    /// Wait until no task of `job` is pending or running; returns the final (task, state) list.
    fn wait(&self, job: u64, dir: &Path, limit: Duration) -> Vec<(usize, String)> {
        let t0 = Instant::now();
        loop {
            let tasks = self.tasks(job);
            let busy = tasks.is_empty()
                || tasks.iter().any(|(_, s)| {
                    ["PENDING", "RUNNING", "COMPLETING", "CONFIGURING"].contains(&s.as_str())
                });
            if !busy {
                return tasks;
            }
            assert!(
                t0.elapsed() < limit,
                "job {job} not done after {limit:?}: {tasks:?}\n{}",
                self.diagnose(dir)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let st = Command::new("bash")
            .arg(CLUSTER_SH)
            .arg("stop")
            .arg(&self.state)
            .status();
        if !matches!(st, Ok(s) if s.success()) {
            eprintln!(
                "tests/slurm/cluster.sh stop {} failed: {st:?}",
                self.state.display()
            );
        }
    }
}

/// (run, step, loss) of every logged step, and (run, loss, eval_loss) of every run, as exported: the
/// loss strings are Rust's shortest round-trip form, so equal strings are bitwise-equal losses.
fn exported_losses(dir: &Path) -> (Vec<[String; 3]>, Vec<[String; 3]>) {
    let (h, rows) = csv(&dir.join("steps.csv"));
    let steps = rows
        .iter()
        .map(|r| [col(&h, r, "run"), col(&h, r, "step"), col(&h, r, "loss")].map(String::from))
        .collect();
    let (h, rows) = csv(&dir.join("runs.csv"));
    let runs = rows
        .iter()
        .map(|r| {
            [
                col(&h, r, "name"),
                col(&h, r, "loss"),
                col(&h, r, "eval_loss"),
            ]
            .map(String::from)
        })
        .collect();
    (steps, runs)
}

/// The sweep's array job run by a real (one-node) Slurm: every task finishes with the per-step losses of a
/// local `sweep run`, bitwise; `sweep status` shows each run's job and task state; a task cancelled
/// mid-run (`scancel`) checkpoints on SIGTERM and the resubmitted script resumes it to the same losses.
#[test]
fn slurm_array_job_on_a_real_cluster_matches_local_run_and_resumes_after_scancel() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&tmp.path().join("cluster"));
    // Four runs: 20, 4, 159 and 29 steps (1–9 s on 2 cores); the 159-step one is cancelled mid-run.
    let spec = write_spec(
        tmp.path(),
        "s.toml",
        &spec_text("5e9, 4e10", TWO_SIZES, "log_every = 1"),
    );
    let local = tmp.path().join("local");
    ok(&[
        "sweep",
        "run",
        s(&spec),
        "--out",
        s(&local),
        "--device",
        "cpu",
    ]);
    ok(&["sweep", "export", s(&local)]);
    let (local_steps, local_runs) = exported_losses(&local);
    let names = plan_names(&local);
    assert_eq!(names.len(), 4);
    let submit = |dir: &Path, checkpoint_every: &str| {
        cluster.isoflop(&[
            "sweep",
            "slurm",
            s(&spec),
            "--out",
            s(dir),
            "--bin",
            BIN,
            "--device",
            "cpu",
            "--gpus",
            "0",
            "--cpus-per-task",
            "1",
            "--max-parallel",
            "2",
            "--time",
            "00:10:00",
            "--checkpoint-every",
            checkpoint_every,
        ]);
        dir.join("sweep.sbatch")
    };

    // 1. The whole array job.
    let a = tmp.path().join("a");
    let script = submit(&a, "100");
    let job = cluster.sbatch(&[s(&script)]);
    let st = cluster.isoflop(&["sweep", "status", s(&a)]);
    for i in 0..4 {
        assert!(
            st.contains(&format!(" {job}_{i} ")),
            "task {i} of job {job} not in status:\n{st}"
        );
    }
    let tasks = cluster.wait(job, &a, Duration::from_secs(300));
    assert_eq!(tasks.len(), 4, "{tasks:?}");
    assert!(
        tasks.iter().all(|(_, s)| s == "COMPLETED"),
        "{tasks:?}\n{}",
        cluster.diagnose(&a)
    );
    let st = cluster.isoflop(&["sweep", "status", s(&a)]);
    assert!(st.contains("4 runs: 4 finished"), "{st}");
    for (i, name) in names.iter().enumerate() {
        let line = st.lines().find(|l| l.starts_with(name.as_str())).unwrap();
        assert!(line.contains(&format!("{job}_{i} COMPLETED")), "{st}");
    }
    assert!(
        st.contains(&format!("slurm: job {job}: 4 completed")),
        "{st}"
    );
    cluster.isoflop(&["sweep", "export", s(&a)]);
    let (steps, runs) = exported_losses(&a);
    assert!(local_steps.len() > 40, "{}", local_steps.len());
    assert_eq!(
        steps, local_steps,
        "per-step losses under Slurm differ from the local sweep"
    );
    assert_eq!(runs, local_runs);

    // 2. scancel one task mid-run; it checkpoints on SIGTERM (the only checkpoint: no periodic ones), and
    //    the resubmitted script resumes it and trains the others.
    let b = tmp.path().join("b");
    let script = submit(&b, "100000");
    let steps = |i: usize| {
        manifest(&local.join("runs").join(&names[i]))["config"]["steps"]
            .as_u64()
            .unwrap()
    };
    let last = (0..names.len()).max_by_key(|&i| steps(i)).unwrap();
    let total = steps(last);
    assert!(
        total >= 100,
        "{total} steps leave too little time to cancel mid-run"
    );
    let run = b.join("runs").join(&names[last]);
    let job2 = cluster.sbatch(&[&format!("--array={last}"), s(&script)]);
    let t0 = Instant::now();
    while train_lines(&run) < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "task {last} never started training\n{}",
            cluster.diagnose(&b)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.run("scancel", &[&format!("{job2}_{last}")]);
    let tasks = cluster.wait(job2, &b, Duration::from_secs(300));
    let state_of = |tasks: &[(usize, String)], i: usize| {
        tasks
            .iter()
            .find(|(k, _)| *k == i)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    assert_eq!(state_of(&tasks, last), "CANCELLED", "{tasks:?}");
    let m = manifest(&run);
    assert_eq!(m["status"], "interrupted", "{m}\n{}", cluster.diagnose(&b));
    let done = train_lines(&run) as u64;
    assert!(
        done >= 3 && done < total,
        "cancelled at {done} of {total} steps"
    );
    assert!(
        std::fs::read_dir(run.join("checkpoints")).unwrap().count() > 0,
        "no checkpoint written on SIGTERM"
    );
    let st = cluster.isoflop(&["sweep", "status", s(&b)]);
    let line = st
        .lines()
        .find(|l| l.starts_with(names[last].as_str()))
        .unwrap();
    assert!(
        line.contains("interrupted") && line.contains(&format!("{job2}_{last} CANCELLED")),
        "{st}"
    );
    let job3 = cluster.sbatch(&[s(&script)]);
    let tasks = cluster.wait(job3, &b, Duration::from_secs(300));
    assert!(
        tasks.iter().all(|(_, s)| s == "COMPLETED"),
        "{tasks:?}\n{}",
        cluster.diagnose(&b)
    );
    let st = cluster.isoflop(&["sweep", "status", s(&b)]);
    assert!(st.contains("4 runs: 4 finished"), "{st}");
    assert!(st.contains(&format!("{job3}_{last} COMPLETED")), "{st}");
    let out = |i: usize| {
        std::fs::read_to_string(b.join(format!("slurm/isoflop-t-{job3}_{i}.out")))
            .unwrap_or_default()
    };
    assert!(
        out(last).contains(&format!("resuming {}", names[last])),
        "{}",
        out(last)
    );
    // Each task recorded its array job id (tasks starting together may both append it).
    let mut recorded: Vec<String> = std::fs::read_to_string(b.join("slurm/jobs"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    recorded.dedup();
    assert_eq!(recorded, [job2.to_string(), job3.to_string()]);
    cluster.isoflop(&["sweep", "export", s(&b)]);
    let (steps, runs) = exported_losses(&b);
    assert_eq!(
        steps, local_steps,
        "per-step losses after scancel + resubmit differ from the local sweep"
    );
    assert_eq!(runs, local_runs);
}

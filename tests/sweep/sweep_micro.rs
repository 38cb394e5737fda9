//! The README's micro sweep, run for real on the bundled sample as CI runs it, and its export fed to
//! `isoflop fit` without hand editing.

use crate::cli::{bin, isoflop, run};
use serde_json::Value;
use std::process::Command;

/// Run the binary expecting failure: (succeeded, stderr).
fn isoflop_fails(args: &[&str]) -> (bool, String) {
    let (ok, _, stderr) = run(bin().args(args));
    (ok, stderr)
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
    // [eval] tasks: every run was scored on the bundled tasks (24 items each), and runs.csv ends with
    // their top-1 errors and the average.
    assert_eq!(
        header[header.len() - 3..],
        ["err_kjv-choice", "err_kjv-word", "err_avg"],
        "{runs}"
    );
    for line in runs.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let errs: Vec<f64> = f[f.len() - 3..]
            .iter()
            .map(|x| {
                x.parse()
                    .unwrap_or_else(|_| panic!("err column {x:?} in {line}"))
            })
            .collect();
        assert!(errs.iter().all(|e| (0.0..=1.0).contains(e)), "{line}");
        assert!(
            (errs[2] - (errs[0] + errs[1]) / 2.0).abs() < 1e-12,
            "{line}"
        );
    }
    let name = runs.lines().nth(1).unwrap().split(',').next().unwrap();
    let tj: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("runs").join(name).join("tasks.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(tj["tasks"][0]["items"], 24, "{tj}");
    assert_eq!(tj["tasks"][0]["kind"], "multiple_choice", "{tj}");
    assert!(tj["tasks"][0]["acc_norm"].as_f64().is_some(), "{tj}");
    assert!(tj["tasks"][1]["exact"].as_f64().is_some(), "{tj}");
    pandas_reads(&dir);
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
    // The task errors: the default fit also fits Err(L) = ε − k·exp(−γ·L) to (eval_loss, err_avg) of
    // the six runs (Gadre et al.), with its plot, or says why not.
    let down = &fit_json["downstream"];
    let down_fitted = down.is_object();
    if down_fitted {
        assert_eq!(down["n_points"], 6, "{fit}");
        assert_eq!(down["error_col"], "err_avg", "{fit}");
        assert!(dir.join("fit/downstream.png").exists(), "{fit}");
    } else {
        assert!(
            fit_json["skipped"].to_string().contains("downstream"),
            "neither fitted nor skipped: {fit}"
        );
    }
    // `isoflop predict` reads the sweep's fit: a run 4× the largest size at 20 tokens per parameter.
    let n_col = header.iter().position(|c| *c == "n_params").unwrap();
    let n_max = runs
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(n_col).unwrap().parse::<f64>().unwrap())
        .fold(0.0, f64::max);
    let n = format!("{}", 4.0 * n_max);
    let pred = isoflop(&["predict", d, "--n", &n, "--multiplier", "20"]);
    let pj: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fit/predict.json")).unwrap())
            .unwrap();
    let p3 = &pj["targets"][0]["predictions"][0];
    assert_eq!(p3["law"], "approach3", "{pred}");
    assert!(
        p3["loss"]["value"].as_f64().is_some_and(|l| l > 0.0),
        "{pred}"
    );
    // With the error law, the prediction chains it: the task error of the predicted loss.
    if down_fitted {
        assert!(p3["error"]["value"].as_f64().is_some(), "{pred}");
    }
}

/// pandas reads both exports unchanged: numeric columns come out numeric, one row per run / per step.
/// pandas is installed (pinned) into target/py on first use, as the NVRTC wheels are.
fn pandas_reads(dir: &std::path::Path) {
    let py = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py");
    let has_pandas = || {
        Command::new("python3")
            .args(["-c", "import pandas"])
            .env("PYTHONPATH", &py)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_pandas() {
        let st = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&py)
            .arg("pandas==2.2.3")
            .status()
            .expect("python3 must be installed to check the CSV exports with pandas");
        assert!(
            st.success() && has_pandas(),
            "could not install pandas into {}",
            py.display()
        );
    }
    let script = r#"
import sys, pandas as pd
d = sys.argv[1]
runs = pd.read_csv(d + "/runs.csv")
steps = pd.read_csv(d + "/steps.csv")
assert len(runs) == 6, len(runs)
for c in ["n_params", "tokens", "loss", "eval_loss", "flops_kaplan", "flops_standard", "flops_attention", "flops_exact", "budget"]:
    assert pd.api.types.is_numeric_dtype(runs[c]), (c, runs[c].dtype)
for c in ["step", "tokens", "loss", "flops_exact", "d_model"]:
    assert pd.api.types.is_numeric_dtype(steps[c]), (c, steps[c].dtype)
assert steps.groupby("run").size().sum() == len(steps) and steps["run"].nunique() == 6
print("pandas ok", runs.shape, steps.shape)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .env("PYTHONPATH", &py)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pandas could not read the exports:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A two-arm sweep (weight decay 0.1 vs 0) runs, exports with an `arm` column, and compares.
#[test]
fn two_arm_micro_sweep_runs_exports_and_compares() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sweeps/micro-arms.toml");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("arms");
    let d = dir.to_str().unwrap();
    let plan = isoflop(&["sweep", "plan", spec]);
    assert!(
        plan.contains("arm wd0.1: 2 runs") && plan.contains("arm wd0: 2 runs"),
        "{plan}"
    );
    isoflop(&["sweep", "run", spec, "--out", d, "--device", "cpu"]);
    isoflop(&["sweep", "export", d]);
    let runs = std::fs::read_to_string(dir.join("runs.csv")).unwrap();
    let steps = std::fs::read_to_string(dir.join("steps.csv")).unwrap();
    assert!(
        runs.starts_with("arm,name,") && steps.starts_with("arm,run,"),
        "{runs}"
    );
    // Paired: each point has the same seed in both arms; names carry the arm.
    let rows: Vec<Vec<&str>> = runs
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let header: Vec<&str> = runs.lines().next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|c| *c == n).unwrap();
    assert_eq!(rows.len(), 4, "{runs}");
    for r in &rows {
        assert!(
            r[col("name")].starts_with(&format!("{}-", r[col("arm")])),
            "{r:?}"
        );
        assert_eq!(r[col("status")], "finished");
        let twin = rows
            .iter()
            .find(|o| o[col("point")] == r[col("point")] && o[col("arm")] != r[col("arm")])
            .unwrap();
        assert_eq!(twin[col("seed")], r[col("seed")]);
    }
    for arm in ["wd0.1", "wd0"] {
        assert!(steps
            .lines()
            .skip(1)
            .any(|l| l.starts_with(&format!("{arm},{arm}-"))));
    }
    let out = isoflop(&["compare", d, "--bootstrap", "200", "--at", "1e13"]);
    assert!(out.contains("ΔL(C) = L(wd0) − L(wd0.1)"), "{out}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("compare/compare.json")).unwrap())
            .unwrap();
    let arms = json["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 2, "{json}");
    assert!(arms.iter().all(|a| a["lc_source"] == "envelope"), "{out}");
    let cmp = &json["comparisons"][0];
    assert!(cmp["bootstrap_ok"].as_u64().unwrap() >= 150, "{out}");
    assert!(cmp["delta"].as_array().unwrap().len() > 10);
    assert_eq!(cmp["at"][0]["c"].as_f64(), Some(1e13));
    assert!(dir.join("compare/compare.png").exists() && dir.join("compare/compare.svg").exists());
    // A law fitted to both recipes at once describes neither: `fit` wants an arm.
    let (ok, err) = isoflop_fails(&["fit", d]);
    assert!(
        !ok && err.contains("--arm") && err.contains("wd0.1, wd0"),
        "{err}"
    );
    // Each arm's own fit (its directory fit-<arm>), then `isoflop predict` from it: the compute-optimal
    // point at 10× the budget. Two sizes at one budget support L(C) on the envelope, not L(N, D).
    for arm in ["wd0.1", "wd0"] {
        let fit = isoflop(&["fit", d, "--arm", arm, "--bootstrap", "100", "--no-plots"]);
        let fit_dir = dir.join(format!("fit-{arm}"));
        let fj: Value =
            serde_json::from_str(&std::fs::read_to_string(fit_dir.join("fit.json")).unwrap())
                .unwrap();
        assert!(fj["source"].as_str().unwrap().contains(arm), "{fit}");
        let fd = fit_dir.to_str().unwrap();
        let pred = isoflop(&["predict", fd, "--flops", "6e12"]);
        let pj: Value =
            serde_json::from_str(&std::fs::read_to_string(fit_dir.join("predict.json")).unwrap())
                .unwrap();
        let ps = pj["targets"][0]["predictions"].as_array().unwrap();
        let law = |name: &str| ps.iter().find(|p| p["law"] == name);
        let lc = law("compute").unwrap_or_else(|| panic!("{arm}: no L(C) prediction: {pred}"));
        assert!(lc["loss_opt"]["value"].as_f64().is_some(), "{arm}: {pred}");
        // One budget's curves pin L(C) down poorly; a law the fit flagged is never passed on silently.
        let flagged = fj["compute"]["sane"] == false;
        let warned = lc["warning"]
            .as_str()
            .is_some_and(|w| w.contains("NOT SANE"));
        assert_eq!(flagged, warned, "{arm}: {fit}\n{pred}");
    }
}

/// The reduced laptop sweep (`data/sweeps/laptop-ci.toml`: the byte-level books data, V = 260) shows
/// the Chinchilla picture from isoflop's own training: at every budget the best run is neither the
/// smallest nor the largest size, and Approach 2's parabola has positive curvature and a minimum
/// strictly inside the sizes (and, where a budget has 4 or more sizes, a 95% interval narrower than the
/// size range). Deterministic: training is bitwise reproducible.
#[test]
fn laptop_ci_sweep_has_interior_isoflop_minima() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sweeps/laptop-ci.toml");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("laptop-ci");
    let d = dir.to_str().unwrap();
    isoflop(&["sweep", "run", spec, "--out", d, "--device", "cpu"]);
    isoflop(&["sweep", "export", d]);
    let runs = std::fs::read_to_string(dir.join("runs.csv")).unwrap();
    let header: Vec<&str> = runs.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let (cb, cn, ce, cv) = (
        col("budget"),
        col("n_params"),
        col("eval_loss"),
        col("vocab_size"),
    );
    // budget -> [(N, eval loss)]
    let mut by_budget: Vec<(f64, Vec<(f64, f64)>)> = Vec::new();
    for line in runs.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[cv], "260", "{line}");
        let (c, n, l): (f64, f64, f64) = (
            f[cb].parse().unwrap(),
            f[cn].parse().unwrap(),
            f[ce].parse().unwrap(),
        );
        match by_budget.iter_mut().find(|(b, _)| *b == c) {
            Some((_, v)) => v.push((n, l)),
            None => by_budget.push((c, vec![(n, l)])),
        }
    }
    assert!(by_budget.len() >= 2, "{runs}");
    for (c, pts) in &mut by_budget {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let best = (0..pts.len())
            .min_by(|&i, &j| pts[i].1.total_cmp(&pts[j].1))
            .unwrap();
        assert!(
            best > 0 && best + 1 < pts.len(),
            "budget {c:e}: the lowest eval loss is at an end of the sizes: {pts:?}"
        );
    }
    let fit = isoflop(&["fit", d]);
    let fit_json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fit/fit.json")).unwrap()).unwrap();
    let budgets = fit_json["approach2"]["budgets"]
        .as_array()
        .unwrap_or_else(|| panic!("{fit}"));
    let mut interior = 0;
    for b in budgets {
        let c = b["c"].as_f64().unwrap();
        let pts = &by_budget
            .iter()
            .find(|(bc, _)| (bc / c - 1.0).abs() < 0.05)
            .unwrap_or_else(|| panic!("budget {c:e} not in runs.csv"))
            .1;
        let (lo, hi) = (pts[0].0.ln(), pts[pts.len() - 1].0.ln());
        let n_opt = b["n_opt"].as_f64().unwrap().ln();
        let se = b["se_ln_n"].as_f64();
        assert!(
            b["used"] == true && n_opt > lo && n_opt < hi,
            "budget {c:e}: no interior minimum: {b}\n{fit}"
        );
        // A parabola through 3 sizes has no residual to estimate an interval from; with 4 or more
        // the 95% interval of ln N* must be narrower than the size range.
        if pts.len() >= 4 {
            let se = se.unwrap_or_else(|| panic!("budget {c:e}: no interval: {b}"));
            assert!(
                2.0 * 1.96 * se < hi - lo,
                "budget {c:e}: the 95% interval of ln N* (±{:.3}) is not narrower than the size range ({:.3})",
                1.96 * se,
                hi - lo
            );
        }
        interior += 1;
    }
    assert!(interior >= 2, "{fit}");
}

/// The learning-rate × batch-size search `micro-search.toml`: plan (runs and compute per size), run,
/// export (searched values in names and columns), and at every (size, batch size) the final eval loss
/// against the learning rate has an interior minimum.
#[test]
fn micro_search_has_interior_lr_minima() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sweeps/micro-search.toml");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("search");
    let d = dir.to_str().unwrap();
    let plan = isoflop(&["sweep", "plan", spec, "--tokens-per-s", "1e4"]);
    for size in [
        "size d64l1 (N = 2.10M): 10 runs",
        "size d128l2 (N = 4.50M): 10 runs",
    ] {
        assert!(plan.contains(size), "{plan}");
    }
    assert!(plan.contains("\n20 runs, "), "{plan}");
    assert!(plan.contains("c5e11-d64l1-lr0.0625x-b8-s0"), "{plan}");
    // CI runs 8 of the 20 runs with `--only`, as a Slurm array task would (to keep CI short): batch 8, the
    // four learning rates around each size's optimum (1/16–4× for d64l1, 1/4–16× for d128l2). The
    // export lists all 20 runs and the fit skips the 12 unfinished ones.
    let mut args = vec!["sweep", "run", spec, "--out", d, "--device", "cpu"];
    let only: Vec<String> = [
        ("d64l1", ["0.0625", "0.25", "1", "4"]),
        ("d128l2", ["0.25", "1", "4", "16"]),
    ]
    .iter()
    .flat_map(|(s, fs)| fs.iter().map(move |f| format!("c5e11-{s}-lr{f}x-b8-s0")))
    .collect();
    for name in &only {
        args.extend(["--only", name.as_str()]);
    }
    isoflop(&args);
    isoflop(&["sweep", "export", d]);
    let runs = std::fs::read_to_string(dir.join("runs.csv")).unwrap();
    let header: Vec<&str> = runs.lines().next().unwrap().split(',').collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|c| *c == n)
            .unwrap_or_else(|| panic!("no column {n}: {header:?}"))
    };
    let rows: Vec<Vec<&str>> = runs
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 20, "{runs}");
    let num = |r: &[&str], c: &str| -> f64 {
        r[col(c)]
            .parse()
            .unwrap_or_else(|_| panic!("{c} = {:?} in {r:?}", r[col(c)]))
    };
    // (n_params, batch_size) → [(lr, lr_factor, eval_loss)]
    type Curve = ((u64, u64), Vec<(f64, f64, f64)>);
    let mut curves: Vec<Curve> = Vec::new();
    for r in &rows {
        let name = r[col("name")];
        if !only.iter().any(|o| o == name) {
            assert_ne!(r[col("status")], "finished", "{r:?}");
            assert_eq!(r[col("eval_loss")], "", "{r:?}");
            continue;
        }
        assert_eq!(r[col("status")], "finished", "{r:?}");
        assert_eq!(num(r, "beta2"), 0.95);
        let (f, b) = (num(r, "lr_factor"), num(r, "batch_size"));
        assert!(
            name.contains(&format!("-lr{f}x-b{b}-s0")),
            "the name carries the searched values: {name}"
        );
        let key = (num(r, "n_params") as u64, b as u64);
        let point = (num(r, "lr"), f, num(r, "eval_loss"));
        match curves.iter_mut().find(|(k, _)| *k == key) {
            Some((_, c)) => c.push(point),
            None => curves.push((key, vec![point])),
        }
    }
    assert_eq!(curves.len(), 2, "2 sizes × batch size 8: {curves:?}");
    for (key, c) in &mut curves {
        c.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(c.len(), 4, "{key:?}: {c:?}");
        println!("N, B = {key:?}: (lr, lr_factor, eval_loss) {c:?}");
        let best = (0..c.len())
            .min_by(|&i, &j| c[i].2.total_cmp(&c[j].2))
            .unwrap();
        assert!(
            best > 0 && best + 1 < c.len(),
            "N, B = {key:?}: the eval loss vs lr has its minimum on the edge: {c:?}"
        );
    }
    // `isoflop fit --approach hparams` on the search: an lr optimum inside the searched range at every
    // (size, batch size), agreeing with the best searched lr within one factor-4 step, and its figures.
    let fit = isoflop(&["fit", d, "--approach", "hparams", "--bootstrap", "100"]);
    println!("{fit}");
    assert!(
        fit.contains("skipped 12 row(s)"),
        "the 12 runs CI does not run: {fit}"
    );
    let fj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fit/fit.json")).unwrap()).unwrap();
    let sizes = fj["hparams"]["sizes"]
        .as_array()
        .unwrap_or_else(|| panic!("{fit}"));
    assert_eq!(sizes.len(), 2, "{fit}");
    let mut checked = 0;
    for s in sizes {
        let n = s["n"].as_f64().unwrap();
        for c in s["curves"].as_array().unwrap() {
            let b = c["batch_size"].as_f64().unwrap();
            let m = &c["min"];
            assert_eq!(m["on_edge"], false, "N {n}, B {b}: {fit}");
            let opt = m["opt"].as_f64().unwrap();
            let (_, pts) = curves
                .iter()
                .find(|(k, _)| k.0 == n as u64 && k.1 == b as u64)
                .unwrap_or_else(|| panic!("N {n}, B {b} not in runs.csv"));
            let best = pts.iter().min_by(|x, y| x.2.total_cmp(&y.2)).unwrap().0;
            assert!(
                opt > best / 4.0 && opt < best * 4.0,
                "N {n}, B {b}: lr* {opt} vs best searched {best}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2, "{fit}");
    assert!(dir.join("fit/hparams_lr.png").exists(), "{fit}");
}

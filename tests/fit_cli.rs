//! `isoflop fit` end to end through the binary: a synthetic sweep directory, and bad inputs.

mod fit_support;

use std::path::Path;
use std::process::Command;

fn isoflop(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_isoflop"))
        .arg("fit")
        .args(args)
        .output()
        .expect("run isoflop");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn write(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
}

#[test]
fn sweep_directory_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let cv = fit_support::curves(1e7, 1e9, 12, &[25.0, 100.0, 400.0], 30, 0.002, 21);
    let (runs, steps) = fit_support::sweep_csvs(&cv);
    write(&dir.path().join("runs.csv"), &runs);
    write(&dir.path().join("steps.csv"), &steps);
    let out = dir.path().join("out");
    let d = dir.path().to_str().unwrap();
    let (ok, stdout, stderr) = isoflop(&[
        d,
        "--out",
        out.to_str().unwrap(),
        "--bootstrap",
        "30",
        "--convention",
        "exact",
    ]);
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("Approach 3") && stdout.contains("Approach 1"),
        "{stdout}"
    );
    assert!(stdout.contains("Over-training"), "{stdout}");
    // One training run per size gives no IsoFLOP budgets: Approach 2 is skipped, with the reason.
    assert!(stdout.contains("skipped approach 2"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fit.json")).unwrap()).unwrap();
    assert_eq!(json["convention"], "exact");
    assert_eq!(json["n_points"], 12);
    assert_eq!(json["n_curves"], 12);
    let alpha = &json["approach3"]["params"]["alpha"];
    assert!(alpha["lo"].as_f64().unwrap() <= alpha["value"].as_f64().unwrap());
    assert!(alpha["value"].as_f64().unwrap() <= alpha["hi"].as_f64().unwrap());
    assert_eq!(
        json["approach3"]["residuals_log"].as_array().unwrap().len(),
        12
    );
    assert!(
        json["approach1"]["n_opt"]["exponent"]["value"]
            .as_f64()
            .unwrap()
            > 0.2
    );
    assert_eq!(json["compute"]["fitted_to"], "approach 1 envelope");
    // A law recovered from clean synthetic data is not flagged.
    for law in ["approach3", "compute", "overtrain"] {
        assert_eq!(json[law]["sane"], true, "{law}: {}", json[law]["problems"]);
    }
    assert_eq!(json["skipped"][0]["fit"], "approach2");
    for f in ["loss_vs_flops", "optimal", "parametric", "overtrain"] {
        for ext in ["svg", "png"] {
            let p = out.join(format!("{f}.{ext}"));
            assert!(
                std::fs::metadata(&p)
                    .map(|m| m.len() > 1000)
                    .unwrap_or(false),
                "{} missing",
                p.display()
            );
        }
    }
}

#[test]
fn isoflop_csv_with_mapped_columns() {
    let dir = tempfile::tempdir().unwrap();
    let pts = fit_support::isoflop_points(&[1e17, 1e18, 1e19, 1e20], 7, 0.7, 0.003, 22);
    let mut csv = String::from("params,budget,final\n");
    for p in &pts {
        csv += &format!("{},{},{}\n", p.n, p.c, p.loss);
    }
    let f = dir.path().join("iso.csv");
    write(&f, &csv);
    let out = dir.path().join("o");
    let (ok, stdout, stderr) = isoflop(&[
        f.to_str().unwrap(),
        "--n-col",
        "params",
        "--c-col",
        "budget",
        "--loss-col",
        "final",
        "--approach",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fit.json")).unwrap()).unwrap();
    assert_eq!(json["approach2"]["budgets"].as_array().unwrap().len(), 4);
    assert!(json["approach3"].is_null());
    assert!(out.join("isoflop.png").exists() && out.join("optimal.svg").exists());
}

fn bad(csv: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.csv");
    write(&f, csv);
    let mut args = vec![f.to_str().unwrap(), "--no-plots", "--bootstrap", "0"];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = isoflop(&args);
    assert!(!ok, "accepted bad input:\n{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn missing_column_is_named() {
    let e = bad(
        "n_params,tokens,loss\n1e7,1e9,3.0\n",
        &["--loss-col", "eval"],
    );
    assert!(
        e.contains("bad.csv") && e.contains("'eval'") && e.contains("--loss-col"),
        "{e}"
    );
    let e = bad("n_params,tokens\n1e7,1e9\n", &[]);
    assert!(
        e.contains("no column") && e.contains("'eval_loss' or 'loss'"),
        "{e}"
    );
}

#[test]
fn non_numeric_cell_names_line_and_column() {
    let e = bad("n_params,tokens,loss\n1e7,1e9,3.0\n2e7,1e9,abc\n", &[]);
    assert!(
        e.contains("bad.csv:3") && e.contains("'loss'") && e.contains("'abc'"),
        "{e}"
    );
}

#[test]
fn empty_file_is_reported() {
    let e = bad("", &[]);
    assert!(e.contains("bad.csv") && e.contains("empty"), "{e}");
    let e = bad("n_params,tokens,loss\n", &[]);
    assert!(e.contains("bad.csv") && e.contains("no data rows"), "{e}");
}

#[test]
fn fixed_multiplier_skips_the_unidentifiable_laws() {
    let dir = tempfile::tempdir().unwrap();
    let cv = fit_support::curves(1e7, 1e9, 8, &[100.0], 20, 0.002, 23);
    let (runs, steps) = fit_support::sweep_csvs(&cv);
    write(&dir.path().join("runs.csv"), &runs);
    write(&dir.path().join("steps.csv"), &steps);
    let (ok, stdout, stderr) = isoflop(&[
        dir.path().to_str().unwrap(),
        "--bootstrap",
        "10",
        "--no-plots",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("skipped approach 3") && stdout.contains("skipped over-training"),
        "{stdout}"
    );
    assert!(stdout.contains("Approach 1"), "{stdout}");
    assert!(dir.path().join("fit/fit.json").exists());
}

#[test]
fn missing_input_and_unsupported_request() {
    let (ok, _, e) = isoflop(&["/nonexistent/sweep"]);
    assert!(!ok && e.contains("/nonexistent/sweep"), "{e}");
    // Approach 1 asked for explicitly without curves: an error with the reason, not a silent skip.
    let e = bad(
        "n_params,tokens,loss\n1e7,1e9,3.0\n2e7,1e9,2.9\n",
        &["--approach", "1"],
    );
    assert!(e.contains("approach 1") && e.contains("steps.csv"), "{e}");
}

#[test]
fn duplicate_run_ids_are_refused_with_both_lines() {
    let e = bad(
        "run_id,n_params,tokens,loss\nr1,1e7,1e9,3.0\nr2,2e7,1e9,2.9\nr1,3e7,1e9,2.8\n",
        &[],
    );
    assert!(
        e.contains("bad.csv:4") && e.contains("'r1'") && e.contains("line 2"),
        "{e}"
    );
}

/// A 4 × 3 grid of (N, D) on the synthetic law, as CSV rows (lines 2..=13 of the file).
fn grid_rows() -> String {
    let mut csv = String::new();
    for n in [1e7, 3e7, 1e8, 3e8] {
        for d in [1e9, 3e9, 1e10] {
            csv += &format!("{n},{d},{}\n", fit_support::law(n, d));
        }
    }
    csv
}

#[test]
fn dropped_rows_are_named_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("few.csv");
    // Lines 3 and 5: a NaN loss and an empty token count (too few rows left for any fit: it stays cheap).
    write(
        &f,
        "n_params,tokens,loss\n1e7,1e9,3.0\n5e7,1e9,nan\n2e7,1e9,2.9\n5e7,,2.5\n",
    );
    let out = dir.path().join("o");
    let (ok, stdout, stderr) = isoflop(&[
        f.to_str().unwrap(),
        "--bootstrap",
        "0",
        "--no-plots",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let note = stdout
        .lines()
        .find(|l| l.contains("skipped 2 row"))
        .unwrap_or_else(|| panic!("no note on the skipped rows:\n{stdout}"));
    assert!(
        note.contains("few.csv") && note.contains("lines 3 (loss NaN), 5 (tokens empty)"),
        "{note}"
    );
}

#[test]
fn an_insane_fit_is_flagged_not_called_converged() {
    // One row with loss 1e300 below the grid's smallest N and D: Approach 3 "explains" it with
    // B = inf and β = 300, and used to call that converged.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("huge.csv");
    write(
        &f,
        &format!("n_params,tokens,loss\n{}3e6,1e8,1e300\n", grid_rows()),
    );
    let out = dir.path().join("o");
    let (ok, stdout, stderr) = isoflop(&[
        f.to_str().unwrap(),
        "--approach",
        "3",
        "--bootstrap",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fit.json")).unwrap()).unwrap();
    let a3 = &json["approach3"];
    assert_eq!(a3["sane"], false, "{a3}");
    let problems = a3["problems"].as_array().expect("problems listed");
    assert!(!problems.is_empty(), "{a3}");
    assert!(
        !stdout.contains("starts converged") && stdout.contains("NOT SANE"),
        "{stdout}"
    );
    // The figure says so too.
    let svg = std::fs::read_to_string(out.join("parametric.svg")).unwrap();
    assert!(
        svg.contains("NOT SANE"),
        "parametric.svg caption does not flag the fit"
    );
    // Its N_opt(C) (G = 0) is not drawn: that figure used to stall plotters for minutes.
    assert!(!out.join("optimal.svg").exists(), "{stdout}");
    // (Clean data is not flagged: sweep_directory_end_to_end checks `sane` on every law.)
}

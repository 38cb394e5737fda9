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

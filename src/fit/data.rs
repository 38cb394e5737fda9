//! Loading fit inputs: a sweep directory (`runs.csv`, `steps.csv`) or any CSV, with mappable columns.

use super::error::FitError;
use super::table::Table;
use crate::model::accounting::FlopConvention;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One finished run: parameters, training tokens, training FLOPs and final loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Parameters N.
    pub n: f64,
    /// Training tokens D.
    pub d: f64,
    /// Training FLOPs C under the chosen convention.
    pub c: f64,
    /// Final loss.
    pub loss: f64,
}

/// One run's training curve: loss against cumulative FLOPs (and tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// Run identifier.
    pub run: String,
    /// Parameters N of the run.
    pub n: f64,
    /// Cumulative FLOPs at each recorded step (increasing).
    pub c: Vec<f64>,
    /// Cumulative tokens at each recorded step.
    pub d: Vec<f64>,
    /// Loss at each recorded step.
    pub loss: Vec<f64>,
}

impl Curve {
    /// The run's final point: its last recorded step.
    pub fn last_point(&self) -> Point {
        let k = self.c.len() - 1;
        Point {
            n: self.n,
            d: self.d[k],
            c: self.c[k],
            loss: self.loss[k],
        }
    }
}

/// Everything the fits read.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// Where it came from.
    pub source: String,
    /// Final points (one per run).
    pub points: Vec<Point>,
    /// Training curves (empty without per-step data).
    pub curves: Vec<Curve>,
    /// Remarks on loading: rows skipped, columns derived.
    pub notes: Vec<String>,
}

/// Column names and conventions; `None` picks the defaults listed on each field.
#[derive(Clone, Debug)]
pub struct Columns {
    /// FLOP convention: selects `flops_<convention>` columns.
    pub convention: FlopConvention,
    /// N: `n_params`, `n`, `N`, `params`, `Model Size`.
    pub n: Option<String>,
    /// D: `tokens`, `D`, `n_tokens`, `Training Tokens` (else D = C / 6N).
    pub d: Option<String>,
    /// C: `flops_<convention>`, `flops`, `C`, `Training FLOP` (else C = 6ND).
    pub c: Option<String>,
    /// Loss: `eval_loss`, `loss`, `final_loss`.
    pub loss: Option<String>,
    /// Run id (joins steps with runs): `run_id`, `run`, `name`, `id`.
    pub run: Option<String>,
    /// Per-step cumulative FLOPs: `flops_<convention>`, `flops`, `C`.
    pub step_c: Option<String>,
    /// Per-step cumulative tokens: `tokens`, `D` (else C / 6N).
    pub step_d: Option<String>,
    /// Per-step loss: `loss`, `train_loss`, `eval_loss`.
    pub step_loss: Option<String>,
}

impl Columns {
    /// Defaults for `convention`.
    pub fn new(convention: FlopConvention) -> Self {
        Columns {
            convention,
            n: None,
            d: None,
            c: None,
            loss: None,
            run: None,
            step_c: None,
            step_d: None,
            step_loss: None,
        }
    }
}

fn names(given: &Option<String>, defaults: &[&str]) -> Vec<String> {
    match given {
        Some(g) => vec![g.clone()],
        None => defaults.iter().map(|s| s.to_string()).collect(),
    }
}

/// The files of an input path: a sweep directory gives `runs.csv` and/or `steps.csv`.
pub fn resolve_input(
    input: &Path,
    steps: Option<&Path>,
) -> Result<(Option<PathBuf>, Option<PathBuf>), FitError> {
    if input.is_dir() {
        let runs = input.join("runs.csv");
        let st = input.join("steps.csv");
        let runs = runs.is_file().then_some(runs);
        let st = steps.map(Path::to_path_buf).or(st.is_file().then_some(st));
        if runs.is_none() && st.is_none() {
            return Err(FitError::BadInput {
                path: input.to_path_buf(),
                what: "a directory without runs.csv or steps.csv (expected a sweep directory)"
                    .into(),
            });
        }
        Ok((runs, st))
    } else if input.is_file() {
        Ok((Some(input.to_path_buf()), steps.map(Path::to_path_buf)))
    } else {
        Err(FitError::BadInput {
            path: input.to_path_buf(),
            what: "no such file or directory".into(),
        })
    }
}

fn positive(t: &Table, row: usize, col: usize, v: f64) -> Result<f64, FitError> {
    if v > 0.0 {
        Ok(v)
    } else {
        Err(FitError::NotPositive {
            path: t.path.clone(),
            line: t.line(row),
            column: t.header[col].clone(),
            value: v,
        })
    }
}

/// Why row `r` cannot be used: the first of `cells` (column index, value; `None` index: the column is
/// absent) that is empty or non-finite, as `"loss NaN"` / `"tokens empty"`.
fn unusable(t: &Table, cells: &[(Option<usize>, Option<f64>)]) -> Option<String> {
    cells.iter().find_map(|&(col, v)| {
        let name = &t.header[col?];
        match v {
            None => Some(format!("{name} empty")),
            Some(x) if !x.is_finite() => Some(format!("{name} {x}")),
            Some(_) => None,
        }
    })
}

/// The note for rows skipped as unusable: how many, and each one's line and reason (the first 20).
fn skipped_note(t: &Table, what: &str, skipped: &[(usize, String)]) -> String {
    const SHOWN: usize = 20;
    let mut lines: Vec<String> = skipped
        .iter()
        .take(SHOWN)
        .map(|(line, why)| format!("{line} ({why})"))
        .collect();
    if skipped.len() > SHOWN {
        lines.push(format!("and {} more", skipped.len() - SHOWN));
    }
    format!(
        "{}: skipped {} {what} that cannot be used, at line{} {}",
        t.path.display(),
        skipped.len(),
        if skipped.len() == 1 { "" } else { "s" },
        lines.join(", ")
    )
}

/// Error on the second row of `t` whose run id (column `col`) repeats an earlier row's, naming both
/// lines: two final losses for one run would silently weigh it twice. Empty ids are not compared.
fn refuse_duplicate_runs(t: &Table, col: usize) -> Result<(), FitError> {
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    for r in 0..t.rows.len() {
        let id = t.text(r, col);
        if id.is_empty() {
            continue;
        }
        if let Some(&line) = first.get(id) {
            return Err(FitError::DuplicateRun {
                path: t.path.clone(),
                line: t.line(r),
                first_line: line,
                column: t.header[col].clone(),
                id: id.to_string(),
            });
        }
        first.insert(id, t.line(r));
    }
    Ok(())
}

/// Read a runs table: one point per row. Rows with an empty or non-finite cell are skipped (named by
/// line in the notes); text that is not a number, a non-positive value, or a run id (column `run_id`,
/// `run`, `name`, `id` or `--run-col`) that appears twice is an error naming the line(s).
pub fn read_points(
    t: &Table,
    cols: &Columns,
    notes: &mut Vec<String>,
) -> Result<Vec<Point>, FitError> {
    let conv = format!("flops_{}", cols.convention.name());
    let ni = t.require(
        &names(&cols.n, &["n_params", "n", "N", "params", "Model Size"]),
        "--n-col",
    )?;
    let li = t.require(
        &names(&cols.loss, &["eval_loss", "loss", "final_loss"]),
        "--loss-col",
    )?;
    let di = t.find(&names(
        &cols.d,
        &["tokens", "D", "n_tokens", "Training Tokens"],
    ));
    let ci = t.find(&names(&cols.c, &[&conv, "flops", "C", "Training FLOP"]));
    if cols.d.is_some() && di.is_none() {
        t.require(&names(&cols.d, &[]), "--d-col")?;
    }
    if cols.c.is_some() && ci.is_none() {
        t.require(&names(&cols.c, &[]), "--c-col")?;
    }
    if di.is_none() && ci.is_none() {
        t.require(
            &[conv.clone(), "tokens".into(), "D".into(), "C".into()],
            "--d-col or --c-col",
        )?;
    }
    match (di, ci) {
        (None, Some(c)) => notes.push(format!(
            "{}: no token column; D = C / (6N) from '{}'",
            t.path.display(),
            t.header[c]
        )),
        (Some(_), None) => notes.push(format!("{}: no FLOP column; C = 6ND", t.path.display())),
        _ => {}
    }
    if let Some(ri) = t.find(&names(&cols.run, &["run_id", "run", "name", "id"])) {
        refuse_duplicate_runs(t, ri)?;
    }
    let mut pts = Vec::with_capacity(t.rows.len());
    let mut skipped: Vec<(usize, String)> = Vec::new();
    for r in 0..t.rows.len() {
        let n = t.number(r, ni)?;
        let loss = t.number(r, li)?;
        let d = di.map(|i| t.number(r, i)).transpose()?.flatten();
        let c = ci.map(|i| t.number(r, i)).transpose()?.flatten();
        if let Some(why) = unusable(t, &[(Some(ni), n), (Some(li), loss), (di, d), (ci, c)]) {
            skipped.push((t.line(r), why));
            continue;
        }
        let (Some(n), Some(loss)) = (n, loss) else {
            skipped.push((t.line(r), "empty value".into()));
            continue;
        };
        let n = positive(t, r, ni, n)?;
        let loss = positive(t, r, li, loss)?;
        let (d, c) = match (d, c) {
            (Some(d), Some(c)) => (
                positive(t, r, di.unwrap_or(0), d)?,
                positive(t, r, ci.unwrap_or(0), c)?,
            ),
            (Some(d), None) if ci.is_none() => {
                let d = positive(t, r, di.unwrap_or(0), d)?;
                (d, 6.0 * n * d)
            }
            (None, Some(c)) if di.is_none() => {
                let c = positive(t, r, ci.unwrap_or(0), c)?;
                (c / (6.0 * n), c)
            }
            _ => {
                skipped.push((t.line(r), "empty tokens or FLOPs".into()));
                continue;
            }
        };
        pts.push(Point { n, d, c, loss });
    }
    if !skipped.is_empty() {
        notes.push(skipped_note(t, "row(s)", &skipped));
    }
    Ok(pts)
}

/// Read a steps table into one curve per run (sorted by FLOPs). N comes from the table's N column or,
/// failing that, from `runs` joined on the run id.
pub fn read_curves(
    t: &Table,
    cols: &Columns,
    runs: Option<&Table>,
    notes: &mut Vec<String>,
) -> Result<Vec<Curve>, FitError> {
    let conv = format!("flops_{}", cols.convention.name());
    let run_names = names(&cols.run, &["run_id", "run", "name", "id"]);
    let ri = t.require(&run_names, "--run-col")?;
    let ci = t.require(&names(&cols.step_c, &[&conv, "flops", "C"]), "--step-c-col")?;
    let li = t.require(
        &names(&cols.step_loss, &["loss", "train_loss", "eval_loss"]),
        "--step-loss-col",
    )?;
    let di = t.find(&names(&cols.step_d, &["tokens", "D", "n_tokens"]));
    let n_names = names(&cols.n, &["n_params", "n", "N", "params"]);
    let ni = t.find(&n_names);
    let mut run_n: BTreeMap<String, f64> = BTreeMap::new();
    if ni.is_none() {
        let Some(rt) = runs else {
            t.require(&n_names, "--n-col (or give runs.csv to join on the run id)")?;
            unreachable!("require failed above");
        };
        let rri = rt.require(&run_names, "--run-col")?;
        let rni = rt.require(&n_names, "--n-col")?;
        for r in 0..rt.rows.len() {
            if let Some(n) = rt.number(r, rni)? {
                run_n.insert(rt.text(r, rri).to_string(), n);
            }
        }
    }
    let mut by_run: BTreeMap<String, Curve> = BTreeMap::new();
    let mut skipped: Vec<(usize, String)> = Vec::new();
    for r in 0..t.rows.len() {
        let id = t.text(r, ri).to_string();
        let c = t.number(r, ci)?;
        let loss = t.number(r, li)?;
        let n = match ni {
            Some(i) => t.number(r, i)?,
            None => run_n.get(&id).copied(),
        };
        let d = di.map(|i| t.number(r, i)).transpose()?.flatten();
        if ni.is_none() && n.is_none() {
            skipped.push((t.line(r), format!("run '{id}' has no N in the runs table")));
            continue;
        }
        if let Some(why) = unusable(t, &[(Some(ci), c), (Some(li), loss), (ni, n)]) {
            skipped.push((t.line(r), why));
            continue;
        }
        let (Some(c), Some(loss), Some(n)) = (c, loss, n) else {
            skipped.push((t.line(r), "empty value".into()));
            continue;
        };
        if let Some((col, v)) = [(Some(ci), c), (Some(li), loss), (ni, n)]
            .into_iter()
            .find(|&(_, v)| !(v > 0.0 && v.is_finite()))
        {
            let name = col.map_or("N", |i| t.header[i].as_str());
            skipped.push((t.line(r), format!("{name} {v} is not positive and finite")));
            continue;
        }
        let d = d
            .filter(|d| d.is_finite() && *d > 0.0)
            .unwrap_or(c / (6.0 * n));
        let e = by_run.entry(id.clone()).or_insert_with(|| Curve {
            run: id,
            n,
            c: vec![],
            d: vec![],
            loss: vec![],
        });
        e.c.push(c);
        e.d.push(d);
        e.loss.push(loss);
    }
    if !skipped.is_empty() {
        notes.push(skipped_note(t, "step row(s)", &skipped));
    }
    let mut curves: Vec<Curve> = by_run.into_values().collect();
    for cv in &mut curves {
        let mut idx: Vec<usize> = (0..cv.c.len()).collect();
        idx.sort_by(|&a, &b| cv.c[a].total_cmp(&cv.c[b]));
        cv.c = idx.iter().map(|&i| cv.c[i]).collect();
        cv.d = idx.iter().map(|&i| cv.d[i]).collect();
        cv.loss = idx.iter().map(|&i| cv.loss[i]).collect();
    }
    curves.retain(|c| c.c.len() >= 2);
    Ok(curves)
}

/// Load `input` (a sweep directory or a CSV file, plus an optional steps CSV).
pub fn load(input: &Path, steps: Option<&Path>, cols: &Columns) -> Result<Dataset, FitError> {
    load_arm(input, steps, cols, None)
}

/// Keep the rows of `t` whose `arm` column is `arm`. A table with an `arm` column holding several arms
/// must be given one (a law fitted to several recipes at once describes none of them); a table without
/// that column holds one recipe and `arm` must be `None`.
pub fn select_arm(t: &mut Table, arm: Option<&str>) -> Result<(), FitError> {
    let bad = |what: String| FitError::BadInput {
        path: t.path.clone(),
        what,
    };
    let Some(i) = t.find(&["arm".to_string()]) else {
        return match arm {
            Some(a) => Err(bad(format!(
                "--arm {a:?}: the table has no `arm` column (a sweep without [[arms]])"
            ))),
            None => Ok(()),
        };
    };
    let mut arms: Vec<&str> = Vec::new();
    for (_, cells) in &t.rows {
        if !arms.contains(&cells[i].as_str()) {
            arms.push(&cells[i]);
        }
    }
    match arm {
        Some(a) if arms.contains(&a) => {
            t.rows.retain(|(_, cells)| cells[i] == a);
            Ok(())
        }
        Some(a) => Err(bad(format!(
            "--arm {a:?}: no such arm (the table has {})",
            arms.join(", ")
        ))),
        None if arms.len() > 1 => Err(bad(format!(
            "holds the arms {}: fit one at a time with --arm NAME (`isoflop compare` compares them)",
            arms.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The table of the CSV file `p` restricted to the rows of `arm` ([`select_arm`]).
pub fn read_arm(p: &Path, arm: Option<&str>) -> Result<Table, FitError> {
    let mut t = Table::read(p)?;
    select_arm(&mut t, arm)?;
    Ok(t)
}

/// [`load`] restricted to the rows of one arm (`arm` column of a sweep with `[[arms]]`).
pub fn load_arm(
    input: &Path,
    steps: Option<&Path>,
    cols: &Columns,
    arm: Option<&str>,
) -> Result<Dataset, FitError> {
    let (runs_p, steps_p) = resolve_input(input, steps)?;
    let mut notes = Vec::new();
    let read = |p: &Path| read_arm(p, arm);
    let runs_t = runs_p.as_deref().map(read).transpose()?;
    let mut points = match &runs_t {
        Some(t) => read_points(t, cols, &mut notes)?,
        None => vec![],
    };
    let curves = match &steps_p {
        Some(p) => {
            let st = read(p)?;
            read_curves(&st, cols, runs_t.as_ref(), &mut notes)?
        }
        None => vec![],
    };
    if runs_t.is_none() {
        notes.push("no runs.csv: final points taken from the last step of each curve".into());
        points = curves.iter().map(Curve::last_point).collect();
    }
    Ok(Dataset {
        source: match arm {
            Some(a) => format!("{} (arm {a})", input.display()),
            None => input.display().to_string(),
        },
        points,
        curves,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_are_selected_one_at_a_time() {
        let text = "arm,n,tokens,loss\na,1,2,3\nb,1,2,4\na,5,6,7\n";
        let t = || Table::parse(Path::new("runs.csv"), text).unwrap();
        let mut one = t();
        select_arm(&mut one, Some("a")).unwrap();
        assert_eq!(one.rows.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 4]);
        let e = select_arm(&mut t(), None).unwrap_err().to_string();
        assert!(
            e.contains("runs.csv") && e.contains("a, b") && e.contains("--arm"),
            "{e}"
        );
        let e = select_arm(&mut t(), Some("c")).unwrap_err().to_string();
        assert!(e.contains("--arm \"c\"") && e.contains("a, b"), "{e}");
        let mut plain = Table::parse(Path::new("p.csv"), "n,tokens,loss\n1,2,3\n").unwrap();
        select_arm(&mut plain, None).unwrap();
        let e = select_arm(&mut plain, Some("a")).unwrap_err().to_string();
        assert!(e.contains("no `arm` column"), "{e}");
        // One arm only: nothing to choose.
        let mut single = Table::parse(Path::new("s.csv"), "arm,n,tokens,loss\nx,1,2,3\n").unwrap();
        select_arm(&mut single, None).unwrap();
        assert_eq!(single.rows.len(), 1);
    }

    #[test]
    fn derives_missing_d_and_c() {
        let t = Table::parse(Path::new("a.csv"), "N,C,loss\n10,600,3\n20,,2\n").unwrap();
        let mut notes = vec![];
        let p = read_points(&t, &Columns::new(FlopConvention::Standard), &mut notes).unwrap();
        assert_eq!(
            p,
            vec![Point {
                n: 10.0,
                d: 10.0,
                c: 600.0,
                loss: 3.0
            }]
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn convention_picks_column() {
        let t = Table::parse(
            Path::new("a.csv"),
            "n_params,tokens,flops_kaplan,flops_exact,loss\n1,2,3,4,5\n",
        )
        .unwrap();
        let mut notes = vec![];
        let p = read_points(&t, &Columns::new(FlopConvention::Exact), &mut notes).unwrap();
        assert_eq!(p[0].c, 4.0);
        let p = read_points(&t, &Columns::new(FlopConvention::Kaplan), &mut notes).unwrap();
        assert_eq!(p[0].c, 3.0);
    }
}

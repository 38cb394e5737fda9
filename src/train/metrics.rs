//! Per-step records of a run (`metrics.jsonl`): one JSON object per line, `kind` = `train` or `eval`.

use super::trainer::{EvalOutcome, StepOutcome};
use crate::model::Flops;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// One optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Always `train`.
    pub kind: String,
    /// 1-based optimizer step.
    pub step: u64,
    /// Training tokens seen after this step (input positions, pad included).
    pub tokens: u64,
    /// Mean training loss of this step's batch (nats per non-pad target).
    pub loss: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Global gradient norm of the mean loss, before clipping.
    pub grad_norm: f64,
    /// FLOPs of this step, Kaplan convention.
    pub step_flops_kaplan: f64,
    /// FLOPs of this step, standard (6·N) convention.
    pub step_flops_standard: f64,
    /// FLOPs of this step, with attention's context term.
    pub step_flops_attention: f64,
    /// FLOPs of this step, exact matmul count.
    pub step_flops_exact: f64,
    /// Cumulative FLOPs up to this step, Kaplan.
    pub flops_kaplan: f64,
    /// Cumulative FLOPs, standard.
    pub flops_standard: f64,
    /// Cumulative FLOPs, attention.
    pub flops_attention: f64,
    /// Cumulative FLOPs, exact.
    pub flops_exact: f64,
    /// Wall time since the run started (seconds; continues across resumes).
    pub elapsed_s: f64,
    /// Wall time of this step.
    pub step_time_s: f64,
    /// Training tokens per second of this step.
    pub tokens_per_s: f64,
    /// Model FLOPs utilisation: `attention`-convention FLOPs per second over the device's peak.
    pub mfu: Option<f64>,
}

/// One evaluation on the held-out windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Always `eval`.
    pub kind: String,
    /// Optimizer steps done when evaluated.
    pub step: u64,
    /// Training tokens seen when evaluated.
    pub tokens: u64,
    /// Mean held-out loss.
    pub eval_loss: f64,
    /// Standard error of `eval_loss`.
    pub eval_loss_se: f64,
    /// Held-out targets evaluated.
    pub eval_tokens: u64,
    /// Cumulative training FLOPs, Kaplan.
    pub flops_kaplan: f64,
    /// Cumulative training FLOPs, standard.
    pub flops_standard: f64,
    /// Cumulative training FLOPs, attention.
    pub flops_attention: f64,
    /// Cumulative training FLOPs, exact.
    pub flops_exact: f64,
    /// Wall time since the run started.
    pub elapsed_s: f64,
}

impl StepRecord {
    /// The record of the optimizer step `out`: `tokens_per_step` tokens at `per_token` FLOPs each, taking
    /// `step_time_s` of wall time, `elapsed_s` since the run started; MFU against `peak_flops` when known.
    pub fn new(
        out: &StepOutcome,
        tokens_per_step: u64,
        per_token: &Flops,
        elapsed_s: f64,
        step_time_s: f64,
        peak_flops: Option<f64>,
    ) -> Self {
        let tokens = out.step * tokens_per_step;
        let step_flops = per_token.scale(tokens_per_step as f64);
        let total = cumulative_flops(per_token, tokens);
        StepRecord {
            kind: "train".into(),
            step: out.step,
            tokens,
            loss: out.loss,
            lr: out.lr,
            grad_norm: out.grad_norm,
            step_flops_kaplan: step_flops.kaplan,
            step_flops_standard: step_flops.standard,
            step_flops_attention: step_flops.attention,
            step_flops_exact: step_flops.exact,
            flops_kaplan: total.kaplan,
            flops_standard: total.standard,
            flops_attention: total.attention,
            flops_exact: total.exact,
            elapsed_s,
            step_time_s,
            tokens_per_s: tokens_per_step as f64 / step_time_s,
            mfu: peak_flops.map(|p| step_flops.attention / step_time_s / p),
        }
    }

    /// FLOPs of this step alone, per convention.
    pub fn step_flops(&self) -> Flops {
        Flops {
            kaplan: self.step_flops_kaplan,
            standard: self.step_flops_standard,
            attention: self.step_flops_attention,
            exact: self.step_flops_exact,
        }
    }

    /// Cumulative FLOPs up to this step, per convention.
    pub fn flops(&self) -> Flops {
        Flops {
            kaplan: self.flops_kaplan,
            standard: self.flops_standard,
            attention: self.flops_attention,
            exact: self.flops_exact,
        }
    }
}

impl EvalRecord {
    /// The record of evaluation `e` after `step` steps of `tokens_per_step` tokens at `per_token` FLOPs each.
    pub fn new(
        e: &EvalOutcome,
        step: u64,
        tokens_per_step: u64,
        per_token: &Flops,
        elapsed_s: f64,
    ) -> Self {
        let tokens = step * tokens_per_step;
        let total = cumulative_flops(per_token, tokens);
        EvalRecord {
            kind: "eval".into(),
            step,
            tokens,
            eval_loss: e.loss,
            eval_loss_se: e.stderr,
            eval_tokens: e.tokens,
            flops_kaplan: total.kaplan,
            flops_standard: total.standard,
            flops_attention: total.attention,
            flops_exact: total.exact,
            elapsed_s,
        }
    }

    /// Cumulative training FLOPs when evaluated, per convention.
    pub fn flops(&self) -> Flops {
        Flops {
            kaplan: self.flops_kaplan,
            standard: self.flops_standard,
            attention: self.flops_attention,
            exact: self.flops_exact,
        }
    }
}

/// Cumulative FLOPs after `tokens` training tokens, per convention.
pub fn cumulative_flops(per_token: &Flops, tokens: u64) -> Flops {
    per_token.scale(tokens as f64)
}

/// Appends records to `metrics.jsonl`, flushing every line so a killed run loses nothing written. Keeps the
/// rows in memory too: a checkpoint stores those through its step, to repair a damaged file on resume.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
    /// `(step, JSON line)` of every row in the file, in order.
    rows: Vec<(u64, String)>,
}

/// What [`MetricsWriter::open_checked`] found in the metrics history and did about it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistoryCheck {
    /// `metrics.jsonl` did not exist.
    pub file_missing: bool,
    /// 1-based numbers of unreadable lines that were dropped (a torn last line is not counted).
    pub dropped_lines: Vec<usize>,
    /// Train steps restored from the checkpoint's record.
    pub restored: Vec<u64>,
    /// Train steps in 1..=step found nowhere: holes in the history.
    pub missing: Vec<u64>,
}

impl HistoryCheck {
    /// One line per problem, for the terminal and `run.json`'s warnings (empty when the history is whole).
    /// `record` names where restored rows came from.
    pub fn warnings(&self, record: &str) -> Vec<String> {
        let mut w = Vec::new();
        if self.file_missing {
            w.push("metrics.jsonl was missing".to_string());
        }
        if !self.dropped_lines.is_empty() {
            w.push(format!(
                "metrics.jsonl: unreadable line(s) {} dropped",
                ranges(
                    &self
                        .dropped_lines
                        .iter()
                        .map(|&l| l as u64)
                        .collect::<Vec<_>>()
                )
            ));
        }
        if !self.restored.is_empty() {
            w.push(format!(
                "metrics.jsonl: step(s) {} restored from {record}",
                ranges(&self.restored)
            ));
        }
        if !self.missing.is_empty() {
            w.push(format!(
                "metrics.jsonl: step(s) {} are missing and could not be restored; the history has holes",
                ranges(&self.missing)
            ));
        }
        w
    }
}

/// `1-3, 7, 9-10`.
pub fn ranges(xs: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < xs.len() {
        let mut j = i;
        while j + 1 < xs.len() && xs[j + 1] == xs[j] + 1 {
            j += 1;
        }
        out.push(if j == i {
            xs[i].to_string()
        } else {
            format!("{}-{}", xs[i], xs[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

/// A readable row: `(step, is eval)`, or None for a line that is not a valid train or eval record.
fn parse_row(line: &str) -> Option<(u64, bool)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let step = v.get("step")?.as_u64()?;
    match v.get("kind")?.as_str()? {
        "train" => serde_json::from_value::<StepRecord>(v)
            .ok()
            .map(|_| (step, false)),
        "eval" => serde_json::from_value::<EvalRecord>(v)
            .ok()
            .map(|_| (step, true)),
        _ => None,
    }
}

/// A line of a metrics file with its parsed row (see [`parse_row`]).
type Line = (String, Option<(u64, bool)>);

/// Lines of a metrics file, each with its parsed row; a missing file is `None`.
fn read_rows(path: &Path) -> std::io::Result<Option<Vec<Line>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| (l.to_string(), parse_row(l)))
            .collect(),
    ))
}

/// Train steps in `1..=through` without a readable row in the metrics file at `path`.
pub fn missing_train_steps(path: &Path, through: u64) -> std::io::Result<Vec<u64>> {
    let mut have = vec![false; through as usize + 1];
    for (_, row) in read_rows(path)?.unwrap_or_default() {
        if let Some((s, false)) = row {
            if s <= through {
                have[s as usize] = true;
            }
        }
    }
    Ok((1..=through).filter(|&s| !have[s as usize]).collect())
}

impl MetricsWriter {
    /// Open (append) `dir/metrics.jsonl`, first dropping any rows past `keep_through_step` (the rows a
    /// resumed run will write again) and any torn last line.
    pub fn open(dir: &Path, keep_through_step: Option<u64>) -> std::io::Result<Self> {
        Ok(Self::open_checked(dir, keep_through_step.unwrap_or(u64::MAX), None)?.0)
    }

    /// Open `dir/metrics.jsonl` to continue after step `through`: rows past it are dropped (a resumed run
    /// writes them again), unreadable lines are dropped, and the train steps 1..=`through` are checked.
    /// Rows missing from the file are restored from `record` (a checkpoint's copy of the rows through its
    /// step) when it has them; the rest are reported in [`HistoryCheck::missing`].
    pub fn open_checked(
        dir: &Path,
        through: u64,
        record: Option<&str>,
    ) -> std::io::Result<(Self, HistoryCheck)> {
        let path = dir.join("metrics.jsonl");
        let mut check = HistoryCheck::default();
        let lines = read_rows(&path)?;
        check.file_missing = lines.is_none() && through > 0 && through != u64::MAX;
        let lines = lines.unwrap_or_default();
        let n = lines.len();
        // (step, is eval) → line; the file's own rows first, then the record's where the file has none.
        let mut rows: std::collections::BTreeMap<(u64, bool), String> = Default::default();
        for (i, (line, row)) in lines.into_iter().enumerate() {
            match row {
                Some(key) if key.0 <= through => {
                    rows.entry(key).or_insert(line);
                }
                Some(_) => {}
                // A torn last line is what a kill leaves; anything else is damage.
                None if i + 1 == n => {}
                None => check.dropped_lines.push(i + 1),
            }
        }
        if through != u64::MAX {
            for line in record.unwrap_or("").lines() {
                if let Some(key) = parse_row(line).filter(|k| k.0 <= through) {
                    if let std::collections::btree_map::Entry::Vacant(slot) = rows.entry(key) {
                        if !key.1 {
                            check.restored.push(key.0);
                        }
                        slot.insert(line.to_string());
                    }
                }
            }
            check.missing = (1..=through)
                .filter(|&s| !rows.contains_key(&(s, false)))
                .collect();
        }
        let rows: Vec<(u64, String)> = rows.into_iter().map(|((s, _), l)| (s, l)).collect();
        let tmp = dir.join("metrics.jsonl.tmp");
        let written = (|| {
            let mut f = File::create(&tmp)?;
            for (_, l) in &rows {
                writeln!(f, "{l}")?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", tmp.display()),
            ));
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok((MetricsWriter { path, file, rows }, check))
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record (with a `step` field) as a JSON line.
    pub fn write<T: Serialize>(&mut self, record: &T) -> std::io::Result<()> {
        #[derive(Deserialize)]
        struct Step {
            step: u64,
        }
        let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        let step = serde_json::from_str::<Step>(&line).map_or(0, |s| s.step);
        writeln!(self.file, "{line}")?;
        self.file.flush()?;
        self.rows.push((step, line));
        Ok(())
    }

    /// Rewrite the file from the rows in memory (atomically) and append from there: repairs a file damaged
    /// or deleted while the run was writing it.
    pub fn rewrite_from_memory(&mut self) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join("metrics.jsonl.tmp");
        let written = (|| {
            let mut f = File::create(&tmp)?;
            for (_, l) in &self.rows {
                writeln!(f, "{l}")?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }

    /// The rows written so far through `step`, as JSON lines: a checkpoint's record of the history.
    pub fn history(&self, step: u64) -> String {
        let mut out = String::new();
        for (_, l) in self.rows.iter().filter(|r| r.0 <= step) {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

/// Read every `train` record of a metrics file (for exports and tests).
pub fn read_step_records(path: &Path) -> std::io::Result<Vec<StepRecord>> {
    let mut out = Vec::new();
    for (i, line) in BufReader::new(File::open(path)?).lines().enumerate() {
        let line = line?;
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{}: {e}", path.display(), i + 1),
            )
        })?;
        if v.get("kind").and_then(|k| k.as_str()) == Some("train") {
            out.push(serde_json::from_value(v).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}:{}: {e}", path.display(), i + 1),
                )
            })?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64) -> StepRecord {
        StepRecord {
            kind: "train".into(),
            step,
            tokens: step * 10,
            loss: 1.0 / step as f64,
            lr: 0.1,
            grad_norm: 1.0,
            step_flops_kaplan: 1.0,
            step_flops_standard: 1.0,
            step_flops_attention: 1.0,
            step_flops_exact: 1.0,
            flops_kaplan: 1.0,
            flops_standard: 1.0,
            flops_attention: 1.0,
            flops_exact: 1.0,
            elapsed_s: step as f64,
            step_time_s: 1.0,
            tokens_per_s: 10.0,
            mfu: None,
        }
    }

    fn eval(step: u64) -> EvalRecord {
        EvalRecord {
            kind: "eval".into(),
            step,
            tokens: 0,
            eval_loss: 2.0,
            eval_loss_se: 0.1,
            eval_tokens: 5,
            flops_kaplan: 0.0,
            flops_standard: 0.0,
            flops_attention: 0.0,
            flops_exact: 0.0,
            elapsed_s: 0.0,
        }
    }

    /// A run directory with train rows 1..=8, an eval row at 4, and the writer's record through step 6.
    fn written() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::open(dir.path(), Some(0)).unwrap();
        for s in 1..=8 {
            w.write(&row(s)).unwrap();
            if s == 4 {
                w.write(&eval(4)).unwrap();
            }
        }
        let record = w.history(6);
        let full = std::fs::read_to_string(w.path()).unwrap();
        (dir, record, full)
    }

    #[test]
    fn a_whole_history_passes_and_later_rows_are_dropped() {
        let (dir, record, full) = written();
        assert_eq!(record.lines().count(), 7);
        assert!(full.starts_with(&record));
        let (w, check) = MetricsWriter::open_checked(dir.path(), 6, Some(&record)).unwrap();
        assert_eq!(check, HistoryCheck::default());
        assert!(check.warnings("x").is_empty());
        assert_eq!(std::fs::read_to_string(w.path()).unwrap(), record);
    }

    #[test]
    fn garbage_lines_holes_and_a_deleted_file_are_repaired_from_the_record() {
        let (dir, record, full) = written();
        let path = dir.path().join("metrics.jsonl");
        // Line 2 (step 2) becomes garbage, line 4 (step 4) disappears.
        let mut lines: Vec<&str> = full.lines().collect();
        lines[1] = "\u{0}garbage{";
        lines.remove(3);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let (_, check) = MetricsWriter::open_checked(dir.path(), 6, Some(&record)).unwrap();
        assert_eq!(check.dropped_lines, vec![2]);
        assert_eq!(check.restored, vec![2, 4]);
        assert!(check.missing.is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), record);
        let w = check.warnings("checkpoint step-6").join("; ");
        assert!(
            w.contains("line(s) 2 dropped") && w.contains("2, 4 restored from checkpoint step-6"),
            "{w}"
        );

        std::fs::remove_file(&path).unwrap();
        let (_, check) = MetricsWriter::open_checked(dir.path(), 6, Some(&record)).unwrap();
        assert!(check.file_missing);
        assert_eq!(check.restored, (1..=6).collect::<Vec<_>>());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), record);
    }

    #[test]
    fn holes_without_a_record_are_named() {
        let (dir, _, full) = written();
        let path = dir.path().join("metrics.jsonl");
        let lines: Vec<&str> = full.lines().collect();
        // Drop steps 2 and 3, keep the rest.
        let kept: Vec<&str> = [0, 3, 4, 5, 6, 7, 8].iter().map(|&i| lines[i]).collect();
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
        let (_, check) = MetricsWriter::open_checked(dir.path(), 6, None).unwrap();
        assert_eq!(check.missing, vec![2, 3]);
        let w = check.warnings("-").join("; ");
        assert!(w.contains("step(s) 2-3 are missing"), "{w}");
        assert_eq!(missing_train_steps(&path, 6).unwrap(), vec![2, 3]);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(missing_train_steps(&path, 2).unwrap(), vec![1, 2]);
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), "1-3, 5, 7-8");
    }
}

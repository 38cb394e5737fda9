//! Tidy CSV exports of run directories: one row per step per run, with the run's config columns.

use super::manifest::{Manifest, ManifestError};
use super::metrics::{read_step_records, StepRecord};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A row of a CSV export whose column names are declared with the fields that give its values (by
/// [`csv_row!`](crate::csv_row)), so names and values cannot drift apart.
pub trait CsvRow {
    /// Column names, in order.
    const COLUMNS: &'static [&'static str];
    /// The row's cells (unquoted), one per column of [`CsvRow::COLUMNS`], in order.
    fn values(&self) -> Vec<String>;
}

/// How a value is written in a CSV cell: numbers as Rust's `Display` writes them (the shortest text that
/// reads back to the same value), `None` as an empty cell.
pub trait CsvCell {
    /// The cell's text, unquoted.
    fn cell(&self) -> String;
}

macro_rules! display_cells {
    ($($t:ty),*) => {
        $(impl CsvCell for $t {
            fn cell(&self) -> String {
                self.to_string()
            }
        })*
    };
}
display_cells!(u64, usize, f32, f64, String);

impl CsvCell for Option<f64> {
    fn cell(&self) -> String {
        self.map_or(String::new(), |v| v.to_string())
    }
}

/// Declare a CSV row struct: each field is a column named like the field, in declaration order, and
/// the struct implements [`CsvRow`](crate::train::export::CsvRow) (every field's type implements
/// [`CsvCell`](crate::train::export::CsvCell)).
#[macro_export]
macro_rules! csv_row {
    ($(#[$attr:meta])* $vis:vis struct $name:ident {
        $($(#[$fattr:meta])* $field:ident : $ty:ty),* $(,)?
    }) => {
        $(#[$attr])*
        $vis struct $name {
            $($(#[$fattr])* pub $field: $ty),*
        }

        impl $crate::train::export::CsvRow for $name {
            const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];
            fn values(&self) -> Vec<String> {
                vec![$($crate::train::export::CsvCell::cell(&self.$field)),*]
            }
        }
    };
}

csv_row! {
    /// The config columns put on every row of the per-step CSV (the run's identity for grouping in pandas).
    #[derive(Clone, Debug)]
    pub struct RunColumns {
        /// Run name.
        run: String,
        /// Width D.
        d_model: usize,
        /// Depth L.
        n_layers: usize,
        /// Context T.
        seq_len: usize,
        /// Vocabulary V.
        vocab_size: usize,
        /// N: non-embedding parameters + head.
        n_params: u64,
        /// Every parameter.
        n_params_total: u64,
        /// Parameters without `embed` and `head`.
        n_params_non_embedding: u64,
        /// Sequences per step.
        batch_size: usize,
        /// Peak learning rate.
        lr: f64,
        /// Warmup steps.
        warmup_steps: u64,
        /// Weight decay.
        weight_decay: f32,
        /// Seed.
        seed: u64,
        /// Planned steps.
        steps_planned: u64,
        /// `running`, `finished`, `failed` or `interrupted`.
        status: String,
    }
}

csv_row! {
    /// The per-step columns of the per-step CSV (from a `train` row of `metrics.jsonl`).
    #[derive(Clone, Debug)]
    pub struct StepColumns {
        /// Optimizer step.
        step: u64,
        /// Training tokens seen after it.
        tokens: u64,
        /// Training loss.
        loss: f64,
        /// Learning rate of the step.
        lr_t: f64,
        /// Gradient norm.
        grad_norm: f64,
        /// Cumulative FLOPs, Kaplan.
        flops_kaplan: f64,
        /// Cumulative FLOPs, standard.
        flops_standard: f64,
        /// Cumulative FLOPs, attention.
        flops_attention: f64,
        /// Cumulative FLOPs, exact.
        flops_exact: f64,
        /// Wall time since the run started.
        elapsed_s: f64,
        /// Throughput of the step.
        tokens_per_s: f64,
        /// Model FLOPs utilisation (empty without a peak).
        mfu: Option<f64>,
    }
}

/// Config columns put on every row (the run's identity for grouping in pandas).
pub const RUN_COLUMNS: &[&str] = RunColumns::COLUMNS;

/// Step columns.
pub const STEP_COLUMNS: &[&str] = StepColumns::COLUMNS;

impl RunColumns {
    /// The columns of the run `name` with manifest `m`.
    pub fn of(name: &str, m: &Manifest) -> Self {
        let c = &m.config;
        RunColumns {
            run: name.to_string(),
            d_model: c.model.d_model,
            n_layers: c.model.n_layers,
            seq_len: c.model.seq_len,
            vocab_size: c.model.vocab_size,
            n_params: m.params.n,
            n_params_total: m.params.total,
            n_params_non_embedding: m.params.non_embedding,
            batch_size: c.batch_size,
            lr: c.lr,
            warmup_steps: c.warmup_steps,
            weight_decay: c.optimizer.weight_decay,
            seed: c.seed,
            steps_planned: c.steps,
            status: format!("{:?}", m.status).to_lowercase(),
        }
    }
}

impl StepColumns {
    /// The columns of one `train` record.
    pub fn of(r: &StepRecord) -> Self {
        let f = r.flops();
        StepColumns {
            step: r.step,
            tokens: r.tokens,
            loss: r.loss,
            lr_t: r.lr,
            grad_norm: r.grad_norm,
            flops_kaplan: f.kaplan,
            flops_standard: f.standard,
            flops_attention: f.attention,
            flops_exact: f.exact,
            elapsed_s: r.elapsed_s,
            tokens_per_s: r.tokens_per_s,
            mfu: r.mfu,
        }
    }
}

/// Quote a CSV field when needed.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A CSV line (no newline) of `cells`, each quoted when needed.
pub fn csv_line<S: AsRef<str>>(cells: &[S]) -> String {
    cells
        .iter()
        .map(|c| csv_field(c.as_ref()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a per-step CSV could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A run's `run.json`.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A run's `metrics.jsonl`.
    #[error("{}", path.display())]
    Metrics {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the CSV itself.
    #[error("writing the CSV")]
    Write(#[source] std::io::Error),
}

/// Write the per-step CSV of `runs` (each a name and a run directory) to `out`; returns the rows written.
pub fn write_steps_csv(
    runs: &[(String, &Path)],
    out: &mut dyn Write,
) -> Result<usize, ExportError> {
    let header: Vec<&str> = RUN_COLUMNS.iter().chain(STEP_COLUMNS).copied().collect();
    writeln!(out, "{}", header.join(",")).map_err(ExportError::Write)?;
    let mut rows = 0;
    for (name, dir) in runs {
        let m = Manifest::load(dir)?;
        let path = dir.join("metrics.jsonl");
        let records =
            read_step_records(&path).map_err(|source| ExportError::Metrics { path, source })?;
        let rv = csv_line(&RunColumns::of(name, &m).values());
        for r in records {
            let sv = csv_line(&StepColumns::of(&r).values());
            writeln!(out, "{rv},{sv}").map_err(ExportError::Write)?;
            rows += 1;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> StepRecord {
        let out = crate::train::trainer::StepOutcome {
            step: 3,
            loss: 2.5,
            grad_norm: 0.75,
            lr: 1e-3,
            targets: 10,
        };
        let per_token = crate::model::Flops {
            kaplan: 1.0,
            standard: 2.0,
            attention: 3.0,
            exact: 4.0,
        };
        StepRecord::new(&out, 100, &per_token, 9.5, 0.5, None)
    }

    #[test]
    fn step_csv_rows_have_one_value_per_column() {
        let m = crate::train::manifest::tests::manifest();
        let run = RunColumns::of("a,b", &m);
        assert_eq!(run.values().len(), RUN_COLUMNS.len());
        let step = StepColumns::of(&record());
        assert_eq!(step.values().len(), STEP_COLUMNS.len());
        assert_eq!(
            csv_line(&step.values()),
            "3,300,2.5,0.001,0.75,300,600,900,1200,9.5,200,"
        );
        assert!(csv_line(&run.values()).starts_with("\"a,b\","));
    }
}

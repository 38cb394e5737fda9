//! Errors of the scaling-law fitter: every one names the file, column, line or flag at fault.

use std::path::PathBuf;

/// What can go wrong reading inputs or fitting.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// A file could not be read.
    #[error("cannot read {path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        err: std::io::Error,
    },
    /// A file has no header or no data rows.
    #[error("{path}: {what}")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What is missing ("empty file", "no data rows").
        what: String,
    },
    /// No column matched the names tried.
    #[error("{path}: no column {wanted} (columns present: {available}){hint}")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The names tried, quoted and joined.
        wanted: String,
        /// The header of the file.
        available: String,
        /// Which flag selects the column.
        hint: String,
    },
    /// A cell that must be a number is not one.
    #[error("{path}:{line}: column '{column}': '{value}' is not a number")]
    NotNumeric {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the file.
        line: usize,
        /// The column name.
        column: String,
        /// The offending text.
        value: String,
    },
    /// A row has a different number of cells from the header.
    #[error("{path}:{line}: {got} cells, the header has {expected}")]
    RaggedRow {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// Cells in the header.
        expected: usize,
        /// Cells in the row.
        got: usize,
    },
    /// A value is outside its domain (a non-positive N, D, C or loss).
    #[error("{path}:{line}: column '{column}': {value} must be positive")]
    NotPositive {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The column name.
        column: String,
        /// The value.
        value: f64,
    },
    /// Two rows of a runs table carry the same run id.
    #[error("{path}:{line}: run id '{id}' (column '{column}') already appeared on line {first_line}; each run must appear once: remove one of the two rows (if '{column}' is not a unique run id, name the column that is with --run-col)")]
    DuplicateRun {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the repeat.
        line: usize,
        /// The 1-based line where the id first appeared.
        first_line: usize,
        /// The run-id column.
        column: String,
        /// The repeated id.
        id: String,
    },
    /// The input path is neither a CSV file nor a sweep directory holding one.
    #[error("{path}: {what}")]
    BadInput {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A fit cannot run on the data it was given.
    #[error("{fit}: {why}")]
    Unsupported {
        /// The fit ("approach 2", ...).
        fit: String,
        /// Why it cannot run.
        why: String,
    },
}

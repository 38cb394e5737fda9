//! The error type of the data pipeline: every variant names the file (and line) it concerns.

use std::path::{Path, PathBuf};

/// A failure while reading inputs, tokenizing, writing or reading shards.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system I/O failure on a file.
    #[error("{}: {err}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        err: std::io::Error,
    },
    /// The SentencePiece model file cannot be used.
    #[error("{}: bad tokenizer model: {msg}", path.display())]
    Model {
        /// The model file (or `<bundled>`).
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// An input document file is malformed (`line` is 0 when no line applies).
    #[error("{}{}: {msg}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Input {
        /// The input file.
        path: PathBuf,
        /// 1-based line number, or 0.
        line: u64,
        /// What is wrong.
        msg: String,
    },
    /// A shard file is malformed, corrupt or does not belong to this model.
    #[error("{}: {msg}", path.display())]
    Shard {
        /// The shard file (or directory).
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A bad argument (sequence length, vocabulary, flags...).
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            err,
        }
    }
    /// A malformed shard `path`.
    pub fn shard(path: &Path, msg: impl Into<String>) -> Self {
        DataError::Shard {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    /// A malformed input `path` at `line` (0: no line).
    pub fn input(path: &Path, line: u64, msg: impl Into<String>) -> Self {
        DataError::Input {
            path: path.to_path_buf(),
            line,
            msg: msg.into(),
        }
    }
}

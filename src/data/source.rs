//! The token-source interface the training loop draws batches from.

use serde_json::Value;

/// A failure while producing or restoring batches.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Restoring a saved position that does not belong to this source.
    #[error("cannot restore data loader state: {0}")]
    BadState(String),
    /// Reading a shard failed (the error names the file).
    #[error(transparent)]
    Data(#[from] super::DataError),
    /// Anything else, already phrased with the file it concerns.
    #[error("{0}")]
    Other(String),
}

/// A deterministic stream of training windows.
///
/// Each window is `T + 1` token ids (inputs and the shifted targets). The stream's position is small
/// serialisable state: restoring it reproduces exactly the windows that would have followed.
pub trait TokenSource: Send {
    /// The next `b` windows of `seq_len() + 1` ids, row-major (`b × (T+1)`).
    fn next_batch(&mut self, b: usize) -> Result<Vec<u16>, SourceError>;
    /// Context length T of the windows.
    fn seq_len(&self) -> usize;
    /// One line describing where the tokens come from.
    fn describe(&self) -> String;
    /// The stream's position, to be saved with a checkpoint.
    fn state(&self) -> Value;
    /// Continue from a position returned by [`TokenSource::state`].
    fn restore(&mut self, state: &Value) -> Result<(), SourceError>;
}

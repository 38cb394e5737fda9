//! Token data: the source interface the trainer reads, and the sources behind it.

pub mod source;
pub mod synthetic;

pub use source::{SourceError, TokenSource};
pub use synthetic::SyntheticSource;

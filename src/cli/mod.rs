//! Subcommands of the `isoflop` binary, one module each.

pub mod bench;
pub mod columns;
pub mod compare;
pub mod data;
pub mod eval;
pub mod export;
pub mod fit;
pub mod info;
pub mod predict;
pub mod sweep;
pub mod train;

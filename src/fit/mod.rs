//! Scaling-law fitting: Approach 1 (envelope of training curves), Approach 2 (IsoFLOP minima),
//! Approach 3 (parametric L(N, D), Hoffmann et al. / Besiroglu et al.), loss against compute on the
//! envelope, the over-training law of Gadre et al. and their law from loss to downstream task error; plots and a JSON report.

pub mod data;
pub mod error;
pub mod optim;
pub mod stats;
pub mod table;

pub use error::FitError;
pub mod akima;
pub mod compare;
pub mod compute;
pub mod downstream;
pub mod envelope;
pub mod hparams;
pub mod isoflop;
pub mod law;
pub mod overtrain;
pub mod parametric;
pub mod plot;
pub mod powerlaw;
pub mod predict;
pub mod report;

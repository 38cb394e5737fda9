//! Scaling-law fitting.

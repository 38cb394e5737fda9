//! Settings that may depend on the model size: a fixed value, a table keyed by width, or a power law of N.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A number that is fixed or a rule of the model size.
///
/// TOML: `lr = 3e-3`, `lr = { table = { 64 = 4e-3, 128 = 3e-3 } }` (keyed by d_model), or
/// `lr = { power_law = { a = 0.05, b = -0.2 } }` (value = a·N^b with N the parameter count `n`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rule {
    /// The same value for every size.
    Fixed(f64),
    /// A value per width.
    Table {
        /// d_model (as a TOML key) → value.
        table: BTreeMap<String, f64>,
    },
    /// a·N^b.
    PowerLaw {
        /// Coefficients.
        power_law: PowerLaw,
    },
}

/// value = a·N^b.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerLaw {
    /// Coefficient.
    pub a: f64,
    /// Exponent.
    pub b: f64,
}

impl Rule {
    /// Check the rule's own values; `field` names it in errors.
    pub fn check(&self, field: &str) -> Result<(), String> {
        match self {
            Rule::Fixed(v) if !(v.is_finite() && *v > 0.0) => {
                Err(format!("{field} must be positive, got {v}"))
            }
            Rule::Table { table } => {
                if table.is_empty() {
                    return Err(format!("{field}.table is empty"));
                }
                for (k, v) in table {
                    if k.parse::<usize>().is_err() {
                        return Err(format!("{field}.table key {k:?} is not a width (d_model)"));
                    }
                    if !(v.is_finite() && *v > 0.0) {
                        return Err(format!("{field}.table.{k} must be positive, got {v}"));
                    }
                }
                Ok(())
            }
            Rule::PowerLaw { power_law: p }
                if !(p.a.is_finite() && p.a > 0.0 && p.b.is_finite()) =>
            {
                Err(format!(
                    "{field}.power_law needs a > 0 and a finite b, got a = {}, b = {}",
                    p.a, p.b
                ))
            }
            _ => Ok(()),
        }
    }

    /// The value for a model of width `d_model` and `n` parameters.
    pub fn value(&self, field: &str, d_model: usize, n: u64) -> Result<f64, String> {
        match self {
            Rule::Fixed(v) => Ok(*v),
            Rule::Table { table } => table
                .iter()
                .find(|(k, _)| k.parse::<usize>().ok() == Some(d_model))
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let mut keys: Vec<usize> =
                        table.keys().filter_map(|k| k.parse().ok()).collect();
                    keys.sort_unstable();
                    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                    format!(
                        "{field}.table has no entry for d_model = {d_model} (entries: {})",
                        keys.join(", ")
                    )
                }),
            Rule::PowerLaw { power_law: p } => Ok(p.a * (n as f64).powf(p.b)),
        }
    }
}

/// Warmup length: `{ steps = 100 }`, `{ tokens = 1e6 }`, `{ tokens_per_param = 1 }` (warmup tokens = N,
/// as Porian et al. recommend) or `{ fraction = 0.1 }` of the run's steps. Always capped at the run length.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Warmup {
    /// A fixed number of steps.
    Steps(u64),
    /// A fixed number of tokens.
    Tokens(f64),
    /// This many tokens per parameter N.
    TokensPerParam(f64),
    /// A fraction of the run's steps.
    Fraction(f64),
}

impl Warmup {
    /// Error unless a fraction lies in `[0, 1]` and a token count is finite and non-negative.
    pub fn check(&self) -> Result<(), String> {
        let bad = match *self {
            Warmup::Steps(_) => None,
            Warmup::Tokens(v) | Warmup::TokensPerParam(v) => {
                (!(v.is_finite() && v >= 0.0)).then_some(v)
            }
            Warmup::Fraction(v) => (!(0.0..=1.0).contains(&v)).then_some(v),
        };
        match bad {
            Some(v) => Err(format!("train.warmup has an out-of-range value {v}")),
            None => Ok(()),
        }
    }

    /// Warmup steps of a run of `steps` steps of `tokens_per_step` tokens for a model of `n` parameters.
    pub fn steps(&self, steps: u64, tokens_per_step: u64, n: u64) -> u64 {
        let from_tokens = |t: f64| (t / tokens_per_step as f64).ceil() as u64;
        let w = match *self {
            Warmup::Steps(s) => s,
            Warmup::Tokens(t) => from_tokens(t),
            Warmup::TokensPerParam(m) => from_tokens(m * n as f64),
            Warmup::Fraction(f) => (f * steps as f64).round() as u64,
        };
        w.min(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        lr: Rule,
        warmup: Warmup,
    }

    #[test]
    fn rules_parse_and_evaluate() {
        let t: T = toml::from_str("lr = 2e-3\nwarmup = { steps = 5 }").unwrap();
        assert_eq!(t.lr.value("lr", 64, 1000).unwrap(), 2e-3);
        assert_eq!(t.warmup.steps(3, 10, 0), 3);
        let t: T = toml::from_str(
            "lr = { table = { 64 = 4e-3, 128 = 3e-3 } }\nwarmup = { tokens_per_param = 1 }",
        )
        .unwrap();
        assert_eq!(t.lr.value("lr", 128, 0).unwrap(), 3e-3);
        let e = t.lr.value("train.lr", 192, 0).unwrap_err();
        assert!(e.contains("d_model = 192") && e.contains("64, 128"), "{e}");
        assert_eq!(t.warmup.steps(1000, 100, 1050), 11);
        let t: T = toml::from_str(
            "lr = { power_law = { a = 2.0, b = -0.5 } }\nwarmup = { fraction = 0.25 }",
        )
        .unwrap();
        assert_eq!(t.lr.value("lr", 64, 400).unwrap(), 0.1);
        assert_eq!(t.warmup.steps(10, 1, 0), 3);
        assert!(toml::from_str::<T>("lr = 1\nwarmup = { minutes = 5 }").is_err());
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(Rule::Fixed(0.0).check("lr").is_err());
        let t: T = toml::from_str("lr = { table = { wide = 1 } }\nwarmup = { steps = 1 }").unwrap();
        assert!(t.lr.check("lr").unwrap_err().contains("wide"));
        assert!(Warmup::Fraction(1.5).check().is_err());
    }
}

//! A seeded synthetic token stream with learnable structure, for tests and for runs without data.

use super::source::{SourceError, TokenSource};
use crate::model::config::{BOS_ID, EOS_ID};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// Documents from a fixed random first-order Markov chain over a small alphabet of ids, so a model can
/// learn it: each token has a few likely successors. Window `i` is generated from its own RNG stream,
/// so the state is just the window counter.
pub struct SyntheticSource {
    seq_len: usize,
    vocab: usize,
    seed: u64,
    next_window: u64,
    /// successors[a] = the 4 likely successors of id a.
    successors: Vec<[u16; 4]>,
}

impl SyntheticSource {
    /// A stream of windows of `seq_len + 1` ids below `vocab`, determined by `seed`.
    pub fn new(seq_len: usize, vocab: usize, seed: u64) -> Self {
        let alphabet = vocab.clamp(4, 512);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005E_ED0F_DA7A);
        let successors = (0..vocab)
            .map(|_| std::array::from_fn(|_| rng.random_range(3..alphabet) as u16))
            .collect();
        SyntheticSource {
            seq_len,
            vocab,
            seed,
            next_window: 0,
            successors,
        }
    }

    /// The same stream, starting at window `first` instead of 0 (e.g. a held-out stretch far beyond what
    /// training reaches).
    pub fn starting_at(seq_len: usize, vocab: usize, seed: u64, first: u64) -> Self {
        SyntheticSource {
            next_window: first,
            ..Self::new(seq_len, vocab, seed)
        }
    }

    fn window(&self, index: u64) -> Vec<u16> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(index);
        let n = self.seq_len + 1;
        let mut w = Vec::with_capacity(n);
        let mut cur = BOS_ID;
        w.push(cur);
        while w.len() < n {
            let r: f32 = rng.random();
            cur = if cur == EOS_ID {
                BOS_ID
            } else if r < 0.01 {
                EOS_ID
            } else if r < 0.9 {
                self.successors[cur as usize][rng.random_range(0..4)]
            } else {
                rng.random_range(3..self.vocab.min(512)) as u16
            };
            w.push(cur);
        }
        w
    }
}

impl TokenSource for SyntheticSource {
    fn next_batch(&mut self, b: usize) -> Result<Vec<u16>, SourceError> {
        let mut out = Vec::with_capacity(b * (self.seq_len + 1));
        for _ in 0..b {
            out.extend(self.window(self.next_window));
            self.next_window += 1;
        }
        Ok(out)
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn describe(&self) -> String {
        format!(
            "synthetic Markov tokens (seed {}, vocab {})",
            self.seed, self.vocab
        )
    }
    fn state(&self) -> Value {
        json!({ "kind": "synthetic", "seed": self.seed, "next_window": self.next_window })
    }
    fn restore(&mut self, state: &Value) -> Result<(), SourceError> {
        if state.get("kind").and_then(Value::as_str) != Some("synthetic")
            || state.get("seed").and_then(Value::as_u64) != Some(self.seed)
        {
            return Err(SourceError::BadState(format!(
                "not a synthetic stream with seed {}: {state}",
                self.seed
            )));
        }
        self.next_window = state
            .get("next_window")
            .and_then(Value::as_u64)
            .ok_or_else(|| SourceError::BadState("missing next_window".into()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_resumable() {
        let mut a = SyntheticSource::new(16, 1000, 3);
        let first = a.next_batch(2).unwrap();
        let st = a.state();
        let second = a.next_batch(3).unwrap();
        assert_eq!(first.len(), 2 * 17);
        assert!(first.iter().all(|&t| (t as usize) < 1000));
        let mut b = SyntheticSource::new(16, 1000, 3);
        assert_eq!(b.next_batch(2).unwrap(), first);
        let mut c = SyntheticSource::new(16, 1000, 3);
        c.restore(&st).unwrap();
        assert_eq!(c.next_batch(3).unwrap(), second);
        let mut d = SyntheticSource::starting_at(16, 1000, 3, 2);
        assert_eq!(d.next_batch(3).unwrap(), second);
        assert!(SyntheticSource::new(16, 1000, 4).restore(&st).is_err());
    }
}

//! Wrappers that time every call into a [`Backend`] and a [`TokenSource`], so the real training loop
//! ([`crate::train::Trainer`]) can be benchmarked unchanged and its step split into phases.
//!
//! The times are host wall-clock around each call. They are exact for a synchronous backend (the CPU
//! backend); an asynchronous GPU backend returns from some calls before the device has finished, so there
//! the phase shares are the host's view and only whole-step times (each step ends in a reduction that
//! waits for the device) are exact.

use crate::backend::{AdamWStep, Backend, BackendError, DeviceInfo, LossSum, TokenBatch};
use crate::data::{SourceError, TokenSource};
use crate::model::ModelConfig;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Seconds spent in each kind of call since the last reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTimes {
    /// Drawing token batches from the source.
    pub data_s: f64,
    /// `zero_grads`.
    pub zero_grads_s: f64,
    /// `forward_backward` (forward, loss and backward of every micro-batch).
    pub forward_backward_s: f64,
    /// `forward_loss` (forward only).
    pub forward_only_s: f64,
    /// `grad_norm`.
    pub grad_norm_s: f64,
    /// `adamw_step`.
    pub adamw_s: f64,
    /// Number of `forward_backward` calls.
    pub forward_backward_calls: u64,
    /// Number of `forward_loss` calls.
    pub forward_only_calls: u64,
}

/// Shared, resettable phase times.
pub type SharedPhases = Arc<Mutex<PhaseTimes>>;

fn add(phases: &SharedPhases, f: impl FnOnce(&mut PhaseTimes)) {
    // A poisoned lock only means another thread panicked mid-update; the numbers are still usable.
    let mut p = phases.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut p);
}

/// Read the phase times.
pub fn snapshot(phases: &SharedPhases) -> PhaseTimes {
    *phases.lock().unwrap_or_else(|e| e.into_inner())
}

/// Set the phase times to zero.
pub fn reset(phases: &SharedPhases) {
    *phases.lock().unwrap_or_else(|e| e.into_inner()) = PhaseTimes::default();
}

/// A backend that forwards every call to `inner` and adds the call's wall time to a phase.
pub struct TimedBackend {
    inner: Box<dyn Backend>,
    phases: SharedPhases,
}

impl TimedBackend {
    /// Wrap `inner`; times go to `phases`.
    pub fn new(inner: Box<dyn Backend>, phases: SharedPhases) -> Self {
        TimedBackend { inner, phases }
    }
}

fn timed<T>(
    phases: &SharedPhases,
    f: impl FnOnce() -> T,
    put: impl FnOnce(&mut PhaseTimes, f64),
) -> T {
    let t = Instant::now();
    let out = f();
    let dt = t.elapsed().as_secs_f64();
    add(phases, |p| put(p, dt));
    out
}

impl Backend for TimedBackend {
    fn device(&self) -> DeviceInfo {
        self.inner.device()
    }
    fn config(&self) -> &ModelConfig {
        self.inner.config()
    }
    fn forward_backward(&mut self, batch: &TokenBatch) -> Result<LossSum, BackendError> {
        let inner = &mut self.inner;
        timed(
            &self.phases,
            || inner.forward_backward(batch),
            |p, dt| {
                p.forward_backward_s += dt;
                p.forward_backward_calls += 1;
            },
        )
    }
    fn forward_loss(&mut self, batch: &TokenBatch) -> Result<LossSum, BackendError> {
        let inner = &mut self.inner;
        timed(
            &self.phases,
            || inner.forward_loss(batch),
            |p, dt| {
                p.forward_only_s += dt;
                p.forward_only_calls += 1;
            },
        )
    }
    fn forward_scores(
        &mut self,
        batch: &TokenBatch,
    ) -> Result<crate::backend::TokenScores, BackendError> {
        let inner = &mut self.inner;
        timed(
            &self.phases,
            || inner.forward_scores(batch),
            |p, dt| {
                p.forward_only_s += dt;
                p.forward_only_calls += 1;
            },
        )
    }
    fn zero_grads(&mut self) -> Result<(), BackendError> {
        let inner = &mut self.inner;
        timed(
            &self.phases,
            || inner.zero_grads(),
            |p, dt| p.zero_grads_s += dt,
        )
    }
    fn grad_norm(&mut self) -> Result<f64, BackendError> {
        let inner = &mut self.inner;
        timed(
            &self.phases,
            || inner.grad_norm(),
            |p, dt| p.grad_norm_s += dt,
        )
    }
    fn adamw_step(&mut self, hp: &AdamWStep) -> Result<(), BackendError> {
        let inner = &mut self.inner;
        timed(
            &self.phases,
            || inner.adamw_step(hp),
            |p, dt| p.adamw_s += dt,
        )
    }
    fn read_params(&self) -> Result<Vec<f32>, BackendError> {
        self.inner.read_params()
    }
    fn write_params(&mut self, params: &[f32]) -> Result<(), BackendError> {
        self.inner.write_params(params)
    }
    fn read_moments(&self) -> Result<(Vec<f32>, Vec<f32>), BackendError> {
        self.inner.read_moments()
    }
    fn write_moments(&mut self, m: &[f32], v: &[f32]) -> Result<(), BackendError> {
        self.inner.write_moments(m, v)
    }
    fn read_grads(&self) -> Result<Vec<f32>, BackendError> {
        self.inner.read_grads()
    }
}

/// A token source that forwards to `inner` and times `next_batch` as the data phase.
pub struct TimedSource<S> {
    inner: S,
    phases: SharedPhases,
}

impl<S: TokenSource> TimedSource<S> {
    /// Wrap `inner`; times go to `phases`.
    pub fn new(inner: S, phases: SharedPhases) -> Self {
        TimedSource { inner, phases }
    }
}

impl<S: TokenSource> TokenSource for TimedSource<S> {
    fn next_batch(&mut self, b: usize) -> Result<Vec<u16>, SourceError> {
        let inner = &mut self.inner;
        timed(&self.phases, || inner.next_batch(b), |p, dt| p.data_s += dt)
    }
    fn seq_len(&self) -> usize {
        self.inner.seq_len()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn state(&self) -> serde_json::Value {
        self.inner.state()
    }
    fn restore(&mut self, state: &serde_json::Value) -> Result<(), SourceError> {
        self.inner.restore(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuBackend;
    use crate::data::SyntheticSource;
    use crate::model::init_params;

    #[test]
    fn wrapped_backend_gives_identical_results_and_counts_calls() {
        let cfg = ModelConfig {
            d_model: 64,
            n_layers: 1,
            seq_len: 8,
            vocab_size: 40,
        };
        let phases = SharedPhases::default();
        let mut plain = CpuBackend::new(cfg, init_params(&cfg, 1)).unwrap();
        let mut timed = TimedBackend::new(
            Box::new(CpuBackend::new(cfg, init_params(&cfg, 1)).unwrap()),
            phases.clone(),
        );
        let mut src = TimedSource::new(SyntheticSource::new(8, 40, 2), phases.clone());
        let batch = TokenBatch::new(&cfg, &src.next_batch(2).unwrap(), 2).unwrap();
        let a = plain.forward_backward(&batch).unwrap();
        let b = timed.forward_backward(&batch).unwrap();
        assert_eq!(a, b);
        assert_eq!(plain.read_grads().unwrap(), timed.read_grads().unwrap());
        timed.forward_loss(&batch).unwrap();
        timed.grad_norm().unwrap();
        let p = snapshot(&phases);
        assert_eq!((p.forward_backward_calls, p.forward_only_calls), (1, 1));
        assert!(p.forward_backward_s > 0.0 && p.data_s > 0.0 && p.grad_norm_s >= 0.0);
        reset(&phases);
        assert_eq!(snapshot(&phases), PhaseTimes::default());
    }
}

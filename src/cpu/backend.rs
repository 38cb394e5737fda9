//! [`CpuBackend`]: the whole model on the CPU in f32, behind the [`Backend`] trait.

use super::activations::Activations;
use super::model::{backward, forward, Dims};
use super::ops::{
    adamw_update, cross_entropy_in_place, cross_entropy_loss, global_norm, token_scores,
};
use crate::backend::{
    check_shape, AdamWStep, Backend, BackendError, DeviceInfo, DeviceKind, LossSum, Precision,
    TokenBatch, TokenScores,
};
use crate::model::{ModelConfig, ParamLayout};

/// Number of threads the CPU ops run on (rayon's current pool).
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

/// The f32 reference backend: parameters, gradients, AdamW moments and activation buffers in host
/// memory. Its results do not depend on the number of threads.
pub struct CpuBackend {
    cfg: ModelConfig,
    layout: ParamLayout,
    params: Vec<f32>,
    grads: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    acts: Activations,
    /// Built by [`CpuBackend::new_forward_only`]: no gradients or moments exist.
    forward_only: bool,
}

impl CpuBackend {
    /// A backend for `cfg` starting from `params` (flat, [`ParamLayout`] order); gradients and
    /// moments start at zero.
    pub fn new(cfg: ModelConfig, params: Vec<f32>) -> Result<Self, BackendError> {
        cfg.validate().map_err(BackendError::InvalidConfig)?;
        let layout = ParamLayout::new(&cfg);
        check_shape("parameters", layout.total, params.len())?;
        let total = layout.total;
        Ok(CpuBackend {
            cfg,
            layout,
            params,
            grads: vec![0.0; total],
            m: vec![0.0; total],
            v: vec![0.0; total],
            acts: Activations::empty(),
            forward_only: false,
        })
    }

    /// A backend for evaluation only: parameters and activations, with no gradient accumulator and no
    /// AdamW moments allocated. Training calls (`forward_backward`, `adamw_step`, moments, gradients)
    /// return an error.
    pub fn new_forward_only(cfg: ModelConfig, params: Vec<f32>) -> Result<Self, BackendError> {
        let mut be = Self::new_unallocated(cfg, params)?;
        be.forward_only = true;
        Ok(be)
    }

    fn new_unallocated(cfg: ModelConfig, params: Vec<f32>) -> Result<Self, BackendError> {
        cfg.validate().map_err(BackendError::InvalidConfig)?;
        let layout = ParamLayout::new(&cfg);
        check_shape("parameters", layout.total, params.len())?;
        Ok(CpuBackend {
            cfg,
            layout,
            params,
            grads: Vec::new(),
            m: Vec::new(),
            v: Vec::new(),
            acts: Activations::empty(),
            forward_only: false,
        })
    }

    /// f32 values held for the parameters, their gradients and the AdamW moments (activations
    /// excluded): `4·P` for a training backend, `P` for a forward-only one.
    pub fn state_floats(&self) -> usize {
        self.params.len() + self.grads.len() + self.m.len() + self.v.len()
    }

    fn trainable(&self, call: &'static str) -> Result<(), BackendError> {
        if self.forward_only {
            Err(BackendError::ForwardOnly { call })
        } else {
            Ok(())
        }
    }

    /// The parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Check that a batch fits the model and run the forward pass up to the logits.
    fn run_forward(&mut self, batch: &TokenBatch) -> Result<Dims, BackendError> {
        batch.check_fits(&self.cfg)?;
        let dm = Dims::new(&self.cfg, batch.b());
        self.acts.ensure(&self.cfg, batch.b());
        forward(
            &self.layout,
            &self.params,
            batch.inputs_BxT(),
            dm,
            &mut self.acts,
        );
        Ok(dm)
    }
}

impl Backend for CpuBackend {
    fn device(&self) -> DeviceInfo {
        DeviceInfo {
            kind: DeviceKind::Cpu,
            name: "cpu".into(),
            threads: Some(cpu_threads()),
            precision: Precision::F32,
            memory_bytes: None,
        }
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn forward_backward(&mut self, batch: &TokenBatch) -> Result<LossSum, BackendError> {
        self.trainable("forward_backward")?;
        let dm = self.run_forward(batch)?;
        let (n, v) = (dm.n, dm.v);
        let loss = cross_entropy_in_place(&mut self.acts.logits[..n * v], batch.targets_BxT(), v);
        backward(
            &self.layout,
            &self.params,
            &mut self.grads,
            batch.inputs_BxT(),
            dm,
            &mut self.acts,
        );
        Ok(loss)
    }

    fn forward_loss(&mut self, batch: &TokenBatch) -> Result<LossSum, BackendError> {
        let dm = self.run_forward(batch)?;
        let (n, v) = (dm.n, dm.v);
        Ok(cross_entropy_loss(
            &self.acts.logits[..n * v],
            batch.targets_BxT(),
            v,
        ))
    }

    fn forward_scores(&mut self, batch: &TokenBatch) -> Result<TokenScores, BackendError> {
        let dm = self.run_forward(batch)?;
        let (n, v) = (dm.n, dm.v);
        let mut out = TokenScores {
            logp_BxT: vec![0.0; n],
            hit_BxT: vec![false; n],
        };
        token_scores(
            &self.acts.logits[..n * v],
            batch.targets_BxT(),
            v,
            &mut out.logp_BxT,
            &mut out.hit_BxT,
        );
        Ok(out)
    }

    fn zero_grads(&mut self) -> Result<(), BackendError> {
        self.trainable("zero_grads")?;
        self.grads.fill(0.0);
        Ok(())
    }

    fn grad_norm(&mut self) -> Result<f64, BackendError> {
        self.trainable("grad_norm")?;
        Ok(global_norm(&self.grads))
    }

    fn adamw_step(&mut self, hp: &AdamWStep) -> Result<(), BackendError> {
        self.trainable("adamw_step")?;
        for spec in &self.layout.tensors {
            let r = spec.range();
            adamw_update(
                &mut self.params[r.clone()],
                &self.grads[r.clone()],
                &mut self.m[r.clone()],
                &mut self.v[r],
                hp,
                spec.decayed(),
            );
        }
        Ok(())
    }

    fn read_params(&self) -> Result<Vec<f32>, BackendError> {
        Ok(self.params.clone())
    }

    fn write_params(&mut self, params: &[f32]) -> Result<(), BackendError> {
        check_shape("parameters", self.layout.total, params.len())?;
        self.params.copy_from_slice(params);
        Ok(())
    }

    fn read_moments(&self) -> Result<(Vec<f32>, Vec<f32>), BackendError> {
        self.trainable("read_moments")?;
        Ok((self.m.clone(), self.v.clone()))
    }

    fn write_moments(&mut self, m: &[f32], v: &[f32]) -> Result<(), BackendError> {
        self.trainable("write_moments")?;
        check_shape("AdamW first moment", self.layout.total, m.len())?;
        check_shape("AdamW second moment", self.layout.total, v.len())?;
        self.m.copy_from_slice(m);
        self.v.copy_from_slice(v);
        Ok(())
    }

    fn read_grads(&self) -> Result<Vec<f32>, BackendError> {
        self.trainable("read_grads")?;
        Ok(self.grads.clone())
    }
}

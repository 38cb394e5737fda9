//! Running one model size: open the backend, pick the micro-batch, train warm-up and timed steps with the
//! real training loop, and turn the timings into throughput, MFU, memory and phase shares.

use super::memory;
use super::plan::{BackendKind, BenchPlan, SizeSpec};
use super::report::{Mfu, PhaseShare, SizeResult};
use super::stats::Spread;
use super::timed::{self, SharedPhases, TimedBackend, TimedSource};
use super::BenchError;
use crate::backend::{Backend, BackendError, TokenBatch};
use crate::data::{SyntheticSource, TokenSource};
use crate::device::peak::Peak;
use crate::device::{self, DeviceChoice};
use crate::model::{init_params, FlopsPerToken, ModelConfig, ParamCounts};
use crate::train::Trainer;
use std::time::Instant;

/// Seed offset of the token stream used for micro-batch probes and forward-only timing, so they never
/// consume the training stream.
const PROBE_SEED_XOR: u64 = 0xB3AC_4000;

/// Where to run and what to compare against.
#[derive(Clone, Debug)]
pub struct RunContext {
    /// Where each size runs (`--device`).
    pub device: DeviceChoice,
    /// Datasheet peak (None on the CPU unless given).
    pub datasheet_peak: Option<Peak>,
    /// Measured matmul peak on this device, if one could be measured.
    pub measured_peak: Option<Peak>,
}

/// Bytes of host memory the CPU backend holds for a micro-batch of `b` (activations and scratch, see
/// `src/cpu/activations.rs`) plus parameters, gradients and both AdamW moments.
pub fn cpu_backend_bytes(cfg: &ModelConfig, b: usize) -> u64 {
    let (d, t, v, l, h) = (
        cfg.d_model as u64,
        cfg.seq_len as u64,
        cfg.vocab_size as u64,
        cfg.n_layers as u64,
        cfg.n_heads() as u64,
    );
    let n = b as u64 * t;
    let per_layer = 9 * n * d + 2 * n * 4 * d + b as u64 * h * t * t + 4 * n * h + 4 * n;
    let floats =
        l * per_layer + (l + 1) * n * d + n * d + 2 * n + n * v + 8 * n * d + 2 * n * 4 * d;
    let params = ParamCounts::of(cfg).total;
    4 * floats + 2 * 2 * n + 4 * 4 * params
}

/// Available host memory (MemAvailable of /proc/meminfo), bytes.
fn mem_available_bytes() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    let l = t.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = l["MemAvailable:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Divisors of `n`, largest first.
fn divisors_desc(n: usize) -> Vec<usize> {
    (1..=n).rev().filter(|d| n.is_multiple_of(*d)).collect()
}

/// The micro-batch: `--micro-batch` if given, else the largest divisor of the global batch that fits.
/// On a GPU "fits" means a probe forward/backward does not run out of device memory; on the CPU, that
/// the backend's buffers take at most half of the available memory. Returns the choice and how it was
/// made.
fn choose_micro_batch(
    backend: &mut dyn Backend,
    plan: &BenchPlan,
    cfg: &ModelConfig,
    kind: BackendKind,
) -> Result<(usize, String), BenchError> {
    if let Some(m) = plan.micro_batch {
        return Ok((m, "--micro-batch".into()));
    }
    let mut tried = Vec::new();
    let budget = mem_available_bytes().map(|b| b / 2);
    for b in divisors_desc(plan.batch_size) {
        match kind {
            BackendKind::Cpu => {
                let need = cpu_backend_bytes(cfg, b);
                if budget.is_some_and(|budget| need > budget) {
                    tried.push(format!("{b} (needs {} MiB)", need >> 20));
                    continue;
                }
                let why = match budget {
                    Some(budget) => {
                        format!("fits half the available memory ({} MiB)", budget >> 20)
                    }
                    None => "MemAvailable unknown; no limit applied".into(),
                };
                return Ok((b, describe_choice(&tried, b, &why)));
            }
            BackendKind::Gpu => {
                let mut probe =
                    SyntheticSource::new(cfg.seq_len, cfg.vocab_size, plan.seed ^ PROBE_SEED_XOR);
                let tokens = probe.next_batch(b).map_err(|source| BenchError::Tokens {
                    what: "probe batch",
                    source,
                })?;
                let batch = TokenBatch::new(cfg, &tokens, b).map_err(BackendError::from)?;
                match backend.forward_backward(&batch) {
                    Ok(_) => {
                        backend.zero_grads().map_err(|source| BenchError::Probe {
                            micro_batch: b,
                            source,
                        })?;
                        return Ok((
                            b,
                            describe_choice(&tried, b, "a probe forward/backward fits"),
                        ));
                    }
                    Err(BackendError::OutOfMemory(_)) => tried.push(format!("{b} (out of memory)")),
                    Err(source) => {
                        return Err(BenchError::Probe {
                            micro_batch: b,
                            source,
                        })
                    }
                }
            }
        }
    }
    Err(BenchError::Device(format!(
        "no micro-batch fits: tried {}",
        tried.join(", ")
    )))
}

fn describe_choice(tried: &[String], chosen: usize, why: &str) -> String {
    if tried.is_empty() {
        format!("largest divisor of the batch: {chosen}, {why}")
    } else {
        format!(
            "largest divisor of the batch that fits: {chosen}, {why}; skipped {}",
            tried.join(", ")
        )
    }
}

/// Device memory in use on the current CUDA context's device (total − free), if a context is current.
fn gpu_memory_in_use() -> Option<u64> {
    // cudarc panics without libcuda (e.g. the emulated CUDA backend, whose name also says "cuda").
    if !crate::cuda::gpu::driver_present() {
        return None;
    }
    let (free, total) = cudarc::driver::result::mem_get_info().ok()?;
    Some((total - free) as u64)
}

/// Benchmark one size. `log` receives progress lines.
pub fn run_size(
    plan: &BenchPlan,
    size: &SizeSpec,
    ctx: &RunContext,
    log: &mut dyn FnMut(&str),
) -> Result<SizeResult, BenchError> {
    let cfg = plan.model(size);
    let rss_reset = memory::reset_peak_rss();
    let opened = device::open_backend(ctx.device, &cfg, init_params(&cfg, plan.seed))?;
    let kind = BackendKind::from(opened.kind);
    let mut inner = opened.backend;
    let (micro, micro_note) = choose_micro_batch(inner.as_mut(), plan, &cfg, kind)?;
    log(&format!("{size}: micro-batch {micro} ({micro_note})"));
    let phases = SharedPhases::default();
    let backend = TimedBackend::new(inner, phases.clone());
    let source = TimedSource::new(
        SyntheticSource::new(cfg.seq_len, cfg.vocab_size, plan.seed),
        phases.clone(),
    );
    let tcfg = plan.train_config(size, micro);
    tcfg.validate().map_err(|source| BenchError::Config {
        size: size.to_string(),
        source,
    })?;
    let tokens_per_step = tcfg.tokens_per_step();
    let mut trainer = Trainer::new(tcfg, Box::new(backend), Box::new(source), vec![]);
    let mut losses = Vec::new();
    for i in 0..plan.warmup {
        let t = Instant::now();
        let out = trainer.train_step()?;
        losses.push(out.loss);
        log(&format!(
            "{size}: warm-up step {}/{} loss {:.4} ({:.3} s)",
            i + 1,
            plan.warmup,
            out.loss,
            t.elapsed().as_secs_f64()
        ));
    }
    timed::reset(&phases);
    let mut step_times = Vec::new();
    let t_all = Instant::now();
    for i in 0..plan.steps {
        let t = Instant::now();
        let out = trainer.train_step()?;
        let dt = t.elapsed().as_secs_f64();
        step_times.push(dt);
        losses.push(out.loss);
        log(&format!(
            "{size}: step {}/{} loss {:.4} ({dt:.3} s, {:.0} tokens/s)",
            i + 1,
            plan.steps,
            out.loss,
            tokens_per_step as f64 / dt
        ));
    }
    let ph = timed::snapshot(&phases);
    // A reduction that returns a value waits for all queued device work: the end of the timed region.
    trainer.backend_mut().grad_norm()?;
    let total_timed_s = t_all.elapsed().as_secs_f64();
    let device_memory = match kind {
        BackendKind::Gpu => gpu_memory_in_use(),
        BackendKind::Cpu => None,
    };
    // Forward-only time per micro-batch, to split forward_backward into its two halves.
    let mut probe = SyntheticSource::new(cfg.seq_len, cfg.vocab_size, plan.seed ^ PROBE_SEED_XOR);
    let fwd_calls = plan.steps.clamp(1, 3);
    timed::reset(&phases);
    for _ in 0..fwd_calls {
        let tokens = probe
            .next_batch(micro)
            .map_err(|source| BenchError::Tokens {
                what: "probe batch",
                source,
            })?;
        let batch = TokenBatch::new(&cfg, &tokens, micro).map_err(BackendError::from)?;
        trainer.backend_mut().forward_loss(&batch)?;
    }
    let fwd = timed::snapshot(&phases);
    let fwd_per_call = fwd.forward_only_s / fwd.forward_only_calls.max(1) as f64;
    let peak_memory_bytes = match kind {
        BackendKind::Cpu => memory::peak_rss_bytes(rss_reset),
        BackendKind::Gpu => device_memory,
    };
    let peak_memory_kind = match (kind, rss_reset, device_memory.is_some()) {
        (BackendKind::Cpu, true, _) => "host: peak RSS of this size (VmHWM, reset before it)",
        (BackendKind::Cpu, false, _) => "host: process max RSS so far (getrusage; could not reset)",
        (BackendKind::Gpu, _, true) => {
            "device memory in use after the timed steps (cuMemGetInfo total - free, whole device)"
        }
        (BackendKind::Gpu, _, false) => "not measurable: no current CUDA context on this thread",
    };
    let step_time = Spread::of(&step_times)
        .ok_or_else(|| BenchError::Device("a step time was not finite".into()))?;
    let fpt = FlopsPerToken::of(&cfg);
    let tokens_per_s = tokens_per_step as f64 / step_time.median;
    let steps = plan.steps as f64;
    let fb_per_step = ph.forward_backward_s / steps;
    let fwd_est = (fwd_per_call * ph.forward_backward_calls as f64 / steps).min(fb_per_step);
    let mut phase_list = vec![
        ("data", ph.data_s / steps),
        ("zero_grads", ph.zero_grads_s / steps),
        ("forward (estimated from forward-only calls)", fwd_est),
        (
            "backward (forward_backward - forward estimate)",
            fb_per_step - fwd_est,
        ),
        ("grad_norm", ph.grad_norm_s / steps),
        ("adamw", ph.adamw_s / steps),
    ];
    let accounted: f64 = phase_list.iter().map(|p| p.1).sum();
    let mean_step = step_time.mean;
    phase_list.push((
        "other (loop, schedule, host)",
        (mean_step - accounted).max(0.0),
    ));
    let phases_out = phase_list
        .into_iter()
        .map(|(name, s)| PhaseShare {
            name: name.into(),
            seconds_per_step: s,
            share: s / mean_step,
        })
        .collect();
    let mfu = |f: f64, p: &Option<Peak>| p.as_ref().map(|p| f * tokens_per_s / p.flops);
    Ok(SizeResult {
        size: *size,
        model: cfg,
        params: ParamCounts::of(&cfg),
        flops_per_token: fpt,
        batch_size: plan.batch_size,
        micro_batch: micro,
        micro_batch_choice: micro_note,
        tokens_per_step,
        warmup_steps: plan.warmup,
        timed_steps: plan.steps,
        step_time_s: step_time,
        total_timed_s,
        tokens_per_s,
        tokens_per_s_overall: tokens_per_step as f64 * steps / total_timed_s,
        achieved_flops_attention: fpt.attention * tokens_per_s,
        achieved_flops_exact: fpt.exact * tokens_per_s,
        mfu: Mfu {
            attention_datasheet: mfu(fpt.attention, &ctx.datasheet_peak),
            exact_datasheet: mfu(fpt.exact, &ctx.datasheet_peak),
            attention_measured: mfu(fpt.attention, &ctx.measured_peak),
            exact_measured: mfu(fpt.exact, &ctx.measured_peak),
        },
        peak_memory_bytes,
        peak_memory_kind: peak_memory_kind.into(),
        phases: phases_out,
        losses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisors_largest_first() {
        assert_eq!(divisors_desc(12), vec![12, 6, 4, 3, 2, 1]);
        assert_eq!(divisors_desc(1), vec![1]);
    }

    #[test]
    fn cpu_memory_estimate_covers_the_logits() {
        let cfg = ModelConfig {
            d_model: 64,
            n_layers: 2,
            seq_len: 128,
            vocab_size: 32101,
        };
        let one = cpu_backend_bytes(&cfg, 1);
        let eight = cpu_backend_bytes(&cfg, 8);
        // The logits alone are 8·128·32101 floats.
        assert!(eight - one >= 7 * 128 * 32101 * 4);
        assert!(one >= 16 * ParamCounts::of(&cfg).total);
    }
}

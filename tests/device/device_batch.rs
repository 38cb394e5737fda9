//! The [`Backend`] interface of the CUDA backend, on the emulated device and on GPU 0 when present:
//! batches are validated once ([`TokenBatch`]) and a batch built for another model is refused with the
//! same error as the CPU backend gives; `zero_grads` reports its error at once; `device()` describes
//! the device with the same text as before.

use crate::util::common::{self, for_each_target, Target};
use isoflop::backend::{Backend, BackendError, DeviceKind, Precision, TokenBatch};
use isoflop::cpu::CpuBackend;
use isoflop::cuda::CudaBackend;
use isoflop::model::{init_params, ModelConfig};

fn cfg(seq_len: usize, vocab_size: usize) -> ModelConfig {
    ModelConfig {
        d_model: 64,
        n_layers: 1,
        seq_len,
        vocab_size,
    }
}

/// The errors (as text) that `be` gives for batches built for other models, then one valid batch's loss.
fn refusals(be: &mut dyn Backend) -> Vec<String> {
    let c = *be.config();
    let rows = |c: &ModelConfig, b: usize| -> Vec<u16> {
        (0..b * (c.seq_len + 1))
            .map(|i| (i % 7 + 1) as u16)
            .collect()
    };
    let long = cfg(c.seq_len + 1, c.vocab_size);
    let wide = cfg(c.seq_len, c.vocab_size + 10);
    let mut bad_id = rows(&wide, 2);
    bad_id[c.seq_len + 1 + c.seq_len] = c.vocab_size as u16 + 3; // row 1, last column (a target only)
    let batches = [
        TokenBatch::new(&long, &rows(&long, 2), 2).unwrap(),
        TokenBatch::new(&wide, &bad_id, 2).unwrap(),
    ];
    let mut out = Vec::new();
    for batch in &batches {
        for e in [
            be.forward_backward(batch).map(|_| ()).unwrap_err(),
            be.forward_loss(batch).map(|_| ()).unwrap_err(),
            be.forward_scores(batch).map(|_| ()).unwrap_err(),
        ] {
            assert!(matches!(e, BackendError::BadBatch(_)), "{e}");
            out.push(e.to_string());
        }
    }
    // Still usable, and nothing was accumulated by the refused calls.
    let ok = TokenBatch::new(&c, &rows(&c, 2), 2).unwrap();
    assert!(be.forward_loss(&ok).unwrap().mean().is_finite());
    assert!(be.read_grads().unwrap().iter().all(|&g| g == 0.0));
    out
}

#[test]
fn device_batch_refusals_match_the_cpu() {
    let c = cfg(8, 40);
    let p0 = init_params(&c, 1);
    let want = refusals(&mut CpuBackend::new(c, p0.clone()).unwrap());
    assert_eq!(
        want[0],
        "bad batch: the batch has rows of 9 positions but the model's seq_len is 8"
    );
    assert_eq!(
        want[3],
        "bad batch: token id 43 at row 1, column 8 is outside the vocabulary of 40"
    );
    for_each_target("device_batch_refusals_match_the_cpu", |t| {
        let mut be = match t {
            Target::Emulated => CudaBackend::new_emulated(c, &p0, common::emu_exec()),
            Target::Gpu(i) => CudaBackend::new(c, &p0, i),
        }
        .unwrap_or_else(|e| panic!("opening the CUDA backend on {t}: {e}"));
        assert_eq!(refusals(&mut be), want);
        let d = be.device();
        assert_eq!(d.precision, Precision::Bf16Mixed);
        assert!(d.memory_bytes.is_some_and(|m| m > 0), "{d:?}");
        match t {
            Target::Emulated => {
                assert_eq!(d.kind, DeviceKind::Cuda { ordinal: 0 });
                assert_eq!(d.to_string(), "cuda:0 emulated device (kernels on the CPU)");
            }
            Target::Gpu(i) => assert_eq!(d.to_string(), format!("cuda:{i} {}", d.name)),
        }
        // zero_grads on a forward-only backend is refused at once, not on a later call.
        let mut fwd = match t {
            Target::Emulated => CudaBackend::new_emulated_forward_only(c, &p0, common::emu_exec()),
            Target::Gpu(i) => CudaBackend::new_forward_only(c, &p0, i),
        }
        .unwrap_or_else(|e| panic!("opening a forward-only backend on {t}: {e}"));
        let e = fwd.zero_grads().unwrap_err();
        assert!(
            matches!(e, BackendError::ForwardOnly { call: "zero_grads" }),
            "{e}"
        );
        assert!(fwd
            .forward_loss(&TokenBatch::new(&c, &[1; 18], 2).unwrap())
            .is_ok());
        be.zero_grads().unwrap();
    });
}

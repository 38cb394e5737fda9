//! The memory plan of src/cuda/memory.rs against what the CUDA backend really allocates, on the emulated
//! device (which counts the bytes of every typed buffer it allocates, live and at peak): the plan's
//! persistent state after opening, plus the plan's activations of the largest micro-batch after a step,
//! for a training and a forward-only backend. Also the typed buffers' checked sub-slices.

use crate::util::common;

use isoflop::backend::{Backend, TokenBatch};
use isoflop::cuda::gpu::{Gpu, GpuError};
use isoflop::cuda::layout::DeviceLayout;
use isoflop::cuda::memory;
use isoflop::cuda::CudaBackend;
use isoflop::model::{init_params, ModelConfig};

/// `b` rows of T+1 ids (no padding).
fn batch(c: &ModelConfig, b: usize) -> TokenBatch {
    let toks: Vec<u16> = (0..b * (c.seq_len + 1))
        .map(|i| (1 + i * 7 % (c.vocab_size - 1)) as u16)
        .collect();
    TokenBatch::new(c, &toks, b).expect("a valid batch")
}

#[test]
fn memory_plan_equals_the_allocations() {
    if !common::emulated_wanted("memory_plan_equals_the_allocations") {
        return;
    }
    let cfgs = [
        // One head, two blocks, T not a multiple of the attention tile.
        (
            ModelConfig {
                d_model: 64,
                n_layers: 2,
                seq_len: 40,
                vocab_size: 300,
            },
            1,
        ),
        // Two heads, one block, two attention tiles.
        (
            ModelConfig {
                d_model: 128,
                n_layers: 1,
                seq_len: 70,
                vocab_size: 301,
            },
            1,
        ),
        // Three blocks, a vocabulary just over one alignment unit.
        (
            ModelConfig {
                d_model: 64,
                n_layers: 3,
                seq_len: 16,
                vocab_size: 130,
            },
            2,
        ),
    ];
    for (c, b) in cfgs {
        let params = init_params(&c, 3);
        let n_params = DeviceLayout::new(&c).total();
        for forward_only in [false, true] {
            let what = format!("{c:?} b={b} forward_only={forward_only}");
            let exec = common::emu_exec();
            let mut be = if forward_only {
                CudaBackend::new_emulated_forward_only(c, &params, exec)
            } else {
                CudaBackend::new_emulated(c, &params, exec)
            }
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            // No cuBLASLt workspace on the emulated device (its products run on the host).
            let state = memory::plan_bytes(&memory::state_plan(&c, n_params, forward_only, false));
            assert_eq!(be.allocated_bytes(), (state, state), "state, {what}");
            if forward_only {
                be.forward_loss(&batch(&c, b)).unwrap();
            } else {
                be.forward_backward(&batch(&c, b)).unwrap();
            }
            let acts = memory::activation_bytes(&c, b);
            assert!(acts > 0);
            assert_eq!(
                be.allocated_bytes(),
                (state + acts, state + acts),
                "state + activations of micro-batch {b}, {what}"
            );
            // A smaller batch reuses the set; a larger one frees it before allocating the next.
            if b > 1 {
                be.forward_loss(&batch(&c, 1)).unwrap();
                assert_eq!(be.allocated_bytes().0, state + acts, "{what}");
            }
            be.forward_loss(&batch(&c, b + 1)).unwrap();
            let acts2 = memory::activation_bytes(&c, b + 1);
            assert_eq!(
                be.allocated_bytes(),
                (state + acts2, state + acts2),
                "after growing to micro-batch {}, {what}",
                b + 1
            );
        }
    }
}

#[test]
fn plan_items_add_up_to_the_plan() {
    let c = ModelConfig {
        d_model: 128,
        n_layers: 2,
        seq_len: 64,
        vocab_size: 32101,
    };
    let n_params = DeviceLayout::new(&c).total();
    let items: usize = memory::activation_items(&c, 4).iter().map(|x| x.1).sum();
    assert_eq!(items, memory::activation_bytes(&c, 4));
    let state: usize = memory::state_items(&c, n_params, false, true)
        .iter()
        .map(|x| x.1)
        .sum();
    assert_eq!(state, memory::state_bytes(&c, n_params));
    // 18 bytes per parameter, the workspace, the RoPE table and the reductions.
    assert_eq!(
        state,
        18 * n_params
            + isoflop::cuda::blas::WORKSPACE_BYTES
            + c.seq_len * 64 * 4
            + memory::REDUCE_BLOCKS * 8
            + 8
    );
}

#[test]
fn typed_buffers_count_bytes_and_check_sub_slices() {
    let gpu = Gpu::emulated();
    let c = gpu.mem_counter();
    assert_eq!((c.live(), c.peak()), (0, 0));
    let a = gpu.alloc::<f32>(100, "a").unwrap();
    let b = gpu.alloc::<half::bf16>(10, "b").unwrap();
    assert_eq!((c.live(), c.peak()), (420, 420));
    drop(a);
    assert_eq!((c.live(), c.peak()), (20, 420));
    // Checked sub-slices: in range, past the end, and an overflowing range.
    let s = b.sub(2, 8).unwrap();
    assert_eq!(s.len(), 8);
    assert_eq!(s.addr(), b.ptr() + 4);
    assert_eq!(s.sub(1, 3).unwrap().addr(), b.ptr() + 6);
    for (at, len) in [(3, 8), (11, 0), (usize::MAX, 2)] {
        let e = b.sub(at, len).unwrap_err();
        assert!(matches!(e, GpuError::Bounds(_)), "{e}");
        assert!(e.to_string().contains("b:"), "{e}");
    }
    // Seen as other elements: whole elements only, aligned only.
    assert_eq!(b.slice().reinterpret::<f32>().unwrap().len(), 5);
    assert_eq!(b.slice().reinterpret::<u8>().unwrap().len(), 20);
    let e = b.sub(1, 4).unwrap().reinterpret::<f32>().unwrap_err();
    assert!(e.to_string().contains("misaligned"), "{e}");
    drop(b);
    assert_eq!(c.live(), 0);
}

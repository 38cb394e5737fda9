//! The fused attention kernels of `kernels/attention.cu` (QK-Norm + RoPE on load, causal flash attention,
//! and the backward through all three) run under the CPU emulator and compared with the f32 reference ops
//! composed: `qk_norm → rope → attention` and back.
//!
//! Everything a GPU test needs is in [`cases`]: the shapes, the inputs, the reference, the launch
//! sequence (written against a small [`cases::Launcher`] trait) and the comparison. A GPU test only
//! implements `Launcher` for device buffers.

#[path = "emu/harness.rs"]
mod harness;

/// Shapes, inputs, the reference, the launch sequence and the comparison, shared by the emulated test and
/// the GPU test (tests/gpu_kernels.rs).
#[path = "emu/attention_cases.rs"]
pub mod cases;

use cases::{Arg, Launcher};
use half::bf16;

/// Host buffers for the emulator: the pointer of a buffer is its device pointer.
enum HostBuf {
    Bf16(Vec<bf16>),
    F32(Vec<f32>),
}

struct Emu<'a> {
    lib: &'a harness::EmuLib,
    /// Buffers by id; a `Buf` is an index (the Vecs never reallocate after creation).
    bufs: Vec<std::cell::UnsafeCell<HostBuf>>,
}

impl Emu<'static> {
    fn new() -> Emu<'static> {
        Emu::with(harness::kernels())
    }
}

impl<'a> Emu<'a> {
    fn with(lib: &'a harness::EmuLib) -> Emu<'a> {
        Emu {
            lib,
            bufs: Vec::new(),
        }
    }
    fn push(&mut self, b: HostBuf) -> usize {
        self.bufs.push(std::cell::UnsafeCell::new(b));
        self.bufs.len() - 1
    }
    fn ptr(&self, id: usize) -> *mut std::ffi::c_void {
        // SAFETY: the launch is the only user of the buffers while it runs (the kernel reads and writes
        // them through raw pointers, as on a device).
        match unsafe { &mut *self.bufs[id].get() } {
            HostBuf::Bf16(v) => v.as_mut_ptr().cast(),
            HostBuf::F32(v) => v.as_mut_ptr().cast(),
        }
    }
}

impl Launcher for Emu<'_> {
    type Buf = usize;
    fn bf16_from(&mut self, data: &[f32]) -> usize {
        self.push(HostBuf::Bf16(
            data.iter().map(|x| bf16::from_f32(*x)).collect(),
        ))
    }
    fn f32_from(&mut self, data: &[f32]) -> usize {
        self.push(HostBuf::F32(data.to_vec()))
    }
    fn bf16_nan(&mut self, n: usize) -> usize {
        self.push(HostBuf::Bf16(vec![bf16::NAN; n]))
    }
    fn launch(&mut self, name: &str, grid: (u32, u32, u32), block: u32, args: &[Arg<'_, usize>]) {
        let ptrs: Vec<*mut std::ffi::c_void> = args
            .iter()
            .map(|a| match a {
                Arg::Buf(id) => self.ptr(**id),
                Arg::I32(_) => std::ptr::null_mut(),
            })
            .collect();
        let ints: Vec<i32> = args
            .iter()
            .map(|a| if let Arg::I32(v) = a { *v } else { 0 })
            .collect();
        let kargs: Vec<&dyn harness::KernelArg> = args
            .iter()
            .enumerate()
            .map(|(i, a)| match a {
                Arg::Buf(_) => &ptrs[i] as &dyn harness::KernelArg,
                Arg::I32(_) => &ints[i] as &dyn harness::KernelArg,
            })
            .collect();
        if let Err(e) = self.lib.launch(name, grid, (block, 1, 1), 0, &kargs) {
            panic!("launch of {name} failed: {e}");
        }
    }
    fn read_bf16(&mut self, id: &usize) -> Vec<f32> {
        match unsafe { &*self.bufs[*id].get() } {
            HostBuf::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
            HostBuf::F32(_) => panic!("buffer {id} is f32"),
        }
    }
    fn read_f32(&mut self, id: &usize) -> Vec<f32> {
        match unsafe { &*self.bufs[*id].get() } {
            HostBuf::F32(v) => v.clone(),
            HostBuf::Bf16(_) => panic!("buffer {id} is bf16"),
        }
    }
}

#[test]
fn fused_attention_matches_reference_ops() {
    let mut failures = Vec::new();
    for (i, c) in cases::cases().iter().enumerate() {
        let x = cases::inputs(c, 1000 + i as u64);
        let want = cases::reference(c, &x);
        let got = cases::run_fused(&mut Emu::new(), c, &x);
        let report: Vec<String> = cases::errors(&got, &want)
            .iter()
            .map(|(n, e, _)| format!("{n} {e:.1e}"))
            .collect();
        eprintln!("{c:?}: {}", report.join(", "));
        if let Err(e) = cases::check(c, &got, &want) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every output bit for bit the same whatever order the emulator runs the threads in: no races, and the
/// scale-gradient reduction has a fixed order.
#[test]
fn fused_attention_is_deterministic_across_schedules() {
    let c = cases::Case {
        b: 1,
        t: 64 + 7,
        h: 2,
    };
    let x = cases::inputs(&c, 7);
    let lib = harness::kernels();
    let mut runs = Vec::new();
    for s in [
        harness::Schedule::Forward,
        harness::Schedule::Reverse,
        harness::Schedule::Shuffle(3),
    ] {
        lib.set_schedule(s);
        runs.push(cases::run_fused(&mut Emu::new(), &c, &x));
    }
    lib.set_schedule(harness::Schedule::Forward);
    let bits = |o: &cases::Outputs| -> Vec<u32> {
        [
            &o.out,
            &o.lse,
            &o.dq,
            &o.dk,
            &o.dv,
            &o.dq_scale,
            &o.dk_scale,
        ]
        .iter()
        .flat_map(|v| v.iter().map(|x| x.to_bits()))
        .collect()
    };
    assert!(
        bits(&runs[0]) == bits(&runs[1]),
        "forward vs reverse schedule differ"
    );
    assert!(
        bits(&runs[0]) == bits(&runs[2]),
        "forward vs shuffled schedule differ"
    );
}

/// The comparison itself must be able to fail: NaN, a wrong value and a wrong `+=` are caught.
#[test]
fn check_rejects_nan_and_wrong_values() {
    let c = cases::Case { b: 1, t: 16, h: 1 };
    let x = cases::inputs(&c, 1);
    let want = cases::reference(&c, &x);
    assert!(cases::check(&c, &want, &want).is_ok());
    let mut nan = want.clone();
    nan.dk[5] = f32::NAN;
    assert!(cases::check(&c, &nan, &want).is_err());
    let mut off = want.clone();
    off.out[3] += 0.1 * off.out.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(cases::check(&c, &off, &want).is_err());
    let mut no_prior = want.clone();
    no_prior
        .dq_scale
        .iter_mut()
        .for_each(|v| *v -= cases::DSCALE_PRIOR);
    assert!(cases::check(&c, &no_prior, &want).is_err());
}

/// The kernels built with AddressSanitizer + UndefinedBehaviorSanitizer over the ragged cases: no read or
/// write outside the buffers (rows past T are never touched), no undefined behaviour.
#[test]
fn fused_attention_is_clean_under_sanitizers() {
    let src = harness::repo_root().join("kernels").join("attention.cu");
    let so = harness::EmuLib::build_so(&[src], harness::Flavor::Sanitize)
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, log) = harness::run_sanitized_child("sanitized_child_attention", &so)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "sanitized run failed:\n{log}");
    assert!(
        log.contains("sanitized attention: 3 cases ok"),
        "child did not run:\n{log}"
    );
}

#[test]
#[ignore = "run by fused_attention_is_clean_under_sanitizers in a child process"]
fn sanitized_child_attention() {
    let lib = harness::sanitized_lib_in_child()
        .expect("started by fused_attention_is_clean_under_sanitizers");
    let shapes = [
        cases::Case { b: 1, t: 1, h: 1 },
        cases::Case {
            b: 2,
            t: 64 + 7,
            h: 1,
        },
        cases::Case { b: 1, t: 40, h: 2 },
    ];
    for (i, c) in shapes.iter().enumerate() {
        let x = cases::inputs(c, 50 + i as u64);
        let got = cases::run_fused(&mut Emu::with(&lib), c, &x);
        let want = cases::reference(c, &x);
        cases::check(c, &got, &want).unwrap_or_else(|e| panic!("{e}"));
    }
    println!("sanitized attention: {} cases ok", shapes.len());
}

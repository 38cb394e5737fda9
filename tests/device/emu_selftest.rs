//! Self-tests of the CUDA emulator (tests/emu/cuda_emu.h, tests/emu/ptx_emu.h): tensor-core and ldmatrix
//! wrappers against the PTX ISA's fragment layouts and a plain matrix product, cp.async, barriers,
//! shuffles and votes against known patterns, race and deadlock exposure, and the sanitizer build.

use crate::util::harness;

use half::bf16;
use harness::{EmuLib, Flavor, Schedule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::sync::OnceLock;

fn emu_src(name: &str) -> PathBuf {
    harness::repo_root().join("tests").join("emu").join(name)
}

fn lib() -> &'static EmuLib {
    static LIB: OnceLock<EmuLib> = OnceLock::new();
    LIB.get_or_init(|| {
        EmuLib::build(
            &[emu_src("selftest.cu"), emu_src("racy.cu")],
            Flavor::Release,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn bits(x: f32) -> u16 {
    bf16::from_f32(x).to_bits()
}
fn pack(lo: u16, hi: u16) -> u32 {
    lo as u32 | (hi as u32) << 16
}

#[test]
fn mma_m16n8k16_matches_matrix_product_on_documented_fragments() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..3 {
        // bf16-representable A[16][16], B[16][8]; f32 C[16][8].
        let a: Vec<f32> = (0..256)
            .map(|_| bf16::from_f32(rng.random_range(-2.0..2.0)).to_f32())
            .collect();
        let b: Vec<f32> = (0..128)
            .map(|_| bf16::from_f32(rng.random_range(-2.0..2.0)).to_f32())
            .collect();
        let c: Vec<f32> = (0..128).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (mut af, mut bf, mut cf) = (vec![0u32; 128], vec![0u32; 64], vec![0f32; 128]);
        let at = |r: usize, k: usize| bits(a[r * 16 + k]);
        let bt = |k: usize, n: usize| bits(b[k * 8 + n]);
        for l in 0..32 {
            let (g, t) = (l / 4, l % 4);
            af[l * 4] = pack(at(g, 2 * t), at(g, 2 * t + 1));
            af[l * 4 + 1] = pack(at(g + 8, 2 * t), at(g + 8, 2 * t + 1));
            af[l * 4 + 2] = pack(at(g, 2 * t + 8), at(g, 2 * t + 9));
            af[l * 4 + 3] = pack(at(g + 8, 2 * t + 8), at(g + 8, 2 * t + 9));
            bf[l * 2] = pack(bt(2 * t, g), bt(2 * t + 1, g));
            bf[l * 2 + 1] = pack(bt(2 * t + 8, g), bt(2 * t + 9, g));
            cf[l * 4] = c[g * 8 + 2 * t];
            cf[l * 4 + 1] = c[g * 8 + 2 * t + 1];
            cf[l * 4 + 2] = c[(g + 8) * 8 + 2 * t];
            cf[l * 4 + 3] = c[(g + 8) * 8 + 2 * t + 1];
        }
        let mut df = vec![f32::NAN; 128];
        lib()
            .launch(
                "emu_test_mma",
                (1, 1, 1),
                (32, 1, 1),
                0,
                &[&af.as_ptr(), &bf.as_ptr(), &cf.as_ptr(), &df.as_mut_ptr()],
            )
            .unwrap();
        for l in 0..32 {
            let (g, t) = (l / 4, l % 4);
            for (i, (r, n)) in [
                (g, 2 * t),
                (g, 2 * t + 1),
                (g + 8, 2 * t),
                (g + 8, 2 * t + 1),
            ]
            .into_iter()
            .enumerate()
            {
                let want: f64 = (0..16)
                    .map(|k| a[r * 16 + k] as f64 * b[k * 8 + n] as f64)
                    .sum::<f64>()
                    + c[r * 8 + n] as f64;
                let got = df[l * 4 + i] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "lane {l} d[{i}]: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn ldmatrix_variants_follow_documented_layout() {
    let m: Vec<u16> = (0..256u16)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect(); // 4 matrices 8x8
    let at = |mat: usize, r: usize, c: usize| m[mat * 64 + r * 8 + c];
    for (nmat, trans) in [(1, 0), (2, 0), (4, 0), (2, 1), (4, 1)] {
        let mut out = vec![0u32; 128];
        lib()
            .launch(
                "emu_test_ldmatrix",
                (1, 1, 1),
                (32, 1, 1),
                0,
                &[&m.as_ptr(), &out.as_mut_ptr(), &(nmat as i32), &{ trans }],
            )
            .unwrap();
        for l in 0..32 {
            for i in 0..4 {
                let got = out[l * 4 + i];
                if i >= nmat {
                    assert_eq!(
                        got, 0xdeadbeef,
                        "register {i} beyond .x{nmat} must be untouched"
                    );
                    continue;
                }
                let want = if trans == 0 {
                    pack(at(i, l / 4, 2 * (l % 4)), at(i, l / 4, 2 * (l % 4) + 1))
                } else {
                    pack(at(i, 2 * (l % 4), l / 4), at(i, 2 * (l % 4) + 1, l / 4))
                };
                assert_eq!(got, want, ".x{nmat} trans={trans} lane {l} reg {i}");
            }
        }
    }
}

#[test]
fn ldmatrix_then_mma_gives_the_product() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let a: Vec<bf16> = (0..256)
        .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)))
        .collect();
    let b: Vec<bf16> = (0..128)
        .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)))
        .collect();
    let mut c = vec![f32::NAN; 128];
    lib()
        .launch(
            "emu_test_ldmatrix_mma",
            (1, 1, 1),
            (32, 1, 1),
            0,
            &[&a.as_ptr(), &b.as_ptr(), &c.as_mut_ptr()],
        )
        .unwrap();
    for r in 0..16 {
        for n in 0..8 {
            let want: f64 = (0..16)
                .map(|k| a[r * 16 + k].to_f64() * b[k * 8 + n].to_f64())
                .sum();
            let got = c[r * 8 + n] as f64;
            assert!((got - want).abs() < 1e-5, "C[{r}][{n}] {got} vs {want}");
        }
    }
}

#[test]
fn cp_async_is_deferred_until_wait_and_zero_fills() {
    let n = 64usize;
    let src: Vec<f32> = (0..n).map(|i| i as f32 + 0.5).collect();
    for tail in [16, 8, 0] {
        let mut early = vec![0f32; n];
        let mut out = vec![f32::NAN; n];
        lib()
            .launch(
                "emu_test_cp_async",
                (1, 1, 1),
                (32, 1, 1),
                n * 4,
                &[
                    &src.as_ptr(),
                    &early.as_mut_ptr(),
                    &out.as_mut_ptr(),
                    &(n as i32),
                    &(tail as i32),
                ],
            )
            .unwrap();
        assert!(
            early.iter().all(|x| x.is_nan()),
            "shared memory read before the wait must be the poison"
        );
        for i in 0..n {
            let want = if i >= n - 4 && (i - (n - 4)) * 4 >= tail {
                0.0
            } else {
                src[i]
            };
            assert_eq!(out[i], want, "tail {tail} element {i}");
        }
    }
}

#[test]
fn barrier_scan_and_syncthreads_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (block, grid) in [
        ((64u32, 1u32), (3u32, 1u32)),
        ((32, 4), (2, 2)),
        ((1024, 1), (1, 1)),
    ] {
        let n = (block.0 * block.1) as usize;
        let nb = (grid.0 * grid.1) as usize;
        let input: Vec<i32> = (0..n * nb).map(|_| rng.random_range(-100..100)).collect();
        for sched in [Schedule::Forward, Schedule::Reverse, Schedule::Shuffle(7)] {
            lib().set_schedule(sched);
            let mut out = vec![i32::MIN; n * nb];
            let mut cnt = vec![-1i32; nb];
            lib()
                .launch(
                    "emu_test_scan",
                    (grid.0, grid.1, 1),
                    (block.0, block.1, 1),
                    2 * n * 4,
                    &[&input.as_ptr(), &out.as_mut_ptr(), &cnt.as_mut_ptr()],
                )
                .unwrap();
            lib().set_schedule(Schedule::Forward);
            for bl in 0..nb {
                let mut acc = 0;
                for t in 0..n {
                    acc += input[bl * n + t];
                    assert_eq!(out[bl * n + t], acc, "{sched:?} block {bl} thread {t}");
                }
                let odd = input[bl * n..(bl + 1) * n]
                    .iter()
                    .filter(|v| *v & 1 != 0)
                    .count() as i32;
                assert_eq!(cnt[bl], odd);
            }
        }
    }
}

#[test]
fn warp_shuffles_votes_and_reductions() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let n = 96usize;
    let v: Vec<i32> = (0..n).map(|_| rng.random_range(0..1_000_000)).collect();
    let mut out = vec![i32::MIN; n * 10];
    lib()
        .launch(
            "emu_test_warp",
            (1, 1, 1),
            (n as u32, 1, 1),
            0,
            &[&v.as_ptr(), &out.as_mut_ptr()],
        )
        .unwrap();
    for t in 0..n {
        let (w, l) = (t / 32 * 32, t % 32);
        let at = |lane: usize| v[w + lane];
        let o = &out[t * 10..t * 10 + 10];
        assert_eq!(o[0], at((l * 7 + 3) & 31), "shfl idx t={t}");
        assert_eq!(
            o[1],
            if l >= 3 { at(l - 3) } else { at(l) },
            "shfl up t={t}"
        );
        assert_eq!(
            o[2],
            if l + 5 < 32 { at(l + 5) } else { at(l) },
            "shfl down t={t}"
        );
        assert_eq!(o[3], at(l ^ 9), "shfl xor t={t}");
        assert_eq!(o[4], at((l & !7) + 2), "shfl width 8 t={t}");
        assert_eq!(
            o[5],
            if (l % 16) + 3 < 16 { at(l + 3) } else { at(l) },
            "shfl down width 16 t={t}"
        );
        let ballot = (0..32).fold(0u32, |b, k| b | (((at(k) & 1) as u32) << k));
        assert_eq!(o[6] as u32, ballot, "ballot t={t}");
        assert_eq!(o[7], (0..32).map(at).sum::<i32>(), "reduce add t={t}");
        assert_eq!(o[8], (0..32).map(at).max().unwrap(), "reduce max t={t}");
        let h = if l < 16 { at(l ^ 1) } else { 0 };
        let s: i32 = (0..32).map(|k| at(k) & 1023).sum();
        assert_eq!(o[9], h + s, "half-warp mask + warp_sum t={t}");
    }
}

/// Launches `emu_test_divergent` on one warp over a 32-int buffer, followed by `extra` arguments; the
/// launch must fail (`why`): returns its error.
fn divergent_launch_err(extra: &[&dyn harness::KernelArg], why: &str) -> String {
    let mut out = vec![0i32; 32];
    let ptr = out.as_mut_ptr();
    let mut args: Vec<&dyn harness::KernelArg> = vec![&ptr];
    args.extend_from_slice(extra);
    lib()
        .launch("emu_test_divergent", (1, 1, 1), (32, 1, 1), 0, &args)
        .expect_err(why)
}

#[test]
fn divergent_collectives_are_reported_as_deadlock() {
    let err = divergent_launch_err(&[], "divergent warp collective must fail");
    assert!(err.contains("deadlock"), "{err}");
    // The library stays usable after a failed launch.
    barrier_scan_and_syncthreads_count();
}

#[test]
fn launch_checks_argument_sizes() {
    let err = divergent_launch_err(&[&1i32], "too many arguments");
    assert!(err.contains("parameter sizes"), "{err}");
    assert!(lib()
        .launch("no_such_kernel", (1, 1, 1), (32, 1, 1), 0, &[])
        .is_err());
}

#[test]
fn missing_syncthreads_race_gives_wrong_answer() {
    let n = 128usize;
    let input: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let want: Vec<f32> = input.iter().rev().copied().collect();
    let run = |k: &str, s: Schedule| {
        let mut out = vec![f32::NAN; n];
        lib().set_schedule(s);
        let r = lib().launch(
            k,
            (1, 1, 1),
            (n as u32, 1, 1),
            n * 4,
            &[&input.as_ptr(), &out.as_mut_ptr()],
        );
        lib().set_schedule(Schedule::Forward);
        r.unwrap();
        out
    };
    for s in [Schedule::Forward, Schedule::Reverse, Schedule::Shuffle(11)] {
        assert_eq!(
            run("emu_reverse_synced", s),
            want,
            "synced kernel under {s:?}"
        );
        let racy = run("emu_reverse_racy", s);
        assert_ne!(racy, want, "the racy kernel must not pass under {s:?}");
    }
}

/// Parent: build the sanitized library of oob.cu and run `sanitized_child_*` tests in child processes
/// with the sanitizer runtimes preloaded. Each OOB kernel must be reported; the in-bounds control passes.
#[test]
fn sanitizer_build_catches_out_of_bounds() {
    let so =
        EmuLib::build_so(&[emu_src("oob.cu")], Flavor::Sanitize).unwrap_or_else(|e| panic!("{e}"));
    let (ok, log) = harness::run_sanitized_child("sanitized_child_inbounds", &so).unwrap();
    assert!(
        ok && log.contains("1 passed"),
        "in-bounds kernel must pass under ASan:\n{log}"
    );
    // UBSan's bounds check sees the static array overflow before ASan does; either report counts.
    for (child, what) in [
        (
            "sanitized_child_static_smem",
            &[
                "AddressSanitizer: global-buffer-overflow",
                "out of bounds for type 'float [32]'",
            ][..],
        ),
        (
            "sanitized_child_dyn_smem",
            &["AddressSanitizer: heap-buffer-overflow"][..],
        ),
        (
            "sanitized_child_global",
            &["AddressSanitizer: heap-buffer-overflow"][..],
        ),
    ] {
        let (ok, log) = harness::run_sanitized_child(child, &so).unwrap();
        assert!(!ok, "{child}: the sanitizers must fail the run:\n{log}");
        assert!(
            what.iter().any(|w| log.contains(w)),
            "{child}: expected one of {what:?}:\n{log}"
        );
    }
}

fn child_lib() -> Option<EmuLib> {
    harness::sanitized_lib_in_child()
}

/// In a sanitized child process: `kernel` of tests/emu/oob.cu on one block of 32 threads with `shmem`
/// bytes of dynamic shared memory, over a 32-float buffer (its length passed too when `pass_len`).
/// Returns the launch's result and the buffer; None outside such a child.
fn launch_in_child(
    kernel: &str,
    shmem: usize,
    pass_len: bool,
) -> Option<(Result<(), String>, Vec<f32>)> {
    let lib = child_lib()?;
    let mut out = vec![0f32; 32];
    let (ptr, len) = (out.as_mut_ptr(), 32i32);
    let ptr_len: [&dyn harness::KernelArg; 2] = [&ptr, &len];
    let args = if pass_len {
        &ptr_len[..]
    } else {
        &ptr_len[..1]
    };
    let result = lib.launch(kernel, (1, 1, 1), (32, 1, 1), shmem, args);
    Some((result, out))
}

#[test]
#[ignore = "run by sanitizer_build_catches_out_of_bounds in a child process"]
fn sanitized_child_inbounds() {
    let Some((result, out)) = launch_in_child("emu_inbounds", 0, true) else {
        return;
    };
    result.unwrap();
    assert_eq!(out[31], 31.0);
}

// The three out-of-bounds kernels: the sanitizers abort the child before the launch returns.
#[test]
#[ignore = "run by sanitizer_build_catches_out_of_bounds in a child process"]
fn sanitized_child_static_smem() {
    let _ = launch_in_child("emu_oob_static_smem", 0, false);
}

#[test]
#[ignore = "run by sanitizer_build_catches_out_of_bounds in a child process"]
fn sanitized_child_dyn_smem() {
    let _ = launch_in_child("emu_oob_dyn_smem", 32 * 4, false);
}

#[test]
#[ignore = "run by sanitizer_build_catches_out_of_bounds in a child process"]
fn sanitized_child_global() {
    let _ = launch_in_child("emu_oob_global", 0, true);
}

#[test]
fn launch_above_the_declared_launch_bound_is_refused() {
    // The backend's kernels declare __launch_bounds__; the emulator refuses what the driver would.
    let k = harness::kernels();
    assert_eq!(k.launch_bounds.get("attention_forward"), Some(&128));
    assert_eq!(k.launch_bounds.get("cross_entropy_f32"), Some(&1024));
    let e = k
        .launch("attention_forward", (1, 1, 1), (256, 1, 1), 0, &[])
        .unwrap_err();
    assert!(
        e.contains("256 threads") && e.contains("__launch_bounds__(128)"),
        "{e}"
    );
}

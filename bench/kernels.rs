//! Criterion profiles of the CUDA kernels, one group per kernel family (attention forward/backward,
//! cross-entropy, LayerNorm, GELU, embedding, AdamW, bf16 matmul) at the GPU benchmark's shapes, timed with
//! CUDA events and reported as FLOP/s or bytes/s and as a percentage of the roofline (H100: 989 TFLOP/s
//! dense bf16, 3.35 TB/s; also against the ceilings measured on the device).
//!
//! The cases are launched by `isoflop::cuda::kernel_bench::CudaKernelLauncher` with the CUDA backend's own
//! launch helpers. Without a GPU (or without the CUDA libraries) this bench prints
//! `kernels bench skipped: <reason>` and measures nothing. The CPU reference ops are benched in bench/cpu_reference.rs.
//!
//! Run: `cargo bench --bench kernels` (filter with a family name: `cargo bench --bench kernels -- adamw`).

use criterion::{Criterion, Throughput};
use isoflop::cuda::kernel_bench::{open_launcher, CudaKernelLauncher};
use isoflop::cuda::kernel_cases::standard_cases;
use isoflop::device::peak::{datasheet_bandwidth, datasheet_peak};
use isoflop::device::DeviceKind;
use isoflop::error::error_chain;
use std::cell::RefCell;
use std::time::Duration;

fn profile(c: &mut Criterion, launcher: &RefCell<CudaKernelLauncher>) {
    let device = launcher.borrow().device_name();
    let ds_flops = datasheet_peak(DeviceKind::Cuda { ordinal: 0 }, &device, None).map(|p| p.flops);
    let ds_bw = datasheet_bandwidth(&device);
    let measured = launcher.borrow_mut().measured_ceilings();
    match &measured {
        Ok((f, b)) => println!(
            "{device}: measured ceilings {:.0} TFLOP/s bf16, {:.2} TB/s",
            f / 1e12,
            b / 1e12
        ),
        Err(e) => println!("{device}: no measured ceilings ({})", error_chain(e)),
    }
    let mut summary = Vec::new();
    for case in standard_cases() {
        if let Err(e) = launcher.borrow_mut().prepare(&case) {
            println!("{}: skipped ({})", case.id(), error_chain(&e));
            continue;
        }
        let mut g = c.benchmark_group(case.family.name());
        // Report FLOP/s where arithmetic bounds the case on the target (H100), bytes/s elsewhere.
        if case.roofline(989e12, 3.35e12).compute_bound {
            g.throughput(Throughput::Elements(case.flops as u64)); // one "element" = one FLOP
        } else {
            g.throughput(Throughput::Bytes(case.bytes as u64));
        }
        let mut times = Vec::new();
        let id = case.id();
        let name = id.split_once('/').map_or(id.as_str(), |x| x.1).to_string();
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let s = launcher
                    .borrow_mut()
                    .time_launches(&case, iters)
                    .unwrap_or_else(|e| panic!("{}: {}", case.id(), error_chain(&e)));
                times.push(s / iters as f64);
                Duration::from_secs_f64(s)
            })
        });
        g.finish();
        times.sort_by(f64::total_cmp);
        if let Some(&t) = times.get(times.len() / 2) {
            let mut line = format!(
                "{:<36} {:>9.3} us  {:>8.1} TFLOP/s  {:>7.3} TB/s",
                case.id(),
                t * 1e6,
                case.flops / t / 1e12,
                case.bytes / t / 1e12
            );
            if let (Some(f), Some(b)) = (ds_flops, ds_bw) {
                let r = case.roofline(f, b);
                line += &format!(
                    "  {:>5.1}% of datasheet roofline ({})",
                    100.0 * r.fraction(t),
                    if r.compute_bound { "compute" } else { "memory" }
                );
            }
            if let Ok((f, b)) = measured {
                line += &format!(
                    "  {:>5.1}% of measured",
                    100.0 * case.roofline(f, b).fraction(t)
                );
            }
            summary.push(line);
        }
    }
    println!("\nper-kernel summary on {device} (median per launch):");
    for l in summary {
        println!("{l}");
    }
}

fn main() {
    // Criterion's own flags shorten the profile (bench/gpu-suite.sh's quick profile passes
    // `--warm-up-time 0.1 --measurement-time 0.3 --sample-size 10`); they are parsed before the GPU is
    // looked for, so a bad flag fails on any machine.
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let launcher = match open_launcher() {
        Ok(l) => l,
        Err(why) => {
            println!("kernels bench skipped: {}", error_chain(&why));
            return;
        }
    };
    let launcher = RefCell::new(launcher);
    profile(&mut c, &launcher);
    c.final_summary();
}

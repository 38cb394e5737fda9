//! The measured matmul peak of a GPU: the median rate of a large bf16 product (fp32 accumulate, bf16
//! out) on random inputs, through the CUDA backend's own cuBLASLt layer ([`Blas`]: our workspace, no
//! unwraps) and timed with CUDA events ([`Gpu::timing_event`]). `crate::device::peak` turns it into the
//! measured peak MFU is judged against; the kernel bench uses it as a ceiling.

use super::blas::{Blas, Gemm};
use super::gpu::{catch_cuda_panic, Gpu, GpuError, GpuResult};
use half::bf16;
use rand::{Rng, SeedableRng};

/// Side of the square product.
pub const N: usize = 8192;
/// Timed launches per measurement.
pub const LAUNCHES: usize = 10;
/// Measurements; the median is kept.
pub const REPEATS: usize = 5;

/// Median FLOP/s of `N×N·N×N` bf16 products on GPU `ordinal`; `Err` with the reason when it cannot
/// run (no driver, no cuBLASLt, no memory, ...).
pub fn measure(ordinal: usize) -> GpuResult<f64> {
    let gpu = Gpu::open(ordinal)?;
    let mut blas = Blas::new(&gpu)?;
    measure_on(&gpu, &mut blas, N, LAUNCHES, REPEATS)
}

/// Median FLOP/s over `repeats` timings of `launches` back-to-back `n×n·n×n` bf16 products on `gpu`
/// with `blas` (after three untimed ones). On the emulated device the products run on the host and the
/// time is host wall time.
pub fn measure_on(
    gpu: &Gpu,
    blas: &mut Blas,
    n: usize,
    launches: usize,
    repeats: usize,
) -> GpuResult<f64> {
    if n == 0 || launches == 0 || repeats == 0 {
        return Err(GpuError::Invalid(
            "the matmul peak needs a positive size, launch count and repeat count".into(),
        ));
    }
    let rates = catch_cuda_panic("measuring the matmul peak", || {
        timed_rates(gpu, blas, n, launches, repeats)
    })
    .map_err(|e| e.context("measuring the matmul peak"))?;
    let mut rates =
        rates.map_err(|why| GpuError::Invalid(why).context("measuring the matmul peak"))?;
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// The rates of each timed run, or (inner `Err`) a product that left its output unwritten.
fn timed_rates(
    gpu: &Gpu,
    blas: &mut Blas,
    n: usize,
    launches: usize,
    repeats: usize,
) -> GpuResult<Result<Vec<f64>, String>> {
    gpu.bind()?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut random = |what: &str| -> GpuResult<_> {
        let host: Vec<bf16> = (0..n * n)
            .map(|_| bf16::from_f32(rng.random_range(-1.0f32..1.0)))
            .collect();
        let buf = gpu.alloc::<bf16>(n * n, what)?;
        gpu.upload(&host, &buf)?;
        Ok(buf)
    };
    let a = random("the matmul-peak A")?;
    let b = random("the matmul-peak B")?;
    let c = gpu.alloc::<bf16>(n * n, "the matmul-peak C")?;
    c.fill_bytes(0xff, &gpu.stream)?; // NaN: must be overwritten
    let mut launch = || {
        blas.gemm(
            &gpu.stream,
            &Gemm::forward((n, n, n), a.slice(), b.slice(), c.slice()),
        )
    };
    for _ in 0..3 {
        launch()?;
    }
    let (start, end) = (gpu.timing_event()?, gpu.timing_event()?);
    let mut rates = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        start.record(&gpu.stream, "recording the start event")?;
        for _ in 0..launches {
            launch()?;
        }
        end.record(&gpu.stream, "recording the end event")?;
        let s = start.elapsed_ms(&end)? * 1e-3;
        rates.push(2.0 * (n as f64).powi(3) * launches as f64 / s.max(1e-12));
    }
    let out = gpu.download(&c, 1024)?;
    if out.iter().any(|v| v.is_nan()) {
        return Ok(Err("the product left NaN in its output".into()));
    }
    Ok(Ok(rates))
}

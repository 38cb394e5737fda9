//! The measured matmul peak of a GPU: the median rate of a large bf16 cuBLASLt product (fp32 accumulate),
//! timed with CUDA events on random inputs.
//!
//! Written without a GPU at hand: it compiles and is guarded (library presence checked, panics inside
//! cudarc caught), but it has not yet run on a device. cudarc implements `Matmul<half::bf16>` only with
//! its `f16` feature, which this crate does not enable, so a local `#[repr(transparent)]` bf16 type
//! carries the same `CUDA_R_16BF` / `CUBLAS_COMPUTE_32F` types through the same code path.

use super::peak::Peak;
use cudarc::cublaslt::{sys as lt_sys, CudaBlasLT, Matmul, MatmulConfig};
use cudarc::driver::{sys, CudaContext, DeviceRepr};
use rand::{Rng, SeedableRng};

/// A bf16 value as raw bits, for cuBLASLt.
#[derive(Clone, Copy, Debug, Default)]
#[repr(transparent)]
struct Bf16Bits(u16);

// SAFETY: a plain 2-byte value with bf16's layout.
unsafe impl DeviceRepr for Bf16Bits {}

impl Matmul<Bf16Bits> for CudaBlasLT {
    fn matrix_type() -> lt_sys::cudaDataType {
        lt_sys::cudaDataType_t::CUDA_R_16BF
    }
    fn compute_type() -> lt_sys::cublasComputeType_t {
        lt_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
    }
}

/// Side of the square product.
const N: usize = 8192;
/// Timed launches per measurement, and measurements.
const LAUNCHES: usize = 10;
const REPEATS: usize = 5;

/// Median FLOP/s of `N×N·N×N` bf16 products on GPU `ordinal`.
pub fn measure(ordinal: usize) -> Result<Peak, String> {
    // SAFETY: only checks whether the shared library can be opened.
    if !unsafe { lt_sys::is_culib_present() } {
        return Err("cuBLASLt (libcublasLt) not found".into());
    }
    std::panic::catch_unwind(|| measure_inner(ordinal))
        .map_err(|_| "cudarc panicked while measuring the matmul peak".to_string())?
}

fn measure_inner(ordinal: usize) -> Result<Peak, String> {
    let ctx = CudaContext::new(ordinal).map_err(e("CUDA context"))?;
    let stream = ctx.default_stream();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut random = || -> Vec<Bf16Bits> {
        (0..N * N)
            .map(|_| Bf16Bits(half::bf16::from_f32(rng.random_range(-1.0f32..1.0)).to_bits()))
            .collect()
    };
    let a = stream.clone_htod(&random()).map_err(e("copy A"))?;
    let b = stream.clone_htod(&random()).map_err(e("copy B"))?;
    let mut c = stream
        .clone_htod(&vec![Bf16Bits(0x7fc0); N * N])
        .map_err(e("copy C"))?;
    let blas = CudaBlasLT::new(stream.clone()).map_err(e("cuBLASLt handle"))?;
    let n = N as u64;
    let cfg = MatmulConfig {
        transa: false,
        transb: false,
        transc: false,
        m: n,
        n,
        k: n,
        alpha: 1.0,
        lda: N as i64,
        ldb: N as i64,
        beta: 0.0,
        ldc: N as i64,
        stride_a: None,
        stride_b: None,
        stride_c: None,
        stride_bias: None,
        batch_size: None,
    };
    let launch = |c: &mut cudarc::driver::CudaSlice<Bf16Bits>| {
        // SAFETY: a, b, c each hold N×N elements, matching the configuration.
        unsafe { blas.matmul(cfg, &a, &b, c, None, None) }.map_err(e("cublasLtMatmul"))
    };
    for _ in 0..3 {
        launch(&mut c)?;
    }
    let mut rates = Vec::new();
    for _ in 0..REPEATS {
        let start = stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(e("event"))?;
        for _ in 0..LAUNCHES {
            launch(&mut c)?;
        }
        let end = stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(e("event"))?;
        let ms = start.elapsed_ms(&end).map_err(e("event timing"))? as f64;
        rates.push(2.0 * (N as f64).powi(3) * LAUNCHES as f64 / (ms * 1e-3));
    }
    // The output must have been written (it started as NaN).
    let out: Vec<Bf16Bits> = stream.clone_dtoh(&c).map_err(e("copy C back"))?;
    if out
        .iter()
        .take(1024)
        .any(|v| half::bf16::from_bits(v.0).is_nan())
    {
        return Err("the product left NaN in its output".into());
    }
    rates.sort_by(f64::total_cmp);
    Ok(Peak {
        flops: rates[rates.len() / 2],
        source: format!(
            "measured: median of {REPEATS}×{LAUNCHES} bf16 {N}x{N}x{N} cuBLASLt products (fp32 accumulate)"
        ),
    })
}

/// Turn any cudarc error into a message naming the operation.
fn e<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> String {
    move |err| format!("{what}: {err:?}")
}

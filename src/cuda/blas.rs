//! Matrix products through cuBLASLt: bf16 operands, fp32 accumulation (`CUBLAS_COMPUTE_32F`), bf16 or
//! f32 results.
//!
//! The model stores matrices row-major `[in, out]` with `y = x·W`. cuBLASLt is column-major, and a
//! row-major `[R, C]` buffer is the column-major `[C, R]` matrix, its transpose. So every product is
//! computed transposed:
//! - forward `Y[M,N] = X[M,K]·W[K,N]`: `Yᵀ = Wᵀ·Xᵀ` (A = W as `[N,K]`, B = X as `[K,M]`, no transposes);
//! - `dX[M,K] = dY[M,N]·Wᵀ`: `dXᵀ = W·dYᵀ` (A = W as `[N,K]` transposed, B = dY as `[N,M]`);
//! - `dW[K,N] += Xᵀ·dY`: `dWᵀ += dYᵀ·X` (A = dY as `[N,M]`, B = X as `[K,M]` transposed), beta = 1
//!   into the f32 gradient.
//!
//! `D = α·op(A)·op(B) + β·C` with `C` of D's type also gives the fused residual add of the forward
//! (`h = x + y·wo`: C = x, D = h, β = 1) and the accumulation of the three q/k/v input gradients.
//!
//! Determinism: each distinct product shape gets its algorithm from the heuristic once and keeps it
//! (plans are cached), with one fixed workspace, so a run repeats the same kernels in the same order;
//! cuBLAS documents bitwise-identical results for the same algorithm, toolkit and GPU. On top of that,
//! the heuristic is only offered algorithms without a split-K reduction
//! (`CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK` = `CUBLASLT_REDUCTION_SCHEME_NONE`): every output
//! element is then summed over `k` by one thread block in a fixed order, so repeats, resumed runs and
//! fresh handles give the same bits by construction, not by a library promise about how split-K
//! partial sums are combined. The cost: shapes with a small output and a long `k` (small models, or
//! weight gradients of few tokens) cannot spread `k` over several blocks and may run below the GPU's
//! peak; the model's large products fill the GPU without split-K. `ISOFLOP_CUBLASLT_REDUCTION=any`
//! lifts the restriction ([`ReductionPolicy`]). The fused GELU
//! epilogue is not used: its approximation is not documented to be the contract's tanh form, and the
//! separate GELU kernel costs one bf16 read and write of the [N, 4D] activation.
//!
//! On the emulated device ([`Blas::emulated`]) the same column-major products are computed on the host
//! from host memory: bf16 operands, f32 accumulation in order of `k`, rounded to bf16 when the output
//! is bf16, with the same transposes, leading dimensions and β·C input as the cuBLASLt call.

use super::gpu::{DevBuf, DevSlice, Gpu, GpuError, GpuResult, Stream};
use cudarc::cublaslt::{result, sys};
use half::bf16;
use std::collections::HashMap;
use std::ffi::c_void;

/// cuBLASLt workspace: 32 MiB (NVIDIA's recommendation for Hopper), allocated once by us instead of
/// `CudaBlasLT::new` (which unwraps its allocation).
pub const WORKSPACE_BYTES: usize = 32 << 20;

/// Which split-K reduction schemes the cuBLASLt heuristic may choose from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReductionPolicy {
    /// No split-K (`CUBLASLT_REDUCTION_SCHEME_NONE` only): bitwise repeatable by construction. Default.
    NoSplitK,
    /// Every scheme (`CUBLASLT_REDUCTION_SCHEME_MASK`): possibly faster for long-`k` products with a
    /// small output; repeatability then rests on cuBLASLt's own guarantee.
    Any,
}

impl ReductionPolicy {
    /// From `ISOFLOP_CUBLASLT_REDUCTION` (`none`, the default, or `any`); anything else is an error
    /// naming the variable.
    pub fn from_env() -> GpuResult<ReductionPolicy> {
        Self::parse(std::env::var("ISOFLOP_CUBLASLT_REDUCTION").ok().as_deref())
    }

    /// Parse a setting (None or empty: the default).
    pub fn parse(v: Option<&str>) -> GpuResult<ReductionPolicy> {
        match v.map(str::trim) {
            None | Some("") | Some("none") => Ok(ReductionPolicy::NoSplitK),
            Some("any") => Ok(ReductionPolicy::Any),
            Some(other) => Err(GpuError::Blas(format!(
                "ISOFLOP_CUBLASLT_REDUCTION={other:?}: expected \"none\" (no split-K, the default) \
                 or \"any\""
            ))),
        }
    }

    /// The value of `CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK`.
    pub fn mask(self) -> u32 {
        match self {
            ReductionPolicy::NoSplitK => {
                sys::cublasLtReductionScheme_t::CUBLASLT_REDUCTION_SCHEME_NONE as u32
            }
            ReductionPolicy::Any => {
                sys::cublasLtReductionScheme_t::CUBLASLT_REDUCTION_SCHEME_MASK as u32
            }
        }
    }
}

/// Element type of a product's output (operands are always bf16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutType {
    /// bf16 output (the next matmul's operand, or the attention's input).
    Bf16,
    /// f32 output (residual stream, gradients).
    F32,
}

impl OutType {
    fn cuda(self) -> sys::cudaDataType {
        match self {
            OutType::Bf16 => sys::cudaDataType::CUDA_R_16BF,
            OutType::F32 => sys::cudaDataType::CUDA_R_32F,
        }
    }
}

/// A column-major product `D[m,n] = α·op(A)·op(B) + β·C`, as cuBLASLt sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Shape {
    m: u64,
    n: u64,
    k: u64,
    trans_a: bool,
    trans_b: bool,
    out: OutType,
    accumulate: bool,
    /// Leading dimensions of the stored A and B (at least their stored row counts); D's is m.
    lda: u64,
    ldb: u64,
}

impl Shape {
    /// A product with densely stored operands (each leading dimension its stored row count).
    fn dense(
        (m, n, k): (usize, usize, usize),
        (trans_a, trans_b): (bool, bool),
        out: OutType,
        accumulate: bool,
    ) -> Shape {
        let (m, n, k) = (m as u64, n as u64, k as u64);
        Shape {
            m,
            n,
            k,
            trans_a,
            trans_b,
            out,
            accumulate,
            lda: if trans_a { k } else { m },
            ldb: if trans_b { n } else { k },
        }
    }

    /// Stored (rows, columns) of A and of B.
    fn stored(&self) -> ((u64, u64), (u64, u64)) {
        let a = if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let b = if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        (a, b)
    }

    /// Elements spanned by a stored matrix of `(rows, cols)` with leading dimension `ld`.
    fn span((rows, cols): (u64, u64), ld: u64) -> usize {
        if rows == 0 || cols == 0 {
            0
        } else {
            ((cols - 1) * ld + rows) as usize
        }
    }
}

/// Descriptors and the chosen algorithm of one shape.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: created once in `Blas::plan`, destroyed once here.
        unsafe {
            let _ = result::destroy_matrix_layout(self.a);
            let _ = result::destroy_matrix_layout(self.b);
            let _ = result::destroy_matrix_layout(self.d);
            let _ = result::destroy_matmul_desc(self.desc);
        }
    }
}

fn blas_err(what: &str) -> impl Fn(result::CublasError) -> GpuError + '_ {
    move |err| GpuError::BlasCall {
        what: what.to_string(),
        err,
    }
}

/// Whether libcublasLt can be loaded.
pub fn cublaslt_present() -> bool {
    super::discover::ensure_loaded(super::discover::CudaLib::CublasLt, || {
        // SAFETY: only tries to open the shared library.
        unsafe { sys::is_culib_present() }
    })
}

/// A cuBLASLt handle with its workspace and cached plans.
struct Lt {
    handle: sys::cublasLtHandle_t,
    workspace: DevBuf<u8>,
    plans: HashMap<(Shape, Align), Plan>,
    reduction: ReductionPolicy,
}

/// Byte alignments of the A, B, C and D pointers of a product (powers of two, at most 256): part of
/// a plan's key, and declared to the heuristic so that it only picks algorithms that work with them.
type Align = [u32; 4];

/// The alignment of `p` in bytes: the largest power of two dividing it, at most 256 (cuBLASLt's
/// default assumption, which a bf16 weight at an odd multiple of 64 elements does not meet).
fn alignment(p: u64) -> u32 {
    if p == 0 {
        256
    } else {
        1u32 << p.trailing_zeros().min(8)
    }
}

/// Row-major products on one GPU: through cuBLASLt, or on the host for the emulated device.
pub struct Blas {
    lt: Option<Lt>,
}

// SAFETY: the handle is used from one thread at a time (the backend is not Sync).
unsafe impl Send for Blas {}

impl Blas {
    /// Create the handle and the workspace on `gpu`.
    pub fn new(gpu: &Gpu) -> GpuResult<Blas> {
        if !cublaslt_present() {
            return Err(GpuError::Unavailable(
                "cuBLASLt (libcublasLt.so.13) not found on the loader's path, in the CUDA \
                 toolkit or in PyTorch's nvidia/cu13 wheels: add its folder to LD_LIBRARY_PATH or \
                 ISOFLOP_CUDA_LIB"
                    .into(),
            ));
        }
        if gpu.is_emulated() {
            return Err(GpuError::Unavailable(
                "cuBLASLt does not run on the emulated device (use Blas::emulated)".into(),
            ));
        }
        let reduction = ReductionPolicy::from_env()?;
        gpu.bind()?;
        let workspace = gpu.alloc::<u8>(WORKSPACE_BYTES, "the cuBLASLt workspace")?;
        let handle = super::gpu::catch_cuda_panic("loading cuBLASLt", || {
            result::create_handle().map_err(blas_err("creating the cuBLASLt handle"))
        })?;
        Ok(Blas {
            lt: Some(Lt {
                handle,
                workspace,
                plans: HashMap::new(),
                reduction,
            }),
        })
    }

    /// Products computed on the host, for the emulated device (pointers are host addresses).
    pub fn emulated() -> Blas {
        Blas { lt: None }
    }

    /// Run one product: cuBLASLt, or the host on the emulated device.
    fn run(&mut self, stream: &Stream, s: Shape, a: u64, b: u64, c: u64, d: u64) -> GpuResult<()> {
        let align = [alignment(a), alignment(b), alignment(c), alignment(d)];
        match (&mut self.lt, stream.cuda()) {
            (Some(lt), Some(st)) => lt.run(st, s, align, a, b, c, d),
            (None, None) => {
                if align.iter().any(|&x| x < 16) {
                    return Err(GpuError::Blas(format!(
                        "matmul {s:?}: operands must be 16-byte aligned (A, B, C, D alignments \
                         {align:?})"
                    )));
                }
                // SAFETY: on the emulated device every pointer is a host allocation of the size the
                // shape implies (the same contract as the cuBLASLt call).
                unsafe { host_matmul(s, a, b, c, d) };
                Ok(())
            }
            _ => Err(GpuError::Blas(
                "a cuBLASLt handle and a stream of different devices".into(),
            )),
        }
    }
}

/// `D[m,n] = op(A)·op(B) + β·C` column-major on the host: A, B bf16 with leading dimensions `s.lda`,
/// `s.ldb`, f32 accumulation, D (and C) of `s.out`'s type with leading dimension m.
///
/// # Safety
/// `a`, `b`, `c` and `d` are host addresses of buffers at least as large as the shape implies.
unsafe fn host_matmul(s: Shape, a: u64, b: u64, c: u64, d: u64) {
    let (m, n, k) = (s.m as usize, s.n as usize, s.k as usize);
    let (lda, ldb) = (s.lda as usize, s.ldb as usize);
    let (sa, sb) = s.stored();
    let a = std::slice::from_raw_parts(a as *const bf16, Shape::span(sa, s.lda));
    let b = std::slice::from_raw_parts(b as *const bf16, Shape::span(sb, s.ldb));
    // op(A)[i,p], op(B)[p,j] as f32, gathered so that the inner loop is contiguous over p.
    let mut at = vec![0f32; m * k]; // at[i*k + p]
    for i in 0..m {
        for p in 0..k {
            let v = if s.trans_a {
                a[p + i * lda]
            } else {
                a[i + p * lda]
            };
            at[i * k + p] = v.to_f32();
        }
    }
    let mut bt = vec![0f32; k * n]; // bt[j*k + p]
    for j in 0..n {
        for p in 0..k {
            let v = if s.trans_b {
                b[j + p * ldb]
            } else {
                b[p + j * ldb]
            };
            bt[j * k + p] = v.to_f32();
        }
    }
    for j in 0..n {
        for i in 0..m {
            let mut acc = 0f32;
            for (x, y) in at[i * k..(i + 1) * k].iter().zip(&bt[j * k..(j + 1) * k]) {
                acc += x * y;
            }
            let o = i + j * m;
            match s.out {
                OutType::F32 => {
                    let cv = if s.accumulate {
                        *(c as *const f32).add(o)
                    } else {
                        0.0
                    };
                    *(d as *mut f32).add(o) = acc + cv;
                }
                OutType::Bf16 => {
                    let cv = if s.accumulate {
                        (*(c as *const bf16).add(o)).to_f32()
                    } else {
                        0.0
                    };
                    *(d as *mut bf16).add(o) = bf16::from_f32(acc + cv);
                }
            }
        }
    }
}

impl Lt {
    fn plan(&mut self, s: Shape, align: Align) -> GpuResult<&Plan> {
        if !self.plans.contains_key(&(s, align)) {
            // The first calls of the descriptor and heuristic functions resolve their symbols: a
            // cuBLASLt older than the bindings panics inside cudarc there.
            let p = super::gpu::catch_cuda_panic("planning a cuBLASLt matmul", || {
                self.make_plan(s, align)
            })?;
            self.plans.insert((s, align), p);
        }
        Ok(&self.plans[&(s, align)])
    }

    fn make_plan(&self, s: Shape, align: Align) -> GpuResult<Plan> {
        let bf = sys::cudaDataType::CUDA_R_16BF;
        let ((a_rows, a_cols), (b_rows, b_cols)) = s.stored();
        let e = blas_err("creating a matmul plan");
        let desc = result::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType::CUDA_R_32F,
        )
        .map_err(&e)?;
        // From here on, `plan` owns every descriptor (dropped on an early return).
        let mut plan = Plan {
            desc,
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            d: std::ptr::null_mut(),
            algo: sys::cublasLtMatmulAlgo_t { data: [0; 8] },
        };
        plan.a = result::create_matrix_layout(bf, a_rows, a_cols, s.lda as i64).map_err(&e)?;
        plan.b = result::create_matrix_layout(bf, b_rows, b_cols, s.ldb as i64).map_err(&e)?;
        plan.d = result::create_matrix_layout(s.out.cuda(), s.m, s.n, s.m as i64).map_err(&e)?;
        let ta = s.trans_a as i32;
        let tb = s.trans_b as i32;
        // SAFETY: valid descriptor, attribute values of the documented types (int32 for transposes).
        unsafe {
            result::set_matmul_desc_attribute(
                plan.desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                &ta as *const i32 as *const c_void,
                4,
            )
            .map_err(&e)?;
            result::set_matmul_desc_attribute(
                plan.desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
                &tb as *const i32 as *const c_void,
                4,
            )
            .map_err(&e)?;
        }
        let pref = result::create_matmul_pref().map_err(&e)?;
        let ws = WORKSPACE_BYTES as u64;
        // SAFETY: valid preference and descriptors; the preference is destroyed right after.
        let heur = unsafe {
            use sys::cublasLtMatmulPreferenceAttributes_t as P;
            let mut r = result::set_matmul_pref_attribute(
                pref,
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const u64 as *const c_void,
                8,
            );
            for (attr, al) in [
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
            ]
            .into_iter()
            .zip(&align)
            {
                r = r.and_then(|_| {
                    result::set_matmul_pref_attribute(
                        pref,
                        attr,
                        al as *const u32 as *const c_void,
                        4,
                    )
                });
            }
            let mask = self.reduction.mask();
            let r = r.and_then(|_| {
                result::set_matmul_pref_attribute(
                    pref,
                    P::CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                    &mask as *const u32 as *const c_void,
                    4,
                )
            });
            let r = r.and_then(|_| {
                result::get_matmul_algo_heuristic(
                    self.handle,
                    plan.desc,
                    plan.a,
                    plan.b,
                    plan.d,
                    plan.d,
                    pref,
                )
            });
            let _ = result::destroy_matmul_pref(pref);
            r
        }
        .map_err(|err| {
            GpuError::Blas(format!(
                "no cuBLASLt algorithm for {s:?} (m,n,k column-major, reduction schemes {:?}; \
                 ISOFLOP_CUBLASLT_REDUCTION=any allows split-K): {err}",
                self.reduction
            ))
        })?;
        plan.algo = heur.algo;
        Ok(plan)
    }

    /// Run one planned product on `stream`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        stream: &cudarc::driver::CudaStream,
        s: Shape,
        align: Align,
        a: u64,
        b: u64,
        c: u64,
        d: u64,
    ) -> GpuResult<()> {
        let alpha = 1.0f32;
        let beta = if s.accumulate { 1.0f32 } else { 0.0 };
        let handle = self.handle;
        let (ws, ws_bytes) = (self.workspace.slice().addr(), self.workspace.bytes());
        let plan = self.plan(s, align)?;
        // The stream's context must be current on this thread (the caller may be a new thread).
        stream
            .context()
            .bind_to_thread()
            .map_err(|err| GpuError::Driver {
                what: "binding the CUDA context for cuBLASLt".into(),
                err,
            })?;
        // SAFETY: pointers are device buffers of the sizes the shape implies (the callers size them from
        // the model's dimensions); descriptors are alive in the cached plan; C and D share a layout.
        super::gpu::catch_cuda_panic("running a cuBLASLt matmul", || unsafe {
            result::matmul(
                handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                a as *const c_void,
                plan.a,
                b as *const c_void,
                plan.b,
                c as *const c_void,
                plan.d,
                d as *mut c_void,
                plan.d,
                &plan.algo,
                ws as *mut c_void,
                ws_bytes,
                stream.cu_stream() as sys::cudaStream_t,
            )
            .map_err(|err| GpuError::BlasCall {
                what: format!("matmul {s:?}"),
                err,
            })
        })
    }
}

/// The output of a product: its element type is the slice's.
#[derive(Clone, Copy, Debug)]
pub enum GemmOut<'a> {
    /// A bf16 result (the next product's operand, or the attention's input).
    Bf16(DevSlice<'a, bf16>),
    /// An f32 result (residual stream, gradients).
    F32(DevSlice<'a, f32>),
}

impl GemmOut<'_> {
    fn out_type(&self) -> OutType {
        match self {
            GemmOut::Bf16(_) => OutType::Bf16,
            GemmOut::F32(_) => OutType::F32,
        }
    }

    fn addr_len(&self) -> (u64, usize) {
        match self {
            GemmOut::Bf16(s) => (s.addr(), s.len()),
            GemmOut::F32(s) => (s.addr(), s.len()),
        }
    }
}

impl<'a> From<DevSlice<'a, bf16>> for GemmOut<'a> {
    fn from(s: DevSlice<'a, bf16>) -> Self {
        GemmOut::Bf16(s)
    }
}

impl<'a> From<DevSlice<'a, f32>> for GemmOut<'a> {
    fn from(s: DevSlice<'a, f32>) -> Self {
        GemmOut::F32(s)
    }
}

/// Which product of a linear layer `Y[M,N] = X[M,K]·W[K,N]` (row-major, bf16 operands, f32
/// accumulation), with its buffers.
#[derive(Clone, Copy, Debug)]
pub enum GemmKind<'a> {
    /// `y = x·w`, or `y = residual + x·w` (an f32 `[M,N]`, which may be `y` itself; then `y` is f32).
    Forward {
        /// `X[M,K]`.
        x: DevSlice<'a, bf16>,
        /// `W[K,N]`.
        w: DevSlice<'a, bf16>,
        /// `Y[M,N]`.
        y: GemmOut<'a>,
        /// `C[M,N]` added to the product.
        residual: Option<DevSlice<'a, f32>>,
    },
    /// `dx = dy·wᵀ`, added to `dx` when `accumulate` (then `dx` is f32).
    BackwardInput {
        /// `dY[M,N]`, rows `dy_ld >= N` elements apart.
        dy: DevSlice<'a, bf16>,
        /// Row stride of `dy` in elements.
        dy_ld: usize,
        /// `W[K,N]`.
        w: DevSlice<'a, bf16>,
        /// `dX[M,K]`.
        dx: GemmOut<'a>,
        /// Add to `dx` instead of overwriting it.
        accumulate: bool,
    },
    /// `dw += xᵀ·dy` into the f32 gradient.
    BackwardWeight {
        /// `X[M,K]`.
        x: DevSlice<'a, bf16>,
        /// `dY[M,N]`, rows `dy_ld >= N` elements apart.
        dy: DevSlice<'a, bf16>,
        /// Row stride of `dy` in elements.
        dy_ld: usize,
        /// `dW[K,N]` f32 (added to).
        dw: DevSlice<'a, f32>,
    },
}

/// One cuBLASLt product of a linear layer `Y[M,N] = X[M,K]·W[K,N]` (cuBLASLt's `MatmulConfig`, in
/// the model's row-major terms): the sizes by name and the buffers with their element types. Built
/// with [`Gemm::forward`], [`Gemm::backward_input`] or [`Gemm::backward_weight`], run with
/// [`Blas::gemm`], which checks every buffer's length against the sizes.
#[derive(Clone, Copy, Debug)]
pub struct Gemm<'a> {
    /// Rows of X and Y (tokens).
    pub m: usize,
    /// Columns of X, rows of W (input features).
    pub k: usize,
    /// Columns of W and Y (output features).
    pub n: usize,
    /// The product and its buffers.
    pub kind: GemmKind<'a>,
}

impl<'a> Gemm<'a> {
    /// `y[M,N] = x[M,K]·w[K,N]`.
    pub fn forward(
        (m, k, n): (usize, usize, usize),
        x: DevSlice<'a, bf16>,
        w: DevSlice<'a, bf16>,
        y: impl Into<GemmOut<'a>>,
    ) -> Self {
        Gemm {
            m,
            k,
            n,
            kind: GemmKind::Forward {
                x,
                w,
                y: y.into(),
                residual: None,
            },
        }
    }

    /// `dx[M,K] = dy[M,N]·w[K,N]ᵀ`.
    pub fn backward_input(
        (m, k, n): (usize, usize, usize),
        dy: DevSlice<'a, bf16>,
        w: DevSlice<'a, bf16>,
        dx: impl Into<GemmOut<'a>>,
    ) -> Self {
        Gemm {
            m,
            k,
            n,
            kind: GemmKind::BackwardInput {
                dy,
                dy_ld: n,
                w,
                dx: dx.into(),
                accumulate: false,
            },
        }
    }

    /// `dw[K,N] += x[M,K]ᵀ·dy[M,N]` (f32 gradient).
    pub fn backward_weight(
        (m, k, n): (usize, usize, usize),
        x: DevSlice<'a, bf16>,
        dy: DevSlice<'a, bf16>,
        dw: DevSlice<'a, f32>,
    ) -> Self {
        Gemm {
            m,
            k,
            n,
            kind: GemmKind::BackwardWeight {
                x,
                dy,
                dy_ld: n,
                dw,
            },
        }
    }

    /// A forward product that adds the f32 `residual[M,N]` (which may be the output itself).
    pub fn residual(mut self, r: DevSlice<'a, f32>) -> Self {
        if let GemmKind::Forward { residual, .. } = &mut self.kind {
            *residual = Some(r);
        }
        self
    }

    /// An input-gradient product that adds to its output instead of overwriting it.
    pub fn accumulate(mut self) -> Self {
        if let GemmKind::BackwardInput { accumulate, .. } = &mut self.kind {
            *accumulate = true;
        }
        self
    }

    /// A backward product whose `dy` rows are `ld` elements apart (the logit gradient's `2·Vp`).
    pub fn dy_ld(mut self, ld: usize) -> Self {
        match &mut self.kind {
            GemmKind::BackwardInput { dy_ld, .. } | GemmKind::BackwardWeight { dy_ld, .. } => {
                *dy_ld = ld
            }
            GemmKind::Forward { .. } => {}
        }
        self
    }

    /// The column-major cuBLASLt product and its A, B, C, D addresses, after checking every buffer
    /// against the sizes (see the module documentation for the transposes).
    fn lower(&self) -> GpuResult<(Shape, [u64; 4])> {
        let (m, k, n) = (self.m, self.k, self.n);
        let fits = |what: &str, len: usize, rows: usize, cols: usize, ld: usize| {
            let need = if rows == 0 || cols == 0 {
                0
            } else {
                (rows - 1) * ld + cols
            };
            if len < need {
                Err(GpuError::Bounds(format!(
                    "matmul (m, k, n) = ({m}, {k}, {n}): {what} holds {len} elements, needs {need}"
                )))
            } else {
                Ok(())
            }
        };
        let ld_ok = |ld: usize| {
            if ld < n {
                Err(GpuError::Blas(format!(
                    "dY row stride {ld} < its width {n}"
                )))
            } else {
                Ok(())
            }
        };
        match self.kind {
            GemmKind::Forward { x, w, y, residual } => {
                if residual.is_some() && y.out_type() != OutType::F32 {
                    return Err(GpuError::Blas("a residual add needs an f32 output".into()));
                }
                let (ya, ylen) = y.addr_len();
                fits("X", x.len(), m, k, k)?;
                fits("W", w.len(), k, n, n)?;
                fits("Y", ylen, m, n, n)?;
                if let Some(r) = residual {
                    fits("the residual", r.len(), m, n, n)?;
                }
                let s = Shape::dense((n, m, k), (false, false), y.out_type(), residual.is_some());
                let c = residual.map_or(ya, |r| r.addr());
                Ok((s, [w.addr(), x.addr(), c, ya]))
            }
            GemmKind::BackwardInput {
                dy,
                dy_ld,
                w,
                dx,
                accumulate,
            } => {
                if accumulate && dx.out_type() != OutType::F32 {
                    return Err(GpuError::Blas("accumulating dX needs an f32 output".into()));
                }
                ld_ok(dy_ld)?;
                let (da, dlen) = dx.addr_len();
                fits("dY", dy.len(), m, n, dy_ld)?;
                fits("W", w.len(), k, n, n)?;
                fits("dX", dlen, m, k, k)?;
                let mut s = Shape::dense((k, m, n), (true, false), dx.out_type(), accumulate);
                s.ldb = dy_ld as u64;
                Ok((s, [w.addr(), dy.addr(), da, da]))
            }
            GemmKind::BackwardWeight { x, dy, dy_ld, dw } => {
                ld_ok(dy_ld)?;
                fits("X", x.len(), m, k, k)?;
                fits("dY", dy.len(), m, n, dy_ld)?;
                fits("dW", dw.len(), k, n, n)?;
                let mut s = Shape::dense((n, k, m), (false, true), OutType::F32, true);
                s.lda = dy_ld as u64;
                Ok((s, [dy.addr(), x.addr(), dw.addr(), dw.addr()]))
            }
        }
    }
}

impl Blas {
    /// Run the product `g` on `stream` (queued; cuBLASLt, or the host on the emulated device).
    pub fn gemm(&mut self, stream: &Stream, g: &Gemm) -> GpuResult<()> {
        let (s, [a, b, c, d]) = g.lower()?;
        self.run(stream, s, a, b, c, d)
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        self.plans.clear();
        // SAFETY: created in `new`, destroyed once.
        unsafe {
            let _ = result::destroy_handle(self.handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReductionPolicy as R;

    #[test]
    fn reduction_policy_defaults_to_no_split_k() {
        assert_eq!(R::parse(None).unwrap(), R::NoSplitK);
        assert_eq!(R::parse(Some("")).unwrap(), R::NoSplitK);
        assert_eq!(R::parse(Some("none")).unwrap(), R::NoSplitK);
        assert_eq!(R::parse(Some("any")).unwrap(), R::Any);
        // The values of cublasLtReductionScheme_t: NONE = 0, MASK = INPLACE | COMPUTE_TYPE | OUTPUT_TYPE.
        assert_eq!(R::NoSplitK.mask(), 0);
        assert_eq!(R::Any.mask(), 7);
        let e = R::parse(Some("fast")).unwrap_err().to_string();
        assert!(
            e.contains("ISOFLOP_CUBLASLT_REDUCTION") && e.contains("fast"),
            "{e}"
        );
    }
}

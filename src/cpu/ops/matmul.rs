//! Matrix multiplication `y = a·b`, row-major, on top of `matrixmultiply::sgemm`.
//!
//! Transposes are free (sgemm takes strides). Work is split over rayon along the larger output
//! dimension in at most 8 chunks whose size depends only on the shape, and every output
//! element is computed by exactly one sgemm call: results are bitwise identical whatever the number
//! of threads.

use super::send_ptr::SendPtr;
use rayon::prelude::*;

/// Most chunks one product is split into.
const MAX_CHUNKS: usize = 8;
/// Fewest rows (or columns) in a chunk.
const MIN_CHUNK: usize = 32;
/// Below this many multiply-adds a product runs as one sgemm call.
const SERIAL_WORK: usize = 1 << 18;

/// A read-only strided matrix operand.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    /// Backing storage.
    pub data: &'a [f32],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> Operand<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Operand {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Operand {
            data,
            rs: 1,
            cs: cols,
        }
    }
    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(
                last < self.data.len(),
                "matmul: operand {what} ({rows}x{cols}) exceeds its buffer of {}",
                self.data.len()
            );
        }
    }
}

/// What a product does with the previous contents of its output: the `beta` of `c = a·b + beta·c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutMode {
    /// `c = a·b` (beta 0; the previous contents, even NaN, are ignored).
    Overwrite,
    /// `c += a·b` (beta 1: residual adds, gradient accumulation).
    Accumulate,
}

impl OutMode {
    fn beta(self) -> f32 {
        match self {
            OutMode::Overwrite => 0.0,
            OutMode::Accumulate => 1.0,
        }
    }
}

fn chunk_len(dim: usize) -> usize {
    dim.div_ceil(MAX_CHUNKS).max(MIN_CHUNK)
}

/// `c = a·b` or `c += a·b` (`mode`) for `a` (`m×k`), `b` (`k×n`) and row-major contiguous `c` (`m×n`).
pub(crate) fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: Operand,
    b: Operand,
    mode: OutMode,
    c: &mut [f32],
) {
    let beta = mode.beta();
    a.check(m, k, "a");
    b.check(k, n, "b");
    assert_eq!(c.len(), m * n, "matmul: output size");
    if m == 0 || n == 0 {
        return;
    }
    if m * n * k.max(1) <= SERIAL_WORK {
        // SAFETY: operand extents checked above; c is m×n contiguous.
        unsafe { sgemm_block(m, k, n, &a, 0, &b, 0, beta, c.as_mut_ptr(), n) };
        return;
    }
    if m >= n {
        let ch = chunk_len(m);
        c.par_chunks_mut(ch * n).enumerate().for_each(|(i, cc)| {
            let (r0, rows) = (i * ch, cc.len() / n);
            // SAFETY: rows r0..r0+rows of a are inside the checked extent; cc is rows×n contiguous.
            unsafe { sgemm_block(rows, k, n, &a, r0 * a.rs, &b, 0, beta, cc.as_mut_ptr(), n) };
        });
    } else {
        let ch = chunk_len(n);
        let cp = SendPtr::new(c.as_mut_ptr());
        (0..n.div_ceil(ch)).into_par_iter().for_each(|j| {
            let (c0, cols) = (j * ch, ch.min(n - j * ch));
            // SAFETY: columns c0..c0+cols of b are inside the checked extent; each task writes the
            // disjoint column block c0..c0+cols of the m×n output, which outlives the parallel loop.
            unsafe { sgemm_block(m, k, cols, &a, 0, &b, c0 * b.cs, beta, cp.get().add(c0), n) };
        });
    }
}

/// One `matrixmultiply::sgemm` call: `c[rows×cols] = a·b + beta·c` over the block of `a` starting at
/// element `a_off` (`rows×k`) and of `b` at `b_off` (`k×cols`), with the operands' strides; `c` has
/// row stride `ldc` and column stride 1.
///
/// # Safety
/// The blocks must lie inside `a.data` and `b.data`, and `c` must be valid for writes of the
/// `rows×cols` block with row stride `ldc`, written by no one else during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_block(
    rows: usize,
    k: usize,
    cols: usize,
    a: &Operand,
    a_off: usize,
    b: &Operand,
    b_off: usize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    matrixmultiply::sgemm(
        rows,
        k,
        cols,
        1.0,
        a.data.as_ptr().add(a_off),
        a.rs as isize,
        a.cs as isize,
        b.data.as_ptr().add(b_off),
        b.rs as isize,
        b.cs as isize,
        beta,
        c,
        ldc as isize,
        1,
    )
}

/// `out = a·b` or `out += a·b` (`mode`; the residual adds of the model accumulate), with `a` `m×k`,
/// `b` `k×n`, all row-major.
pub fn matmul_forward(
    a_MxK: &[f32],
    b_KxN: &[f32],
    out_MxN: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    mode: OutMode,
) {
    assert_eq!(a_MxK.len(), m * k, "matmul_forward: a size");
    assert_eq!(b_KxN.len(), k * n, "matmul_forward: b size");
    gemm(
        m,
        k,
        n,
        Operand::rows(a_MxK, k),
        Operand::rows(b_KxN, n),
        mode,
        out_MxN,
    );
}

/// `da = dout·bᵀ` or `da += dout·bᵀ` (`mode`).
pub(crate) fn matmul_backward_a(
    dout_MxN: &[f32],
    b_KxN: &[f32],
    da_MxK: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    mode: OutMode,
) {
    assert_eq!(dout_MxN.len(), m * n, "matmul_backward: dout size");
    assert_eq!(b_KxN.len(), k * n, "matmul_backward: b size");
    gemm(
        m,
        n,
        k,
        Operand::rows(dout_MxN, n),
        Operand::transposed(b_KxN, n),
        mode,
        da_MxK,
    );
}

/// `db += aᵀ·dout`.
pub(crate) fn matmul_backward_b(
    dout_MxN: &[f32],
    a_MxK: &[f32],
    db_KxN: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert_eq!(dout_MxN.len(), m * n, "matmul_backward: dout size");
    assert_eq!(a_MxK.len(), m * k, "matmul_backward: a size");
    gemm(
        k,
        m,
        n,
        Operand::transposed(a_MxK, k),
        Operand::rows(dout_MxN, n),
        OutMode::Accumulate,
        db_KxN,
    );
}

/// Backward of `out = a·b`: `da = dout·bᵀ` (`=`), `db += aᵀ·dout` (`+=`).
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dout_MxN: &[f32],
    a_MxK: &[f32],
    b_KxN: &[f32],
    da_MxK: &mut [f32],
    db_KxN: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    matmul_backward_a(dout_MxN, b_KxN, da_MxK, m, k, n, OutMode::Overwrite);
    matmul_backward_b(dout_MxN, a_MxK, db_KxN, m, k, n);
}

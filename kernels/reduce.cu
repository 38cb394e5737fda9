// reduce.cu — deterministic global reductions: the gradient's sum of squares (global norm) and the sum
// of per-row losses.
//
// Why: the norm decides gradient clipping and the loss is logged and compared across runs, so both must be
// bit-for-bit reproducible. Float atomics are not; these use two passes in a fixed order: pass 1, each of
// P blocks sums a fixed grid-stride subset in f64 and writes one partial; pass 2, one block adds the P
// partials in a fixed tree. The result depends only on (n, P, blockDim): keep P and the block size fixed
// (e.g. P = 264, block 256).
#include "common.cuh"

namespace {
template <bool Square>
__device__ __forceinline__ void partials_impl(const float* x_N, long long n, double* partial_P) {
  __shared__ double scratch[32];
  double s = 0.0;
  ISOFLOP_GRID_STRIDE(i, n) {
    const double x = x_N[i];
    s += Square ? x * x : x;
  }
  s = isoflop::block_sum_f64(s, scratch);
  if (threadIdx.x == 0) partial_P[blockIdx.x] = s;
}
}  // namespace

// Pass 1 of Σ x²: partial_P[b] for each block b. Launch: grid P, block 256 (multiple of 32), no dynamic
// shared memory.
extern "C" __global__ void __launch_bounds__(1024) sum_squares_partials_f32(const float* x_N, long long n, double* partial_P) {
  partials_impl<true>(x_N, n, partial_P);
}
// Pass 1 of Σ x (e.g. the loss_N written by cross_entropy_*). Same launch.
extern "C" __global__ void __launch_bounds__(1024) sum_partials_f32(const float* x_N, long long n, double* partial_P) {
  partials_impl<false>(x_N, n, partial_P);
}
// Pass 2: out_1[0] = Σ partial_P. Launch: grid 1, block 256 (multiple of 32), no dynamic shared memory.
extern "C" __global__ void __launch_bounds__(1024) sum_finish_f64(const double* partial_P, int p, double* out_1) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int i = int(threadIdx.x); i < p; i += int(blockDim.x)) s += partial_P[i];
  s = isoflop::block_sum_f64(s, scratch);
  if (threadIdx.x == 0) out_1[0] = s;
}

// residual.cu — residual adds and dtype casts between the f32 residual stream and bf16 matmul operands.
//
// Why: the residual stream and its gradient stay f32 (sums of many small updates), matmul operands are
// bf16; these are the one-read-one-write glue kernels between them (bf16 rounding: nearest even).
//
// Launch (all): block 256 threads, any grid (grid-stride), no dynamic shared memory.
#include "common.cuh"

// x += y (f32 residual stream += f32 branch output).
extern "C" __global__ void __launch_bounds__(256) residual_add_f32(float* x_N, const float* y_N, long long n) {
  ISOFLOP_GRID_STRIDE(i, n) { x_N[i] += y_N[i]; }
}
// x += y (f32 residual stream += bf16 branch output).
extern "C" __global__ void __launch_bounds__(256) residual_add_bf16_f32(float* x_N, const bf16* y_N, long long n) {
  ISOFLOP_GRID_STRIDE(i, n) { x_N[i] += isoflop::bf2f(y_N[i]); }
}
// out = a + b, f32 (out may alias a or b).
extern "C" __global__ void __launch_bounds__(256) add_f32(const float* a_N, const float* b_N, float* out_N, long long n) {
  ISOFLOP_GRID_STRIDE(i, n) { out_N[i] = a_N[i] + b_N[i]; }
}
// y = bf16(x).
extern "C" __global__ void __launch_bounds__(256) cast_f32_to_bf16(const float* x_N, bf16* y_N, long long n) {
  ISOFLOP_GRID_STRIDE(i, n) { y_N[i] = isoflop::f2bf(x_N[i]); }
}
// y = f32(x).
extern "C" __global__ void __launch_bounds__(256) cast_bf16_to_f32(const bf16* x_N, float* y_N, long long n) {
  ISOFLOP_GRID_STRIDE(i, n) { y_N[i] = isoflop::bf2f(x_N[i]); }
}
// x = 0 (f32), e.g. gradient accumulators; cudaMemset works too, this keeps everything in one stream of
// kernel launches.
extern "C" __global__ void __launch_bounds__(256) zero_f32(float* x_N, long long n) {
  ISOFLOP_GRID_STRIDE(i, n) { x_N[i] = 0.f; }
}

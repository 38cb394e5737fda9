// gelu.cu — GELU, tanh approximation, forward and backward for the MLP.
//
// Why: the MLP's activation is elementwise and memory-bound, so each kernel does one read and one write
// per element and folds in the dtype conversion its neighbours need: the forward reads the f32 or bf16
// pre-activation (output of the x·w1 matmul) and writes the bf16 input of the ·w2 matmul; the backward
// reads the f32 gradient from the ·w2 backward matmul and writes the bf16 gradient the w1 backward matmul
// consumes (gelu backward fused with the bf16 cast). f32-only variants serve tests and diagnostics.
//
// gelu(x) = 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³)
// gelu'(x) = 0.5·(1 + tanh(u)) + 0.5·x·(1 − tanh²(u))·√(2/π)·(1 + 3·0.044715·x²)
//
// Launch (all): block 256 threads, any grid (grid-stride; ceil(n/256) capped at 65535 is natural), no
// dynamic shared memory. n is the element count (long long).
#include "common.cuh"

namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoef = 0.044715f;

__device__ __forceinline__ float gelu_f(float x) {
  const float u = kSqrt2OverPi * (x + kCoef * x * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}
__device__ __forceinline__ float gelu_grad_f(float x) {
  const float u = kSqrt2OverPi * (x + kCoef * x * x * x);
  const float th = tanhf(u);
  return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * kSqrt2OverPi * (1.0f + 3.0f * kCoef * x * x);
}

template <class TI, class TO>
__device__ __forceinline__ void gelu_forward_impl(const TI* x_N, TO* out_N, long long n) {
  ISOFLOP_GRID_STRIDE(i, n) { isoflop::store_f(out_N, i, gelu_f(isoflop::load_f(x_N, i))); }
}
template <class TX, class TO>
__device__ __forceinline__ void gelu_backward_impl(const float* dout_N, const TX* x_N, TO* dx_N, long long n) {
  ISOFLOP_GRID_STRIDE(i, n) {
    isoflop::store_f(dx_N, i, dout_N[i] * gelu_grad_f(isoflop::load_f(x_N, i)));
  }
}
}  // namespace

// out = gelu(x), f32 → f32.
extern "C" __global__ void __launch_bounds__(256) gelu_forward_f32(const float* x_N, float* out_N, long long n) {
  gelu_forward_impl(x_N, out_N, n);
}
// out = bf16(gelu(x)), f32 pre-activation → bf16 activation.
extern "C" __global__ void __launch_bounds__(256) gelu_forward_f32_bf16(const float* x_N, bf16* out_N, long long n) {
  gelu_forward_impl(x_N, out_N, n);
}
// out = bf16(gelu(x)), bf16 → bf16 (math in f32).
extern "C" __global__ void __launch_bounds__(256) gelu_forward_bf16(const bf16* x_N, bf16* out_N, long long n) {
  gelu_forward_impl(x_N, out_N, n);
}
// dx = dout·gelu'(x), all f32.
extern "C" __global__ void __launch_bounds__(256) gelu_backward_f32(const float* dout_N, const float* x_N, float* dx_N, long long n) {
  gelu_backward_impl(dout_N, x_N, dx_N, n);
}
// dx = bf16(dout·gelu'(x)): f32 upstream gradient, f32 saved pre-activation, bf16 result.
extern "C" __global__ void __launch_bounds__(256) gelu_backward_f32_bf16(const float* dout_N, const float* x_N, bf16* dx_N,
                                                  long long n) {
  gelu_backward_impl(dout_N, x_N, dx_N, n);
}
// dx = bf16(dout·gelu'(x)): f32 upstream gradient, bf16 saved pre-activation, bf16 result.
extern "C" __global__ void __launch_bounds__(256) gelu_backward_bf16(const float* dout_N, const bf16* x_N, bf16* dx_N, long long n) {
  gelu_backward_impl(dout_N, x_N, dx_N, n);
}

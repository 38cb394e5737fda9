// layernorm.cu — LayerNorm without bias: out = (x − mean)·rstd·scale, rstd = 1/√(var + 1e-6), biased
// variance, statistics in f32.
//
// Why: pre-norm blocks normalise the f32 residual stream before every matmul; the forward writes the
// matmul's bf16 operand directly (or f32 for tests / the QK path) and saves mean and rstd for the
// backward. The backward's dscale is a sum over all rows: instead of float atomics (order-dependent) each
// block writes its partial sums over a fixed run of rows, and a second kernel adds the partials in block
// order, so dscale is bit-for-bit reproducible.
#include "common.cuh"

namespace {
constexpr float kEps = 1e-6f;

// One warp per row; a block holds blockDim.x/32 rows.
template <class TO>
__device__ __forceinline__ void layernorm_forward_impl(const float* x_NxC, const float* scale_C, TO* out_NxC,
                                                       float* mean_N, float* rstd_N, int n, int c) {
  const int warps = int(blockDim.x >> 5);
  const int row = int(blockIdx.x) * warps + int(threadIdx.x >> 5);
  const int lane = int(threadIdx.x & 31);
  if (row >= n) return;  // the whole warp leaves together
  const float* xr = x_NxC + (long long)row * c;
  float s = 0.f;
  for (int j = lane; j < c; j += 32) s += xr[j];
  const float mean = isoflop::warp_sum(s) / float(c);
  float q = 0.f;
  for (int j = lane; j < c; j += 32) {
    const float d = xr[j] - mean;
    q += d * d;
  }
  const float var = isoflop::warp_sum(q) / float(c);
  const float rstd = rsqrtf(var + kEps);
  TO* outr = out_NxC + (long long)row * c;
  for (int j = lane; j < c; j += 32) isoflop::store_f(outr, j, (xr[j] - mean) * rstd * scale_C[j]);
  if (lane == 0) {
    mean_N[row] = mean;
    rstd_N[row] = rstd;
  }
}
}  // namespace

// Forward, bf16 output (the next matmul's operand).
// Launch: block 128 (any multiple of 32), grid ceil(n / (block/32)), no dynamic shared memory.
extern "C" __global__ void __launch_bounds__(1024) layernorm_forward_bf16(const float* x_NxC, const float* scale_C, bf16* out_NxC,
                                                  float* mean_N, float* rstd_N, int n, int c) {
  layernorm_forward_impl(x_NxC, scale_C, out_NxC, mean_N, rstd_N, n, c);
}
// Forward, f32 output. Same launch.
extern "C" __global__ void __launch_bounds__(1024) layernorm_forward_f32(const float* x_NxC, const float* scale_C, float* out_NxC,
                                                 float* mean_N, float* rstd_N, int n, int c) {
  layernorm_forward_impl(x_NxC, scale_C, out_NxC, mean_N, rstd_N, n, c);
}

// Backward, part 1. With x̂ = (x − mean)·rstd and g = dout·scale:
//   dx = rstd·(g − mean(g) − x̂·mean(g·x̂))   (written, or added when accumulate_dx != 0: the residual
//                                              stream's gradient collects it)
//   dscale_partial[b][j] = Σ_{rows of block b} dout·x̂
// Block b handles rows [b·rows_per_block, (b+1)·rows_per_block). Launch: block 256 (any multiple of 32),
// grid P = ceil(n / rows_per_block), dynamic shared memory c·4 bytes; dscale_partial_PxC has P rows.
extern "C" __global__ void __launch_bounds__(1024) layernorm_backward_f32(const float* dout_NxC, const float* x_NxC, const float* scale_C,
                                                  const float* mean_N, const float* rstd_N, float* dx_NxC,
                                                  float* dscale_partial_PxC, int n, int c, int rows_per_block,
                                                  int accumulate_dx) {
  ISOFLOP_DYN_SMEM(float, acc_C);  // this block's dscale partial; thread t owns channels t, t+blockDim, ...
  __shared__ float scratch[32];
  const int tid = int(threadIdx.x), bd = int(blockDim.x);
  for (int j = tid; j < c; j += bd) acc_C[j] = 0.f;
  const int row0 = int(blockIdx.x) * rows_per_block;
  const int row1 = min(n, row0 + rows_per_block);
  for (int row = row0; row < row1; ++row) {
    const float* xr = x_NxC + (long long)row * c;
    const float* dr = dout_NxC + (long long)row * c;
    const float mean = mean_N[row], rstd = rstd_N[row];
    float sg = 0.f, sgx = 0.f;
    for (int j = tid; j < c; j += bd) {
      const float xhat = (xr[j] - mean) * rstd;
      const float g = dr[j] * scale_C[j];
      sg += g;
      sgx += g * xhat;
    }
    const float mean_g = isoflop::block_sum(sg, scratch) / float(c);
    const float mean_gx = isoflop::block_sum(sgx, scratch) / float(c);
    float* dxr = dx_NxC + (long long)row * c;
    for (int j = tid; j < c; j += bd) {
      const float xhat = (xr[j] - mean) * rstd;
      const float d = rstd * (dr[j] * scale_C[j] - mean_g - xhat * mean_gx);
      dxr[j] = accumulate_dx ? dxr[j] + d : d;
      acc_C[j] += dr[j] * xhat;
    }
  }
  float* part = dscale_partial_PxC + (long long)blockIdx.x * c;
  for (int j = tid; j < c; j += bd) part[j] = acc_C[j];
}

// Backward, part 2: dscale[j] += Σ_b partial[b][j], b in order. Launch: block 256, grid ceil(c/256) (any
// grid works), no dynamic shared memory.
extern "C" __global__ void __launch_bounds__(1024) layernorm_dscale_reduce_f32(const float* dscale_partial_PxC, float* dscale_C, int p,
                                                       int c) {
  ISOFLOP_GRID_STRIDE(j, c) {
    float s = 0.f;
    for (int b = 0; b < p; ++b) s += dscale_partial_PxC[(long long)b * c + j];
    dscale_C[j] += s;
  }
}

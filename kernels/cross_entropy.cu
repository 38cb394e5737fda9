// cross_entropy.cu — fused softmax cross-entropy over the vocabulary, loss and logits' gradient in one
// launch, in place.
//
// Why: the [N, V] logits (V = 32101) are the largest activation; reading them twice (online max/sum, then
// the gradient pass) and overwriting them with their gradient avoids a second [N, V] buffer and a softmax
// kernel. One block per row with block-wide reductions keeps all SMs busy even for small N (one thread per
// row would serialise 32101 elements per thread). Statistics and loss are f32; logits may be f32 or bf16.
//
// Per row r with target t: loss_N[r] = logsumexp(z) − z[t]; dlogits[r, j] = softmax(z)[j] − [j == t]
// (gradient of the SUMMED loss). Pad targets (id 0) give loss 0 and a zero gradient row. A target >= v
// gives a NaN loss (the host validates ids). write_grad == 0 leaves the logits untouched (evaluation).
// Launch: grid N (one block per row), block 1024 (any multiple of 32), no dynamic shared memory.
#include "common.cuh"

namespace {
__device__ __forceinline__ float rescale(float m, float to) {
  return m == __uint_as_float(0xff800000u) ? 0.f : __expf(m - to);  // exp(m − M); 0 for an empty part
}

template <class T>
__device__ __forceinline__ void cross_entropy_impl(T* logits_NxV, const unsigned short* targets_N, float* loss_N,
                                                   int v, int write_grad) {
  __shared__ float sm[32], ss[32];
  const long long row = blockIdx.x;
  T* z = logits_NxV + row * v;
  const int t = targets_N[row];
  const int tid = int(threadIdx.x), bd = int(blockDim.x);
  const float neg_inf = __uint_as_float(0xff800000u);
  // Read the target's logit before any thread overwrites the row (a barrier follows below).
  const float zt = (t > 0 && t < v) ? isoflop::load_f(z, t) : 0.f;
  // Online max / sum of exp per thread.
  float m = neg_inf, s = 0.f;
  for (int j = tid; j < v; j += bd) {
    const float x = isoflop::load_f(z, j);
    if (x > m) {
      s = s * rescale(m, x) + 1.f;
      m = x;
    } else {
      s += __expf(x - m);
    }
  }
  // Combine across the warp (butterfly: same result in every lane), then across warps in warp order.
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(isoflop::FULL_MASK, m, o);
    const float s2 = __shfl_xor_sync(isoflop::FULL_MASK, s, o);
    const float mm = fmaxf(m, m2);
    s = s * rescale(m, mm) + s2 * rescale(m2, mm);
    m = mm;
  }
  const int lane = tid & 31, warp = tid >> 5, nwarps = bd >> 5;
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  float M = neg_inf;
  for (int w = 0; w < nwarps; ++w) M = fmaxf(M, sm[w]);
  float S = 0.f;
  for (int w = 0; w < nwarps; ++w) S += ss[w] * rescale(sm[w], M);
  const float lse = M + logf(S);
  if (tid == 0) loss_N[row] = t == 0 ? 0.f : (t < v ? lse - zt : __uint_as_float(0x7fc00000u));
  if (!write_grad) return;
  if (t == 0) {
    for (int j = tid; j < v; j += bd) isoflop::store_f(z, j, 0.f);
    return;
  }
  for (int j = tid; j < v; j += bd) {
    const float p = __expf(isoflop::load_f(z, j) - lse);
    isoflop::store_f(z, j, j == t ? p - 1.f : p);
  }
}
}  // namespace

// f32 logits, overwritten with f32 gradients.
extern "C" __global__ void cross_entropy_f32(float* logits_NxV, const unsigned short* targets_N, float* loss_N,
                                             int v, int write_grad) {
  cross_entropy_impl(logits_NxV, targets_N, loss_N, v, write_grad);
}
// bf16 logits, overwritten with bf16 gradients (statistics in f32).
extern "C" __global__ void cross_entropy_bf16(bf16* logits_NxV, const unsigned short* targets_N, float* loss_N,
                                              int v, int write_grad) {
  cross_entropy_impl(logits_NxV, targets_N, loss_N, v, write_grad);
}

// cross_entropy.cu — fused softmax cross-entropy over the vocabulary: loss and the logits' bf16 gradient in
// one launch, in place.
//
// Why: the [N, V] logits (V = 32101) are the largest activation. One block per row reads the f32 row twice
// (online max/sum, then the gradient) and writes the bf16 gradient the head products consume straight over
// the row's own storage, so there is no second [N, V] buffer and no separate softmax or cast pass. One block
// per row with block-wide reductions keeps all SMs busy even for small N (one thread per row would
// serialise 32101 elements per thread). Statistics and loss are f32.
//
// Layout: row r of the logits is logits_NxL[r·ld .. r·ld + v) (ld >= v; columns v..ld are padding that the
// softmax ignores — the backend pads V to a multiple of 128 so that cuBLASLt sees aligned rows). The
// gradient of row r is written as bf16 over the first half of the same row's bytes: the gradient matrix is
// bf16 [N, ld] with row stride 2·ld elements (`dlogits_Nx2L`), padding columns set to 0.
//
// Per row r with target t: loss_N[r] = logsumexp(z) − z[t]; dlogits[r, j] = softmax(z)[j] − [j == t]
// (gradient of the SUMMED loss). Pad targets (id 0) give loss 0 and a zero gradient row. A target >= v
// gives a NaN loss (the host validates ids). write_grad == 0 leaves the logits untouched (evaluation).
// Launch: grid N (one block per row), block 1024 (any multiple of 32 up to 1024), no dynamic shared memory.
#include "common.cuh"

namespace {
__device__ __forceinline__ float rescale(float m, float to) {
  return m == __uint_as_float(0xff800000u) ? 0.f : __expf(m - to);  // exp(m − M); 0 for an empty part
}
// Online logsumexp state (m = running max, s = Σ exp(x − m)): add one value x.
__device__ __forceinline__ void lse_push(float x, float& m, float& s) {
  if (x > m) {
    s = s * rescale(m, x) + 1.f;
    m = x;
  } else {
    s += __expf(x - m);
  }
}
// Merge the state (m2, s2) of another part into (m, s).
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  const float mm = fmaxf(m, m2);
  s = s * rescale(m, mm) + s2 * rescale(m2, mm);
  m = mm;
}
}  // namespace

extern "C" __global__ void __launch_bounds__(1024) cross_entropy_f32(float* logits_NxL, const unsigned short* targets_N,
                                                                    float* loss_N, int v, int ld, int write_grad) {
  __shared__ float sm[32], ss[32];
  const long long row = blockIdx.x;
  float* z = logits_NxL + row * ld;
  const int t = targets_N[row];
  const int tid = int(threadIdx.x), bd = int(blockDim.x);
  const float neg_inf = __uint_as_float(0xff800000u);
  // Read the target's logit before any thread overwrites the row (barriers follow below).
  const float zt = (t > 0 && t < v) ? z[t] : 0.f;
  // Online max / sum of exp per thread.
  float m = neg_inf, s = 0.f;
  for (int j = tid; j < v; j += bd) {
    const float x = z[j];
    lse_push(x, m, s);
  }
  // Combine across the warp (butterfly: same result in every lane), then across warps in warp order.
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(isoflop::FULL_MASK, m, o);
    const float s2 = __shfl_xor_sync(isoflop::FULL_MASK, s, o);
    lse_merge(m, s, m2, s2);
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
  // bf16 element j lies in the bytes of f32 element j/2 <= j: each stretch of bd columns is read in full
  // before the barrier and written after it, so no f32 logit is overwritten before it is read. The loop
  // bounds are the same for every thread (the barrier needs the whole block).
  bf16* g = reinterpret_cast<bf16*>(z);
  for (int j0 = 0; j0 < ld; j0 += bd) {
    const int j = j0 + tid;
    float d = 0.f;
    if (t != 0 && j < v) {
      const float p = __expf(z[j] - lse);
      d = j == t ? p - 1.f : p;
    }
    __syncthreads();
    if (j < ld) g[j] = isoflop::f2bf(d);
  }
}

// token_scores_f32 — per row r with target t (task evaluation, forward only): logp_N[r] = z[t] − logsumexp(z)
// and hit_N[r] = 1 iff t is the argmax of the row (the lowest column holding the maximum), so that greedy
// decoding reproduces a target run iff every hit is 1. Pad targets (id 0) give 0 and 0; a target >= v gives
// a NaN logp and 0. The logits are only read. Same layout and launch as cross_entropy_f32: grid N, block a
// multiple of 32 up to 1024, no dynamic shared memory.
extern "C" __global__ void __launch_bounds__(1024) token_scores_f32(const float* logits_NxL,
                                                                   const unsigned short* targets_N, float* logp_N,
                                                                   int* hit_N, int v, int ld) {
  __shared__ float sm[32], ss[32], sb[32];
  __shared__ int si[32];
  const long long row = blockIdx.x;
  const float* z = logits_NxL + row * ld;
  const int t = targets_N[row];
  const int tid = int(threadIdx.x), bd = int(blockDim.x);
  const float neg_inf = __uint_as_float(0xff800000u);
  // Online max / sum of exp, and the best (value, lowest index) per thread.
  float m = neg_inf, s = 0.f, best = neg_inf;
  int bi = 0x7fffffff;
  for (int j = tid; j < v; j += bd) {
    const float x = z[j];
    if (x > best) {  // j rises within a thread: a tie keeps the earlier index
      best = x;
      bi = j;
    }
    lse_push(x, m, s);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(isoflop::FULL_MASK, m, o);
    const float s2 = __shfl_xor_sync(isoflop::FULL_MASK, s, o);
    const float b2 = __shfl_xor_sync(isoflop::FULL_MASK, best, o);
    const int i2 = __shfl_xor_sync(isoflop::FULL_MASK, bi, o);
    lse_merge(m, s, m2, s2);
    if (b2 > best || (b2 == best && i2 < bi)) {
      best = b2;
      bi = i2;
    }
  }
  const int lane = tid & 31, warp = tid >> 5, nwarps = bd >> 5;
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
    sb[warp] = best;
    si[warp] = bi;
  }
  __syncthreads();
  if (tid != 0) return;
  float M = neg_inf, B = neg_inf;
  int I = 0x7fffffff;
  for (int w = 0; w < nwarps; ++w) {
    M = fmaxf(M, sm[w]);
    if (sb[w] > B || (sb[w] == B && si[w] < I)) {
      B = sb[w];
      I = si[w];
    }
  }
  float S = 0.f;
  for (int w = 0; w < nwarps; ++w) S += ss[w] * rescale(sm[w], M);
  const float lse = M + logf(S);
  if (t == 0) {
    logp_N[row] = 0.f;
    hit_N[row] = 0;
  } else if (t < v) {
    logp_N[row] = z[t] - lse;
    hit_N[row] = I == t ? 1 : 0;
  } else {
    logp_N[row] = __uint_as_float(0x7fc00000u);
    hit_N[row] = 0;
  }
}

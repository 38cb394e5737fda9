// embedding.cu — token embedding lookup (forward) and its deterministic scatter-add (backward).
//
// Why: the forward starts the f32 residual stream (written f32: the embedding table is the f32 master
// copy, and the stream stays f32 through the blocks). The backward must add every position's gradient
// into its token's row; float atomics would make the sum order (and the bits) timing-dependent, so the
// host sorts the positions by token id (CSR: the distinct ids, offsets, positions in ascending order) and
// one block per distinct id sums its positions in that fixed order.
#include "common.cuh"

// out[i, :] = embed[tokens[i], :]. A token id >= v writes NaN (the host validates ids; this makes a
// missed check visible). Launch: block 256, any grid (grid-stride over n·d), no dynamic shared memory.
extern "C" __global__ void __launch_bounds__(256) embedding_forward_f32(const float* embed_VxD, const unsigned short* tokens_N,
                                                 float* out_NxD, int n, int d, int v) {
  const long long total = (long long)n * d;
  ISOFLOP_GRID_STRIDE(i, total) {
    const long long row = i / d;
    const int col = int(i - row * d);
    const int tok = tokens_N[row];
    out_NxD[i] = tok < v ? embed_VxD[(long long)tok * d + col] : __uint_as_float(0x7fc00000u);
  }
}

// dembed[ids[u], :] += Σ_{k in offsets[u]..offsets[u+1]} dout[positions[k], :], k ascending.
// ids_U: the distinct token ids of the batch; offsets_U1: u+1 offsets into positions_N; positions_N: the
// positions of each id, ascending. Launch: grid u (one block per distinct id), block 128 (any), no dynamic
// shared memory.
extern "C" __global__ void __launch_bounds__(1024) embedding_backward_f32(const float* dout_NxD, const unsigned short* ids_U,
                                                  const int* offsets_U1, const int* positions_N,
                                                  float* dembed_VxD, int u, int d) {
  const int b = int(blockIdx.x);
  if (b >= u) return;
  const int k0 = offsets_U1[b], k1 = offsets_U1[b + 1];
  float* dst = dembed_VxD + (long long)ids_U[b] * d;
  for (int j = int(threadIdx.x); j < d; j += int(blockDim.x)) {
    float s = 0.f;
    for (int k = k0; k < k1; ++k) s += dout_NxD[(long long)positions_N[k] * d + j];
    dst[j] += s;
  }
}

// Fused causal attention with QK-Norm and RoPE applied on load: forward and backward (sm_90a, bf16).
//
// Math (the model contract, per head of 64 dims; q, k, v are bf16 rows [B*T, D], head h = columns h*64..+64):
//   n = (x - mean) * rstd            mean, biased variance over the head's 64 dims, rstd = 1/sqrt(var + 1e-6)
//   y = n * scale                    scale [64] (q_scale for q, k_scale for k), shared by all heads
//   z = rope(y)                      z[i] = y[i]cos - y[i+32]sin, z[i+32] = y[i+32]cos + y[i]sin, i < 32,
//                                    angle = pos * 10000^(-2i/64), pos = row % T
//   out = softmax_causal(zq zk^T / 8) v,   lse = logsumexp of each row of the scaled scores (natural log)
//
// Kernels (all `extern "C"`, bf16 = __nv_bfloat16, every buffer dense row-major):
//   rope_table_init(cs, T)                           cs float2 [T][32] = (cos, sin); grid ceil(T*32/256), 256 thr.
//                                                    Build once per T; read by the three attention kernels.
//   attention_forward(out, lse, q, k, v, q_scale, k_scale, cs, B, T, H)
//                                                    grid (ceil(T/64), H, B), block 128, static smem 27 KiB.
//                                                    out bf16 [B*T, D]; lse f32 [B, H, T].
//   attention_backward_prep(delta, out, dout, B, T, H)
//                                                    delta f32 [B, H, T] = rowsum(dout * out) per head;
//                                                    grid ceil(B*T*H*8/256), block 256.
//   attention_backward(dq, dk, dv, dscale_part, dout, q, k, v, lse, delta, q_scale, k_scale, cs, B, T, H)
//                                                    grid (2*ceil(T/64), H, B), block 128, static smem 36.5 KiB.
//                                                    dq, dk: gradients w.r.t. the PRE-norm q and k (bf16,
//                                                    overwritten); dv bf16 (overwritten); dscale_part f32
//                                                    workspace [2][B*H*ceil(T/64)][64] (q then k partials).
//   qk_norm_scale_grad_reduce(dq_scale, dk_scale, dscale_part, nparts)
//                                                    grid 2, block 1024: dq_scale[64] += sum of the q partials,
//                                                    dk_scale[64] += sum of the k partials, nparts =
//                                                    B*H*ceil(T/64); fixed summation order (deterministic).
// Backward = prep, attention_backward, reduce, in that order on one stream. Workspace: delta (B*H*T floats) and
// dscale_part (2*B*H*ceil(T/64)*64 floats). No float atomics anywhere: every output element is written by
// exactly one thread in a fixed order, so results are bit-for-bit reproducible.
//
// Design notes (H100, expected behaviour — not timed: no GPU was available while writing this):
// * Tiles of 64 queries x 64 keys, 4 warps per block, each warp owns 16 rows; mma.sync m16n8k16 bf16 with fp32
//   accumulation, operands through ldmatrix from shared tiles padded to 72 bf16 per row (conflict-free).
//   Causal: a query tile only visits key tiles <= itself; only the diagonal tile is masked. The tile count is
//   ceil(T/64): rows past T are zero-filled on load and never stored, so any T >= 1 works.
// * Nothing T x T touches global memory. The forward keeps O in registers with the online softmax (exp2 domain).
// * QK-Norm and RoPE are recomputed on every tile load (K tiles once per visiting query tile, on CUDA cores:
//   ~10 FLOP per element against 256 tensor FLOP per element of the 64x64x64 products per tile pair). The
//   alternative — a pre-pass writing normalised-rotated q, k to global (2 x B*T*D bf16 extra write, read back
//   by forward and backward) — saves that ALU work but costs memory traffic and a buffer, and the backward
//   would still need the pre-norm q, k (or the saved statistics) for the QK-Norm backward. At T <= 512 the
//   recompute is cheaper and keeps the interface buffer-free; the normalisation statistics (mean, rstd per
//   row and head) are recomputed in the backward from the pre-norm rows, so nothing else is saved.
// * Backward without atomics: dK/dV and dQ are produced by different blocks of the same launch (FA2 would
//   atomically accumulate dQ): blocks [0, nt) own a key tile and loop over query tiles (dK, dV); blocks
//   [nt, 2nt) own a query tile and loop over key tiles (dQ). S and P are recomputed by both (7 instead of 5
//   64x64x64 products per tile pair), the price of determinism without a T-sized dQ partial buffer. Each block
//   finishes its rows through RoPE and QK-Norm backward and writes its scale-gradient partial [64].
// * Expected on H100: the forward at ~25-30% of the mma.sync bf16 peak for T=512 (loads are synchronous
//   register round trips with no cp.async pipelining, and the per-tile normalisation sits on the critical
//   path; occupancy hides part of it: 128 registers (ptxas, no spills), 27 KiB smem -> 4 blocks = 16 warps
//   per SM); the backward at ~20% (255 registers, no spills: dK, dV accumulators plus K, V fragments stay in
//   registers -> 2 blocks = 8 warps per SM; 36.5 KiB smem). Useful later steps: double-buffer K/V tiles (prefetch into registers before the
//   products), 128-query tiles with 8 warps for the forward.
#include "ptx.cuh"

#include <cuda_bf16.h>

namespace attn {

typedef __nv_bfloat16 bf16;
typedef unsigned int u32;  // = uint32_t of the ptx.cuh wrappers (no <stdint.h> under NVRTC)

constexpr int HD = 64;                    // head dimension
constexpr int TILE = 64;                  // queries or keys per tile
constexpr int NTHREADS = 128;             // 4 warps, 16 rows each
constexpr int LDS = HD + 8;               // bf16 row stride of a shared tile (144 B: ldmatrix conflict-free)
constexpr int LDF = HD + 4;               // f32 row stride of the backward staging tile
constexpr int TILE_ELEMS = TILE * LDS;    // bf16 elements per shared tile
constexpr float EPS = 1e-6f;              // QK-Norm epsilon
constexpr float SCALE = 0.125f;           // 1/sqrt(64)
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;
constexpr float SCALE_LOG2 = SCALE * LOG2E;  // scores -> exp2 domain
constexpr unsigned FULL = 0xffffffffu;
#define INF_F __int_as_float(0x7f800000)  // +inf (no <math.h> INFINITY under NVRTC)

// acc += A·B for one m16n8k16 tile (ptx.cuh wrapper; B given as its two registers).
__device__ __forceinline__ void mma(float (&acc)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    const u32 b[2] = {b0, b1};
    ptx::mma_m16n8k16_bf16(acc, a, b, acc);
}

__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return (u32)__bfloat16_as_ushort(v.x) | ((u32)__bfloat16_as_ushort(v.y) << 16);
}

// 16- and 4-byte moves between differently typed views of the same memory: plain vector accesses on the
// GPU, memcpy under the emulator (where g++ applies strict aliasing to them).
__device__ __forceinline__ uint4 ld16(const void* p) {
#ifdef ISOFLOP_EMU
    uint4 u;
    memcpy(&u, p, 16);
    return u;
#else
    return *reinterpret_cast<const uint4*>(p);
#endif
}
__device__ __forceinline__ void st16(void* p, uint4 u) {
#ifdef ISOFLOP_EMU
    memcpy(p, &u, 16);
#else
    *reinterpret_cast<uint4*>(p) = u;
#endif
}
__device__ __forceinline__ void st4(void* p, u32 u) {
#ifdef ISOFLOP_EMU
    memcpy(p, &u, 4);
#else
    *reinterpret_cast<u32*>(p) = u;
#endif
}

// 8 bf16 (one 16-byte load) widened to f32 (exact: a bf16 is the top half of an f32).
__device__ __forceinline__ void unpack8(const uint4& u, float* f) {
    const u32 w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

// Row-wise work split shared by the normalisation prologue and epilogue: thread t owns row t>>1 of a 64-row
// tile and columns c0..c0+16 and c0+32..c0+48 with c0 = (t&1)*16, so the RoPE pairs (i, i+32) stay in one
// thread and the two threads of a row are neighbouring lanes (one shuffle completes a row reduction).
__device__ __forceinline__ int norm_row() { return threadIdx.x >> 1; }
__device__ __forceinline__ int norm_col0() { return (threadIdx.x & 1) * 16; }

// Loads the 32 pre-norm values this thread owns of sequence row `pos` (zeros past T) and their row statistics.
__device__ __forceinline__ void load_row_stats(const bf16* __restrict__ src, int D, int pos, int T, float xa[16],
                                               float xb[16], float& mean, float& rstd) {
    const int c0 = norm_col0();
    if (pos < T) {
        const bf16* p = src + (size_t)pos * D + c0;
        unpack8(ld16(p), xa);
        unpack8(ld16(p + 8), xa + 8);
        unpack8(ld16(p + 32), xb);
        unpack8(ld16(p + 40), xb + 8);
    } else {
#pragma unroll
        for (int i = 0; i < 16; ++i) xa[i] = xb[i] = 0.f;
    }
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < 16; ++i) s += xa[i] + xb[i];
    s += __shfl_xor_sync(FULL, s, 1);
    mean = s * (1.f / HD);
    float v = 0.f;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        const float da = xa[i] - mean, db = xb[i] - mean;
        v += da * da + db * db;
    }
    v += __shfl_xor_sync(FULL, v, 1);
    rstd = rsqrtf(v * (1.f / HD) + EPS);
}

// dst[64][LDS] = rope(qk_norm(rows row0..row0+64 of src)) in bf16; rows past T become zeros. All 128 threads.
__device__ __forceinline__ void load_norm_rope_tile(bf16* __restrict__ dst, const bf16* __restrict__ src, int D,
                                                    int row0, int T, const float* __restrict__ scale,
                                                    const float2* __restrict__ rope_cs) {
    const int r = norm_row(), c0 = norm_col0(), pos = row0 + r;
    float xa[16], xb[16], mean, rstd;
    load_row_stats(src, D, pos, T, xa, xb, mean, rstd);
    const float2* cs = rope_cs + (size_t)(pos < T ? pos : 0) * 32 + c0;
    u32 oa[8], ob[8];
#pragma unroll
    for (int i = 0; i < 16; i += 2) {
        float za[2], zb[2];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int c = c0 + i + j;
            const float2 t = cs[i + j];
            const float ya = (xa[i + j] - mean) * rstd * __ldg(scale + c);
            const float yb = (xb[i + j] - mean) * rstd * __ldg(scale + c + 32);
            za[j] = ya * t.x - yb * t.y;
            zb[j] = yb * t.x + ya * t.y;
        }
        oa[i / 2] = pack_bf16(za[0], za[1]);
        ob[i / 2] = pack_bf16(zb[0], zb[1]);
    }
    bf16* d = dst + r * LDS + c0;
    st16(d, make_uint4(oa[0], oa[1], oa[2], oa[3]));
    st16(d + 8, make_uint4(oa[4], oa[5], oa[6], oa[7]));
    st16(d + 32, make_uint4(ob[0], ob[1], ob[2], ob[3]));
    st16(d + 40, make_uint4(ob[4], ob[5], ob[6], ob[7]));
}

// dst[64][LDS] = rows row0..row0+64 of src as they are; rows past T become zeros. All 128 threads.
__device__ __forceinline__ void load_raw_tile(bf16* __restrict__ dst, const bf16* __restrict__ src, int D,
                                              int row0, int T) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int idx = threadIdx.x + i * NTHREADS;
        const int r = idx >> 3, c = (idx & 7) * 8;
        uint4 u = make_uint4(0u, 0u, 0u, 0u);
        if (row0 + r < T) u = ld16(src + (size_t)(row0 + r) * D + c);
        st16(dst + r * LDS + c, u);
    }
}

// The A fragments (16 rows x 64 columns, 4 k-steps) of this warp's own 16 rows of a shared tile.
__device__ __forceinline__ void load_a_frags(u32 f[4][4], const bf16* tile) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) ptx::ldmatrix_x4(f[kk], tile + (warp * 16 + (lane & 15)) * LDS + kk * 16 + (lane >> 4) * 8);
}

// acc[16 x 64] += A[16 x 64] · Mᵀ where M is a shared tile [64 rows = n][64 cols = k] (M row-major = Bᵀ):
// used for Q·Kᵀ, dO·Vᵀ, K·Qᵀ and V·dOᵀ.
__device__ __forceinline__ void mma_abt(float acc[8][4], const u32 a[4][4], const bf16* m) {
    const int lane = threadIdx.x & 31;
    const bf16* base = m + ((lane & 7) + ((lane >> 4) << 3)) * LDS + ((lane >> 3) & 1) * 8;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
        for (int nb2 = 0; nb2 < 4; ++nb2) {
            u32 b[4];
            ptx::ldmatrix_x4(b, base + nb2 * 16 * LDS + kk * 16);
            mma(acc[2 * nb2], a[kk], b[0], b[1]);
            mma(acc[2 * nb2 + 1], a[kk], b[2], b[3]);
        }
    }
}

// acc[16 x 64] += P[16 x 64] · M where P comes as an fp32 accumulator (mma C layout, rounded to bf16 here) and
// M is a shared tile [64 rows = k][64 cols = n]: used for P·V, dS·K, Pᵀ·dO and dSᵀ·Q.
__device__ __forceinline__ void mma_pm(float acc[8][4], const float p[8][4], const bf16* m) {
    const int lane = threadIdx.x & 31;
    const bf16* base = m + ((lane & 7) + ((lane >> 3) & 1) * 8) * LDS + (lane >> 4) * 8;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
        u32 a[4];
        a[0] = pack_bf16(p[2 * kk][0], p[2 * kk][1]);
        a[1] = pack_bf16(p[2 * kk][2], p[2 * kk][3]);
        a[2] = pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        a[3] = pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]);
#pragma unroll
        for (int nb2 = 0; nb2 < 4; ++nb2) {
            u32 b[4];
            ptx::ldmatrix_x4_trans(b, base + kk * 16 * LDS + nb2 * 16);
            mma(acc[2 * nb2], a, b[0], b[1]);
            mma(acc[2 * nb2 + 1], a, b[2], b[3]);
        }
    }
}

__device__ __forceinline__ void zero_acc(float acc[8][4]) {
#pragma unroll
    for (int nb = 0; nb < 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nb][e] = 0.f;
}

// Writes this warp's 16 x 64 accumulator (row g scaled by mul0, row g+8 by mul1) as bf16 to rows
// row0 + warp*16 + [0,16) of dst (rows past T skipped), staged through the warp's own 16 rows of `stage`
// (a [64][LDS] shared tile no other warp touches at this point) so that global stores are 16 B per lane.
__device__ __forceinline__ void store_acc_bf16(const float acc[8][4], float mul0, float mul1, bf16* stage,
                                               bf16* __restrict__ dst, int D, int row0, int T) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
    bf16* sw = stage + warp * 16 * LDS;
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
        st4(sw + g * LDS + nb * 8 + 2 * tq, pack_bf16(acc[nb][0] * mul0, acc[nb][1] * mul0));
        st4(sw + (g + 8) * LDS + nb * 8 + 2 * tq, pack_bf16(acc[nb][2] * mul1, acc[nb][3] * mul1));
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int rr = (lane >> 3) + 4 * i, c = (lane & 7) * 8, pos = row0 + warp * 16 + rr;
        if (pos < T) st16(dst + (size_t)pos * D + c, ld16(sw + rr * LDS + c));
    }
    __syncwarp();
}

// Backward epilogue of one 64-row tile: acc (per warp, its 16 rows, mma C layout) times `mul` is dL/dz for the
// normalised-rotated rows z. Propagates through RoPE and QK-Norm:
//   dy = rope⁻¹(dz); dscale += dy * n; dn = dy * scale; dx = rstd * (dn - mean(dn) - n * mean(dn * n))
// writes dx (bf16) to rows row0.. of dx_dst (rows past T skipped) and this tile's scale-gradient partial
// (sum over its rows, fixed order) to part[64]. `stagef` is a [64][LDF] f32 shared buffer; all 128 threads.
__device__ __forceinline__ void norm_rope_backward_tile(const float acc[8][4], float mul, float* stagef,
                                                        const bf16* __restrict__ x_src, bf16* __restrict__ dx_dst,
                                                        int D, int row0, int T, const float* __restrict__ scale,
                                                        const float2* __restrict__ rope_cs, float* __restrict__ part) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
    __syncthreads();  // stagef aliases tiles other warps may still be reading
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
        float* s0 = stagef + (warp * 16 + g) * LDF + nb * 8 + 2 * tq;
        s0[0] = acc[nb][0] * mul;
        s0[1] = acc[nb][1] * mul;
        s0[8 * LDF] = acc[nb][2] * mul;
        s0[8 * LDF + 1] = acc[nb][3] * mul;
    }
    __syncthreads();
    const int r = norm_row(), c0 = norm_col0(), pos = row0 + r;
    float xa[16], xb[16], mean, rstd;
    load_row_stats(x_src, D, pos, T, xa, xb, mean, rstd);
    const float2* cs = rope_cs + (size_t)(pos < T ? pos : 0) * 32 + c0;
    float da[16], db[16];  // dz, then dn
    float sum_dn = 0.f, sum_dnn = 0.f;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        const int c = c0 + i;
        const float dza = stagef[r * LDF + c], dzb = stagef[r * LDF + c + 32];
        const float2 t = cs[i];
        const float dya = dza * t.x + dzb * t.y;  // inverse rotation
        const float dyb = dzb * t.x - dza * t.y;
        xa[i] = (xa[i] - mean) * rstd;  // n
        xb[i] = (xb[i] - mean) * rstd;
        da[i] = dya;
        db[i] = dyb;
        const float dna = dya * __ldg(scale + c), dnb = dyb * __ldg(scale + c + 32);
        sum_dn += dna + dnb;
        sum_dnn += dna * xa[i] + dnb * xb[i];
    }
    sum_dn += __shfl_xor_sync(FULL, sum_dn, 1);
    sum_dnn += __shfl_xor_sync(FULL, sum_dnn, 1);
    const float m_dn = sum_dn * (1.f / HD), m_dnn = sum_dnn * (1.f / HD);
    u32 oa[8], ob[8];
#pragma unroll
    for (int i = 0; i < 16; i += 2) {
        float ga[2], gb[2];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int c = c0 + i + j;
            const float dna = da[i + j] * __ldg(scale + c), dnb = db[i + j] * __ldg(scale + c + 32);
            ga[j] = rstd * (dna - m_dn - xa[i + j] * m_dnn);
            gb[j] = rstd * (dnb - m_dn - xb[i + j] * m_dnn);
        }
        oa[i / 2] = pack_bf16(ga[0], ga[1]);
        ob[i / 2] = pack_bf16(gb[0], gb[1]);
    }
    if (pos < T) {
        bf16* d = dx_dst + (size_t)pos * D + c0;
        st16(d, make_uint4(oa[0], oa[1], oa[2], oa[3]));
        st16(d + 8, make_uint4(oa[4], oa[5], oa[6], oa[7]));
        st16(d + 32, make_uint4(ob[0], ob[1], ob[2], ob[3]));
        st16(d + 40, make_uint4(ob[4], ob[5], ob[6], ob[7]));
    }
    __syncthreads();  // every thread has read its dz from stagef
    const bool valid = pos < T;  // rows past T have n = 0 already; keep them out explicitly
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        stagef[r * LDF + c0 + i] = valid ? da[i] * xa[i] : 0.f;
        stagef[r * LDF + c0 + 32 + i] = valid ? db[i] * xb[i] : 0.f;
    }
    __syncthreads();
    if (threadIdx.x < HD) {
        float s = 0.f;
        for (int rr = 0; rr < TILE; ++rr) s += stagef[rr * LDF + threadIdx.x];
        part[threadIdx.x] = s;
    }
}

// dK, dV for key tile kt (blocks [0, nt)).
__device__ __forceinline__ void backward_dkdv(unsigned char* smem, int kt, int nt, bf16* __restrict__ dk,
                                              bf16* __restrict__ dv, float* __restrict__ part_k,
                                              const bf16* __restrict__ dout, const bf16* __restrict__ q,
                                              const bf16* __restrict__ k, const bf16* __restrict__ v,
                                              const float* __restrict__ lse_bh, const float* __restrict__ delta_bh,
                                              const float* __restrict__ q_scale, const float* __restrict__ k_scale,
                                              const float2* __restrict__ rope_cs, int T, int D) {
    bf16* Ks = reinterpret_cast<bf16*>(smem);
    bf16* Vs = Ks + TILE_ELEMS;
    bf16* Qs = Vs + TILE_ELEMS;
    bf16* dOs = Qs + TILE_ELEMS;
    float* lse_s = reinterpret_cast<float*>(dOs + TILE_ELEMS);  // log2 domain
    float* dlt_s = lse_s + TILE;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;

    load_norm_rope_tile(Ks, k, D, kt * TILE, T, k_scale, rope_cs);
    load_raw_tile(Vs, v, D, kt * TILE, T);
    __syncthreads();
    u32 kf[4][4], vf[4][4];
    load_a_frags(kf, Ks);
    load_a_frags(vf, Vs);
    const int key0 = kt * TILE + warp * 16 + g, key1 = key0 + 8;

    float dvacc[8][4], dkacc[8][4];
    zero_acc(dvacc);
    zero_acc(dkacc);
    for (int qt = kt; qt < nt; ++qt) {
        __syncthreads();  // the previous Q, dO tiles are consumed
        load_norm_rope_tile(Qs, q, D, qt * TILE, T, q_scale, rope_cs);
        load_raw_tile(dOs, dout, D, qt * TILE, T);
        if (threadIdx.x < TILE) {
            const int pos = qt * TILE + threadIdx.x;
            // Rows past T: P = exp2(-inf) = 0 and dO = 0, so they contribute nothing.
            lse_s[threadIdx.x] = pos < T ? lse_bh[pos] * LOG2E : INF_F;
            dlt_s[threadIdx.x] = pos < T ? delta_bh[pos] : 0.f;
        }
        __syncthreads();

        float pt[8][4];  // Sᵀ, then Pᵀ (keys x queries)
        zero_acc(pt);
        mma_abt(pt, kf, Qs);
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int qc = nb * 8 + 2 * tq + (e & 1);
                float p = exp2f(pt[nb][e] * SCALE_LOG2 - lse_s[qc]);
                if (qt == kt && (e < 2 ? key0 : key1) > qt * TILE + qc) p = 0.f;
                pt[nb][e] = p;
            }
        }
        float dst[8][4];  // dPᵀ, then dSᵀ
        zero_acc(dst);
        mma_abt(dst, vf, dOs);
        mma_pm(dvacc, pt, dOs);
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int qc = nb * 8 + 2 * tq + (e & 1);
                dst[nb][e] = pt[nb][e] * (dst[nb][e] - dlt_s[qc]);
            }
        }
        mma_pm(dkacc, dst, Qs);
    }
    // The warp's own Vs rows were read only by this warp (into vf): reuse them as the store stage.
    store_acc_bf16(dvacc, 1.f, 1.f, Vs, dv, D, kt * TILE, T);
    norm_rope_backward_tile(dkacc, SCALE, reinterpret_cast<float*>(Qs), k, dk, D, kt * TILE, T, k_scale, rope_cs,
                            part_k);
}

// dQ for query tile qt (blocks [nt, 2nt)).
__device__ __forceinline__ void backward_dq(unsigned char* smem, int qt, bf16* __restrict__ dq,
                                            float* __restrict__ part_q, const bf16* __restrict__ dout,
                                            const bf16* __restrict__ q, const bf16* __restrict__ k,
                                            const bf16* __restrict__ v, const float* __restrict__ lse_bh,
                                            const float* __restrict__ delta_bh, const float* __restrict__ q_scale,
                                            const float* __restrict__ k_scale, const float2* __restrict__ rope_cs,
                                            int T, int D) {
    bf16* Qs = reinterpret_cast<bf16*>(smem);
    bf16* dOs = Qs + TILE_ELEMS;
    bf16* Ks = dOs + TILE_ELEMS;
    bf16* Vs = Ks + TILE_ELEMS;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;

    load_norm_rope_tile(Qs, q, D, qt * TILE, T, q_scale, rope_cs);
    load_raw_tile(dOs, dout, D, qt * TILE, T);
    __syncthreads();
    u32 qf[4][4], of[4][4];
    load_a_frags(qf, Qs);
    load_a_frags(of, dOs);
    const int row0 = qt * TILE + warp * 16 + g, row1 = row0 + 8;
    const float ls0 = row0 < T ? lse_bh[row0] * LOG2E : INF_F, ls1 = row1 < T ? lse_bh[row1] * LOG2E : INF_F;
    const float dl0 = row0 < T ? delta_bh[row0] : 0.f, dl1 = row1 < T ? delta_bh[row1] : 0.f;

    float dqacc[8][4];
    zero_acc(dqacc);
    for (int kt = 0; kt <= qt; ++kt) {
        __syncthreads();  // the previous K, V tiles are consumed
        load_norm_rope_tile(Ks, k, D, kt * TILE, T, k_scale, rope_cs);
        load_raw_tile(Vs, v, D, kt * TILE, T);
        __syncthreads();

        float p[8][4];
        zero_acc(p);
        mma_abt(p, qf, Ks);
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float x = exp2f(p[nb][e] * SCALE_LOG2 - (e < 2 ? ls0 : ls1));
                if (kt == qt && kt * TILE + nb * 8 + 2 * tq + (e & 1) > (e < 2 ? row0 : row1)) x = 0.f;
                p[nb][e] = x;
            }
        }
        float ds[8][4];  // dP, then dS
        zero_acc(ds);
        mma_abt(ds, of, Vs);
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
            for (int e = 0; e < 4; ++e) ds[nb][e] = p[nb][e] * (ds[nb][e] - (e < 2 ? dl0 : dl1));
        }
        mma_pm(dqacc, ds, Ks);
    }
    norm_rope_backward_tile(dqacc, SCALE, reinterpret_cast<float*>(Ks), q, dq, D, qt * TILE, T, q_scale, rope_cs,
                            part_q);
}

}  // namespace attn

extern "C" __global__ void __launch_bounds__(256) rope_table_init(float2* __restrict__ cs, int T) {
    using namespace attn;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= T * 32) return;
    const int pos = idx >> 5, i = idx & 31;
    const double theta = pow(10000.0, -(double)(2 * i) / 64.0);
    const double ang = (double)pos * theta;
    cs[idx] = make_float2((float)cos(ang), (float)sin(ang));
}

extern "C" __global__ void __launch_bounds__(attn::NTHREADS, 4) attention_forward(__nv_bfloat16* __restrict__ out, float* __restrict__ lse, const __nv_bfloat16* __restrict__ q,
                      const __nv_bfloat16* __restrict__ k, const __nv_bfloat16* __restrict__ v, const float* __restrict__ q_scale,
                      const float* __restrict__ k_scale, const float2* __restrict__ rope_cs, int B, int T, int H) {
    using namespace attn;
    (void)B;  // the grid carries the batch
    __align__(16) __shared__ bf16 Qs[TILE_ELEMS];
    __align__(16) __shared__ bf16 Ks[TILE_ELEMS];
    __align__(16) __shared__ bf16 Vs[TILE_ELEMS];
    const int nt = (T + TILE - 1) / TILE;
    const int qt = nt - 1 - blockIdx.x;  // longest rows first
    const int h = blockIdx.y, b = blockIdx.z, D = H * HD;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
    const size_t base = (size_t)b * T * D + (size_t)h * HD;

    load_norm_rope_tile(Qs, q + base, D, qt * TILE, T, q_scale, rope_cs);
    __syncthreads();
    u32 qf[4][4];
    load_a_frags(qf, Qs);

    const int row0 = qt * TILE + warp * 16 + g, row1 = row0 + 8;
    float o[8][4];
    zero_acc(o);
    float m0 = -INF_F, m1 = -INF_F, l0 = 0.f, l1 = 0.f;  // running max (exp2 domain), partial row sums

    for (int kt = 0; kt <= qt; ++kt) {
        __syncthreads();  // the previous K, V tiles are consumed
        load_norm_rope_tile(Ks, k + base, D, kt * TILE, T, k_scale, rope_cs);
        load_raw_tile(Vs, v + base, D, kt * TILE, T);
        __syncthreads();

        float s[8][4];
        zero_acc(s);
        mma_abt(s, qf, Ks);

        float mx0 = -INF_F, mx1 = -INF_F;
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float x = s[nb][e] * SCALE_LOG2;
                if (kt == qt) {
                    const int key = kt * TILE + nb * 8 + 2 * tq + (e & 1);
                    if (key > (e < 2 ? row0 : row1)) x = -INF_F;
                }
                s[nb][e] = x;
            }
            mx0 = fmaxf(mx0, fmaxf(s[nb][0], s[nb][1]));
            mx1 = fmaxf(mx1, fmaxf(s[nb][2], s[nb][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(FULL, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(FULL, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(FULL, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(FULL, mx1, 2));
        // Every row sees key 0 in tile 0, so the new maxima are finite from the first tile on.
        const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
        const float a0 = exp2f(m0 - n0), a1 = exp2f(m1 - n1);
        m0 = n0;
        m1 = n1;
        l0 *= a0;
        l1 *= a1;
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
            s[nb][0] = exp2f(s[nb][0] - n0);
            s[nb][1] = exp2f(s[nb][1] - n0);
            s[nb][2] = exp2f(s[nb][2] - n1);
            s[nb][3] = exp2f(s[nb][3] - n1);
            l0 += s[nb][0] + s[nb][1];
            l1 += s[nb][2] + s[nb][3];
            o[nb][0] *= a0;
            o[nb][1] *= a0;
            o[nb][2] *= a1;
            o[nb][3] *= a1;
        }
        mma_pm(o, s, Vs);
    }

    l0 += __shfl_xor_sync(FULL, l0, 1);
    l0 += __shfl_xor_sync(FULL, l0, 2);
    l1 += __shfl_xor_sync(FULL, l1, 1);
    l1 += __shfl_xor_sync(FULL, l1, 2);
    // The warp's own Qs rows were read only by this warp (into qf): reuse them as the store stage.
    store_acc_bf16(o, 1.f / l0, 1.f / l1, Qs, out + base, D, qt * TILE, T);
    if (tq == 0) {
        float* lrow = lse + ((size_t)b * H + h) * T;
        if (row0 < T) lrow[row0] = (m0 + log2f(l0)) * LN2;
        if (row1 < T) lrow[row1] = (m1 + log2f(l1)) * LN2;
    }
}

extern "C" __global__ void __launch_bounds__(256) attention_backward_prep(float* __restrict__ delta, const __nv_bfloat16* __restrict__ out, const __nv_bfloat16* __restrict__ dout,
                            int B, int T, int H) {
    using namespace attn;
    const long long gid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long hr = gid >> 3;  // (row, head) pair, 8 threads each
    const int sub = (int)(gid & 7);
    const long long total = (long long)B * T * H;
    const int D = H * HD;
    float s = 0.f;
    long long row = 0;
    int h = 0;
    if (hr < total) {
        row = hr / H;
        h = (int)(hr % H);
        const size_t off = (size_t)row * D + (size_t)h * HD + sub * 8;
        float a[8], c[8];
        unpack8(ld16(out + off), a);
        unpack8(ld16(dout + off), c);
#pragma unroll
        for (int i = 0; i < 8; ++i) s += a[i] * c[i];
    }
    s += __shfl_xor_sync(FULL, s, 4);
    s += __shfl_xor_sync(FULL, s, 2);
    s += __shfl_xor_sync(FULL, s, 1);
    if (hr < total && sub == 0) {
        const long long bb = row / T, t = row % T;
        delta[((size_t)bb * H + h) * T + t] = s;
    }
}

extern "C" __global__ void __launch_bounds__(attn::NTHREADS, 2) attention_backward(__nv_bfloat16* __restrict__ dq, __nv_bfloat16* __restrict__ dk, __nv_bfloat16* __restrict__ dv,
                       float* __restrict__ dscale_part, const __nv_bfloat16* __restrict__ dout, const __nv_bfloat16* __restrict__ q,
                       const __nv_bfloat16* __restrict__ k, const __nv_bfloat16* __restrict__ v, const float* __restrict__ lse,
                       const float* __restrict__ delta, const float* __restrict__ q_scale,
                       const float* __restrict__ k_scale, const float2* __restrict__ rope_cs, int B, int T, int H) {
    using namespace attn;
    // 4 bf16 tiles + lse and delta of one query tile (f32); the f32 staging tile of the epilogue aliases two
    // tiles (64 * LDF * 4 = 17408 <= 2 * TILE_ELEMS * 2 = 18432 bytes).
    __align__(16) __shared__ unsigned char smem[4 * TILE_ELEMS * 2 + 2 * TILE * 4];
    const int nt = (T + TILE - 1) / TILE;
    const int h = blockIdx.y, b = blockIdx.z, D = H * HD;
    const size_t base = (size_t)b * T * D + (size_t)h * HD;
    const size_t bh = (size_t)b * H + h;
    const float* lse_bh = lse + bh * T;
    const float* delta_bh = delta + bh * T;
    const size_t nparts = (size_t)B * H * nt;
    if ((int)blockIdx.x < nt) {
        const int kt = blockIdx.x;  // longest loop (kt = 0) first
        backward_dkdv(smem, kt, nt, dk + base, dv + base, dscale_part + (nparts + bh * nt + kt) * HD, dout + base,
                      q + base, k + base, v + base, lse_bh, delta_bh, q_scale, k_scale, rope_cs, T, D);
    } else {
        const int qt = 2 * nt - 1 - (int)blockIdx.x;  // longest loop (qt = nt - 1) first
        backward_dq(smem, qt, dq + base, dscale_part + (bh * nt + qt) * HD, dout + base, q + base, k + base,
                    v + base, lse_bh, delta_bh, q_scale, k_scale, rope_cs, T, D);
    }
}

extern "C" __global__ void __launch_bounds__(1024) qk_norm_scale_grad_reduce(float* __restrict__ dq_scale, float* __restrict__ dk_scale,
                              const float* __restrict__ dscale_part, int nparts) {
    using namespace attn;
    __shared__ float red[16][HD];
    const float* p = dscale_part + (size_t)blockIdx.x * nparts * HD;
    const int c = threadIdx.x & (HD - 1), grp = threadIdx.x >> 6;
    float s = 0.f;
    for (int i = grp; i < nparts; i += 16) s += p[(size_t)i * HD + c];
    red[grp][c] = s;
    __syncthreads();
    if (threadIdx.x < HD) {
        float t = 0.f;
#pragma unroll
        for (int j = 0; j < 16; ++j) t += red[j][threadIdx.x];
        float* dst = blockIdx.x == 0 ? dq_scale : dk_scale;
        dst[threadIdx.x] += t;
    }
}

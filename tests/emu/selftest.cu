// selftest.cu — test-only kernels that exercise the emulator (tests/emu_selftest.rs): tensor-core and
// ldmatrix wrappers against documented layouts, cp.async, barriers, shuffles and votes.
#include "common.cuh"
#include "ptx.cuh"

// One warp: lane l loads its A (4 regs), B (2 regs), C (4 f32) fragments from frag arrays laid out
// [lane][reg] and writes D = A·B + C the same way.
extern "C" __global__ void emu_test_mma(const unsigned* a_32x4, const unsigned* b_32x2, const float* c_32x4,
                                        float* d_32x4) {
  const unsigned l = threadIdx.x;
  unsigned a[4] = {a_32x4[l * 4], a_32x4[l * 4 + 1], a_32x4[l * 4 + 2], a_32x4[l * 4 + 3]};
  unsigned b[2] = {b_32x2[l * 2], b_32x2[l * 2 + 1]};
  float c[4] = {c_32x4[l * 4], c_32x4[l * 4 + 1], c_32x4[l * 4 + 2], c_32x4[l * 4 + 3]};
  float d[4];
  ptx::mma_m16n8k16_bf16(d, a, b, c);
  for (int i = 0; i < 4; ++i) d_32x4[l * 4 + i] = d[i];
}

// One warp: four 8x8 u16 matrices m_4x8x8 copied to shared memory (rows padded to 24 elements, 48 bytes,
// keeping 16-byte alignment), then ldmatrix .x{nmat} (trans or not); out_32x4[lane][i] = register i.
extern "C" __global__ void emu_test_ldmatrix(const unsigned short* m_4x8x8, unsigned* out_32x4, int nmat,
                                             int trans) {
  __shared__ __align__(16) unsigned short s[4 * 8 * 24];
  const unsigned l = threadIdx.x;
  for (int i = l; i < 4 * 8 * 8; i += 32) s[(i / 8) * 24 + i % 8] = m_4x8x8[i];
  __syncthreads();
  const unsigned short* row = &s[(l / 8) * 8 * 24 + (l % 8) * 24];
  unsigned r[4] = {0xdeadbeef, 0xdeadbeef, 0xdeadbeef, 0xdeadbeef};
  if (nmat == 1) {
    ptx::ldmatrix_x1(r[0], row);
  } else if (nmat == 2) {
    unsigned r2[2];
    if (trans) ptx::ldmatrix_x2_trans(r2, row); else ptx::ldmatrix_x2(r2, row);
    r[0] = r2[0];
    r[1] = r2[1];
  } else {
    if (trans) ptx::ldmatrix_x4_trans(r, row); else ptx::ldmatrix_x4(r, row);
  }
  for (int i = 0; i < 4; ++i) out_32x4[l * 4 + i] = r[i];
}

// One warp computes C_16x8 = A_16x16 · B_16x8 (both row-major bf16 in global memory) the usual way:
// A through ldmatrix.x4, B through ldmatrix.x2.trans, one mma, C written row-major f32.
extern "C" __global__ void emu_test_ldmatrix_mma(const bf16* a_16x16, const bf16* b_16x8, float* c_16x8) {
  __shared__ __align__(16) bf16 sa[16 * 16];
  __shared__ __align__(16) bf16 sb[16 * 8];
  const unsigned l = threadIdx.x;
  for (int i = l; i < 256; i += 32) sa[i] = a_16x16[i];
  for (int i = l; i < 128; i += 32) sb[i] = b_16x8[i];
  __syncthreads();
  unsigned a[4], b[2];
  // x4 matrices: (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
  ptx::ldmatrix_x4(a, &sa[((l & 7) + ((l >> 3) & 1) * 8) * 16 + (l >> 4) * 8]);
  // x2.trans matrices: B rows k 0-7 and k 8-15 (lanes 0-15 give the addresses)
  ptx::ldmatrix_x2_trans(b, &sb[(l & 15) * 8]);
  float c[4] = {0.f, 0.f, 0.f, 0.f}, d[4];
  ptx::mma_m16n8k16_bf16(d, a, b, c);
  const unsigned g = l >> 2, t = l & 3;
  c_16x8[g * 8 + 2 * t] = d[0];
  c_16x8[g * 8 + 2 * t + 1] = d[1];
  c_16x8[(g + 8) * 8 + 2 * t] = d[2];
  c_16x8[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// cp.async into dynamic shared memory (n floats, n % 4 == 0, one block): early_n gets what shared memory
// held before the wait (the emulator defers the copy, so the 0xFF poison = NaN), out_n after it. The last
// 16-byte chunk is loaded with zfill of `tail_bytes` bytes.
extern "C" __global__ void emu_test_cp_async(const float* src_n, float* early_n, float* out_n, int n,
                                             int tail_bytes) {
  ISOFLOP_DYN_SMEM(float, s);
  const int chunks = n / 4;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    if (c == chunks - 1)
      ptx::cp_async_16_zfill(&s[c * 4], &src_n[c * 4], unsigned(tail_bytes));
    else
      ptx::cp_async_16(&s[c * 4], &src_n[c * 4]);
  }
  ptx::cp_async_commit();
  for (int c = threadIdx.x; c < chunks; c += blockDim.x)
    for (int j = 0; j < 4; ++j) early_n[c * 4 + j] = s[c * 4 + j];
  ptx::cp_async_wait<0>();
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) out_n[i] = s[i];
}

// Block-wide inclusive prefix sum (Hillis-Steele, double-buffered, barriers between steps) of one int per
// thread, for every block; plus __syncthreads_count of odd values, written to count_per_block.
extern "C" __global__ void emu_test_scan(const int* in, int* out, int* count_per_block) {
  ISOFLOP_DYN_SMEM(int, s);  // 2 * blockDim.x ints
  const unsigned n = blockDim.x * blockDim.y, t = threadIdx.y * blockDim.x + threadIdx.x;
  const unsigned blk = blockIdx.y * gridDim.x + blockIdx.x;
  int v = in[blk * n + t];
  int* cur = s;
  int* nxt = s + n;
  cur[t] = v;
  __syncthreads();
  for (unsigned off = 1; off < n; off <<= 1) {
    nxt[t] = cur[t] + (t >= off ? cur[t - off] : 0);
    __syncthreads();
    int* tmp = cur;
    cur = nxt;
    nxt = tmp;
  }
  out[blk * n + t] = cur[t];
  int cnt = __syncthreads_count(v & 1);
  if (t == 0) count_per_block[blk] = cnt;
}

// Warp primitives on one int per thread (blockDim.x a multiple of 32): 10 outputs per thread.
extern "C" __global__ void emu_test_warp(const int* in, int* out_nx10) {
  const unsigned t = threadIdx.x, lane = t & 31;
  int v = in[t];
  int* o = out_nx10 + t * 10;
  o[0] = __shfl_sync(0xffffffffu, v, (lane * 7 + 3) & 31);
  o[1] = __shfl_up_sync(0xffffffffu, v, 3);
  o[2] = __shfl_down_sync(0xffffffffu, v, 5);
  o[3] = __shfl_xor_sync(0xffffffffu, v, 9);
  o[4] = __shfl_sync(0xffffffffu, v, 2, 8);      // width 8: lane 2 of each group of 8
  o[5] = __shfl_down_sync(0xffffffffu, v, 3, 16);  // width 16
  o[6] = int(__ballot_sync(0xffffffffu, v & 1));
  o[7] = __reduce_add_sync(0xffffffffu, v);
  o[8] = __reduce_max_sync(0xffffffffu, v);
  // A collective among the lower half only (its own mask), then the full-warp float sum helper.
  int h = 0;
  if (lane < 16) h = __shfl_xor_sync(0x0000ffffu, v, 1);
  __syncwarp();
  o[9] = h + int(isoflop::warp_sum(float(v & 1023)));
}

// Divergent collectives in one warp: lanes 0-15 shuffle while 16-31 wait at __syncthreads. The emulator
// must report a deadlock (on the GPU this hangs or is undefined).
extern "C" __global__ void emu_test_divergent(int* out) {
  int v = int(threadIdx.x);
  if (threadIdx.x < 16)
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  else
    __syncthreads();
  out[threadIdx.x] = v;
}

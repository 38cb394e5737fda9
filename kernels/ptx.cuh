// ptx.cuh — the only place where kernels reach PTX-level instructions (tensor cores, ldmatrix, cp.async).
//
// Why: kernels must also run under the CPU emulator (tests/emu/cuda_emu.h). Every instruction that has no
// C++ equivalent is a small inline wrapper here: on the GPU the real instruction (inline asm), under
// ISOFLOP_EMU an emulation of the PTX ISA's documented semantics (tests/emu/ptx_emu.h, same signatures).
// No raw inline PTX anywhere else in kernels/.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16" with .bf16), lane = threadIdx % 32,
// g = lane >> 2 (group id), t = lane & 3 (thread id in group). Each 32-bit register holds two bf16, the
// lower column/row index in the lower 16 bits.
//   A (16x16, row-major):  a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]
//                          a[2] = A[g][2t+8..2t+9]  a[3] = A[g+8][2t+8..2t+9]
//   B (16x8, "col"):       b[0] = B[2t..2t+1][g]    b[1] = B[2t+8..2t+9][g]
//   C, D (16x8, f32):      c[0] = C[g][2t]  c[1] = C[g][2t+1]  c[2] = C[g+8][2t]  c[3] = C[g+8][2t+1]
// ldmatrix .x1/.x2/.x4 loads 1/2/4 8x8 matrices of 16-bit elements from shared memory: lanes 8i..8i+7
// give the 16-byte-aligned addresses of the 8 rows of matrix i; register r[i] of lane l receives row l/4,
// elements 2(l%4) and 2(l%4)+1 of matrix i (with .trans: elements [2(l%4)][l/4] and [2(l%4)+1][l/4]).
// mma.sync and ldmatrix are warp-collective: all 32 lanes of the warp must execute them together.
#pragma once

#include <cuda_bf16.h>

#ifdef ISOFLOP_EMU
#include "ptx_emu.h"
#else
namespace ptx {

// D = A·B + C for one m16n8k16 tile: bf16 inputs, f32 accumulation (mma.sync.aligned.m16n8k16.row.col).
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                                                  const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
}

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16
__device__ __forceinline__ void ldmatrix_x1(unsigned& r0, const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r0) : "r"(smem_addr(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x2(unsigned (&r)[2], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(unsigned (&r)[2], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem_row)));
}

// cp.async.cg.shared.global, 16 bytes (both addresses 16-byte aligned), bypassing L1.
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem_dst)), "l"(gmem_src));
}
// Same, reading only src_bytes (0..16) from global memory and zero-filling the rest (src_bytes == 0: the
// source is not read at all, so it may point anywhere valid-looking, e.g. the tensor's base).
__device__ __forceinline__ void cp_async_16_zfill(void* smem_dst, const void* gmem_src, unsigned src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem_dst)), "l"(gmem_src),
               "r"(src_bytes));
}
// cp.async.commit_group: close the group of copies issued so far by this thread.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// cp.async.wait_group N: wait until at most N of this thread's committed groups are still pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
// cp.async.wait_all: wait for every copy this thread issued (committed or not).
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::); }

// ex2.approx.ftz.f32: 2^x, about 2 ulp (the emulation uses exp2f).
__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace ptx
#endif

namespace ptx {
// Two floats rounded to bf16 (nearest even) packed in one register, `lo` in the lower 16 bits: the
// operand format of mma_m16n8k16_bf16. Plain C++ on both paths.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<unsigned*>(&h);
}
}  // namespace ptx

// common.cuh — helpers shared by the kernels in this folder (block reductions, bf16 conversions, dynamic
// shared memory). Plain CUDA C++: it compiles with NVRTC for the GPU and with g++ under the CPU emulator
// (tests/emu/cuda_emu.h, force-included with -DISOFLOP_EMU).
//
// Every reduction here combines values in a fixed order that depends only on blockDim, never on timing, so
// results are bit-for-bit reproducible run to run.
#pragma once

#include <cuda_bf16.h>

// Dynamic shared memory (the launch's shmem bytes) as `T* name`, 16-byte aligned. Use this instead of
// `extern __shared__ T name[];` (which the emulator cannot express).
#ifdef ISOFLOP_EMU
#define ISOFLOP_DYN_SMEM(T, name) T* name = reinterpret_cast<T*>(::emu::g_sched->dyn_smem)
#else
#define ISOFLOP_DYN_SMEM(T, name)                                  \
  extern __shared__ __align__(16) unsigned char isoflop_dyn_smem_[]; \
  T* name = reinterpret_cast<T*>(isoflop_dyn_smem_)
#endif

typedef __nv_bfloat16 bf16;

namespace isoflop {

constexpr unsigned FULL_MASK = 0xffffffffu;

// Butterfly sum over the 32 lanes; every lane gets the same total (same order in every lane).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
  return v;
}

// The block reductions below: reduce each warp with `Warp`, then the per-warp results (lanes past the
// last warp hold `identity`) with `Warp` again. Same contract as block_sum.
template <typename T, T (*Warp)(T)>
__device__ __forceinline__ T block_reduce(T v, T* scratch, T identity) {
  const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = Warp(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T t = lane < nwarps ? scratch[lane] : identity;
  return Warp(t);
}

// Sum over the block, result returned to every thread. blockDim.x must be a multiple of 32 (<= 1024) and
// blockDim.y == blockDim.z == 1. `scratch` is __shared__ float[32]. Contains two __syncthreads: call it
// from all threads of the block.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  return block_reduce<float, warp_sum>(v, scratch, 0.f);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  return block_reduce<float, warp_max>(v, scratch, __uint_as_float(0xff800000u));
}

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}
// Same contract as block_sum; `scratch` is __shared__ double[32].
__device__ __forceinline__ double block_sum_f64(double v, double* scratch) {
  return block_reduce<double, warp_sum_f64>(v, scratch, 0.0);
}

// Grid-stride loop over [0, n): any grid size works; results never depend on it.
#define ISOFLOP_GRID_STRIDE(i, n)                                                      \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); \
       i += (long long)gridDim.x * blockDim.x)

__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16(x); }  // nearest even
// Load/store helpers so that one template serves f32 and bf16 tensors.
__device__ __forceinline__ float load_f(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load_f(const bf16* p, long long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store_f(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f(bf16* p, long long i, float v) { p[i] = __float2bfloat16(v); }

}  // namespace isoflop

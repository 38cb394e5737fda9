// oob.cu — test-only kernels with out-of-bounds accesses ON PURPOSE, for the AddressSanitizer build of the
// emulator (tests/emu_selftest.rs): each must be reported, never pass silently.
#include "common.cuh"

// Static shared memory: 32 slots, thread 31 writes slot 32.
extern "C" __global__ void emu_oob_static_smem(float* out) {
  __shared__ float s[32];
  s[threadIdx.x + 1] = float(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

// Dynamic shared memory: blockDim.x floats requested, thread blockDim.x-1 writes one past the end.
extern "C" __global__ void emu_oob_dyn_smem(float* out) {
  ISOFLOP_DYN_SMEM(float, s);
  s[threadIdx.x + 1] = 1.f;
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

// Global memory: n elements, writes element n.
extern "C" __global__ void emu_oob_global(float* out_n, int n) {
  out_n[threadIdx.x + 1] = float(n);
}

// In bounds: the control that must pass under the sanitizers.
extern "C" __global__ void emu_inbounds(float* out_n, int n) {
  if (int(threadIdx.x) < n) out_n[threadIdx.x] = float(threadIdx.x);
}

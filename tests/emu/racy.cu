// racy.cu — test-only kernels for the emulator's race exposure (tests/emu_selftest.rs): reversing an array
// through shared memory, once with the __syncthreads between the write and the read, once without.
#include "common.cuh"

// One block of n threads; dynamic shared memory n floats.
extern "C" __global__ void emu_reverse_synced(const float* in, float* out) {
  ISOFLOP_DYN_SMEM(float, s);
  const unsigned t = threadIdx.x, n = blockDim.x;
  s[t] = in[t];
  __syncthreads();
  out[t] = s[n - 1 - t];
}

// BUG ON PURPOSE: no barrier between the shared-memory write and the read of another thread's slot.
extern "C" __global__ void emu_reverse_racy(const float* in, float* out) {
  ISOFLOP_DYN_SMEM(float, s);
  const unsigned t = threadIdx.x, n = blockDim.x;
  s[t] = in[t];
  out[t] = s[n - 1 - t];
}

//! Tests of the CUDA side without a GPU, and with one when present: the `device_*` modules run every case on
//! the emulated device (the kernels of `kernels/*.cu` under the CPU emulator of `tests/emu`) and on GPU 0
//! too when there is one (`ISOFLOP_TEST_DEVICES`, see [`util::common`]); the others check the emulator
//! itself, the NVRTC builds and the kernel bench's launcher on the emulated device. One test binary
//! (`cargo test --release --test device`); `bench/gpu-suite.sh` runs its `device_` tests on a GPU.

mod device_batch;
mod device_blas;
mod device_kernels;
mod device_memory;
mod device_train;
mod emu_selftest;
mod kernel_bench_emulated;
mod nvrtc_build;
mod nvrtc_compile;
mod util;

//! The CUDA backend: hand-written kernels (`kernels/*.cu`) compiled at run time with NVRTC and loaded
//! through cudarc, matrix products through cuBLASLt, the whole training step on the GPU.
//!
//! - [`nvrtc`]: embedded sources, NVRTC options, cubin compilation for the GPU's exact architecture,
//!   the on-disk cubin cache;
//! - [`discover`]: where the CUDA libraries and headers are found at run time (toolkit, PyTorch's
//!   CUDA 13 wheels, a checkout's pinned NVRTC);
//! - [`gpu`]: a panic-free layer over the driver (context, streams, buffers, launches);
//! - [`blas`]: row-major `y = x·W` products and their gradients through cuBLASLt;
//! - [`ops`]: the launch conventions of every kernel (grids, blocks, arguments), shared with the kernel
//!   bench;
//! - [`kernel_bench`], [`kernel_cases`]: the launcher of the per-kernel profiles and their cases
//!   (`cargo bench --bench kernels`);
//! - [`peak`]: the measured bf16 matmul peak of a GPU;
//! - [`layout`]: the device parameter layout (the head padded to an aligned vocabulary);
//! - [`memory`]: the device-memory plan, checked before allocating;
//! - [`backend`]: [`CudaBackend`], the [`crate::backend::Backend`] implementation.
//!
//! Nothing here panics on a machine without a GPU or without the CUDA libraries: every entry point
//! checks for libcuda / libnvrtc / libcublasLt first and returns an error that says what is missing.

pub mod backend;
pub mod blas;
pub mod discover;
pub mod gpu;
pub mod kernel_bench;
pub mod kernel_cases;
pub mod layout;
pub mod memory;
pub mod nvrtc;
pub mod ops;
pub mod peak;

pub use backend::CudaBackend;

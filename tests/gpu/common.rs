//! Shared by the GPU tests (tests/gpu_*.rs): open GPU 0 with the kernels loaded, or say why the test is
//! skipped (only when no GPU is present: with a GPU, any setup failure fails the test), plus buffer
//! helpers that upload host data and read results back.
#![allow(dead_code)]

use half::bf16;
use isoflop::cuda::gpu::{DevBuf, Gpu, KernelParam, Kernels};
use isoflop::cuda::nvrtc;

/// GPU 0 with every kernel loaded.
pub struct Dev {
    /// The GPU.
    pub gpu: Gpu,
    /// Its kernels.
    pub k: Kernels,
}

/// Why there is no GPU, or None when one is present.
pub fn no_gpu_reason() -> Option<String> {
    match isoflop::device::probe_gpus() {
        Ok(g) if !g.is_empty() => None,
        Ok(_) => Some("the CUDA driver reports no GPU".into()),
        Err(why) => Some(why),
    }
}

/// Open GPU 0 and load the kernels; `None` (after printing why) when no GPU is present. Panics with the
/// reason when a GPU is present but cannot be used.
pub fn open(test: &str) -> Option<Dev> {
    if let Some(why) = no_gpu_reason() {
        eprintln!("SKIPPED {test}: no GPU ({why})");
        return None;
    }
    let gpu = Gpu::open(0).unwrap_or_else(|e| panic!("{test}: opening GPU 0: {e}"));
    let images = nvrtc::build_all(
        gpu.cc,
        &nvrtc::find_cuda_include(),
        Some(&nvrtc::cache_dir()),
    )
    .unwrap_or_else(|e| panic!("{test}: building the kernels: {e}"));
    let k = Kernels::load(&gpu, &images).unwrap_or_else(|e| panic!("{test}: loading kernels: {e}"));
    eprintln!(
        "{test}: GPU 0 = {} (sm_{}{}, {} SMs)",
        gpu.name, gpu.cc.0, gpu.cc.1, gpu.sms
    );
    Some(Dev { gpu, k })
}

impl Dev {
    /// f32 buffer holding `x`.
    pub fn f32(&self, x: &[f32]) -> DevBuf<f32> {
        let b = self.gpu.alloc::<f32>(x.len(), "test f32").expect("alloc");
        self.gpu.upload(x, &b).expect("upload");
        b
    }
    /// bf16 buffer holding `x` rounded to bf16.
    pub fn bf16(&self, x: &[f32]) -> DevBuf<bf16> {
        let h: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        self.raw(&h)
    }
    /// Buffer holding `x` as it is.
    pub fn raw<T: Copy>(&self, x: &[T]) -> DevBuf<T> {
        let b = self.gpu.alloc::<T>(x.len(), "test buffer").expect("alloc");
        self.gpu.upload(x, &b).expect("upload");
        b
    }
    /// f32 buffer of NaNs.
    pub fn nan_f32(&self, n: usize) -> DevBuf<f32> {
        self.f32(&vec![f32::NAN; n])
    }
    /// bf16 buffer of NaNs.
    pub fn nan_bf16(&self, n: usize) -> DevBuf<bf16> {
        self.raw(&vec![bf16::NAN; n])
    }
    /// Contents of an f32 buffer.
    pub fn get_f32(&self, b: &DevBuf<f32>) -> Vec<f32> {
        self.gpu.download(b, b.len()).expect("download")
    }
    /// Contents of a bf16 buffer, widened.
    pub fn get_bf16(&self, b: &DevBuf<bf16>) -> Vec<f32> {
        self.gpu
            .download(b, b.len())
            .expect("download")
            .iter()
            .map(|v| v.to_f32())
            .collect()
    }
    /// Contents of any buffer.
    pub fn get<T: Copy + Default>(&self, b: &DevBuf<T>) -> Vec<T> {
        self.gpu.download(b, b.len()).expect("download")
    }
    /// Launch and wait, panicking with the kernel's name on any error (launch or execution).
    pub fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: &[&dyn KernelParam],
    ) {
        self.k
            .launch(&self.gpu.stream, name, grid, block, smem, args)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        self.gpu
            .sync()
            .unwrap_or_else(|e| panic!("{name} failed while running: {e}"));
    }
}

//! Shared by the device tests (tests/device/device_*.rs): the devices a test runs on — the emulated device always
//! (src/cuda's `Gpu::emulated`, the kernels of `kernels/*.cu` under the CPU emulator of tests/emu), plus
//! GPU 0 when one is present — so the same cases run on both and emulation and hardware are compared
//! case by case. Without a GPU, [`devices`] prints one line saying so; with a GPU present, any failure to
//! open it fails the test (never a silent skip).
//!
//! `ISOFLOP_TEST_DEVICES` restricts the set: `gpu` (GPU 0 only; fails without a GPU — the GPU suite of
//! `bench/gpu-suite.sh` uses it, as the emulator cannot be built from a copied test binary), `emulated`
//! (the emulated device only), unset or `all` (both).
//!
//! Also buffer helpers that upload host data and read results back, on either device.
/// The CPU emulator's build and launch harness.
pub use super::harness;

use half::bf16;
use isoflop::cuda::blas::Blas;
use isoflop::cuda::gpu::{self, DevBuf, DevElem, Gpu, KernelExec, KernelParam, Kernels};
use isoflop::cuda::nvrtc;
use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

/// Why there is no GPU, or None when one is present.
pub fn no_gpu_reason() -> Option<String> {
    match isoflop::device::probe_gpus() {
        Ok(g) if !g.is_empty() => None,
        Ok(_) => Some("the CUDA driver reports no GPU".into()),
        Err(why) => Some(why),
    }
}

/// Which devices `ISOFLOP_TEST_DEVICES` asks for: (emulated, GPU). Panics on an unknown value.
fn wanted() -> (bool, bool) {
    match std::env::var("ISOFLOP_TEST_DEVICES").as_deref() {
        Err(_) | Ok("") | Ok("all") => (true, true),
        Ok("gpu") => (false, true),
        Ok("emulated") => (true, false),
        Ok(other) => panic!("ISOFLOP_TEST_DEVICES={other:?}: expected all, gpu or emulated"),
    }
}

/// Whether the emulated device is wanted (for the emulator-only tests, such as the sanitizer runs);
/// prints why not when `ISOFLOP_TEST_DEVICES=gpu` leaves it out.
pub fn emulated_wanted(test: &str) -> bool {
    let (emu, _) = wanted();
    if !emu {
        eprintln!("{test}: emulated device only, not run with ISOFLOP_TEST_DEVICES=gpu");
    }
    emu
}

/// A device to run on, before anything is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The emulated device, with the release build of the emulator.
    Emulated,
    /// GPU `ordinal`.
    Gpu(usize),
}

impl Target {
    /// Whether this is the emulated device.
    pub fn is_emulated(self) -> bool {
        self == Target::Emulated
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Emulated => write!(f, "the emulated device"),
            Target::Gpu(i) => write!(f, "GPU {i}"),
        }
    }
}

/// The targets `test` runs on: the emulated device, plus GPU 0 when present (see the module docs).
/// Prints one line when there is no GPU; panics when `ISOFLOP_TEST_DEVICES=gpu` and there is none.
pub fn targets(test: &str) -> Vec<Target> {
    let (emu, gpu) = wanted();
    let mut t = Vec::new();
    if emu {
        t.push(Target::Emulated);
    }
    if gpu {
        match no_gpu_reason() {
            None => t.push(Target::Gpu(0)),
            Some(why) if emu => {
                eprintln!("{test}: no GPU ({why}): running on the emulated device only")
            }
            Some(why) => panic!("{test}: ISOFLOP_TEST_DEVICES=gpu but no GPU ({why})"),
        }
    }
    t
}

/// The devices `test` runs on, opened with their kernels (see [`targets`]). Panics with the reason when
/// a GPU is present but cannot be used, or the emulated kernels cannot be built.
pub fn devices(test: &str) -> Vec<Dev> {
    targets(test)
        .into_iter()
        .map(|t| match t {
            Target::Emulated => Dev::emulated(),
            Target::Gpu(i) => Dev::open_gpu(test, i),
        })
        .collect()
}

/// Run `body`; a panic in it is re-raised with "`test` on `device`: " in front of its message.
fn naming_device<R>(test: &str, device: &str, body: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(p) => {
            let msg = gpu::panic_message(&*p).unwrap_or_else(|| "panic".into());
            panic!("{test} on {device}: {msg}");
        }
    }
}

/// Run `body` on every device of [`devices`]; a failure names the device it happened on.
pub fn for_each_device(test: &str, mut body: impl FnMut(&mut Dev)) {
    for mut dev in devices(test) {
        let name = dev.gpu.name.clone();
        eprintln!("{test}: on {name}");
        naming_device(test, &name, || body(&mut dev));
    }
}

/// Run `body` on every target of [`targets`] (for tests that open the devices themselves, such as a
/// `CudaBackend`); a failure names the target it happened on.
pub fn for_each_target(test: &str, body: impl FnMut(Target)) {
    for_targets(test, targets(test), body)
}

/// Run `body` on each of `targets` (from [`targets`]); a failure names the target it happened on.
pub fn for_targets(test: &str, targets: Vec<Target>, mut body: impl FnMut(Target)) {
    for t in targets {
        let name = t.to_string();
        eprintln!("{test}: on {name}");
        naming_device(test, &name, || body(t));
    }
}

/// Run `f` with run number `i`'s thread order when `emu` is the emulator of the device (0 forward, 1
/// reverse, then seeded shuffles), so that repeated runs that must agree bit for bit also differ in
/// scheduling; on a GPU (`emu` None) just `f`. Pass `dev.emu`.
pub fn with_schedule<R>(emu: Option<&'static harness::EmuLib>, i: u64, f: impl FnOnce() -> R) -> R {
    let Some(lib) = emu else {
        return f();
    };
    lib.set_schedule(match i {
        0 => harness::Schedule::Forward,
        1 => harness::Schedule::Reverse,
        s => harness::Schedule::Shuffle(s),
    });
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    lib.set_schedule(harness::Schedule::Forward);
    r.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// One kernel argument as src/cuda passes it (pointer to the value, size).
struct Arg(*mut c_void, usize);

impl harness::KernelArg for Arg {
    fn arg_ptr(&self) -> *mut c_void {
        self.0
    }
    fn arg_size(&self) -> usize {
        self.1
    }
}

/// An emulator library as src/cuda's kernel executor (argument sizes checked against each signature).
pub struct EmuExec(pub &'static harness::EmuLib);

impl KernelExec for EmuExec {
    fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shmem: usize,
        args: &[(*mut c_void, usize)],
    ) -> Result<(), String> {
        let args: Vec<Arg> = args.iter().map(|&(p, s)| Arg(p, s)).collect();
        let refs: Vec<&dyn harness::KernelArg> =
            args.iter().map(|a| a as &dyn harness::KernelArg).collect();
        self.0.launch(name, grid, block, shmem, &refs)
    }
}

/// The bf16 `[N, ld]` matrix that `cross_entropy_f32` writes over the first half of each of the N f32 rows
/// of `ld` in `raw` (little-endian: bf16 element 2i is the low half of f32 element i), as f32.
pub fn bf16_rows_in_place(raw: &[f32], ld: usize) -> Vec<f32> {
    raw.chunks(ld)
        .flat_map(|row| {
            (0..ld).map(move |j| {
                let bits = row[j / 2].to_bits();
                let half = if j % 2 == 0 {
                    bits & 0xffff
                } else {
                    bits >> 16
                };
                bf16::from_bits(half as u16).to_f32()
            })
        })
        .collect()
}

/// The release emulator as a kernel executor (for `CudaBackend::new_emulated` and friends).
pub fn emu_exec() -> Arc<dyn KernelExec> {
    Arc::new(EmuExec(harness::kernels()))
}

/// A device (emulated or GPU) with every kernel loaded.
pub struct Dev {
    /// The device.
    pub gpu: Gpu,
    /// Its kernels.
    pub k: Kernels,
    /// The emulator library behind `k` (None on a GPU).
    pub emu: Option<&'static harness::EmuLib>,
}

impl Dev {
    /// The emulated device with the release build of the emulator.
    pub fn emulated() -> Dev {
        Dev::emulated_with(harness::kernels())
    }

    /// The emulated device running the kernels of `lib` (e.g. the sanitizer build).
    pub fn emulated_with(lib: &'static harness::EmuLib) -> Dev {
        Dev {
            gpu: Gpu::emulated(),
            k: Kernels::emulated(Arc::new(EmuExec(lib))),
            emu: Some(lib),
        }
    }

    /// Open GPU `ordinal` and load the kernels; panics with the reason on any failure.
    pub fn open_gpu(test: &str, ordinal: usize) -> Dev {
        let gpu =
            Gpu::open(ordinal).unwrap_or_else(|e| panic!("{test}: opening GPU {ordinal}: {e}"));
        // Built once per test binary (the tests run in parallel; the first one compiles).
        static IMAGES: OnceLock<Result<Vec<nvrtc::ModuleImage>, String>> = OnceLock::new();
        let images = IMAGES
            .get_or_init(|| {
                nvrtc::build_all(
                    gpu.cc,
                    &nvrtc::find_cuda_include(),
                    Some(&nvrtc::cache_dir()),
                )
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .unwrap_or_else(|e| panic!("{test}: building the kernels: {e}"));
        let k =
            Kernels::load(&gpu, images).unwrap_or_else(|e| panic!("{test}: loading kernels: {e}"));
        eprintln!(
            "{test}: GPU {ordinal} = {} (sm_{}{}, {} SMs)",
            gpu.name, gpu.cc.0, gpu.cc.1, gpu.sms
        );
        Dev { gpu, k, emu: None }
    }

    /// Whether this is the emulated device.
    pub fn is_emulated(&self) -> bool {
        self.gpu.is_emulated()
    }

    /// The matrix products of this device (cuBLASLt on a GPU, the host on the emulated device).
    pub fn blas(&self) -> Blas {
        if self.is_emulated() {
            Blas::emulated()
        } else {
            Blas::new(&self.gpu).unwrap_or_else(|e| panic!("cuBLASLt on {}: {e}", self.gpu.name))
        }
    }

    /// f32 buffer holding `x`.
    pub fn f32(&self, x: &[f32]) -> DevBuf<f32> {
        self.raw(x)
    }
    /// bf16 buffer holding `x` rounded to bf16.
    pub fn bf16(&self, x: &[f32]) -> DevBuf<bf16> {
        let h: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        self.raw(&h)
    }
    /// Buffer holding `x` as it is.
    pub fn raw<T: DevElem>(&self, x: &[T]) -> DevBuf<T> {
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
        self.get(b)
    }
    /// Contents of a bf16 buffer, widened.
    pub fn get_bf16(&self, b: &DevBuf<bf16>) -> Vec<f32> {
        self.get(b).iter().map(|v| v.to_f32()).collect()
    }
    /// Contents of any buffer.
    pub fn get<T: DevElem>(&self, b: &DevBuf<T>) -> Vec<T> {
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

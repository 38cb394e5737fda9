//! A thin, panic-free layer over the CUDA driver API (through cudarc's `result`/`sys` bindings): the
//! context, the two streams, events, device and pinned host buffers, modules and kernel launches.
//!
//! The same types also run an *emulated device* ([`Gpu::emulated`]): device pointers are aligned host
//! allocations (a device address is then a host address), copies are `memcpy`, streams and events are no-ops
//! (everything is synchronous), and kernels run through a [`KernelExec`] (the CPU emulator of the tests,
//! `tests/emu/`). The CUDA backend runs unchanged on it, which tests its host logic without a GPU.
//!
//! Device memory is typed, as in cudarc's safe layer (`CudaSlice<T>`, `CudaView<T>`): an owning
//! [`DevBuf`] and a borrowed, `Copy` view [`DevSlice`] that carries the element type and the
//! length, with `T` one of the element types the kernels use ([`DevElem`]). Sub-slices (a tensor inside
//! the parameter arena, a part of a token slot) come from checked methods, never from pointer arithmetic
//! at call sites, and the launch helpers of [`super::ops`] and [`super::blas`] take typed slices, so a
//! bf16 buffer passed where an f32 one is expected does not compile. cudarc's safe layer also tracks every
//! buffer with events (a cost on every launch) and asserts on sizes; this layer does neither, checks
//! every return code and turns failures into [`GpuError`].
//!
//! Every device (the emulated one included) counts the bytes it has allocated, live and at peak
//! ([`Gpu::mem_counter`]), so tests can check the memory plan ([`super::memory`]) against what was
//! really allocated.
//!
//! Every entry point first checks that libcuda can be opened ([`driver_present`]), so nothing here
//! panics on a machine without a GPU.

use crate::backend::BackendError;
use cudarc::driver::{result, sys, CudaContext, CudaEvent, CudaStream, DriverError};
use std::alloc::Layout;
use std::ffi::c_void;
use std::sync::Arc;

/// A raw device address (`CUdeviceptr`): what a kernel receives for a pointer parameter. Only the
/// typed [`DevBuf`]/[`DevSlice`] hand one out ([`DevSlice::addr`]), for launches and cuBLASLt calls.
type DevAddr = u64;

mod sealed {
    pub trait Sealed {}
}

/// An element type of device memory: the types the kernels read and write. Sealed: a kernel's buffer
/// is one of these, so a [`DevSlice`] of any other type cannot be made.
pub trait DevElem: Copy + Default + sealed::Sealed + Send + Sync + 'static {
    /// The type's name in messages and in the memory plan (`f32`, `bf16`...).
    const NAME: &'static str;
}

macro_rules! dev_elem {
    ($($t:ty => $name:literal),*) => {$(
        impl sealed::Sealed for $t {}
        impl DevElem for $t {
            const NAME: &'static str = $name;
        }
    )*};
}
dev_elem!(f32 => "f32", f64 => "f64", half::bf16 => "bf16", u8 => "u8", u16 => "u16", i32 => "i32", u32 => "u32");

/// A failure of the GPU layer.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// libcuda (or another CUDA library) is missing or unusable.
    #[error("{0}")]
    Unavailable(String),
    /// A driver call failed.
    #[error("{what}")]
    Driver {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        err: DriverError,
    },
    /// Device memory ran out.
    #[error("out of device memory while {0}")]
    OutOfMemory(String),
    /// NVRTC failed to compile a kernel source (the message carries NVRTC's log).
    #[error("{0}")]
    Compile(String),
    /// An NVRTC call failed.
    #[error("NVRTC: {what}")]
    Nvrtc {
        /// The call.
        what: String,
        /// NVRTC's status.
        #[source]
        err: cudarc::nvrtc::result::NvrtcError,
    },
    /// cuBLASLt refused a product before calling it (a bad shape, alignment or setting).
    #[error("cuBLASLt: {0}")]
    Blas(String),
    /// A cuBLASLt call failed.
    #[error("cuBLASLt: {what}")]
    BlasCall {
        /// What was being done.
        what: String,
        /// cuBLASLt's status.
        #[source]
        err: cudarc::cublaslt::result::CublasError,
    },
    /// A typed device buffer was used out of its bounds or with a misaligned offset (a bug in the
    /// caller, reported instead of reading or writing outside the allocation).
    #[error("{0}")]
    Bounds(String),
    /// A kernel failed on the emulated device (the emulator's message).
    #[error("{0}")]
    Emulated(String),
    /// A request this layer refuses (a size, a case that cannot run, a result left unwritten).
    #[error("{0}")]
    Invalid(String),
    /// A failure while doing `what`: the failure is the source.
    #[error("{what}")]
    Context {
        /// What was being done.
        what: String,
        /// What failed.
        #[source]
        source: Box<GpuError>,
    },
}

impl GpuError {
    /// This error as the cause of a failure while doing `what`.
    pub fn context(self, what: impl Into<String>) -> GpuError {
        GpuError::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }
}

impl From<GpuError> for BackendError {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::OutOfMemory(what) => BackendError::OutOfMemory(what),
            GpuError::Driver { what, err }
                if err.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY =>
            {
                BackendError::OutOfMemory(what)
            }
            GpuError::Driver { what, err } => BackendError::Gpu {
                what,
                source: Box::new(err),
            },
            GpuError::BlasCall { what, err } => BackendError::Gpu {
                what: format!("cuBLASLt: {what}"),
                source: Box::new(err),
            },
            GpuError::Nvrtc { what, err } => BackendError::Gpu {
                what: format!("NVRTC: {what}"),
                source: Box::new(err),
            },
            GpuError::Context { what, source } => BackendError::Gpu {
                what,
                source: source as Box<dyn std::error::Error + Send + Sync>,
            },
            // The rest carry their whole message (NVRTC's log, the emulator's report).
            other => BackendError::Device(other.to_string()),
        }
    }
}

/// Result of the GPU layer.
pub type GpuResult<T> = Result<T, GpuError>;

/// Attach context to a driver result.
pub(crate) trait Ctx<T> {
    /// Name what failed.
    fn ctx(self, what: impl FnOnce() -> String) -> GpuResult<T>;
}

impl<T> Ctx<T> for Result<T, DriverError> {
    fn ctx(self, what: impl FnOnce() -> String) -> GpuResult<T> {
        self.map_err(|err| {
            let what = what();
            if err.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
                GpuError::OutOfMemory(what)
            } else {
                GpuError::Driver { what, err }
            }
        })
    }
}

/// Whether libcuda can be loaded (never panics; cudarc would panic on first use without it).
pub fn driver_present() -> bool {
    super::discover::ensure_loaded(super::discover::CudaLib::Driver, || {
        // SAFETY: only tries to open the shared library.
        unsafe { sys::is_culib_present() }
    })
}

/// Run `f`, turning a panic inside cudarc (e.g. "Missing symbol" for a driver too old for the
/// bindings) into an error instead of a crash.
pub fn catch_cuda_panic<T>(what: &str, f: impl FnOnce() -> GpuResult<T>) -> GpuResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = panic_message(&*p).unwrap_or_else(|| "unknown panic".into());
            Err(GpuError::Unavailable(format!("{what}: {msg}")))
        }
    }
}

/// The message of a caught panic (`panic!` with a literal or a formatted string), if it has one.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}

/// A GPU seen by the CUDA driver.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    /// The driver's number of this GPU (`cuda:N`).
    pub index: usize,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
}

/// The GPUs the driver reports, or why there are none. Never panics when libcuda is missing (and turns
/// a panic inside the driver bindings, e.g. a missing symbol, into a reason).
pub fn probe_gpus() -> Result<Vec<GpuInfo>, String> {
    if !driver_present() {
        return Err("no CUDA driver (libcuda) found".into());
    }
    let probe = || -> Result<Vec<GpuInfo>, String> {
        result::init().map_err(|e| format!("the CUDA driver failed to initialise: {e}"))?;
        let n = result::device::get_count().map_err(|e| format!("cannot count GPUs: {e}"))?;
        if n <= 0 {
            return Err("the CUDA driver reports no GPU".into());
        }
        (0..n)
            .map(|i| {
                let dev = result::device::get(i).map_err(|e| format!("GPU {i}: {e}"))?;
                let name = result::device::get_name(dev).unwrap_or_else(|_| "unknown GPU".into());
                Ok(GpuInfo {
                    index: i as usize,
                    name,
                })
            })
            .collect()
    };
    catch_cuda_panic("probing GPUs", || Ok(probe()))
        .map_err(|e: GpuError| e.to_string())
        .and_then(|r| r)
}

/// Runs kernels by name on the host: the kernel side of the emulated device (see the module docs).
pub trait KernelExec: Send + Sync {
    /// Run kernel `name` over `grid` × `block` with `shmem` bytes of dynamic shared memory, to
    /// completion. `args` are (pointer to the value, size of the value in bytes) in the kernel's
    /// parameter order, as `cuLaunchKernel` receives them; an implementation checks the sizes against
    /// the kernel's signature.
    fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shmem: usize,
        args: &[(*mut c_void, usize)],
    ) -> Result<(), String>;
}

/// Alignment of emulated device allocations (cudaMalloc gives at least 256 bytes).
const EMU_ALIGN: usize = 256;
/// Device memory an emulated device reports as (free, total).
const EMU_MEM: (usize, usize) = (64 << 30, 80 << 30);

/// A stream: a real CUDA stream, or the emulated device's (everything is synchronous there).
pub struct Stream(Option<Arc<CudaStream>>);

impl Stream {
    /// The cudarc stream (None on the emulated device).
    pub fn cuda(&self) -> Option<&Arc<CudaStream>> {
        self.0.as_ref()
    }

    fn raw(&self) -> sys::CUstream {
        self.0
            .as_ref()
            .map(|s| s.cu_stream())
            .unwrap_or(std::ptr::null_mut())
    }

    /// Wait for everything queued on this stream.
    pub fn synchronize(&self) -> GpuResult<()> {
        match &self.0 {
            Some(s) => s.synchronize().ctx(|| "waiting for the GPU".into()),
            None => Ok(()),
        }
    }

    /// Make later work on this stream wait for `event`.
    pub fn wait(&self, event: &Event, what: &str) -> GpuResult<()> {
        match (&self.0, &event.0) {
            (Some(s), Some(e)) => s.wait(e).ctx(|| what.to_string()),
            (None, None) => Ok(()),
            _ => Err(GpuError::Unavailable(format!(
                "{what}: a stream and an event of different devices"
            ))),
        }
    }
}

/// An event: a real CUDA event, or on the emulated device the host time of its last record (work
/// there is synchronous, so the host time between two records is the time of the work between them).
pub struct Event(
    Option<CudaEvent>,
    std::sync::Mutex<Option<std::time::Instant>>,
);

impl Event {
    /// Record the event on `stream`.
    pub fn record(&self, stream: &Stream, what: &str) -> GpuResult<()> {
        match (&self.0, &stream.0) {
            (Some(e), Some(s)) => e.record(s).ctx(|| what.to_string()),
            (None, None) => {
                *self.1.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
                Ok(())
            }
            _ => Err(GpuError::Unavailable(format!(
                "{what}: a stream and an event of different devices"
            ))),
        }
    }

    /// Wait on the host until the work before the last record has completed.
    pub fn synchronize(&self, what: &str) -> GpuResult<()> {
        match &self.0 {
            Some(e) => e.synchronize().ctx(|| what.to_string()),
            None => Ok(()),
        }
    }

    /// Milliseconds from this event's last record to `end`'s last record (waits for both). On a GPU
    /// both must come from [`Gpu::timing_event`]; on the emulated device it is the host wall time
    /// between the two records.
    pub fn elapsed_ms(&self, end: &Event) -> GpuResult<f64> {
        match (&self.0, &end.0) {
            (Some(a), Some(b)) => a
                .elapsed_ms(b)
                .map(f64::from)
                .ctx(|| "reading the time between two CUDA events".into()),
            (None, None) => {
                let a = *self.1.lock().unwrap_or_else(|p| p.into_inner());
                let b = *end.1.lock().unwrap_or_else(|p| p.into_inner());
                match (a, b) {
                    (Some(a), Some(b)) => Ok(b.saturating_duration_since(a).as_secs_f64() * 1e3),
                    _ => Err(GpuError::Unavailable(
                        "timing an event that was never recorded".into(),
                    )),
                }
            }
            _ => Err(GpuError::Unavailable(
                "timing two events of different devices".into(),
            )),
        }
    }
}

/// One GPU (or the emulated device): its context, a compute stream and a copy stream.
pub struct Gpu {
    /// The primary context of the device (None on the emulated device).
    ctx: Option<Arc<CudaContext>>,
    /// Every kernel and matrix product runs here, in order.
    pub stream: Stream,
    /// Host→device token uploads, ordered against `stream` with events.
    pub copy_stream: Stream,
    /// The driver's number of this GPU (`cuda:N`).
    pub ordinal: usize,
    /// Marketing name.
    pub name: String,
    /// Compute capability (major, minor).
    pub cc: (i32, i32),
    /// Number of SMs.
    pub sms: i32,
    /// Bytes allocated through [`DevBuf`]s (shared with each buffer, which subtracts itself on drop).
    counter: Arc<MemCounter>,
}

impl Gpu {
    /// Open GPU `ordinal` (checks for libcuda first).
    pub fn open(ordinal: usize) -> GpuResult<Gpu> {
        if !driver_present() {
            return Err(GpuError::Unavailable(
                "no CUDA driver (libcuda) found".into(),
            ));
        }
        catch_cuda_panic("opening the GPU", || {
            result::init().ctx(|| "initialising the CUDA driver".into())?;
            let n = result::device::get_count().ctx(|| "counting GPUs".into())?;
            if ordinal as i64 >= n as i64 {
                return Err(GpuError::Unavailable(format!("only {n} GPU(s) present")));
            }
            let ctx =
                CudaContext::new(ordinal).ctx(|| format!("creating a context on GPU {ordinal}"))?;
            // SAFETY: set before any buffer is created; this layer orders streams with explicit events.
            unsafe { ctx.disable_event_tracking() };
            let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
            let cc = ctx
                .compute_capability()
                .ctx(|| "reading the compute capability".into())?;
            let sms = ctx
                .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                .ctx(|| "reading the SM count".into())?;
            let stream = ctx
                .new_stream()
                .ctx(|| "creating the compute stream".into())?;
            let copy_stream = ctx.new_stream().ctx(|| "creating the copy stream".into())?;
            Ok(Gpu {
                ctx: Some(ctx),
                stream: Stream(Some(stream)),
                copy_stream: Stream(Some(copy_stream)),
                ordinal,
                name,
                cc,
                sms,
                counter: Default::default(),
            })
        })
    }

    /// The emulated device: host memory, synchronous no-op streams (see the module documentation).
    pub fn emulated() -> Gpu {
        Gpu {
            ctx: None,
            stream: Stream(None),
            copy_stream: Stream(None),
            ordinal: 0,
            name: "emulated device (kernels on the CPU)".into(),
            cc: (9, 0),
            sms: 132,
            counter: Default::default(),
        }
    }

    /// Whether this is the emulated device.
    pub fn is_emulated(&self) -> bool {
        self.ctx.is_none()
    }

    /// Make this GPU's context current on the calling thread.
    pub fn bind(&self) -> GpuResult<()> {
        match &self.ctx {
            Some(c) => c.bind_to_thread().ctx(|| "binding the CUDA context".into()),
            None => Ok(()),
        }
    }

    /// (free, total) device memory in bytes (a fixed 64 of 80 GiB on the emulated device).
    pub fn mem_info(&self) -> GpuResult<(usize, usize)> {
        if self.ctx.is_none() {
            return Ok(EMU_MEM);
        }
        self.bind()?;
        result::mem_get_info().ctx(|| "querying device memory".into())
    }

    /// Wait for everything queued on the compute stream.
    pub fn sync(&self) -> GpuResult<()> {
        self.stream.synchronize()
    }

    /// A new event (no timing).
    pub fn event(&self) -> GpuResult<Event> {
        match &self.ctx {
            Some(c) => Ok(Event(
                Some(c.new_event(None).ctx(|| "creating an event".into())?),
                Default::default(),
            )),
            None => Ok(Event(None, Default::default())),
        }
    }

    /// A new event that records time, for [`Event::elapsed_ms`] (host wall time on the emulated
    /// device).
    pub fn timing_event(&self) -> GpuResult<Event> {
        match &self.ctx {
            Some(c) => Ok(Event(
                Some(
                    c.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                        .ctx(|| "creating a timing event".into())?,
                ),
                Default::default(),
            )),
            None => Ok(Event(None, Default::default())),
        }
    }

    /// Allocate `len` elements of `T` (uninitialised; NaN bytes on the emulated device).
    pub fn alloc<T: DevElem>(&self, len: usize, what: &str) -> GpuResult<DevBuf<T>> {
        DevBuf::new(self, len, what)
    }

    /// Allocate and zero `len` elements of `T` (on the compute stream).
    pub fn alloc_zeroed<T: DevElem>(&self, len: usize, what: &str) -> GpuResult<DevBuf<T>> {
        let b = DevBuf::new(self, len, what)?;
        b.zero(&self.stream)?;
        Ok(b)
    }

    /// Copy host data into `dst` (from element 0) on the compute stream, then wait for the copy (the
    /// host slice may be pageable memory that is freed right after).
    pub fn upload<T: DevElem>(&self, src: &[T], dst: &DevBuf<T>) -> GpuResult<()> {
        self.upload_at(src, dst, 0)
    }

    /// Copy host data into `dst` from element `offset` on, like [`Gpu::upload`].
    pub fn upload_at<T: DevElem>(
        &self,
        src: &[T],
        dst: &DevBuf<T>,
        offset: usize,
    ) -> GpuResult<()> {
        if offset
            .checked_add(src.len())
            .is_none_or(|end| end > dst.len)
        {
            return Err(GpuError::Bounds(format!(
                "upload of {} elements at element {offset} into the {}-element buffer {}",
                src.len(),
                dst.len,
                dst.what
            )));
        }
        let at = dst.sub(offset, src.len())?.addr();
        if self.ctx.is_none() {
            // SAFETY: dst is a host allocation with room for src.len() elements from offset.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), at as *mut T, src.len()) };
            return Ok(());
        }
        self.bind()?;
        // SAFETY: dst holds src.len() elements from offset; the stream is synchronised before src can
        // go.
        unsafe { result::memcpy_htod_async(at, src, self.stream.raw()) }
            .ctx(|| format!("copying {} to the GPU", dst.what))?;
        self.sync()
    }

    /// Queue a device-to-device copy of the first `len` elements of `src` into `dst` on the compute
    /// stream.
    pub fn copy<T: DevElem>(&self, src: &DevBuf<T>, dst: &DevBuf<T>, len: usize) -> GpuResult<()> {
        if len > src.len || len > dst.len {
            return Err(GpuError::Bounds(format!(
                "copy of {len} elements from {} ({} elements) to {} ({} elements)",
                src.what, src.len, dst.what, dst.len
            )));
        }
        let bytes = len * std::mem::size_of::<T>();
        if self.ctx.is_none() {
            // SAFETY: both are host allocations of at least `bytes` bytes; distinct allocations do
            // not overlap (the same buffer copied onto itself is a no-op).
            if src.addr != dst.addr {
                unsafe {
                    std::ptr::copy_nonoverlapping(src.addr as *const u8, dst.addr as *mut u8, bytes)
                };
            }
            return Ok(());
        }
        self.bind()?;
        // SAFETY: both ranges lie inside their allocations.
        unsafe { result::memcpy_dtod_async(dst.addr, src.addr, bytes, self.stream.raw()) }
            .ctx(|| format!("copying {} to {}", src.what, dst.what))
    }

    /// Copy the first `len` elements of `src` to a new host vector (waits for the compute stream).
    pub fn download<T: DevElem>(&self, src: &DevBuf<T>, len: usize) -> GpuResult<Vec<T>> {
        let len = len.min(src.len);
        let mut out = vec![T::default(); len];
        if self.ctx.is_none() {
            // SAFETY: src is a host allocation of at least len elements.
            unsafe { std::ptr::copy_nonoverlapping(src.addr as *const T, out.as_mut_ptr(), len) };
            return Ok(out);
        }
        self.bind()?;
        // SAFETY: out has len elements, src at least len.
        unsafe { result::memcpy_dtoh_async(&mut out[..], src.addr, self.stream.raw()) }
            .ctx(|| format!("copying {} from the GPU", src.what))?;
        self.sync()?;
        Ok(out)
    }

    /// The bytes this device has allocated through [`DevBuf`]s, live and at peak (the element bytes
    /// asked for, on a GPU and on the emulated device alike).
    pub fn mem_counter(&self) -> &MemCounter {
        &self.counter
    }
}

/// Make `ctx` current on the calling thread. Every call that takes a raw stream, pointer or function
/// handle binds first (a no-op when it is already current): the types here are `Send`, so the work may
/// come from a thread that never bound the context, which the driver would refuse with
/// `CUDA_ERROR_INVALID_CONTEXT`.
fn bind(ctx: &CudaContext) -> GpuResult<()> {
    ctx.bind_to_thread()
        .ctx(|| "binding the CUDA context to this thread".into())
}

/// Who frees an allocation.
enum Owner {
    /// A device (or pinned) allocation of this context.
    Cuda(Arc<CudaContext>),
    /// A host allocation of this layout (the emulated device).
    Host(Layout),
}

fn host_alloc(bytes: usize, align: usize, fill: u8, what: &str) -> GpuResult<(*mut u8, Layout)> {
    let layout = Layout::from_size_align(bytes.max(1), align)
        .map_err(|_| GpuError::OutOfMemory(format!("sizing {what}")))?;
    // SAFETY: non-zero size.
    let p = unsafe { std::alloc::alloc(layout) };
    if p.is_null() {
        return Err(GpuError::OutOfMemory(format!(
            "allocating {what} in host memory"
        )));
    }
    // SAFETY: fresh allocation of layout.size() bytes.
    unsafe { std::ptr::write_bytes(p, fill, layout.size()) };
    Ok((p, layout))
}

/// A device allocation of `len` elements of `T`, freed on drop (cudarc's `CudaSlice<T>`). Kernels and
/// products see it through [`DevSlice`]s: [`DevBuf::slice`] for all of it, [`DevBuf::sub`] for a
/// checked range.
pub struct DevBuf<T: DevElem> {
    addr: DevAddr,
    len: usize,
    what: String,
    owner: Owner,
    /// The device's byte counter, decremented on drop.
    counter: Arc<MemCounter>,
    _t: std::marker::PhantomData<T>,
}

// SAFETY: a device address is plain data; the allocation is owned.
unsafe impl<T: DevElem> Send for DevBuf<T> {}

impl<T: DevElem> DevBuf<T> {
    fn new(gpu: &Gpu, len: usize, what: &str) -> GpuResult<Self> {
        let bytes = (len.max(1))
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| GpuError::OutOfMemory(format!("sizing {what}")))?;
        let (addr, owner) = match &gpu.ctx {
            Some(ctx) => {
                gpu.bind()?;
                // SAFETY: plain allocation; freed in Drop.
                let addr = unsafe { result::malloc_sync(bytes) }
                    .ctx(|| format!("allocating {what} ({:.1} MiB)", bytes as f64 / 1048576.0))?;
                (addr, Owner::Cuda(ctx.clone()))
            }
            None => {
                // Emulated: all-ones bytes (NaN in f32 and bf16) expose reads of unwritten memory.
                let (p, layout) = host_alloc(bytes, EMU_ALIGN, 0xff, what)?;
                (p as DevAddr, Owner::Host(layout))
            }
        };
        gpu.counter.add(len * std::mem::size_of::<T>());
        Ok(DevBuf {
            addr,
            len,
            what: what.to_string(),
            owner,
            counter: gpu.counter.clone(),
            _t: std::marker::PhantomData,
        })
    }

    /// The whole buffer as a view.
    pub fn slice(&self) -> DevSlice<'_, T> {
        DevSlice {
            addr: self.addr,
            len: self.len,
            _t: std::marker::PhantomData,
        }
    }

    /// Elements `start..start + len` as a view; a range past the end is an error naming the buffer.
    pub fn sub(&self, start: usize, len: usize) -> GpuResult<DevSlice<'_, T>> {
        self.slice().sub(start, len).map_err(|e| match e {
            GpuError::Bounds(m) => GpuError::Bounds(format!("{}: {m}", self.what)),
            other => other,
        })
    }

    /// The raw device address of element 0, for a hand-written launch (tests, benches). The typed
    /// helpers of [`super::ops`] and [`super::blas`] take [`DevSlice`]s instead.
    pub fn ptr(&self) -> u64 {
        self.addr
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    /// What the buffer holds (its name in messages).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Set every byte to zero on `stream`.
    pub fn zero(&self, stream: &Stream) -> GpuResult<()> {
        self.fill_bytes(0, stream)
    }

    /// Set every byte to `byte` on `stream` (0xff poisons: NaN in f32 and bf16).
    pub fn fill_bytes(&self, byte: u8, stream: &Stream) -> GpuResult<()> {
        match &self.owner {
            Owner::Host(_) => {
                // SAFETY: the range is inside the host allocation.
                unsafe { std::ptr::write_bytes(self.addr as *mut u8, byte, self.bytes()) };
                Ok(())
            }
            Owner::Cuda(ctx) => {
                bind(ctx)?;
                // SAFETY: the range is inside the allocation.
                unsafe { result::memset_d8_async(self.addr, byte, self.bytes(), stream.raw()) }
                    .ctx(|| format!("filling {}", self.what))
            }
        }
    }
}

/// A borrowed view of `len` elements of `T` in device memory (cudarc's `CudaView<T>`): what the launch
/// helpers take. `Copy`, like the pointer it stands for; it cannot outlive its [`DevBuf`]. Kernels
/// write through it too (the GPU's work is asynchronous, so Rust's `&mut` could not promise anything
/// about it anyway).
///
/// The element type is part of the type, so a bf16 buffer cannot be passed where the kernel wants
/// f32:
///
/// ```compile_fail,E0308
/// use isoflop::cuda::gpu::{DevSlice, Gpu};
/// use isoflop::cuda::ops::Ops;
/// use half::bf16;
/// fn cast(ops: &Ops, x_f32: DevSlice<f32>, y_bf16: DevSlice<bf16>) {
///     // Arguments swapped: a bf16 input where the kernel reads f32 does not compile.
///     let _ = ops.cast_f32_to_bf16(y_bf16, x_f32, 1);
/// }
/// ```
///
/// while the right order does:
///
/// ```
/// use isoflop::cuda::gpu::DevSlice;
/// use isoflop::cuda::ops::Ops;
/// use half::bf16;
/// fn cast(ops: &Ops, x_f32: DevSlice<f32>, y_bf16: DevSlice<bf16>) {
///     let _ = ops.cast_f32_to_bf16(x_f32, y_bf16, 1);
/// }
/// ```
pub struct DevSlice<'a, T: DevElem> {
    addr: DevAddr,
    len: usize,
    _t: std::marker::PhantomData<&'a T>,
}

impl<T: DevElem> Clone for DevSlice<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: DevElem> Copy for DevSlice<'_, T> {}

impl<T: DevElem> std::fmt::Debug for DevSlice<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevSlice<{}>[{}] @ {:#x}", T::NAME, self.len, self.addr)
    }
}

impl<'a, T: DevElem> DevSlice<'a, T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw device address of element 0 (for a kernel argument or a cuBLASLt call).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Elements `start..start + len` of this view; a range past the end is an error.
    pub fn sub(&self, start: usize, len: usize) -> GpuResult<DevSlice<'a, T>> {
        match start.checked_add(len) {
            Some(end) if end <= self.len => Ok(DevSlice {
                addr: self.addr + (start * std::mem::size_of::<T>()) as u64,
                len,
                _t: std::marker::PhantomData,
            }),
            _ => Err(GpuError::Bounds(format!(
                "elements {start}..{} of a {}-element {} view",
                start.saturating_add(len),
                self.len,
                T::NAME
            ))),
        }
    }

    /// The same bytes seen as elements of `U` (e.g. the bf16 logit gradient written over the f32
    /// logits, or the u16/i32 parts of a byte staging slot). The address must be aligned for `U`;
    /// the length is the whole elements of `U` that fit.
    pub fn reinterpret<U: DevElem>(&self) -> GpuResult<DevSlice<'a, U>> {
        if !self.addr.is_multiple_of(std::mem::align_of::<U>() as u64) {
            return Err(GpuError::Bounds(format!(
                "a {} view at {:#x} seen as {} (misaligned)",
                T::NAME,
                self.addr,
                U::NAME
            )));
        }
        Ok(DevSlice {
            addr: self.addr,
            len: self.len * std::mem::size_of::<T>() / std::mem::size_of::<U>(),
            _t: std::marker::PhantomData,
        })
    }
}

/// Bytes a device has allocated through [`DevBuf`]s: live now, and the peak since it was opened.
#[derive(Debug, Default)]
pub struct MemCounter {
    live: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl MemCounter {
    fn add(&self, bytes: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        let live = self.live.fetch_add(bytes, SeqCst) + bytes;
        self.peak.fetch_max(live, SeqCst);
    }

    fn sub(&self, bytes: usize) {
        self.live
            .fetch_sub(bytes, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes of the buffers alive now (their element bytes, without allocation padding).
    pub fn live(&self) -> usize {
        self.live.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most bytes alive at once since the device was opened.
    pub fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl<T: DevElem> Drop for DevBuf<T> {
    fn drop(&mut self) {
        self.counter.sub(self.bytes());
        match &self.owner {
            Owner::Cuda(ctx) => {
                if ctx.bind_to_thread().is_ok() {
                    // SAFETY: allocated by malloc_sync and not freed before. Callers synchronise the
                    // streams that use a buffer before dropping it (cuMemFree's own wait is not promised).
                    let r = unsafe { result::free_sync(self.addr) };
                    ctx.record_err(r);
                }
            }
            // SAFETY: allocated by host_alloc with this layout, freed once.
            Owner::Host(layout) => unsafe { std::alloc::dealloc(self.addr as *mut u8, *layout) },
        }
    }
}

/// Page-locked host memory (for asynchronous uploads), freed on drop; plain host memory on the
/// emulated device.
pub struct PinnedBuf {
    ptr: *mut u8,
    len: usize,
    owner: Owner,
}

// SAFETY: owned host allocation.
unsafe impl Send for PinnedBuf {}

impl PinnedBuf {
    /// `len` bytes of pinned memory, zeroed.
    pub fn new(gpu: &Gpu, len: usize) -> GpuResult<PinnedBuf> {
        let Some(ctx) = &gpu.ctx else {
            let (ptr, layout) = host_alloc(len, 64, 0, "a host staging buffer")?;
            return Ok(PinnedBuf {
                ptr,
                len,
                owner: Owner::Host(layout),
            });
        };
        gpu.bind()?;
        // SAFETY: plain allocation; freed in Drop.
        let p = unsafe { result::malloc_host(len.max(1), 0) }
            .ctx(|| format!("allocating {len} bytes of pinned host memory"))?;
        let ptr = p as *mut u8;
        // SAFETY: fresh allocation of len bytes.
        unsafe { std::ptr::write_bytes(ptr, 0, len.max(1)) };
        Ok(PinnedBuf {
            ptr,
            len,
            owner: Owner::Cuda(ctx.clone()),
        })
    }

    /// The bytes (the caller makes sure no copy from them is in flight).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: owned allocation of len bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue a copy of the first `bytes` bytes (at most this buffer's length) to the start of `dst`
    /// on `stream`; more bytes than `dst` holds is an error.
    pub fn copy_to<T: DevElem>(
        &self,
        dst: DevSlice<'_, T>,
        bytes: usize,
        stream: &Stream,
    ) -> GpuResult<()> {
        let bytes = bytes.min(self.len);
        let dst = dst.reinterpret::<u8>()?.sub(0, bytes)?.addr();
        match &self.owner {
            Owner::Cuda(ctx) => bind(ctx)?,
            Owner::Host(_) => {
                // SAFETY: dst is an emulated device allocation with room for `bytes` (the caller sized it
                // like this buffer); distinct allocations do not overlap.
                unsafe { std::ptr::copy_nonoverlapping(self.ptr, dst as *mut u8, bytes) };
                return Ok(());
            }
        }
        // SAFETY: the pinned source stays alive (owned by self) until the caller's event says the copy
        // is done; dst has room (the caller sized it like this buffer).
        let src = unsafe { std::slice::from_raw_parts(self.ptr, bytes) };
        unsafe { result::memcpy_htod_async(dst, src, stream.raw()) }
            .ctx(|| "uploading tokens".into())
    }

    /// Queue a copy of the first `bytes` bytes of `src` (at most this buffer's length) into the start
    /// of this buffer on `stream` (read the bytes only after an event recorded after this call has
    /// completed); more bytes than `src` holds is an error.
    pub fn copy_from<T: DevElem>(
        &mut self,
        src: DevSlice<'_, T>,
        bytes: usize,
        stream: &Stream,
    ) -> GpuResult<()> {
        let bytes = bytes.min(self.len);
        let src = src.reinterpret::<u8>()?.sub(0, bytes)?.addr();
        match &self.owner {
            Owner::Cuda(ctx) => bind(ctx)?,
            Owner::Host(_) => {
                // SAFETY: src is an emulated device allocation of at least `bytes` bytes.
                unsafe { std::ptr::copy_nonoverlapping(src as *const u8, self.ptr, bytes) };
                return Ok(());
            }
        }
        // SAFETY: owned pinned allocation of at least `bytes` bytes; src holds `bytes` bytes.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr, bytes) };
        unsafe { result::memcpy_dtoh_async(dst, src, stream.raw()) }
            .ctx(|| "copying a result to the host".into())
    }
}

impl Drop for PinnedBuf {
    fn drop(&mut self) {
        match &self.owner {
            Owner::Cuda(ctx) => {
                if ctx.bind_to_thread().is_ok() {
                    // SAFETY: allocated by malloc_host, not freed before.
                    let r = unsafe { result::free_host(self.ptr as *mut c_void) };
                    ctx.record_err(r);
                }
            }
            // SAFETY: allocated by host_alloc with this layout, freed once.
            Owner::Host(layout) => unsafe { std::alloc::dealloc(self.ptr, *layout) },
        }
    }
}

/// A kernel parameter as `cuLaunchKernel` wants it: a pointer to its value.
pub trait KernelParam {
    /// Pointer to the value (valid while `self` lives).
    fn as_param(&self) -> *mut c_void;
    /// Size of the value in bytes (checked against the kernel's signature on the emulated device).
    fn param_size(&self) -> usize;
}

macro_rules! impl_param {
    ($($t:ty),*) => {$(
        impl KernelParam for $t {
            fn as_param(&self) -> *mut c_void {
                self as *const $t as *mut c_void
            }
            fn param_size(&self) -> usize {
                std::mem::size_of::<$t>()
            }
        }
    )*};
}
impl_param!(u64, i64, i32, u32, f32, f64);

/// A typed view is passed as its device address (a pointer parameter of the kernel).
impl<T: DevElem> KernelParam for DevSlice<'_, T> {
    fn as_param(&self) -> *mut c_void {
        &self.addr as *const DevAddr as *mut c_void
    }
    fn param_size(&self) -> usize {
        std::mem::size_of::<DevAddr>()
    }
}

/// Loaded CUDA modules and their functions by name.
struct Modules {
    modules: Vec<sys::CUmodule>,
    funcs: std::collections::HashMap<String, sys::CUfunction>,
    ctx: Arc<CudaContext>,
}

impl Drop for Modules {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            for m in self.modules.drain(..) {
                // SAFETY: loaded by load_data, unloaded once.
                let r = unsafe { result::module::unload(m) };
                self.ctx.record_err(r);
            }
        }
    }
}

/// The loaded kernels of one GPU, by name (or the emulator's, on the emulated device).
pub struct Kernels {
    inner: KernelsImpl,
}

enum KernelsImpl {
    Cuda(Modules),
    Emulated(Arc<dyn KernelExec>),
}

// SAFETY: CUmodule/CUfunction handles are usable from any thread with the context bound; the emulator
// is Send + Sync.
unsafe impl Send for Kernels {}

impl Kernels {
    /// Load cubins (one per source) and look up every `extern "C" __global__` kernel in them.
    pub fn load(gpu: &Gpu, cubins: &[(String, Vec<u8>, Vec<String>)]) -> GpuResult<Kernels> {
        let Some(ctx) = &gpu.ctx else {
            return Err(GpuError::Unavailable(
                "cubins cannot be loaded on the emulated device".into(),
            ));
        };
        gpu.bind()?;
        let mut k = Modules {
            modules: Vec::new(),
            funcs: Default::default(),
            ctx: ctx.clone(),
        };
        for (file, image, names) in cubins {
            // SAFETY: a cubin produced by NVRTC for this device's architecture.
            let module = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }
                .ctx(|| format!("loading the cubin of {file}"))?;
            k.modules.push(module);
            for name in names {
                let cname = std::ffi::CString::new(name.as_str())
                    .map_err(|_| GpuError::Compile(format!("bad kernel name {name:?}")))?;
                // SAFETY: module is loaded.
                let f = unsafe { result::module::get_function(module, cname) }
                    .ctx(|| format!("finding kernel {name} in {file}"))?;
                k.funcs.insert(name.clone(), f);
            }
        }
        Ok(Kernels {
            inner: KernelsImpl::Cuda(k),
        })
    }

    /// The kernels of the emulated device: every launch goes to `exec`.
    pub fn emulated(exec: Arc<dyn KernelExec>) -> Kernels {
        Kernels {
            inner: KernelsImpl::Emulated(exec),
        }
    }

    /// The function handle of `name` (errors on the emulated device).
    pub fn get(&self, name: &str) -> GpuResult<sys::CUfunction> {
        match &self.inner {
            KernelsImpl::Cuda(m) => m
                .funcs
                .get(name)
                .copied()
                .ok_or_else(|| GpuError::Compile(format!("kernel {name} not loaded"))),
            KernelsImpl::Emulated(_) => Err(GpuError::Unavailable(format!(
                "kernel {name}: no function handle on the emulated device"
            ))),
        }
    }

    /// Launch `name` on `stream`; `args` in the kernel's parameter order, each of the exact C type
    /// (device pointers as [`DevSlice`]s or raw `u64` addresses, `int` as `i32`, `long long` as `i64`,
    /// `float` as `f32`). The typed launchers of [`super::ops`] are the checked way in.
    pub fn launch(
        &self,
        stream: &Stream,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: &[&dyn KernelParam],
    ) -> GpuResult<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(()); // nothing to do (e.g. an empty batch part)
        }
        let f = match &self.inner {
            KernelsImpl::Emulated(exec) => {
                // The limits the driver enforces (without the opt-in for more dynamic shared memory).
                if block == 0
                    || block > 1024
                    || grid.0 > i32::MAX as u32
                    || grid.1 > 65535
                    || grid.2 > 65535
                    || smem > 48 * 1024
                {
                    return Err(GpuError::Emulated(format!(
                        "launching {name}: grid {grid:?}, block {block}, {smem} bytes of shared \
                         memory exceed the CUDA launch limits"
                    )));
                }
                let params: Vec<(*mut c_void, usize)> = args
                    .iter()
                    .map(|a| (a.as_param(), a.param_size()))
                    .collect();
                return exec
                    .launch(name, grid, (block, 1, 1), smem as usize, &params)
                    .map_err(|e| {
                        GpuError::Emulated(format!(
                            "launching {name} (grid {grid:?}, block {block}) on the emulated \
                             device: {e}"
                        ))
                    });
            }
            KernelsImpl::Cuda(m) => {
                bind(&m.ctx)?;
                self.get(name)?
            }
        };
        let mut params: Vec<*mut c_void> = args.iter().map(|a| a.as_param()).collect();
        // SAFETY: the parameter list matches the kernel's signature (checked by the GPU tests against
        // the CPU reference); every pointer value outlives the call (cuLaunchKernel copies them).
        unsafe { result::launch_kernel(f, grid, (block, 1, 1), smem, stream.raw(), &mut params) }
            .ctx(|| format!("launching {name} (grid {grid:?}, block {block})"))
    }
}

/// Blocks for a grid-stride elementwise kernel over `n` elements with 256-thread blocks (the same rule
/// as the kernel tests).
pub fn elementwise_grid(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 65535) as u32
}

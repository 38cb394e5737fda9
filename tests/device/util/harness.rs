//! Test harness: build `kernels/*.cu` for the CPU emulator (tests/emu/cuda_emu.h) into a shared object
//! under `target/emu/`, load it with `libloading`, and launch kernels by name with a grid, a block, a
//! dynamic shared-memory size and arguments, like `cuLaunchKernel` does on the GPU.
//!
//! Part of the device test binary's `util` (`use crate::util::harness;`).
//!
//! ```ignore
//! let lib = harness::kernels();                       // every kernels/*.cu, built once per test binary
//! lib.launch("gelu_forward_f32", (blocks, 1, 1), (256, 1, 1), 0,
//!            &[&x.as_ptr(), &out.as_mut_ptr(), &(n as i32)])?;
//! ```
//! Each `.cu` is compiled as its own translation unit (as NVRTC compiles each one on its own); every
//! `extern "C" __global__` kernel in it gets a generated `isoflop_emu_launch_<name>` entry point and a
//! parameter-size signature that `launch` checks the arguments against.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// Root of the repository (the crate's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `.ci/install-nvrtc.sh` if needed and returns the install directory (`target/nvrtc-13.0`).
pub fn nvrtc_dir() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo_root();
        let dir = root.join("target").join("nvrtc-13.0");
        if !dir.join(".installed-13.0").exists() {
            let script = root.join(".ci").join("install-nvrtc.sh");
            let out = Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .output()
                .map_err(|e| format!("running {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed ({}):\n{}{}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(dir)
    })
    .clone()
}

/// The CUDA include directory of the runtime wheel (cuda_bf16.h and friends).
pub fn cuda_include() -> Result<PathBuf, String> {
    Ok(nvrtc_dir()?.join("nvidia").join("cu13").join("include"))
}

/// How the emulated kernels are compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// `-O2` (or `-O0 -g` when `ISOFLOP_EMU_DEBUG=1`): the normal test build.
    Release,
    /// AddressSanitizer + UndefinedBehaviorSanitizer. Loading it needs the sanitizer runtimes preloaded
    /// (see [`run_sanitized_child`]).
    Sanitize,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Release => "release",
            Flavor::Sanitize => "sanitize",
        }
    }
    fn flags(self) -> Vec<String> {
        let debug = std::env::var("ISOFLOP_EMU_DEBUG").is_ok_and(|v| v == "1");
        let mut f: Vec<String> = match (self, debug) {
            (Flavor::Release, false) => vec!["-O2".into()],
            (Flavor::Release, true) => vec!["-O0".into(), "-g".into()],
            (Flavor::Sanitize, _) => vec![
                "-O1".into(),
                "-g".into(),
                "-fno-omit-frame-pointer".into(),
                "-fsanitize=address,undefined".into(),
                "-fno-sanitize-recover=all".into(),
            ],
        };
        f.extend(
            [
                "-std=c++17",
                "-fPIC",
                "-DISOFLOP_EMU=1",
                "-Wall",
                "-Wno-unknown-pragmas",
                "-Wno-unused-function",
                "-Wno-unused-variable",
                "-Wno-unused-but-set-variable",
            ]
            .map(String::from),
        );
        f
    }
}

/// Kernel names declared `extern "C" __global__` in a CUDA source: the CUDA backend's own parser, so
/// the emulator and the GPU path agree on what a file exports.
pub use isoflop::cuda::nvrtc::kernel_names;

/// The `.cu` files of `kernels/`, sorted.
pub fn kernel_sources() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join("kernels"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "cu"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn header_digest(h: &mut Sha256) {
    let root = repo_root();
    for dir in [root.join("kernels"), root.join("tests").join("emu")] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            if f.extension().is_some_and(|x| x == "h" || x == "cuh") {
                h.update(f.to_string_lossy().as_bytes());
                h.update(std::fs::read(&f).unwrap_or_default());
            }
        }
    }
}

fn compiler() -> Result<cc::Tool, String> {
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let out = std::env::temp_dir();
    cc::Build::new()
        .cpp(true)
        .target(&target)
        .host(&target)
        .opt_level(0)
        .debug(false)
        .out_dir(out)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .try_get_compiler()
        .map_err(|e| format!("no C++ compiler: {e}"))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn hex(d: &[u8]) -> String {
    d.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A name part unique to this build step across processes and the threads of this one (tests of one
/// binary build the same objects side by side; each writes its own temporary file, then renames it).
fn tmp_tag() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// A loaded emulation library.
pub struct EmuLib {
    lib: libloading::Library,
    /// Path of the shared object.
    pub path: PathBuf,
    /// Kernel name → its `__launch_bounds__` (most threads per block), where declared: a launch with
    /// more threads is refused, as the driver would refuse it.
    pub launch_bounds: BTreeMap<String, u32>,
}

/// A kernel argument as `cuLaunchKernel` takes it: a pointer to the value, and the value's size (checked
/// against the kernel's parameter sizes).
pub trait KernelArg {
    /// Pointer to the argument's value.
    fn arg_ptr(&self) -> *mut c_void;
    /// Size of the value in bytes.
    fn arg_size(&self) -> usize;
}
macro_rules! scalar_arg {
    ($($t:ty),*) => {$(
        impl KernelArg for $t {
            fn arg_ptr(&self) -> *mut c_void { self as *const $t as *mut c_void }
            fn arg_size(&self) -> usize { std::mem::size_of::<$t>() }
        }
    )*};
}
scalar_arg!(i32, u32, i64, u64, f32, f64, u16, u8);
impl<T> KernelArg for *const T {
    fn arg_ptr(&self) -> *mut c_void {
        self as *const *const T as *mut c_void
    }
    fn arg_size(&self) -> usize {
        8
    }
}
impl<T> KernelArg for *mut T {
    fn arg_ptr(&self) -> *mut c_void {
        self as *const *mut T as *mut c_void
    }
    fn arg_size(&self) -> usize {
        8
    }
}

/// Order in which the emulator runs the threads of a block between synchronisation points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Thread 0 first.
    Forward,
    /// Last thread first.
    Reverse,
    /// A seeded permutation.
    Shuffle(u64),
}

type LaunchFn =
    unsafe extern "C" fn(u32, u32, u32, u32, u32, u32, usize, *mut *mut c_void) -> c_int;
type SigFn = unsafe extern "C" fn() -> *const c_char;

/// Kernel name → resolved `__launch_bounds__`, of the kernels of `sources` that declare one.
fn scan_launch_bounds(sources: &[PathBuf]) -> Result<BTreeMap<String, u32>, String> {
    let mut launch_bounds = BTreeMap::new();
    for s in sources {
        let src = std::fs::read_to_string(s).map_err(|e| format!("{}: {e}", s.display()))?;
        for k in isoflop::cuda::nvrtc::kernel_decls(&src) {
            if let Some(expr) = &k.launch_bound {
                let b =
                    isoflop::cuda::nvrtc::resolve_launch_bound(&src, expr).ok_or_else(|| {
                        format!(
                            "{}: cannot resolve __launch_bounds__({expr}) of {}",
                            s.display(),
                            k.name
                        )
                    })?;
                launch_bounds.insert(k.name, b);
            }
        }
    }
    Ok(launch_bounds)
}

impl EmuLib {
    /// Compile `sources` (each its own translation unit) with `flavor` and link them into one shared
    /// object under `target/emu/`, reusing earlier builds with the same inputs; then load it.
    pub fn build(sources: &[PathBuf], flavor: Flavor) -> Result<EmuLib, String> {
        let path = Self::build_so(sources, flavor)?;
        let launch_bounds = scan_launch_bounds(sources)?;
        // SAFETY: the library is our own generated code; its initialisers only set up statics.
        let lib = unsafe { libloading::Library::new(&path) }
            .map_err(|e| format!("loading {}: {e}", path.display()))?;
        Ok(EmuLib {
            lib,
            path,
            launch_bounds,
        })
    }

    /// Build (or find) the shared object and return its path, without loading it.
    pub fn build_so(sources: &[PathBuf], flavor: Flavor) -> Result<PathBuf, String> {
        let root = repo_root();
        let inc = cuda_include()?;
        let emu_dir = root.join("tests").join("emu");
        let kdir = root.join("kernels");
        let tool = compiler()?;
        let flags = flavor.flags();
        let mut common = Sha256::new();
        common.update(format!("{:?}{:?}", tool.path(), flags));
        header_digest(&mut common);
        let common = common.finalize();
        let base = root.join("target").join("emu").join(flavor.name());
        std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;

        let mut objects = Vec::new();
        let mut jobs = Vec::new();
        let mut so_hash = Sha256::new();
        so_hash.update(common);
        // One translation unit per source, plus the runtime exports.
        // (unit name, generated source, extra bytes that only feed the hash)
        let mut units: Vec<(String, String, Vec<u8>)> = Vec::new();
        for s in sources {
            let src = std::fs::read_to_string(s).map_err(|e| format!("{}: {e}", s.display()))?;
            let mut tu = format!("#include \"{}\"\n", s.display());
            for k in kernel_names(&src) {
                let _ = writeln!(
                    tu,
                    "ISOFLOP_EMU_EXPORT({k})\nextern \"C\" __attribute__((visibility(\"default\"))) const char* \
                     isoflop_emu_sig_{k}() {{ return ::emu::param_sizes(&{k}); }}"
                );
            }
            let stem = s
                .file_stem()
                .map(|x| x.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tag = hex(&Sha256::digest(s.to_string_lossy().as_bytes()))[..8].to_owned();
            units.push((format!("{stem}_{tag}"), tu, src.into_bytes()));
        }
        units.push((
            "runtime".into(),
            "ISOFLOP_EMU_RUNTIME_EXPORTS\n".into(),
            Vec::new(),
        ));
        for (name, tu, extra) in &units {
            let mut h = Sha256::new();
            h.update(common);
            h.update(tu.as_bytes());
            h.update(extra);
            let hh = hex(&h.finalize())[..16].to_owned();
            so_hash.update(&hh);
            let cpp = base.join(format!("{name}-{hh}.cpp"));
            let obj = base.join(format!("{name}-{hh}.o"));
            objects.push(obj.clone());
            if obj.exists() {
                continue;
            }
            std::fs::write(&cpp, tu).map_err(|e| format!("{}: {e}", cpp.display()))?;
            let tmp = base.join(format!("{name}-{hh}.{}.o.tmp", tmp_tag()));
            let mut cmd = tool.to_command();
            cmd.args(&flags)
                .arg("-include")
                .arg(emu_dir.join("cuda_emu.h"))
                .arg("-I")
                .arg(&emu_dir)
                .arg("-I")
                .arg(&kdir)
                .arg("-I")
                .arg(&inc)
                .arg("-c")
                .arg(&cpp)
                .arg("-o")
                .arg(&tmp);
            let child = cmd
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("running the C++ compiler: {e}"))?;
            jobs.push((child, tmp, obj, cpp));
        }
        for (child, tmp, obj, cpp) in jobs {
            let out = child
                .wait_with_output()
                .map_err(|e| format!("running the C++ compiler: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "emulation build of {} failed:\n{}{}",
                    cpp.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::fs::rename(&tmp, &obj).map_err(|e| format!("{}: {e}", obj.display()))?;
        }
        let so = base.join(format!(
            "libisoflop_emu-{}.so",
            &hex(&so_hash.finalize())[..16]
        ));
        if !so.exists() {
            let tmp = base.join(format!("{}.{}.tmp", so.display(), tmp_tag()));
            let mut cmd = tool.to_command();
            cmd.args(&flags)
                .arg("-shared")
                .args(&objects)
                .arg("-o")
                .arg(&tmp);
            run(&mut cmd, "linking the emulation library")?;
            std::fs::rename(&tmp, &so).map_err(|e| format!("{}: {e}", so.display()))?;
        }
        Ok(so)
    }

    /// Launch kernel `name` over `grid` x `block` with `shmem` bytes of dynamic shared memory. Blocks
    /// until the whole grid has run. Errors: unknown kernel, argument count/size mismatch, or an emulator
    /// failure (deadlock, divergent warp collective, misaligned ldmatrix/cp.async, `__trap`).
    pub fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shmem: usize,
        args: &[&dyn KernelArg],
    ) -> Result<(), String> {
        let threads = block.0 as u64 * block.1 as u64 * block.2 as u64;
        if let Some(&b) = self.launch_bounds.get(name) {
            if threads > b as u64 {
                return Err(format!(
                    "kernel {name}: launched with {threads} threads per block but declares \
                     __launch_bounds__({b}) (the driver refuses such a launch)"
                ));
            }
        }
        // SAFETY: symbols generated by build() with exactly these signatures.
        let (f, sig) = unsafe {
            let f: libloading::Symbol<LaunchFn> = self
                .lib
                .get(format!("isoflop_emu_launch_{name}\0").as_bytes())
                .map_err(|_| format!("kernel {name} not found in {}", self.path.display()))?;
            let sig: libloading::Symbol<SigFn> = self
                .lib
                .get(format!("isoflop_emu_sig_{name}\0").as_bytes())
                .map_err(|_| format!("kernel {name}: no signature"))?;
            (*f, CStr::from_ptr(sig()).to_string_lossy().into_owned())
        };
        let want: Vec<usize> = if sig.is_empty() {
            vec![]
        } else {
            sig.split(',').map(|x| x.parse().unwrap_or(0)).collect()
        };
        let got: Vec<usize> = args.iter().map(|a| a.arg_size()).collect();
        if want != got {
            return Err(format!(
                "kernel {name}: parameter sizes {want:?} but arguments of sizes {got:?}"
            ));
        }
        let mut ptrs: Vec<*mut c_void> = args.iter().map(|a| a.arg_ptr()).collect();
        // SAFETY: the pointers in `ptrs` point to live values of the right sizes; the kernel's own memory
        // accesses are the caller's responsibility, as on the GPU.
        let rc = unsafe {
            f(
                grid.0,
                grid.1,
                grid.2,
                block.0,
                block.1,
                block.2,
                shmem,
                ptrs.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(format!("kernel {name}: {}", self.last_error()));
        }
        Ok(())
    }

    /// The emulator's message about the last failed launch on this host thread.
    pub fn last_error(&self) -> String {
        // SAFETY: generated symbol, returns a NUL-terminated string owned by the library.
        unsafe {
            match self
                .lib
                .get::<unsafe extern "C" fn() -> *const c_char>(b"isoflop_emu_last_error\0")
            {
                Ok(f) => CStr::from_ptr(f()).to_string_lossy().into_owned(),
                Err(_) => "unknown error".into(),
            }
        }
    }

    /// Set the thread scheduling order for launches from the calling host thread.
    pub fn set_schedule(&self, s: Schedule) {
        let (mode, seed) = match s {
            Schedule::Forward => (0, 0),
            Schedule::Reverse => (1, 0),
            Schedule::Shuffle(seed) => (2, seed),
        };
        // SAFETY: generated symbol with this signature.
        unsafe {
            if let Ok(f) = self
                .lib
                .get::<unsafe extern "C" fn(c_int, u64)>(b"isoflop_emu_set_schedule\0")
            {
                f(mode, seed)
            }
        }
    }
}

/// Every kernel in `kernels/*.cu`, release flavor, built and loaded once per test binary.
pub fn kernels() -> &'static EmuLib {
    static LIB: OnceLock<EmuLib> = OnceLock::new();
    LIB.get_or_init(|| match EmuLib::build(&kernel_sources(), Flavor::Release) {
        Ok(l) => l,
        Err(e) => panic!("building the emulated kernels: {e}"),
    })
}

/// Paths of the sanitizer runtimes to preload for a [`Flavor::Sanitize`] library.
pub fn sanitizer_preload() -> Result<String, String> {
    let tool = compiler()?;
    let mut libs = Vec::new();
    for name in ["libasan.so", "libubsan.so"] {
        let out = tool
            .to_command()
            .arg(format!("-print-file-name={name}"))
            .output()
            .map_err(|e| format!("asking the compiler for {name}: {e}"))?;
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !Path::new(&p).is_absolute() || !Path::new(&p).exists() {
            return Err(format!("{name} not found (compiler says {p:?})"));
        }
        libs.push(p);
    }
    Ok(libs.join(":"))
}

/// Environment variable telling a re-executed test binary where the sanitized library is.
pub const SANITIZED_LIB_ENV: &str = "ISOFLOP_EMU_SANITIZED_LIB";

/// Re-run the current test binary's test `child_test` (its name without the module path: no other test's
/// name may contain it; may be `#[ignore]`d) in a child process with the sanitizer runtimes preloaded and
/// [`SANITIZED_LIB_ENV`] pointing at `so`. Returns (success, combined output); `Err` when the name does not
/// select exactly one test.
pub fn run_sanitized_child(child_test: &str, so: &Path) -> Result<(bool, String), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .args([
            child_test,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LD_PRELOAD", sanitizer_preload()?)
        .env(SANITIZED_LIB_ENV, so)
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=0:verify_asan_link_order=0:abort_on_error=0:halt_on_error=1",
        )
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        .output()
        .map_err(|e| format!("running the sanitized child: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !text.contains("running 1 test\n") {
        return Err(format!(
            "{child_test}: the child must run exactly one test:\n{text}"
        ));
    }
    Ok((out.status.success(), text))
}

/// In a child started by [`run_sanitized_child`]: load the sanitized library (None when not in a child).
pub fn sanitized_lib_in_child() -> Option<EmuLib> {
    let so = PathBuf::from(std::env::var_os(SANITIZED_LIB_ENV)?);
    // SAFETY: our generated library; the sanitizer runtimes are preloaded by the parent.
    let lib =
        unsafe { libloading::Library::new(&so) }.expect("loading the sanitized emulation library");
    let launch_bounds = scan_launch_bounds(&kernel_sources()).expect("reading the kernel sources");
    Some(EmuLib {
        lib,
        path: so,
        launch_bounds,
    })
}

//! Run-time compilation of `kernels/*.cu` with NVRTC to a cubin for the exact architecture of the GPU
//! found, with an on-disk cache.
//!
//! The sources are embedded in the binary (`include_str!`), so it runs from any directory. NVRTC is
//! loaded dynamically through cudarc (`libnvrtc.so.13` on the loader's path, else found and preloaded
//! by [`super::discover`]: the toolkit, PyTorch's CUDA 13 wheels, a checkout's pinned wheels);
//! [`nvrtc_present`] checks for it first, so a machine without it gets an error, never a panic. The
//! options are [`NVRTC_OPTIONS`] plus the architecture ([`arch_option`]); `tests/device/nvrtc_compile.rs`
//! checks the same list for sm_90a in CI. Loading a cubin (not PTX) avoids the "NVRTC newer than the driver" trap
//! (see CUDA-NOTES.md). Cubins are cached under [`cache_dir`], keyed by the sha256 of the source, every
//! header, the options, the architecture and the NVRTC version.

use super::gpu::GpuError;
use sha2::{Digest, Sha256};
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};

/// NVRTC options for every kernel source, besides the architecture ([`arch_option`]) and include
/// directories. No `--use_fast_math`: kernels call the fast intrinsics (`__expf`, ...) explicitly where
/// they are wanted; everything else keeps IEEE division/sqrt and denormals, like the emulation build.
pub const NVRTC_OPTIONS: &[&str] = &["--std=c++17", "--fmad=true", "-DNDEBUG"];

/// One embedded source file of `kernels/`.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// File name, e.g. `gelu.cu`.
    pub file: &'static str,
    /// Its text.
    pub text: &'static str,
}

macro_rules! embed {
    ($($f:literal),* $(,)?) => {
        &[$(KernelSource { file: $f, text: include_str!(concat!("../../kernels/", $f)) }),*]
    };
}

/// The compiled translation units (`kernels/*.cu`), in file-name order.
pub const SOURCES: &[KernelSource] = embed!(
    "adamw.cu",
    "attention.cu",
    "cross_entropy.cu",
    "embedding.cu",
    "gelu.cu",
    "layernorm.cu",
    "reduce.cu",
    "residual.cu",
);

/// The headers they include (`kernels/*.cuh`), handed to NVRTC by name.
pub const HEADERS: &[KernelSource] = embed!("common.cuh", "ptx.cuh");

/// sha256 (hex) over every embedded kernel file (sources and headers) in file-name order: each file's
/// name then its bytes.
pub fn sources_sha256() -> String {
    let mut all: Vec<&KernelSource> = SOURCES.iter().chain(HEADERS).collect();
    all.sort_by_key(|s| s.file);
    let mut h = Sha256::new();
    for s in all {
        h.update(s.file.as_bytes());
        h.update(s.text.as_bytes());
    }
    hex(&h.finalize())
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Target name for compute capability `cc`: `sm_{major}{minor}`, with the architecture-specific `a`
/// suffix on 9.0 (Hopper's wgmma/setmaxnreg need sm_90a).
pub fn arch_name(cc: (i32, i32)) -> String {
    let a = if cc == (9, 0) { "a" } else { "" };
    format!("sm_{}{}{a}", cc.0, cc.1)
}

/// The architecture option for compute capability `cc`, e.g. `--gpu-architecture=sm_90a`.
pub fn arch_option(cc: (i32, i32)) -> String {
    format!("--gpu-architecture={}", arch_name(cc))
}

/// Every option for `cc` with the given include directories, in the order NVRTC gets them.
pub fn options_for(cc: (i32, i32), include_dirs: &[PathBuf]) -> Vec<String> {
    let mut o = vec![arch_option(cc)];
    o.extend(NVRTC_OPTIONS.iter().map(|s| s.to_string()));
    o.extend(include_dirs.iter().map(|d| format!("-I{}", d.display())));
    o
}

/// Names of the `extern "C" __global__` kernels declared in a source (comments ignored).
pub fn kernel_names(src: &str) -> Vec<String> {
    kernel_decls(src).into_iter().map(|k| k.name).collect()
}

/// One `extern "C" __global__` kernel of a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelDecl {
    /// The kernel's name.
    pub name: String,
    /// The first argument of its `__launch_bounds__` (the most threads per block it may be launched
    /// with), as written: `None` without one.
    pub launch_bound: Option<String>,
}

/// The `extern "C" __global__` kernels declared in a source, in order (comments ignored).
pub fn kernel_decls(src: &str) -> Vec<KernelDecl> {
    let code = strip_comments(src);
    let key = "extern \"C\" __global__";
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find(key) {
        rest = &rest[i + key.len()..];
        let mut s = rest.trim_start();
        let mut last = String::new();
        let mut bound = None;
        loop {
            if let Some(r) = s.strip_prefix("__launch_bounds__") {
                let close = r.find(')').map(|c| c + 1).unwrap_or(r.len());
                let args = r[..close].trim_start().trim_start_matches('(');
                let first = args.split([',', ')']).next().unwrap_or("").trim();
                bound = Some(first.to_string());
                s = r[close..].trim_start();
                continue;
            }
            match s.chars().next() {
                Some('(') | None => break,
                Some(c) if c.is_alphanumeric() || c == '_' => {
                    let end = s
                        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .unwrap_or(s.len());
                    last = s[..end].to_string();
                    s = s[end..].trim_start();
                }
                Some(c) => s = s[c.len_utf8()..].trim_start(),
            }
        }
        if !last.is_empty() {
            out.push(KernelDecl {
                name: last,
                launch_bound: bound,
            });
        }
    }
    out
}

/// The value of a kernel's `__launch_bounds__` argument in `src`: an integer literal, or a constant
/// (`NTHREADS`, `attn::NTHREADS`) defined in the same source as `NAME = <integer>`.
pub fn resolve_launch_bound(src: &str, expr: &str) -> Option<u32> {
    if let Ok(v) = expr.parse() {
        return Some(v);
    }
    let name = expr.rsplit("::").next()?.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let code = strip_comments(src);
    let mut rest = code.as_str();
    while let Some(i) = rest.find(name) {
        let before = rest[..i].chars().next_back();
        let after = &rest[i + name.len()..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(v) = after.trim_start().strip_prefix('=') {
            let v = v.trim_start();
            let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
            if let Ok(n) = v[..end].parse() {
                return Some(n);
            }
        }
    }
    None
}

fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut it = src.chars().peekable();
    while let Some(c) = it.next() {
        if c == '/' && it.peek() == Some(&'/') {
            for d in it.by_ref() {
                if d == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else if c == '/' && it.peek() == Some(&'*') {
            it.next();
            let mut prev = ' ';
            for d in it.by_ref() {
                if prev == '*' && d == '/' {
                    break;
                }
                prev = d;
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether libnvrtc can be loaded (cudarc would panic on first use without it).
pub fn nvrtc_present() -> bool {
    super::discover::ensure_loaded(super::discover::CudaLib::Nvrtc, || {
        // SAFETY: only tries to open the shared library.
        unsafe { cudarc::nvrtc::sys::is_culib_present() }
    })
}

fn unavailable() -> GpuError {
    GpuError::Unavailable(
        "NVRTC (libnvrtc.so.13) not found on the loader's path, in the CUDA toolkit or in PyTorch's \
         nvidia/cu13 wheels: add its folder to LD_LIBRARY_PATH or ISOFLOP_CUDA_LIB"
            .into(),
    )
}

/// NVRTC's (major, minor) version.
pub fn nvrtc_version() -> Result<(i32, i32), GpuError> {
    if !nvrtc_present() {
        return Err(unavailable());
    }
    let (mut major, mut minor) = (0 as c_int, 0 as c_int);
    super::gpu::catch_cuda_panic("loading NVRTC", || {
        // SAFETY: two valid out-pointers.
        let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        check(rc, "nvrtcVersion")
    })?;
    Ok((major, minor))
}

fn error_string(rc: cudarc::nvrtc::sys::nvrtcResult) -> String {
    // SAFETY: NVRTC returns a static string for any code.
    unsafe {
        let p = cudarc::nvrtc::sys::nvrtcGetErrorString(rc);
        if p.is_null() {
            format!("{rc:?}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

fn check(rc: cudarc::nvrtc::sys::nvrtcResult, what: &str) -> Result<(), GpuError> {
    if rc == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(GpuError::Nvrtc {
            what: what.to_string(),
            err: cudarc::nvrtc::result::NvrtcError(rc),
        })
    }
}

/// A compiled source: its cubin and NVRTC's log (warnings, ptxas resource lines).
pub struct Compiled {
    /// The cubin (ELF).
    pub cubin: Vec<u8>,
    /// NVRTC's log.
    pub log: String,
}

/// Compile one source (with [`HEADERS`] available by name) with `options`; a failure carries NVRTC's log.
pub fn compile_cubin(file: &str, text: &str, options: &[String]) -> Result<Compiled, GpuError> {
    use cudarc::nvrtc::sys;
    if !nvrtc_present() {
        return Err(unavailable());
    }
    let csrc =
        CString::new(text).map_err(|_| GpuError::Compile(format!("{file}: NUL in source")))?;
    let cname = CString::new(file).map_err(|_| GpuError::Compile(format!("{file}: bad name")))?;
    let hdr_text: Vec<CString> = HEADERS
        .iter()
        .map(|h| CString::new(h.text).unwrap_or_default())
        .collect();
    let hdr_name: Vec<CString> = HEADERS
        .iter()
        .map(|h| CString::new(h.file).unwrap_or_default())
        .collect();
    let hdr_text_p: Vec<*const c_char> = hdr_text.iter().map(|c| c.as_ptr()).collect();
    let hdr_name_p: Vec<*const c_char> = hdr_name.iter().map(|c| c.as_ptr()).collect();
    let copts: Vec<CString> = options
        .iter()
        .map(|o| CString::new(o.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| GpuError::Compile("NUL in an NVRTC option".into()))?;
    let popts: Vec<*const c_char> = copts.iter().map(|c| c.as_ptr()).collect();
    super::gpu::catch_cuda_panic("running NVRTC", || {
        let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
        // SAFETY: every pointer is a valid NUL-terminated string alive for the calls below; the program
        // is destroyed on every path.
        unsafe {
            check(
                sys::nvrtcCreateProgram(
                    &mut prog,
                    csrc.as_ptr(),
                    cname.as_ptr(),
                    HEADERS.len() as c_int,
                    hdr_text_p.as_ptr(),
                    hdr_name_p.as_ptr(),
                ),
                &format!("nvrtcCreateProgram({file})"),
            )?;
            let rc = sys::nvrtcCompileProgram(prog, popts.len() as c_int, popts.as_ptr());
            let mut n = 0usize;
            let mut log = String::new();
            if sys::nvrtcGetProgramLogSize(prog, &mut n) == sys::nvrtcResult::NVRTC_SUCCESS && n > 1
            {
                let mut buf = vec![0u8; n];
                if sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char)
                    == sys::nvrtcResult::NVRTC_SUCCESS
                {
                    log = String::from_utf8_lossy(&buf[..n - 1]).into_owned();
                }
            }
            let out = if rc != sys::nvrtcResult::NVRTC_SUCCESS {
                Err(GpuError::Compile(format!(
                    "NVRTC failed to compile kernels/{file} ({}) with options {options:?}:\n{log}",
                    error_string(rc)
                )))
            } else {
                let mut size = 0usize;
                check(sys::nvrtcGetCUBINSize(prog, &mut size), "nvrtcGetCUBINSize").and_then(|_| {
                    let mut cubin = vec![0u8; size];
                    check(
                        sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char),
                        "nvrtcGetCUBIN",
                    )?;
                    if cubin.is_empty() {
                        return Err(GpuError::Compile(format!(
                            "{file}: NVRTC produced an empty cubin"
                        )));
                    }
                    Ok(Compiled { cubin, log })
                })
            };
            sys::nvrtcDestroyProgram(&mut prog);
            out
        }
    })
}

/// The cubin cache directory, `kernels/` under isoflop's cache root (the same root as the tokenized
/// sample's): `$ISOFLOP_CACHE/kernels` if set, else `$XDG_CACHE_HOME/isoflop/kernels`, else
/// `~/.cache/isoflop/kernels`, else a folder under the system temp dir.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ISOFLOP_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("kernels");
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("isoflop").join("kernels");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h)
            .join(".cache")
            .join("isoflop")
            .join("kernels");
    }
    std::env::temp_dir().join("isoflop-kernels")
}

/// A directory holding `cuda_bf16.h`, and its `cccl` subfolder when present, searched at run time on
/// this machine ([`super::discover`]: `$ISOFLOP_CUDA_INCLUDE`, the toolkit, PyTorch's CUDA 13 wheels,
/// a checkout's pinned NVRTC wheels above the executable). Empty when none is found (NVRTC may still
/// have the header built in; otherwise its log says what is missing).
pub fn find_cuda_include() -> Vec<PathBuf> {
    super::discover::SearchEnv::current().include_dirs()
}

/// One loaded-to-be module: file name, cubin, kernel names.
pub type ModuleImage = (String, Vec<u8>, Vec<String>);

/// The cache key of one source for `options` and NVRTC `version`.
pub fn cache_key(src: &KernelSource, options: &[String], version: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(src.file.as_bytes());
    h.update([0]);
    h.update(src.text.as_bytes());
    for hd in HEADERS {
        h.update([0]);
        h.update(hd.file.as_bytes());
        h.update([0]);
        h.update(hd.text.as_bytes());
    }
    // Include paths are machine-specific; the headers they hold are the toolkit's, pinned by the
    // NVRTC version below, so they stay out of the key (the arch and other options stay in).
    for o in options.iter().filter(|o| !o.starts_with("-I")) {
        h.update([1]);
        h.update(o.as_bytes());
    }
    h.update(format!("nvrtc {}.{}", version.0, version.1).as_bytes());
    hex(&h.finalize())
}

/// Every source compiled for `cc` (from `cache` when present there, else compiled and stored), with the
/// kernel names of each. Cache write failures are ignored (the cubin is still returned).
pub fn build_all(
    cc: (i32, i32),
    include_dirs: &[PathBuf],
    cache: Option<&Path>,
) -> Result<Vec<ModuleImage>, GpuError> {
    let version = nvrtc_version()?;
    let options = options_for(cc, include_dirs);
    let arch = arch_name(cc);
    let mut out = Vec::with_capacity(SOURCES.len());
    for src in SOURCES {
        let key = cache_key(src, &options, version);
        let stem = src.file.trim_end_matches(".cu");
        let path = cache.map(|d| d.join(format!("{stem}-{arch}-{}.cubin", &key[..32])));
        let cached = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .filter(|b| b.starts_with(b"\x7fELF"));
        let cubin = match cached {
            Some(b) => b,
            None => {
                let c = compile_cubin(src.file, src.text, &options).map_err(|e| {
                    if include_dirs.is_empty() {
                        GpuError::Compile(format!(
                            "{e}\n(no CUDA include directory with cuda_bf16.h was found: set \
                             ISOFLOP_CUDA_INCLUDE or CUDA_HOME)"
                        ))
                    } else {
                        e
                    }
                })?;
                if let (Some(p), Some(dir)) = (&path, cache) {
                    let _ = std::fs::create_dir_all(dir);
                    // Unique per process and call: two threads building at once (parallel tests,
                    // two backends) must not write into one temporary file.
                    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let tmp = p.with_extension(format!("tmp{}-{seq}", std::process::id()));
                    if std::fs::write(&tmp, &c.cubin).is_ok() {
                        let _ = std::fs::rename(&tmp, p);
                    }
                }
                c.cubin
            }
        };
        out.push((src.file.to_string(), cubin, kernel_names(src.text)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_file_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("kernels/")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cu") || n.ends_with(".cuh"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = SOURCES
            .iter()
            .chain(HEADERS)
            .map(|s| s.file.to_string())
            .collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "embed new kernel files in src/cuda/nvrtc.rs"
        );
        for s in SOURCES.iter().chain(HEADERS) {
            let disk = std::fs::read_to_string(dir.join(s.file)).expect("read");
            assert_eq!(disk, s.text, "{} differs from the embedded copy", s.file);
        }
    }

    #[test]
    fn architecture_names() {
        assert_eq!(arch_name((9, 0)), "sm_90a");
        assert_eq!(arch_name((8, 0)), "sm_80");
        assert_eq!(arch_name((12, 0)), "sm_120");
        assert_eq!(arch_option((9, 0)), "--gpu-architecture=sm_90a");
    }

    #[test]
    fn kernel_names_are_found() {
        let names = kernel_names(
            SOURCES
                .iter()
                .find(|s| s.file == "attention.cu")
                .unwrap()
                .text,
        );
        for k in [
            "rope_table_init",
            "attention_forward",
            "attention_backward_prep",
            "attention_backward",
            "qk_norm_scale_grad_reduce",
        ] {
            assert!(names.iter().any(|n| n == k), "{k} missing from {names:?}");
        }
        let n = kernel_names("// extern \"C\" __global__ void no()\nextern \"C\" __global__ void __launch_bounds__(256) yes(int a) {}");
        assert_eq!(n, vec!["yes".to_string()]);
    }

    #[test]
    fn launch_bounds_are_read_and_resolved() {
        let src =
            "namespace attn { constexpr int NTHREADS = 128; constexpr int NTHREADS_X = 7; }\n\
                   extern \"C\" __global__ void __launch_bounds__(attn::NTHREADS, 4) a(int x) {}\n\
                   extern \"C\" __global__ void __launch_bounds__( 512 ) b() {}\n\
                   extern \"C\" __global__ void c() {}";
        let d = kernel_decls(src);
        let got: Vec<(&str, Option<&str>)> = d
            .iter()
            .map(|k| (k.name.as_str(), k.launch_bound.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", Some("attn::NTHREADS")),
                ("b", Some("512")),
                ("c", None)
            ]
        );
        assert_eq!(resolve_launch_bound(src, "attn::NTHREADS"), Some(128));
        assert_eq!(resolve_launch_bound(src, "512"), Some(512));
        assert_eq!(resolve_launch_bound(src, "MISSING"), None);
        // Every kernel the backend loads declares a bound that resolves to at most 1024 threads.
        for s in SOURCES {
            for k in kernel_decls(s.text) {
                let b = k
                    .launch_bound
                    .as_deref()
                    .and_then(|e| resolve_launch_bound(s.text, e));
                assert!(
                    b.is_some_and(|b| (32..=1024).contains(&b)),
                    "{}: {} declares __launch_bounds__ {:?}",
                    s.file,
                    k.name,
                    k.launch_bound
                );
            }
        }
    }

    #[test]
    fn cache_key_depends_on_arch_version_and_options() {
        let s = &SOURCES[0];
        let o90 = options_for((9, 0), &[]);
        let o80 = options_for((8, 0), &[]);
        let k = cache_key(s, &o90, (13, 0));
        assert_ne!(k, cache_key(s, &o80, (13, 0)));
        assert_ne!(k, cache_key(s, &o90, (13, 1)));
        assert_ne!(k, cache_key(&SOURCES[1], &o90, (13, 0)));
        // Include directories do not change the key.
        assert_eq!(
            k,
            cache_key(s, &options_for((9, 0), &["/x".into()]), (13, 0))
        );
    }

    #[test]
    fn sha_is_stable_and_hex() {
        let a = sources_sha256();
        assert_eq!(a.len(), 64);
        assert_eq!(a, sources_sha256());
    }
}

//! NVRTC compile check: every `kernels/*.cu` compiles with NVRTC 13.0 for sm_90a down to a cubin (ptxas
//! runs inside NVRTC), with the options of `isoflop::cuda::nvrtc::NVRTC_OPTIONS` (the run-time
//! loader's list) plus `--gpu-architecture=sm_90a`. Never skipped: the pinned NVRTC
//! wheels are installed into `target/nvrtc-13.0` by `.ci/install-nvrtc.sh` when missing. Prints the
//! registers, spills, stack and shared memory of every kernel from ptxas's verbose log.

use crate::util::harness;

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;

type Prog = *mut std::ffi::c_void;

/// The few NVRTC entry points used here, loaded from the wheel's libnvrtc.so.13 by path.
struct Nvrtc {
    _lib: libloading::Library,
    _builtins: libloading::Library,
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int,
    create: unsafe extern "C" fn(
        *mut Prog,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int,
    compile: unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int,
    log_size: unsafe extern "C" fn(Prog, *mut usize) -> c_int,
    log: unsafe extern "C" fn(Prog, *mut c_char) -> c_int,
    cubin_size: unsafe extern "C" fn(Prog, *mut usize) -> c_int,
    destroy: unsafe extern "C" fn(*mut Prog) -> c_int,
    error_string: unsafe extern "C" fn(c_int) -> *const c_char,
}

impl Nvrtc {
    fn load(path: &Path) -> Nvrtc {
        // SAFETY: loading NVRTC runs only its own initialisers; the symbols have the C signatures of nvrtc.h.
        unsafe {
            // NVRTC dlopens libnvrtc-builtins.so.13.0 by soname; with it already loaded (by full path) the
            // loader finds it without LD_LIBRARY_PATH.
            let builtins_path = path.with_file_name("libnvrtc-builtins.so.13.0");
            let builtins = libloading::Library::new(&builtins_path)
                .unwrap_or_else(|e| panic!("loading {}: {e}", builtins_path.display()));
            let lib = libloading::Library::new(path)
                .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
            macro_rules! sym {
                ($n:literal) => {
                    *lib.get($n)
                        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy($n)))
                };
            }
            Nvrtc {
                version: sym!(b"nvrtcVersion\0"),
                create: sym!(b"nvrtcCreateProgram\0"),
                compile: sym!(b"nvrtcCompileProgram\0"),
                log_size: sym!(b"nvrtcGetProgramLogSize\0"),
                log: sym!(b"nvrtcGetProgramLog\0"),
                cubin_size: sym!(b"nvrtcGetCUBINSize\0"),
                destroy: sym!(b"nvrtcDestroyProgram\0"),
                error_string: sym!(b"nvrtcGetErrorString\0"),
                _lib: lib,
                _builtins: builtins,
            }
        }
    }

    fn err(&self, rc: c_int) -> String {
        // SAFETY: NVRTC returns a static string for any code.
        unsafe {
            CStr::from_ptr((self.error_string)(rc))
                .to_string_lossy()
                .into_owned()
        }
    }

    /// Compile `src`; returns (success, log, cubin size).
    fn compile(&self, name: &str, src: &str, opts: &[String]) -> (bool, String, usize) {
        let csrc = CString::new(src).expect("source without NUL");
        let cname = CString::new(name).expect("name without NUL");
        let copts: Vec<CString> = opts
            .iter()
            .map(|o| CString::new(o.as_str()).expect("option"))
            .collect();
        let popts: Vec<*const c_char> = copts.iter().map(|c| c.as_ptr()).collect();
        let mut prog: Prog = std::ptr::null_mut();
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the calls.
        unsafe {
            let rc = (self.create)(
                &mut prog,
                csrc.as_ptr(),
                cname.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            );
            assert_eq!(rc, 0, "nvrtcCreateProgram({name}): {}", self.err(rc));
            let rc = (self.compile)(prog, popts.len() as c_int, popts.as_ptr());
            let mut n = 0usize;
            (self.log_size)(prog, &mut n);
            let mut buf = vec![0u8; n.max(1)];
            (self.log)(prog, buf.as_mut_ptr() as *mut c_char);
            let log = String::from_utf8_lossy(&buf[..n.saturating_sub(1)]).into_owned();
            let mut cubin = 0usize;
            if rc == 0 {
                (self.cubin_size)(prog, &mut cubin);
            }
            (self.destroy)(&mut prog);
            let log = if rc == 0 {
                log
            } else {
                format!("{}\n{log}", self.err(rc))
            };
            (rc == 0, log, cubin)
        }
    }
}

/// The run-time loader's option list for sm_90a (H100/H200), include directories excluded.
fn options_file() -> Vec<String> {
    isoflop::cuda::nvrtc::options_for((9, 0), &[])
}

/// Per-kernel resource lines from ptxas's verbose log: (kernel, registers, spill stores, spill loads,
/// stack bytes, smem bytes).
fn resources(log: &str) -> Vec<(String, u32, u32, u32, u32, u32)> {
    let num_before = |line: &str, key: &str| -> u32 {
        line.find(key)
            .and_then(|i| {
                line[..i]
                    .split_whitespace()
                    .last()
                    .and_then(|w| w.parse().ok())
            })
            .unwrap_or(0)
    };
    let mut out: Vec<(String, u32, u32, u32, u32, u32)> = Vec::new();
    let mut cur: Option<String> = None;
    for line in log.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + "Compiling entry function '".len()..];
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push((name.clone(), 0, 0, 0, 0, 0));
            cur = Some(name);
        } else if let (Some(_), Some(last)) = (&cur, out.last_mut()) {
            if line.contains("bytes stack frame") {
                last.4 = num_before(line, "bytes stack frame");
                last.2 = num_before(line, "bytes spill stores");
                last.3 = num_before(line, "bytes spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                last.1 = num_before(line, "registers");
                last.5 = num_before(line, "bytes smem");
            }
        }
    }
    out
}

/// Registers of one block of `threads` threads at `regs` per thread on sm_90, as the hardware allocates
/// them: per thread rounded up to a multiple of 8, per warp to a multiple of 256.
fn block_registers(regs: u32, threads: u32) -> u32 {
    let per_warp = (regs.div_ceil(8) * 8 * 32).div_ceil(256) * 256;
    threads.div_ceil(32) * per_warp
}

/// Registers per block (and per SM) of sm_90.
const SM90_REGS_PER_BLOCK: u32 = 65536;
/// Shared memory a block may use without the opt-in attribute (the backend never opts in).
const STATIC_SMEM_LIMIT: u32 = 48 * 1024;

#[test]
fn every_kernel_compiles_with_nvrtc_for_sm_90a() {
    let dir = harness::nvrtc_dir().unwrap_or_else(|e| panic!("{e}"));
    let nv = dir.join("nvidia").join("cu13");
    let nvrtc = Nvrtc::load(&nv.join("lib").join("libnvrtc.so.13"));
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    unsafe { (nvrtc.version)(&mut major, &mut minor) };
    assert_eq!((major, minor), (13, 0), "NVRTC must be pinned to 13.0");

    let kdir = harness::repo_root().join("kernels");
    let mut opts = options_file();
    opts.push(format!("-I{}", kdir.display()));
    opts.push(format!("-I{}", nv.join("include").display()));
    opts.push(format!("-I{}", nv.join("include").join("cccl").display()));
    opts.push("--ptxas-options=-v".into());

    let mut sources = harness::kernel_sources();
    assert!(!sources.is_empty(), "no kernels/*.cu found");
    // The emulator self-test kernels use every wrapper of ptx.cuh: ptxas checks the inline PTX there.
    sources.push(
        harness::repo_root()
            .join("tests")
            .join("emu")
            .join("selftest.cu"),
    );
    let mut failures = Vec::new();
    println!(
        "{:<44} {:>5} {:>7} {:>7} {:>6} {:>7} {:>6}",
        "kernel", "regs", "spill>", "spill<", "stack", "smem", "bound"
    );
    for src_path in &sources {
        let src = std::fs::read_to_string(src_path)
            .unwrap_or_else(|e| panic!("{}: {e}", src_path.display()));
        let name = src_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (ok, log, cubin) = nvrtc.compile(&name, &src, &opts);
        if !ok {
            failures.push(format!("{name}:\n{log}"));
            continue;
        }
        assert!(cubin > 0, "{name}: empty cubin");
        // The emulator self-test kernels are launched by hand; the backend's kernels must declare the
        // most threads they are launched with, and fit them.
        let is_backend = src_path.starts_with(&kdir);
        let res = resources(&log);
        for k in isoflop::cuda::nvrtc::kernel_decls(&src) {
            let Some(r) = res.iter().find(|r| r.0 == k.name) else {
                failures.push(format!(
                    "{name}: kernel {} missing from ptxas's log:\n{log}",
                    k.name
                ));
                continue;
            };
            let bound = k
                .launch_bound
                .as_deref()
                .and_then(|e| isoflop::cuda::nvrtc::resolve_launch_bound(&src, e));
            println!(
                "{:<44} {:>5} {:>7} {:>7} {:>6} {:>7} {:>6}",
                format!("{name}:{}", r.0),
                r.1,
                r.2,
                r.3,
                r.4,
                r.5,
                bound.map_or("-".to_string(), |b| b.to_string())
            );
            if !is_backend {
                continue;
            }
            match bound {
                None => failures.push(format!(
                    "{name}: kernel {} declares no resolvable __launch_bounds__ (got {:?})",
                    k.name, k.launch_bound
                )),
                Some(b) if block_registers(r.1, b) > SM90_REGS_PER_BLOCK => failures.push(format!(
                    "{name}: kernel {} needs {} registers per block of {b} threads ({} per thread), \
                     more than sm_90's {SM90_REGS_PER_BLOCK}",
                    k.name,
                    block_registers(r.1, b),
                    r.1
                )),
                _ => {}
            }
            if r.5 > STATIC_SMEM_LIMIT {
                failures.push(format!(
                    "{name}: kernel {} uses {} bytes of static shared memory, over {STATIC_SMEM_LIMIT}",
                    k.name, r.5
                ));
            }
        }
        for l in log.lines().filter(|l| l.contains("warning")) {
            println!("  {name}: {l}");
        }
    }
    assert!(
        failures.is_empty(),
        "NVRTC failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn block_registers_follow_the_allocation_granularity() {
    // 255 registers round to 256 per thread: 8 warps of 8192 fill the 64K file exactly.
    assert_eq!(block_registers(255, 256), 65536);
    assert!(block_registers(255, 288) > SM90_REGS_PER_BLOCK);
    assert_eq!(block_registers(64, 1024), 65536);
    assert!(block_registers(65, 1024) > SM90_REGS_PER_BLOCK); // 72 per thread after rounding
    assert_eq!(block_registers(26, 256), 8 * 1024); // 32 per thread × 256
}

#[test]
fn resource_parser_reads_ptxas_lines() {
    let log = "ptxas info    : Compiling entry function 'k1' for 'sm_90a'\n\
               ptxas info    : Function properties for k1\n    \
               16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
               ptxas info    : Used 40 registers, used 1 barriers, 1024 bytes smem, 380 bytes cmem[0]\n";
    assert_eq!(resources(log), vec![("k1".to_string(), 40, 8, 4, 16, 1024)]);
}

//! The run-time kernel build of src/cuda/nvrtc.rs (cudarc's dynamically loaded NVRTC, named headers,
//! cubin for sm_90a, the on-disk cache, NVRTC's log on errors). Needs no GPU: it runs everywhere with the
//! pinned NVRTC wheels the CI installs (`.ci/install-nvrtc.sh`), loaded by path before cudarc looks for
//! `libnvrtc.so.13` by name (the loader then finds the already-loaded library by its soname).

use crate::util::harness;

use isoflop::cuda::nvrtc;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Load the wheel's NVRTC once; returns the include directories.
fn nvrtc_from_wheel() -> Vec<PathBuf> {
    static LIBS: OnceLock<(Vec<libloading::Library>, Vec<PathBuf>)> = OnceLock::new();
    LIBS.get_or_init(|| {
        let dir = harness::nvrtc_dir().unwrap_or_else(|e| panic!("{e}"));
        let cu = dir.join("nvidia").join("cu13");
        let lib = cu.join("lib");
        // SAFETY: loading NVRTC runs only its own initialisers.
        let libs = unsafe {
            vec![
                libloading::Library::new(lib.join("libnvrtc-builtins.so.13.0")).expect("builtins"),
                libloading::Library::new(lib.join("libnvrtc.so.13")).expect("libnvrtc"),
            ]
        };
        let inc = cu.join("include");
        (libs, vec![inc.clone(), inc.join("cccl")])
    })
    .1
    .clone()
}

#[test]
fn builds_every_kernel_for_sm_90a_and_caches_the_cubins() {
    let inc = nvrtc_from_wheel();
    assert!(
        nvrtc::nvrtc_present(),
        "cudarc must find the preloaded NVRTC"
    );
    assert_eq!(nvrtc::nvrtc_version().unwrap(), (13, 0));
    let cache = tempfile::tempdir().unwrap();
    let first =
        nvrtc::build_all((9, 0), &inc, Some(cache.path())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.len(), nvrtc::SOURCES.len());
    for (file, cubin, names) in &first {
        assert!(cubin.starts_with(b"\x7fELF"), "{file}: not a cubin");
        assert!(!names.is_empty(), "{file}: no kernels");
    }
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cached.len(), nvrtc::SOURCES.len(), "{cached:?}");
    assert!(cached
        .iter()
        .all(|n| n.contains("sm_90a") && n.ends_with(".cubin")));

    // The second build reads the cache: a planted (valid-looking) cubin comes back as it is ...
    let gelu = cached.iter().find(|n| n.starts_with("gelu-")).unwrap();
    let fake = b"\x7fELF planted by the test".to_vec();
    std::fs::write(cache.path().join(gelu), &fake).unwrap();
    // ... and a corrupt one (not ELF) is rebuilt.
    let adamw = cached.iter().find(|n| n.starts_with("adamw-")).unwrap();
    std::fs::write(cache.path().join(adamw), b"garbage").unwrap();
    let second = nvrtc::build_all((9, 0), &inc, Some(cache.path())).unwrap();
    for ((f1, c1, _), (f2, c2, _)) in first.iter().zip(&second) {
        assert_eq!(f1, f2);
        match f1.as_str() {
            "gelu.cu" => assert_eq!(c2, &fake, "gelu.cu must come from the cache"),
            _ => assert_eq!(c1, c2, "{f1}: rebuilt or cached cubin differs"),
        }
    }
    // Another architecture gets its own entries.
    nvrtc::build_all((8, 0), &inc, Some(cache.path())).unwrap_or_else(|e| panic!("{e}"));
    let n = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(n, 2 * nvrtc::SOURCES.len());
}

#[test]
fn a_compile_error_shows_nvrtcs_log() {
    let inc = nvrtc_from_wheel();
    let src = "#include \"common.cuh\"\nextern \"C\" __global__ void k(float* x) { x[0] = not_declared_anywhere; }\n";
    let e = nvrtc::compile_cubin("broken.cu", src, &nvrtc::options_for((9, 0), &inc))
        .err()
        .expect("must fail");
    let msg = e.to_string();
    assert!(
        msg.contains("broken.cu") && msg.contains("not_declared_anywhere"),
        "{msg}"
    );
}

#[test]
fn kernel_hash_covers_the_embedded_files_as_on_disk() {
    // The hash of the embedded sources equals the hash of kernels/ read from the checkout (name, bytes).
    use sha2::{Digest, Sha256};
    let mut files: Vec<_> = std::fs::read_dir(harness::repo_root().join("kernels"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.file_name().unwrap().as_encoded_bytes());
        h.update(std::fs::read(&f).unwrap());
    }
    let disk: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(isoflop::kernel_sources_sha256(), disk);
}

/// Without LD_LIBRARY_PATH and without any preloading, isoflop finds NVRTC and `cuda_bf16.h` itself, at
/// run time (src/cuda/discover.rs): here from the pinned wheels of this checkout's `target/nvrtc-13.0`,
/// found above the test executable — not from a path compiled in. Runs in a child process of this
/// binary, so that no other test has loaded NVRTC first.
#[test]
fn nvrtc_and_headers_are_found_at_run_time() {
    const CHILD: &str = "ISOFLOP_TEST_DISCOVERY_CHILD";
    if std::env::var_os(CHILD).is_some() {
        assert!(
            nvrtc::nvrtc_present(),
            "NVRTC not found by the fallback search"
        );
        assert_eq!(nvrtc::nvrtc_version().unwrap().0, 13);
        let inc = nvrtc::find_cuda_include();
        assert!(
            inc.first().is_some_and(|d| d.join("cuda_bf16.h").is_file()),
            "{inc:?}"
        );
        // Empty when the loader found it by itself (a toolkit on the loader's path).
        eprintln!(
            "fallbacks used: {:?}",
            isoflop::cuda::discover::fallback_report()
        );
        return;
    }
    harness::nvrtc_dir().unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["nvrtc_and_headers_are_found_at_run_time", "--nocapture"])
        .env(CHILD, "1")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("ISOFLOP_CUDA_INCLUDE")
        .env_remove("ISOFLOP_CUDA_LIB")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

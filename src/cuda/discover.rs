//! Finding the CUDA libraries and headers at run time, on the machine the binary runs on (never a path
//! fixed at build time on another machine).
//!
//! cudarc opens `libnvrtc.so.13`, `libcublasLt.so.13` and `libcuda.so.1` by name, so the dynamic
//! loader's search (LD_LIBRARY_PATH, the ldconfig cache) comes first. When that fails, the library is
//! looked for here, in this order, and loaded by its full path with `RTLD_GLOBAL`; cudarc's later
//! `dlopen` by name then finds the already-loaded object by its soname:
//!
//! 1. `$ISOFLOP_CUDA_LIB` (a `:`-separated list of folders);
//! 2. the toolkit: `$CUDA_HOME`, `$CUDA_PATH`, `$CUDA_ROOT`, `/usr/local/cuda`, `/usr/local/cuda-13.0`,
//!    `/opt/cuda`, each with `lib64` and `targets/x86_64-linux/lib`;
//! 3. PyTorch's own CUDA 13 wheels: `<site-packages>/nvidia/cu13/lib` of the Python environments found
//!    from `$VIRTUAL_ENV`, `$CONDA_PREFIX`, every `python3` on `$PATH`, `/opt/torch/.venv`, `/usr/local`,
//!    `/usr` and `~/.local`;
//! 4. the pinned NVRTC wheels of a checkout (`target/nvrtc-13.0/nvidia/cu13`) in a folder above the
//!    running executable (a test binary under `target/`, or `.gpu-bin/isoflop`);
//! 5. for the driver's `libcuda.so.1` only: `/usr/local/nvidia/lib64`, `/usr/lib/x86_64-linux-gnu`,
//!    `/usr/lib64`.
//!
//! Headers (`cuda_bf16.h`, with its `cccl` subfolder when present): `$ISOFLOP_CUDA_INCLUDE`, then the
//! `include` and `targets/x86_64-linux/include` folders of the same toolkits, then the same
//! `nvidia/cu13/include` folders. [`SearchEnv`] holds every input of the search, so the order is
//! unit-tested on fake directory trees.

use std::ffi::{CString, OsString};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The CUDA libraries isoflop loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CudaLib {
    /// The driver, `libcuda.so.1`.
    Driver,
    /// The run-time compiler, `libnvrtc.so.13` (with `libnvrtc-builtins.so.13.*` beside it).
    Nvrtc,
    /// `libcublasLt.so.13`.
    CublasLt,
}

impl CudaLib {
    /// The file name (soname) looked for.
    pub fn soname(self) -> &'static str {
        match self {
            CudaLib::Driver => "libcuda.so.1",
            CudaLib::Nvrtc => "libnvrtc.so.13",
            CudaLib::CublasLt => "libcublasLt.so.13",
        }
    }
}

/// Every input of the search: the file-system root that fixed paths hang from (`/`, or a fake tree in
/// tests), the environment variables, and the running executable.
#[derive(Clone, Debug, Default)]
pub struct SearchEnv {
    /// Fixed paths such as `/usr/local/cuda` are looked up under this root.
    pub root: PathBuf,
    /// Environment variables (name, value).
    pub vars: Vec<(String, OsString)>,
    /// The running executable (its ancestors may hold a checkout's `target/nvrtc-13.0`).
    pub exe: Option<PathBuf>,
}

/// Names of the variables the search reads.
const VARS: [&str; 10] = [
    "ISOFLOP_CUDA_LIB",
    "ISOFLOP_CUDA_INCLUDE",
    "CUDA_HOME",
    "CUDA_PATH",
    "CUDA_ROOT",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "PATH",
    "HOME",
    "PYTHONPATH",
];

impl SearchEnv {
    /// This process's environment, with `/` as the root.
    pub fn current() -> SearchEnv {
        SearchEnv {
            root: PathBuf::from("/"),
            vars: VARS
                .iter()
                .filter_map(|v| std::env::var_os(v).map(|x| (v.to_string(), x)))
                .filter(|(_, x)| !x.is_empty())
                .collect(),
            exe: std::env::current_exe().ok(),
        }
    }

    fn var(&self, name: &str) -> Option<&OsString> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A fixed absolute path, under the root.
    fn fixed(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// Toolkit roots in search order.
    pub fn toolkits(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"]
            .iter()
            .filter_map(|n| self.var(n).map(PathBuf::from))
            .collect();
        for p in ["/usr/local/cuda", "/usr/local/cuda-13.0", "/opt/cuda"] {
            v.push(self.fixed(p));
        }
        dedup(v)
    }

    /// Python `site-packages` / `dist-packages` folders that exist, in search order.
    pub fn site_packages(&self) -> Vec<PathBuf> {
        let mut prefixes: Vec<PathBuf> = Vec::new();
        let mut direct: Vec<PathBuf> = Vec::new();
        if let Some(pp) = self.var("PYTHONPATH") {
            direct.extend(std::env::split_paths(pp));
        }
        for n in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
            if let Some(p) = self.var(n) {
                prefixes.push(PathBuf::from(p));
            }
        }
        if let Some(path) = self.var("PATH") {
            for d in std::env::split_paths(path) {
                if d.join("python3").is_file() {
                    if let Some(prefix) = d.parent() {
                        prefixes.push(prefix.to_path_buf());
                    }
                }
            }
        }
        prefixes.push(self.fixed("/opt/torch/.venv"));
        prefixes.push(self.fixed("/usr/local"));
        prefixes.push(self.fixed("/usr"));
        if let Some(h) = self.var("HOME") {
            prefixes.push(PathBuf::from(h).join(".local"));
        }
        let mut out = direct;
        for prefix in prefixes {
            let lib = prefix.join("lib");
            let Ok(rd) = std::fs::read_dir(&lib) else {
                continue;
            };
            let mut pys: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                .map(|e| e.path())
                .collect();
            pys.sort(); // deterministic order (python3, python3.12, ...)
            for py in pys {
                for sub in ["site-packages", "dist-packages"] {
                    out.push(py.join(sub));
                }
            }
        }
        dedup(out.into_iter().filter(|p| p.is_dir()).collect())
    }

    /// `nvidia/cu13` folders (PyTorch's CUDA 13 wheels, then a checkout's pinned NVRTC wheels).
    pub fn cu13_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .site_packages()
            .into_iter()
            .map(|s| s.join("nvidia").join("cu13"))
            .collect();
        if let Some(exe) = &self.exe {
            for a in exe.ancestors().skip(1) {
                v.push(a.join("target/nvrtc-13.0/nvidia/cu13"));
                if a.file_name().is_some_and(|n| n == "target") {
                    v.push(a.join("nvrtc-13.0/nvidia/cu13"));
                }
            }
        }
        dedup(v.into_iter().filter(|p| p.is_dir()).collect())
    }

    /// Folders searched for `lib`, in order (existing ones only).
    pub fn lib_dirs(&self, lib: CudaLib) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        if let Some(l) = self.var("ISOFLOP_CUDA_LIB") {
            v.extend(std::env::split_paths(l));
        }
        if lib == CudaLib::Driver {
            for p in [
                "/usr/local/nvidia/lib64",
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib64",
            ] {
                v.push(self.fixed(p));
            }
            // The toolkit's stub libcuda cannot run anything: never fall back to it.
        } else {
            for t in self.toolkits() {
                v.push(t.join("lib64"));
                v.push(t.join("targets/x86_64-linux/lib"));
            }
            v.extend(self.cu13_dirs().into_iter().map(|d| d.join("lib")));
        }
        dedup(v.into_iter().filter(|p| p.is_dir()).collect())
    }

    /// The first file named `lib.soname()` in [`SearchEnv::lib_dirs`].
    pub fn find_library(&self, lib: CudaLib) -> Option<PathBuf> {
        self.lib_dirs(lib)
            .into_iter()
            .map(|d| d.join(lib.soname()))
            .find(|p| p.is_file())
    }

    /// Include folders for NVRTC: the first folder holding `cuda_bf16.h`, plus its `cccl` subfolder
    /// when present; empty when none is found.
    pub fn include_dirs(&self) -> Vec<PathBuf> {
        let mut cands: Vec<PathBuf> = Vec::new();
        if let Some(d) = self.var("ISOFLOP_CUDA_INCLUDE") {
            cands.push(PathBuf::from(d));
        }
        for t in self.toolkits() {
            cands.push(t.join("include"));
            cands.push(t.join("targets/x86_64-linux/include"));
        }
        cands.extend(self.cu13_dirs().into_iter().map(|d| d.join("include")));
        for c in cands {
            if c.join("cuda_bf16.h").is_file() {
                let mut v = vec![c.clone()];
                if c.join("cccl").is_dir() {
                    v.push(c.join("cccl"));
                }
                return v;
            }
        }
        Vec::new()
    }
}

fn dedup(v: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::with_capacity(v.len());
    for p in v {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Where each library was loaded from by [`ensure_loaded`] (for `isoflop bench`'s and the suite's
/// environment records).
static LOADED: Mutex<Vec<(CudaLib, String)>> = Mutex::new(Vec::new());

/// Open `path` with `RTLD_NOW | RTLD_GLOBAL`, never closed (the library stays for the process).
fn dlopen_global(path: &Path) -> Result<(), String> {
    let c = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| format!("{}: NUL in path", path.display()))?;
    // SAFETY: a valid NUL-terminated path; running a CUDA library's initialisers is what loading means.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a static string or null.
        let e = unsafe { libc::dlerror() };
        let msg = if e.is_null() {
            "unknown error".to_string()
        } else {
            // SAFETY: non-null NUL-terminated string from dlerror.
            unsafe { std::ffi::CStr::from_ptr(e) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(format!("{}: {msg}", path.display()));
    }
    Ok(())
}

/// Load `lib` from the fallback folders of [`SearchEnv::current`] when cudarc's own search by name
/// (`present`, tried first) does not find it. Returns whether it can be loaded now. Runs the search at
/// most once per library per process.
pub fn ensure_loaded(lib: CudaLib, present: impl Fn() -> bool) -> bool {
    if present() {
        return true;
    }
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if loaded.iter().any(|(l, _)| *l == lib) {
        return present();
    }
    let env = SearchEnv::current();
    let note = match env.find_library(lib) {
        None => "not found".to_string(),
        Some(path) => {
            let mut r = Ok(());
            if lib == CudaLib::Nvrtc {
                // NVRTC opens its builtins by soname: load the one beside it first.
                if let Some(b) = builtins_beside(&path) {
                    r = dlopen_global(&b);
                }
            }
            match r.and_then(|_| dlopen_global(&path)) {
                Ok(()) => path.display().to_string(),
                Err(e) => format!("failed to load {e}"),
            }
        }
    };
    loaded.push((lib, note));
    present()
}

/// `libnvrtc-builtins.so.13*` in the folder of `nvrtc`.
fn builtins_beside(nvrtc: &Path) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(nvrtc.parent()?)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libnvrtc-builtins.so.13"))
        })
        .collect();
    v.sort();
    v.into_iter().next()
}

/// What [`ensure_loaded`] did for each library it had to search for (the path loaded, or why not).
pub fn fallback_report() -> Vec<(CudaLib, String)> {
    LOADED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    /// A machine like the GPU host: a venv's python3 on PATH whose torch wheels hold CUDA 13.
    fn fake_machine() -> (tempfile::TempDir, SearchEnv) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        touch(&r.join("opt/torch/.venv/bin/python3"));
        let cu13 = r.join("opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13");
        touch(&cu13.join("lib/libnvrtc.so.13"));
        touch(&cu13.join("lib/libnvrtc-builtins.so.13.0"));
        touch(&cu13.join("lib/libcublasLt.so.13"));
        touch(&cu13.join("include/cuda_bf16.h"));
        std::fs::create_dir_all(cu13.join("include/cccl")).unwrap();
        // A toolkit folder without the libraries or the header (as on a driver-only image).
        std::fs::create_dir_all(r.join("usr/local/cuda/lib64")).unwrap();
        std::fs::create_dir_all(r.join("usr/local/cuda/include")).unwrap();
        let env = SearchEnv {
            root: r.to_path_buf(),
            // PATH names the venv through the fake root only; the fixed /opt/torch/.venv is found
            // under the root as well, and must not appear twice.
            vars: vec![(
                "PATH".into(),
                std::env::join_paths([r.join("opt/torch/.venv/bin"), r.join("usr/bin")]).unwrap(),
            )],
            exe: None,
        };
        (t, env)
    }

    #[test]
    fn falls_back_to_the_torch_wheels_when_the_toolkit_lacks_them() {
        let (t, env) = fake_machine();
        let cu13 = t
            .path()
            .join("opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13");
        assert_eq!(env.cu13_dirs(), vec![cu13.clone()]);
        assert_eq!(
            env.find_library(CudaLib::Nvrtc),
            Some(cu13.join("lib/libnvrtc.so.13"))
        );
        assert_eq!(
            env.find_library(CudaLib::CublasLt),
            Some(cu13.join("lib/libcublasLt.so.13"))
        );
        assert_eq!(
            env.include_dirs(),
            vec![cu13.join("include"), cu13.join("include/cccl")]
        );
        assert_eq!(
            builtins_beside(&cu13.join("lib/libnvrtc.so.13")),
            Some(cu13.join("lib/libnvrtc-builtins.so.13.0"))
        );
        // The driver is never taken from the wheels or the toolkit (only its stub lives there).
        assert_eq!(env.find_library(CudaLib::Driver), None);
        touch(&t.path().join("usr/local/nvidia/lib64/libcuda.so.1"));
        assert_eq!(
            env.find_library(CudaLib::Driver),
            Some(t.path().join("usr/local/nvidia/lib64/libcuda.so.1"))
        );
    }

    #[test]
    fn the_toolkit_and_explicit_settings_come_first() {
        let (t, mut env) = fake_machine();
        let r = t.path();
        touch(&r.join("usr/local/cuda/lib64/libnvrtc.so.13"));
        touch(&r.join("usr/local/cuda/include/cuda_bf16.h"));
        assert_eq!(
            env.find_library(CudaLib::Nvrtc),
            Some(r.join("usr/local/cuda/lib64/libnvrtc.so.13"))
        );
        // No cccl folder there: the header folder alone.
        assert_eq!(env.include_dirs(), vec![r.join("usr/local/cuda/include")]);
        // cuBLASLt is still missing from the toolkit: taken from the wheels.
        assert!(env
            .find_library(CudaLib::CublasLt)
            .unwrap()
            .starts_with(r.join("opt/torch/.venv")));
        // CUDA_HOME before /usr/local/cuda; ISOFLOP_CUDA_LIB / ISOFLOP_CUDA_INCLUDE before everything.
        touch(&r.join("cuda-x/lib64/libnvrtc.so.13"));
        env.vars.push(("CUDA_HOME".into(), r.join("cuda-x").into()));
        assert_eq!(
            env.find_library(CudaLib::Nvrtc),
            Some(r.join("cuda-x/lib64/libnvrtc.so.13"))
        );
        touch(&r.join("mine/libnvrtc.so.13"));
        touch(&r.join("hdr/cuda_bf16.h"));
        env.vars
            .push(("ISOFLOP_CUDA_LIB".into(), r.join("mine").into()));
        env.vars
            .push(("ISOFLOP_CUDA_INCLUDE".into(), r.join("hdr").into()));
        assert_eq!(
            env.find_library(CudaLib::Nvrtc),
            Some(r.join("mine/libnvrtc.so.13"))
        );
        assert_eq!(env.include_dirs(), vec![r.join("hdr")]);
    }

    #[test]
    fn a_checkout_above_the_executable_is_found_at_run_time() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let inc = r.join("repo/target/nvrtc-13.0/nvidia/cu13/include");
        touch(&inc.join("cuda_bf16.h"));
        let mut env = SearchEnv {
            root: r.join("empty-root"),
            vars: vec![],
            exe: Some(r.join("repo/.gpu-bin/isoflop")),
        };
        assert_eq!(env.include_dirs(), vec![inc.clone()]);
        env.exe = Some(r.join("repo/target/release/deps/gpu_train-0123"));
        assert_eq!(env.include_dirs(), vec![inc]);
        // Moved elsewhere (the GPU machine's copy without target/): nothing, not the build path.
        env.exe = Some(r.join("elsewhere/.gpu-bin/isoflop"));
        assert!(env.include_dirs().is_empty());
        assert!(env.find_library(CudaLib::Nvrtc).is_none());
    }

    #[test]
    fn a_file_that_is_no_library_fails_to_load_cleanly() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("libnvrtc.so.13");
        std::fs::write(&p, b"not an ELF file").unwrap();
        let e = dlopen_global(&p).unwrap_err();
        assert!(e.contains("libnvrtc.so.13"), "{e}");
    }
}

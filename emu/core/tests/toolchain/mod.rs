//! Where the emulator's tests find the CUDA toolchain: one finder for every
//! test support module (`common`, `core_support`, `driver_toolchain`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the emulator's core lives in `<root>/emu/core`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("emu/core/ has a grandparent").to_path_buf()
}

/// The repo-local toolchain's `site-packages` folders (python version unknown).
pub fn toolchain_site_packages() -> Vec<PathBuf> {
    let lib = repo_root().join(".toolchain/venv/lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                .map(|e| e.path().join("site-packages"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn executable_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// nvcc, looked for in order: `$NVCC`, `$FUSED_LORA_CUDA_ROOT/bin`,
/// `$CUDA_HOME/bin`, `PATH`, the repo-local toolchain of `scripts/setup.sh`.
pub fn nvcc() -> PathBuf {
    let from_env = |var: &str, suffix: &str| std::env::var_os(var).map(|v| PathBuf::from(v).join(suffix));
    let candidates = [
        std::env::var_os("NVCC").map(PathBuf::from),
        from_env("FUSED_LORA_CUDA_ROOT", "bin/nvcc"),
        from_env("CUDA_HOME", "bin/nvcc"),
        executable_in_path("nvcc"),
    ];
    candidates
        .into_iter()
        .flatten()
        .chain(toolchain_site_packages().into_iter().map(|site| site.join("nvidia/cu13/bin/nvcc")))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("nvcc not found (NVCC, FUSED_LORA_CUDA_ROOT, CUDA_HOME, PATH, .toolchain): run scripts/setup.sh")
        })
}

/// The CUDA toolkit folder holding `bin/nvcc`, `include/` (with `cuda.h`), `lib/`.
pub fn cuda_root() -> PathBuf {
    nvcc().parent().and_then(Path::parent).expect("nvcc lives in <root>/bin").to_path_buf()
}

/// The emulated libraries, all in one folder (they share one device).
pub const EMULATED_LIBRARIES: [&str; 5] =
    ["libcuda.so", "libcublas.so", "libcublasLt.so", "libcurand.so", "libcudart.so"];

/// The workspace packages that build [`EMULATED_LIBRARIES`].
pub const LIBRARY_PACKAGES: [&str; 5] =
    ["ptx-emu-cuda", "ptx-emu-cublas", "ptx-emu-cublaslt", "ptx-emu-curand", "ptx-emu-cudart"];

/// The directory holding the emulated libraries (`libcuda.so` and the ones
/// beside it) for this build: the test executable lives in
/// `target/<profile>/deps/`, where `cargo test -p ptx-emu` builds them
/// (fresh, as dev-dependencies) before running tests; a `target/<profile>/`
/// copy comes from `cargo build`. If neither has them all, a release build is
/// made.
pub fn libcuda_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps_dir = exe.parent().expect("target/<profile>/deps/<test>");
    let profile_dir = deps_dir.parent().expect("target/<profile>/deps/<test>");
    let complete = |dir: &Path| EMULATED_LIBRARIES.iter().all(|library| dir.join(library).is_file());
    for dir in [deps_dir, profile_dir] {
        if complete(dir) {
            return dir.to_path_buf();
        }
    }
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build.args(["build", "--release"]);
    for package in LIBRARY_PACKAGES {
        build.args(["-p", package]);
    }
    let status = build.current_dir(repo_root()).status().expect("run cargo build");
    assert!(status.success(), "cargo build --release of {LIBRARY_PACKAGES:?} failed");
    let release_dir = profile_dir.parent().expect("target/").join("release");
    assert!(complete(&release_dir), "not every one of {EMULATED_LIBRARIES:?} is in {}", release_dir.display());
    release_dir
}

//! Locating what the driver tests need outside Rust: the emulator's built
//! libraries (`libcuda.so`, ...), nvcc (to compile test kernels to PTX) and the CUDA headers.

#![allow(dead_code)] // each test crate uses part of it

use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernels the driver tests run, in CUDA C++ (compiled by nvcc at test time).
pub const TEST_KERNELS_CU: &str = r#"
extern "C" __global__ void vec_add(const float* a, const float* b, float* c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

// One partial sum per block, reduced in dynamic shared memory (blockDim.x ints).
extern "C" __global__ void block_sum(const int* in, int* sums, int n) {
    extern __shared__ int partial[];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    partial[threadIdx.x] = i < n ? in[i] : 0;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) sums[blockIdx.x] = partial[0];
}

// A module-scope variable with an initialiser (cuModuleGetGlobal).
__device__ int module_counter = 7;

extern "C" __global__ void bump_counter(int by) {
    if (threadIdx.x == 0 && blockIdx.x == 0) module_counter += by;
}

// Deliberately unguarded: threads at or past n write outside `out`.
extern "C" __global__ void write_past_end(float* out, int n) {
    out[threadIdx.x] = (float)n;
}
"#;

#[path = "../toolchain/mod.rs"]
mod toolchain;
pub use toolchain::{nvcc as find_nvcc, repo_root};

/// The CUDA headers (`cuda.h`) beside nvcc's `bin/`.
pub fn cuda_include_dir(nvcc: &Path) -> PathBuf {
    nvcc.parent().and_then(Path::parent).expect("nvcc lives in <root>/bin").join("include")
}

/// A scratch directory for one test process's files (per process, so that
/// runners starting one process per test never share a file being written).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Compiles [`TEST_KERNELS_CU`] to PTX for compute_80 and returns the PTX path.
pub fn compile_test_kernels(dir: &Path) -> PathBuf {
    let source = dir.join("kernels.cu");
    let ptx = dir.join("kernels.ptx");
    std::fs::write(&source, TEST_KERNELS_CU).expect("write kernels.cu");
    let status = Command::new(find_nvcc())
        .args(["-ptx", "-arch=compute_80", "-o"])
        .arg(&ptx)
        .arg(&source)
        .status()
        .expect("run nvcc");
    assert!(status.success(), "nvcc failed on the test kernels");
    ptx
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

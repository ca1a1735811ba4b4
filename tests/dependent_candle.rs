//! fused-lora and candle-core 0.11.1 with its `cuda` feature in one
//! dependency graph (tests/dependents/candle): candle selects cudarc's
//! `dynamic-linking` and `cuda-version-from-build-system`; fused-lora, a
//! dependency with `default-features = false`, selects neither, so cudarc's
//! build script accepts the graph and there is one cudarc. The crate passes
//! candle's `CudaStream` to fused-lora's API, so it compiles only if both see
//! the same cudarc types.
//!
//! Only the library target is checked (`cargo check --lib`), and nothing is
//! linked or run: with candle's `dynamic-linking`, any executable (a test, an
//! example) links `-lcuda -lcublas -lcublasLt -lcurand -lnvrtc` (and
//! candle-kernels `-lcudart`), and this machine has none of those libraries
//! except the emulator's `libcuda.so`, so a link would fail for that reason
//! alone. The check runs every build script (cudarc's, which refuses
//! conflicting features; candle-kernels', which compiles candle's kernels with
//! nvcc; fused-lora's) and type-checks both crates against the one cudarc,
//! which is what this test is about; skipping code generation keeps it
//! shorter. Once emulated CUDA libraries exist, it should build and run the
//! crate's test on the emulator instead.
//!
//! From scratch this is the slowest test (candle-kernels' nvcc runs dominate);
//! later runs reuse `target/dependents/candle/`.

#[path = "dependents/support.rs"]
mod support;

use std::path::PathBuf;
use support::{repo_root, required, run, scrubbed_cargo, work_dir};

/// nvcc's folder: the toolchain `scripts/setup.sh` exports, else `PATH`.
fn nvcc_dir() -> Option<PathBuf> {
    let from_setup = std::env::var_os("FUSED_LORA_CUDA_ROOT").map(|root| PathBuf::from(root).join("bin"));
    let on_path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    from_setup.into_iter().chain(on_path).find(|dir| dir.join("nvcc").is_file())
}

#[test]
fn builds_in_one_graph_with_candle_core_cuda() {
    let Some(nvcc_dir) = nvcc_dir() else {
        assert!(!required(), "candle-kernels needs nvcc: run through `scripts/run.sh test` (it installs one)");
        eprintln!("SKIPPED: no nvcc (candle-kernels compiles its kernels with it)");
        return;
    };
    let crate_dir = repo_root().join("tests/dependents/candle");
    let target = work_dir("candle");
    run(
        "check fused-lora beside candle-core with cuda",
        scrubbed_cargo(&[&nvcc_dir], &["check", "--release", "--lib"])
            .arg("--manifest-path")
            .arg(crate_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            // candle-kernels' target (it would ask nvidia-smi otherwise).
            .env("CUDA_COMPUTE_CAP", "80"),
    );

    let lock = std::fs::read_to_string(crate_dir.join("Cargo.lock")).expect("the crate's Cargo.lock is committed");
    let cudarcs = lock.lines().filter(|line| *line == "name = \"cudarc\"").count();
    assert_eq!(cudarcs, 1, "one cudarc in the graph");
    assert!(lock.contains("name = \"candle-core\"\nversion = \"0.11.1\""), "candle-core 0.11.1");
}

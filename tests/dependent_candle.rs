//! fused-lora and candle-core 0.11.1 with its `cuda` feature in one
//! dependency graph (tests/dependents/candle), built and run on the device the
//! test process finds (the emulator under `scripts/run.sh test`).
//!
//! candle selects cudarc's `dynamic-linking` and
//! `cuda-version-from-build-system`; fused-lora, a dependency with
//! `default-features = false`, selects neither, so cudarc's build script
//! accepts the graph and there is one cudarc. The crate passes candle's
//! `CudaStream` and candle tensors' buffers to fused-lora's API, so it compiles
//! only if both see the same cudarc types.
//!
//! With `dynamic-linking`, the crate's test executable links `-lcuda -lcublas
//! -lcublasLt -lcurand -lnvrtc` (and candle-kernels `-lcudart`): the emulated
//! libraries (libcudart among them) come from the folder on this process's
//! `LD_LIBRARY_PATH` (`target/release/` under `scripts/run.sh`), NVIDIA's
//! libnvrtc from the toolchain's wheels (`scripts/setup.sh`); both folders go
//! on the nested build's `LIBRARY_PATH` (link time) and `LD_LIBRARY_PATH` (run
//! time), the emulator's first. The crate's `tests/emulator.rs` then runs
//! candle's CUDA backend (cuBLAS matmuls, candle-kernels ops, the quantized
//! matmul's static GGUF kernels through libcudart, cuRAND) against candle's
//! CPU device, and
//! fused-lora's fused forward on candle's stream over candle tensors' memory;
//! `tests/lora_linear.rs` tests `fused_lora::candle::LoraLinear` (fused
//! forward and backward, dropout, merge, PEFT directories in and out) and
//! `tests/llama.rs` a small Llama-style decoder built on it, with adapters in
//! PEFT's format. Then the crate runs the repository's `examples/candle_lora.rs`
//! (compiled as one of its examples) on the same device.
//!
//! From scratch this is the slowest test (candle-kernels' nvcc runs dominate);
//! later runs reuse `target/dependents/candle/`.

#[path = "dependents/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use support::{repo_root, required, run, scrubbed_cargo, work_dir};

/// nvcc's folder: the toolchain `scripts/setup.sh` exports, else `PATH`.
fn nvcc_dir() -> Option<PathBuf> {
    let from_setup = std::env::var_os("FUSED_LORA_CUDA_ROOT").map(|root| PathBuf::from(root).join("bin"));
    let on_path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    from_setup.into_iter().chain(on_path).find(|dir| dir.join("nvcc").is_file())
}

/// The libraries a `dynamic-linking` build links and loads: the folders on this
/// process's `LD_LIBRARY_PATH` (the emulator's, under `scripts/run.sh`), then
/// the toolchain's `lib/` beside nvcc (libnvrtc). None when no
/// folder there holds a libcublas.so to link with.
fn library_path(nvcc_dir: &Path) -> Option<std::ffi::OsString> {
    let toolchain_lib = nvcc_dir.parent().map(|root| root.join("lib")).expect("nvcc's folder has a parent");
    assert!(
        toolchain_lib.join("libnvrtc.so").exists() || !required(),
        "no libnvrtc.so in {}: scripts/setup.sh installs it",
        toolchain_lib.display()
    );
    let inherited = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
    let inherited: Vec<PathBuf> = std::env::split_paths(&inherited).collect();
    if !inherited.iter().any(|dir| dir.join("libcublas.so").exists()) {
        return None;
    }
    Some(std::env::join_paths(inherited.into_iter().chain([toolchain_lib])).expect("library folders"))
}

/// What candle-kernels' nvcc runs get appended (nvcc reads the variable):
/// PTX for compute_80 beside the sm_80 machine code its build script asks
/// for in the static library of GGUF kernels (`libmoe.a`), since the
/// emulated libcudart runs a fat binary's PTX.
const NVCC_APPEND_FLAGS: &str = "-gencode=arch=compute_80,code=compute_80";

/// A target folder built without [`NVCC_APPEND_FLAGS`] holds candle-kernels'
/// static kernels as machine code only, and neither cargo (the build script
/// does not declare the variable) nor candle-kernels' own compile cache would
/// rebuild them: once, drop those objects and the build script's fingerprint,
/// so the next build compiles them with PTX.
fn drop_kernels_built_without_ptx(target: &Path) {
    let marker = target.join("candle-kernels-with-ptx");
    if marker.exists() {
        return;
    }
    let release = target.join("release");
    let candle_kernels = |dir: &Path| -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let entries = entries.filter_map(Result::ok).map(|entry| entry.path());
        entries
            .filter(|path| path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("candle-kernels-")))
            .collect()
    };
    for build in candle_kernels(&release.join("build")) {
        let Ok(outputs) = std::fs::read_dir(build.join("out")) else { continue };
        for output in outputs.filter_map(Result::ok).map(|entry| entry.path()) {
            if output.extension().is_some_and(|e| e == "o" || e == "a") {
                std::fs::remove_file(&output).unwrap_or_else(|e| panic!("remove {}: {e}", output.display()));
            }
        }
    }
    for fingerprint in candle_kernels(&release.join(".fingerprint")) {
        std::fs::remove_dir_all(&fingerprint).unwrap_or_else(|e| panic!("remove {}: {e}", fingerprint.display()));
    }
    std::fs::write(&marker, "candle-kernels' static kernels are built with NVCC_APPEND_FLAGS\n").expect("write marker");
}

/// A `cargo` for the dependent crate with the environment its build and run
/// need, or None (after saying why) where this machine cannot build it.
struct NestedCargo {
    nvcc_dir: PathBuf,
    libraries: std::ffi::OsString,
    crate_dir: PathBuf,
    target: PathBuf,
}

impl NestedCargo {
    fn find() -> Option<NestedCargo> {
        let Some(nvcc_dir) = nvcc_dir() else {
            assert!(!required(), "candle-kernels needs nvcc: run through `scripts/run.sh test` (it installs one)");
            eprintln!("SKIPPED: no nvcc (candle-kernels compiles its kernels with it)");
            return None;
        };
        let Some(libraries) = library_path(&nvcc_dir) else {
            assert!(!required(), "no libcublas.so on LD_LIBRARY_PATH: run through `scripts/run.sh test`");
            eprintln!("SKIPPED: no CUDA libraries on LD_LIBRARY_PATH to link candle's CUDA backend with");
            return None;
        };
        let target = work_dir("candle");
        drop_kernels_built_without_ptx(&target);
        Some(NestedCargo { nvcc_dir, libraries, crate_dir: repo_root().join("tests/dependents/candle"), target })
    }

    /// Runs `cargo <args>` on the dependent crate; panics with its output if it fails.
    fn run(&self, what: &str, args: &[&str]) -> std::process::Output {
        let mut command = scrubbed_cargo(&[&self.nvcc_dir], args);
        command
            .arg("--manifest-path")
            .arg(self.crate_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&self.target)
            // candle-kernels' target (it would ask nvidia-smi otherwise).
            .env("CUDA_COMPUTE_CAP", "80")
            .env("NVCC_APPEND_FLAGS", NVCC_APPEND_FLAGS)
            .env("LIBRARY_PATH", &self.libraries)
            .env("LD_LIBRARY_PATH", &self.libraries)
            // The checks the emulator runs are on unless the caller turned them off.
            .envs(std::env::vars_os().filter(|(name, _)| name.to_string_lossy().starts_with("PTX_EMU_")));
        run(what, &mut command)
    }
}

/// The crate's test targets, built and run by the test below.
const TEST_TARGETS: [&str; 7] = ["--release", "--test", "emulator", "--test", "lora_linear", "--test", "llama"];

/// Only the build of the test below (its tests and the example), for
/// `scripts/run.sh test` to start in the background at the beginning: it
/// overlaps the other tests instead of running alone, and the test below then
/// waits on cargo's lock of the target folder and finds everything built.
#[test]
#[ignore = "started in the background by scripts/run.sh test; the test below builds the same on its own"]
fn prebuild_candle_dependent() {
    let Some(cargo) = NestedCargo::find() else { return };
    cargo.run("build candle's CUDA backend beside fused-lora", &[&["test", "--no-run"][..], &TEST_TARGETS].concat());
    cargo.run("build examples/candle_lora.rs", &["build", "--release", "--example", "candle_lora"]);
}

#[test]
fn candle_cuda_backend_runs_beside_fused_lora() {
    let Some(nested) = NestedCargo::find() else { return };
    let cargo = |what: &str, args: &[&str]| nested.run(what, args);
    let output =
        cargo("build and run candle's CUDA backend beside fused-lora", &[&["test"][..], &TEST_TARGETS].concat());
    let report = String::from_utf8_lossy(&output.stdout);
    let results: Vec<&str> = report.lines().filter(|line| line.starts_with("test result:")).collect();
    // tests/emulator.rs: 6 tests, tests/lora_linear.rs: 9, tests/llama.rs: 3; none failed or skipped.
    let passed = |line: &str| line.strip_prefix("test result: ok. ")?.split(' ').next()?.parse::<usize>().ok();
    let all_ran = results.len() == 3
        && results.iter().all(|line| line.contains(" 0 failed; 0 ignored;"))
        && results.iter().map(|line| passed(line)).sum::<Option<usize>>() == Some(18);
    assert!(all_ran, "the crate's 18 tests ran and passed:\n{report}");

    // The example a candle user copies: base weights and a PEFT adapter in,
    // fused forward, AdamW steps, the adapter out in PEFT's format.
    let example = cargo("run examples/candle_lora.rs", &["run", "--release", "--example", "candle_lora"]);
    let printed = String::from_utf8_lossy(&example.stdout);
    assert!(printed.contains("device: Cuda"), "the example ran on the CUDA device:\n{printed}");
    let losses: Vec<f32> = printed
        .lines()
        .find_map(|line| line.strip_prefix("loss: "))
        .map(|l| l.split(" -> ").filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    assert!(losses.len() == 2 && losses[1] < losses[0], "the example's training lowered the loss:\n{printed}");
    assert!(printed.contains("saved 2 modules"), "the example saved its adapter:\n{printed}");

    let lock =
        std::fs::read_to_string(nested.crate_dir.join("Cargo.lock")).expect("the crate's Cargo.lock is committed");
    let cudarcs = lock.lines().filter(|line| *line == "name = \"cudarc\"").count();
    assert_eq!(cudarcs, 1, "one cudarc in the graph");
    assert!(lock.contains("name = \"candle-core\"\nversion = \"0.11.1\""), "candle-core 0.11.1");
}

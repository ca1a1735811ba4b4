//! The crate as a user gets it from a registry: `cargo package`, then a small
//! dependent (tests/dependents/packaged-app) built from the unpacked `.crate`
//! with neither nvcc nor libclang reachable, and run on the device the test
//! command provides (the emulator here).
//!
//! "Not reachable": the nested cargo sees only `HOME`/`CARGO_HOME`/rustup's
//! variables and a `PATH` of the toolchain's folder, `/usr/bin` and `/bin`
//! (no `NVCC`, `CUDA_HOME`, `LIBCLANG_PATH`, `FUSED_LORA_CUDA_ROOT`,
//! `CUDA_COMPUTE_CAP`); the unpacked crate has no `.toolchain/` beside it; and
//! the first `nvcc` on `PATH` is a stub that leaves a mark if anything runs it.

#[path = "dependents/support.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use support::{copy_tree, repo_root, required, run, scrubbed_cargo, work_dir};

#[test]
fn packaged_crate_builds_without_nvcc_or_libclang_and_runs_a_kernel() {
    let root = repo_root();
    let work = work_dir("packaged");

    let package_target = work.join("package-target");
    let manifest = root.join("Cargo.toml");
    run(
        "cargo package",
        scrubbed_cargo(&[], &["package", "--no-verify", "--allow-dirty", "-p", "fused-lora"])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&package_target),
    );
    let crate_file = package_target.join("package").join(format!("fused-lora-{}.crate", env!("CARGO_PKG_VERSION")));
    assert!(crate_file.is_file(), "cargo package wrote no {}", crate_file.display());

    // Unpack as a registry would, under a fixed name the app's manifest uses.
    let unpacked = work.join("fused-lora");
    let _ = std::fs::remove_dir_all(&unpacked);
    let _ = std::fs::remove_dir_all(work.join(format!("fused-lora-{}", env!("CARGO_PKG_VERSION"))));
    run("unpack", Command::new("tar").arg("-xzf").arg(&crate_file).arg("-C").arg(&work));
    std::fs::rename(work.join(format!("fused-lora-{}", env!("CARGO_PKG_VERSION"))), &unpacked).expect("rename");
    for shipped in
        ["generated/SOURCES", "generated/params.rs", "generated/ptx/merge.ptx", "cuda/merge.cu", "build/stamp.rs"]
    {
        assert!(unpacked.join(shipped).is_file(), "the package lacks {shipped}");
    }
    assert!(!unpacked.join(".toolchain").exists(), "the package carries the repo-local toolchain");

    let app = work.join("app");
    copy_tree(&root.join("tests/dependents/packaged-app"), &app);

    let stub_bin = work.join("stub-bin");
    let marker = work.join("nvcc-was-run");
    let _ = std::fs::remove_file(&marker);
    write_nvcc_stub(&stub_bin, &marker);
    // Something a search could find in the usual places would defeat the point.
    for dir in ["/usr/bin", "/bin"] {
        assert!(!Path::new(dir).join("nvcc").exists(), "{dir}/nvcc exists: this check needs a machine without nvcc");
    }

    let app_target = work.join("app-target");
    run(
        "build the dependent from the package (no nvcc, no libclang)",
        scrubbed_cargo(&[&stub_bin], &["build"])
            .arg("--manifest-path")
            .arg(app.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&app_target),
    );
    assert!(!marker.exists(), "building from the package ran nvcc although it ships the PTX");

    if !driver_on_library_path() {
        assert!(!required(), "no libcuda.so on LD_LIBRARY_PATH: run through `scripts/run.sh test`");
        eprintln!("SKIPPED running the dependent: no libcuda.so on LD_LIBRARY_PATH (built it only)");
        return;
    }
    let binary = app_target.join("debug").join("fused-lora-packaged-dependent");
    let output = run("run the dependent", &mut Command::new(&binary));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("sgd_step on the packaged crate"), "unexpected output: {stdout}");
}

/// An `nvcc` that records being run and fails.
fn write_nvcc_stub(dir: &Path, marker: &Path) {
    std::fs::create_dir_all(dir).expect("stub dir");
    let stub = dir.join("nvcc");
    std::fs::write(&stub, format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display())).expect("write stub");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod stub");
    }
}

/// Whether the library path (the emulator's folder under `scripts/run.sh
/// test`) or the system has a CUDA driver for the dependent to load.
fn driver_on_library_path() -> bool {
    let on_path = std::env::var_os("LD_LIBRARY_PATH")
        .map(|p| {
            std::env::split_paths(&p).any(|dir| dir.join("libcuda.so").exists() || dir.join("libcuda.so.1").exists())
        })
        .unwrap_or(false);
    on_path || Path::new("/proc/driver/nvidia/version").exists()
}

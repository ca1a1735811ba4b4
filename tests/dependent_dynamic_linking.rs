//! fused-lora's kernels with cudarc's `dynamic-linking`, the mode candle's
//! `cuda` feature selects: a dependent (tests/dependents/packaged-app, with
//! `default-features = false, features = ["dynamic-linking", "cuda-13000"]`)
//! is linked with `-lcuda` against the emulator's `libcuda.so` and runs a
//! kernel on it.
//!
//! cudarc also links `-lnvrtc` for its `nvrtc` feature, which fused-lora
//! enables only for the `Ptx` type that `CudaContext::load_module` takes;
//! nothing of NVRTC is called, so `--as-needed` drops it from the binary. This
//! machine has no libnvrtc, so the link gets an empty stand-in (the emulator
//! does not provide one yet).

#[path = "dependents/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::{copy_tree, repo_root, required, run, scrubbed_cargo, work_dir};

/// The folder of the `libcuda.so` the test command put on the library path.
fn emulator_dir() -> Option<PathBuf> {
    let path = std::env::var_os("LD_LIBRARY_PATH")?;
    std::env::split_paths(&path).find(|dir| dir.join("libcuda.so").is_file())
}

#[test]
fn kernels_run_with_dynamic_linking_against_the_emulator() {
    let Some(lib_dir) = emulator_dir() else {
        assert!(!required(), "no libcuda.so on LD_LIBRARY_PATH: run through `scripts/run.sh test`");
        eprintln!("SKIPPED: no libcuda.so on LD_LIBRARY_PATH to link against");
        return;
    };
    let work = work_dir("dynamic-linking");
    let app = work.join("app");
    copy_tree(&repo_root().join("tests/dependents/packaged-app"), &app);
    let manifest = app.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("read the app's manifest");
    let dependency = format!(
        "fused-lora = {{ path = {:?}, default-features = false, features = [\"dynamic-linking\", \"cuda-13000\"] }}",
        repo_root().to_str().expect("utf-8 path")
    );
    let rewritten = text.replace("fused-lora = { path = \"../fused-lora\" }", &dependency);
    assert_ne!(rewritten, text, "the template's fused-lora line changed; update this test");
    std::fs::write(&manifest, rewritten).expect("write the app's manifest");

    let stub_dir = work.join("stub-nvrtc");
    write_empty_library(&stub_dir.join("libnvrtc.so"));
    let link_path = std::env::join_paths([&lib_dir, &stub_dir]).expect("LIBRARY_PATH");
    let target = work.join("target");
    run(
        "build the dependent with dynamic-linking",
        scrubbed_cargo(&[], &["build"])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .env("LIBRARY_PATH", link_path),
    );
    let binary = target.join("debug").join("fused-lora-packaged-dependent");
    let needed = Command::new("readelf").arg("-d").arg(&binary).output().expect("run readelf");
    let needed = String::from_utf8_lossy(&needed.stdout);
    assert!(needed.contains("[libcuda.so.1]"), "not linked with the driver:\n{needed}");
    assert!(!needed.contains("libnvrtc"), "NVRTC would be needed at run time:\n{needed}");

    let output = run("run the dependent", Command::new(&binary).env("LD_LIBRARY_PATH", &lib_dir));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("sgd_step on the packaged crate"), "unexpected output: {stdout}");
}

fn write_empty_library(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("folder")).expect("create the stub's folder");
    let source = path.with_extension("c");
    std::fs::write(&source, "/* no symbols: stands in for a library nothing calls */\n").expect("write stub source");
    let status =
        Command::new("cc").arg("-shared").arg("-o").arg(path).arg(&source).status().expect("run cc for the stub");
    assert!(status.success(), "cc failed on the empty library");
}

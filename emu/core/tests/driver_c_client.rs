//! A C program built with `gcc ... -lcuda` against the emulator's
//! `libcuda.so` runs kernels through the plain driver API and checks the
//! answers and the error codes itself (`tests/c/client.c`); another, linked
//! with `-lcublas -lcurand -lcuda` found through `LIBRARY_PATH`, calls the
//! emulated libraries (`tests/c/libraries_client.c`).

mod driver_toolchain;

use driver_toolchain::{compile_test_kernels, cuda_include_dir, find_nvcc, libcuda_dir, scratch_dir};
use std::path::Path;
use std::process::Command;

#[test]
fn c_client_runs_kernels_and_sees_driver_errors() {
    let dir = scratch_dir("driver_c_client");
    let ptx = compile_test_kernels(&dir);
    let lib_dir = libcuda_dir();
    let client = dir.join("client");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/client.c");
    let compiled = Command::new("gcc")
        .arg(&source)
        .arg("-I")
        .arg(cuda_include_dir(&find_nvcc()))
        .arg("-L")
        .arg(&lib_dir)
        .args(["-lcuda", "-ldl", "-o"])
        .arg(&client)
        .status()
        .expect("run gcc");
    assert!(compiled.success(), "gcc failed on client.c");

    let output = Command::new(&client).arg(&ptx).env("LD_LIBRARY_PATH", &lib_dir).output().expect("run client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "client failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert!(stdout.starts_with("driver: emulator\n"), "the client did not find the emulator's exports:\n{stdout}");
    for check in ["device", "bad_image", "vec_add", "block_sum", "out_of_bounds"] {
        assert!(stdout.contains(&format!("PASS {check}\n")), "check {check} did not pass:\n{stdout}");
    }
    assert!(stdout.ends_with("ALL PASSED\n"), "{stdout}");
    // The out-of-bounds launch is reported, naming the kernel.
    assert!(
        stderr.lines().any(|line| line.starts_with("ptx-emu: ") && line.contains("write_past_end")),
        "no finding reported on stderr:\n{stderr}"
    );
}

/// Linking as cudarc's `dynamic-linking` does (the libraries found through
/// `LIBRARY_PATH`, as `ptx-emu run` sets it) records the SONAMEs, and at run
/// time the libraries bind to the one emulated device.
#[test]
fn c_client_links_the_emulated_libraries() {
    let dir = scratch_dir("libraries_c_client");
    let lib_dir = libcuda_dir();
    let client = dir.join("libraries_client");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/libraries_client.c");
    let compiled = Command::new("gcc")
        .arg(&source)
        .arg("-I")
        .arg(cuda_include_dir(&find_nvcc()))
        .args(["-lcublas", "-lcurand", "-lcuda", "-o"])
        .arg(&client)
        .env("LIBRARY_PATH", &lib_dir)
        .env("LD_LIBRARY_PATH", &lib_dir)
        .status()
        .expect("run gcc");
    assert!(compiled.success(), "gcc failed on libraries_client.c");
    let dynamic = Command::new("readelf").arg("-d").arg(&client).output().expect("run readelf");
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    for needed in ["libcublas.so.13", "libcurand.so.10", "libcuda.so.1"] {
        assert!(dynamic.contains(&format!("Shared library: [{needed}]")), "not linked with {needed}:\n{dynamic}");
    }
    let output = Command::new(&client).env("LD_LIBRARY_PATH", &lib_dir).output().expect("run client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "client failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert_eq!(stdout, "PASS sgemm\nPASS uniform\nALL PASSED\n");
}

/// The library is a drop-in driver: SONAME libcuda.so.1, the link beside it,
/// and the symbols a client resolves.
#[test]
fn library_has_driver_soname_and_exports() {
    let lib_dir = libcuda_dir();
    let link = std::fs::read_link(lib_dir.join("libcuda.so.1")).expect("libcuda.so.1 is a symlink");
    assert_eq!(link, Path::new("libcuda.so"));
    let dynamic = Command::new("readelf").arg("-d").arg(lib_dir.join("libcuda.so")).output().expect("run readelf");
    assert!(String::from_utf8_lossy(&dynamic.stdout).contains("Library soname: [libcuda.so.1]"));
    let symbols =
        Command::new("nm").args(["-D", "--defined-only"]).arg(lib_dir.join("libcuda.so")).output().expect("run nm");
    let symbols = String::from_utf8_lossy(&symbols.stdout);
    let exported: Vec<&str> = symbols.lines().filter_map(|line| line.split_whitespace().nth(2)).collect();
    for name in [
        "cuInit",
        "cuDevicePrimaryCtxRetain",
        "cuCtxCreate_v4",
        "cuMemAlloc_v2",
        "cuMemcpyHtoDAsync_v2",
        "cuMemsetD8Async",
        "cuModuleLoadData",
        "cuModuleGetFunction",
        "cuLaunchKernel",
        "cuEventElapsedTime_v2",
        "cuDeviceGetUuid_v2",
        "cuStreamWaitEvent",
        "cuGetErrorString",
        "ptxEmuIsEmulator",
        "ptxEmuGetLastLaunchCountersJson",
    ] {
        assert!(exported.contains(&name), "{name} is not exported");
    }
}

//! The emulated `libcudart.so` runs what nvcc compiles for the CUDA runtime:
//! `tests/c/runtime_client.cu` (`<<<>>>` launches of a template at two
//! types, on a created stream and on the default one, dynamic shared memory
//! behind `cudaFuncSetAttribute`, a `__constant__` table, `cudaLaunchKernel`,
//! the runtime's errors, a memcheck finding) built with `nvcc -arch=sm_80`,
//! linked with `-lcudart` against the emulated libraries as a user's build
//! would, and run on the emulator with every check on. Once with the legacy
//! default stream, beside an object with machine code only (which cannot
//! run, and says so); once with `--default-stream per-thread`, as
//! candle-kernels compiles its static kernels (the `_ptsz` entry points).

mod driver_toolchain;

use driver_toolchain::{find_nvcc, libcuda_dir, scratch_dir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(name)
}

/// `nvcc -c` with `args`, started (the compiles run side by side).
fn start_nvcc(args: &[&str], source: &Path, object: &Path) -> Child {
    Command::new(find_nvcc()).args(args).arg("-c").arg(source).arg("-o").arg(object).spawn().expect("run nvcc")
}

fn finish(what: &str, child: Child) {
    let output = child.wait_with_output().expect("wait for nvcc");
    assert!(output.status.success(), "nvcc failed on {what}");
}

/// Links `objects` as a C++ program with `-lcudart` from `lib_dir` and
/// checks that it records the runtime's SONAME.
fn link(objects: &[&Path], program: &Path, lib_dir: &Path) {
    let status = Command::new("g++")
        .args(objects)
        .arg("-L")
        .arg(lib_dir)
        .args(["-lcudart", "-o"])
        .arg(program)
        .status()
        .expect("run g++");
    assert!(status.success(), "linking {} failed", program.display());
    let dynamic = Command::new("readelf").arg("-d").arg(program).output().expect("run readelf");
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(dynamic.contains("Shared library: [libcudart.so.13]"), "not linked with libcudart.so.13:\n{dynamic}");
}

/// Runs the program on the emulator; its stdout and stderr.
fn run(program: &Path, lib_dir: &Path) -> (String, String) {
    let output = Command::new(program).env("LD_LIBRARY_PATH", lib_dir).output().expect("run the program");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{} failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        program.display(),
        output.status
    );
    (stdout, stderr)
}

const CHECKS: [&str; 6] = [
    "device",
    "template_on_stream",
    "template_default_stream",
    "dynamic_shared_opt_in",
    "cudaLaunchKernel",
    "launch_errors",
];

fn assert_passed(stdout: &str, extra: &[&str]) {
    let expected: String =
        CHECKS.iter().chain(extra).chain(&["memcheck"]).map(|check| format!("PASS {check}\n")).collect::<String>()
            + "ALL PASSED\n";
    assert_eq!(stdout, expected);
}

/// The finding of the last launch, reported by the emulator naming the kernel.
fn assert_memcheck_reported(stderr: &str) {
    assert!(
        stderr.lines().any(|line| line.starts_with("ptx-emu: OutOfBounds") && line.contains("_Z14write_past_endPii")),
        "no memcheck finding for write_past_end on stderr:\n{stderr}"
    );
}

#[test]
fn nvcc_runtime_program_runs_on_the_emulated_libcudart() {
    let dir = scratch_dir("cudart_client");
    let lib_dir = libcuda_dir();
    let (legacy, sass_only, per_thread) = (dir.join("legacy.o"), dir.join("sass_only.o"), dir.join("per_thread.o"));
    let main = source("runtime_client.cu");
    let compiles = [
        ("legacy", start_nvcc(&["-arch=sm_80", "-DWITH_SASS_ONLY"], &main, &legacy)),
        // Machine code only: no PTX in its fat binary.
        (
            "sass only",
            start_nvcc(&["-gencode=arch=compute_80,code=sm_80"], &source("runtime_client_sass_only.cu"), &sass_only),
        ),
        ("per-thread", start_nvcc(&["-arch=sm_80", "--default-stream", "per-thread"], &main, &per_thread)),
    ];
    for (what, child) in compiles {
        finish(what, child);
    }

    let program = dir.join("legacy");
    link(&[&legacy, &sass_only], &program, &lib_dir);
    let (stdout, stderr) = run(&program, &lib_dir);
    assert_passed(&stdout, &["sass_only"]);
    assert_memcheck_reported(&stderr);
    assert!(
        stderr.contains("ptx-emu: libcudart: cannot run kernel _Z9fill_onesPi: its fat binary: it holds machine code only (sm_80) and no PTX"),
        "the machine-code-only kernel's launch is explained on stderr:\n{stderr}"
    );

    let symbols = Command::new("nm").arg("-u").arg(&per_thread).output().expect("run nm");
    let symbols = String::from_utf8_lossy(&symbols.stdout);
    assert!(
        symbols.contains("__cudaLaunchKernel_ptsz"),
        "per-thread code launches through the _ptsz entry:\n{symbols}"
    );
    let program = dir.join("per_thread");
    link(&[&per_thread], &program, &lib_dir);
    let (stdout, stderr) = run(&program, &lib_dir);
    assert_passed(&stdout, &[]);
    assert_memcheck_reported(&stderr);
}

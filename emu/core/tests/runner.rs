//! `ptx-emu run -- COMMAND`: the runner other crates use in CI. It must find
//! the emulator's `libcuda.so` on its own, give it to the command first on
//! the library paths, turn its flags into the emulator's variables, and
//! return the command's status.

mod driver_toolchain;

use driver_toolchain::{compile_test_kernels, cuda_include_dir, find_nvcc, libcuda_dir, scratch_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn runner() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ptx-emu"));
    // The runner, not the caller, provides the driver.
    command.env_remove("LD_LIBRARY_PATH").env_remove("LIBRARY_PATH").env_remove("PTX_EMU_LIB_DIR");
    command
}

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The C client, built against the emulator's headers but run with no
/// library path of its own.
fn build_c_client(dir: &Path) -> PathBuf {
    let client = dir.join("client");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/client.c");
    let compiled = Command::new("gcc")
        .arg(&source)
        .arg("-I")
        .arg(cuda_include_dir(&find_nvcc()))
        .arg("-L")
        .arg(libcuda_dir())
        .args(["-lcuda", "-ldl", "-o"])
        .arg(&client)
        .status()
        .expect("run gcc");
    assert!(compiled.success(), "gcc failed on client.c");
    client
}

#[test]
fn runs_a_driver_client_on_the_emulator_with_counters() {
    let dir = scratch_dir("runner_client");
    let ptx = compile_test_kernels(&dir);
    let client = build_c_client(&dir);
    let counters = dir.join("counters.jsonl");
    let _ = std::fs::remove_file(&counters);

    let output = runner()
        .arg("run")
        .arg("--counters")
        .arg(&counters)
        .arg("--")
        .arg(&client)
        .arg(&ptx)
        .output()
        .expect("run ptx-emu");
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "client under the runner failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(stdout.starts_with("driver: emulator\n") && stdout.ends_with("ALL PASSED\n"), "{stdout}");
    assert!(
        stderr.lines().any(|l| l.starts_with("ptx-emu: ") && l.contains("write_past_end")),
        "memcheck is on by default:\n{stderr}"
    );
    let counters = std::fs::read_to_string(&counters).expect("--counters reached the emulator: the file exists");
    assert!(counters.lines().any(|l| l.contains("\"kernel\":\"vec_add\"")), "no vec_add launch counted:\n{counters}");
}

#[test]
fn flags_become_emulator_variables_and_the_library_comes_first() {
    let dir = scratch_dir("runner_env");
    let output = runner()
        .env("LD_LIBRARY_PATH", "/already/there")
        .args(["run", "--no-memcheck", "--no-racecheck", "--no-initcheck", "--no-synccheck", "--threads", "3"])
        .arg("--initcheck-shared")
        .args(["--memory-bytes", "1048576", "--counters", "c.jsonl", "--", "env"])
        .current_dir(&dir)
        .output()
        .expect("run ptx-emu");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let var = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} not set:\n{stdout}"))
            .to_string()
    };
    for check in ["MEMCHECK", "RACECHECK", "INITCHECK", "SYNCCHECK"] {
        assert_eq!(var(&format!("PTX_EMU_{check}")), "0");
    }
    assert_eq!(var("PTX_EMU_INITCHECK_SHARED"), "1");
    assert_eq!(var("PTX_EMU_THREADS"), "3");
    assert_eq!(var("PTX_EMU_GLOBAL_MEMORY_BYTES"), "1048576");
    assert_eq!(PathBuf::from(var("PTX_EMU_COUNTERS_FILE")), dir.join("c.jsonl"), "made absolute");
    let library_path = var("LD_LIBRARY_PATH");
    let mut dirs = library_path.split(':');
    let first = PathBuf::from(dirs.next().expect("one entry"));
    assert!(first.join("libcuda.so").is_file(), "first on LD_LIBRARY_PATH is {first:?}, without libcuda.so");
    assert_eq!(dirs.collect::<Vec<_>>(), ["/already/there"], "the caller's folders follow");
    assert!(var("LIBRARY_PATH").starts_with(first.to_str().expect("utf-8 path")), "for `-lcuda` at link time");
    assert_eq!(PathBuf::from(var("PTX_EMU_LIB_DIR")), first);
}

#[test]
fn lib_dir_prints_the_folder_it_would_use() {
    let output = runner().arg("lib-dir").output().expect("run ptx-emu");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(Path::new(stdout.trim()).join("libcuda.so").is_file(), "{stdout}");

    let explicit = libcuda_dir();
    let output = runner().arg("lib-dir").arg("--lib-dir").arg(&explicit).output().expect("run ptx-emu");
    assert_eq!(text(&output).0.trim(), explicit.to_str().expect("utf-8 path"));
}

#[test]
fn the_command_status_comes_back_and_mistakes_are_refused() {
    let status = |args: &[&str]| runner().args(args).output().expect("run ptx-emu").status.code();
    assert_eq!(status(&["run", "--", "sh", "-c", "exit 7"]), Some(7));
    assert_eq!(status(&["run", "--", "true"]), Some(0));
    assert_eq!(status(&["run", "--", "/nonexistent/program"]), Some(127));
    for wrong in [
        &["run"][..],
        &["run", "--threads", "many", "--", "true"],
        &["run", "--threads"],
        &["run", "--no-such-check", "--", "true"],
        &["run", "--lib-dir", "/nonexistent", "--", "true"],
        &["launch", "--", "true"],
        &[],
    ] {
        let output = runner().args(wrong).output().expect("run ptx-emu");
        assert_eq!(output.status.code(), Some(2), "{wrong:?} was accepted");
        assert!(text(&output).1.starts_with("ptx-emu: "), "{wrong:?}: no message");
    }
}

/// As after `cargo install --path emu/core`: no library beside the runner, so it
/// builds one from its source into the cache, once.
#[test]
fn builds_the_library_into_its_cache_when_none_is_beside_it() {
    let dir = scratch_dir("runner_install");
    let alone = dir.join("bin").join("ptx-emu");
    std::fs::create_dir_all(alone.parent().expect("bin/")).expect("create bin/");
    std::fs::copy(env!("CARGO_BIN_EXE_ptx-emu"), &alone).expect("copy the runner");
    let cache = dir.join("cache");
    let run_alone = |args: &[&str]| {
        let mut command = Command::new(&alone);
        command.env_remove("LD_LIBRARY_PATH").env_remove("PTX_EMU_LIB_DIR").env("PTX_EMU_CACHE_DIR", &cache);
        command.args(args).output().expect("run the copied runner")
    };

    let first = run_alone(&["lib-dir"]);
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "{stderr}");
    let lib_dir = PathBuf::from(stdout.trim());
    assert!(lib_dir.starts_with(&cache) && lib_dir.join("libcuda.so").is_file(), "{lib_dir:?}");
    assert!(stderr.contains("building the emulated libraries"), "{stderr}");

    let second = run_alone(&["run", "--", "sh", "-c", "echo $LD_LIBRARY_PATH"]);
    let (stdout, stderr) = text(&second);
    assert!(second.status.success(), "{stderr}");
    assert!(!stderr.contains("building"), "built again:\n{stderr}");
    assert_eq!(stdout.trim(), lib_dir.to_str().expect("utf-8 path"));
}

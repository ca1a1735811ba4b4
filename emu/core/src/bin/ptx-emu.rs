//! `ptx-emu`: runs a command with the emulator as its CUDA driver, so that a
//! crate's CUDA tests run in CI on a machine without a GPU.
//!
//! It finds the folder of the emulated libraries (`libcuda.so` and the
//! libraries beside it, see [`EMULATED_LIBRARIES`]; or builds them once from
//! this package's source tree), puts it first on `LD_LIBRARY_PATH` (programs
//! that open them at run time) and `LIBRARY_PATH` (programs linked with
//! `-lcuda`, `-lcublas`, ...), turns the flags into the `PTX_EMU_*` variables
//! the emulator reads, and runs the command, exiting with its status.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The libraries the emulator impersonates, all in one folder, each built
/// by its own package of the workspace (listed in [`LIBRARY_PACKAGES`]).
const EMULATED_LIBRARIES: [&str; 5] = ["libcuda.so", "libcublas.so", "libcublasLt.so", "libcurand.so", "libcudart.so"];

/// The workspace packages that build [`EMULATED_LIBRARIES`].
const LIBRARY_PACKAGES: [&str; 5] =
    ["ptx-emu-cuda", "ptx-emu-cublas", "ptx-emu-cublaslt", "ptx-emu-curand", "ptx-emu-cudart"];

const USAGE: &str = "\
usage: ptx-emu run [OPTIONS] -- COMMAND [ARGS...]   run COMMAND with the emulator as its CUDA driver
       ptx-emu lib-dir [--lib-dir DIR]               print the folder of the emulated libraries

options (each sets the emulator variable in brackets for COMMAND):
  --no-memcheck          no out-of-bounds/misaligned access checks   [PTX_EMU_MEMCHECK=0]
  --no-racecheck         no shared/global race checks                [PTX_EMU_RACECHECK=0]
  --no-initcheck         no uninitialised-read checks                [PTX_EMU_INITCHECK=0]
  --initcheck-shared     initcheck on shared memory too              [PTX_EMU_INITCHECK_SHARED=1]
  --no-synccheck         no barrier-divergence checks                [PTX_EMU_SYNCCHECK=0]
  --counters FILE        append one JSON line of counters per launch [PTX_EMU_COUNTERS_FILE]
  --threads N            host threads running CTAs (0: all cores)    [PTX_EMU_THREADS]
  --memory-bytes N       device memory capacity (default 40 GiB)     [PTX_EMU_GLOBAL_MEMORY_BYTES]
  --lib-dir DIR          use the emulated libraries in DIR          [PTX_EMU_LIB_DIR]

Without --lib-dir or PTX_EMU_LIB_DIR, the libraries are looked for beside
this executable (target/<profile>/ after `cargo build --release -p ptx-emu
-p ptx-emu-cuda ...`), then in a cache (PTX_EMU_CACHE_DIR, else
$XDG_CACHE_HOME/ptx-emu or ~/.cache/ptx-emu), where they are built with cargo
from the source tree this runner was installed from.";

/// What the command line asks for.
struct Invocation {
    lib_dir: Option<PathBuf>,
    emulator_env: Vec<(&'static str, OsString)>,
    command: Vec<OsString>,
    print_lib_dir: bool,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let invocation = match parse(&args) {
        Ok(Some(invocation)) => invocation,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("ptx-emu: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let lib_dir = match locate_library(invocation.lib_dir) {
        Ok(dir) => dir,
        Err(message) => {
            eprintln!("ptx-emu: {message}");
            return ExitCode::from(2);
        }
    };
    if invocation.print_lib_dir {
        println!("{}", lib_dir.display());
        return ExitCode::SUCCESS;
    }
    run(&lib_dir, &invocation.emulator_env, &invocation.command)
}

/// `Ok(None)` for `help`.
fn parse(args: &[OsString]) -> Result<Option<Invocation>, String> {
    let (subcommand, rest) = match args.split_first() {
        Some((first, rest)) => (first.to_string_lossy().into_owned(), rest),
        None => return Err("no subcommand".into()),
    };
    let print_lib_dir = match subcommand.as_str() {
        "run" => false,
        "lib-dir" => true,
        "help" | "--help" | "-h" => return Ok(None),
        other => return Err(format!("unknown subcommand `{other}`")),
    };
    let mut invocation = Invocation { lib_dir: None, emulator_env: Vec::new(), command: Vec::new(), print_lib_dir };
    let mut i = 0;
    while i < rest.len() {
        let flag = rest[i].to_string_lossy().into_owned();
        let mut value = || {
            i += 1;
            rest.get(i).cloned().ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--" => {
                invocation.command = rest[i + 1..].to_vec();
                break;
            }
            "--no-memcheck" => invocation.emulator_env.push(("PTX_EMU_MEMCHECK", "0".into())),
            "--no-racecheck" => invocation.emulator_env.push(("PTX_EMU_RACECHECK", "0".into())),
            "--no-initcheck" => invocation.emulator_env.push(("PTX_EMU_INITCHECK", "0".into())),
            "--no-synccheck" => invocation.emulator_env.push(("PTX_EMU_SYNCCHECK", "0".into())),
            "--initcheck-shared" => invocation.emulator_env.push(("PTX_EMU_INITCHECK_SHARED", "1".into())),
            "--counters" => {
                let file = value()?;
                invocation.emulator_env.push(("PTX_EMU_COUNTERS_FILE", absolute(Path::new(&file)).into_os_string()));
            }
            "--threads" => invocation.emulator_env.push(("PTX_EMU_THREADS", number(&flag, value()?)?)),
            "--memory-bytes" => invocation.emulator_env.push(("PTX_EMU_GLOBAL_MEMORY_BYTES", number(&flag, value()?)?)),
            "--lib-dir" => invocation.lib_dir = Some(PathBuf::from(value()?)),
            "--help" | "-h" => return Ok(None),
            _ => return Err(format!("unknown option `{flag}` (the command goes after `--`)")),
        }
        i += 1;
    }
    if !print_lib_dir && invocation.command.is_empty() {
        return Err("no command to run (write it after `--`)".into());
    }
    Ok(Some(invocation))
}

/// The emulator reads these as integers and ignores what does not parse:
/// refuse such a value here instead.
fn number(flag: &str, value: OsString) -> Result<OsString, String> {
    let text = value.to_string_lossy();
    text.trim().parse::<u64>().map_err(|_| format!("{flag} takes a whole number, not `{text}`"))?;
    Ok(value)
}

/// The command may change directory; a relative counters file would follow it.
fn absolute(path: &Path) -> PathBuf {
    env::current_dir().map(|cwd| cwd.join(path)).unwrap_or_else(|_| path.to_path_buf())
}

/// Every emulated library is in `dir`: they share one device, so they must
/// all come from one build.
fn has_library(dir: &Path) -> bool {
    EMULATED_LIBRARIES.iter().all(|library| dir.join(library).is_file())
}

/// The folder of the emulated libraries: explicit, beside this executable,
/// or built into the cache.
fn locate_library(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(dir) = explicit.or_else(|| env::var_os("PTX_EMU_LIB_DIR").map(PathBuf::from)) {
        let dir = absolute(&dir);
        return if has_library(&dir) {
            Ok(dir)
        } else {
            Err(format!("no emulated libraries ({}) in {}", EMULATED_LIBRARIES.join(", "), dir.display()))
        };
    }
    let exe = env::current_exe().map_err(|e| format!("cannot locate this executable: {e}"))?;
    if let Some(exe_dir) = exe.parent() {
        // `cargo build` puts the library beside the binary, `cargo test` in deps/.
        for dir in [exe_dir.to_path_buf(), exe_dir.join("deps")] {
            if has_library(&dir) {
                return Ok(dir);
            }
        }
    }
    build_into_cache(&exe)
}

/// Builds the libraries from the source tree this runner was compiled from
/// (as `cargo install --path emu/core` leaves it: the packages beside
/// `emu/core`) into a cache folder keyed by that source's path, once; again
/// only when the runner is newer than the libraries.
fn build_into_cache(exe: &Path) -> Result<PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Any member's manifest selects the workspace; `-p` picks the libraries.
    let manifest = source.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(format!(
            "no emulated libraries beside {} and the emulator's source ({}) is gone: pass --lib-dir or set PTX_EMU_LIB_DIR",
            exe.display(),
            source.display()
        ));
    }
    let cache = cache_root()?.join(format!(
        "{}-{:016x}",
        env!("CARGO_PKG_VERSION"),
        fnv1a64(source.as_os_str().as_encoded_bytes())
    ));
    let lib_dir = cache.join("release");
    if has_library(&lib_dir) && !is_newer(exe, &lib_dir.join("libcuda.so")) {
        return Ok(lib_dir);
    }
    eprintln!("ptx-emu: building the emulated libraries from {} into {}", source.display(), cache.display());
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    build.args(["build", "--release", "--lib", "--manifest-path"]).arg(&manifest);
    for package in LIBRARY_PACKAGES {
        build.args(["-p", package]);
    }
    let status = build
        .arg("--target-dir")
        .arg(&cache)
        .status()
        .map_err(|e| format!("could not run {}: {e}", cargo.to_string_lossy()))?;
    if !status.success() || !has_library(&lib_dir) {
        return Err(format!("building the emulated libraries failed ({status}); pass --lib-dir to use a built one"));
    }
    Ok(lib_dir)
}

fn cache_root() -> Result<PathBuf, String> {
    if let Some(dir) = env::var_os("PTX_EMU_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("ptx-emu"));
    }
    env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("ptx-emu"))
        .ok_or_else(|| "no cache folder: set PTX_EMU_CACHE_DIR, or pass --lib-dir".into())
}

fn is_newer(a: &Path, b: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(a), modified(b)), (Some(a), Some(b)) if a > b)
}

/// FNV-1a: a stable name for the cache folder of one source path.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// `dir` then the variable's current folders.
fn prepended(var: &str, dir: &Path) -> OsString {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(old) = env::var_os(var) {
        dirs.extend(env::split_paths(&old).filter(|d| d != dir));
    }
    env::join_paths(dirs).unwrap_or_else(|_| dir.as_os_str().to_owned())
}

fn run(lib_dir: &Path, emulator_env: &[(&'static str, OsString)], command: &[OsString]) -> ExitCode {
    let mut child = Command::new(&command[0]);
    child
        .args(&command[1..])
        .env("LD_LIBRARY_PATH", prepended("LD_LIBRARY_PATH", lib_dir))
        .env("LIBRARY_PATH", prepended("LIBRARY_PATH", lib_dir))
        .env("PTX_EMU_LIB_DIR", lib_dir);
    for (name, value) in emulator_env {
        child.env(name, value);
    }
    let status = match child.status() {
        Ok(status) => status,
        Err(e) => {
            eprintln!("ptx-emu: could not run `{}`: {e}", command[0].to_string_lossy());
            return ExitCode::from(127);
        }
    };
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return ExitCode::from(u8::try_from((128 + signal) & 0xff).unwrap_or(1));
        }
    }
    ExitCode::FAILURE
}

//! Building crates that depend on fused-lora, the way a user would: a nested
//! `cargo` with its own target directory under `target/dependents/`, and an
//! environment holding only what the dependent's build is meant to see.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// The repository root (this package's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/dependents/<name>`, created.
pub fn work_dir(name: &str) -> PathBuf {
    let dir = repo_root().join("target").join("dependents").join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// The cargo running this test, and the toolchain folder it lives in (which
/// holds rustc too).
fn cargo_binary() -> PathBuf {
    PathBuf::from(env!("CARGO"))
}

/// Variables a nested cargo needs to find its toolchain, its registry cache and
/// the network; nothing else of this process's environment is passed on (no
/// PATH, no CUDA or libclang variables, none of the outer cargo's).
const PASSED_THROUGH: &[&str] = &[
    "HOME",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_NET_OFFLINE",
    "CARGO_HTTP_CAINFO",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// `cargo <args>` with a scrubbed environment whose `PATH` is `path_first`,
/// then the toolchain's folder, then `/usr/bin:/bin` (for the linker).
pub fn scrubbed_cargo(path_first: &[&Path], args: &[&str]) -> Command {
    let cargo = cargo_binary();
    let mut path: Vec<PathBuf> = path_first.iter().map(|p| p.to_path_buf()).collect();
    path.extend(cargo.parent().map(Path::to_path_buf));
    path.extend(["/usr/bin", "/bin"].map(PathBuf::from));
    let mut command = Command::new(&cargo);
    command.env_clear().args(args).env("PATH", std::env::join_paths(path).expect("PATH"));
    for var in PASSED_THROUGH {
        if let Some(value) = std::env::var_os(var) {
            command.env(var, value);
        }
    }
    command
}

/// Runs `command`, reports how long it took, and panics with its output when
/// it fails.
pub fn run(what: &str, command: &mut Command) -> Output {
    let start = Instant::now();
    let output = command.output().unwrap_or_else(|e| panic!("{what}: could not start {command:?}: {e}"));
    eprintln!("{what}: {:.1} s", start.elapsed().as_secs_f64());
    if !output.status.success() {
        panic!(
            "{what} failed ({}):\n{command:?}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            tail(&String::from_utf8_lossy(&output.stderr), 12_000)
        );
    }
    output
}

fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    &text[start..]
}

/// Copies the regular files of `from` (recursively) into `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("copy to {}: {e}", target.display()));
        }
    }
}

/// Whether the README's test command runs this (it requires every check to
/// run rather than skip).
pub fn required() -> bool {
    std::env::var("FUSED_LORA_REQUIRE_DEVICE").is_ok_and(|v| v == "1")
}

// Shared by the build scripts of the emulated libraries (each includes it
// with `#[path]`): link against `libcuda.so.1` for the private ABI, set the
// library's SONAME, and put the versioned names beside the library.

// Each build script uses the functions it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The exports of `libcuda.so` the libraries call (`ptx_emu_private::EXPORTS`).
const PRIVATE_EXPORTS: [&str; 4] =
    ["ptxEmuStreamHostOp", "ptxEmuReadDevice2D", "ptxEmuWriteDevice2D", "ptxEmuCheckDevice"];

/// Builds a stub `libcuda.so` (SONAME `libcuda.so.1`, the private exports
/// as empty functions) into `OUT_DIR` and links the library against it, so
/// that it records `NEEDED libcuda.so.1` and, at run time, binds to the one
/// emulated `libcuda.so` the process loads, whose device it then shares.
/// (Linking against the real one would need it built first, which cargo
/// cannot order between two cdylibs.) Link arguments, not a link search
/// path: cargo would put a search path on the library path of `cargo run`.
pub fn link_against_libcuda() {
    link_against_libcuda_calling(&[]);
}

/// [`link_against_libcuda`] for a library that also calls the driver API:
/// the stub defines `driver_functions` too (empty, as the private exports;
/// only their names matter at link time).
pub fn link_against_libcuda_calling(driver_functions: &[&str]) {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let stub_dir = out_dir.join("libcuda-stub");
    std::fs::create_dir_all(&stub_dir).expect("create the stub folder");
    let source = stub_dir.join("stub.rs");
    let functions: String = std::iter::once("#![allow(non_snake_case)]\n".to_string())
        .chain(
            PRIVATE_EXPORTS
                .iter()
                .chain(driver_functions)
                .map(|name| format!("#[no_mangle]\npub extern \"C\" fn {name}() {{}}\n")),
        )
        .collect();
    std::fs::write(&source, functions).expect("write the stub's source");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut build = Command::new(rustc);
    build.args(["--crate-type", "cdylib", "--crate-name", "cuda", "--edition", "2021", "-C", "opt-level=0"]);
    if let Some(target) = std::env::var_os("TARGET") {
        build.arg("--target").arg(target);
    }
    build.args(["-C", "link-arg=-Wl,-soname,libcuda.so.1", "-o"]).arg(stub_dir.join("libcuda.so")).arg(&source);
    let status = build.status().expect("run rustc for the libcuda stub");
    assert!(status.success(), "building the libcuda stub failed");
    println!("cargo:rustc-cdylib-link-arg=-L{}", stub_dir.display());
    println!("cargo:rustc-cdylib-link-arg=-Wl,--no-as-needed,-lcuda,--as-needed");
}

/// Gives the `cdylib` its SONAME (what programs linked with `-l<name>`
/// record) and puts links from each versioned name to `lib<name>.so` beside
/// it, in `target/<profile>/` and `target/<profile>/deps/` (`cargo build`
/// puts the library in the first, `cargo test` only in the second).
pub fn soname_and_links(library: &str, soname: &str, aliases: &[&str]) {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../private/build_support.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    let Some(profile_dir) = profile_dir() else { return };
    for dir in [profile_dir.clone(), profile_dir.join("deps")] {
        for alias in aliases {
            link(&dir, library, alias);
        }
    }
}

/// `target/<profile>/` (or `target/<triple>/<profile>/`): `OUT_DIR` is
/// `<profile dir>/build/<package>-<hash>/out`.
fn profile_dir() -> Option<PathBuf> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR")?);
    let profile_dir = out_dir.ancestors().nth(3)?;
    let build_dir = out_dir.ancestors().nth(2)?;
    (build_dir.file_name()? == "build").then(|| profile_dir.to_path_buf())
}

/// Creates the link before the library exists (the build script runs
/// first); it dangles only until the library is linked.
fn link(dir: &Path, library: &str, alias: &str) {
    let link = dir.join(alias);
    if std::fs::symlink_metadata(&link).is_ok() {
        return;
    }
    #[cfg(unix)]
    if let Err(error) = std::os::unix::fs::symlink(library, &link) {
        println!("cargo:warning=could not create {}: {error}", link.display());
    }
}

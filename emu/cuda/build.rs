//! Gives the `cdylib` (`libcuda.so`) the SONAME a driver library has (`libcuda.so.1`) and
//! puts a `libcuda.so.1 -> libcuda.so` link beside it, so that programs
//! linked with `-lcuda` (which record `libcuda.so.1` as their dependency) and
//! loaders that open `libcuda.so.1` both find the emulator. The link is made
//! in `target/<profile>/` and in `target/<profile>/deps/`: `cargo build`
//! puts the library in the first, `cargo test` only in the second.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    if let Some(profile_dir) = profile_dir() {
        link_so_1(&profile_dir);
        link_so_1(&profile_dir.join("deps"));
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
/// first); it dangles only until the library is linked. Failing to create
/// it is not an error: only loaders asking for `.so.1` need it.
fn link_so_1(dir: &Path) {
    let link = dir.join("libcuda.so.1");
    if std::fs::symlink_metadata(&link).is_ok() {
        return;
    }
    #[cfg(unix)]
    if let Err(error) = std::os::unix::fs::symlink("libcuda.so", &link) {
        println!("cargo:warning=could not create {}: {error}", link.display());
    }
}

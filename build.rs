//! Provides the kernels' PTX and the Rust side of the C parameter structs in
//! `cuda/*.h`, in `OUT_DIR`:
//!
//! - `OUT_DIR/ptx.rs`: one `include_str!` constant per kernel family (`MERGE`, ...);
//! - `OUT_DIR/params.rs`: the `#[repr(C)]` structs the kernels take by value.
//!
//! Both come from `generated/`, which the package ships (PTX for `compute_80`
//! from nvcc, bindgen's output, and `SOURCES`, the stamp of the `cuda/` they
//! were made from), so a dependent builds without nvcc or libclang. The
//! Hopper kernels (`cuda/*_sm90a.cu`, wgmma and TMA) are a second PTX per
//! source, always for `compute_90a` (`stamp::HOPPER_COMPUTE_CAP`), shipped
//! beside the others; the crate loads them only on compute capability 9.0. They are
//! made from `cuda/` instead, with nvcc and bindgen, when
//!
//! - `generated/` does not match `cuda/` (a warning names the stale inputs and
//!   `scripts/refresh-generated.sh`; without nvcc this is an error);
//! - `CUDA_COMPUTE_CAP` asks for another target than `compute_80`;
//! - the `from-source` feature is on (what the refresh script builds with).
//!
//! Where nvcc and libclang come from, in order: explicit environment variables,
//! the usual CUDA locations, `PATH`, and finally the repo-local `.toolchain/`
//! that `scripts/setup.sh` installs. Only the variables that change the output
//! rerun this script; `PATH` does not.

#[path = "build/stamp.rs"]
mod stamp;

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cuda_dir = manifest_dir.join("cuda");
    let generated_dir = manifest_dir.join("generated");

    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    // The directories themselves, so that adding or removing a file reruns this script.
    println!("cargo:rerun-if-changed={}", cuda_dir.display());
    println!("cargo:rerun-if-changed={}", generated_dir.display());
    println!("cargo:rerun-if-changed={}", generated_dir.join("ptx").display());
    let sources = list_files(&cuda_dir);
    for path in
        sources.iter().chain(&list_files_if_any(&generated_dir)).chain(&list_files_if_any(&generated_dir.join("ptx")))
    {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let kernels: Vec<&PathBuf> = sources.iter().filter(|p| has_extension(p, "cu")).collect();
    let headers: Vec<&PathBuf> = sources.iter().filter(|p| has_extension(p, "h")).collect();

    let compute_cap = compute_cap();
    let wanted_stamp = stamp::stamp(&cuda_dir, stamp::SHIPPED_COMPUTE_CAP).unwrap_or_else(|e| fail(&e));
    let shipped_stamp = fs::read_to_string(generated_dir.join("SOURCES")).unwrap_or_default();
    let fresh = shipped_stamp == wanted_stamp;
    let from_source = env::var_os("CARGO_FEATURE_FROM_SOURCE").is_some();

    if fresh && !from_source && compute_cap == stamp::SHIPPED_COMPUTE_CAP {
        use_shipped(&generated_dir, &kernels, &out_dir);
        return;
    }

    let reason = if from_source {
        "the `from-source` feature asks to build the kernels from cuda/".to_string()
    } else if !fresh {
        let stale = stale_message(&shipped_stamp, &wanted_stamp);
        println!("cargo:warning={}", stale.replace('\n', " "));
        stale
    } else {
        format!("CUDA_COMPUTE_CAP={compute_cap} asks for compute_{compute_cap} PTX; the shipped PTX is compute_80")
    };
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "LIBCLANG_PATH", "BINDGEN_EXTRA_CLANG_ARGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let nvcc =
        find_nvcc(&manifest_dir).unwrap_or_else(|tried| fail(&format!("{reason}.\n{}", missing_nvcc_message(&tried))));
    compile_all_ptx(&nvcc, &compute_cap, &cuda_dir, &kernels, &out_dir);
    write_ptx_constants(&kernels, |stem| out_dir.join(format!("{stem}.ptx")), &out_dir);
    if fresh && !from_source {
        // Only the target changed: the shipped bindings still match cuda/*.h.
        copy_file(&generated_dir.join("params.rs"), &out_dir.join("params.rs"));
    } else {
        generate_param_bindings(&manifest_dir, &cuda_dir, &headers, &out_dir);
    }
    // What scripts/refresh-generated.sh copies into generated/ with the rest.
    let made_stamp = stamp::stamp(&cuda_dir, &compute_cap).unwrap_or_else(|e| fail(&e));
    write_if_changed(&out_dir.join("SOURCES"), &made_stamp);
}

/// The shipped PTX and bindings, which match `cuda/`: no tool runs.
fn use_shipped(generated_dir: &Path, kernels: &[&PathBuf], out_dir: &Path) {
    let ptx_dir = generated_dir.join("ptx");
    for src in kernels {
        let ptx = ptx_dir.join(format!("{}.ptx", file_stem(src)));
        if !ptx.is_file() {
            fail(&format!(
                "{} is missing although generated/SOURCES lists its source; run `{}`",
                ptx.display(),
                stamp::REFRESH_COMMAND
            ));
        }
    }
    write_ptx_constants(kernels, |stem| ptx_dir.join(format!("{stem}.ptx")), out_dir);
    copy_file(&generated_dir.join("params.rs"), &out_dir.join("params.rs"));
}

/// Why the shipped copy cannot be used, and the command that fixes it.
fn stale_message(shipped: &str, wanted: &str) -> String {
    let what = if shipped.is_empty() {
        "generated/SOURCES is missing".to_string()
    } else {
        format!("generated/ does not match cuda/ ({})", stamp::differences(shipped, wanted).join("; "))
    };
    format!(
        "{what}, so the kernels are built from cuda/ with nvcc and bindgen; \
         refresh the shipped copy with `{}` and commit generated/",
        stamp::REFRESH_COMMAND
    )
}

fn copy_file(from: &Path, to: &Path) {
    let contents = fs::read_to_string(from)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}; run `{}`", from.display(), stamp::REFRESH_COMMAND)));
    write_if_changed(to, &contents);
}

fn list_files_if_any(dir: &Path) -> Vec<PathBuf> {
    if dir.is_dir() {
        list_files(dir)
    } else {
        Vec::new()
    }
}

fn file_stem(path: &Path) -> &str {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or_else(|| fail(&format!("bad file name {}", path.display())))
}

/// Every regular file directly in `dir`, sorted, so the build is reproducible.
fn list_files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", dir.display())));
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some(ext)
}

fn fail(message: &str) -> ! {
    eprintln!("\nerror: {message}\n");
    std::process::exit(1);
}

/// `CUDA_COMPUTE_CAP` as `80`, `8.0`, `sm_90` or `90a`; the default is 80.
fn compute_cap() -> String {
    let raw = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| stamp::SHIPPED_COMPUTE_CAP.to_string());
    let cap: String = raw.trim().trim_start_matches("sm_").trim_start_matches("compute_").replace('.', "");
    let valid = cap.len() >= 2
        && cap[..2].chars().all(|c| c.is_ascii_digit())
        && cap[2..].chars().all(|c| c.is_ascii_alphabetic());
    if !valid || cap[..2].parse::<u32>().unwrap_or(0) < 80 {
        fail(&format!(
            "CUDA_COMPUTE_CAP={raw:?} is not a compute capability of 8.0 or newer (examples: 80, 86, 90, 90a); \
             the kernels use sm_80 instructions (cp.async, bf16 mma.sync)"
        ));
    }
    cap
}

/// nvcc, from the first place that has one; `Err` lists the places tried.
fn find_nvcc(manifest_dir: &Path) -> Result<PathBuf, Vec<String>> {
    let mut tried = Vec::new();
    let mut candidates: Vec<(String, PathBuf)> = Vec::new();
    if let Some(nvcc) = env::var_os("NVCC") {
        candidates.push(("NVCC".into(), PathBuf::from(nvcc)));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = env::var_os(var) {
            candidates.push((var.into(), PathBuf::from(root).join("bin").join("nvcc")));
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            candidates.push(("PATH".into(), dir.join("nvcc")));
        }
    }
    if let Some(root) = repo_local_cuda_root(manifest_dir) {
        candidates.push(("repo-local .toolchain".into(), root.join("bin").join("nvcc")));
    }
    for (source, path) in candidates {
        if path.is_file() {
            return Ok(path);
        }
        if source != "PATH" {
            tried.push(format!("{source}: {}", path.display()));
        }
    }
    tried.push("every directory on PATH".into());
    tried.push(format!("{}/.toolchain (not installed)", manifest_dir.display()));
    Err(tried)
}

fn missing_nvcc_message(tried: &[String]) -> String {
    format!(
        "nvcc (the CUDA compiler) was not found. Looked at:\n  - {}\n\
         Fix: run `scripts/setup.sh` from the repository root (it installs nvcc and the CUDA headers \
         from NVIDIA's PyPI wheels into .toolchain/, no GPU or system CUDA needed), \
         or set NVCC=/path/to/nvcc or CUDA_HOME to a CUDA 12.x/13.x installation.",
        tried.join("\n  - ")
    )
}

/// The site-packages of the venv that `scripts/setup.sh` creates.
fn repo_local_site_packages(manifest_dir: &Path) -> Option<PathBuf> {
    let lib = manifest_dir.join(".toolchain").join("venv").join("lib");
    let mut pythons: Vec<PathBuf> = fs::read_dir(&lib).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    pythons.sort();
    pythons.into_iter().map(|p| p.join("site-packages")).find(|p| p.is_dir())
}

/// `.../site-packages/nvidia/cu13` (or `cu12`) from the repo-local toolchain.
fn repo_local_cuda_root(manifest_dir: &Path) -> Option<PathBuf> {
    let nvidia = repo_local_site_packages(manifest_dir)?.join("nvidia");
    let mut roots: Vec<PathBuf> = fs::read_dir(&nvidia).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    roots.sort();
    roots.into_iter().rev().find(|p| p.join("bin").join("nvcc").is_file())
}

fn compile_all_ptx(nvcc: &Path, compute_cap: &str, cuda_dir: &Path, kernels: &[&PathBuf], out_dir: &Path) {
    // One nvcc per file, in parallel: each is single-threaded and slow.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let jobs: Vec<_> = kernels
            .iter()
            .map(|src| scope.spawn(move || compile_ptx(nvcc, compute_cap, cuda_dir, src, out_dir)))
            .collect();
        jobs.into_iter().filter_map(|job| job.join().expect("nvcc job thread panicked").err()).collect()
    });
    if !failures.is_empty() {
        fail(&failures.join("\n\n"));
    }
}

fn compile_ptx(nvcc: &Path, compute_cap: &str, cuda_dir: &Path, src: &Path, out_dir: &Path) -> Result<(), String> {
    let out = out_dir.join(format!("{}.ptx", file_stem(src)));
    let output = Command::new(nvcc)
        .arg("-ptx")
        .arg(format!("-arch=compute_{}", stamp::kernel_compute_cap(file_stem(src), compute_cap)))
        .args(stamp::NVCC_FLAGS)
        .arg("-I")
        .arg(cuda_dir)
        .arg("-o")
        .arg(&out)
        .arg(src)
        .output()
        .map_err(|e| format!("could not run {}: {e}", nvcc.display()))?;
    if !output.status.success() {
        return Err(format!(
            "nvcc failed on {}:\n{}{}",
            src.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let ptx = fs::read_to_string(&out).map_err(|e| format!("cannot read {}: {e}", out.display()))?;
    fs::write(&out, portable_file_names(&ptx, cuda_dir)).map_err(|e| format!("cannot write {}: {e}", out.display()))
}

/// The `.file` directives `-lineinfo` writes name absolute paths (this
/// checkout, the toolkit's install folder). Only debuggers read them, so they
/// are made relative (`cuda/tiles.cuh`, `<include>/cuda_fp16.hpp`): the
/// PTX is then the same wherever it is built, and the shipped copy can be
/// compared byte for byte and reveals no build machine's paths.
fn portable_file_names(ptx: &str, cuda_dir: &Path) -> String {
    let cuda_prefix = format!("{}/", cuda_dir.display());
    let mut out = String::with_capacity(ptx.len());
    for line in ptx.split_inclusive('\n') {
        let quoted = line.trim_start().starts_with(".file").then(|| {
            let open = line.find('"')?;
            let close = open + 1 + line[open + 1..].find('"')?;
            Some((open, close))
        });
        match quoted.flatten() {
            Some((open, close)) => {
                let path = &line[open + 1..close];
                let portable = if let Some(rest) = path.strip_prefix(&cuda_prefix) {
                    format!("cuda/{rest}")
                } else if let Some(at) = path.rfind("/include/") {
                    format!("<include>{}", &path[at + "/include".len()..])
                } else {
                    format!("<other>/{}", path.rsplit('/').next().unwrap_or(path))
                };
                out.push_str(&line[..=open]);
                out.push_str(&portable);
                out.push_str(&line[close..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// `ptx.rs`: one constant per kernel family, holding the PTX file that
/// `ptx_path` names for its stem (an absolute path, so either the shipped
/// copy or `OUT_DIR`).
fn write_ptx_constants(kernels: &[&PathBuf], ptx_path: impl Fn(&str) -> PathBuf, out_dir: &Path) {
    let mut code = String::from("// Generated by build.rs: the PTX of each `cuda/*.cu`.\n");
    for src in kernels {
        let stem = file_stem(src);
        let name: String =
            stem.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        let path = ptx_path(stem).to_string_lossy().into_owned();
        // `{:?}` writes a Rust string literal, escapes included.
        code.push_str(&format!(
            "/// PTX compiled from `cuda/{stem}.cu`.\npub const {name}: &str = include_str!({path:?});\n"
        ));
    }
    write_if_changed(&out_dir.join("ptx.rs"), &code);
}

fn write_if_changed(path: &Path, contents: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(contents) {
        fs::write(path, contents).unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", path.display())));
    }
}

fn generate_param_bindings(manifest_dir: &Path, cuda_dir: &Path, headers: &[&PathBuf], out_dir: &Path) {
    let mut extra_args: Vec<String> = vec![format!("-I{}", cuda_dir.display())];
    if env::var_os("LIBCLANG_PATH").is_none() {
        match find_libclang(manifest_dir) {
            Some(LibclangSource::RepoLocal(dir)) => {
                // bindgen loads libclang at run time and reads LIBCLANG_PATH to find it.
                env::set_var("LIBCLANG_PATH", &dir);
                // PyPI's libclang ships without clang's resource headers
                // (stddef.h & co.); the host gcc's are compatible.
                if let Some(gcc_include) = gcc_include_dir() {
                    extra_args.push(format!("-I{gcc_include}"));
                }
            }
            Some(LibclangSource::System) => {}
            None => fail(
                "libclang (needed by bindgen for the kernel parameter structs) was not found. \
                 Fix: run `scripts/setup.sh` from the repository root (installs PyPI's libclang into .toolchain/), \
                 or `apt-get install libclang-dev`, or set LIBCLANG_PATH to the folder holding libclang.so.",
            ),
        }
    }

    let mut builder = bindgen::Builder::default()
        .clang_args(&extra_args)
        .allowlist_type("Lora.*")
        .allowlist_var("LORA_.*")
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(true)
        .generate_comments(true);
    for header in headers {
        builder = builder.header(header.to_string_lossy());
    }
    let bindings = builder.generate().unwrap_or_else(|e| fail(&format!("bindgen failed on cuda/*.h: {e}")));
    write_if_changed(&out_dir.join("params.rs"), &bindings.to_string());
}

enum LibclangSource {
    RepoLocal(PathBuf),
    System,
}

fn find_libclang(manifest_dir: &Path) -> Option<LibclangSource> {
    let system_dirs =
        ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"];
    let has_libclang = |dir: &Path| {
        fs::read_dir(dir)
            .map(|entries| entries.filter_map(|e| e.ok()).any(|e| is_libclang_c_api(&e.file_name().to_string_lossy())))
            .unwrap_or(false)
    };
    let llvm_dirs = fs::read_dir("/usr/lib")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
                .map(|e| e.path().join("lib"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if system_dirs.iter().map(Path::new).any(has_libclang) || llvm_dirs.iter().any(|d| has_libclang(d)) {
        return Some(LibclangSource::System);
    }
    let native = repo_local_site_packages(manifest_dir)?.join("clang").join("native");
    native.join("libclang.so").is_file().then_some(LibclangSource::RepoLocal(native))
}

/// The names clang-sys loads: `libclang.so`, `libclang.so.1`, `libclang-14.so.1` —
/// not `libclang-cpp.so`, which is the C++ library without the C API bindgen needs.
fn is_libclang_c_api(name: &str) -> bool {
    name == "libclang.so"
        || name.starts_with("libclang.so.")
        || name
            .strip_prefix("libclang-")
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()) && rest.contains(".so"))
}

fn gcc_include_dir() -> Option<String> {
    let output = Command::new("gcc").arg("-print-file-name=include").output().ok()?;
    let dir = String::from_utf8(output.stdout).ok()?.trim().to_string();
    Path::new(&dir).join("stddef.h").is_file().then_some(dir)
}

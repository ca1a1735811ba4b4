//! The stamp of what `generated/` was made from: one line per input (each
//! file of `cuda/`, the nvcc flags, the target), each with a content hash.
//! `build.rs` compares the shipped `generated/SOURCES` with the stamp of the
//! `cuda/` it is given, without any tool; `tests/generated_fresh.rs` makes
//! the same comparison so that a stale copy fails the test command.
//!
//! Shared by `build.rs` and the test through `#[path]`, so it uses only `std`.

use std::fs;
use std::path::Path;

/// The flags every kernel is compiled with. Part of the stamp: changing one
/// makes the shipped PTX stale.
pub const NVCC_FLAGS: &[&str] = &[
    "-std=c++17",
    "-O3",
    "-lineinfo",
    "--expt-relaxed-constexpr",
    // Keep IEEE semantics: the numerics contract (one rounding per output,
    // bit-identical Philox draws on CPU and GPU) forbids fast-math.
    "-ftz=false",
    "-prec-div=true",
    "-prec-sqrt=true",
];

/// The target of the PTX shipped in `generated/ptx/`.
pub const SHIPPED_COMPUTE_CAP: &str = "80";

/// Kernel sources whose stem ends with this (`cuda/forward_sm90a.cu`) use
/// Hopper-only instructions (wgmma, TMA, mbarrier transactions): they are
/// always compiled for [`HOPPER_COMPUTE_CAP`], whatever the other kernels
/// are compiled for, and loaded only on compute capability 9.0 devices.
pub const HOPPER_SUFFIX: &str = "_sm90a";

/// The target of the Hopper kernels' PTX (architecture-specific: wgmma and
/// setmaxnreg exist only on `sm_90a`).
pub const HOPPER_COMPUTE_CAP: &str = "90a";

/// The target a kernel source of stem `stem` is compiled for, when the
/// others are compiled for `compute_cap`.
pub fn kernel_compute_cap<'a>(stem: &str, compute_cap: &'a str) -> &'a str {
    if stem.ends_with(HOPPER_SUFFIX) {
        HOPPER_COMPUTE_CAP
    } else {
        compute_cap
    }
}

/// The command that rewrites `generated/` from `cuda/`, quoted in every
/// message about a stale copy.
pub const REFRESH_COMMAND: &str = "scripts/refresh-generated.sh";

/// The header line of `generated/SOURCES`.
const HEADER: &str = "# Inputs of generated/ (written by scripts/refresh-generated.sh, checked by build.rs)";

/// FNV-1a, 64 bits: stable across Rust versions and platforms (unlike
/// `DefaultHasher`), and enough to notice an edit.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// The stamp of the files of `cuda_dir` (regular files directly in it, by
/// name) compiled for `compute_cap`.
pub fn stamp(cuda_dir: &Path, compute_cap: &str) -> Result<String, String> {
    let entries = fs::read_dir(cuda_dir).map_err(|e| format!("cannot read {}: {e}", cuda_dir.display()))?;
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    let mut lines = vec![
        HEADER.to_string(),
        format!("compute_cap {compute_cap}"),
        format!("hopper_compute_cap {HOPPER_COMPUTE_CAP} (cuda/*{HOPPER_SUFFIX}.cu)"),
        format!("nvcc_flags {}", NVCC_FLAGS.join(" ")),
    ];
    for path in files {
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        lines.push(format!("cuda/{name} {:016x}", fnv1a64(&bytes)));
    }
    Ok(lines.join("\n") + "\n")
}

/// The lines of `expected` that `actual` lacks and the reverse, for a
/// message that names the stale inputs.
pub fn differences(expected: &str, actual: &str) -> Vec<String> {
    let only_in = |a: &str, b: &str, sign: char| {
        a.lines()
            .filter(|line| !b.lines().any(|other| other == *line))
            .map(|line| format!("{sign} {line}"))
            .collect::<Vec<_>>()
    };
    let mut out = only_in(expected, actual, '-');
    out.extend(only_in(actual, expected, '+'));
    out
}

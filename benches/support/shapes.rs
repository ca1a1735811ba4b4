//! The benchmarked shapes and case names, in one place for the benches and
//! the performance report (`examples/perf_report`), which joins criterion's
//! measurements with its modeled times by these names.

// Each user takes what it needs: the report no dry-run helpers, each bench
// only its own variant names.
#![allow(dead_code)]

/// (name, K, N): docs/performance.md's Llama-3-8B projections.
pub const PROJECTIONS: &[(&str, usize, usize)] = &[
    ("llama3-8b q/o 4096->4096", 4096, 4096),
    ("llama3-8b k/v 4096->1024", 4096, 1024),
    ("llama3-8b gate/up 4096->14336", 4096, 14336),
    ("llama3-8b down 14336->4096", 14336, 4096),
];
/// (name, M, K, N): the smaller whole problems the targets name beside the
/// projections (issue 12's 1024³ and 2048 x 1024 x 1024), each at its own M.
pub const SQUARE_SHAPES: &[(&str, usize, usize, usize)] =
    &[("square 1024^3", 1024, 1024, 1024), ("square 2048x1024x1024", 2048, 1024, 1024)];
/// Tokens per batch the report models (decode-sized and training-sized).
pub const REPORT_TOKENS: &[usize] = &[16, 4096];
/// Adapter ranks the benches and the report cover.
pub const RANKS: &[usize] = &[16, 64];
/// (name, K, N) and tokens of the backward cases on each side of a
/// change of dX's tile (src/backward.rs, `dx_tile`; docs/performance.md):
/// with K = N = 1024, M = 1024 has 64 tiles of 128 x 128 (the 64 x 64
/// kernel on every device), M = 2048 has 128 (the 128 x 64 kernel on an
/// A100's 108 SMs, 3 CTAs per SM; 64 x 64 on an H100's 132). At M = 4096
/// the Llama-3-8B projections take the 128 x 128 kernel on both.
pub const DX_TILE_PROJECTION: (&str, usize, usize) = ("square 1024->1024", 1024, 1024);
pub const DX_TILE_TOKENS: &[usize] = &[1024, 2048];

/// Many adapters at the cost of one: this many adapters of rank 16, each row
/// a different one of them than its neighbours (`scattered_rows`), at these
/// token counts, on the first projection.
pub const SCATTERED_ADAPTERS: usize = 32;
pub const SCATTERED_TOKENS: &[usize] = &[256, 4096];
pub const SCATTERED_RANK: usize = 16;

/// The row indices of a scattered batch: row i uses adapter
/// `(7i + i / 3) mod L`, every adapter present and no two neighbours alike
/// (fixed, so a run is comparable to the performance report's).
pub fn scattered_rows(m: usize, adapters: usize) -> Vec<i32> {
    (0..m).map(|i| ((i * 7 + i / 3) % adapters) as i32).collect()
}

/// Forward variants (criterion function ids).
pub const FUSED: &str = "fused";
pub const CUBLAS_BASE: &str = "base GEMM alone (cuBLAS)";
pub const OWN_BASE: &str = "base GEMM alone (this crate)";
pub const UNFUSED: &str = "unfused: cuBLAS + shrink + expand";
/// Backward variants.
pub const BWD_FUSED_P_KEPT: &str = "fused, P kept";
pub const BWD_FUSED_P_RECOMPUTED: &str = "fused, P recomputed";
pub const BWD_CUBLAS_BASE: &str = "dX base alone: dY*W0 (cuBLAS)";
pub const BWD_UNFUSED: &str = "unfused: 5 cuBLAS GEMMs";

/// The criterion group of one forward case.
pub fn forward_group(projection: &str, m: usize, r: usize) -> String {
    format!("forward bf16 {projection} M={m} r={r}")
}

/// The criterion group of one backward case.
pub fn backward_group(projection: &str, m: usize, r: usize) -> String {
    format!("backward bf16 {projection} M={m} r={r}")
}

/// The small stand-in of a case that the dry run (`cargo test --benches`)
/// executes on any device, the emulator included: K and N divided by 64,
/// M at most 32. Every variant's code path runs, on shapes the emulator
/// finishes in seconds.
pub fn dry_shape(m: usize, k: usize, n: usize) -> (usize, usize, usize) {
    (m.min(32), (k / 64).max(16), (n / 64).max(16))
}

/// Bench inputs: multiples of 1/8 in [-1, 1]. Every product of two is a
/// multiple of 1/64, and the sums of the dry run's shapes stay below 2^24
/// such steps, so f32 accumulation in any order is exact and each output
/// is the exact value rounded once: the dry run compares bit for bit.
pub fn fill(len: usize, phase: usize) -> Vec<half::bf16> {
    (0..len).map(|i| half::bf16::from_f32(((i + phase) % 17) as f32 / 8.0 - 1.0)).collect()
}

//! Forward-pass benches over docs/performance.md's shapes, on a GPU: the fused forward
//! against the base GEMM alone (cuBLAS, and this crate's own kernel with every
//! row's adapter index at −1) and against the unfused path a user would write
//! (cuBLAS GEMM, then this crate's shrink, then expand). Throughput is counted
//! in FLOPs; the stream is synchronised inside each timed iteration, so the
//! clock stops after the kernels do. Without libcublas the cuBLAS cases are
//! skipped with a message.
//!
//! Without a GPU (no driver, or the emulator, whose timings say nothing about
//! a GPU) every bench says it is skipped and why, and `cargo bench` succeeds.
//! `cargo test --benches` runs the dry run (see `support`): every variant of
//! every case once, on a small stand-in shape, checked bit for bit against
//! the CPU reference.

mod support;

use std::sync::Arc;

use criterion::{Criterion, Throughput};
use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use fused_lora::reference::{self, Precision};
use fused_lora::{Adapter, AdapterStack, AdapterStatus, ForwardOutput, Linear, LoraShape, RowAdapters};
use half::bf16;

use support::shapes::{self, fill};
use support::Engines;

/// Beyond the report's projections: Qwen2.5-7B's widest one.
const EXTRA_PROJECTIONS: &[(&str, usize, usize)] = &[("qwen2.5-7b 3584->18944", 3584, 18944)];
/// Tokens per batch: decode (1, 16), small prefill (128), training (2048, 4096).
const TOKENS: &[usize] = &[1, 16, 128, 2048, 4096];
const SCALE: f32 = 2.0;

/// One way of computing the forward pass.
type Variant = fn(&Engines, &Arc<CudaStream>, &mut Problem);

struct Problem {
    x: CudaSlice<bf16>,
    w: CudaSlice<bf16>,
    a: CudaSlice<bf16>,
    b: CudaSlice<bf16>,
    y: CudaSlice<bf16>,
    p: CudaSlice<bf16>,
    none: CudaSlice<i32>,
    status: AdapterStatus,
    m: usize,
    k: usize,
    n: usize,
    r: usize,
}

fn problem(stream: &Arc<CudaStream>, m: usize, k: usize, n: usize, r: usize) -> Result<Problem, String> {
    let driver = |e: cudarc::driver::DriverError| e.to_string();
    Ok(Problem {
        x: stream.clone_htod(&fill(m * k, 0)).map_err(driver)?,
        w: stream.clone_htod(&fill(n * k, 3)).map_err(driver)?,
        a: stream.clone_htod(&fill(r * k, 5)).map_err(driver)?,
        b: stream.clone_htod(&fill(n * r, 7)).map_err(driver)?,
        y: stream.alloc_zeros(m * n).map_err(driver)?,
        p: stream.alloc_zeros(m * r).map_err(driver)?,
        none: stream.clone_htod(&vec![-1i32; m]).map_err(driver)?,
        status: AdapterStatus::new(stream).map_err(|e| e.to_string())?,
        m,
        k,
        n,
        r,
    })
}

fn fused(engines: &Engines, stream: &Arc<CudaStream>, pr: &mut Problem) {
    let kernels = &engines.kernels;
    let linear = Linear { weight: pr.w.as_view(), bias: None, n: pr.n, k: pr.k };
    let adapter = Adapter { a: pr.a.as_view(), b: pr.b.as_view(), rank: pr.r, scale: SCALE };
    let mut out = ForwardOutput { y: pr.y.as_view_mut(), p: Some(pr.p.as_view_mut()) };
    kernels.forward(stream, &pr.x.as_view(), &linear, &adapter, None, &mut out).expect("fused forward");
}

fn base_only(engines: &Engines, stream: &Arc<CudaStream>, pr: &mut Problem) {
    let kernels = &engines.kernels;
    let linear = Linear { weight: pr.w.as_view(), bias: None, n: pr.n, k: pr.k };
    let ranks = [pr.r];
    let scales = [SCALE];
    let stack = AdapterStack { a: pr.a.as_view(), b: pr.b.as_view(), r_max: pr.r, ranks: &ranks, scales: &scales };
    let mut rows = RowAdapters { index: pr.none.as_view(), status: &mut pr.status };
    let mut out = ForwardOutput { y: pr.y.as_view_mut(), p: Some(pr.p.as_view_mut()) };
    kernels.forward_multi(stream, &pr.x.as_view(), &linear, &stack, &mut rows, None, &mut out).expect("base GEMM");
}

/// `Y = X·W0ᵀ` by cuBLAS. cuBLAS is column-major: row-major Y `[M, N]` is a
/// column-major `N × M` matrix equal to `op(W0)·X` with W0 (row-major `[N, K]`,
/// i.e. column-major `K × N`) transposed and X (column-major `K × M`) as is.
fn cublas_base(engines: &Engines, _stream: &Arc<CudaStream>, pr: &mut Problem) {
    let blas = engines.blas.as_ref().expect("cuBLAS cases run only when it loaded");
    let (m, n, k) = (pr.m as i32, pr.n as i32, pr.k as i32);
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n,
        n: m,
        k,
        alpha: bf16::ONE,
        lda: k,
        ldb: k,
        beta: bf16::ZERO,
        ldc: n,
    };
    // SAFETY: W0 holds N·K, X holds M·K and Y holds M·N elements, exactly the
    // extents the leading dimensions and sizes above describe.
    unsafe { blas.gemm(cfg, &pr.w, &pr.x, &mut pr.y) }.expect("cuBLAS GEMM");
}

fn unfused(engines: &Engines, stream: &Arc<CudaStream>, pr: &mut Problem) {
    let kernels = &engines.kernels;
    cublas_base(engines, stream, pr);
    let r = pr.r;
    kernels.shrink(stream, &pr.x.as_view(), &pr.a.as_view(), r, &mut pr.p.as_view_mut()).expect("shrink");
    kernels.expand(stream, &pr.p.as_view(), &pr.b.as_view(), r, SCALE, &mut pr.y.as_view_mut()).expect("expand");
}

/// (label, variant, needs cuBLAS, what it computes)
const VARIANTS: [(&str, Variant, bool, Computes); 4] = [
    (shapes::FUSED, fused, false, Computes::Fused),
    (shapes::CUBLAS_BASE, cublas_base, true, Computes::Base),
    (shapes::OWN_BASE, base_only, false, Computes::Base),
    (shapes::UNFUSED, unfused, true, Computes::BaseThenExpand),
];

fn all_projections() -> impl Iterator<Item = &'static (&'static str, usize, usize)> {
    shapes::PROJECTIONS.iter().chain(EXTRA_PROJECTIONS)
}

/// Every benchmarked case: (name, M, K, N, r) — the projections at each
/// token count, and the whole problems of `shapes::SQUARE_SHAPES` at their own M.
fn all_cases() -> Vec<(&'static str, usize, usize, usize, usize)> {
    let mut cases = Vec::new();
    for &(name, k, n) in all_projections() {
        for &r in shapes::RANKS {
            for &m in TOKENS {
                cases.push((name, m, k, n, r));
            }
        }
    }
    for &(name, m, k, n) in shapes::SQUARE_SHAPES {
        for &r in shapes::RANKS {
            cases.push((name, m, k, n, r));
        }
    }
    cases
}

fn bench_forward(c: &mut Criterion, ctx: &Arc<CudaContext>) {
    let stream = ctx.default_stream();
    let engines = Engines::new(ctx, &stream);
    for (name, m, k, n, r) in all_cases() {
        let mut pr = problem(&stream, m, k, n, r).expect("allocate the problem");
        let mut group = c.benchmark_group(shapes::forward_group(name, m, r));
        let flops = 2 * m * n * k + 2 * m * r * k + 2 * m * n * r;
        group.throughput(Throughput::Elements(flops as u64));
        for (label, run, needs_blas, _) in VARIANTS {
            if needs_blas && engines.blas.is_none() {
                continue;
            }
            group.bench_function(label, |bencher| {
                bencher.iter(|| {
                    run(&engines, &stream, &mut pr);
                    stream.synchronize().expect("synchronise");
                })
            });
        }
        group.finish();
    }
}

/// What a variant computes, as the reference gives it.
#[derive(Clone, Copy, PartialEq)]
enum Computes {
    /// `round(X·W0ᵀ + s·P·Bᵀ)`, one rounding.
    Fused,
    /// `round(X·W0ᵀ)`.
    Base,
    /// `round(round(X·W0ᵀ) + s·P·Bᵀ)`: the base GEMM's output is rounded
    /// before the expand adds to it.
    BaseThenExpand,
}

/// The reference Y for `computes`. With the bench's inputs every f32 sum
/// of the crate's kernels is exact (see `shapes::fill`), so their Y must
/// equal it bit for bit.
fn reference_y(stream: &Arc<CudaStream>, pr: &Problem, computes: Computes) -> Vec<bf16> {
    let host = |s: &CudaSlice<bf16>| stream.clone_dtoh(s).expect("download");
    let (x, w, a, b) = (host(&pr.x), host(&pr.w), host(&pr.a), host(&pr.b));
    let shape = LoraShape { m: pr.m, k: pr.k, n: pr.n, r: pr.r };
    let base = reference::Base { x: &x, w0: &w, bias: None };
    let run = |scale: f64| {
        let adapter = reference::Adapter { a: &a, b: &b, scale };
        reference::forward(shape, &base, &adapter, None, Precision::Exact).expect("reference forward").y
    };
    let (plain, full) = (run(0.0), run(f64::from(SCALE)));
    let round = |v: f64| bf16::from_f64(v).to_f64();
    plain
        .iter()
        .zip(&full)
        .map(|(&p, &f)| match computes {
            Computes::Fused => bf16::from_f64(f),
            Computes::Base => bf16::from_f64(p),
            Computes::BaseThenExpand => bf16::from_f64(round(p) + (f - p)),
        })
        .collect()
}

/// The dry run's check: the crate's kernels bit for bit; cuBLAS, which may
/// reduce in lower precision, within 2 % of the largest value (the backward
/// bench's baseline check).
fn check_y(what: &str, got: &[bf16], want: &[bf16], uses_cublas: bool) {
    if uses_cublas {
        let scale = want.iter().map(|v| v.to_f32().abs()).fold(f32::MIN_POSITIVE, f32::max);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let difference = (g.to_f32() - w.to_f32()).abs() / scale;
            assert!(difference <= 2e-2, "{what}: Y[{i}] = {g}, reference {w} (off by {difference} of the largest)");
        }
    } else if let Some(i) = got.iter().zip(want).position(|(g, w)| g.to_bits() != w.to_bits()) {
        panic!("{what}: Y[{i}] = {}, reference {}", got[i], want[i]);
    }
}

fn dry_forward(ctx: &Arc<CudaContext>) {
    let stream = ctx.default_stream();
    let engines = Engines::new(ctx, &stream);
    let mut done = std::collections::BTreeSet::new();
    for (name, m, k, n, r) in all_cases() {
        let (m, k, n) = shapes::dry_shape(m, k, n);
        if !done.insert((m, k, n, r)) {
            continue;
        }
        let mut pr = problem(&stream, m, k, n, r).expect("allocate the problem");
        for (label, run, needs_blas, computes) in VARIANTS {
            if needs_blas && engines.blas.is_none() {
                support::say_once(&format!("dry run: {label} skipped (no cuBLAS on this device)"));
                continue;
            }
            pr.y = stream.clone_htod(&vec![bf16::NAN; m * n]).expect("poison Y");
            run(&engines, &stream, &mut pr);
            stream.synchronize().expect("synchronise");
            let got = stream.clone_dtoh(&pr.y).expect("download Y");
            let what = format!("dry run, {name} as M={m} K={k} N={n} r={r}, {label}");
            check_y(&what, &got, &reference_y(&stream, &pr, computes), needs_blas);
        }
    }
}

fn main() {
    support::run_on_gpu("forward", bench_forward, dry_forward);
}

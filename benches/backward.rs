//! Backward-pass benches over docs/performance.md's shapes, on a GPU: bf16, ranks 16 and
//! 64, the Llama-3-8B projections 4096→4096, 4096→14336 and 14336→4096, M =
//! 16 (decode-sized) and 2048 (training) tokens, with P kept from the forward
//! (and, for comparison, recomputed). Against them, what a user gets without
//! this crate: the five cuBLAS GEMMs autograd runs for `Y = X·W0ᵀ + s·(X·Aᵀ)·Bᵀ`
//! (dX = dY·W0, G = dY·B, dB = s·dYᵀ·P, dA = s·Gᵀ·X, dX += s·G·A), and the
//! floor every variant pays, the base input-gradient dY·W0 alone. One shape
//! also runs with 32 adapters (rows in contiguous runs, one per adapter).
//!
//! Throughput is counted in FLOPs (`2MNK` for dY·W0 plus `4MNr + 4MrK` for
//! the adapter's four GEMMs); the stream is synchronised inside each timed
//! iteration, so the clock stops after the kernels do. Without libcublas the
//! cuBLAS cases are skipped with a message.
//!
//! Without a GPU (no driver, or the emulator, whose timings say nothing about
//! a GPU) every bench says it is skipped and why, and `cargo bench` succeeds.

mod support;

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput};
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use fused_lora::{Adapter, AdapterStack, AdapterStatus, BackwardInputs, BackwardOutput, GradMode, Linear, RowAdapters};
use half::bf16;

use support::Engines;

/// (name, K, N) from docs/performance.md's table.
const PROJECTIONS: &[(&str, usize, usize)] = &[
    ("llama3-8b q/o 4096->4096", 4096, 4096),
    ("llama3-8b gate/up 4096->14336", 4096, 14336),
    ("llama3-8b down 14336->4096", 14336, 4096),
];
const TOKENS: &[usize] = &[16, 2048];
const RANKS: &[usize] = &[16, 64];
/// The stacked case: this many adapters, on the first projection, M = 2048, r = 16.
const STACKED_ADAPTERS: usize = 32;
const STACKED_TOKENS: usize = 2048;
const STACKED_RANK: usize = 16;
const SCALE: f32 = 2.0;

/// One way of computing the backward pass.
type Variant = fn(&Engines, &Arc<CudaStream>, &mut Problem);

/// One backward problem: L adapters of rank r stacked (L = 1: the
/// one-adapter API), row m using adapter `m·L/M`.
struct Problem {
    dy: CudaSlice<bf16>,
    x: CudaSlice<bf16>,
    w: CudaSlice<bf16>,
    a: CudaSlice<bf16>,
    b: CudaSlice<bf16>,
    p: CudaSlice<bf16>,
    g: CudaSlice<bf16>,
    da: CudaSlice<bf16>,
    db: CudaSlice<bf16>,
    dx: CudaSlice<bf16>,
    index: CudaSlice<i32>,
    status: AdapterStatus,
    ranks: Vec<usize>,
    scales: Vec<f32>,
    m: usize,
    k: usize,
    n: usize,
    r: usize,
}

impl Problem {
    fn adapters(&self) -> usize {
        self.ranks.len()
    }

    /// The multiply-adds of the backward, counted as 2 FLOPs each.
    fn flops(&self) -> u64 {
        let (m, k, n, r) = (self.m as u64, self.k as u64, self.n as u64, self.r as u64);
        2 * m * n * k + 4 * m * n * r + 4 * m * r * k
    }
}

fn problem(
    stream: &Arc<CudaStream>,
    m: usize,
    k: usize,
    n: usize,
    r: usize,
    adapters: usize,
) -> Result<Problem, String> {
    let fill = |len: usize, step: f32| -> Vec<bf16> {
        (0..len).map(|i| bf16::from_f32(((i % 17) as f32 - 8.0) * step)).collect()
    };
    let index: Vec<i32> = (0..m).map(|row| (row * adapters / m) as i32).collect();
    let driver = |e: cudarc::driver::DriverError| e.to_string();
    Ok(Problem {
        dy: stream.clone_htod(&fill(m * n, 0.01)).map_err(driver)?,
        x: stream.clone_htod(&fill(m * k, 0.01)).map_err(driver)?,
        w: stream.clone_htod(&fill(n * k, 0.001)).map_err(driver)?,
        a: stream.clone_htod(&fill(adapters * r * k, 0.001)).map_err(driver)?,
        b: stream.clone_htod(&fill(adapters * n * r, 0.01)).map_err(driver)?,
        p: stream.clone_htod(&fill(m * r, 0.01)).map_err(driver)?,
        g: stream.alloc_zeros(m * r).map_err(driver)?,
        da: stream.alloc_zeros(adapters * r * k).map_err(driver)?,
        db: stream.alloc_zeros(adapters * n * r).map_err(driver)?,
        dx: stream.alloc_zeros(m * k).map_err(driver)?,
        index: stream.clone_htod(&index).map_err(driver)?,
        status: AdapterStatus::new(stream).map_err(|e| e.to_string())?,
        ranks: vec![r; adapters],
        scales: vec![SCALE; adapters],
        m,
        k,
        n,
        r,
    })
}

/// The crate's backward, P as given (`None`: recomputed).
fn crate_backward(engines: &Engines, stream: &Arc<CudaStream>, pr: &mut Problem, keep_p: bool) {
    let kernels = &engines.kernels;
    let linear = Linear { weight: pr.w.as_view(), bias: None, n: pr.n, k: pr.k };
    let inputs = BackwardInputs { dy: pr.dy.as_view(), x: pr.x.as_view(), p: keep_p.then(|| pr.p.as_view()), dropout: None };
    let mut out = BackwardOutput {
        da: pr.da.as_view_mut(),
        db: pr.db.as_view_mut(),
        dx: pr.dx.as_view_mut(),
        g: Some(pr.g.as_view_mut()),
        mode: GradMode::Overwrite,
    };
    if pr.ranks.len() == 1 {
        let adapter = Adapter { a: pr.a.as_view(), b: pr.b.as_view(), rank: pr.r, scale: SCALE };
        kernels
            .backward(stream, &inputs, &linear, &adapter, &mut out)
            .expect("backward");
    } else {
        let stack =
            AdapterStack { a: pr.a.as_view(), b: pr.b.as_view(), r_max: pr.r, ranks: &pr.ranks, scales: &pr.scales };
        let mut rows = RowAdapters { index: pr.index.as_view(), status: &mut pr.status };
        kernels
            .backward_multi(stream, &inputs, &linear, &stack, &mut rows, &mut out)
            .expect("backward_multi");
    }
}

fn fused_p_kept(engines: &Engines, stream: &Arc<CudaStream>, pr: &mut Problem) {
    crate_backward(engines, stream, pr, true);
}

fn fused_p_recomputed(engines: &Engines, stream: &Arc<CudaStream>, pr: &mut Problem) {
    crate_backward(engines, stream, pr, false);
}

/// How a row-major operand enters a product.
#[derive(Clone, Copy)]
enum Op {
    /// Stored as the `[rows, cols]` the product uses.
    AsIs,
    /// Stored transposed: `[cols, rows]`.
    Transposed,
}

/// Row-major `C [m, n] = alpha·op(A)·op(B) + beta·C` with `op(A)` `[m, k]`
/// and `op(B)` `[k, n]`, through column-major cuBLAS: a row-major matrix is
/// its transpose in column-major, so this computes `Cᵀ = op(B)ᵀ·op(A)ᵀ`,
/// B's data as cuBLAS's first operand.
#[allow(clippy::too_many_arguments)]
fn gemm_row_major(
    blas: &CudaBlas,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &CudaSlice<bf16>,
    op_a: Op,
    b: &CudaSlice<bf16>,
    op_b: Op,
    beta: f32,
    c: &mut CudaSlice<bf16>,
) {
    let (transa, lda) = match op_b {
        Op::AsIs => (cublasOperation_t::CUBLAS_OP_N, n),
        Op::Transposed => (cublasOperation_t::CUBLAS_OP_T, k),
    };
    let (transb, ldb) = match op_a {
        Op::AsIs => (cublasOperation_t::CUBLAS_OP_N, k),
        Op::Transposed => (cublasOperation_t::CUBLAS_OP_T, m),
    };
    let cfg = GemmConfig {
        transa,
        transb,
        m: n as i32,
        n: m as i32,
        k: k as i32,
        alpha: bf16::from_f32(alpha),
        lda: lda as i32,
        ldb: ldb as i32,
        beta: bf16::from_f32(beta),
        ldc: n as i32,
    };
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "operands smaller than the GEMM's shape");
    // SAFETY: A holds m·k, B k·n and C m·n elements (asserted above), the
    // extents the leading dimensions and sizes describe.
    unsafe { blas.gemm(cfg, b, a, c) }.expect("cuBLAS GEMM");
}

fn blas(engines: &Engines) -> &CudaBlas {
    engines.blas.as_ref().expect("cuBLAS cases run only when it loaded")
}

/// The floor: dX = dY·W0 alone.
fn cublas_base(engines: &Engines, _stream: &Arc<CudaStream>, pr: &mut Problem) {
    let (m, k, n) = (pr.m, pr.k, pr.n);
    gemm_row_major(blas(engines), (m, k, n), 1.0, &pr.dy, Op::AsIs, &pr.w, Op::AsIs, 0.0, &mut pr.dx);
}

/// The five GEMMs autograd runs for one adapter, P kept.
fn unfused(engines: &Engines, stream: &Arc<CudaStream>, pr: &mut Problem) {
    let blas = blas(engines);
    let (m, k, n, r) = (pr.m, pr.k, pr.n, pr.r);
    cublas_base(engines, stream, pr);
    gemm_row_major(blas, (m, r, n), 1.0, &pr.dy, Op::AsIs, &pr.b, Op::AsIs, 0.0, &mut pr.g);
    gemm_row_major(blas, (n, r, m), SCALE, &pr.dy, Op::Transposed, &pr.p, Op::AsIs, 0.0, &mut pr.db);
    gemm_row_major(blas, (r, k, m), SCALE, &pr.g, Op::Transposed, &pr.x, Op::AsIs, 0.0, &mut pr.da);
    gemm_row_major(blas, (m, k, r), SCALE, &pr.g, Op::AsIs, &pr.a, Op::AsIs, 1.0, &mut pr.dx);
}

/// One group per projection, over `(M, r, adapters)`; one problem is alive
/// at a time (the largest holds ≈ 250 MB).
fn run_group(
    c: &mut Criterion,
    engines: &Engines,
    stream: &Arc<CudaStream>,
    title: String,
    (k, n): (usize, usize),
    shapes: &[(usize, usize, usize)],
) {
    let mut group = c.benchmark_group(title);
    for &(m, r, adapters) in shapes {
        let mut pr = problem(stream, m, k, n, r, adapters).expect("allocate the problem");
        group.throughput(Throughput::Elements(pr.flops()));
        let one_adapter = pr.adapters() == 1;
        // (label, variant, needs cuBLAS, one adapter only)
        let cases: [(&str, Variant, bool, bool); 4] = [
            ("fused, P kept", fused_p_kept, false, false),
            ("fused, P recomputed", fused_p_recomputed, false, false),
            ("dX base alone: dY*W0 (cuBLAS)", cublas_base, true, false),
            ("unfused: 5 cuBLAS GEMMs", unfused, true, true),
        ];
        for (label, run, needs_blas, single_only) in cases {
            if (needs_blas && engines.blas.is_none()) || (single_only && !one_adapter) {
                continue;
            }
            group.bench_function(BenchmarkId::new(label, format!("M={m} r={r}")), |bencher| {
                bencher.iter(|| {
                    run(engines, stream, &mut pr);
                    stream.synchronize().expect("synchronise");
                })
            });
        }
    }
    group.finish();
}

/// The largest difference between two gradients, against the larger one's
/// largest magnitude.
fn relative_difference(stream: &Arc<CudaStream>, got: &CudaSlice<bf16>, want: &CudaSlice<bf16>) -> f32 {
    let (got, want) = (stream.clone_dtoh(got).expect("download"), stream.clone_dtoh(want).expect("download"));
    let scale = got.iter().chain(&want).map(|v| v.to_f32().abs()).fold(0.0, f32::max).max(f32::MIN_POSITIVE);
    got.iter().zip(&want).map(|(g, w)| (g.to_f32() - w.to_f32()).abs()).fold(0.0, f32::max) / scale
}

/// Before any timing: the cuBLAS baseline must compute the gradients the
/// crate does (loosely: both round G and the outputs to bf16), else its
/// transpositions are wrong and comparing times would mean nothing.
fn check_baseline(engines: &Engines, stream: &Arc<CudaStream>) {
    if engines.blas.is_none() {
        return;
    }
    let (_, k, n) = PROJECTIONS[0];
    let mut ours = problem(stream, TOKENS[0], k, n, RANKS[0], 1).expect("allocate the problem");
    let mut theirs = problem(stream, TOKENS[0], k, n, RANKS[0], 1).expect("allocate the problem");
    fused_p_kept(engines, stream, &mut ours);
    unfused(engines, stream, &mut theirs);
    for (what, got, want) in [("dA", &ours.da, &theirs.da), ("dB", &ours.db, &theirs.db), ("dX", &ours.dx, &theirs.dx)]
    {
        let difference = relative_difference(stream, got, want);
        assert!(
            difference <= 2e-2,
            "{what}: the crate and the cuBLAS baseline differ by {difference} of the largest value"
        );
    }
}

fn bench_backward(c: &mut Criterion, ctx: &Arc<CudaContext>) {
    let stream = ctx.default_stream();
    let engines = Engines::new(ctx, &stream);
    check_baseline(&engines, &stream);
    let single: Vec<(usize, usize, usize)> =
        RANKS.iter().flat_map(|&r| TOKENS.iter().map(move |&m| (m, r, 1))).collect();
    for &(name, k, n) in PROJECTIONS {
        run_group(c, &engines, &stream, format!("backward bf16 {name}"), (k, n), &single);
    }
    let (name, k, n) = PROJECTIONS[0];
    let stacked = [(STACKED_TOKENS, STACKED_RANK, STACKED_ADAPTERS)];
    run_group(c, &engines, &stream, format!("backward bf16 {name}, {STACKED_ADAPTERS} adapters"), (k, n), &stacked);
}

fn main() {
    support::run_on_gpu("backward", bench_backward);
}

//! Backward-pass benches over docs/performance.md's shapes, on a GPU: bf16, ranks 16 and
//! 64, the Llama-3-8B projections 4096→4096, 4096→14336 and 14336→4096, M =
//! 16 (decode-sized) and 2048 (training) tokens, with P kept from the forward
//! (and, for comparison, recomputed). Against them, what a user gets without
//! this crate: the five cuBLAS GEMMs autograd runs for `Y = X·W0ᵀ + s·(X·Aᵀ)·Bᵀ`
//! (dX = dY·W0, G = dY·B, dB = s·dYᵀ·P, dA = s·Gᵀ·X, dX += s·G·A), and the
//! floor every variant pays, the base input-gradient dY·W0 alone. One shape
//! also runs with 32 adapters (rows in contiguous runs, one per adapter),
//! and with 32 adapters scattered over the rows (`shapes::scattered_rows`) at
//! M = 256 and 4096: next to the one-adapter case of the same M, what a
//! scattered batch costs.
//! dX's three tiles: the projections at M = 4096 take its 128×128 kernel,
//! the decode-sized cases the 64×64; a square 1024→1024 projection at
//! M = 1024 and 2048 (r = 16) sits on each side of a change of tile
//! (`shapes::DX_TILE_PROJECTION`: 64×64, then 128×64 on an A100), as does
//! 2048 × 1024 × 1024 (`shapes::SQUARE_SHAPES`), so a GPU run can check
//! where the rule's thresholds lie.
//!
//! Throughput is counted in FLOPs (`2MNK` for dY·W0 plus `4MNr + 4MrK` for
//! the adapter's four GEMMs); the stream is synchronised inside each timed
//! iteration, so the clock stops after the kernels do. Without libcublas the
//! cuBLAS cases are skipped with a message.
//!
//! Without a GPU (no driver, or the emulator, whose timings say nothing about
//! a GPU) every bench says it is skipped and why, and `cargo bench` succeeds.
//! `cargo test --benches` runs the dry run (see `support`): every variant of
//! every case once, on a small stand-in shape, checked against the CPU
//! reference (the crate's kernels bit for bit).

mod support;

use std::sync::Arc;

use criterion::{Criterion, Throughput};
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use fused_lora::reference::{self, Precision};
use fused_lora::{
    Adapter, AdapterStack, AdapterStatus, BackwardInputs, BackwardOutput, GradMode, Linear, MultiAdapterShape,
    RowAdapters,
};
use half::bf16;

use support::shapes::{self, fill, PROJECTIONS, RANKS};
use support::Engines;

/// Tokens per batch: decode-sized, and two training batches.
const TOKENS: &[usize] = &[16, 2048, 4096];
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

/// Row m uses adapter `m·L/M` (contiguous runs), or, `scattered`, the
/// pattern of `shapes::scattered_rows`.
#[allow(clippy::too_many_arguments)]
fn problem(
    stream: &Arc<CudaStream>,
    m: usize,
    k: usize,
    n: usize,
    r: usize,
    adapters: usize,
    scattered: bool,
) -> Result<Problem, String> {
    let index: Vec<i32> = if scattered {
        shapes::scattered_rows(m, adapters)
    } else {
        (0..m).map(|row| (row * adapters / m) as i32).collect()
    };
    let driver = |e: cudarc::driver::DriverError| e.to_string();
    Ok(Problem {
        dy: stream.clone_htod(&fill(m * n, 0)).map_err(driver)?,
        x: stream.clone_htod(&fill(m * k, 1)).map_err(driver)?,
        w: stream.clone_htod(&fill(n * k, 2)).map_err(driver)?,
        a: stream.clone_htod(&fill(adapters * r * k, 3)).map_err(driver)?,
        b: stream.clone_htod(&fill(adapters * n * r, 4)).map_err(driver)?,
        p: stream.clone_htod(&fill(m * r, 5)).map_err(driver)?,
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
    let inputs =
        BackwardInputs { dy: pr.dy.as_view(), x: pr.x.as_view(), p: keep_p.then(|| pr.p.as_view()), dropout: None };
    let mut out = BackwardOutput {
        da: pr.da.as_view_mut(),
        db: pr.db.as_view_mut(),
        dx: pr.dx.as_view_mut(),
        g: Some(pr.g.as_view_mut()),
        mode: GradMode::Overwrite,
    };
    if pr.ranks.len() == 1 {
        let adapter = Adapter { a: pr.a.as_view(), b: pr.b.as_view(), rank: pr.r, scale: SCALE };
        kernels.backward(stream, &inputs, &linear, &adapter, &mut out).expect("backward");
    } else {
        let stack =
            AdapterStack { a: pr.a.as_view(), b: pr.b.as_view(), r_max: pr.r, ranks: &pr.ranks, scales: &pr.scales };
        let mut rows = RowAdapters { index: pr.index.as_view(), status: &mut pr.status };
        kernels.backward_multi(stream, &inputs, &linear, &stack, &mut rows, &mut out).expect("backward_multi");
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

/// (label, variant, needs cuBLAS, one adapter only)
const VARIANTS: [(&str, Variant, bool, bool); 4] = [
    (shapes::BWD_FUSED_P_KEPT, fused_p_kept, false, false),
    (shapes::BWD_FUSED_P_RECOMPUTED, fused_p_recomputed, false, false),
    (shapes::BWD_CUBLAS_BASE, cublas_base, true, false),
    (shapes::BWD_UNFUSED, unfused, true, true),
];

/// One group per case; one problem is alive at a time (the largest holds
/// ≈ 500 MB).
fn run_group(c: &mut Criterion, engines: &Engines, stream: &Arc<CudaStream>, group: String, mut pr: Problem) {
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(pr.flops()));
    let one_adapter = pr.adapters() == 1;
    for (label, run, needs_blas, single_only) in VARIANTS {
        if (needs_blas && engines.blas.is_none()) || (single_only && !one_adapter) {
            continue;
        }
        group.bench_function(label, |bencher| {
            bencher.iter(|| {
                run(engines, stream, &mut pr);
                stream.synchronize().expect("synchronise");
            })
        });
    }
    group.finish();
}

/// The largest difference between two gradients, against the larger one's
/// largest magnitude.
fn relative_difference(got: &[bf16], want: &[bf16]) -> f32 {
    let scale = got.iter().chain(want).map(|v| v.to_f32().abs()).fold(0.0, f32::max).max(f32::MIN_POSITIVE);
    got.iter().zip(want).map(|(g, w)| (g.to_f32() - w.to_f32()).abs()).fold(0.0, f32::max) / scale
}

/// Before any timing: the cuBLAS baseline must compute the gradients the
/// crate does (loosely: both round G and the outputs to bf16), else its
/// transpositions are wrong and comparing times would mean nothing.
fn check_baseline(engines: &Engines, stream: &Arc<CudaStream>) {
    if engines.blas.is_none() {
        return;
    }
    let (_, k, n) = PROJECTIONS[0];
    let mut ours = problem(stream, TOKENS[0], k, n, RANKS[0], 1, false).expect("allocate the problem");
    let mut theirs = problem(stream, TOKENS[0], k, n, RANKS[0], 1, false).expect("allocate the problem");
    fused_p_kept(engines, stream, &mut ours);
    unfused(engines, stream, &mut theirs);
    for (what, got, want) in [("dA", &ours.da, &theirs.da), ("dB", &ours.db, &theirs.db), ("dX", &ours.dx, &theirs.dx)]
    {
        let (got, want) = (stream.clone_dtoh(got).expect("download"), stream.clone_dtoh(want).expect("download"));
        let difference = relative_difference(&got, &want);
        assert!(
            difference <= 2e-2,
            "{what}: the crate and the cuBLAS baseline differ by {difference} of the largest value"
        );
    }
}

/// Every single-adapter case: (name, M, K, N, r) — the projections at each
/// token count, and the whole problems of `shapes::SQUARE_SHAPES` at their own M.
fn all_cases() -> Vec<(&'static str, usize, usize, usize, usize)> {
    let mut cases = Vec::new();
    for &(name, k, n) in PROJECTIONS {
        for &r in RANKS {
            for &m in TOKENS {
                cases.push((name, m, k, n, r));
            }
        }
    }
    for &(name, m, k, n) in shapes::SQUARE_SHAPES {
        for &r in RANKS {
            cases.push((name, m, k, n, r));
        }
    }
    cases
}

fn bench_backward(c: &mut Criterion, ctx: &Arc<CudaContext>) {
    let stream = ctx.default_stream();
    let engines = Engines::new(ctx, &stream);
    check_baseline(&engines, &stream);
    for (name, m, k, n, r) in all_cases() {
        let pr = problem(&stream, m, k, n, r, 1, false).expect("allocate the problem");
        run_group(c, &engines, &stream, shapes::backward_group(name, m, r), pr);
    }
    let (name, k, n) = shapes::DX_TILE_PROJECTION;
    for &m in shapes::DX_TILE_TOKENS {
        let pr = problem(&stream, m, k, n, RANKS[0], 1, false).expect("allocate the problem");
        run_group(c, &engines, &stream, shapes::backward_group(name, m, RANKS[0]), pr);
    }
    let (name, k, n) = PROJECTIONS[0];
    let pr =
        problem(&stream, STACKED_TOKENS, k, n, STACKED_RANK, STACKED_ADAPTERS, false).expect("allocate the problem");
    let group = format!("{}, {STACKED_ADAPTERS} adapters", shapes::backward_group(name, STACKED_TOKENS, STACKED_RANK));
    run_group(c, &engines, &stream, group, pr);
    for &m in shapes::SCATTERED_TOKENS {
        let (l, r) = (shapes::SCATTERED_ADAPTERS, shapes::SCATTERED_RANK);
        if !TOKENS.contains(&m) {
            // The one-adapter case of the same M, unless the loop above ran it.
            let pr = problem(&stream, m, k, n, r, 1, false).expect("allocate the problem");
            run_group(c, &engines, &stream, shapes::backward_group(name, m, r), pr);
        }
        let pr = problem(&stream, m, k, n, r, l, true).expect("allocate the problem");
        run_group(c, &engines, &stream, format!("{}, {l} adapters scattered", shapes::backward_group(name, m, r)), pr);
    }
}

/// The reference gradients of `pr` (dA, dB, dX, each rounded to bf16
/// once), with P as given or, when `recompute`, as the forward computes it.
fn reference_gradients(stream: &Arc<CudaStream>, pr: &Problem, recompute: bool) -> [Vec<bf16>; 3] {
    let host = |s: &CudaSlice<bf16>| stream.clone_dtoh(s).expect("download");
    let (dy, x, w, a, b) = (host(&pr.dy), host(&pr.x), host(&pr.w), host(&pr.a), host(&pr.b));
    let (m, k, n, r, l) = (pr.m, pr.k, pr.n, pr.r, pr.adapters());
    // The rows' adapters as the problem holds them (contiguous runs or scattered).
    let indices: Vec<i64> = stream.clone_dtoh(&pr.index).expect("download").into_iter().map(i64::from).collect();
    let p: Vec<bf16> = if recompute {
        // P = round(X·A_lᵀ) per row, A_l the row's adapter: exact sums, one rounding.
        (0..m * r)
            .map(|i| {
                let (row, j) = (i / r, i % r);
                let a_row = &a[(indices[row] as usize * r + j) * k..][..k];
                bf16::from_f64(x[row * k..][..k].iter().zip(a_row).map(|(xv, av)| xv.to_f64() * av.to_f64()).sum())
            })
            .collect()
    } else {
        host(&pr.p)
    };
    let base = reference::Base { x: &x, w0: &w, bias: None };
    let scales: Vec<f64> = pr.scales.iter().map(|&s| f64::from(s)).collect();
    let adapters =
        reference::MultiAdapters { a_all: &a, b_all: &b, ranks: &pr.ranks, scales: &scales, indices: &indices };
    let shape = MultiAdapterShape { m, k, n, num_adapters: l, r_max: r };
    let grads = reference::backward_multi(shape, &base, &adapters, None, &dy, &p, Precision::Exact)
        .expect("reference backward");
    let round = |v: &[f64]| v.iter().map(|&v| bf16::from_f64(v)).collect::<Vec<_>>();
    [round(&grads.da), round(&grads.db), round(&grads.dx)]
}

fn dry_backward(ctx: &Arc<CudaContext>) {
    let stream = ctx.default_stream();
    let engines = Engines::new(ctx, &stream);
    let mut cases = std::collections::BTreeSet::new();
    for (_, m, k, n, r) in all_cases() {
        let (m, k, n) = shapes::dry_shape(m, k, n);
        cases.insert((m, k, n, r, 1, false));
    }
    let (_, k, n) = shapes::DX_TILE_PROJECTION;
    for &m in shapes::DX_TILE_TOKENS {
        let (m, k, n) = shapes::dry_shape(m, k, n);
        cases.insert((m, k, n, RANKS[0], 1, false));
    }
    let (_, k, n) = PROJECTIONS[0];
    let (m, k, n) = shapes::dry_shape(STACKED_TOKENS, k, n);
    cases.insert((m, k, n, STACKED_RANK, STACKED_ADAPTERS.min(m), false));
    for &tokens in shapes::SCATTERED_TOKENS {
        let (m, k, n) = shapes::dry_shape(tokens, k, n);
        cases.insert((m, k, n, shapes::SCATTERED_RANK, shapes::SCATTERED_ADAPTERS, true));
    }
    for (m, k, n, r, adapters, scattered) in cases {
        let mut pr = problem(&stream, m, k, n, r, adapters, scattered).expect("allocate the problem");
        for (label, run, needs_blas, single_only) in VARIANTS {
            if single_only && adapters != 1 {
                continue;
            }
            if needs_blas && engines.blas.is_none() {
                support::say_once(&format!("dry run: {label} skipped (no cuBLAS on this device)"));
                continue;
            }
            for out in [&mut pr.da, &mut pr.db, &mut pr.dx] {
                let len = out.len();
                *out = stream.clone_htod(&vec![bf16::NAN; len]).expect("poison the outputs");
            }
            run(&engines, &stream, &mut pr);
            stream.synchronize().expect("synchronise");
            let want = reference_gradients(&stream, &pr, label == shapes::BWD_FUSED_P_RECOMPUTED);
            let outputs = [("dA", &pr.da), ("dB", &pr.db), ("dX", &pr.dx)];
            for ((what, got), want) in outputs.into_iter().zip(&want) {
                if label == shapes::BWD_CUBLAS_BASE && what != "dX" {
                    continue; // dY·W0 alone writes only dX
                }
                let got = stream.clone_dtoh(got).expect("download");
                let rows = if scattered { " scattered" } else { "" };
                let case = format!("dry run, M={m} K={k} N={n} r={r} adapters={adapters}{rows}, {label}, {what}");
                if needs_blas {
                    // cuBLAS may reduce in lower precision; dY·W0 alone lacks the adapter term of dX.
                    let want = if label == shapes::BWD_CUBLAS_BASE { base_dx(&stream, &pr) } else { want.clone() };
                    let difference = relative_difference(&got, &want);
                    assert!(difference <= 2e-2, "{case}: off by {difference} of the largest value");
                } else if let Some(i) = got.iter().zip(want).position(|(g, w)| g.to_bits() != w.to_bits()) {
                    panic!("{case}: element {i} = {}, reference {}", got[i], want[i]);
                }
            }
        }
    }
}

/// `round(dY·W0)`, what the cuBLAS base variant writes into dX.
fn base_dx(stream: &Arc<CudaStream>, pr: &Problem) -> Vec<bf16> {
    let (dy, w) = (stream.clone_dtoh(&pr.dy).expect("download"), stream.clone_dtoh(&pr.w).expect("download"));
    let (m, k, n) = (pr.m, pr.k, pr.n);
    (0..m * k)
        .map(|i| {
            let (row, col) = (i / k, i % k);
            bf16::from_f64((0..n).map(|j| dy[row * n + j].to_f64() * w[j * k + col].to_f64()).sum())
        })
        .collect()
}

fn main() {
    support::run_on_gpu("backward", bench_backward, dry_backward);
}

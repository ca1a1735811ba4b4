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

mod support;

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput};
use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use fused_lora::{Adapter, AdapterStack, AdapterStatus, ForwardOutput, Linear, RowAdapters};
use half::bf16;

use support::Engines;

/// (name, K, N) from docs/performance.md's table.
const PROJECTIONS: &[(&str, usize, usize)] = &[
    ("llama3-8b q/o 4096->4096", 4096, 4096),
    ("llama3-8b k/v 4096->1024", 4096, 1024),
    ("llama3-8b gate/up 4096->14336", 4096, 14336),
    ("llama3-8b down 14336->4096", 14336, 4096),
    ("qwen2.5-7b 3584->18944", 3584, 18944),
];
const TOKENS: &[usize] = &[1, 16, 128, 2048];
const RANK: usize = 16;

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
}

fn problem(stream: &Arc<CudaStream>, m: usize, k: usize, n: usize) -> Result<Problem, cudarc::driver::DriverError> {
    let fill = |len: usize, step: f32| -> Vec<bf16> { (0..len).map(|i| bf16::from_f32(((i % 17) as f32 - 8.0) * step)).collect() };
    Ok(Problem {
        x: stream.clone_htod(&fill(m * k, 0.01))?,
        w: stream.clone_htod(&fill(n * k, 0.001))?,
        a: stream.clone_htod(&fill(RANK * k, 0.001))?,
        b: stream.clone_htod(&fill(n * RANK, 0.01))?,
        y: stream.alloc_zeros(m * n)?,
        p: stream.alloc_zeros(m * RANK)?,
        none: stream.clone_htod(&vec![-1i32; m])?,
        status: AdapterStatus::new(stream).map_err(|e| match e {
            fused_lora::LoraError::Driver(d) => d,
            other => panic!("{other}"),
        })?,
        m,
        k,
        n,
    })
}

fn fused(engines: &Engines, stream: &Arc<CudaStream>, pr: &mut Problem) {
    let kernels = &engines.kernels;
    let linear = Linear { weight: pr.w.as_view(), bias: None, n: pr.n, k: pr.k };
    let adapter = Adapter { a: pr.a.as_view(), b: pr.b.as_view(), rank: RANK, scale: 2.0 };
    let mut out = ForwardOutput { y: pr.y.as_view_mut(), p: Some(pr.p.as_view_mut()) };
    kernels.forward(stream, &pr.x.as_view(), &linear, &adapter, None, &mut out).expect("fused forward");
}

fn base_only(engines: &Engines, stream: &Arc<CudaStream>, pr: &mut Problem) {
    let kernels = &engines.kernels;
    let linear = Linear { weight: pr.w.as_view(), bias: None, n: pr.n, k: pr.k };
    let stack = AdapterStack { a: pr.a.as_view(), b: pr.b.as_view(), r_max: RANK, ranks: &[RANK], scales: &[2.0] };
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
    kernels.shrink(stream, &pr.x.as_view(), &pr.a.as_view(), RANK, &mut pr.p.as_view_mut()).expect("shrink");
    kernels.expand(stream, &pr.p.as_view(), &pr.b.as_view(), RANK, 2.0, &mut pr.y.as_view_mut()).expect("expand");
}

fn bench_forward(c: &mut Criterion, ctx: &Arc<CudaContext>) {
    let stream = ctx.default_stream();
    let engines = Engines::new(ctx, &stream);
    for &(name, k, n) in PROJECTIONS {
        let mut group = c.benchmark_group(format!("forward bf16 r={RANK} {name}"));
        for &m in TOKENS {
            let mut pr = problem(&stream, m, k, n).expect("allocate the problem");
            let flops = 2 * m * n * k + 2 * m * RANK * k + 2 * m * n * RANK;
            group.throughput(Throughput::Elements(flops as u64));
            let cases: [(&str, Variant, bool); 4] = [
                ("fused", fused, false),
                ("base GEMM alone (cuBLAS)", cublas_base, true),
                ("base GEMM alone (this crate)", base_only, false),
                ("unfused: cuBLAS + shrink + expand", unfused, true),
            ];
            for (label, run, needs_blas) in cases {
                if needs_blas && engines.blas.is_none() {
                    continue;
                }
                group.bench_with_input(BenchmarkId::new(label, format!("M={m}")), &m, |bencher, _| {
                    bencher.iter(|| {
                        run(&engines, &stream, &mut pr);
                        stream.synchronize().expect("synchronise");
                    })
                });
            }
        }
        group.finish();
    }
}

fn main() {
    support::run_on_gpu("forward", bench_forward);
}

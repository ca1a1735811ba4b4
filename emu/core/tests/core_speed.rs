//! Throughput of the executor on a realistic kernel: a shared-memory tiled
//! GEMM from nvcc, 256×256×256, every check on.

#[path = "core_support/mod.rs"]
mod support;

use ptx_emu::CheckOptions;
use support::*;

const GEMM: &str = r#"
#define T 16
extern "C" __global__ void gemm_tiled(const float* A, const float* B, float* C, int M, int N, int K) {
    __shared__ float As[T][T], Bs[T][T];
    int r = blockIdx.y * T + threadIdx.y, c = blockIdx.x * T + threadIdx.x;
    float acc = 0;
    for (int k0 = 0; k0 < K; k0 += T) {
        As[threadIdx.y][threadIdx.x] = (r < M && k0 + threadIdx.x < K) ? A[r * K + k0 + threadIdx.x] : 0.f;
        Bs[threadIdx.y][threadIdx.x] = (c < N && k0 + threadIdx.y < K) ? B[(k0 + threadIdx.y) * N + c] : 0.f;
        __syncthreads();
        for (int k = 0; k < T; k++) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
        __syncthreads();
    }
    if (r < M && c < N) C[r * N + c] = acc;
}
"#;

/// CPU time this thread has run, in seconds (the machine may be shared, so
/// wall time understates the per-core rate).
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .map_or(0.0, |ns| ns / 1e9)
}

fn run_gemm(size: usize, threads: usize) -> (f64, u64) {
    run_gemm_with(size, CheckOptions { threads, ..CheckOptions::default() })
}

fn run_gemm_with(size: usize, opts: CheckOptions) -> (f64, u64) {
    let d = Dev::new(&compile(GEMM));
    let a = random_f32(size * size, 11);
    let b = random_f32(size * size, 12);
    let (da, db, dc) = (d.upload_f32(&a), d.upload_f32(&b), d.zeros(size * size * 4));
    let n = size as i32;
    let args = [Arg::Ptr(da), Arg::Ptr(db), Arg::Ptr(dc), Arg::I32(n), Arg::I32(n), Arg::I32(n)];
    let g = (size / 16) as u32;
    let start = std::time::Instant::now();
    let rep = d.run("gemm_tiled", [g, g, 1], [16, 16, 1], 0, &args, opts);
    let secs = start.elapsed().as_secs_f64();
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    // Spot-check a few outputs against the CPU.
    let c = d.download_f32(dc, size * size);
    for &(i, j) in &[(0, 0), (size - 1, size - 1), (size / 3, size / 2)] {
        let want: f64 = (0..size).map(|k| a[i * size + k] as f64 * b[k * size + j] as f64).sum();
        assert!((c[i * size + j] as f64 - want).abs() < 1e-3, "C[{i}][{j}] = {}, want {want}", c[i * size + j]);
    }
    (secs, rep.counters.thread_instructions)
}

#[test]
fn gemm_64_runs_with_checks_on() {
    let (_, insts) = run_gemm(64, 0);
    assert!(insts > 64 * 64 * 64, "{insts} thread instructions");
}

#[test]
#[ignore = "throughput measurement: cargo test --release -p ptx-emu --test core_speed -- --ignored --nocapture"]
fn gemm_256_throughput() {
    let cpu0 = thread_cpu_seconds();
    let (secs, insts) = run_gemm(256, 1);
    let cpu = thread_cpu_seconds() - cpu0;
    println!(
        "gemm 256^3, 1 host thread: {insts} thread-instructions in {secs:.2} s wall ({:.1} M/s), {cpu:.2} s CPU ({:.1} M/s per core)",
        insts as f64 / secs / 1e6,
        insts as f64 / cpu / 1e6
    );
    // racecheck's share: the same run without it.
    let cpu0 = thread_cpu_seconds();
    let (_, insts) = run_gemm_with(256, CheckOptions { threads: 1, racecheck: false, ..CheckOptions::default() });
    let cpu_no_race = thread_cpu_seconds() - cpu0;
    println!(
        "gemm 256^3, 1 host thread, racecheck off: {cpu_no_race:.2} s CPU ({:.1} M/s per core); racecheck adds {:.0}%",
        insts as f64 / cpu_no_race / 1e6,
        (cpu / cpu_no_race - 1.0) * 100.0
    );
    let (secs, insts) = run_gemm(256, 0);
    println!(
        "gemm 256^3, all cores: {insts} thread-instructions in {secs:.2} s = {:.1} M/s",
        insts as f64 / secs / 1e6
    );
}

#[test]
#[ignore = "throughput measurement without checks"]
fn gemm_256_throughput_unchecked() {
    let d = Dev::new(&compile(GEMM));
    let size = 256;
    let (da, db, dc) = (
        d.upload_f32(&random_f32(size * size, 1)),
        d.upload_f32(&random_f32(size * size, 2)),
        d.zeros(size * size * 4),
    );
    let n = size as i32;
    let args = [Arg::Ptr(da), Arg::Ptr(db), Arg::Ptr(dc), Arg::I32(n), Arg::I32(n), Arg::I32(n)];
    let opts = CheckOptions {
        memcheck: false,
        racecheck: false,
        initcheck: false,
        synccheck: false,
        ldmatrix_initcheck: false,
        shared_initcheck: false,
        threads: 1,
        sample_ctas: None,
    };
    let cpu0 = thread_cpu_seconds();
    let rep = d.run("gemm_tiled", [16, 16, 1], [16, 16, 1], 0, &args, opts);
    let cpu = thread_cpu_seconds() - cpu0;
    println!("unchecked: {:.1} M/s per core (CPU time)", rep.counters.thread_instructions as f64 / cpu / 1e6);
}

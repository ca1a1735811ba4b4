//! End-to-end: kernels compiled by nvcc run on the emulator and match CPU results.

#[path = "core_support/mod.rs"]
mod support;

use ptx_emu::{CheckOptions, FindingKind, GlobalMemory, Module};
use support::*;

const KERNELS: &str = r#"
extern "C" __global__ void vadd(const float* a, const float* b, float* c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

extern "C" __global__ void reduce_sum(const float* a, float* out, int n) {
    float s = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) s += a[i];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffff, s, o);
    __shared__ float partial[32];
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        s = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffff, s, o);
        if (threadIdx.x == 0) atomicAdd(out, s);
    }
}

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

extern "C" __global__ void int_mix(const int* a, int* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int x = a[i];
    unsigned u = (unsigned)x;
    int r = (x / 7) ^ (x % 5) ^ (int)(u >> 3) ^ (x << 2) ^ __popc(u) ^ __clz(u) ^ (int)__brev(u)
          ^ __mulhi(x, 12345) ^ (int)__byte_perm(u, 0x12345678u, 0x5140);
    long long w = (long long)x * 1000003;
    out[i] = r + (int)(w >> 20) + max(x, -3) + min(x, 3) + abs(x);
}

extern "C" __global__ void smem_stride(float* out, int stride) {
    __shared__ float s[32 * 33];
    int t = threadIdx.x;
    s[t * stride] = (float)t;
    __syncwarp();
    out[t] = s[t * stride];
}

extern "C" __global__ void ballot_scan(const int* flags, unsigned* ballots, int* ranks) {
    int t = threadIdx.x;
    bool f = flags[t] != 0;
    unsigned b = __ballot_sync(0xffffffffu, f);
    if ((t & 31) == 0) ballots[t >> 5] = b;
    ranks[t] = __popc(b & ((1u << (t & 31)) - 1));
    int any = __any_sync(0xffffffffu, f), all = __all_sync(0xffffffffu, f);
    if (t == 0) { ranks[blockDim.x] = any; ranks[blockDim.x + 1] = all; }
}
"#;

fn dev() -> Dev {
    Dev::new(&compile(KERNELS))
}

#[test]
fn vector_add_matches_cpu_and_counts_coalesced_requests() {
    let d = dev();
    let n = 1000;
    let a = random_f32(n, 1);
    let b = random_f32(n, 2);
    let (da, db, dc) = (d.upload_f32(&a), d.upload_f32(&b), d.zeros(n * 4));
    let rep = d.run(
        "vadd",
        [8, 1, 1],
        [128, 1, 1],
        0,
        &[Arg::Ptr(da), Arg::Ptr(db), Arg::Ptr(dc), Arg::I32(n as i32)],
        CheckOptions::default(),
    );
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(d.download_f32(dc, n), want);
    let c = &rep.counters;
    // 1000 active threads in 32 warps (the last partial): 2 loads + 1 store per warp.
    assert_eq!(c.global_load_requests, 2 * 32);
    assert_eq!(c.global_store_requests, 32);
    // Each full warp touches 128 contiguous bytes = 4 sectors; the last warp 8 lanes = 1 sector.
    assert_eq!(c.global_load_sectors, 2 * (31 * 4 + 1));
    assert_eq!(c.global_bytes_read, 2 * 4000);
    assert_eq!(c.global_bytes_written, 4000);
    assert_eq!(c.kernel, "vadd");
    assert!(c.thread_instructions > 1000 * 10 && c.warp_instructions > 0);
}

#[test]
fn shuffle_reduction_with_shared_memory_and_atomics() {
    let d = dev();
    let n = 10_000;
    let a = random_f32(n, 3);
    let (da, dout) = (d.upload_f32(&a), d.zeros(4));
    let opts = CheckOptions { threads: 3, ..CheckOptions::default() };
    let rep = d.run("reduce_sum", [5, 1, 1], [256, 1, 1], 0, &[Arg::Ptr(da), Arg::Ptr(dout), Arg::I32(n as i32)], opts);
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let want: f64 = a.iter().map(|&x| x as f64).sum();
    let got = d.download_f32(dout, 1)[0] as f64;
    assert!((got - want).abs() < 1e-3, "got {got}, want {want}");
    assert_eq!(rep.counters.barriers, 5 * 8, "one bar.sync per warp per CTA");
    assert!(rep.counters.warp_instructions_by_class["collective"] >= 5 * 8 * 5);
}

fn cpu_gemm(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for p in 0..k {
                acc += a[i * k + p] as f64 * b[p * n + j] as f64;
            }
            c[i * n + j] = acc as f32;
        }
    }
    c
}

#[test]
fn tiled_gemm_with_ragged_edges() {
    let d = dev();
    let (m, n, k) = (37, 29, 45);
    let a = random_f32(m * k, 4);
    let b = random_f32(k * n, 5);
    let (da, db, dc) = (d.upload_f32(&a), d.upload_f32(&b), d.zeros(m * n * 4));
    let grid = [n.div_ceil(16) as u32, m.div_ceil(16) as u32, 1];
    let args = [Arg::Ptr(da), Arg::Ptr(db), Arg::Ptr(dc), Arg::I32(m as i32), Arg::I32(n as i32), Arg::I32(k as i32)];
    let rep = d.run("gemm_tiled", grid, [16, 16, 1], 0, &args, CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    assert_close(&d.download_f32(dc, m * n), &cpu_gemm(&a, &b, m, n, k), 1e-5);
    // Row reads of As are broadcasts and Bs rows are contiguous: no bank conflicts.
    assert_eq!(rep.counters.shared_bank_conflicts, 0);
    assert!(rep.counters.shared_requests > 0);
}

#[test]
fn integer_ops_match_cpu() {
    let d = dev();
    let n = 300;
    let vals: Vec<i32> = (0..n as i32).map(|i| i.wrapping_mul(-1_234_567).wrapping_add(i * i * 31 - 77)).collect();
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let da = d.mem.alloc(bytes.len() as u64).unwrap();
    d.mem.write(da, &bytes).unwrap();
    let dout = d.zeros(n * 4);
    let rep = d.run(
        "int_mix",
        [3, 1, 1],
        [128, 1, 1],
        0,
        &[Arg::Ptr(da), Arg::Ptr(dout), Arg::I32(n as i32)],
        CheckOptions::default(),
    );
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let mut out = vec![0u8; n * 4];
    d.mem.read(dout, &mut out).unwrap();
    for (i, &x) in vals.iter().enumerate() {
        let u = x as u32;
        let perm = {
            let bytes = ((0x1234_5678u64) << 32 | u as u64).to_le_bytes();
            let sel = [0x0, 0x4, 0x1, 0x5];
            u32::from_le_bytes([bytes[sel[0]], bytes[sel[1]], bytes[sel[2]], bytes[sel[3]]])
        };
        let r = (x / 7)
            ^ (x % 5)
            ^ ((u >> 3) as i32)
            ^ (x.wrapping_shl(2))
            ^ (u.count_ones() as i32)
            ^ (u.leading_zeros() as i32)
            ^ (u.reverse_bits() as i32)
            ^ (((x as i64 * 12345) >> 32) as i32)
            ^ perm as i32;
        let w = x as i64 * 1_000_003;
        let want = r
            .wrapping_add((w >> 20) as i32)
            .wrapping_add(x.max(-3))
            .wrapping_add(x.min(3))
            .wrapping_add(x.wrapping_abs());
        let got = i32::from_le_bytes(out[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(got, want, "element {i} (x = {x})");
    }
}

#[test]
fn votes_and_ballots() {
    let d = dev();
    let threads = 64usize;
    let flags: Vec<i32> = (0..threads as i32).map(|t| ((t * 7) % 3 == 0) as i32).collect();
    let bytes: Vec<u8> = flags.iter().flat_map(|v| v.to_le_bytes()).collect();
    let df = d.mem.alloc(bytes.len() as u64).unwrap();
    d.mem.write(df, &bytes).unwrap();
    let db = d.zeros(8);
    let dr = d.zeros((threads + 2) * 4);
    let rep = d.run(
        "ballot_scan",
        [1, 1, 1],
        [threads as u32, 1, 1],
        0,
        &[Arg::Ptr(df), Arg::Ptr(db), Arg::Ptr(dr)],
        CheckOptions::default(),
    );
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let mut b = [0u8; 8];
    d.mem.read(db, &mut b).unwrap();
    let mut r = vec![0u8; (threads + 2) * 4];
    d.mem.read(dr, &mut r).unwrap();
    let r: Vec<i32> = r.chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    for w in 0..2 {
        let want: u32 = (0..32).filter(|l| flags[w * 32 + l] != 0).fold(0, |m, l| m | 1 << l);
        assert_eq!(u32::from_le_bytes(b[w * 4..w * 4 + 4].try_into().unwrap()), want);
        for l in 0..32 {
            assert_eq!(r[w * 32 + l], (want & ((1u32 << l) - 1)).count_ones() as i32);
        }
    }
    assert_eq!((r[threads], r[threads + 1]), (1, 0));
}

#[test]
fn unsupported_instruction_fails_to_load_naming_it_and_its_line() {
    let ptx = ".version 9.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 p)\n{\n.reg .f32 %f<5>;\n.reg .b64 %rd<3>;\ntex.2d.v4.f32.f32 {%f1, %f2, %f3, %f4}, [%rd1, {%f1, %f2}];\nret;\n}\n";
    let mem = GlobalMemory::new(1 << 20);
    let e = Module::load(ptx, &mem).err().expect("must fail");
    assert_eq!(e.line, 8);
    assert!(e.message.contains("tex.2d.v4.f32.f32"), "{e}");
    let bad_mod = ptx.replace("tex.2d.v4.f32.f32 {%f1, %f2, %f3, %f4}, [%rd1, {%f1, %f2}];", "sqrt.rz.f64 %f1, %f2;");
    let e = Module::load(&bad_mod, &mem).err().expect("must fail");
    assert!(e.message.contains("sqrt.rz.f64") && e.line == 8, "{e}");
}

#[test]
fn module_globals_are_initialised_and_readable() {
    let src = r#"
__constant__ float coeffs[4] = {1.5f, -2.0f, 0.25f, 8.0f};
__device__ int counter = 5;
extern "C" __global__ void use_globals(float* out) {
    int t = threadIdx.x;
    out[t] = coeffs[t] * (float)counter;
    if (t == 0) atomicAdd(&counter, 1);
}
"#;
    let d = Dev::new(&compile(src));
    let (addr, size) = d.module.global("counter").expect("counter");
    assert_eq!(size, 4);
    let dout = d.zeros(16);
    let rep = d.run("use_globals", [1, 1, 1], [4, 1, 1], 0, &[Arg::Ptr(dout)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    assert_eq!(d.download_f32(dout, 4), vec![7.5, -10.0, 1.25, 40.0]);
    let mut c = [0u8; 4];
    d.mem.read(addr, &mut c).unwrap();
    assert_eq!(i32::from_le_bytes(c), 6);
}

#[test]
fn counters_file_gets_one_json_line_per_launch() {
    let d = dev();
    let path = std::env::temp_dir().join(format!("ptx-emu-counters-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // Set for this process only; no other test in this binary reads it.
    std::env::set_var("PTX_EMU_COUNTERS_FILE", &path);
    let a = d.upload_f32(&[1.0; 32]);
    let c = d.zeros(128);
    for _ in 0..2 {
        d.run(
            "vadd",
            [1, 1, 1],
            [32, 1, 1],
            0,
            &[Arg::Ptr(a), Arg::Ptr(a), Arg::Ptr(c), Arg::I32(32)],
            CheckOptions::default(),
        );
    }
    std::env::remove_var("PTX_EMU_COUNTERS_FILE");
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("\"kernel\":\"vadd\"")).collect();
    assert!(lines.len() >= 2, "{text}");
    assert!(lines[0].contains("\"global_store_requests\":1"), "{}", lines[0]);
}

#[test]
fn launch_is_deterministic_across_host_thread_counts() {
    let d = dev();
    let n = 5000;
    let a = d.upload_f32(&random_f32(n, 9));
    let out1 = d.zeros(4);
    let out2 = d.zeros(4);
    let r1 = d.run(
        "reduce_sum",
        [7, 1, 1],
        [128, 1, 1],
        0,
        &[Arg::Ptr(a), Arg::Ptr(out1), Arg::I32(n as i32)],
        CheckOptions { threads: 1, ..Default::default() },
    );
    let r4 = d.run(
        "reduce_sum",
        [7, 1, 1],
        [128, 1, 1],
        0,
        &[Arg::Ptr(a), Arg::Ptr(out2), Arg::I32(n as i32)],
        CheckOptions { threads: 4, ..Default::default() },
    );
    assert_eq!(r1.counters, r4.counters);
    assert!(r1.findings.is_empty() && r4.findings.is_empty());
    let _ = FindingKind::Race;
}

#[test]
fn shared_bank_conflicts_are_counted_per_request() {
    let d = dev();
    let out = d.zeros(32 * 4);
    let mut conflicts = Vec::new();
    for stride in [1, 2, 32, 33] {
        let rep =
            d.run("smem_stride", [1, 1, 1], [32, 1, 1], 0, &[Arg::Ptr(out), Arg::I32(stride)], CheckOptions::default());
        assert!(rep.findings.is_empty(), "{:?}", rep.findings);
        assert_eq!(rep.counters.shared_requests, 2, "one store and one load");
        assert_eq!(rep.counters.shared_wavefronts, 2 + rep.counters.shared_bank_conflicts);
        conflicts.push(rep.counters.shared_bank_conflicts);
    }
    // Per request: stride 1 and 33 hit 32 distinct banks; stride 2 puts two
    // words in each of 16 banks; stride 32 puts all 32 in one bank.
    assert_eq!(conflicts, vec![0, 2, 2 * 31, 0]);
}

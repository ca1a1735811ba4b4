//! The executor's plumbing for f16/bf16 arithmetic and tensor-core
//! instructions: operand gathering and scattering for `mma.sync`, the shared
//! row reads of `ldmatrix`, `cp.async` staging — on nvcc output. The
//! semantics themselves come from `numerics`/`tensor`.

#[path = "core_support/mod.rs"]
mod support;

use ptx_emu::CheckOptions;
use support::*;

const SRC: &str = r#"
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

extern "C" __global__ void half_axpy(const __half* x, __half* y, float a) {
    int i = threadIdx.x;
    __half2 v = __halves2half2(x[2 * i], x[2 * i + 1]);
    __half2 w = __halves2half2(y[2 * i], y[2 * i + 1]);
    __half2 r = __hfma2(__float2half2_rn(a), v, w);
    y[2 * i] = __low2half(r);
    y[2 * i + 1] = __high2half(r);
}

extern "C" __global__ void half_compare(const __half* a, const __nv_bfloat16* b, int* out) {
    int i = threadIdx.x;
    out[i] = (__hgt(a[2 * i], a[2 * i + 1]) ? 1 : 0) | (__hle(b[2 * i], b[2 * i + 1]) ? 2 : 0);
}

// One warp: C[16x8] = A[16x16] (row-major bf16) * B[16x8] (col-major, i.e. B^T row-major) in f32.
// A and B^T are staged to shared memory with cp.async, read with ldmatrix.
extern "C" __global__ void mma_bf16_16x8x16(const __nv_bfloat16* A, const __nv_bfloat16* Bt, float* C) {
    __shared__ __align__(16) __nv_bfloat16 As[16 * 16];
    __shared__ __align__(16) __nv_bfloat16 Bs[8 * 16];
    int lane = threadIdx.x;
    // 16 rows x 32 bytes of A = 32 chunks of 16 bytes; 8 rows x 32 bytes of B^T = 16 chunks.
    {
        uint32_t dst = (uint32_t)__cvta_generic_to_shared(As + lane * 8);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(dst), "l"(A + lane * 8));
        if (lane < 16) {
            uint32_t dstb = (uint32_t)__cvta_generic_to_shared(Bs + lane * 8);
            asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" :: "r"(dstb), "l"(Bt + lane * 8));
        }
        asm volatile("cp.async.commit_group;\n" ::);
        asm volatile("cp.async.wait_group 0;\n" ::);
    }
    __syncwarp();
    uint32_t a[4], b[2];
    {
        // x4: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
        int r = lane % 16, c = (lane / 16) * 8;
        uint32_t addr = (uint32_t)__cvta_generic_to_shared(As + r * 16 + c);
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3]) : "r"(addr));
    }
    {
        int r = lane % 8, c = ((lane / 8) % 2) * 8;
        uint32_t addr = (uint32_t)__cvta_generic_to_shared(Bs + r * 16 + c);
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(b[0]), "=r"(b[1]) : "r"(addr));
    }
    float d[4] = {0, 0, 0, 0};
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    int g = lane / 4, t = lane % 4;
    C[g * 8 + 2 * t] = d[0];
    C[g * 8 + 2 * t + 1] = d[1];
    C[(g + 8) * 8 + 2 * t] = d[2];
    C[(g + 8) * 8 + 2 * t + 1] = d[3];
}
"#;

fn bf16(x: f32) -> u16 {
    // Round to nearest even (inputs here are small integers / 8: exact).
    (x.to_bits() >> 16) as u16
}

#[test]
fn half2_fma() {
    let d = Dev::new(&compile(SRC));
    let n = 64;
    let xs: Vec<f32> = (0..n).map(|i| (i as f32 - 20.0) * 0.25).collect();
    let ys: Vec<f32> = (0..n).map(|i| (i as f32) * 0.5).collect();
    let to_h = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|&f| half_bits(f).to_le_bytes()).collect() };
    let dx = d.mem.alloc(2 * n as u64).unwrap();
    d.mem.write(dx, &to_h(&xs)).unwrap();
    let dy = d.mem.alloc(2 * n as u64).unwrap();
    d.mem.write(dy, &to_h(&ys)).unwrap();
    let rep = d.run(
        "half_axpy",
        [1, 1, 1],
        [32, 1, 1],
        0,
        &[Arg::Ptr(dx), Arg::Ptr(dy), Arg::F32(2.0)],
        CheckOptions::default(),
    );
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let mut out = vec![0u8; 2 * n];
    d.mem.read(dy, &mut out).unwrap();
    for i in 0..n {
        let got = u16::from_le_bytes([out[2 * i], out[2 * i + 1]]);
        // Exactly representable: 2x + y with quarter steps in a small range.
        assert_eq!(got, half_bits(2.0 * xs[i] + ys[i]), "element {i}");
    }
}

#[test]
fn half_and_bf16_comparisons() {
    let d = Dev::new(&compile(SRC));
    let n = 32;
    let xs: Vec<f32> = (0..2 * n).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    let ha: Vec<u8> = xs.iter().flat_map(|&x| half_bits(x).to_le_bytes()).collect();
    let hb: Vec<u8> = xs.iter().rev().flat_map(|&x| bf16(x).to_le_bytes()).collect();
    let da = d.mem.alloc(ha.len() as u64).unwrap();
    d.mem.write(da, &ha).unwrap();
    let db = d.mem.alloc(hb.len() as u64).unwrap();
    d.mem.write(db, &hb).unwrap();
    let dout = d.zeros(n * 4);
    let rep = d.run(
        "half_compare",
        [1, 1, 1],
        [n as u32, 1, 1],
        0,
        &[Arg::Ptr(da), Arg::Ptr(db), Arg::Ptr(dout)],
        CheckOptions::default(),
    );
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let mut out = vec![0u8; n * 4];
    d.mem.read(dout, &mut out).unwrap();
    let ys: Vec<f32> = xs.iter().rev().copied().collect();
    for i in 0..n {
        let want = (xs[2 * i] > xs[2 * i + 1]) as i32 | ((ys[2 * i] <= ys[2 * i + 1]) as i32) << 1;
        assert_eq!(i32::from_le_bytes(out[4 * i..4 * i + 4].try_into().unwrap()), want, "element {i}");
    }
}

/// f16 bits of a value exactly representable in f16 (small multiples of 1/4).
fn half_bits(x: f32) -> u16 {
    if x == 0.0 {
        return if x.is_sign_negative() { 0x8000 } else { 0 };
    }
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let mant = ((b >> 13) & 0x3ff) as u16;
    sign | ((exp as u16) << 10) | mant
}

#[test]
fn mma_bf16_through_cp_async_and_ldmatrix() {
    let d = Dev::new(&compile(SRC));
    // Small integers / 8 keep every product and sum exact in f32.
    let a: Vec<f32> = (0..256).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
    let bt: Vec<f32> = (0..128).map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0).collect();
    let up = |v: &[f32]| {
        let p = d.mem.alloc(2 * v.len() as u64).unwrap();
        d.mem.write(p, &v.iter().flat_map(|&x| bf16(x).to_le_bytes()).collect::<Vec<_>>()).unwrap();
        p
    };
    let (da, db) = (up(&a), up(&bt));
    let dc = d.zeros(16 * 8 * 4);
    let rep = d.run(
        "mma_bf16_16x8x16",
        [1, 1, 1],
        [32, 1, 1],
        0,
        &[Arg::Ptr(da), Arg::Ptr(db), Arg::Ptr(dc)],
        CheckOptions::default(),
    );
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let c = d.download_f32(dc, 128);
    for i in 0..16 {
        for j in 0..8 {
            let want: f32 = (0..16).map(|k| a[i * 16 + k] * bt[j * 16 + k]).sum();
            assert_eq!(c[i * 8 + j], want, "C[{i}][{j}]");
        }
    }
    let cnt = &rep.counters;
    assert_eq!(cnt.tensor_instructions.get("mma.m16n8k16.f32.bf16.bf16.f32"), Some(&1));
    // ldmatrix .x4 + .x2 = 6 phases of 8 rows; rows of 32 bytes (16 bf16) put
    // rows j and j+4 of a phase on the same banks: 2 wavefronts per phase.
    assert_eq!(cnt.ldmatrix_bank_conflicts, 6);
}

/// CUTLASS's Sm80 multistage bf16 tensor-core GEMM (cp.async 3-stage pipeline,
/// ldmatrix, mma.sync), its device-side operator invoked from a thin kernel
/// that builds the parameters from plain arguments.
const CUTLASS_GEMM: &str = r#"
#include <cutlass/gemm/device/gemm.h>
using Gemm = cutlass::gemm::device::Gemm<
    cutlass::bfloat16_t, cutlass::layout::RowMajor,
    cutlass::bfloat16_t, cutlass::layout::ColumnMajor,
    float, cutlass::layout::RowMajor, float,
    cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
    cutlass::gemm::GemmShape<64, 64, 32>, cutlass::gemm::GemmShape<32, 32, 32>,
    cutlass::gemm::GemmShape<16, 8, 16>,
    cutlass::epilogue::thread::LinearCombination<float, 4, float, float>,
    cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<>, 3>;
using K = Gemm::GemmKernel;
extern "C" __global__ void __launch_bounds__(K::kThreadCount)
cutlass_bf16_gemm(const cutlass::bfloat16_t* A, const cutlass::bfloat16_t* B, float* C, int M, int N, int Kd) {
    cutlass::gemm::GemmCoord problem(M, N, Kd);
    typename K::ThreadblockSwizzle swizzle;
    cutlass::gemm::GemmCoord grid = swizzle.get_tiled_shape(
        problem, {K::Mma::Shape::kM, K::Mma::Shape::kN, K::Mma::Shape::kK}, 1);
    typename K::Params params(problem, grid, {(cutlass::bfloat16_t*)A, Kd}, {(cutlass::bfloat16_t*)B, Kd},
                              {C, N}, {C, N}, {1.0f, 0.0f});
    extern __shared__ int smem[];
    K op;
    op(params, *reinterpret_cast<typename K::SharedStorage*>(smem));
}
extern "C" __global__ void cutlass_smem_bytes(int* out) { *out = (int)sizeof(K::SharedStorage); }
extern "C" __global__ void cutlass_threads(int* out) { *out = K::kThreadCount; }
"#;

fn compile_cutlass(src: &str) -> String {
    let inc = std::env::var("FUSED_LORA_CUTLASS_INCLUDE")
        .expect("FUSED_LORA_CUTLASS_INCLUDE: run `. scripts/setup.sh` first");
    let dir = std::env::temp_dir().join(format!("ptx-emu-core-cutlass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cu, ptx) = (dir.join("g.cu"), dir.join("g.ptx"));
    std::fs::write(&cu, src).unwrap();
    let out = std::process::Command::new(nvcc())
        .args(["-ptx", "-arch=sm_80", "-std=c++17", "-w"])
        .arg(format!("-I{inc}"))
        .arg("-o")
        .arg(&ptx)
        .arg(&cu)
        .output()
        .expect("running nvcc");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&ptx).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    text
}

#[test]
fn cutlass_sm80_bf16_gemm_runs_clean_with_every_check() {
    let d = Dev::new(&compile_cutlass(CUTLASS_GEMM));
    let scalar = |k: &str| {
        let out = d.zeros(4);
        let rep = d.run(k, [1, 1, 1], [1, 1, 1], 0, &[Arg::Ptr(out)], CheckOptions::default());
        assert!(rep.findings.is_empty(), "{:?}", rep.findings);
        let mut b = [0u8; 4];
        d.mem.read(out, &mut b).unwrap();
        u32::from_le_bytes(b)
    };
    let smem = scalar("cutlass_smem_bytes");
    let threads = scalar("cutlass_threads");
    // Ragged M and N (predicated tiles); K a multiple of 8 (16-byte cp.async).
    let (m, n, k) = (100usize, 72usize, 96usize);
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 17) as f32 - 8.0) / 8.0).collect();
    let b: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 13) as f32 - 6.0) / 8.0).collect();
    let up = |v: &[f32]| {
        let p = d.mem.alloc(2 * v.len() as u64).unwrap();
        d.mem.write(p, &v.iter().flat_map(|&x| bf16(x).to_le_bytes()).collect::<Vec<_>>()).unwrap();
        p
    };
    let (da, db) = (up(&a), up(&b));
    let dc = d.zeros(m * n * 4);
    let args = [Arg::Ptr(da), Arg::Ptr(db), Arg::Ptr(dc), Arg::I32(m as i32), Arg::I32(n as i32), Arg::I32(k as i32)];
    let grid = [m.div_ceil(64) as u32, n.div_ceil(64) as u32, 1];
    let rep = d.run("cutlass_bf16_gemm", grid, [threads, 1, 1], smem, &args, CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:#?}", rep.findings);
    let c = d.download_f32(dc, m * n);
    for i in 0..m {
        for j in 0..n {
            // B is column-major: column j is row j of `b`. Exact in f32.
            let want: f32 = (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum();
            assert_eq!(c[i * n + j], want, "C[{i}][{j}]");
        }
    }
    assert!(rep.counters.tensor_instructions["mma.m16n8k16.f32.bf16.bf16.f32"] > 0);
}

//! Language features nvcc lowers to less common PTX: local-memory arrays,
//! f64, 64-bit atomics, dynamic shared memory, 3-D blocks, warp collectives
//! in divergent code (independent thread scheduling), match/redux/syncwarp.

#[path = "core_support/mod.rs"]
mod support;

use ptx_emu::CheckOptions;
use support::*;

const SRC: &str = r#"
extern "C" __global__ void local_array(const int* idx, int* out) {
    int buf[16];
    int t = threadIdx.x;
    for (int i = 0; i < 16; i++) buf[i] = i * i + t;
    out[t] = buf[idx[t] & 15];
}
extern "C" __global__ void f64_math(const double* a, double* out) {
    int t = threadIdx.x;
    double x = a[t];
    out[t] = fma(x, 3.0, -1.0) / (x * x + 1.0) + sqrt(fabs(x)) - fmin(x, 0.5);
}
extern "C" __global__ void atomics64(unsigned long long* counter, int* mx, unsigned* wrap) {
    atomicAdd(counter, (unsigned long long)threadIdx.x + 1);
    atomicMax(mx, (int)(threadIdx.x * 37 % 101) - 50);
    atomicInc(wrap, 9u);
}
extern "C" __global__ void dyn_smem_3d(float* out) {
    extern __shared__ float s[];
    int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int n = blockDim.x * blockDim.y * blockDim.z;
    s[t] = (float)(threadIdx.x + 10 * threadIdx.y + 100 * threadIdx.z);
    __syncthreads();
    out[blockIdx.x * n + t] = s[n - 1 - t] + blockIdx.x * 1000;
}
extern "C" __global__ void divergent_collectives(const int* in, int* out) {
    int t = threadIdx.x;
    int v = in[t];
    int r;
    if (t & 1) {
        r = __reduce_add_sync(0xaaaaaaaau, v);
    } else {
        r = __shfl_sync(0x55555555u, v, 4);
    }
    unsigned same = __match_any_sync(0xffffffffu, v & 3);
    __syncwarp();
    out[t] = r;
    out[32 + t] = (int)same;
}
"#;

fn dev() -> Dev {
    Dev::new(&compile(SRC))
}

fn upload_i32(d: &Dev, v: &[i32]) -> u64 {
    let a = d.mem.alloc((v.len() * 4) as u64).unwrap();
    d.mem.write(a, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()).unwrap();
    a
}

fn download_i32(d: &Dev, a: u64, n: usize) -> Vec<i32> {
    let mut b = vec![0u8; n * 4];
    d.mem.read(a, &mut b).unwrap();
    b.chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn local_memory_arrays() {
    let d = dev();
    let idx: Vec<i32> = (0..64).map(|t| (t * 5 + 3) % 16).collect();
    let di = upload_i32(&d, &idx);
    let dout = d.zeros(64 * 4);
    let rep = d.run("local_array", [1, 1, 1], [64, 1, 1], 0, &[Arg::Ptr(di), Arg::Ptr(dout)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let want: Vec<i32> = (0..64).map(|t| idx[t as usize] * idx[t as usize] + t).collect();
    assert_eq!(download_i32(&d, dout, 64), want);
}

#[test]
fn double_precision() {
    let d = dev();
    let a: Vec<f64> = (0..32).map(|i| (i as f64 - 13.5) * 0.37).collect();
    let da = d.mem.alloc(256).unwrap();
    d.mem.write(da, &a.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()).unwrap();
    let dout = d.zeros(256);
    let rep = d.run("f64_math", [1, 1, 1], [32, 1, 1], 0, &[Arg::Ptr(da), Arg::Ptr(dout)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let mut b = vec![0u8; 256];
    d.mem.read(dout, &mut b).unwrap();
    for (i, &x) in a.iter().enumerate() {
        let got = f64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        let want = x.mul_add(3.0, -1.0) / (x * x + 1.0) + x.abs().sqrt() - x.min(0.5);
        assert!((got - want).abs() <= 1e-14 * want.abs().max(1.0), "{i}: {got} vs {want}");
    }
}

#[test]
fn atomics_across_ctas_and_host_threads() {
    let d = dev();
    let counter = d.zeros(8);
    let mx = upload_i32(&d, &[i32::MIN]);
    let wrap = d.zeros(4);
    let opts = CheckOptions { threads: 4, ..CheckOptions::default() };
    let rep = d.run("atomics64", [16, 1, 1], [128, 1, 1], 0, &[Arg::Ptr(counter), Arg::Ptr(mx), Arg::Ptr(wrap)], opts);
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let mut c = [0u8; 8];
    d.mem.read(counter, &mut c).unwrap();
    assert_eq!(u64::from_le_bytes(c), 16 * (128 * 129 / 2));
    let want_max = (0..128).map(|t| (t * 37 % 101) - 50).max().unwrap();
    assert_eq!(download_i32(&d, mx, 1)[0], want_max);
    // atomicInc wraps at 9: 2048 increments from 0 leave 2048 mod 10.
    assert_eq!(download_i32(&d, wrap, 1)[0], 2048 % 10);
}

#[test]
fn dynamic_shared_memory_and_3d_blocks() {
    let d = dev();
    let (bx, by, bz) = (4u32, 3u32, 5u32);
    let n = (bx * by * bz) as usize;
    let dout = d.zeros(2 * n * 4);
    let rep = d.run("dyn_smem_3d", [2, 1, 1], [bx, by, bz], (n * 4) as u32, &[Arg::Ptr(dout)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let got = d.download_f32(dout, 2 * n);
    for blk in 0..2 {
        for t in 0..n {
            let r = n - 1 - t;
            let (x, y, z) = (r % bx as usize, (r / bx as usize) % by as usize, r / (bx * by) as usize);
            assert_eq!(got[blk * n + t], (x + 10 * y + 100 * z + 1000 * blk) as f32);
        }
    }
    // Too little dynamic shared memory for the kernel's indexing is caught.
    let rep = d.run("dyn_smem_3d", [1, 1, 1], [bx, by, bz], 16, &[Arg::Ptr(dout)], CheckOptions::default());
    assert_eq!(rep.findings[0].kind, ptx_emu::FindingKind::OutOfBounds);
}

#[test]
fn collectives_in_divergent_branches() {
    let d = dev();
    let v: Vec<i32> = (0..32).map(|t| t * 3 + 1).collect();
    let di = upload_i32(&d, &v);
    let dout = d.zeros(64 * 4);
    let rep = d.run(
        "divergent_collectives",
        [1, 1, 1],
        [32, 1, 1],
        0,
        &[Arg::Ptr(di), Arg::Ptr(dout)],
        CheckOptions::default(),
    );
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let out = download_i32(&d, dout, 64);
    let odd_sum: i32 = (0..32).filter(|t| t & 1 == 1).map(|t| v[t]).sum();
    for t in 0..32 {
        let want = if t & 1 == 1 { odd_sum } else { v[4] };
        assert_eq!(out[t], want, "lane {t}");
        let same: u32 = (0..32).filter(|&u| v[u] & 3 == v[t] & 3).fold(0, |m, u| m | 1 << u);
        assert_eq!(out[32 + t] as u32, same, "match lane {t}");
    }
}

const CALLS: &str = r#"
__device__ __noinline__ int clamp_add(int a, int b, int hi) {
    int s = a + b;
    if (s > hi) return hi;   // an early return inside the callee
    return s;
}
__device__ __noinline__ int twice_clamped(int a, int hi) {
    return clamp_add(a, a, hi);  // nested call
}
__device__ __noinline__ void store_flag(int* p, int v) { *p = v; }  // no return value

extern "C" __global__ void calls(const int* in, int* out) {
    int t = threadIdx.x;
    int acc = 0;
    for (int i = 0; i < 3; i++) acc = clamp_add(acc, in[t] + i, 100);  // call in a loop
    out[t] = acc + twice_clamped(in[t], 40);
    if (t == 0) store_flag(out + blockDim.x, 7);
}
"#;

#[test]
fn noinline_device_functions_are_inlined_at_load() {
    let ptx = compile(CALLS);
    assert!(ptx.contains("call.uni"), "the calls were inlined by nvcc");
    let d = Dev::new(&ptx);
    let v: Vec<i32> = (0..64).map(|t| t * 3 - 20).collect();
    let di = upload_i32(&d, &v);
    let dout = d.zeros(65 * 4);
    let rep = d.run("calls", [1, 1, 1], [64, 1, 1], 0, &[Arg::Ptr(di), Arg::Ptr(dout)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let out = download_i32(&d, dout, 65);
    let clamp_add = |a: i32, b: i32, hi: i32| (a + b).min(hi);
    for t in 0..64 {
        let mut acc = 0;
        for i in 0..3 {
            acc = clamp_add(acc, v[t] + i, 100);
        }
        assert_eq!(out[t], acc + clamp_add(v[t], v[t], 40), "thread {t}");
    }
    assert_eq!(out[64], 7);
}

#[test]
fn recursive_calls_are_a_load_error() {
    let ptx = ".version 9.0\n.target sm_80\n.address_size 64\n\
        .func (.param .b32 r) f(.param .b32 n)\n{\n.reg .b32 %r<3>;\nld.param.b32 %r1, [n];\n\
        { .param .b32 a0;\n.param .b32 r0;\nst.param.b32 [a0], %r1;\ncall.uni (r0), f, (a0);\nld.param.b32 %r2, [r0];\n}\n\
        st.param.b32 [r], %r2;\nret;\n}\n\
        .visible .entry k()\n{\n.reg .b32 %r<3>;\n{ .param .b32 a0;\n.param .b32 r0;\nst.param.b32 [a0], 1;\n\
        call.uni (r0), f, (a0);\n}\nret;\n}\n";
    let mem = ptx_emu::GlobalMemory::new(1 << 20);
    let e = ptx_emu::Module::load(ptx, &mem).err().expect("a recursive call must not load");
    assert!(e.message.contains("recursive") && e.message.contains("call.uni"), "{e}");
    assert_eq!(e.line, 11, "the call inside `f` that recurses");
}

/// Lane 0 spins on a shared flag that lane 1 sets; the spin loop comes first
/// in the code, so lowest-PC-first scheduling alone would never run lane 1.
const HANDOFF_PTX: &str = ".version 9.0\n.target sm_80\n.address_size 64\n\
    .visible .entry handoff(.param .u64 out)\n{\n.reg .pred %p<4>;\n.reg .b32 %r<4>;\n.reg .b64 %rd<3>;\n\
    .shared .align 4 .b32 flag;\nmov.u32 %r1, %tid.x;\nsetp.eq.u32 %p1, %r1, 0;\n\
    @%p1 st.shared.u32 [flag], 0;\nbar.warp.sync -1;\n@!%p1 bra $L_other;\n\
    $L_spin:\nld.volatile.shared.u32 %r2, [flag];\nsetp.eq.u32 %p2, %r2, 0;\n@%p2 bra $L_spin;\n\
    ld.param.u64 %rd1, [out];\ncvta.to.global.u64 %rd2, %rd1;\nst.global.u32 [%rd2], %r2;\nbra.uni $L_end;\n\
    $L_other:\nsetp.eq.u32 %p3, %r1, 1;\n@%p3 st.volatile.shared.u32 [flag], 42;\n$L_end:\nret;\n}\n";

#[test]
fn a_lane_spinning_on_another_lane_of_its_warp_makes_progress() {
    let d = Dev::new(HANDOFF_PTX);
    let out = d.zeros(4);
    // The spin is a deliberate unordered shared access: racecheck off.
    let opts = CheckOptions { racecheck: false, ..CheckOptions::default() };
    let rep = d.run("handoff", [1, 1, 1], [32, 1, 1], 0, &[Arg::Ptr(out)], opts);
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    assert_eq!(download_i32(&d, out, 1)[0], 42);
    // With racecheck on, the flag handoff is reported as the race it is.
    let rep = d.run("handoff", [1, 1, 1], [32, 1, 1], 0, &[Arg::Ptr(out)], CheckOptions::default());
    assert_eq!(rep.findings[0].kind, ptx_emu::FindingKind::Race);
}

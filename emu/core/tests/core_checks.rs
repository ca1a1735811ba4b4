//! Each check fires on a planted bug, names it precisely, and stays quiet on
//! the fixed twin; each can be switched off.

#[path = "core_support/mod.rs"]
mod support;

use ptx_emu::{CheckOptions, Finding, FindingKind};
use support::*;

const BUGGY: &str = r#"
extern "C" __global__ void store_unchecked(float* c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    c[i] = (float)n;
}
extern "C" __global__ void store_checked(float* c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = (float)n;
}
extern "C" __global__ void load_offset(const char* p, float* out, int off) {
    out[threadIdx.x] = *(const float*)(p + off + 4 * threadIdx.x);
}
extern "C" __global__ void neighbour(float* out, int sync) {
    __shared__ float s[256];
    int t = threadIdx.x;
    s[t] = 0.0f;
    __syncthreads();
    s[t] = (float)t;
    if (sync) __syncthreads();
    out[t] = s[(t + 1) % blockDim.x];
}
extern "C" __global__ void shared_unwritten(float* out, int write_first) {
    __shared__ float s[64];
    if (write_first) s[threadIdx.x] = 1.0f;
    __syncwarp();
    out[threadIdx.x] = s[threadIdx.x];
}
extern "C" __global__ void copy(const float* in, float* out) {
    out[threadIdx.x] = in[threadIdx.x];
}
extern "C" __global__ void shfl_after_exit(float* out, unsigned mask) {
    float v = (float)threadIdx.x;
    if (threadIdx.x >= 16) return;
    v = __shfl_sync(mask, v, 0);
    out[threadIdx.x] = v;
}
"#;

fn only(findings: &[Finding], kind: FindingKind) -> &Finding {
    assert!(!findings.is_empty(), "expected a {kind:?} finding, got none");
    assert_eq!(findings[0].kind, kind, "{:#?}", findings);
    &findings[0]
}

#[test]
fn memcheck_out_of_bounds_store_names_kernel_line_thread_and_allocation() {
    let d = Dev::new(&compile(BUGGY));
    let n = 200;
    let c = d.zeros(n * 4);
    let rep = d.run(
        "store_unchecked",
        [2, 1, 1],
        [128, 1, 1],
        0,
        &[Arg::Ptr(c), Arg::I32(n as i32)],
        CheckOptions::default(),
    );
    let f = only(&rep.findings, FindingKind::OutOfBounds);
    assert_eq!(f.kernel, "store_unchecked");
    assert!(f.instruction.starts_with("st.global.f32"), "{f}");
    assert!(f.ptx_line > 0);
    assert_eq!(f.cta, [1, 0, 0]);
    assert_eq!(f.thread, [72, 0, 0], "first thread past the end");
    assert_eq!(f.address, c + 800);
    assert!(f.detail.contains(&format!("{c:#x}")), "names the nearest allocation: {}", f.detail);
    assert_eq!(f.kind.cuda_error_code(), 700);

    let rep =
        d.run("store_checked", [2, 1, 1], [128, 1, 1], 0, &[Arg::Ptr(c), Arg::I32(n as i32)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
}

#[test]
fn memcheck_use_after_free_and_misaligned() {
    let d = Dev::new(&compile(BUGGY));
    let c = d.zeros(64 * 4);
    d.mem.free(c).unwrap();
    let rep = d.run("store_checked", [1, 1, 1], [64, 1, 1], 0, &[Arg::Ptr(c), Arg::I32(64)], CheckOptions::default());
    only(&rep.findings, FindingKind::OutOfBounds);

    let p = d.zeros(1024);
    let out = d.zeros(32 * 4);
    let rep = d.run(
        "load_offset",
        [1, 1, 1],
        [32, 1, 1],
        0,
        &[Arg::Ptr(p), Arg::Ptr(out), Arg::I32(2)],
        CheckOptions::default(),
    );
    let f = only(&rep.findings, FindingKind::Misaligned);
    assert_eq!(f.address, p + 2);
    assert_eq!(f.kind.cuda_error_code(), 716);
    let rep = d.run(
        "load_offset",
        [1, 1, 1],
        [32, 1, 1],
        0,
        &[Arg::Ptr(p), Arg::Ptr(out), Arg::I32(4)],
        CheckOptions::default(),
    );
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
}

#[test]
fn racecheck_missing_barrier_and_fixed_twin() {
    let d = Dev::new(&compile(BUGGY));
    let out = d.zeros(64 * 4);
    let rep = d.run("neighbour", [1, 1, 1], [64, 1, 1], 0, &[Arg::Ptr(out), Arg::I32(0)], CheckOptions::default());
    let f = only(&rep.findings, FindingKind::Race);
    // Whichever of the two unordered accesses comes second is reported.
    assert!(f.instruction.contains(".shared.f32"), "{f}");
    assert!(f.detail.contains("by thread"), "{}", f.detail);

    let rep = d.run("neighbour", [1, 1, 1], [64, 1, 1], 0, &[Arg::Ptr(out), Arg::I32(1)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let got = d.download_f32(out, 64);
    let want: Vec<f32> = (0..64).map(|t| ((t + 1) % 64) as f32).collect();
    assert_eq!(got, want);

    // Switched off, the racy kernel runs to the end without a report.
    let off = CheckOptions { racecheck: false, ..CheckOptions::default() };
    let rep = d.run("neighbour", [1, 1, 1], [64, 1, 1], 0, &[Arg::Ptr(out), Arg::I32(0)], off);
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
}

#[test]
fn initcheck_global_and_shared() {
    let d = Dev::new(&compile(BUGGY));
    let input = d.mem.alloc(32 * 4).unwrap();
    let out = d.zeros(32 * 4);
    let rep = d.run("copy", [1, 1, 1], [32, 1, 1], 0, &[Arg::Ptr(input), Arg::Ptr(out)], CheckOptions::default());
    let f = only(&rep.findings, FindingKind::Uninitialized);
    assert_eq!(f.address, input);
    d.mem.memset(input, 0x3f80_0000, 4, 32).unwrap();
    let rep = d.run("copy", [1, 1, 1], [32, 1, 1], 0, &[Arg::Ptr(input), Arg::Ptr(out)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    assert_eq!(d.download_f32(out, 32), vec![1.0; 32]);

    // Shared memory: a finding with `shared_initcheck`; by default, as
    // compute-sanitizer's initcheck (global memory only), none, and the
    // bytes never written read as 0xff (a NaN where the float is stored).
    let strict = CheckOptions { shared_initcheck: true, ..CheckOptions::default() };
    let rep = d.run("shared_unwritten", [1, 1, 1], [32, 1, 1], 0, &[Arg::Ptr(out), Arg::I32(0)], strict);
    let f = only(&rep.findings, FindingKind::Uninitialized);
    assert!(f.instruction.starts_with("ld.shared"), "{f}");
    assert!(f.detail.contains("never written"), "{f}");
    let rep =
        d.run("shared_unwritten", [1, 1, 1], [32, 1, 1], 0, &[Arg::Ptr(out), Arg::I32(0)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let poisoned = d.download_f32(out, 32);
    assert!(poisoned.iter().all(|v| v.to_bits() == 0xffff_ffff), "{poisoned:?}");
    for opts in [strict, CheckOptions::default()] {
        let rep = d.run("shared_unwritten", [1, 1, 1], [32, 1, 1], 0, &[Arg::Ptr(out), Arg::I32(1)], opts);
        assert!(rep.findings.is_empty(), "{:?}", rep.findings);
        assert_eq!(d.download_f32(out, 32), vec![1.0; 32]);
    }
}

#[test]
fn synccheck_collective_missing_exited_lanes() {
    let d = Dev::new(&compile(BUGGY));
    let out = d.zeros(32 * 4);
    let rep =
        d.run("shfl_after_exit", [1, 1, 1], [32, 1, 1], 0, &[Arg::Ptr(out), Arg::I32(-1)], CheckOptions::default());
    let f = only(&rep.findings, FindingKind::DivergentSync);
    assert!(f.instruction.starts_with("shfl.sync"), "{f}");
    let rep =
        d.run("shfl_after_exit", [1, 1, 1], [32, 1, 1], 0, &[Arg::Ptr(out), Arg::I32(0xffff)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    assert_eq!(d.download_f32(out, 16), vec![0.0; 16]);
}

const HEADER: &str = ".version 9.0\n.target sm_80\n.address_size 64\n";

/// `bar.sync 0` reached at two different instructions (threads < 32 take one
/// branch, the rest the other) — or at one, in the fixed twin.
fn divergent_barrier_ptx(same_barrier: bool) -> String {
    let second = if same_barrier { "bra.uni $L_join;" } else { "bar.sync 0;" };
    format!(
        "{HEADER}.visible .entry divbar(.param .u64 out)\n{{\n.reg .pred %p<2>;\n.reg .b32 %r<4>;\n.reg .b64 %rd<4>;\n\
         mov.u32 %r1, %tid.x;\nsetp.lt.u32 %p1, %r1, 32;\n@%p1 bra $L_a;\n{second}\nbra.uni $L_end;\n\
         $L_a:\n$L_join:\nbar.sync 0;\n$L_end:\nld.param.u64 %rd1, [out];\ncvta.to.global.u64 %rd2, %rd1;\n\
         mul.wide.u32 %rd3, %r1, 4;\nadd.s64 %rd2, %rd2, %rd3;\nst.global.u32 [%rd2], %r1;\nret;\n}}\n"
    )
}

#[test]
fn synccheck_divergent_barrier_and_fixed_twin() {
    let d = Dev::new(&divergent_barrier_ptx(false));
    let out = d.zeros(64 * 4);
    let rep = d.run("divbar", [1, 1, 1], [64, 1, 1], 0, &[Arg::Ptr(out)], CheckOptions::default());
    let f = only(&rep.findings, FindingKind::DivergentSync);
    assert!(f.instruction.starts_with("bar.sync"), "{f}");
    assert!(f.detail.contains("different instructions"), "{}", f.detail);

    let d = Dev::new(&divergent_barrier_ptx(true));
    let out = d.zeros(64 * 4);
    let rep = d.run("divbar", [1, 1, 1], [64, 1, 1], 0, &[Arg::Ptr(out)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let mut b = vec![0u8; 256];
    d.mem.read(out, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b[252..].try_into().unwrap()), 63);
}

#[test]
fn synccheck_barrier_count_never_reached_is_a_deadlock_not_a_hang() {
    let ptx = format!("{HEADER}.visible .entry stuck()\n{{\nbar.sync 1, 64;\nret;\n}}\n");
    let d = Dev::new(&ptx);
    let rep = d.run("stuck", [2, 1, 1], [32, 1, 1], 0, &[], CheckOptions::default());
    let f = only(&rep.findings, FindingKind::Deadlock);
    assert_eq!(f.ptx_line, 6);
}

/// One thread copies 4 bytes with cp.async and reads the destination either
/// before or after `cp.async.wait_group 0`.
fn cp_async_ptx(read_before_wait: bool) -> String {
    let (early, late) =
        if read_before_wait { ("ld.shared.u32 %r2, [%r1];", "") } else { ("", "ld.shared.u32 %r2, [%r1];") };
    format!(
        "{HEADER}.visible .entry cpa(.param .u64 src, .param .u64 dst)\n{{\n.reg .b32 %r<4>;\n.reg .b64 %rd<5>;\n\
         .shared .align 16 .b8 buf[16];\nld.param.u64 %rd1, [src];\nld.param.u64 %rd2, [dst];\n\
         cvta.to.global.u64 %rd3, %rd1;\ncvta.to.global.u64 %rd4, %rd2;\nmov.u32 %r1, buf;\n\
         cp.async.ca.shared.global [%r1], [%rd3], 4;\ncp.async.commit_group;\n{early}\ncp.async.wait_group 0;\n{late}\n\
         st.global.u32 [%rd4], %r2;\nret;\n}}\n"
    )
}

#[test]
fn cp_async_lands_only_at_its_wait() {
    let run = |early: bool, opts: CheckOptions| {
        let d = Dev::new(&cp_async_ptx(early));
        let src = d.mem.alloc(4).unwrap();
        d.mem.write(src, &0xdead_beefu32.to_le_bytes()).unwrap();
        let dst = d.zeros(4);
        let rep = d.run("cpa", [1, 1, 1], [1, 1, 1], 0, &[Arg::Ptr(src), Arg::Ptr(dst)], opts);
        let mut b = [0u8; 4];
        d.mem.read(dst, &mut b).unwrap();
        (rep, u32::from_le_bytes(b))
    };
    let (rep, v) = run(false, CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    assert_eq!(v, 0xdead_beef);

    let (rep, _) = run(true, CheckOptions::default());
    let f = only(&rep.findings, FindingKind::Race);
    assert!(f.detail.contains("cp.async"), "{}", f.detail);

    // Without racecheck, initcheck sees bytes nothing has written yet: a
    // finding with `shared_initcheck`, else they read as 0xff.
    let (rep, _) = run(true, CheckOptions { racecheck: false, shared_initcheck: true, ..CheckOptions::default() });
    only(&rep.findings, FindingKind::Uninitialized);
    let (rep, v) = run(true, CheckOptions { racecheck: false, ..CheckOptions::default() });
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    assert_eq!(v, 0xffff_ffff);

    // With both off, the early read sees the old (zero) contents.
    let (rep, v) = run(true, CheckOptions { racecheck: false, initcheck: false, ..CheckOptions::default() });
    assert!(rep.findings.is_empty());
    assert_eq!(v, 0);
}

/// Every thread of two warps stores `(tid & mask) << 8 | 0x3f800000` to one
/// shared word with no barrier between the stores, then thread 0 copies the
/// word out after one.
fn same_word_ptx() -> String {
    format!(
        "{HEADER}.visible .entry flag(.param .u64 out, .param .u32 mask)\n{{\n.reg .b32 %r<6>;\n.reg .b64 %rd<3>;\n\
         .reg .pred %p<2>;\n.shared .align 4 .b8 word[4];\nld.param.u64 %rd1, [out];\nld.param.u32 %r1, [mask];\n\
         mov.u32 %r2, %tid.x;\nand.b32 %r3, %r2, %r1;\nshl.b32 %r3, %r3, 8;\nor.b32 %r5, %r3, 0x3f800000;\n\
         st.shared.u32 [word], %r5;\nbar.sync 0;\nsetp.ne.u32 %p1, %r2, 0;\n@%p1 bra DONE;\n\
         ld.shared.u32 %r4, [word];\ncvta.to.global.u64 %rd2, %rd1;\nst.global.u32 [%rd2], %r4;\nDONE:\nret;\n}}\n"
    )
}

#[test]
fn racecheck_write_after_write_of_identical_data_is_not_a_finding() {
    let d = Dev::new(&same_word_ptx());
    let out = d.zeros(4);
    // 64 threads store 1.0f: identical data, compute-sanitizer's INFO level
    // (no impact on execution), which it does not report by default.
    let rep = d.run("flag", [1, 1, 1], [64, 1, 1], 0, &[Arg::Ptr(out), Arg::I32(0)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    assert_eq!(d.download_f32(out, 1), vec![1.0]);
    // Warp 1 stores 0x3f802000: the words differ in byte 1 only, which races
    // (a write after write, whichever store came second); bytes 0, 2 and 3
    // are identical and race with nothing.
    let rep = d.run("flag", [1, 1, 1], [64, 1, 1], 0, &[Arg::Ptr(out), Arg::I32(0x20)], CheckOptions::default());
    let f = only(&rep.findings, FindingKind::Race);
    assert_eq!(rep.findings.len(), 1, "one pair of instructions: {:?}", rep.findings);
    assert!(f.instruction.starts_with("st.shared.u32"), "{f}");
    assert!(f.detail.contains("write of byte 0x1 races with a write"), "{}", f.detail);
}

#[test]
fn shared_out_of_range_is_caught() {
    let ptx = format!(
        "{HEADER}.visible .entry sh(.param .u32 off)\n{{\n.reg .b32 %r<4>;\n.shared .align 4 .b8 buf[64];\n\
         ld.param.u32 %r1, [off];\nmov.u32 %r2, buf;\nadd.s32 %r3, %r2, %r1;\nst.shared.u32 [%r3], %r1;\nret;\n}}\n"
    );
    let d = Dev::new(&ptx);
    let rep = d.run("sh", [1, 1, 1], [1, 1, 1], 0, &[Arg::I32(64)], CheckOptions::default());
    let f = only(&rep.findings, FindingKind::OutOfBounds);
    assert!(f.detail.contains("shared"), "{}", f.detail);
    let rep = d.run("sh", [1, 1, 1], [1, 1, 1], 0, &[Arg::I32(60)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    // Dynamic shared memory extends the range.
    let rep = d.run("sh", [1, 1, 1], [1, 1, 1], 16, &[Arg::I32(64)], CheckOptions::default());
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
}

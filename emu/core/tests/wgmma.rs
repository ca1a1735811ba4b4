//! sm_90a warpgroup MMA on the emulator: kernels/wgmma.cu (inline-PTX
//! `wgmma.mma_async` m64nNk16, f32 accumulators) compiled by nvcc for
//! sm_90a, against an f64 reference, with every swizzle mode, both operand
//! major-nesses, register A, scale-d 0 and 1, negative imm-scale and four
//! k-steps in two commit groups; and a planted-bug twin for each wgmma
//! finding.

mod common;

use common::{compile_ptx_with, cutlass_include, grid_1d, Device, Rng};
use half::{bf16, f16};
use ptx_emu::{CheckOptions, FindingKind, LaunchReport};

/// (kernel suffix, f16 inputs, N, k-steps, scale-a, scale-b), as gen_wgmma.py lists them.
const VARIANTS: [(&str, bool, usize, usize, f64, f64); 11] = [
    ("ss_bf16_n64_t00", false, 64, 4, 1.0, 1.0),
    ("ss_bf16_n64_t11", false, 64, 4, 1.0, 1.0),
    ("ss_bf16_n64_t01_nega", false, 64, 4, -1.0, 1.0),
    ("ss_f16_n64_t10_negb", true, 64, 4, 1.0, -1.0),
    ("ss_bf16_n8_t00", false, 8, 4, 1.0, 1.0),
    ("ss_f16_n24_t11", true, 24, 4, 1.0, 1.0),
    ("ss_bf16_n128_t01", false, 128, 2, 1.0, 1.0),
    ("ss_bf16_n256_t00", false, 256, 1, 1.0, 1.0),
    ("rs_bf16_n64_t0_nega", false, 64, 4, -1.0, 1.0),
    ("rs_f16_n64_t1", true, 64, 4, 1.0, 1.0),
    ("rs_bf16_n256_t1", false, 256, 2, 1.0, 1.0),
];

const SWIZZLES: [(i32, &str); 4] = [(0, "none"), (1, "128B"), (2, "64B"), (3, "32B")];

fn device() -> Device {
    Device::from_ptx(compile_ptx_with("wgmma.cu", "sm_90a", &[]))
}

/// 16-bit input bits and their values: multiples of 1/64 in [-2, 2], exact
/// in f16 and bf16, so each k-step's products and sum are exact in f64.
fn inputs(rng: &mut Rng, n: usize, f16_inputs: bool) -> (Vec<u16>, Vec<f64>) {
    (0..n)
        .map(|_| {
            let x = (rng.next_u32() % 257) as f32 / 64.0 - 2.0;
            let bits = if f16_inputs { f16::from_f32(x).to_bits() } else { bf16::from_f32(x).to_bits() };
            (bits, f64::from(x))
        })
        .unzip()
}

struct Case {
    a: u64,
    bt: u64,
    c0: u64,
    d: u64,
    want_d: Vec<f64>,
    n: usize,
}

/// Uploads random A (64 × K), Bt (N × K), C0 (64 × N) and a NaN-poisoned D.
/// The reference accumulates as the hardware does: D starts as C0 (when
/// scale-d is 1) or nothing, and each k-step of 16 adds `sa·sb·A·B` over its
/// 16 k, summed exactly in f64 (exact for these inputs) and rounded to f32.
fn case(dev: &Device, seed: u64, v: &(&str, bool, usize, usize, f64, f64), scale_first: bool) -> Case {
    let &(_, f16_inputs, n, ksteps, sa, sb) = v;
    let k = 16 * ksteps;
    let mut rng = Rng::new(seed);
    let (a_bits, a) = inputs(&mut rng, 64 * k, f16_inputs);
    let (bt_bits, bt) = inputs(&mut rng, n * k, f16_inputs);
    let c0: Vec<f32> = rng.uniform_vec(64 * n, -4.0, 4.0);
    let mut want_d = vec![0.0; 64 * n];
    for m in 0..64 {
        for j in 0..n {
            let mut acc = if scale_first { c0[m * n + j] } else { 0.0 };
            for s in 0..ksteps {
                let dot: f64 = (16 * s..16 * s + 16).map(|kk| a[m * k + kk] * bt[j * k + kk]).sum();
                acc = (f64::from(acc) + sa * sb * dot) as f32;
            }
            want_d[m * n + j] = f64::from(acc);
        }
    }
    Case {
        a: dev.upload(&a_bits),
        bt: dev.upload(&bt_bits),
        c0: dev.upload(&c0),
        d: dev.alloc_poisoned::<f32>(64 * n),
        want_d,
        n,
    }
}

fn launch(
    dev: &Device,
    kernel: &str,
    c: &Case,
    swz: i32,
    scale_first: bool,
    bug: i32,
    opts: &CheckOptions,
) -> LaunchReport {
    let params =
        dev.params(kernel).ptr(c.a).ptr(c.bt).ptr(c.c0).ptr(c.d).i32(swz).i32(scale_first as i32).i32(bug).finish();
    dev.launch_with(kernel, grid_1d(1, 128), &params, opts)
}

/// D must be the reference bit for bit (each k-step's exact sum rounded once
/// to f32, as the emulator documents its tensor-core numerics).
#[track_caller]
fn assert_d(what: &str, dev: &Device, c: &Case) {
    let got: Vec<f32> = dev.download(c.d, 64 * c.n);
    for (i, (g, w)) in got.iter().zip(&c.want_d).enumerate() {
        assert!(g.to_bits() == (*w as f32).to_bits(), "{what}: D[{}][{}] = {g}, want {w}", i / c.n, i % c.n);
    }
}

#[test]
fn every_variant_swizzle_and_scale_d_matches_the_reference() {
    let dev = device();
    let opts = CheckOptions::default();
    for (vi, v) in VARIANTS.iter().enumerate() {
        let kernel = format!("wgmma_{}", v.0);
        for (swz, swz_name) in SWIZZLES {
            for scale_first in [false, true] {
                let c = case(&dev, 100 * vi as u64 + swz as u64 * 2 + scale_first as u64, v, scale_first);
                let report = launch(&dev, &kernel, &c, swz, scale_first, 0, &opts);
                common::assert_no_findings(&report);
                assert_d(&format!("{kernel} swizzle {swz_name} scale-d {}", scale_first as u8), &dev, &c);
            }
        }
    }
}

#[test]
fn counters_count_each_warp_of_the_warpgroup() {
    let dev = device();
    let v = &VARIANTS[0];
    let c = case(&dev, 7, v, true);
    let report = launch(&dev, "wgmma_ss_bf16_n64_t00", &c, 1, true, 0, &CheckOptions::default());
    common::assert_no_findings(&report);
    // Four k-steps, each one warp instruction in each of the four warps.
    assert_eq!(report.counters.tensor_instructions.get("wgmma.m64n64k16.f32.bf16.bf16"), Some(&16));
}

/// CuTe's GMMA layouts and descriptors (kernels/wgmma_cute.cu): K- and
/// MN-major operands with each swizzle atom, and A in registers through
/// CuTe's A-fragment partition; D through CuTe's partition_C. The last, an
/// MN-major 128-byte-swizzled pair with N = 128, puts B across two MN atoms,
/// so the descriptor's leading byte offset (their stride) must be read as
/// CuTe writes it.
#[test]
fn cute_gmma_layouts_and_descriptors_match_the_reference() {
    let flags = [
        "-std=c++17".to_string(),
        "--expt-relaxed-constexpr".to_string(),
        format!("-I{}", cutlass_include().display()),
    ];
    let dev = Device::from_ptx(compile_ptx_with("wgmma_cute.cu", "sm_90a", &flags));
    let v = ("cute", false, 64, 4, 1.0, 1.0);
    let kernels = ["k", "mn"]
        .iter()
        .flat_map(|major| ["inter", "sw32", "sw64", "sw128"].iter().map(move |atom| format!("cute_{major}_{atom}")))
        .chain(["cute_rs_k_sw128".to_string(), "cute_mn_sw128_n128".to_string()]);
    for (i, kernel) in kernels.enumerate() {
        let v = if kernel.ends_with("_n128") { ("cute", false, 128, 4, 1.0, 1.0) } else { v };
        let c = case(&dev, 500 + i as u64, &v, false);
        let params = dev.params(&kernel).ptr(c.a).ptr(c.bt).ptr(c.d).finish();
        let report = dev.launch_with(&kernel, grid_1d(1, 128), &params, &CheckOptions::default());
        common::assert_no_findings(&report);
        assert_d(&kernel, &dev, &c);
    }
}

#[track_caller]
fn assert_planted(bug: i32, want: FindingKind, needle: &str) {
    let dev = device();
    let v = &VARIANTS[0];
    let c = case(&dev, 11, v, true);
    let report = launch(&dev, "wgmma_ss_bf16_n64_t00", &c, 1, true, bug, &CheckOptions::default());
    let f = report.findings.first().unwrap_or_else(|| panic!("bug {bug}: no finding"));
    assert_eq!(f.kind, want, "bug {bug}: {f}");
    assert!(f.detail.contains(needle), "bug {bug}: {f}");
}

#[test]
fn reading_the_accumulator_before_its_wait_is_a_finding() {
    assert_planted(1, FindingKind::WgmmaRegisterInFlight, "accumulator");
}

#[test]
fn writing_an_operand_before_the_wait_is_a_finding() {
    assert_planted(2, FindingKind::WgmmaOperandOverwritten, "still in flight");
}

#[test]
fn a_missing_fence_is_a_finding() {
    assert_planted(3, FindingKind::WgmmaMissingFence, "no wgmma.fence");
}

#[test]
fn writing_the_accumulator_after_the_fence_is_a_finding() {
    assert_planted(4, FindingKind::WgmmaMissingFence, "since the last wgmma.fence");
}

#[test]
fn a_warpgroup_short_of_four_warps_is_a_synccheck_finding() {
    let dev = device();
    let c = case(&dev, 13, &VARIANTS[0], true);
    let params =
        dev.params("wgmma_ss_bf16_n64_t00").ptr(c.a).ptr(c.bt).ptr(c.c0).ptr(c.d).i32(1).i32(1).i32(0).finish();
    let report = dev.launch_with("wgmma_ss_bf16_n64_t00", grid_1d(1, 64), &params, &CheckOptions::default());
    let f = report.findings.first().expect("a finding");
    assert_eq!(f.kind, FindingKind::DivergentSync, "{f}");
    assert!(f.detail.contains("all 128 threads of warpgroup 0"), "{f}");
}

#[test]
fn a_warp_skipping_a_wgmma_its_warpgroup_executes_is_a_synccheck_finding() {
    assert_planted(5, FindingKind::DivergentSync, "warpgroup 0");
}

//! An NVIDIA CUTLASS Sm80 tensor-core GEMM (kernels/cutlass_gemm.h: bf16
//! inputs, f32 accumulation, 3-stage cp.async mainloop, ldmatrix, mma.sync
//! m16n8k16), compiled by nvcc and run on the emulator with every check on.
//!
//! The kernel's Params struct comes from a host program built from
//! kernels/cutlass_gemm_params.cu, which fills it exactly as CUTLASS's own
//! `device::Gemm::initialize` does for the device addresses the test
//! allocated, and prints the bytes with the grid, block and shared memory.

mod common;
mod cutlass_support;

use common::{assert_gemm_close, assert_no_findings, gemm_f64, Device, Rng};
use cutlass_support::{cutlass_ptx, plan_launch};
use half::bf16;
use ptx_emu::{CheckOptions, FindingKind};

const KERNEL: &str = "cutlass_gemm_bf16_sm80";

/// Runs the CUTLASS GEMM on seeded bf16 inputs with the checks of `opts`,
/// asserts no finding, and compares with the f64 product of the same bf16 values.
fn check_cutlass_gemm(m: usize, n: usize, k: usize, seed: u64, opts: &CheckOptions) {
    let dev = Device::from_ptx(cutlass_ptx());
    let mut rng = Rng::new(seed);
    let a: Vec<bf16> = rng.uniform_vec(m * k, -1.0, 1.0).into_iter().map(bf16::from_f32).collect();
    let b: Vec<bf16> = rng.uniform_vec(k * n, -1.0, 1.0).into_iter().map(bf16::from_f32).collect();
    let (da, db, dd) = (dev.upload(&a), dev.upload(&b), dev.alloc_poisoned::<f32>(m * n));

    let plan = plan_launch(m, n, k, da, db, dd);
    let info = dev.kernel_info(KERNEL);
    assert_eq!(info.param_bytes as usize, plan.params.len(), "Params size: PTX vs host program");
    // CUTLASS's identity swizzle puts M tiles on x and N tiles on y.
    assert_eq!(plan.config.grid, [m.div_ceil(64) as u32, n.div_ceil(64) as u32, 1], "64x64 tiles");
    let params = dev.params(KERNEL).bytes(&plan.params).finish();
    let report = dev.launch_with(KERNEL, plan.config, &params, opts);
    assert_no_findings(&report);
    let counters = report.counters;

    let to_f64 = |v: &[bf16]| v.iter().map(|x| x.to_f64()).collect::<Vec<_>>();
    let (exact, magnitude) = gemm_f64(m, n, k, &to_f64(&a), &to_f64(&b));
    assert_gemm_close("CUTLASS D", &dev.download::<f32>(dd, m * n), &exact, &magnitude, k);
    let mma = counters.tensor_instructions.get("mma.m16n8k16.f32.bf16.bf16.f32").copied().unwrap_or(0);
    assert!(mma > 0, "no bf16 mma counted: {:?}", counters.tensor_instructions);
}

#[test]
fn cutlass_sm80_bf16_gemm_tile_aligned() {
    check_cutlass_gemm(128, 192, 96, 51, &CheckOptions::default());
}

#[test]
fn cutlass_sm80_bf16_gemm_with_m_n_k_tails() {
    // M, N and K not multiples of the 64x64x32 tile (N, K multiples of the
    // 8-element alignment CUTLASS requires of row-major bf16).
    let (m, n, k) = (100, 72, 88);
    // The K residue is loaded with zero-filling cp.async, but the mainloop
    // skips (`@p cp.async`) the chunks of rows past M and columns past N, so
    // its ldmatrix reads shared bytes never written; their products only
    // reach outputs the epilogue never stores. That is CUTLASS's design:
    // with initcheck extended to ldmatrix rows those reads are its only
    // reports, and they are there (the rows past the edge).
    let dev = Device::from_ptx(cutlass_ptx());
    let (da, db) = (dev.upload(&vec![bf16::ONE; m * k]), dev.upload(&vec![bf16::ONE; k * n]));
    let dd = dev.alloc_poisoned::<f32>(m * n);
    let plan = plan_launch(m, n, k, da, db, dd);
    let params = dev.params(KERNEL).bytes(&plan.params).finish();
    let strict = CheckOptions { ldmatrix_initcheck: true, ..CheckOptions::default() };
    let report = dev.launch_with(KERNEL, plan.config, &params, &strict);
    assert!(!report.findings.is_empty(), "the rows past M and N are read unwritten");
    for finding in &report.findings {
        assert_eq!(finding.kind, FindingKind::Uninitialized, "{finding}");
        assert!(finding.instruction.contains("ldmatrix"), "{finding}");
    }
    // By default those rows read as NaN (0xff bytes) instead of being a
    // finding: clean, and D still matches the reference everywhere, which
    // shows no product of an unwritten row reaches a stored output.
    check_cutlass_gemm(m, n, k, 52, &CheckOptions::default());
    // With initcheck off, every other check on: clean and right.
    let opts = CheckOptions { initcheck: false, ..CheckOptions::default() };
    check_cutlass_gemm(m, n, k, 52, &opts);
}

#[test]
fn cutlass_kernel_uses_the_ampere_mainloop_and_its_params_match_the_host_program() {
    let ptx = cutlass_ptx();
    for needed in [
        "cp.async.cg.shared.global",
        "cp.async.wait_group",
        "ldmatrix.sync.aligned",
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
    ] {
        assert!(ptx.contains(needed), "CUTLASS PTX lacks {needed}");
    }
    // `.param .align 8 .b8 cutlass_gemm_bf16_sm80_param_0[N]`: N must be the host program's byte count.
    let declared: usize = ptx
        .lines()
        .find_map(|l| l.trim().split(&format!("{KERNEL}_param_0[")).nth(1))
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse().ok())
        .expect("the entry's parameter declaration");
    let plan = plan_launch(128, 64, 32, 0x1_0000, 0x2_0000, 0x3_0000);
    assert_eq!(plan.params.len(), declared);
    assert_eq!(plan.config.grid, [2, 1, 1], "M = 128: two tiles on x; N = 64: one on y");
    assert_eq!(plan.config.block, [128, 1, 1], "4 warps of 32x32 in a 64x64 tile");
    // 3 stages of a 64x32 A tile and a 32x64 B tile, bf16.
    assert_eq!(plan.config.dynamic_shared_bytes, 3 * (64 * 32 + 32 * 64) * 2);
    // The device addresses appear in the struct (8-byte little-endian pointers).
    for addr in [0x1_0000u64, 0x2_0000, 0x3_0000] {
        assert!(plan.params.windows(8).any(|w| w == addr.to_le_bytes()), "{addr:#x} not in Params");
    }
}

/// The reference point for kernels built on the same tiles (fused-lora's
/// tests/forward_counters.rs and tests/backward_counters.rs): the CUTLASS
/// mainloop's steady state per mma.sync (warp instructions, global load
/// sectors, shared wavefronts), as the difference of two launches that
/// differ only in K (the extra K-steps all sit in the middle of the
/// pipeline).
#[test]
fn cutlass_steady_state_per_mma() {
    let dev = Device::from_ptx(cutlass_ptx());
    let (m, n) = (128, 128);
    let counters = |k: usize| {
        let (da, db) = (dev.upload(&vec![bf16::ONE; m * k]), dev.upload(&vec![bf16::ONE; k * n]));
        let dd = dev.alloc_poisoned::<f32>(m * n);
        let plan = plan_launch(m, n, k, da, db, dd);
        let params = dev.params(KERNEL).bytes(&plan.params).finish();
        let report = dev.launch_with(KERNEL, plan.config, &params, &CheckOptions::default());
        assert_no_findings(&report);
        report.counters
    };
    let (short, long) = (counters(64), counters(224));
    let mma = |c: &ptx_emu::Counters| c.tensor_instructions.values().sum::<u64>();
    let extra_mma = mma(&long) - mma(&short);
    // 4 tiles of 64x64, 5 more K-steps of 32, 64 mma per tile and step.
    assert_eq!(extra_mma, 4 * 5 * 64);
    let per = |a: u64, b: u64| (a - b) as f64 / extra_mma as f64;
    let warp = per(long.warp_instructions, short.warp_instructions);
    eprintln!(
        "CUTLASS steady state per mma: {warp:.2} warp instructions, {:.2} load sectors, {:.2} shared wavefronts",
        per(long.global_load_sectors, short.global_load_sectors),
        per(long.shared_wavefronts, short.shared_wavefronts)
    );
    // About 5 instructions around each mma at this 64x64 tile with 32x32
    // warp tiles (fused-lora's kernels on the same tiles are held to 5).
    assert!((4.0..6.0).contains(&warp), "{warp:.2} warp instructions per mma");
}

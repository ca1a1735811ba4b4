//! NVIDIA CUTLASS's Hopper bf16 GEMMs (kernels/cutlass_gemm_sm90.h: built by
//! CUTLASS 3.x's CollectiveBuilder for arch::Sm90, 128x128x64 tiles, a TMA
//! warp-specialized mainloop feeding wgmma.mma_async through an mbarrier
//! pipeline, f32 accumulation), compiled by nvcc for sm_90a and run on the
//! emulator with every check on, on problems with ragged M, N and K tails.
//!
//! The kernel's Params come from a host program built from
//! kernels/cutlass_gemm_sm90_params.cu, which fills them through the
//! kernel's own `to_underlying_arguments`, as CUTLASS's GemmUniversalAdapter
//! does; the TMA descriptors inside are made by the emulated driver's
//! cuTensorMapEncodeTiled (the program is linked against the emulator's
//! libcuda.so), and the kernel reads them from its __grid_constant__ parameter.
//!
//! Most tests launch through `ptx_emu::launch`; `driver::` launches both
//! kernels as a program does on a GPU, through the emulated driver's exports
//! on a device presenting compute capability 9.0 (`PTX_EMU_COMPUTE_CAPABILITY`,
//! whose 227 KB of opt-in shared memory per block these kernels need).

mod common;
mod cutlass_support;

use common::{assert_gemm_close, assert_no_findings, gemm_f64, libcuda_dir, Device, Rng};
use cutlass_support::{cutlass_sm90_ptx, plan_sm90_launch, Sm90Kernel};
use half::bf16;
use ptx_emu::{CheckOptions, FindingKind};

/// The persistent scheduler's SM count: small, so that the cooperative
/// kernel's CTAs each loop over several tiles.
const SM_COUNT: u32 = 2;

/// Runs `kernel` on seeded bf16 inputs, A [m,k] and B [n,k] row-major, with
/// every check on; asserts no finding, the launch shape, that wgmma ran, and
/// that D [m,n] (NaN-poisoned before) matches the f64 product of the same
/// bf16 values.
fn check_sm90_gemm(kernel: Sm90Kernel, m: usize, n: usize, k: usize, seed: u64) {
    let dev = Device::from_ptx(cutlass_sm90_ptx());
    let mut rng = Rng::new(seed);
    let a: Vec<bf16> = rng.uniform_vec(m * k, -1.0, 1.0).into_iter().map(bf16::from_f32).collect();
    let b: Vec<bf16> = rng.uniform_vec(n * k, -1.0, 1.0).into_iter().map(bf16::from_f32).collect();
    let (da, db, dd) = (dev.upload(&a), dev.upload(&b), dev.alloc_poisoned::<f32>(m * n));

    let plan = plan_sm90_launch(m, n, k, (da, db, dd), kernel, SM_COUNT, &libcuda_dir());
    let name = kernel.kernel();
    assert_eq!(dev.kernel_info(name).param_bytes as usize, plan.params.len(), "Params size: PTX vs host program");
    assert_eq!(plan.cluster, [1, 1, 1]);
    let tiles = (m.div_ceil(128) * n.div_ceil(128)) as u32;
    match kernel {
        Sm90Kernel::Cooperative => {
            assert_eq!(plan.config.block, [384, 1, 1], "a producer and two consumer warpgroups");
            let ctas: u32 = plan.config.grid.iter().product();
            assert_eq!(ctas, tiles.min(SM_COUNT), "persistent grid: {:?}", plan.config.grid);
        }
        Sm90Kernel::WarpSpecialized => {
            assert_eq!(plan.config.block, [256, 1, 1], "a producer and one consumer warpgroup");
            assert_eq!(plan.config.grid, [m.div_ceil(128) as u32, n.div_ceil(128) as u32, 1], "one CTA per tile");
        }
    }
    let params = dev.params(name).bytes(&plan.params).finish();
    let report = dev.launch_with(name, plan.config, &params, &CheckOptions::default());
    assert_no_findings(&report);

    let to_f64 = |v: &[bf16]| v.iter().map(|x| x.to_f64()).collect::<Vec<_>>();
    // The reference takes B as [k, n].
    let b_kn: Vec<f64> = (0..k * n).map(|i| b[(i % n) * k + i / n].to_f64()).collect();
    let (exact, magnitude) = gemm_f64(m, n, k, &to_f64(&a), &b_kn);
    assert_gemm_close(&format!("CUTLASS Sm90 {kernel:?} D"), &dev.download::<f32>(dd, m * n), &exact, &magnitude, k);

    let c = &report.counters;
    eprintln!(
        "CUTLASS Sm90 {kernel:?} {m}x{n}x{k}: grid {:?}, {} warp instructions, {} bulk copies of {} bytes, {:?}",
        plan.config.grid, c.warp_instructions, c.bulk_copies, c.bulk_bytes, c.tensor_instructions
    );
    let (tiles, k_blocks) = (u64::from(tiles), k.div_ceil(64) as u64);
    // Each consumer warpgroup issues one m64n128k16 per 16 of K per 64 rows
    // of the 128-row tile, counted per warp: 4 warps x 2 x 4 per 64 of K.
    let wgmma: u64 = c.tensor_instructions.iter().filter(|(op, _)| op.contains("wgmma")).map(|(_, n)| n).sum();
    assert_eq!(wgmma, tiles * k_blocks * 4 * 2 * 4, "wgmma counted: {:?}", c.tensor_instructions);
    // The mainloop's TMA loads: one 128x64 bf16 box of A and one of B per
    // tile and 64 of K, whole boxes even at the edges (the part past the
    // tensor zero-filled).
    let (load_copies, box_bytes) = (tiles * k_blocks * 2, 128 * 64 * 2);
    let (store_copies, store_bytes) = match kernel {
        // The TMA epilogue stores each tile as four 128x32 f32 subtiles, each
        // issued by all 32 lanes of warp 0 (CUTLASS predicates the store on
        // the warp, `issue_tma_store`; each lane's cp.async.bulk is a copy).
        Sm90Kernel::Cooperative => (tiles * 4 * 32, tiles * 4 * 32 * 128 * 32 * 4),
        // The default epilogue stores from registers.
        Sm90Kernel::WarpSpecialized => (0, 0),
    };
    assert_eq!(c.bulk_copies, load_copies + store_copies, "bulk copies");
    assert_eq!(c.bulk_bytes, load_copies * box_bytes + store_bytes, "bulk bytes");
}

#[test]
fn cutlass_sm90_cooperative_tile_aligned() {
    check_sm90_gemm(Sm90Kernel::Cooperative, 256, 128, 128, 91);
}

#[test]
fn cutlass_sm90_cooperative_with_m_n_k_tails() {
    // M, N, K not multiples of the 128x128x64 tile (K a multiple of the
    // 8 bf16 = 16 bytes TMA needs of a row stride, N of 4 f32): the TMA
    // loads fill the boxes past the edge with zeros, the TMA epilogue's
    // stores clip them. 4 tiles on 2 persistent CTAs.
    check_sm90_gemm(Sm90Kernel::Cooperative, 200, 136, 200, 92);
}

#[test]
fn cutlass_sm90_warpspecialized_with_m_n_k_tails() {
    // The default epilogue's predicated stores; a problem smaller than one
    // tile in M and N, and a K tail.
    check_sm90_gemm(Sm90Kernel::WarpSpecialized, 72, 44, 88, 93);
    check_sm90_gemm(Sm90Kernel::WarpSpecialized, 136, 200, 72, 94);
}

/// The checks see into these kernels: an A buffer shorter than the Params
/// say is read past its end by a TMA load, and a launch with less dynamic
/// shared memory than the kernel's SharedStorage puts its mbarriers outside
/// shared memory. Each is exactly one finding, at the instruction at fault.
#[test]
fn cutlass_sm90_checks_catch_a_short_operand_and_short_shared_memory() {
    let (m, n, k) = (72, 44, 88);
    let kernel = Sm90Kernel::WarpSpecialized;
    let name = kernel.kernel();
    let dev = Device::from_ptx(cutlass_sm90_ptx());
    let (db, dd) = (dev.upload(&vec![bf16::ONE; n * k]), dev.alloc_poisoned::<f32>(m * n));
    let launch = |da: u64, shared_short_by: u32| {
        let plan = plan_sm90_launch(m, n, k, (da, db, dd), kernel, SM_COUNT, &libcuda_dir());
        let params = dev.params(name).bytes(&plan.params).finish();
        let mut config = plan.config;
        config.dynamic_shared_bytes -= shared_short_by;
        let report = dev.launch_with(name, config, &params, &CheckOptions::default());
        assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
        report.findings[0].clone()
    };

    // A holds 40 of the 72 rows; allocated last, so nothing lies past it.
    let short_a = dev.upload(&vec![bf16::ONE; 40 * k]);
    let finding = launch(short_a, 0);
    assert_eq!(finding.kind, FindingKind::OutOfBounds, "{finding}");
    assert!(finding.instruction.starts_with("cp.async.bulk.tensor"), "{finding}");

    let full_a = dev.upload(&vec![bf16::ONE; m * k]);
    let finding = launch(full_a, 1024);
    assert_eq!(finding.kind, FindingKind::OutOfBounds, "{finding}");
    assert!(finding.instruction.starts_with("mbarrier.init"), "{finding}");
}

#[test]
fn cutlass_sm90_kernels_use_tma_mbarrier_and_wgmma() {
    let ptx = cutlass_sm90_ptx();
    assert!(ptx.contains(".target sm_90a"), "PTX for the architecture-specific target");
    for needed in [
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16",
        "wgmma.fence.sync.aligned",
        "wgmma.commit_group.sync.aligned",
        "wgmma.wait_group.sync.aligned",
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes",
        "cp.async.bulk.tensor.3d.global.shared::cta.bulk_group",
        "mbarrier.try_wait.parity.shared::cta.b64",
        "mbarrier.arrive.expect_tx.shared::cta.b64",
        "prefetch.tensormap",
        "fence.proxy.async.shared::cta",
        "elect.sync",
        "setmaxnreg.inc.sync.aligned.u32",
    ] {
        assert!(ptx.contains(needed), "CUTLASS Sm90 PTX lacks {needed}");
    }
    // The Params are one __grid_constant__ parameter whose address the kernel
    // takes (the TMA descriptors are read in place).
    for kernel in [Sm90Kernel::Cooperative, Sm90Kernel::WarpSpecialized] {
        let name = kernel.kernel();
        assert!(ptx.contains(&format!(".param .align 128 .b8 {name}_param_0[")), "{name}'s Params declaration");
        assert!(ptx.contains(&format!(", {name}_param_0;")), "{name} takes its parameter's address");
    }
}

// ---------------------------------------------------------------- through the driver

/// The same kernels launched as a program launches them on a GPU, through
/// the emulated driver's exports on a device presenting compute capability
/// 9.0: cuModuleLoadData of the sm_90a PTX, cuFuncSetAttribute for the
/// dynamic shared memory past sm_80's 163 KB, cuLaunchKernelEx with a
/// 1x1x1 cluster and the Params bytes as the single `__grid_constant__`
/// parameter, D copied back and checked against the f64 reference.
mod driver {
    use super::*;
    use cuda::context::{
        cuCtxSetCurrent, cuCtxSynchronize, cuDevicePrimaryCtxRelease_v2, cuDevicePrimaryCtxRetain, cuInit,
    };
    use cuda::device::cuDeviceGetAttribute;
    use cuda::launch_ex::{cuLaunchKernelEx, CUlaunchAttribute, CUlaunchConfig};
    use cuda::memory::{cuMemAlloc_v2, cuMemFree_v2, cuMemcpyDtoH_v2, cuMemcpyHtoD_v2};
    use cuda::module::{cuFuncGetAttribute, cuFuncSetAttribute, cuModuleGetFunction, cuModuleLoadData, cuModuleUnload};
    use cuda::result::*;
    use std::ffi::{c_void, CString};
    use std::ptr::null_mut;

    const MAX_DYNAMIC_SHARED_SIZE_BYTES: i32 = 8;
    const MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: i32 = 97;
    const LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION: u32 = 4;

    fn ok(code: CUresult) {
        assert_eq!(code, CUDA_SUCCESS);
    }

    fn upload<T>(data: &[T]) -> u64 {
        let bytes = std::mem::size_of_val(data);
        let mut address = 0;
        unsafe {
            ok(cuMemAlloc_v2(&mut address, bytes));
            ok(cuMemcpyHtoD_v2(address, data.as_ptr().cast(), bytes));
        }
        address
    }

    /// One GEMM of `kernel` on seeded inputs through the driver; asserts D.
    fn check_through_driver(
        module: cuda::module::CUmodule,
        kernel: Sm90Kernel,
        (m, n, k): (usize, usize, usize),
        seed: u64,
    ) {
        let name = kernel.kernel();
        let mut rng = Rng::new(seed);
        let a: Vec<bf16> = rng.uniform_vec(m * k, -1.0, 1.0).into_iter().map(bf16::from_f32).collect();
        let b: Vec<bf16> = rng.uniform_vec(n * k, -1.0, 1.0).into_iter().map(bf16::from_f32).collect();
        let (da, db, dd) = (upload(&a), upload(&b), upload(&vec![f32::NAN; m * n]));
        let plan = plan_sm90_launch(m, n, k, (da, db, dd), kernel, SM_COUNT, &libcuda_dir());
        assert_eq!(plan.cluster, [1, 1, 1]);
        assert!(plan.config.dynamic_shared_bytes > 163 * 1024, "{name} needs more than sm_80 gives");
        let mut d = vec![0f32; m * n];
        unsafe {
            let mut function = null_mut();
            let c_name = CString::new(name).unwrap();
            ok(cuModuleGetFunction(&mut function, module, c_name.as_ptr()));
            let shared = plan.config.dynamic_shared_bytes as i32;
            ok(cuFuncSetAttribute(function, MAX_DYNAMIC_SHARED_SIZE_BYTES, shared));
            let mut limit = -1;
            ok(cuFuncGetAttribute(&mut limit, MAX_DYNAMIC_SHARED_SIZE_BYTES, function));
            assert_eq!(limit, shared);
            let mut attrs = [CUlaunchAttribute {
                id: LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
                pad: [0; 4],
                value: [1 | 1 << 32, 1, 0, 0, 0, 0, 0, 0],
            }];
            let config = CUlaunchConfig {
                grid_dim: plan.config.grid,
                block_dim: plan.config.block,
                shared_mem_bytes: plan.config.dynamic_shared_bytes,
                stream: null_mut(),
                attrs: attrs.as_mut_ptr(),
                num_attrs: 1,
            };
            let mut params: [*mut c_void; 1] = [plan.params.as_ptr() as *mut c_void];
            // A finding of any check fails the launch (or the synchronize) with 700, 716 or 719.
            ok(cuLaunchKernelEx(&config, function, params.as_mut_ptr(), null_mut()));
            ok(cuCtxSynchronize());
            ok(cuMemcpyDtoH_v2(d.as_mut_ptr().cast(), dd, m * n * 4));
            for p in [da, db, dd] {
                ok(cuMemFree_v2(p));
            }
        }
        let to_f64 = |v: &[bf16]| v.iter().map(|x| x.to_f64()).collect::<Vec<_>>();
        let b_kn: Vec<f64> = (0..k * n).map(|i| b[(i % n) * k + i / n].to_f64()).collect();
        let (exact, magnitude) = gemm_f64(m, n, k, &to_f64(&a), &b_kn);
        assert_gemm_close(&format!("CUTLASS Sm90 {kernel:?} D through the driver"), &d, &exact, &magnitude, k);
    }

    /// Both kernels, ragged in M, N and K. The capability is set in this
    /// process's environment before the driver's first use here (it is read
    /// at every query; no other test of this binary uses the driver in
    /// process), and every check is on.
    #[test]
    fn cutlass_sm90_launched_through_the_driver_on_a_9_0_device() {
        std::env::set_var("PTX_EMU_COMPUTE_CAPABILITY", "90");
        for check in ["PTX_EMU_MEMCHECK", "PTX_EMU_RACECHECK", "PTX_EMU_INITCHECK", "PTX_EMU_SYNCCHECK"] {
            std::env::remove_var(check);
        }
        std::env::remove_var("PTX_EMU_SAMPLE_CTAS");
        let ptx = CString::new(cutlass_sm90_ptx()).unwrap();
        unsafe {
            let mut context = null_mut();
            ok(cuInit(0));
            ok(cuDevicePrimaryCtxRetain(&mut context, 0));
            ok(cuCtxSetCurrent(context));
            let mut optin = -1;
            ok(cuDeviceGetAttribute(&mut optin, MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, 0));
            assert_eq!(optin, 227 * 1024, "sm_90's opt-in shared memory per block");
            let mut module = null_mut();
            ok(cuModuleLoadData(&mut module, ptx.as_ptr().cast()));
            check_through_driver(module, Sm90Kernel::Cooperative, (200, 136, 200), 95);
            check_through_driver(module, Sm90Kernel::WarpSpecialized, (72, 44, 88), 96);
            ok(cuModuleUnload(module));
            ok(cuDevicePrimaryCtxRelease_v2(0));
        }
    }
}

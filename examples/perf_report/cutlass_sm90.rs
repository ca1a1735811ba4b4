//! NVIDIA's CUTLASS Sm90 bf16 GEMM as the Hopper baseline: the kernel the
//! emulator's own tests run (`emu/core/tests/kernels/cutlass_gemm_sm90.cu`,
//! `KernelTmaWarpSpecializedCooperative`, 128×128×64, cluster 1×1×1, TMA
//! epilogue, f32 D), compiled for `sm_90a` and launched through the driver
//! API on the emulator presenting compute capability 9.0. Its `Params` (TMA
//! descriptors included) come from the host program
//! `cutlass_gemm_sm90_params.cu`, linked against the emulator's driver so
//! that its `cuTensorMapEncodeTiled` encodes them.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use crate::cutlass_kernel::{CutlassKernel, Recipe};

/// The configuration, as the params program names it.
const CONFIG: &str = "warpspecialized";

/// The compiled kernel and the program that plans its launches.
pub struct CutlassSm90(CutlassKernel);

impl CutlassSm90 {
    /// Compiles the kernel and its params program into `cache` (once; later
    /// calls reuse them while the sources are older) and loads the kernel
    /// into `ctx`, which must be on a device presenting compute capability
    /// 9.0 (the PTX is `sm_90a`). `driver_dir` holds the emulator's `libcuda.so`.
    pub fn build(ctx: &Arc<CudaContext>, cache: &Path, driver_dir: &Path) -> Result<Self, Box<dyn Error>> {
        let dir = driver_dir.display();
        let recipe = Recipe {
            stem: "cutlass_gemm_sm90",
            kernel: "cutlass_gemm_bf16_sm90_warpspecialized",
            ptx_arch: "sm_90a",
            planner_flags: &["-arch=sm_90a", "-cudart", "static", "-DCUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL=1"],
            // The emulator's driver, bound by RPATH so that the program's
            // tensor maps are that driver's encoding.
            planner_link: vec![
                format!("-L{dir}"),
                "-lcuda".to_string(),
                format!("-Xlinker=--disable-new-dtags,-rpath={dir}"),
            ],
        };
        Ok(CutlassSm90(CutlassKernel::build(ctx, cache, &recipe)?))
    }

    /// `D[M, N] (f32) = A[M, K] · B[N, K]ᵀ` (bf16, zeros), one launch sized
    /// for `sms` multiprocessors (the persistent scheduler's grid).
    pub fn gemm(&self, stream: &Arc<CudaStream>, shape: (usize, usize, usize), sms: u32) -> Result<(), Box<dyn Error>> {
        self.0.gemm(stream, shape, &[CONFIG.to_string(), sms.to_string()])
    }
}

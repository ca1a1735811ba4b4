//! NVIDIA's CUTLASS Sm80 bf16 GEMM as the baseline: the kernel the
//! emulator's own tests run (`emu/core/tests/kernels/cutlass_gemm.cu`), in its
//! 128×128×32 configuration (64×64 warp tiles, 3 stages), compiled
//! by the toolchain's nvcc and launched through the same driver API as the
//! crate's kernels. Its `Params` struct comes from the host program
//! `cutlass_gemm_params.cu`, which fills it as CUTLASS's `device::Gemm` does.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use crate::cutlass_kernel::{CutlassKernel, Recipe};

/// The configuration, as the planner names it.
const TILE: &str = "128x128";

/// The compiled kernel and the program that plans its launches.
pub struct Cutlass(CutlassKernel);

impl Cutlass {
    /// Compiles the kernel and its planner into `cache` (once; later calls
    /// reuse them while the sources are older) and loads the kernel into `ctx`.
    pub fn build(ctx: &Arc<CudaContext>, cache: &Path) -> Result<Self, Box<dyn Error>> {
        let recipe = Recipe {
            stem: "cutlass_gemm",
            kernel: "cutlass_gemm_bf16_sm80_128x128",
            ptx_arch: "compute_80",
            planner_flags: &["-arch=sm_80", "-cudart", "static"],
            planner_link: Vec::new(),
        };
        Ok(Cutlass(CutlassKernel::build(ctx, cache, &recipe)?))
    }

    /// `D[M, N] (f32) = A[M, K] · B[K, N]` (bf16, zeros), one launch.
    pub fn gemm(&self, stream: &Arc<CudaStream>, shape: (usize, usize, usize)) -> Result<(), Box<dyn Error>> {
        self.0.gemm(stream, shape, &[TILE.to_string()])
    }
}

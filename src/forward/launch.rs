//! The one kernel behind every forward operation, and how a launch is sized.

use std::sync::Arc;

use cudarc::driver::{CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::kernels::{LoraKernels, FORWARD};
use crate::params::{LoraGemmParams, LORA_FWD_THREADS, LORA_FWD_TILE_M, LORA_FWD_TILE_N};

// SAFETY: a plain `#[repr(C)]` struct of integers and floats, generated from
// the header the kernel includes.
unsafe impl DeviceRepr for LoraGemmParams {}

/// The most CTAs a grid's y dimension may hold.
const MAX_GRID_Y: u64 = 65_535;

/// Checks that an `[m, n]` output fits one grid.
pub(super) fn check_grid(m: usize, n: usize) -> Result<()> {
    if (m as u64).div_ceil(LORA_FWD_TILE_M as u64) > MAX_GRID_Y {
        return Err(LoraError::InvalidArgument { what: "m", value: m.to_string(), reason: "more rows than one launch covers (65535 tiles of 64)" });
    }
    let _ = n;
    Ok(())
}

impl LoraKernels {
    /// Launches `lora_forward_gemm_<T>` over the `[params.m, params.n]` output.
    ///
    /// # Safety
    /// Every pointer in `params` must come from a live buffer of this
    /// context that holds the elements the parameter comments in
    /// `cuda/forward_params.h` describe for `params.m`, `n`, `k`,
    /// `num_adapters`, and whose guards outlive the launch's stream work; the
    /// output must not overlap any input other than `y_in`; `ranks` (when set)
    /// must hold values in `1..=` the stride the adapter operands were sized for.
    pub(super) unsafe fn launch_gemm<T: LoraDType>(&self, stream: &Arc<CudaStream>, params: &LoraGemmParams) -> Result<()> {
        let grid_x = (params.n as u32).div_ceil(LORA_FWD_TILE_N);
        let grid_y = (params.m as u32).div_ceil(LORA_FWD_TILE_M);
        let function = self.function(FORWARD, &format!("lora_forward_gemm_{}", T::DTYPE.kernel_suffix()))?;
        let config = LaunchConfig { grid_dim: (grid_x, grid_y, 1), block_dim: (LORA_FWD_THREADS, 1, 1), shared_mem_bytes: 0 };
        let mut launch = stream.launch_builder(&function);
        launch.arg(params);
        // SAFETY: the caller's contract (above) is what the kernel needs: it
        // reads and writes only inside the extents the parameters describe.
        unsafe { launch.launch(config) }?;
        Ok(())
    }
}

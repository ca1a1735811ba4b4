//! The Hopper path of the backward's dX: `lora_backward_dx_<T>_sm90a`
//! (`cuda/backward_dx_sm90a.cu`: the fused forward's warp-specialised wgmma
//! GEMM with dX's operands, W0 and A read MN-major), chosen on compute
//! capability 9.0 devices in place of the mma.sync dX for the launches it
//! covers (see [`DxOperands::covers`] and [`LoraKernels::dx_takes_hopper`]).
//! `FUSED_LORA_HOPPER` switches it with the forward's (`crate::HOPPER_ENV`);
//! the tensor maps and the launch are the forward's
//! (`crate::forward::hopper`).

use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::CudaStream;

use crate::dtype::{DType, LoraDType};
use crate::error::Result;
use crate::forward::hopper::{encode_tensor_map, TMA_ALIGNMENT};
use crate::forward::launch::k_splits;
use crate::kernels::{LoraKernels, BACKWARD_DX_SM90A};
use crate::params::{LoraHopperGemmParams, LORA_HOPPER_MN_BOX, LORA_HOPPER_TILE_K, LORA_HOPPER_TILE_M};

/// The operands of one single-adapter dX launch, as the Hopper kernel reads
/// them: `dX = round(s·G·A + dY·W0 (+ dX))`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DxOperands {
    /// dX `[m, k]`.
    pub dx: u64,
    /// dY `[m, n]`.
    pub dy: u64,
    /// W0 `[n, k]`.
    pub w: u64,
    /// G `[m, rank]`, row stride `rank`.
    pub g: u64,
    /// A `[rank, k]`.
    pub a: u64,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub rank: usize,
    pub scale: f32,
    /// Whether dX's old value is added (`GradMode::Accumulate`).
    pub accumulate: bool,
}

impl DxOperands {
    /// Whether the Hopper kernel can read this launch: f16/bf16, every
    /// operand's base and row stride (N for dY, K for W0 and A, the rank for
    /// G) a multiple of 16 bytes (TMA's rule). Other launches keep the
    /// mma.sync dX, which reads any alignment.
    pub fn covers(&self, dtype: DType) -> bool {
        let elem = dtype.size_bytes();
        let aligned = |address: u64| address % TMA_ALIGNMENT == 0;
        let aligned_rows = |len: usize| (len * elem) as u64 % TMA_ALIGNMENT == 0;
        elem == 2
            && [self.dy, self.w, self.g, self.a].into_iter().all(aligned)
            && [self.n, self.k, self.rank].into_iter().all(aligned_rows)
    }
}

impl LoraKernels {
    /// Whether the dX launch on `ops` takes the Hopper kernel: a 9.0 device
    /// with `FUSED_LORA_HOPPER` allowing it ([`Self::hopper_enabled`]), an
    /// operand set the kernel covers, and enough output tiles that the
    /// mma.sync dX would not split its reduction (`k_splits` over N plus the
    /// rank, as [`LoraKernels::row_gemm`] decides; small grids keep the split
    /// launches, which occupy every SM). Deterministic for a shape, device
    /// and environment.
    pub(crate) fn dx_takes_hopper(&self, ops: &DxOperands, dtype: DType) -> Result<bool> {
        if !ops.covers(dtype) || !self.hopper_enabled()? {
            return Ok(false);
        }
        let sms =
            self.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        Ok(k_splits(sms, ops.m, ops.k, ops.n + ops.rank) == 1)
    }

    /// Launches `lora_backward_dx_<T>_sm90a` on `ops`.
    ///
    /// # Safety
    /// Every address in `ops` must be a live buffer of this context holding
    /// the elements its comment describes for `m`, `n`, `k` and `rank`,
    /// ordered before this launch on `stream` (G written by an earlier
    /// launch), with guards that outlive it; dX overlaps no input;
    /// `ops.covers(T)`.
    pub(crate) unsafe fn launch_hopper_dx<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        ops: &DxOperands,
    ) -> Result<()> {
        let dtype = T::DTYPE;
        // W0 and A are read MN-major: boxes of LORA_HOPPER_MN_BOX of dX's
        // columns by LORA_HOPPER_TILE_K reduction rows.
        debug_assert_eq!(LORA_HOPPER_MN_BOX, LORA_HOPPER_TILE_K, "encode_tensor_map's box is TILE_K columns wide");
        let params = LoraHopperGemmParams {
            x_map: encode_tensor_map(dtype, ops.dy, ops.m, ops.n, ops.n, LORA_HOPPER_TILE_M)?,
            w_map: encode_tensor_map(dtype, ops.w, ops.n, ops.k, ops.k, LORA_HOPPER_TILE_K)?,
            p_map: encode_tensor_map(dtype, ops.g, ops.m, ops.rank, ops.rank, LORA_HOPPER_TILE_M)?,
            b_map: encode_tensor_map(dtype, ops.a, ops.rank, ops.k, ops.k, LORA_HOPPER_TILE_K)?,
            out: ops.dx,
            y_in: if ops.accumulate { ops.dx } else { 0 },
            bias: 0,
            // The GEMM's output is [m, k] and its base reduction N.
            m: ops.m as i32,
            n: ops.k as i32,
            k: ops.n as i32,
            ad_k: ops.rank as i32,
            scale: ops.scale,
        };
        let kernel = format!("lora_backward_dx_{}_sm90a", dtype.kernel_suffix());
        // SAFETY: the caller's contract; the kernel reads the operands only
        // through the tensor maps just encoded over their extents, reads and
        // writes dX only inside [m, k] (each element read before the same
        // thread writes it).
        unsafe { self.launch_hopper(stream, BACKWARD_DX_SM90A, &kernel, &params) }
    }
}

#[cfg(test)]
mod tests {
    use super::DxOperands;
    use crate::dtype::DType;

    fn ops(n: usize, k: usize, rank: usize, g: u64) -> DxOperands {
        DxOperands { dx: 0, dy: 256, w: 512, g, a: 1024, m: 100, n, k, rank, scale: 1.0, accumulate: false }
    }

    #[test]
    fn covers_aligned_half_launches_only() {
        assert!(ops(64, 64, 16, 2048).covers(DType::Bf16));
        assert!(ops(8, 8, 8, 2048).covers(DType::F16));
        assert!(!ops(64, 64, 16, 2048).covers(DType::F32), "f32 has no wgmma path");
        assert!(!ops(64, 64, 12, 2048).covers(DType::Bf16), "a rank of 12: G's 24-byte rows");
        assert!(!ops(60, 64, 16, 2048).covers(DType::Bf16), "N of 60: dY's 120-byte rows");
        assert!(!ops(64, 60, 16, 2048).covers(DType::Bf16), "K of 60: W0's and A's 120-byte rows");
        assert!(!ops(64, 64, 16, 2050).covers(DType::Bf16), "G's base off 16 bytes");
    }
}

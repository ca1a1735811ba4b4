//! The Hopper path of the fused forward: `lora_forward_gemm_<T>_sm90a`
//! (`cuda/forward_sm90a.cu`: TMA loads into a shared-memory ring, a producer
//! warpgroup and two wgmma consumer warpgroups), chosen on compute
//! capability 9.0 devices in place of the mma.sync fused GEMM, for the
//! launches it covers (see [`HopperOperands::covers`]). The pieces every
//! Hopper launch shares (the environment switch, the device check, the
//! tensor maps, the launch with its opt-in shared memory) live here too; the
//! backward's dX (`crate::backward::hopper`) uses them.
//!
//! `FUSED_LORA_HOPPER=0` keeps a 9.0 device on the mma.sync kernels (for
//! A/B comparisons), `FUSED_LORA_HOPPER=1` lets it take this path; unset,
//! [`HOPPER_BY_DEFAULT`] decides.

use std::sync::Arc;

use cudarc::driver::sys::{
    self, CUdevice_attribute, CUfunction_attribute, CUtensorMap, CUtensorMapDataType, CUtensorMapFloatOOBfill,
    CUtensorMapInterleave, CUtensorMapL2promotion, CUtensorMapSwizzle,
};
use cudarc::driver::{CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::dtype::{DType, LoraDType};
use crate::error::Result;
use crate::forward::launch::k_splits;
use crate::kernels::{KernelFamily, LoraKernels, FORWARD_SM90A};
use crate::params::{
    LoraHopperGemmParams, LoraTensorMap, LORA_HOPPER_SHARED_BYTES, LORA_HOPPER_THREADS, LORA_HOPPER_TILE_K,
    LORA_HOPPER_TILE_M, LORA_HOPPER_TILE_N,
};

// SAFETY: a `#[repr(C)]` struct of integers, floats and opaque tensor-map
// bytes, generated from the header the kernel includes.
unsafe impl DeviceRepr for LoraHopperGemmParams {}

/// The environment variable that keeps a compute capability 9.0 device on
/// the mma.sync kernels when set to `0`.
pub const HOPPER_ENV: &str = "FUSED_LORA_HOPPER";

/// TMA reads rows whose byte stride and base are multiples of 16.
pub(crate) const TMA_ALIGNMENT: u64 = 16;

/// The operands of one fused forward launch, as the Hopper kernel reads them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HopperOperands {
    pub out: u64,
    pub bias: u64,
    pub x: u64,
    pub w: u64,
    /// P `[m, rank]`, row stride `rank`.
    pub p: u64,
    /// B `[n, rank]`, row stride `rank`.
    pub b: u64,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub rank: usize,
    pub scale: f32,
}

impl HopperOperands {
    /// Whether the Hopper kernel can run this launch: f16/bf16, every
    /// operand's base and row stride (K, the rank) a multiple of 16 bytes
    /// (TMA's rule). Other launches keep the mma.sync kernel, which reads
    /// any alignment.
    pub fn covers(&self, dtype: DType) -> bool {
        let elem = dtype.size_bytes();
        let aligned = |address: u64| address % TMA_ALIGNMENT == 0;
        elem == 2
            && [self.x, self.w, self.p, self.b].into_iter().all(aligned)
            && (self.k * elem) as u64 % TMA_ALIGNMENT == 0
            && (self.rank * elem) as u64 % TMA_ALIGNMENT == 0
    }
}

/// Whether a 9.0 device takes the Hopper kernel when `FUSED_LORA_HOPPER` is
/// unset: yes (`tests/forward_hopper.rs` runs it under the emulator's sm_90a
/// checks).
pub const HOPPER_BY_DEFAULT: bool = true;

/// Whether `FUSED_LORA_HOPPER` (`0` off, `1` on, unset: [`HOPPER_BY_DEFAULT`])
/// lets a 9.0 device take the Hopper kernels.
fn hopper_allowed_by_env() -> bool {
    match std::env::var(HOPPER_ENV) {
        Ok(value) => value.trim() != "0",
        Err(_) => HOPPER_BY_DEFAULT,
    }
}

/// A 2-D row-major tensor `[rows, cols]` of 16-bit elements with row
/// stride `ld`, read by TMA in boxes of `LORA_HOPPER_TILE_K` (64) columns by
/// `box_rows` rows with the 128-byte swizzle (64 columns are one swizzle
/// span, whether they are the reduction, K-major, or the output's columns,
/// MN-major); reads past the tensor give zeros.
pub(crate) fn encode_tensor_map(
    dtype: DType,
    address: u64,
    rows: usize,
    cols: usize,
    ld: usize,
    box_rows: u32,
) -> Result<LoraTensorMap> {
    let data_type = match dtype {
        DType::Bf16 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        _ => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
    };
    let dims = [cols as u64, rows as u64];
    let strides = [(ld * dtype.size_bytes()) as u64];
    let boxes = [LORA_HOPPER_TILE_K, box_rows];
    let element_strides = [1u32, 1];
    let mut map = std::mem::MaybeUninit::<CUtensorMap>::zeroed();
    // SAFETY: every pointer is to a local array of the length the rank (2)
    // asks for; the driver writes the 128-byte map and reads nothing else.
    unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            data_type,
            2,
            address as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            element_strides.as_ptr(),
            CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
        .result()?;
    }
    // SAFETY: written in full by the successful call above.
    let map = unsafe { map.assume_init() };
    Ok(LoraTensorMap { opaque: map.opaque })
}

impl LoraKernels {
    /// Whether the Hopper kernels (fused forward, dX) may run on this context's
    /// device: compute capability exactly 9.0 (the sm_90a PTX runs there
    /// only) and `FUSED_LORA_HOPPER` allowing it.
    pub(crate) fn hopper_enabled(&self) -> Result<bool> {
        if !hopper_allowed_by_env() {
            return Ok(false);
        }
        self.compute_capability_90()
    }

    /// Whether this context's device is of compute capability exactly 9.0
    /// (where the `forward_sm90a` module loads), whatever `FUSED_LORA_HOPPER` says.
    pub(crate) fn compute_capability_90(&self) -> Result<bool> {
        let ctx = self.context();
        let major = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        Ok((major, minor) == (9, 0))
    }

    /// Whether the fused launch on `ops` takes the Hopper kernel: a 9.0
    /// device ([`Self::hopper_enabled`]), an operand set the kernel covers,
    /// and enough output tiles that the mma.sync path would not split K
    /// (small grids keep its split-K launches, which occupy every SM).
    /// Deterministic for a shape, device and environment.
    pub(crate) fn takes_hopper_path(&self, ops: &HopperOperands, dtype: DType) -> Result<bool> {
        if !ops.covers(dtype) || !self.hopper_enabled()? {
            return Ok(false);
        }
        let sms =
            self.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        Ok(k_splits(sms, ops.m, ops.n, ops.k) == 1)
    }

    /// Launches `kernel` of `family`, a `hopper_gemm.cuh` GEMM, on `params`:
    /// one CTA per `LORA_HOPPER_TILE_M × LORA_HOPPER_TILE_N` tile of the
    /// `[params.m, params.n]` output, with the shared memory it opts in to.
    ///
    /// # Safety
    /// The tensor maps in `params` must describe live buffers of this
    /// context, ordered before this launch on `stream`, and `params.out`
    /// (and `y_in`, `bias` when set) the `[m, n]` (`[n]`) buffers the
    /// kernel writes and reads; `out` overlaps no input but `y_in`.
    pub(crate) unsafe fn launch_hopper(
        &self,
        stream: &Arc<CudaStream>,
        family: KernelFamily,
        kernel: &str,
        params: &LoraHopperGemmParams,
    ) -> Result<()> {
        let gemm = self.function(family, kernel)?;
        // Above the 48 KB a launch gets by default: opt in.
        gemm.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            LORA_HOPPER_SHARED_BYTES as i32,
        )?;
        let grid = ((params.n as u32).div_ceil(LORA_HOPPER_TILE_N), (params.m as u32).div_ceil(LORA_HOPPER_TILE_M), 1);
        let config = LaunchConfig {
            grid_dim: grid,
            block_dim: (LORA_HOPPER_THREADS, 1, 1),
            shared_mem_bytes: LORA_HOPPER_SHARED_BYTES,
        };
        let mut launch = stream.launch_builder(&gemm);
        launch.arg(params);
        // SAFETY: the caller's contract.
        unsafe { launch.launch(config) }?;
        Ok(())
    }

    /// Launches `lora_forward_gemm_<T>_sm90a` on `ops`:
    /// `out = round(s·P·Bᵀ + X·W0ᵀ + bias)`.
    ///
    /// # Safety
    /// Every address in `ops` must be a live buffer of this context holding
    /// the elements its comment describes for `m`, `n`, `k` and `rank`
    /// (bias `[n]` or 0), ordered before this launch on `stream`, with
    /// guards that outlive it; `out` overlaps no input; `ops.covers(T)`.
    pub(crate) unsafe fn launch_hopper_gemm<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        ops: &HopperOperands,
    ) -> Result<()> {
        let dtype = T::DTYPE;
        let (tile_m, tile_n) = (LORA_HOPPER_TILE_M, LORA_HOPPER_TILE_N);
        let params = LoraHopperGemmParams {
            x_map: encode_tensor_map(dtype, ops.x, ops.m, ops.k, ops.k, tile_m)?,
            w_map: encode_tensor_map(dtype, ops.w, ops.n, ops.k, ops.k, tile_n)?,
            p_map: encode_tensor_map(dtype, ops.p, ops.m, ops.rank, ops.rank, tile_m)?,
            b_map: encode_tensor_map(dtype, ops.b, ops.n, ops.rank, ops.rank, tile_n)?,
            out: ops.out,
            y_in: 0,
            bias: ops.bias,
            m: ops.m as i32,
            n: ops.n as i32,
            k: ops.k as i32,
            ad_k: ops.rank as i32,
            scale: ops.scale,
        };
        let kernel = format!("lora_forward_gemm_{}_sm90a", dtype.kernel_suffix());
        // SAFETY: the caller's contract; the kernel reads the operands only
        // through the tensor maps just encoded over their extents, and writes
        // `out` only inside [m, n].
        unsafe { self.launch_hopper(stream, FORWARD_SM90A, &kernel, &params) }
    }
}

#[cfg(test)]
mod tests {
    use super::HopperOperands;
    use crate::dtype::DType;

    fn ops(k: usize, rank: usize, p: u64) -> HopperOperands {
        HopperOperands { out: 0, bias: 0, x: 256, w: 512, p, b: 1024, m: 100, n: 100, k, rank, scale: 1.0 }
    }

    #[test]
    fn covers_aligned_half_launches_only() {
        assert!(ops(64, 16, 2048).covers(DType::Bf16));
        assert!(ops(8, 8, 2048).covers(DType::F16));
        assert!(!ops(64, 16, 2048).covers(DType::F32), "f32 has no wgmma path");
        assert!(!ops(64, 12, 2048).covers(DType::Bf16), "a rank of 12: 24-byte rows");
        assert!(!ops(60, 16, 2048).covers(DType::Bf16), "K of 60: 120-byte rows");
        assert!(!ops(64, 16, 2050).covers(DType::Bf16), "P's base off 16 bytes");
    }
}

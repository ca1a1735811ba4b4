//! The decode forward (few rows): two launches, `lora_decode_gemm_<T>` (split
//! K over the rows of `[W0; A]`, the shrink as extra output columns of the
//! same pass) and `lora_decode_finish_<T>` (the splits summed in a fixed
//! order, P rounded and written, `s·P·Bᵀ` and the bias added, Y written once);
//! on compute capability 9.0 one, `lora_decode_cluster_<T>` (the K splits of
//! a column tile in a cluster, summed through distributed shared memory, P
//! recomputed per column tile). `cuda/decode.cu`, `cuda/decode_sm90a.cu` and
//! `cuda/decode_params.h` describe the kernels;
//! [`super::launch::takes_decode_path`] decides when they run and
//! [`super::launch::decode_cluster_groups`] which form.

use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};

use super::launch::{decode_cluster_groups, decode_cluster_shared_bytes, decode_layout, finish_copies, DecodeProblem};
use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::kernels::{LoraKernels, DECODE, DECODE_SM90A};
use crate::params::{
    LoraDecodeParams, LORA_DECODE_CHUNK, LORA_DECODE_CLUSTER, LORA_DECODE_COLS, LORA_DECODE_FINISH_WARPS,
    LORA_DECODE_WARPS,
};

// SAFETY: a plain `#[repr(C)]` struct of integers and floats, generated from
// the header the kernels include.
unsafe impl DeviceRepr for LoraDecodeParams {}

impl LoraKernels {
    /// Launches the decode path for `params` (pointers, `m`, `n`, `k`,
    /// `r_max`, `num_adapters`, `rank`, `scale` filled in by the caller; the
    /// slots, splits, tiles and partials are set here).
    ///
    /// # Safety
    /// Every pointer in `params` must come from a live buffer of this context
    /// holding the elements `cuda/decode_params.h` describes for its
    /// dimensions, with guards that outlive the launches' stream work; X, W0
    /// and A 16-byte aligned with `k` a multiple of 8; Y and P overlapping no
    /// input nor each other; `ranks` (when set) in `1..=r_max`; and
    /// `takes_decode_path` true for the shape.
    pub(crate) unsafe fn launch_decode<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        params: &LoraDecodeParams,
    ) -> Result<()> {
        let (m, n, k, r_max) = (params.m as usize, params.n as usize, params.k as usize, params.r_max as usize);
        let sms =
            self.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        let l2 = self.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?.max(0) as usize;
        let slots = m.min(params.num_adapters as usize);
        let problem = DecodeProblem { m, n, k, r_max, slots, elem_bytes: T::DTYPE.size_bytes() };
        // The cluster form needs sm_90 (clusters), not the Hopper path's
        // wgmma and TMA: like the fused-P tile in clusters, it is part of the
        // mma.sync path there, whatever `FUSED_LORA_HOPPER` says.
        if self.compute_capability_90()? {
            if let Some(groups) = decode_cluster_groups(sms, l2, &problem) {
                // SAFETY: the caller's contract.
                return unsafe { self.launch_decode_cluster::<T>(stream, params, slots, groups) };
            }
        }
        let layout = decode_layout(sms, l2, &problem);
        let cols = LORA_DECODE_COLS as usize;
        let tile_cols = layout.groups * cols;
        let (w_tiles, slot_tiles) = (n.div_ceil(tile_cols), r_max.div_ceil(tile_cols));
        let column_tiles = w_tiles + slots * slot_tiles;
        let splits = layout.splits;
        let chunk = LORA_DECODE_CHUNK as usize;
        let k_per_split = k.div_ceil(chunk).div_ceil(splits) * chunk;
        let splits = k.div_ceil(k_per_split);
        let too_big = |what: &'static str, value: usize| LoraError::InvalidArgument {
            what,
            value: value.to_string(),
            reason: "too large for the decode path's grid",
        };
        let grid_x = u32::try_from(column_tiles).map_err(|_| too_big("n", n))?;
        let finish_x = u32::try_from(n.div_ceil(cols)).map_err(|_| too_big("n", n))?;
        // LORA_DECODE_FINISH_WARPS is four warps per n8 fragment at most.
        let warps_per_fragment = finish_copies(sms, n.div_ceil(cols)) as u32;

        // Every element the finishing launch reads is written by the split
        // GEMM (cuda/decode_params.h), so the partials need no clearing.
        // SAFETY: f32 has no invalid bit patterns, and no element is read
        // before the first launch writes it.
        let partials = unsafe { stream.alloc::<f32>(splits * m * (n + slots * r_max)) }?;
        let (partials_ptr, _partials_guard) = partials.device_ptr(stream);
        let params = LoraDecodeParams {
            partials: partials_ptr,
            slots: slots as i32,
            k_splits: splits as i32,
            k_per_split: k_per_split as i32,
            col_groups: layout.groups as i32,
            w_tiles: w_tiles as i32,
            slot_tiles: slot_tiles as i32,
            ..*params
        };
        let suffix = T::DTYPE.kernel_suffix();
        let gemm = self.function(DECODE, &format!("lora_decode_gemm_{suffix}"))?;
        let config = LaunchConfig {
            grid_dim: (grid_x, splits as u32, 1),
            block_dim: (LORA_DECODE_WARPS * 32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = stream.launch_builder(&gemm);
        launch.arg(&params);
        // SAFETY: the caller's contract covers the inputs; `partials` holds
        // the [splits, m, n + slots * r_max] floats the grid writes.
        unsafe { launch.launch(config) }?;

        let finish = self.function(DECODE, &format!("lora_decode_finish_{suffix}"))?;
        let config = LaunchConfig {
            grid_dim: (finish_x, 1, 1),
            block_dim: (warps_per_fragment * LORA_DECODE_FINISH_WARPS / 4 * 32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = stream.launch_builder(&finish);
        launch.arg(&params);
        // SAFETY: as above; the partials were written by the launch before,
        // ordered on the same stream.
        unsafe { launch.launch(config) }?;
        Ok(())
    }

    /// Launches `lora_decode_cluster_<T>` (sm_90): `groups` of W0's 32
    /// columns per column tile ([`decode_cluster_groups`]), the K splits of a
    /// tile in a cluster of `LORA_DECODE_CLUSTER` (the kernel's own
    /// `__cluster_dims__`), Y and P written by the one launch.
    ///
    /// # Safety
    /// As [`LoraKernels::launch_decode`]; the device of compute capability 9.0.
    unsafe fn launch_decode_cluster<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        params: &LoraDecodeParams,
        slots: usize,
        groups: usize,
    ) -> Result<()> {
        let (n, k, r_max) = (params.n as usize, params.k as usize, params.r_max as usize);
        let splits = LORA_DECODE_CLUSTER as usize;
        let chunk = LORA_DECODE_CHUNK as usize;
        let k_per_split = k.div_ceil(chunk).div_ceil(splits).max(1) * chunk;
        let tiles = n.div_ceil(groups * LORA_DECODE_COLS as usize);
        let grid_x = u32::try_from(tiles).map_err(|_| LoraError::InvalidArgument {
            what: "n",
            value: n.to_string(),
            reason: "too large for the decode path's grid",
        })?;
        let params = LoraDecodeParams {
            partials: 0,
            slots: slots as i32,
            k_splits: splits as i32,
            k_per_split: k_per_split as i32,
            col_groups: groups as i32,
            w_tiles: tiles as i32,
            slot_tiles: 0,
            ..*params
        };
        let shared = decode_cluster_shared_bytes(groups, slots, r_max, T::DTYPE.size_bytes());
        let kernel = self.function(DECODE_SM90A, &format!("lora_decode_cluster_{}", T::DTYPE.kernel_suffix()))?;
        kernel.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32)?;
        let config = LaunchConfig {
            grid_dim: (grid_x, splits as u32, 1),
            block_dim: (LORA_DECODE_WARPS * 32, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        let mut launch = stream.launch_builder(&kernel);
        launch.arg(&params);
        // SAFETY: the caller's contract covers the inputs and outputs; the
        // grid is whole clusters and the shared memory what the kernel lays out.
        unsafe { launch.launch(config) }?;
        Ok(())
    }
}

//! Launches of the rank-side kernels shared by the forward and the backward
//! (cuda/rank_side.cuh): the rows grouped by adapter on the device
//! (`lora_group_rows`, a stable counting sort of the per-row index into a
//! permutation and segment offsets: no host round trip, no synchronisation)
//! and the shrink `P = X̃·A_lᵀ` over the grouped rows (`lora_rank_shrink_<T>`:
//! 32-row tiles of one adapter each, 32 rank columns, the reduction over K
//! split among a CTA's warps and added in warp order).

use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};

use crate::dtype::LoraDType;
use crate::error::Result;
use crate::kernels::{LoraKernels, BACKWARD};
use crate::params::{
    LoraBwdParams, LoraGemmParams, LORA_BWD_RANK_SHARED_BYTES, LORA_BWD_RANK_THREADS, LORA_BWD_RANK_TILE,
    LORA_BWD_RANK_WIDE_GRAD_SHARED_BYTES, LORA_BWD_RANK_WIDE_GRAD_THREADS, LORA_BWD_RANK_WIDE_G_DB_SHARED_BYTES,
    LORA_BWD_RANK_WIDE_G_DB_THREADS, LORA_BWD_RANK_WIDE_SHARED_BYTES, LORA_BWD_RANK_WIDE_TILE, LORA_GROUP_THREADS,
};

/// The rank-side tile (rows of M and rank columns).
pub(crate) const RANK_TILE: usize = LORA_BWD_RANK_TILE as usize;
/// The suffix of the rank-side kernels whose CTAs own 64 rank columns.
pub(crate) const WIDE_SUFFIX: &str = "_r64";

/// Rank columns per shrink CTA over `row_tiles` row tiles of adapter slots
/// `r_max` wide on a device of `multiprocessors` SMs, and the kernel-name
/// suffix that goes with them. 64 (`lora_rank_shrink_<T>_r64`) reads X once
/// per 64 rank columns instead of once per 32, but its CTA (96 KB of shared
/// memory, 157 registers) is alone on its SM, where the 32-wide one has two;
/// so 64 only for ranks past 32 and where its grid is one wave of at least
/// three quarters of the SMs: M = 4096 (128 row tiles) at r = 64 on 132
/// SMs, where the 32-wide grid reads X twice from L2 and binds there
/// (docs/performance.md). Else 32. Deterministic for a shape and device;
/// the bits are the same either way (each P element's sum is a CTA's warps'
/// steps in warp order in both).
pub(crate) fn shrink_cols(multiprocessors: usize, row_tiles: usize, r_max: usize) -> (usize, &'static str) {
    let wide = LORA_BWD_RANK_WIDE_TILE as usize;
    let wide_ctas = row_tiles * r_max.div_ceil(wide);
    if r_max > RANK_TILE && wide_ctas <= multiprocessors && 4 * wide_ctas >= 3 * multiprocessors {
        (wide, WIDE_SUFFIX)
    } else {
        (RANK_TILE, "")
    }
}

/// Threads and dynamic shared bytes of the rank-side kernel `name`: the
/// 32-wide kernels 8 warps and 64 KB; the shrink's `_r64` 8 warps and 96 KB;
/// G with dB's `_r64` (`lora_backward_g_db_<T>_r64`) 6 warps and 72 KB;
/// dA's (`lora_backward_da_<T>_r64`) 4 warps and 48 KB.
fn rank_side_cta(name: &str) -> (u32, u32) {
    if !name.ends_with(WIDE_SUFFIX) {
        (LORA_BWD_RANK_THREADS, LORA_BWD_RANK_SHARED_BYTES)
    } else if name.starts_with("lora_rank_shrink_") {
        (LORA_BWD_RANK_THREADS, LORA_BWD_RANK_WIDE_SHARED_BYTES)
    } else if name.starts_with("lora_backward_g_db_") {
        (LORA_BWD_RANK_WIDE_G_DB_THREADS, LORA_BWD_RANK_WIDE_G_DB_SHARED_BYTES)
    } else {
        (LORA_BWD_RANK_WIDE_GRAD_THREADS, LORA_BWD_RANK_WIDE_GRAD_SHARED_BYTES)
    }
}

/// Device buffers of one grouping of `m` rows over `num_adapters` adapters.
pub(crate) struct RowGroups {
    perm: CudaSlice<i32>,
    segments: CudaSlice<i32>,
    tiles: CudaSlice<i32>,
    counts: CudaSlice<i32>,
}

impl RowGroups {
    pub(crate) fn new(stream: &Arc<CudaStream>, m: usize, num_adapters: usize) -> Result<Self> {
        let warps = (LORA_GROUP_THREADS / 32) as usize;
        Ok(RowGroups {
            perm: stream.alloc_zeros::<i32>(m.max(1))?,
            segments: stream.alloc_zeros::<i32>(num_adapters + 2)?,
            tiles: stream.alloc_zeros::<i32>(num_adapters + 2)?,
            counts: stream.alloc_zeros::<i32>(warps * (num_adapters + 1))?,
        })
    }
}

/// Row tiles (gridDim.x) of a launch over the rows of M: one per 32 rows of
/// each segment (adapters, then the -1 rows) when grouped, a bound the
/// device's own count never exceeds (the CTAs past it return at once).
pub(crate) fn row_tiles(m: usize, num_adapters: usize, grouped: bool) -> usize {
    let tiles = m.div_ceil(RANK_TILE);
    if grouped {
        tiles + num_adapters + 1
    } else {
        tiles
    }
}

impl LoraKernels {
    /// Groups the rows of `params.row_adapter` into `groups` (one CTA) and
    /// returns `params` with the grouping's pointers set. The sort reports
    /// out-of-range indices through `params.status`.
    ///
    /// # Safety
    /// `params.row_adapter` must hold `params.m` indices and `params.status`
    /// be 0 or a live status word, both on this stream's context; `groups`
    /// must have been made for `params.m` rows and `params.num_adapters`.
    pub(crate) unsafe fn group_rows(
        &self,
        stream: &Arc<CudaStream>,
        params: LoraBwdParams,
        groups: &RowGroups,
    ) -> Result<LoraBwdParams> {
        let (perm, _perm_guard) = groups.perm.device_ptr(stream);
        let (segments, _segments_guard) = groups.segments.device_ptr(stream);
        let (tiles, _tiles_guard) = groups.tiles.device_ptr(stream);
        let (counts, _counts_guard) = groups.counts.device_ptr(stream);
        let params = LoraBwdParams { perm, segments, group_tiles: tiles, group_counts: counts, ..params };
        let function = self.function(BACKWARD, "lora_group_rows")?;
        let config = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (LORA_GROUP_THREADS, 1, 1), shared_mem_bytes: 0 };
        let mut launch = stream.launch_builder(&function);
        launch.arg(&params);
        // SAFETY: the caller's contract; the grouping buffers are this
        // call's, sized for m rows and L adapters.
        unsafe { launch.launch(config) }?;
        Ok(params)
    }

    /// Launches a rank-side kernel `name` (`lora_backward_g_db_<T>`, say)
    /// over `grid`, 64 KB of dynamic shared memory each (96 KB for the
    /// `_r64` kernels: each stage holds two rank tiles).
    ///
    /// # Safety
    /// Every pointer in `params` must address a live buffer of this context
    /// holding what `cuda/backward_params.h` describes for its dimensions.
    pub(crate) unsafe fn launch_rank_side(
        &self,
        stream: &Arc<CudaStream>,
        name: &str,
        params: LoraBwdParams,
        grid: (u32, u32, u32),
    ) -> Result<()> {
        let function = self.function(BACKWARD, name)?;
        let (threads, shared) = rank_side_cta(name);
        // Above the 48 KB a launch gets by default: opt in.
        function.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32)?;
        let config = LaunchConfig { grid_dim: grid, block_dim: (threads, 1, 1), shared_mem_bytes: shared };
        let mut launch = stream.launch_builder(&function);
        launch.arg(&params);
        // SAFETY: the caller's contract.
        unsafe { launch.launch(config) }?;
        Ok(())
    }

    /// The shrink `P = X̃·A_lᵀ` (unscaled) that a forward-style SHRINK
    /// `shrink` describes (out = P `[m, n = r_max]`, ad_lhs = X `[m, ad_k]`,
    /// ad_rhs = A `[L, r_max, ad_k]`, ranks, per-row index, status, dropout),
    /// on the rank-side kernel: with an index, the rows are grouped by
    /// adapter first (one more launch), so a scattered batch costs what its
    /// rows cost, not one pass per adapter present.
    ///
    /// # Safety
    /// As [`LoraKernels::launch_gemm`] for `shrink`; A's adapters must be
    /// `r_max · ad_k` apart (`ad_rhs_stride`, or 0 with one adapter).
    pub(crate) unsafe fn launch_shrink<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        shrink: &LoraGemmParams,
    ) -> Result<()> {
        let (m, r_max, num_adapters) = (shrink.m as usize, shrink.n as usize, shrink.num_adapters as usize);
        debug_assert!(shrink.ad_rhs_stride == 0 || shrink.ad_rhs_stride as usize == r_max * shrink.ad_k as usize);
        let params = LoraBwdParams {
            x: shrink.ad_lhs,
            a: shrink.ad_rhs,
            p: shrink.out,
            row_adapter: shrink.row_adapter,
            ranks: shrink.ranks,
            status: shrink.status,
            m: shrink.m,
            n: 0,
            k: shrink.ad_k,
            r_max: shrink.n,
            num_adapters: shrink.num_adapters,
            rank: shrink.rank,
            scale: 1.0,
            dropout: shrink.dropout,
            dropout_p: shrink.dropout_p,
            inv_keep: shrink.inv_keep,
            seed: shrink.seed,
            offset: shrink.offset,
            ..Default::default()
        };
        let grouped = shrink.row_adapter != 0;
        let groups = if grouped { Some(RowGroups::new(stream, m, num_adapters)?) } else { None };
        // SAFETY: the caller's contract; the grouping is this call's.
        let params = match &groups {
            Some(groups) => unsafe { self.group_rows(stream, params, groups)? },
            None => params,
        };
        // The sort reported bad indices; the shrink stays quiet.
        let params = LoraBwdParams { status: 0, ..params };
        let sms = self.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1);
        let tiles = row_tiles(m, num_adapters, grouped);
        let (cols, wide) = shrink_cols(sms as usize, tiles, r_max);
        let grid = (tiles as u32, r_max.div_ceil(cols) as u32, 1);
        let name = format!("lora_rank_shrink_{}{wide}", T::DTYPE.kernel_suffix());
        // SAFETY: the caller's contract: X [m, k], A [L, r_max, k], P [m, r_max].
        unsafe { self.launch_rank_side(stream, &name, params, grid) }
    }
}

#[cfg(test)]
mod tests {
    use super::shrink_cols;

    #[test]
    fn shrink_takes_64_rank_columns_on_one_full_wave() {
        // M = 4096 (128 row tiles), r = 64: one wave on 132 SMs; past one on 108.
        assert_eq!(shrink_cols(132, 128, 64), (64, "_r64"));
        assert_eq!(shrink_cols(108, 128, 64), (32, ""));
        // Small grids keep the 32-wide tiles' two CTAs per SM.
        assert_eq!(shrink_cols(132, 32, 64), (32, ""));
        // Ranks up to 32: one 32-wide tile holds them.
        assert_eq!(shrink_cols(132, 128, 32), (32, ""));
        // r = 128: 2 wide tiles per row tile, 128 CTAs at M = 2048.
        assert_eq!(shrink_cols(132, 64, 128), (64, "_r64"));
    }
}

//! The one kernel behind every forward operation, how a launch is sized, and
//! the small-M (decode) path that splits K.

use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::kernels::{LoraKernels, FORWARD};
use crate::params::{
    LoraAdapterMode_LORA_ADAPTER_SHRINK, LoraGemmParams, LoraReduceParams, LORA_DECODE_CHUNK, LORA_DECODE_MAX_RANK,
    LORA_DECODE_ROWS, LORA_DECODE_WARPS, LORA_FWD_BIG_SHARED_BYTES, LORA_FWD_BIG_TILE_M, LORA_FWD_BIG_TILE_N,
    LORA_FWD_REDUCE_THREADS, LORA_FWD_THREADS, LORA_FWD_TILE_K, LORA_FWD_TILE_M, LORA_FWD_TILE_N,
};

// SAFETY: plain `#[repr(C)]` structs of integers and floats, generated from
// the header the kernels include.
unsafe impl DeviceRepr for LoraGemmParams {}
unsafe impl DeviceRepr for LoraReduceParams {}

/// The most CTAs a grid's y dimension may hold.
const MAX_GRID_Y: u64 = 65_535;
/// Split-K never leaves a split fewer K-steps than this: below it the
/// pipeline's fill and the partial sums cost more than the extra CTAs gain.
const MIN_STEPS_PER_SPLIT: usize = 4;
/// And never more splits than this (the partials grow with the count).
const MAX_SPLITS: usize = 16;
/// CTAs wanted per multiprocessor before splitting stops paying.
const CTAS_PER_SM: usize = 2;

/// Checks that an `[m, n]` output fits one grid.
pub(crate) fn check_grid(m: usize) -> Result<()> {
    if (m as u64).div_ceil(LORA_FWD_TILE_M as u64) > MAX_GRID_Y {
        return Err(LoraError::InvalidArgument {
            what: "m",
            value: m.to_string(),
            reason: "more rows than one launch covers (65535 tiles of 64)",
        });
    }
    Ok(())
}

/// How many ways to split K so that every multiprocessor streams W0 when
/// the output has fewer tiles than the device has SMs (decode: small M).
/// The backward's G and dX launches (the same 64x64 tiles and 32-long
/// steps) split by the same rule.
pub(crate) fn k_splits(multiprocessors: usize, m: usize, n: usize, k: usize) -> usize {
    let tiles = m.div_ceil(LORA_FWD_TILE_M as usize) * n.div_ceil(LORA_FWD_TILE_N as usize);
    let wanted = (CTAS_PER_SM * multiprocessors).div_ceil(tiles);
    let by_steps = k.div_ceil(LORA_FWD_TILE_K as usize) / MIN_STEPS_PER_SPLIT;
    wanted.min(by_steps).clamp(1, MAX_SPLITS)
}

/// Whether a forward of `m` rows with adapter slots `r_max` wide takes the
/// decode path (`src/forward/decode.rs`): two launches, the shrink folded
/// into the split-K pass over W0, instead of a shrink launch, a split fused
/// GEMM and its reduction. For f16/bf16 (it multiplies on tensor cores)
/// without dropout (a dropout shrink reads another X than the base GEMM), up
/// to one m16 fragment of rows (`LORA_DECODE_ROWS`), and ranks up to
/// `LORA_DECODE_MAX_RANK` (P's rows are kept in shared memory).
pub(crate) fn takes_decode_path(m: usize, half: bool, dropped: bool, r_max: usize) -> bool {
    half && !dropped && m <= LORA_DECODE_ROWS as usize && r_max <= LORA_DECODE_MAX_RANK as usize
}

/// The decode path's K splits: enough CTAs (of 8 warps, two 16-byte loads
/// of each of 6 rows per thread in flight) for one per multiprocessor, and no
/// more, since every split adds `m x (n + r)` f32 partials written and read
/// back: k/v (N = 1024, 33 column tiles) splits 4 ways on 108 SMs, N = 4096 and
/// wider not at all. Each warp keeps at least two 32-long chunks of K.
pub(crate) fn decode_splits(multiprocessors: usize, column_tiles: usize, k: usize) -> usize {
    let per_warp_min = 2 * LORA_DECODE_WARPS as usize * LORA_DECODE_CHUNK as usize;
    let by_k = (k / per_warp_min).max(1);
    multiprocessors.div_ceil(column_tiles.max(1)).clamp(1, by_k.min(MAX_SPLITS))
}

/// The CTA tile of one fused-GEMM launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ForwardTile {
    /// 64 x 64, 32 x 32 warp tiles (`lora_forward_gemm_<T>`).
    Small,
    /// 128 x 128, 64 x 64 warp tiles (`lora_forward_gemm_<T>_128x128`):
    /// half the L2 sectors and shared wavefronts per mma, a quarter of the
    /// CTAs. 239 registers (ptxas, sm_80; no spills) and 72 KB of dynamic
    /// shared memory (`LORA_FWD_BIG_SHARED_BYTES`: 4 pipeline slots of two
    /// 128 x 32 tiles, or the 128 x 136 f32 output tile, plus the per-row
    /// adapter lists): 2 CTAs per SM on A100 and H100, limited by registers.
    Big,
}

/// Picks the tile for an `[m, n]` output on a device of `multiprocessors`
/// SMs; deterministic for a shape and device, and the results are the same
/// bits either way (each output element's reduction order does not depend on
/// the tile). The 128x128 tile when it exists for the type (f16/bf16; `half`),
/// the launch is not split over K, has no dropout (a dropout shrink's output
/// is rank wide), M fills at least one tile row (decode-sized M would leave
/// most of each 128-row tile's mma on padding, where 64x64 wastes half as
/// much), and its grid still gives every SM at least one CTA: then it moves
/// half the bytes per mma, and every SM is busy. Otherwise (small grids,
/// decode) 64x64, whose 4x more CTAs fill the device.
pub(crate) fn forward_tile(
    multiprocessors: usize,
    m: usize,
    n: usize,
    half: bool,
    splits: usize,
    dropped: bool,
) -> ForwardTile {
    let big_tiles = m.div_ceil(LORA_FWD_BIG_TILE_M as usize) * n.div_ceil(LORA_FWD_BIG_TILE_N as usize);
    let rows_filled = m >= LORA_FWD_BIG_TILE_M as usize;
    if half && splits == 1 && !dropped && rows_filled && big_tiles >= multiprocessors {
        ForwardTile::Big
    } else {
        ForwardTile::Small
    }
}

impl LoraKernels {
    /// Launches `lora_forward_gemm_<T>` (`lora_forward_gemm_dropout_<T>` for
    /// a shrink with `params.dropout` set) over the `[params.m, params.n]` output
    /// (`k_splits` and `partials` are filled in here). When the problem has a
    /// long reduction (a shrink's or the base GEMM's K) and too few output
    /// tiles to occupy the device, K is split
    /// over `gridDim.z` CTAs writing f32 partials to a scratch buffer, and
    /// `lora_forward_reduce_<T>` sums them in a fixed order (deterministic).
    ///
    /// # Safety
    /// Every pointer in `params` must come from a live buffer of this
    /// context that holds the elements the parameter comments in
    /// `cuda/forward_params.h` describe for `params.m`, `n`, `k`,
    /// `num_adapters`, and whose guards outlive the launch's stream work; the
    /// output must not overlap any input other than `y_in`; `ranks` (when set)
    /// must hold values in `1..=` the stride the adapter operands were sized for.
    pub(crate) unsafe fn launch_gemm<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        params: &LoraGemmParams,
    ) -> Result<()> {
        let (m, n, k) = (params.m as usize, params.n as usize, params.k as usize);
        // The reduction length the splits share: the shrink's K and/or the
        // base GEMM's K (an expand's K is a rank: short, never split).
        let shrink_k =
            if params.ad_mode == LoraAdapterMode_LORA_ADAPTER_SHRINK as i32 { params.ad_k as usize } else { 0 };
        let base_k = if params.x != 0 { k } else { 0 };
        let sms =
            self.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        let splits = if shrink_k + base_k > 0 { k_splits(sms, m, n, shrink_k + base_k) } else { 1 };
        // Dropout has its own entry point, so the Philox code costs the
        // launches without it no registers (cuda/forward.cu).
        let dropped = params.dropout != 0 && params.ad_mode == LoraAdapterMode_LORA_ADAPTER_SHRINK as i32;
        let suffix = T::DTYPE.kernel_suffix();
        let tile = forward_tile(sms, m, n, T::DTYPE.size_bytes() == 2, splits, dropped);
        let (gemm, config) = if tile == ForwardTile::Big {
            let gemm = self.function(FORWARD, &format!("lora_forward_gemm_{suffix}_128x128"))?;
            // Above the 48 KB a launch gets by default: opt in.
            gemm.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                LORA_FWD_BIG_SHARED_BYTES as i32,
            )?;
            let grid =
                ((params.n as u32).div_ceil(LORA_FWD_BIG_TILE_N), (params.m as u32).div_ceil(LORA_FWD_BIG_TILE_M), 1);
            (
                gemm,
                LaunchConfig {
                    grid_dim: grid,
                    block_dim: (LORA_FWD_THREADS, 1, 1),
                    shared_mem_bytes: LORA_FWD_BIG_SHARED_BYTES,
                },
            )
        } else {
            let variant = if dropped { "gemm_dropout" } else { "gemm" };
            let gemm = self.function(FORWARD, &format!("lora_forward_{variant}_{suffix}"))?;
            let grid = (
                (params.n as u32).div_ceil(LORA_FWD_TILE_N),
                (params.m as u32).div_ceil(LORA_FWD_TILE_M),
                splits as u32,
            );
            (gemm, LaunchConfig { grid_dim: grid, block_dim: (LORA_FWD_THREADS, 1, 1), shared_mem_bytes: 0 })
        };
        if splits == 1 {
            let params = LoraGemmParams { k_splits: 1, partials: 0, ..*params };
            let mut launch = stream.launch_builder(&gemm);
            launch.arg(&params);
            // SAFETY: the caller's contract (above) is what the kernel needs:
            // it reads and writes only inside the extents the parameters describe.
            unsafe { launch.launch(config) }?;
            return Ok(());
        }

        let partials = stream.alloc_zeros::<f32>(splits * m * n)?;
        let (partials_ptr, _partials_guard) = partials.device_ptr(stream);
        let split_params = LoraGemmParams { k_splits: splits as i32, partials: partials_ptr, ..*params };
        let mut launch = stream.launch_builder(&gemm);
        launch.arg(&split_params);
        // SAFETY: as above; in addition `partials` holds the [splits, m, n]
        // floats the splits write, one element per thread and output.
        unsafe { launch.launch(config) }?;

        let reduce = self.function(FORWARD, &format!("lora_forward_reduce_{}", T::DTYPE.kernel_suffix()))?;
        let reduce_params = LoraReduceParams {
            out: params.out,
            partials: partials_ptr,
            bias: params.bias,
            y_in: params.y_in,
            m: params.m,
            n: params.n,
            k_splits: splits as i32,
        };
        let blocks = ((m * n) as u64).div_ceil(LORA_FWD_REDUCE_THREADS as u64);
        let blocks = u32::try_from(blocks).map_err(|_| LoraError::InvalidArgument {
            what: "m * n",
            value: (m * n).to_string(),
            reason: "too many outputs for the split-K reduction grid",
        })?;
        let config =
            LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (LORA_FWD_REDUCE_THREADS, 1, 1), shared_mem_bytes: 0 };
        let mut launch = stream.launch_builder(&reduce);
        launch.arg(&reduce_params);
        // SAFETY: out, bias and y_in are the caller's (checked by its
        // contract); partials was just written in full by the split launch,
        // ordered before this one on the same stream.
        unsafe { launch.launch(config) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{decode_splits, forward_tile, k_splits, takes_decode_path, ForwardTile};

    #[test]
    fn decode_path_for_few_rows_of_half_types() {
        assert!(takes_decode_path(16, true, false, 64));
        assert!(takes_decode_path(1, true, false, 256));
        assert!(!takes_decode_path(17, true, false, 16));
        assert!(!takes_decode_path(16, false, false, 16), "f32");
        assert!(!takes_decode_path(16, true, true, 16), "dropout");
        assert!(!takes_decode_path(16, true, false, 257), "rank past shared P");
    }

    #[test]
    fn decode_splits_fill_the_device_once() {
        // k/v 4096 -> 1024, r = 16: 32 W0 tiles + 1 adapter tile on 108 SMs.
        assert_eq!(decode_splits(108, 33, 4096), 4);
        // q/o, gate/up, down: enough column tiles already.
        assert_eq!(decode_splits(108, 129, 4096), 1);
        assert_eq!(decode_splits(108, 449, 4096), 1);
        // Short K: each warp keeps two chunks (512 elements per split).
        assert_eq!(decode_splits(108, 1, 1024), 2);
        assert_eq!(decode_splits(108, 1, 64), 1);
        // Long K, one tile: capped.
        assert_eq!(decode_splits(108, 1, 1 << 20), 16);
    }

    #[test]
    fn splits_only_when_tiles_are_few_and_k_is_long() {
        // Decode on a 108-SM device: 1 x 64 tiles, K = 4096 (128 steps): 4 splits.
        assert_eq!(k_splits(108, 1, 4096, 4096), 4);
        // Enough tiles already: no split.
        assert_eq!(k_splits(108, 4096, 4096, 4096), 1);
        // Short K: no split (fewer than 2 x MIN_STEPS_PER_SPLIT steps).
        assert_eq!(k_splits(108, 1, 64, 224), 1);
        // One tile, very long K: capped.
        assert_eq!(k_splits(108, 1, 64, 1 << 20), 16);
    }

    #[test]
    fn big_tile_only_where_its_grid_fills_the_device() {
        // 4096 x 4096 on 108 SMs: 1024 big tiles.
        assert_eq!(forward_tile(108, 4096, 4096, true, 1, false), ForwardTile::Big);
        // 1024 x 1024: 64 big tiles would leave 44 SMs idle.
        assert_eq!(forward_tile(108, 1024, 1024, true, 1, false), ForwardTile::Small);
        // Exactly one per SM: 12 x 9 tiles.
        assert_eq!(forward_tile(108, 1536, 1152, true, 1, false), ForwardTile::Big);
        assert_eq!(forward_tile(132, 1536, 1152, true, 1, false), ForwardTile::Small);
        // Decode-sized M over a wide N: 112 big tiles, but each 7/8 padding.
        assert_eq!(forward_tile(108, 16, 14336, true, 1, false), ForwardTile::Small);
        assert_eq!(forward_tile(108, 127, 14336, true, 1, false), ForwardTile::Small);
        assert_eq!(forward_tile(108, 128, 14336, true, 1, false), ForwardTile::Big);
        // f32, split K, dropout: always 64x64.
        assert_eq!(forward_tile(108, 4096, 4096, false, 1, false), ForwardTile::Small);
        assert_eq!(forward_tile(108, 4096, 4096, true, 2, false), ForwardTile::Small);
        assert_eq!(forward_tile(108, 4096, 4096, true, 1, true), ForwardTile::Small);
    }
}

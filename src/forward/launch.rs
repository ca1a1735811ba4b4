//! The one kernel behind every forward operation, how a launch is sized, and
//! the small-M (decode) path that splits K.

use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::kernels::{KernelFamily, LoraKernels, FORWARD, FORWARD_SM90A};
use crate::params::{
    LoraAdapterMode_LORA_ADAPTER_SHRINK, LoraGemmParams, LoraReduceParams, LORA_DECODE_CHUNK, LORA_DECODE_CLUSTER,
    LORA_DECODE_CLUSTER_GROUPS, LORA_DECODE_COLS, LORA_DECODE_MAX_RANK, LORA_DECODE_ROWS, LORA_DECODE_STAGE_K,
    LORA_DECODE_WARPS, LORA_FWD_BIG_SHARED_BYTES, LORA_FWD_BIG_TILE_M, LORA_FWD_BIG_TILE_N, LORA_FWD_FUSED_P_CLUSTER,
    LORA_FWD_FUSED_P_MAX_RANK, LORA_FWD_FUSED_P_SHARED_BYTES, LORA_FWD_FUSED_P_THREADS, LORA_FWD_FUSED_P_TILE_M,
    LORA_FWD_FUSED_P_TILE_N, LORA_FWD_REDUCE_THREADS, LORA_FWD_THREADS, LORA_FWD_TILE_K, LORA_FWD_TILE_M,
    LORA_FWD_TILE_N, LORA_FWD_WIDE_SHARED_BYTES, LORA_FWD_WIDE_TILE_M, LORA_FWD_WIDE_TILE_N,
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
/// the output has fewer tiles than the device has SMs (decode: small M),
/// aiming at `CTAS_PER_SM` CTAs on each. With at least one tile per SM there
/// is no split: every SM already has a CTA, and the f32 partials (written
/// and read back) and the reduction's launch cost more than a second CTA
/// per SM gains (1024³ on 132 SMs: 256 tiles, 1.94 per SM). The backward's
/// dX launch (the same 64x64 tiles and 32-long steps) splits by the same rule.
pub(crate) fn k_splits(multiprocessors: usize, m: usize, n: usize, k: usize) -> usize {
    let tiles = m.div_ceil(LORA_FWD_TILE_M as usize) * n.div_ceil(LORA_FWD_TILE_N as usize);
    if tiles >= multiprocessors {
        return 1;
    }
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

/// How the decode path's split GEMM is laid out: warp groups of 32 columns
/// per CTA (`LORA_DECODE_WARPS / groups` warps splitting K in each), and K
/// splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DecodeLayout {
    pub groups: usize,
    pub splits: usize,
}

/// The sizes [`decode_layout`] weighs, in elements and bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DecodeProblem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub r_max: usize,
    /// Adapter slots: min(m, L).
    pub slots: usize,
    pub elem_bytes: usize,
}

impl DecodeProblem {
    /// The share of re-read bytes the model charges to DRAM: the proportion
    /// of the footprint (W0, X and every slot's A) past `l2_bytes` of L2
    /// (docs/perf-model.md); 0 when it fits.
    fn past_l2(&self, l2_bytes: usize) -> f64 {
        let footprint = (self.n * self.k + self.m * self.k + self.slots * self.r_max * self.k) * self.elem_bytes;
        1.0 - (l2_bytes as f64 / footprint as f64).min(1.0)
    }
}

/// Picks the decode layout for a device of `multiprocessors` SMs and
/// `l2_bytes` of L2: for each CTA width (1, 2, 4 or 8 groups of 32 columns),
/// the K splits that give every SM a CTA (each split at least one 512-long
/// stage of K, at most `MAX_SPLITS`), and what that costs beyond reading W0
/// once: the f32 partials, written and read back (`splits x m x (n + slots x
/// r_max) x 4` bytes, twice), and X read again by every column tile but the
/// first, which comes from DRAM in the proportion of the footprint (W0, X, A)
/// past L2 (W0 streams through L2 and takes X out with it; below L2, X stays
/// and the re-reads cost no DRAM). The cheapest wins; on a tie the one with
/// more CTAs up to one per SM, then the one reading X fewer times (less L2
/// traffic), then the narrower. Deterministic for a shape and device. On 108 SMs and 40 MB of L2, bf16, M = 16, r = 16: k/v (4096 ->
/// 1024) 1 group, 4 splits; q/o 1 group, no split; gate/up (W0 117 MB) 8
/// groups, 2 splits; down (K = 14336) 8 groups, 7 splits.
pub(crate) fn decode_layout(multiprocessors: usize, l2_bytes: usize, pr: &DecodeProblem) -> DecodeLayout {
    let stage = LORA_DECODE_STAGE_K as usize;
    let by_k = pr.k.div_ceil(stage).clamp(1, MAX_SPLITS);
    let past_l2 = pr.past_l2(l2_bytes);
    let x_bytes = (pr.m * pr.k * pr.elem_bytes) as f64;
    // (bytes beyond W0, CTAs short of one per SM, column tiles reading X)
    let mut best: Option<((f64, usize, usize), DecodeLayout)> = None;
    for groups in [1, 2, 4, 8] {
        let cols = groups * LORA_DECODE_COLS as usize;
        let w_tiles = pr.n.div_ceil(cols);
        let tiles = w_tiles + pr.slots * pr.r_max.div_ceil(cols);
        let splits = multiprocessors.div_ceil(tiles).clamp(1, by_k);
        let partials = (2 * splits * pr.m * (pr.n + pr.slots * pr.r_max) * 4) as f64;
        let cost = partials + (w_tiles - 1) as f64 * x_bytes * past_l2;
        let key = (cost, multiprocessors.saturating_sub(tiles * splits), w_tiles);
        let better =
            best.map_or(true, |(b, _)| key.0 < b.0 || (key.0 == b.0 && (key.1 < b.1 || (key.1 == b.1 && key.2 < b.2))));
        if better {
            best = Some((key, DecodeLayout { groups, splits }));
        }
    }
    best.map_or(DecodeLayout { groups: 1, splits: 1 }, |(_, layout)| layout)
}

/// The decode path's one-launch form on sm_90 (`lora_decode_cluster_<T>`,
/// cuda/decode_sm90a.cu): W0's groups of 32 columns per column tile, or
/// None where it does not serve the problem (P's columns, `slots × r_max`,
/// past 256). Each column tile is a cluster of `LORA_DECODE_CLUSTER` K
/// splits summed on chip and recomputes P, so what it moves beyond W0 is X
/// and A once per column tile; the tile holds at most
/// `LORA_DECODE_CLUSTER_GROUPS` groups of W0's and P's columns, at least
/// one per warp. Among those widths, the one that reads X and A again the
/// fewest bytes past L2 (the model's rule, as [`decode_layout`]); on a tie
/// the one leaving the fewest SMs without a CTA, then the one of the fewest
/// column tiles, the narrowest of those. Deterministic for a shape and
/// device. On 132 SMs with 50 MB of L2, bf16, M = 16, r = 16: gate/up (W0
/// 117 MB) 23 groups, 20 column tiles; down 22 groups, 6 tiles; q/o and k/v
/// (W0 within L2) 7 groups, 19 and 5 tiles.
pub(crate) fn decode_cluster_groups(multiprocessors: usize, l2_bytes: usize, pr: &DecodeProblem) -> Option<usize> {
    let cols = LORA_DECODE_COLS as usize;
    let warps = LORA_DECODE_WARPS as usize;
    let most = LORA_DECODE_CLUSTER_GROUPS as usize;
    let p_groups = (pr.slots * pr.r_max).div_ceil(cols);
    if p_groups > warps {
        return None;
    }
    let past_l2 = pr.past_l2(l2_bytes);
    let reread = ((pr.m + pr.slots * pr.r_max) * pr.k * pr.elem_bytes) as f64;
    let cluster = LORA_DECODE_CLUSTER as usize;
    let mut best: Option<((f64, usize, usize), usize)> = None;
    for groups in warps.saturating_sub(p_groups).max(1)..=most - p_groups {
        let tiles = pr.n.div_ceil(groups * cols);
        let key = ((tiles - 1) as f64 * reread * past_l2, multiprocessors.saturating_sub(tiles * cluster), tiles);
        let better = best.map_or(true, |(b, _)| key.0 < b.0 || (key.0 == b.0 && (key.1, key.2) < (b.1, b.2)));
        if better {
            best = Some((key, groups));
        }
    }
    best.map(|(_, groups)| groups)
}

/// The dynamic shared memory of `lora_decode_cluster_<T>` (as the kernel
/// lays it out): X's two 512-column stages, or later the CTA's f32 sums of
/// its W0 and P columns (16 rows, 8 floats of padding each), then P's
/// rounded rows.
pub(crate) fn decode_cluster_shared_bytes(w_groups: usize, slots: usize, r_max: usize, elem_bytes: usize) -> usize {
    let (rows, cols, chunk) = (LORA_DECODE_ROWS as usize, LORA_DECODE_COLS as usize, LORA_DECODE_CHUNK as usize);
    let x_stages = 2 * rows * (LORA_DECODE_STAGE_K as usize + 32) * elem_bytes;
    let groups = w_groups + (slots * r_max).div_ceil(cols);
    let sums = rows * (groups * cols + 8) * 4;
    x_stages.max(sums) + rows * r_max.div_ceil(chunk) * chunk * elem_bytes
}

/// Warps per n8 fragment of the decode path's finishing CTA (1, 2 or 4: 4, 8
/// or 16 warps of a 32-column CTA) for a grid of `ctas` on `multiprocessors`
/// SMs. The finish is short: where its grid is at most one CTA per SM, its
/// time is a warp's serial chain of instructions (each waiting on the one
/// before), which more warps per CTA shorten (each thread then sums the
/// splits of fewer elements); where CTAs share SMs, the warps' total issue
/// binds and the extra warps' fixed work (the row vote, the mma of a
/// fragment, issued by each of its warps) is a cost. Counted (emulator,
/// bf16, M = 16, K = 4096, r = 16, 4 splits): 765 warp instructions per warp
/// with 4 warps, 429 with 16. So: 4 per fragment on a grid of at most one
/// CTA per SM, 2 on up to two, else 1 (e.g. on 108 SMs k/v, N = 1024: 32
/// CTAs of 16 warps; q/o, N = 4096: 128 CTAs of 8; gate/up: 448 of 4).
pub(crate) fn finish_copies(multiprocessors: usize, ctas: usize) -> usize {
    match ctas.div_ceil(multiprocessors.max(1)) {
        0 | 1 => 4,
        2 => 2,
        _ => 1,
    }
}

/// The CTA tile of one fused-GEMM launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ForwardTile {
    /// 64 x 64, 32 x 32 warp tiles (`lora_forward_gemm_<T>`): 91 registers
    /// (ptxas, sm_80; 96 on sm_90), 25.6 KB of static shared memory: 5 CTAs
    /// per SM.
    Small,
    /// 128 x 64, 64 x 32 warp tiles (`lora_forward_gemm_<T>_128x64`): twice
    /// the CTAs of `Big` on the same output, each half as long. 126
    /// registers (sm_80 and sm_90; no spills) and 52 KB of dynamic shared
    /// memory (`LORA_FWD_WIDE_SHARED_BYTES`: 4 pipeline slots of a 128 x 32
    /// and a 64 x 32 tile, or the 128 x 72 f32 output tile, plus the per-row
    /// adapter lists): 3 CTAs per SM on an A100 (shared memory; 4 fit an
    /// H100, [`TileCost`] counts 3).
    Wide,
    /// 128 x 128, 64 x 64 warp tiles (`lora_forward_gemm_<T>_128x128`):
    /// half the L2 sectors and shared wavefronts per mma of `Small`. 233
    /// registers (ptxas, sm_80; 237 on sm_90; no spills) and 72 KB of dynamic shared
    /// memory (`LORA_FWD_BIG_SHARED_BYTES`: 4 pipeline slots of two
    /// 128 x 32 tiles, or the 128 x 136 f32 output tile, plus the per-row
    /// adapter lists): 2 CTAs per SM on A100 and H100, limited by registers.
    Big,
}

/// What one CTA of a tile costs per 32-long K-step, in SM clocks, and how
/// many fit on an SM: the emulator's counts of the steady state
/// (`tests/forward_counters.rs`; dX's tiles: `tests/backward_counters.rs`,
/// `crate::backward::dx_tile`) with the per-SM rates of
/// docs/perf-model.md (one mma.sync m16n8k16 per 2 clocks, 4 warp
/// instructions and one shared wavefront per clock).
pub(crate) struct TileCost {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// Warps per CTA.
    pub(crate) warps: usize,
    pub(crate) ctas_per_sm: usize,
    /// Tensor-pipe clocks: 2 per mma.
    pub(crate) tensor: f64,
    /// Issue clocks: warp instructions / 4.
    pub(crate) issue: f64,
    /// Shared-memory clocks: wavefronts (ldmatrix and the cp.async stores).
    pub(crate) shared: f64,
}

impl TileCost {
    const fn of(tile: ForwardTile) -> TileCost {
        match tile {
            // 64 mma, 4.0 instructions and 3.0 wavefronts per mma.
            ForwardTile::Small => {
                TileCost { rows: 64, cols: 64, warps: 4, ctas_per_sm: 5, tensor: 128.0, issue: 64.0, shared: 192.0 }
            }
            // 128 mma, 2.75 instructions and 2.25 wavefronts per mma.
            ForwardTile::Wide => {
                TileCost { rows: 128, cols: 64, warps: 4, ctas_per_sm: 3, tensor: 256.0, issue: 88.0, shared: 288.0 }
            }
            // 256 mma, 2.06 instructions and 1.5 wavefronts per mma.
            ForwardTile::Big => {
                TileCost { rows: 128, cols: 128, warps: 4, ctas_per_sm: 2, tensor: 512.0, issue: 131.8, shared: 384.0 }
            }
        }
    }

    /// The fused-P tile (`lora_forward_gemm_<T>_128x256_p`): 128 x 256, 8
    /// warps of 64 x 64, one CTA per SM (255 registers on sm_80 and sm_90,
    /// no spills; 132 KB of dynamic shared memory). Per K-step the big
    /// tile's work twice (512 mma) plus P's 32 (two per k16 per warp), X,
    /// W0 and A's slice staged: 544 mma, 2.28 warp instructions and 1.43
    /// shared wavefronts per mma in the steady state (counted,
    /// `tests/forward_counters.rs`).
    const FUSED_P: TileCost =
        TileCost { rows: 128, cols: 256, warps: 8, ctas_per_sm: 1, tensor: 1088.0, issue: 310.4, shared: 775.7 };

    /// Clocks per K-step of the busiest SM for an `[m, n]` output on
    /// `multiprocessors` SMs: it runs `ceil(tiles / SMs)` CTAs, `resident`
    /// of them at a time; each pipe (tensor, shared) is a bound, and so is
    /// their sum with issue over the warps that can overlap them (at most
    /// 3 per scheduler): the model's rule (docs/perf-model.md), which
    /// charges a grid just past a whole wave of CTAs a whole extra CTA.
    fn busiest_sm_clocks(&self, multiprocessors: usize, m: usize, n: usize) -> f64 {
        self.busiest_sm_clocks_of(multiprocessors, m.div_ceil(self.rows) * n.div_ceil(self.cols))
    }

    /// The same for a launch of `ctas` CTAs of this tile (an output's tiles
    /// plus CTAs of other work the launch runs, charged as the model
    /// charges them: as CTAs like the others).
    pub(crate) fn busiest_sm_clocks_of(&self, multiprocessors: usize, ctas: usize) -> f64 {
        let busiest = ctas.div_ceil(multiprocessors.max(1)) as f64;
        let resident = (self.ctas_per_sm as f64).min(busiest);
        // The CTAs' warps over 4 schedulers.
        let warps_per_scheduler = resident * self.warps as f64 / 4.0;
        let issue_rate = (warps_per_scheduler / 4.0).min(1.0);
        let overlap = (self.tensor + self.issue + self.shared) / warps_per_scheduler.min(3.0);
        busiest * self.tensor.max(self.shared).max(self.issue / issue_rate).max(overlap)
    }
}

/// Picks the tile for an `[m, n]` output on a device of `multiprocessors`
/// SMs; deterministic for a shape and device, and the results are the same
/// bits whichever it is (each output element's reduction order does not
/// depend on the tile). Only f16/bf16 launches that are not split over K
/// have a choice (`half`, `splits`), and only with M of at least one
/// 128-row tile (decode-sized M would leave most of a 128-row tile's mma on
/// padding); the rest take 64x64. Among the three tiles, the one whose
/// busiest SM finishes first ([`TileCost`]): 128x128 moves the fewest
/// bytes per mma but has the fewest CTAs, so it wins on grids of many
/// whole waves (q/o, gate/up, down at M = 4096); 128x64 wins where the big
/// tile's grid is a little past a whole number of waves, or short of one
/// (k/v 4096 -> 1024 at M = 4096 on 108 SMs: 256 big tiles are 3 on the
/// busiest SM, 2.37 on average; 512 wide ones 5 against 4.74); 64x64 on
/// small grids. On a tie the bigger tile (fewer bytes).
pub(crate) fn forward_tile(multiprocessors: usize, m: usize, n: usize, half: bool, splits: usize) -> ForwardTile {
    let rows_filled = m >= LORA_FWD_BIG_TILE_M as usize;
    if !(half && splits == 1 && rows_filled) {
        return ForwardTile::Small;
    }
    let mut best = ForwardTile::Big;
    let mut best_clocks = TileCost::of(best).busiest_sm_clocks(multiprocessors, m, n);
    for tile in [ForwardTile::Wide, ForwardTile::Small] {
        let clocks = TileCost::of(tile).busiest_sm_clocks(multiprocessors, m, n);
        if clocks < best_clocks {
            (best, best_clocks) = (tile, clocks);
        }
    }
    best
}

/// What a shrink launch costs at least, in SM clocks: its launch (2 µs at
/// the A100's 1.41 GHz, the lower of the two clocks) plus reading X once at
/// DRAM bandwidth (the H100's 3350 GB/s at 1.83 GHz, 1831 bytes per clock,
/// the higher of the two). Both ends understate the shrink, so the fused-P
/// tile is taken only where it wins against a cheap shrink.
fn shrink_clocks(m: usize, k: usize, elem_bytes: usize) -> f64 {
    const LAUNCH_CLOCKS: f64 = 2820.0;
    const DRAM_BYTES_PER_CLOCK: f64 = 1831.0;
    LAUNCH_CLOCKS + (m * k * elem_bytes) as f64 / DRAM_BYTES_PER_CLOCK
}

/// Whether a forward of one adapter of rank `r` on `[m, k] x [n, k]` takes
/// the fused-P tile (`lora_forward_gemm_<T>_128x256_p`: P computed inside
/// the GEMM's CTAs from the X tiles they stage, no shrink launch) on a
/// device of `multiprocessors` SMs. It serves f16/bf16 (`half`) without
/// dropout, ranks that are whole 16-byte chunks up to
/// `LORA_FWD_FUSED_P_MAX_RANK`, M of at least one 128-row tile and K
/// unsplit; the caller adds what the kernel needs of the call (one adapter,
/// no per-row index, B 16-byte aligned). Among those, the whole forward's modeled
/// time decides: the fused-P tile's busiest SM over K (its 8 warps, one CTA
/// per SM, r/256 more mma) against the best 4-warp tile's
/// ([`forward_tile`]) plus the shrink launch ([`shrink_clocks`]). On
/// 132 SMs k/v 4096 -> 1024 at M = 4096 takes it (128 CTAs, one per SM);
/// on 108 SMs its 128 CTAs are 2 on the busiest SM and it does not; nor do
/// grids of many waves (q/o, gate/up: 6.25 % more mma outweighs the shrink).
/// Deterministic for a shape and device.
pub(crate) fn takes_fused_p(
    multiprocessors: usize,
    m: usize,
    n: usize,
    k: usize,
    r: usize,
    half: bool,
    dropped: bool,
) -> bool {
    r <= LORA_FWD_FUSED_P_MAX_RANK as usize
        && fused_p_serves(multiprocessors, m, n, k, r, half, dropped)
        && fused_p_models_faster(multiprocessors, m, n, k, 0.0)
}

/// What both fused-P tiles serve, whatever the rank's bound: f16/bf16
/// without dropout, a rank of whole 16-byte chunks, M of at least one
/// 128-row tile and K unsplit.
fn fused_p_serves(multiprocessors: usize, m: usize, n: usize, k: usize, r: usize, half: bool, dropped: bool) -> bool {
    half && !dropped && r % 8 == 0 && m >= LORA_FWD_FUSED_P_TILE_M as usize && k_splits(multiprocessors, m, n, k) == 1
}

/// Whether the fused-P tile's busiest SM over K, plus `extra_per_cta` SM
/// clocks for each of its CTAs, finishes before the best 4-warp tile's
/// ([`forward_tile`]) plus the shrink launch ([`shrink_clocks`]): the whole
/// forward's modeled time, for an unsplit f16/bf16 launch.
fn fused_p_models_faster(multiprocessors: usize, m: usize, n: usize, k: usize, extra_per_cta: f64) -> bool {
    let steps = k.div_ceil(LORA_FWD_TILE_K as usize) as f64;
    let base_tile = forward_tile(multiprocessors, m, n, true, 1);
    let two_launches =
        TileCost::of(base_tile).busiest_sm_clocks(multiprocessors, m, n) * steps + shrink_clocks(m, k, 2);
    let ctas = m.div_ceil(LORA_FWD_FUSED_P_TILE_M as usize) * n.div_ceil(LORA_FWD_FUSED_P_TILE_N as usize);
    let busiest = ctas.div_ceil(multiprocessors.max(1)) as f64;
    let fused = TileCost::FUSED_P.busiest_sm_clocks(multiprocessors, m, n) * steps + busiest * extra_per_cta;
    fused < two_launches
}

/// The cluster form's cost beyond the fused-P tile's K loop, in SM clocks
/// per CTA: the expand's k = 64 (768 mma more than rank 16's 256, at the
/// tile's 2 clocks per mma), two cluster barriers and 12 KB of distributed
/// shared memory (charged as one more K-step's shared traffic, 776 clocks).
const CLUSTER_EXTRA_CLOCKS: f64 = 768.0 * 2.0 + 776.0;

/// Whether a forward of one adapter of rank `r` on `[m, k] x [n, k]` takes
/// the fused-P tile in clusters (`lora_forward_gemm_<T>_128x256_p_cluster`,
/// sm_90 only, `sm90` the device being compute capability 9.0): the
/// `LORA_FWD_FUSED_P_CLUSTER` column tiles of a row block as one
/// thread-block cluster, each computing 16 of P's rank columns and reading
/// the others' through distributed shared memory, so ranks past
/// `LORA_FWD_FUSED_P_MAX_RANK` up to 16 per CTA of the cluster cost each CTA
/// what rank 16 does. Served: as [`takes_fused_p`] for ranks
/// 17..=16 x cluster (whole 16-byte chunks), with the grid's column tiles a
/// whole number of clusters; then the whole forward's modeled time decides
/// as there, the cluster's extra work ([`CLUSTER_EXTRA_CLOCKS`]) added per
/// CTA of the busiest SM. On 132 SMs k/v 4096 -> 1024 at M = 4096, r = 64
/// takes it (128 CTAs, 32 clusters of 4). Deterministic for a shape and device.
#[allow(clippy::too_many_arguments)]
pub(crate) fn takes_fused_p_cluster(
    multiprocessors: usize,
    m: usize,
    n: usize,
    k: usize,
    r: usize,
    half: bool,
    dropped: bool,
    sm90: bool,
) -> bool {
    let cluster = LORA_FWD_FUSED_P_CLUSTER as usize;
    sm90 && r > LORA_FWD_FUSED_P_MAX_RANK as usize
        && r <= LORA_FWD_FUSED_P_MAX_RANK as usize * cluster
        && n.div_ceil(LORA_FWD_FUSED_P_TILE_N as usize) % cluster == 0
        && fused_p_serves(multiprocessors, m, n, k, r, half, dropped)
        && fused_p_models_faster(multiprocessors, m, n, k, CLUSTER_EXTRA_CLOCKS)
}

/// What both fused-P tiles need of an EXPAND-mode `params` besides the
/// rank: f16/bf16, A given (`shrink_rhs`), one adapter (no per-row index,
/// ranks or scales arrays), a rank of whole 16-byte chunks and B 16-byte
/// aligned.
fn one_aligned_half_adapter<T: LoraDType>(params: &LoraGemmParams) -> bool {
    T::DTYPE.size_bytes() == 2
        && params.shrink_rhs != 0
        && params.row_adapter == 0
        && params.ranks == 0
        && params.scales == 0
        && params.rank % 8 == 0
        && params.ad_rhs % 16 == 0
}

impl LoraKernels {
    /// Launches `lora_forward_gemm_<T>_128x256_p_cluster` (sm_90, the
    /// `forward_sm90a` module) over the `[params.m, params.n]` output
    /// ([`takes_fused_p_cluster`]): the grid's x the column tiles, in
    /// clusters of `LORA_FWD_FUSED_P_CLUSTER` (the kernel's own
    /// `__cluster_dims__`); `params` as for [`LoraKernels::launch_fused_p`].
    ///
    /// # Safety
    /// As [`LoraKernels::launch_fused_p`], with the rank a multiple of 8 in
    /// 17..=16 x `LORA_FWD_FUSED_P_CLUSTER`, the column tiles a whole number
    /// of clusters and the device of compute capability 9.0.
    pub(crate) unsafe fn launch_fused_p_cluster<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        params: &LoraGemmParams,
    ) -> Result<()> {
        let cluster = LORA_FWD_FUSED_P_CLUSTER;
        let column_tiles = (params.n as u32).div_ceil(LORA_FWD_FUSED_P_TILE_N);
        let fits = one_aligned_half_adapter::<T>(params)
            && params.rank as u32 > LORA_FWD_FUSED_P_MAX_RANK
            && params.rank as u32 <= LORA_FWD_FUSED_P_MAX_RANK * cluster
            && column_tiles % cluster == 0;
        if !fits {
            return Err(LoraError::InvalidArgument {
                what: "params",
                value: format!("rank {}, n {}", params.rank, params.n),
                reason: "the fused-P cluster tile serves one adapter of an aligned rank in 17..=64, f16/bf16, \
                         column tiles a whole number of clusters",
            });
        }
        let suffix = T::DTYPE.kernel_suffix();
        // SAFETY: the caller's contract.
        unsafe {
            self.launch_fused_p_grid(
                stream,
                FORWARD_SM90A,
                &format!("lora_forward_gemm_{suffix}_128x256_p_cluster"),
                params,
            )
        }
    }

    /// Launches `lora_forward_gemm_<T>_128x256_p` over the `[params.m,
    /// params.n]` output: the fused forward with P computed inside
    /// ([`takes_fused_p`]); `params` as for the EXPAND-mode forward, with
    /// `ad_lhs` the P it writes and `shrink_rhs` A.
    ///
    /// # Safety
    /// As [`LoraKernels::launch_gemm`], and: `shrink_rhs` holds A `[rank, k]`,
    /// `ad_lhs` P `[m, rank]` (written, overlapping nothing else), `ad_rhs`
    /// B `[n, rank]` 16-byte aligned, one adapter (`row_adapter`, `ranks`, `scales` 0), rank a
    /// multiple of 8 up to `LORA_FWD_FUSED_P_MAX_RANK`.
    pub(crate) unsafe fn launch_fused_p<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        params: &LoraGemmParams,
    ) -> Result<()> {
        let fits =
            one_aligned_half_adapter::<T>(params) && params.rank > 0 && params.rank as u32 <= LORA_FWD_FUSED_P_MAX_RANK;
        if !fits {
            return Err(LoraError::InvalidArgument {
                what: "params",
                value: format!("rank {}", params.rank),
                reason: "the fused-P tile serves one adapter of an aligned rank up to 16, f16/bf16",
            });
        }
        let suffix = T::DTYPE.kernel_suffix();
        // SAFETY: the caller's contract.
        unsafe { self.launch_fused_p_grid(stream, FORWARD, &format!("lora_forward_gemm_{suffix}_128x256_p"), params) }
    }

    /// Launches `kernel` of `family`, a fused-P tile (plain or in clusters,
    /// whose dims the kernel declares itself), one CTA per 128 x 256 tile of
    /// the `[params.m, params.n]` output (grid x the column tiles), unsplit,
    /// with the dynamic shared memory it opts in to.
    ///
    /// # Safety
    /// As [`LoraKernels::launch_fused_p`] (or `launch_fused_p_cluster`) for
    /// the kernel named: it reads X, W0, A, B and bias and writes Y and P
    /// inside the extents the parameters describe.
    unsafe fn launch_fused_p_grid(
        &self,
        stream: &Arc<CudaStream>,
        family: KernelFamily,
        kernel: &str,
        params: &LoraGemmParams,
    ) -> Result<()> {
        let gemm = self.function(family, kernel)?;
        // Above the 48 KB a launch gets by default: opt in.
        gemm.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            LORA_FWD_FUSED_P_SHARED_BYTES as i32,
        )?;
        let config = LaunchConfig {
            grid_dim: (
                (params.n as u32).div_ceil(LORA_FWD_FUSED_P_TILE_N),
                (params.m as u32).div_ceil(LORA_FWD_FUSED_P_TILE_M),
                1,
            ),
            block_dim: (LORA_FWD_FUSED_P_THREADS, 1, 1),
            shared_mem_bytes: LORA_FWD_FUSED_P_SHARED_BYTES,
        };
        let params = LoraGemmParams { k_splits: 1, partials: 0, ..*params };
        let mut launch = stream.launch_builder(&gemm);
        launch.arg(&params);
        // SAFETY: the caller's contract (above) is what the kernel needs.
        unsafe { launch.launch(config) }?;
        Ok(())
    }

    /// Launches `lora_forward_gemm_<T>` (or its 128x128 / 128x64 tile) over
    /// the `[params.m, params.n]` output of an EXPAND-mode `params` (the
    /// fused forward or the expand; a shrink is the rank side's,
    /// [`LoraKernels::launch_shrink`]); `k_splits` and `partials` are filled
    /// in here. When the problem has a long reduction (the base GEMM's K) and too few output
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
        if params.ad_mode == LoraAdapterMode_LORA_ADAPTER_SHRINK as i32 {
            return Err(LoraError::InvalidArgument {
                what: "ad_mode",
                value: "SHRINK".to_string(),
                reason: "a shrink runs on the rank side (launch_shrink), not the forward GEMM",
            });
        }
        // The reduction the splits share: the base GEMM's K (an expand's K
        // is a rank: short, never split).
        let sms =
            self.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        let splits = if params.x != 0 { k_splits(sms, m, n, k) } else { 1 };
        let suffix = T::DTYPE.kernel_suffix();
        let tile = forward_tile(sms, m, n, T::DTYPE.size_bytes() == 2, splits);
        let dynamic = match tile {
            ForwardTile::Big => Some(("128x128", LORA_FWD_BIG_TILE_M, LORA_FWD_BIG_TILE_N, LORA_FWD_BIG_SHARED_BYTES)),
            ForwardTile::Wide => {
                Some(("128x64", LORA_FWD_WIDE_TILE_M, LORA_FWD_WIDE_TILE_N, LORA_FWD_WIDE_SHARED_BYTES))
            }
            ForwardTile::Small => None,
        };
        let (gemm, config) = if let Some((name, tile_m, tile_n, shared)) = dynamic {
            let gemm = self.function(FORWARD, &format!("lora_forward_gemm_{suffix}_{name}"))?;
            // Above the 48 KB a launch gets by default: opt in.
            gemm.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32)?;
            let grid = ((params.n as u32).div_ceil(tile_n), (params.m as u32).div_ceil(tile_m), 1);
            (gemm, LaunchConfig { grid_dim: grid, block_dim: (LORA_FWD_THREADS, 1, 1), shared_mem_bytes: shared })
        } else {
            let gemm = self.function(FORWARD, &format!("lora_forward_gemm_{suffix}"))?;
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
    use super::{
        decode_cluster_groups, decode_layout, finish_copies, forward_tile, k_splits, takes_decode_path, DecodeLayout,
        DecodeProblem, ForwardTile,
    };

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
    fn decode_finish_warps_by_grid() {
        // 32-column CTAs: k/v (N = 1024), q/o (4096), gate/up (14336).
        assert_eq!(finish_copies(108, 32), 4);
        assert_eq!(finish_copies(108, 108), 4);
        assert_eq!(finish_copies(108, 128), 2);
        assert_eq!(finish_copies(132, 128), 4);
        assert_eq!(finish_copies(108, 448), 1);
        assert_eq!(finish_copies(0, 1), 4);
    }

    #[test]
    fn decode_layout_by_shape() {
        let (sms, l2) = (108, 40 << 20);
        let llama = |k, n, r| DecodeProblem { m: 16, n, k, r_max: r, slots: 1, elem_bytes: 2 };
        let layout = |groups, splits| DecodeLayout { groups, splits };
        // W0 within L2: X's re-reads are free; the fewest partials.
        assert_eq!(decode_layout(sms, l2, &llama(4096, 1024, 16)), layout(1, 4));
        assert_eq!(decode_layout(sms, l2, &llama(4096, 4096, 16)), layout(1, 1));
        // W0 past L2: wide tiles, X read 57 (17) times instead of 449 (129).
        assert_eq!(decode_layout(sms, l2, &llama(4096, 14336, 16)), layout(8, 2));
        assert_eq!(decode_layout(sms, l2, &llama(14336, 4096, 64)), layout(8, 7));
        // Enough columns for one CTA per SM at every width: the widest.
        assert_eq!(decode_layout(sms, l2, &llama(64, 27648, 16)), layout(8, 1));
        assert_eq!(decode_layout(sms, l2, &llama(64, 13824, 16)), layout(4, 1));
        // Short K: one split per 512-long stage at most.
        assert_eq!(decode_layout(sms, l2, &llama(520, 100, 16)), layout(1, 2));
        assert_eq!(decode_layout(sms, l2, &llama(64, 8, 1)), layout(1, 1));
    }

    #[test]
    fn decode_cluster_groups_by_shape() {
        let (sms, l2) = (132, 50 << 20);
        let llama = |k, n, r, slots| DecodeProblem { m: 16, n, k, r_max: r, slots, elem_bytes: 2 };
        // W0 past L2: the fewest column tiles (X and A read by each), the narrowest of those.
        assert_eq!(decode_cluster_groups(sms, l2, &llama(4096, 14336, 16, 1)), Some(23));
        assert_eq!(decode_cluster_groups(sms, l2, &llama(14336, 4096, 16, 1)), Some(22));
        assert_eq!(decode_cluster_groups(sms, l2, &llama(4096, 14336, 64, 1)), Some(22));
        // W0 within L2: a CTA on every SM where the columns allow (19 tiles
        // of 7 groups: 152 CTAs), else the most CTAs; a group per warp at least.
        assert_eq!(decode_cluster_groups(sms, l2, &llama(4096, 4096, 16, 1)), Some(7));
        assert_eq!(decode_cluster_groups(sms, l2, &llama(4096, 1024, 16, 1)), Some(7));
        assert_eq!(decode_cluster_groups(sms, l2, &llama(4096, 4096, 256, 1)), Some(7));
        // P's 8 groups (4 slots of 64) take every warp: W0's from 1 group.
        assert_eq!(decode_cluster_groups(sms, l2, &llama(4096, 1024, 64, 4)), Some(1));
        // P's columns past 8 groups (256): the two launches.
        assert_eq!(decode_cluster_groups(sms, l2, &llama(4096, 4096, 72, 16)), None);
        assert_eq!(decode_cluster_groups(sms, l2, &llama(4096, 4096, 257, 1)), None);
    }

    #[test]
    fn splits_only_when_tiles_are_few_and_k_is_long() {
        // Decode on a 108-SM device: 1 x 64 tiles, K = 4096 (128 steps): 4 splits.
        assert_eq!(k_splits(108, 1, 4096, 4096), 4);
        // Enough tiles already: no split.
        assert_eq!(k_splits(108, 4096, 4096, 4096), 1);
        // At least one tile per SM (1024³: 256 tiles on 132 SMs): no split either.
        assert_eq!(k_splits(132, 1024, 1024, 1024), 1);
        assert_eq!(k_splits(132, 512, 1024, 1024), 3);
        // Short K: no split (fewer than 2 x MIN_STEPS_PER_SPLIT steps).
        assert_eq!(k_splits(108, 1, 64, 224), 1);
        // One tile, very long K: capped.
        assert_eq!(k_splits(108, 1, 64, 1 << 20), 16);
    }

    #[test]
    fn tile_by_the_busiest_sm() {
        use ForwardTile::{Big, Small, Wide};
        // Many whole waves: the big tile (fewest bytes per mma). q/o, gate/up at M = 4096.
        assert_eq!(forward_tile(108, 4096, 4096, true, 1), Big);
        assert_eq!(forward_tile(132, 4096, 14336, true, 1), Big);
        assert_eq!(forward_tile(108, 4096, 14336, true, 1), Big);
        // k/v at M = 4096 on 108 SMs: 256 big tiles put 3 on the busiest SM
        // (2.37 on average), 512 wide ones 5 (4.74); on 132 SMs the big
        // tiles are 2 per SM (1.94 on average) and win.
        assert_eq!(forward_tile(108, 4096, 1024, true, 1), Wide);
        assert_eq!(forward_tile(132, 4096, 1024, true, 1), Big);
        // 2048 x 1024: 128 big tiles, one wave of 2 per SM on 108 SMs but
        // 1 per SM (4 warps: no overlap) on 132; 256 wide ones win on both.
        assert_eq!(forward_tile(108, 2048, 1024, true, 1), Wide);
        assert_eq!(forward_tile(132, 2048, 1024, true, 1), Wide);
        // Exactly one big tile per SM (12 x 9): 2 wide ones per SM instead.
        assert_eq!(forward_tile(108, 1536, 1152, true, 1), Wide);
        // Two big tiles per SM (12 x 18): both resident, and half the bytes.
        assert_eq!(forward_tile(108, 1536, 2304, true, 1), Big);
        // Small grids: 64x64, whose 5 CTAs per SM fill the device.
        assert_eq!(forward_tile(108, 1024, 1024, true, 1), Small);
        assert_eq!(forward_tile(132, 1024, 1024, true, 1), Small);
        assert_eq!(forward_tile(108, 512, 1024, true, 1), Small);
        // Decode-sized M over a wide N: each 128-row tile 7/8 padding.
        assert_eq!(forward_tile(108, 16, 14336, true, 1), Small);
        assert_eq!(forward_tile(108, 127, 14336, true, 1), Small);
        assert_eq!(forward_tile(108, 128, 14336, true, 1), Wide);
        // f32, split K: always 64x64.
        assert_eq!(forward_tile(108, 4096, 4096, false, 1), Small);
        assert_eq!(forward_tile(108, 4096, 4096, true, 2), Small);
    }

    #[test]
    fn fused_p_where_the_whole_forward_models_faster() {
        use super::takes_fused_p;
        // k/v 4096 -> 1024 at M = 4096 on 132 SMs: 128 CTAs, one per SM,
        // against 256 big tiles (2 per SM) and a shrink launch.
        assert!(takes_fused_p(132, 4096, 1024, 4096, 16, true, false));
        assert!(takes_fused_p(132, 4096, 1024, 4096, 8, true, false));
        // On 108 SMs the same 128 CTAs are 2 on the busiest SM.
        assert!(!takes_fused_p(108, 4096, 1024, 4096, 16, true, false));
        // Many waves: 6.25 % more mma costs more than the shrink (q/o,
        // gate/up, down at M = 4096).
        for sms in [108, 132] {
            assert!(!takes_fused_p(sms, 4096, 4096, 4096, 16, true, false));
            assert!(!takes_fused_p(sms, 4096, 14336, 4096, 16, true, false));
            assert!(!takes_fused_p(sms, 4096, 4096, 14336, 16, true, false));
            // Small grids: one 8-warp CTA per SM leaves the tensor pipe idle.
            assert!(!takes_fused_p(sms, 1024, 1024, 1024, 16, true, false));
            assert!(!takes_fused_p(sms, 2048, 1024, 1024, 16, true, false));
        }
        // 12 x 9 tiles on 108 SMs over a short K (the tests' shape).
        assert!(takes_fused_p(108, 1536, 2304, 128, 16, true, false));
        // What the tile does not serve: ranks past 16 or not whole chunks,
        // f32, dropout, fewer rows than a tile.
        assert!(!takes_fused_p(132, 4096, 1024, 4096, 32, true, false));
        assert!(!takes_fused_p(132, 4096, 1024, 4096, 64, true, false));
        assert!(!takes_fused_p(132, 4096, 1024, 4096, 12, true, false));
        assert!(!takes_fused_p(132, 4096, 1024, 4096, 16, false, false));
        assert!(!takes_fused_p(132, 4096, 1024, 4096, 16, true, true));
        assert!(!takes_fused_p(132, 127, 1024, 4096, 16, true, false));
    }

    #[test]
    fn fused_p_cluster_where_the_whole_forward_models_faster() {
        use super::takes_fused_p_cluster;
        // k/v at M = 4096 on 132 SMs, ranks past 16: 32 clusters of 4.
        for r in [24, 32, 48, 64] {
            assert!(takes_fused_p_cluster(132, 4096, 1024, 4096, r, true, false, true), "r = {r}");
        }
        // Only on a 9.0 device, only ranks past 16 and up to 64, whole chunks.
        assert!(!takes_fused_p_cluster(132, 4096, 1024, 4096, 64, true, false, false));
        assert!(!takes_fused_p_cluster(132, 4096, 1024, 4096, 16, true, false, true));
        assert!(!takes_fused_p_cluster(132, 4096, 1024, 4096, 72, true, false, true));
        assert!(!takes_fused_p_cluster(132, 4096, 1024, 4096, 60, true, false, true));
        assert!(!takes_fused_p_cluster(132, 4096, 1024, 4096, 64, false, false, true));
        assert!(!takes_fused_p_cluster(132, 4096, 1024, 4096, 64, true, true, true));
        // Column tiles not a whole number of clusters (N = 768: 3 tiles).
        assert!(!takes_fused_p_cluster(132, 4096, 768, 4096, 64, true, false, true));
        // 108 SMs: 128 CTAs are 2 on the busiest SM; many waves: the shrink is cheap.
        assert!(!takes_fused_p_cluster(108, 4096, 1024, 4096, 64, true, false, true));
        assert!(!takes_fused_p_cluster(132, 4096, 4096, 4096, 64, true, false, true));
    }

    #[test]
    fn busiest_sm_charges_the_tail_wave() {
        let big = super::TileCost::of(ForwardTile::Big);
        // 216 tiles on 108 SMs: 2 per SM, both resident; one more tile adds a third.
        let full = big.busiest_sm_clocks(108, 128 * 12, 128 * 18);
        let past = big.busiest_sm_clocks(108, 128 * 217, 128);
        assert!((past / full - 1.5).abs() < 1e-9, "{past} vs {full}");
        // Deterministic: the same shape and device, the same clocks.
        assert_eq!(full, big.busiest_sm_clocks(108, 1536, 2304));
    }
}

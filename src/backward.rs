//! The backward pass: given dY, the gradients of A, B and X (docs/contract.md's names
//! and layouts), for one adapter or one adapter per row:
//!
//! ```text
//! G  = dY·B          [M, r]   (an intermediate, rounded to T)
//! dB = s·dYᵀ·P       [N, r]
//! dA = s·Gᵀ·X        [r, K]
//! dX = dY·W0 + s·G·A [M, K]
//! ```
//!
//! ```
//! use fused_lora::cudarc::driver::CudaContext;
//! use fused_lora::{Adapter, BackwardInputs, BackwardOutput, GradMode, Linear, LoraKernels};
//! use fused_lora::half::bf16;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // Without a CUDA driver (plain `cargo test` on a machine without one) there is nothing to run.
//! # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
//! let ctx = CudaContext::new(0)?;
//! let stream = ctx.default_stream();
//! let kernels = LoraKernels::new(&ctx);
//! let (m, k, n, r) = (16, 256, 128, 8);
//! let x = stream.clone_htod(&vec![bf16::ONE; m * k])?;
//! let w0 = stream.clone_htod(&vec![bf16::ZERO; n * k])?;
//! let a = stream.clone_htod(&vec![bf16::ONE; r * k])?;
//! let b = stream.clone_htod(&vec![bf16::ONE; n * r])?;
//! let dy = stream.clone_htod(&vec![bf16::ONE; m * n])?;
//! let (mut da, mut db, mut dx) =
//!     (stream.alloc_zeros::<bf16>(r * k)?, stream.alloc_zeros::<bf16>(n * r)?, stream.alloc_zeros::<bf16>(m * k)?);
//!
//! let linear = Linear { weight: w0.as_view(), bias: None, n, k };
//! let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale: 2.0 };
//! let mut out = BackwardOutput {
//!     da: da.as_view_mut(),
//!     db: db.as_view_mut(),
//!     dx: dx.as_view_mut(),
//!     g: None,
//!     mode: GradMode::Overwrite,
//! };
//! // No P kept from the forward: it is recomputed.
//! let inputs = BackwardInputs { dy: dy.as_view(), x: x.as_view(), p: None, dropout: None };
//! kernels.backward(&stream, &inputs, &linear, &adapter, &mut out)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Numerics
//! f32 accumulation, each stored value rounded once to T, with the rounding
//! points of `fused_lora::reference::backward`: G is stored in T and the dA
//! and dX kernels read it from there; dA, dB and dX are rounded once at the
//! end (after adding the old gradient in f32 with [`GradMode::Accumulate`]).
//! P, when the caller kept it from the forward, is used as stored; otherwise
//! the forward's own shrink recomputes it (the same values the forward wrote).
//!
//! # Determinism
//! dA and dB reduce over the rows of M. A CTA walks all of an adapter's rows
//! for its output tile, its warps taking fixed steps of 32 rows each and
//! adding their sums in warp order (which mode, a CTA or a warp per adapter,
//! is chosen from the shape alone); the decode path's split sums of dX are
//! added in split order. No floating-point atomics anywhere and no f32
//! partials for dA, dB or G, so two runs give bit-identical gradients.
//!
//! # Launches
//! Two to six launches on the stream, no host synchronisation: with
//! per-row indices, the rows grouped by adapter (`lora_group_rows`, a stable
//! counting sort on the device); the shrink (only without P); G with dB in
//! one launch (both read dY); dA; dX (plus a split sum on the decode path).
//! f16/bf16 dX without dropout or split runs dA's CTAs in its own launch
//! where they fit beside dX's tiles (a last grid column of the 128×128
//! launch, `lora_backward_dx_da_<T>_128x128`, or a last column or row of the
//! 64×64 one, `lora_backward_dx_da_<T>`; the rule: `small_da_placement`,
//! docs/performance.md), saving dA's launch.
//! The rank side (shrink, G, dB, dA: cuda/rank_side.cuh) runs on 32 × 32
//! output tiles narrow in the rank (32 × 64 for ranks past 32 where
//! `grad_cols` or `fused_da_cols` takes them: the wide operand staged
//! once for both 32-column halves), over the grouped rows, so scattered
//! adapters cost what their rows cost; dX is a tiled GEMM (64×64 output
//! tiles, f16/bf16 on tensor cores with f32 accumulation, f32 on FMA;
//! f16/bf16 dX on large grids takes a 128×128 tile, picked by `dx_tile` as
//! the forward picks its own, docs/performance.md). Every operand is read
//! in its stored layout (W0 as `[N, K]`, B as `[N, r]`, A as `[r, K]`: the
//! tiles are transposed on their way into the tensor cores, no transposed
//! copy is made). dX is fused the way the forward is: the adapter term
//! `s·G·A` and the base term `dY·W0` on one accumulator, dX written once
//! (f16/bf16: the scaled adapter term first, the base steps added onto it,
//! as the forward does, so both of dX's tiles give the same bits; f32: the
//! two terms summed apart and added at the end). There is no alignment
//! requirement: operands whose row stride and base allow 16-byte copies
//! take the fast path, others are loaded element by element.
//!
//! On a compute capability 9.0 device (H100, H200), dX with one adapter and
//! no dropout takes a Hopper kernel instead (`lora_backward_dx_<T>_sm90a`:
//! TMA, mbarriers, wgmma; `backward::hopper`, docs/hopper.md) when TMA can
//! read dY, W0, G and A (16-byte bases, N, K and r multiples of 8) and the
//! grid would not split; dA then takes its own launch before it. The same
//! formula and order (the scaled adapter term first), so the same tolerance
//! and bit-identical reruns; `FUSED_LORA_HOPPER=0` turns it off.
//!
//! # Small M (decode)
//! When dX has fewer 64×64 output tiles than the device has SMs, its
//! reduction steps (N, plus the rank) are split over several CTAs per tile
//! by the forward's rule, and a small launch adds the f32 partials in split
//! order and rounds once (deterministic on a given device).
//!
//! # Counted efficiency (emulator counters, `tests/backward_counters.rs`)
//! For the rank side and dX (f16 and bf16; tile-aligned M = 128,
//! K ∈ {64, 128}, N ∈ {128, 192}, r ∈ {16, 64}):
//! - tensor-core instructions: exactly the FLOP minimum (`⌈rows/16⌉·⌈cols/8⌉·
//!   ⌈reduction/16⌉`) for every launch at both ranks (the rank side issues
//!   mma only up to the rank's multiple of 16);
//! - global loads: sectors × 32 bytes equal the tile-reuse minimum (each CTA
//!   reads its operand rows once; every sector fetched is used); with four
//!   adapters the rank side reads no more than with one, plus the grouped
//!   row indices each CTA gathers through;
//! - zero shared-memory bank conflicts (ldmatrix, ldmatrix.trans, cp.async
//!   and epilogue stores); stores equal the output bytes (no partials);
//! - the rank side's loops in their steady state (r = 16): 21.5 (G with dB)
//!   and 20.4 (dA) warp instructions per mma, asserted at most 22;
//! - dX's reduction loop in its steady state (two runs differing only in N,
//!   r = 16): on the 64×64 tile (M = K = 128) 4.56 warp instructions, 4
//!   global load sectors and 3 shared wavefronts per mma.sync (CUTLASS's
//!   Sm80 GEMM on the same tiles: 5.08, 4 and 3); on the 128×128 tile
//!   (M = 1536, K = 1152: one tile per emulated SM) 2.22, 2 and 1.5;
//!   asserted at most 5, and the big tile's loads and wavefronts at most
//!   half (plus 5 %) the small one's; the 128×128 dX also issues exactly the
//!   FLOP minimum and reads the 128×128 tile-reuse minimum;
//! - `ptxas -v` for sm_80 and sm_90: no spills, no stack frame
//!   (`tests/ptxas.rs`); sm_80: dX f16/bf16 121 registers on 64×64 (4 CTAs
//!   per SM; 127 with dA's CTAs in the launch, 33 KB of static shared
//!   memory: still 4), 232 on 128×128 (2 CTAs per SM, 72 KB of shared memory each);
//!   the rank side's 256-thread CTAs 104 (G with dB) and 113 (dA)
//!   registers, 2 CTAs per SM.
//!
//! # Dropout
//! PEFT's `lora_dropout` on the adapter input, as docs/contract.md states it: pass the
//! forward's [`Dropout`] (p, seed, offset) and the kernels regenerate the
//! mask from Philox-4x32-10 (keyed as `fused_lora::reference::philox`), so no
//! `[M, K]` mask is stored: `dA = s·Gᵀ·X̃` with `X̃ = round_T(X·1/(1−p))` on
//! kept elements and 0 elsewhere, and the adapter term of dX is multiplied by
//! the mask over `1 − p`. Without P, it is recomputed by the forward's shrink
//! with the same dropout (the mask applied as X is staged; X̃ is never
//! stored).
//!
//! # Several adapters
//! [`LoraKernels::backward_multi`] takes the forward's stack and per-row
//! indices. `dA_l` and `dB_l` sum only the rows whose index is `l`; an adapter
//! no row uses gets exact zeros, and the padding past each adapter's rank is
//! written as 0 (left as it was with [`GradMode::Accumulate`]) and never read
//! from the inputs. An out-of-range index is reported through
//! [`AdapterStatus`](crate::AdapterStatus), as in the forward; such a row gets the base dX only.

pub(crate) mod hopper;

use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{
    CudaStream, CudaView, CudaViewMut, DevicePtr, DeviceRepr, DeviceSlice, LaunchConfig, PushKernelArg,
};

use crate::dropout::MaskFields;
use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::forward::launch::{check_grid, k_splits};
use crate::forward::{check_linear, check_stack, AdapterStack, Linear, RowAdapters};
use crate::kernels::{LoraKernels, BACKWARD};
use crate::merge::Adapter;
use crate::params::{
    LoraAdapterMode_LORA_ADAPTER_SHRINK, LoraBwdParams, LoraBwdReduction, LoraBwdReduction_LORA_BWD_REDUCE_DX,
    LoraGemmParams, LORA_BWD_BIG_SHARED_BYTES, LORA_BWD_BIG_TILE_COLS, LORA_BWD_BIG_TILE_ROWS, LORA_BWD_GEMM_THREADS,
    LORA_BWD_RANK_THREADS, LORA_BWD_RANK_WIDE_GRAD_THREADS, LORA_BWD_RANK_WIDE_G_DB_THREADS, LORA_BWD_THREADS,
    LORA_BWD_TILE_COLS, LORA_BWD_TILE_ROWS,
};
use crate::rank_side::{row_tiles, RowGroups, RANK_TILE, WIDE_SUFFIX};
use crate::reference::Dropout;
use crate::validate::{
    check_context, check_dim, check_k_aligned, check_len, check_no_alias, check_rows, check_scale, rows_of, Pointers,
    Span,
};
use hopper::DxOperands;

/// The output tile of the tiled launches.
const TILE_ROWS: usize = LORA_BWD_TILE_ROWS as usize;
const TILE_COLS: usize = LORA_BWD_TILE_COLS as usize;
/// dX's big output tile.
const BIG_TILE_ROWS: usize = LORA_BWD_BIG_TILE_ROWS as usize;
const BIG_TILE_COLS: usize = LORA_BWD_BIG_TILE_COLS as usize;

/// The CTA tile of a dX launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DxTile {
    /// 64 × 64, 32 × 32 warp tiles (`lora_backward_dx_<T>`): 121 registers
    /// for f16/bf16 (ptxas, sm_80; no spills), 4 CTAs per SM.
    Small,
    /// 128 × 128, 64 × 64 warp tiles (`lora_backward_dx_<T>_128x128`): half
    /// the L2 sectors and shared wavefronts per mma, a quarter of the CTAs.
    /// 232 registers (240 with dropout; ptxas, sm_80; no spills) and 72 KB of dynamic shared
    /// memory (`LORA_BWD_BIG_SHARED_BYTES`: 4 pipeline slots of a 128 × 32
    /// and a 32 × 128 tile, or the 128 × 136 f32 output tile, plus the
    /// per-row adapter lists): 2 CTAs per SM on A100 and H100.
    Big,
}

/// Picks dX's tile for an `[m, k]` output reduced over `n` plus the rank,
/// on a device of `multiprocessors` SMs, the way the forward picks its own
/// (`forward_tile`): deterministic for a shape and device, and the same
/// bits either way (each element's reduction order does not depend on the
/// tile). The 128 × 128 tile when the type has it (f16/bf16: `half`), the
/// launch is not split over the reduction (`splits`, from m, k and n by the
/// decode rule: a split means too few tiles already), M fills at least one
/// tile row (decode-sized M would leave most of each 128-row tile's mma on
/// padding), and its grid still gives every SM at least one CTA; otherwise
/// (small grids, decode) 64 × 64, whose 4× more CTAs fill the device.
/// Dropout does not change the pick: it has its own 128 × 128 entry point.
pub(crate) fn dx_tile(multiprocessors: usize, m: usize, k: usize, half: bool, splits: usize) -> DxTile {
    let big_tiles = m.div_ceil(BIG_TILE_ROWS) * k.div_ceil(BIG_TILE_COLS);
    if half && splits == 1 && m >= BIG_TILE_ROWS && big_tiles >= multiprocessors {
        DxTile::Big
    } else {
        DxTile::Small
    }
}

// SAFETY: a plain `#[repr(C)]` struct of integers and floats, generated from
// the header the kernels include.
unsafe impl DeviceRepr for LoraBwdParams {}

/// Whether the gradients overwrite what the output buffers hold or add to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradMode {
    /// `grad = computed`.
    Overwrite,
    /// `grad = round_T(grad + computed)`, the sum taken in f32.
    Accumulate,
}

/// Where the backward pass writes. Shapes for one adapter (for a stack:
/// dA `[L, r_max, k]`, dB `[L, n, r_max]`, G `[m, r_max]`):
/// dA `[r, k]`, dB `[n, r]`, dX `[m, k]`, and G `[m, r]` if wanted (always
/// overwritten: it is an intermediate; without it a scratch G is used).
pub struct BackwardOutput<'a, T> {
    /// dA `[r, k]` (`[L, r_max, k]` for a stack).
    pub da: CudaViewMut<'a, T>,
    /// dB `[n, r]` (`[L, n, r_max]` for a stack).
    pub db: CudaViewMut<'a, T>,
    /// dX `[m, k]`.
    pub dx: CudaViewMut<'a, T>,
    /// G = dY·B `[m, r]` (`[m, r_max]`), if wanted; always overwritten.
    pub g: Option<CudaViewMut<'a, T>>,
    /// Whether dA, dB and dX are overwritten or added to.
    pub mode: GradMode,
}

/// The problem one call describes, after validation.
#[derive(Clone, Copy)]
struct Dims {
    m: usize,
    n: usize,
    k: usize,
    r_max: usize,
    num_adapters: usize,
}

/// Warps of a rank-side CTA.
const RANK_WARPS: usize = (LORA_BWD_RANK_THREADS / 32) as usize;

/// Warps of dX's 128×128 CTA, which also run dA's CTAs in its launch.
const BIG_TILE_WARPS: usize = (LORA_BWD_GEMM_THREADS / 32) as usize;

/// The most dA tiles one CTA of dX's 128×128 launch takes (its last column has one
/// CTA per 128-row tile row): beyond it, a dA CTA would run several times
/// as long as a dX tile and finish the launch alone, so dA takes a launch
/// of its own (Llama-3-8B at M = 4096: 4 at r = 16 and 8 at r = 64 for
/// K = 4096; 14 and 28 for down's K = 14336).
const DA_TILES_PER_DX_ROW: usize = 8;

/// Warps of the `_r64` dA CTAs.
const WIDE_GRAD_WARPS: usize = (LORA_BWD_RANK_WIDE_GRAD_THREADS / 32) as usize;

/// Warps of the `_r64` G-with-dB CTAs: 6, two CTAs per SM (3 warps per
/// scheduler where two 4-warp CTAs left 2; docs/performance.md).
const WIDE_G_DB_WARPS: usize = (LORA_BWD_RANK_WIDE_G_DB_THREADS / 32) as usize;

/// Warps of the `_r64` CTAs of the rank-side gradient launch `name`
/// (`"g_db"` or `"da"`): what the host divides adapters by in warp mode.
pub(crate) fn wide_grad_warps(name: &str) -> usize {
    if name == "g_db" {
        WIDE_G_DB_WARPS
    } else {
        WIDE_GRAD_WARPS
    }
}

/// Rank columns of a rank-side gradient launch (G with dB, or dA alone)
/// whose grid has `wide_ctas` CTAs per 64 rank columns, on a device of
/// `multiprocessors` SMs, and the kernel's suffix: 64 (`_r64`: 6 warps for
/// G with dB, 4 for dA; dY or X staged once for both 32-column halves, B or
/// P read once per tile for all 64 columns) for ranks past 32 where that
/// grid gives every SM a CTA; else 32 (8 warps). On smaller grids the
/// 64-wide CTA's longer walk over fewer warps is the launch's time
/// (docs/performance.md, "G, dB and dA on 64 rank columns"). A function of
/// the shape and the SM count alone; the 6- and 4-warp CTAs add 6 or 4 warp
/// partials where the 8-warp ones add 8, so G, dB and dA's bits are fixed
/// for a shape and device.
pub(crate) fn grad_cols(multiprocessors: usize, wide_ctas: usize, r_max: usize) -> (usize, &'static str) {
    if r_max > RANK_TILE && wide_ctas >= multiprocessors {
        (2 * RANK_TILE, WIDE_SUFFIX)
    } else {
        (RANK_TILE, "")
    }
}

/// Rank columns of each dA tile in dX's 128×128 launch, and the kernel's
/// suffix: 64 (`lora_backward_dx_da_<T>_128x128_r64`) for ranks past 32,
/// where one staged X tile then feeds both 32-column halves (X staged once
/// instead of twice; the dX kernel's registers and shared memory already
/// bound its occupancy, so the wider tile costs none); else 32. The bits are
/// the same either way (each half's sums are the same warps' steps in the
/// same order), so the rule is free to depend on the rank alone.
pub(crate) fn fused_da_cols(r_max: usize) -> (usize, &'static str) {
    if r_max > RANK_TILE {
        (2 * RANK_TILE, "_r64")
    } else {
        (RANK_TILE, "")
    }
}

/// K columns of each dA tile in dX's 128×128 launch: 64 for ranks past 32
/// (the `_r64` kernel's warp tile is 64 K columns by 64 rank columns: one
/// staged G tile feeds two X tiles' mma), else 32. Like
/// [`fused_da_cols`], free of the bits: each accumulator sees the same
/// warps' steps in the same order whatever the tile's width.
pub(crate) fn fused_da_wide(r_max: usize) -> usize {
    if r_max > RANK_TILE {
        2 * RANK_TILE
    } else {
        RANK_TILE
    }
}

/// The same for dX's 64×64 launch (one dA CTA per 64-row tile row): half
/// the 128×128 limit, a 64×64 dX tile staging half the bytes of a 128×128
/// one per reduction step (2048 × 1024 × 1024: 1 at r = 16, 2 at r = 64;
/// 1024³: 2 and 4).
const DA_TILES_PER_SMALL_DX_ROW: usize = 4;

/// Whether dX's 64×64 launch on `sms` SMs also takes dA, `da_per_cta` dA
/// tiles to each CTA of its last column or row: at most
/// [`DA_TILES_PER_SMALL_DX_ROW`], and a dA CTA's staged bytes at most twice
/// what one SM's share of dX's tiles stages. A dA tile stages M rows of two
/// 32-wide tiles (128 bytes a row in f16/bf16), a dX tile (N + r) reduction
/// rows of two 64-wide ones (256 bytes a row); an SM holds max(1, tiles /
/// SMs) dX tiles. Past that the dA CTAs (4 warps, where dA's own launch has
/// 8) would finish the launch alone, later than dX plus dA's own launch
/// (a long M against a short reduction: M = 4111, N = K = 8 has one dA tile
/// of 4111 rows beside dX tiles of one step). Deterministic for a shape and
/// an SM count.
pub(crate) fn small_dx_takes_da(sms: usize, m: usize, n: usize, k: usize, r_max: usize, da_per_cta: usize) -> bool {
    let dx_tiles = m.div_ceil(TILE_ROWS) * k.div_ceil(TILE_COLS);
    // Both sides times the SM count: integers only.
    let da_bytes = da_per_cta * m * 128 * sms;
    let sm_dx_bytes = (n + r_max) * 256 * dx_tiles.max(sms);
    da_per_cta <= DA_TILES_PER_SMALL_DX_ROW && da_bytes <= 2 * sm_dx_bytes
}

/// Where dX's launch runs dA's CTAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FusedDa {
    /// The 128×128 launch's last grid column, one CTA per tile row.
    Big,
    /// The 64×64 launch's last grid column, one CTA per 64-row tile row.
    SmallColumn,
    /// The 64×64 launch's last grid row, one CTA per 64-column tile.
    SmallRow,
}

/// Where dX's 64×64 launch on `sms` SMs puts dA's `da_tiles` tiles (all
/// rank tiles), if anywhere: a last grid column (`ceil(m / 64)` dA CTAs) or
/// a last grid row (`ceil(k / 64)`), among those [`small_dx_takes_da`]
/// accepts, the one that puts fewer CTAs on the busiest SM
/// (`ceil(CTAs / SMs)`: the model's tail rule, docs/perf-model.md), then
/// fewer dA tiles per CTA, then the column. 2048 × 1024 × 1024 on 132 SMs:
/// 512 dX tiles; a column of 32 dA CTAs makes 544 CTAs, 5 on the busiest SM
/// (one past the 4 resident: a second round of memory latency), a row of 16
/// makes 528, 4 on each.
pub(crate) fn small_da_placement(
    sms: usize,
    m: usize,
    n: usize,
    k: usize,
    r_max: usize,
    da_tiles: usize,
) -> Option<FusedDa> {
    let (rows, cols) = (m.div_ceil(TILE_ROWS), k.div_ceil(TILE_COLS));
    [(FusedDa::SmallColumn, rows), (FusedDa::SmallRow, cols)]
        .into_iter()
        .filter_map(|(place, ctas)| {
            let per_cta = da_tiles.div_ceil(ctas);
            small_dx_takes_da(sms, m, n, k, r_max, per_cta).then_some((
                place,
                (rows * cols + ctas).div_ceil(sms),
                per_cta,
            ))
        })
        .min_by_key(|&(_, busiest, per_cta)| (busiest, per_cta))
        .map(|(place, _, _)| place)
}

impl Dims {
    /// Whether the rows carry adapter indices (grouped on the device first).
    fn grouped(&self, base: &LoraBwdParams) -> bool {
        base.row_adapter != 0
    }

    /// Whether dB and dA give each warp an adapter of its own (warp mode)
    /// rather than each CTA: when the rows per adapter, on average, would not
    /// give every warp of a CTA a step (fewer than 8 x 32). A function of the
    /// shape alone, so the summation order (and the bits) are fixed for it.
    fn rank_warp_mode(&self) -> bool {
        self.m < self.num_adapters * RANK_WARPS * RANK_TILE
    }
}

/// What the backward pass reads besides the layer and the adapter: named
/// fields, so that dY and X (both `[m, …]` views of T), or P and the dropout,
/// cannot be swapped by position.
pub struct BackwardInputs<'a, T> {
    /// dY `[m, n]`: the gradient of the forward's output Y.
    pub dy: CudaView<'a, T>,
    /// X `[m, k]`: the forward's input. M is read from its length.
    pub x: CudaView<'a, T>,
    /// P = X·Aᵀ (unscaled, as [`LoraKernels::forward`] or
    /// [`LoraKernels::shrink`] writes it), `[m, r]` (`[m, r_max]` for a
    /// stack), if the forward kept it; `None`: recomputed.
    pub p: Option<CudaView<'a, T>>,
    /// The forward's dropout on the adapter input, if it had one: the mask is
    /// regenerated from it.
    pub dropout: Option<Dropout>,
}

impl LoraKernels {
    /// The backward pass with one adapter: G, dB, dA, dX from dY.
    ///
    /// # Arguments
    /// - `inputs`: dY `[m, n]`, X `[m, k]`, the kept P `[m, r]` or `None`,
    ///   the forward's dropout (see [`BackwardInputs`]);
    /// - `linear`: the forward's W0 `[n, k]` (the bias gets no gradient and
    ///   is not read);
    /// - `adapter`: A `[r, k]`, B `[n, r]`, s;
    /// - `out`: the gradients and how to store them.
    ///
    /// # Errors
    /// [`LoraError::ShapeMismatch`] for a buffer whose length is not its
    /// shape's; [`LoraError::RowsDisagree`] when dY, P, dX or G holds another
    /// number of rows than X; [`LoraError::Misaligned`] for a K the forward's shrink cannot
    /// take (only when P is recomputed); [`LoraError::InvalidArgument`] for a
    /// zero or too large dimension, a non-finite scale or a dropout p outside
    /// `[0, 1)`;
    /// [`LoraError::Aliasing`] if an output overlaps an input or another
    /// output; [`LoraError::ContextMismatch`]; [`LoraError::Driver`].
    pub fn backward<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        inputs: &BackwardInputs<'_, T>,
        linear: &Linear<'_, T>,
        adapter: &Adapter<'_, T>,
        out: &mut BackwardOutput<'_, T>,
    ) -> Result<()> {
        let BackwardInputs { dy, x, p, dropout } = inputs;
        let (p, dropout) = (p.as_ref(), dropout.as_ref());
        self.check_stream(stream)?;
        let (n, k, r) = (linear.n, linear.k, adapter.rank);
        check_linear(stream, linear)?;
        let m = rows_of("x", x.len(), k)?;
        check_dim("rank", r)?;
        check_scale("scale", adapter.scale)?;
        check_context(stream, "a", adapter.a.stream())?;
        check_context(stream, "b", adapter.b.stream())?;
        check_len("a", adapter.a.len(), &[r, k])?;
        check_len("b", adapter.b.len(), &[n, r])?;
        let dims = Dims { m, n, k, r_max: r, num_adapters: 1 };
        self.check_common(stream, dims, dy, x, p, out)?;

        let dropout = MaskFields::new(dropout)?.backward();
        let base = LoraBwdParams { num_adapters: 1, rank: r as i32, scale: adapter.scale, ..dropout };
        // SAFETY: every buffer was checked against its shape on this context;
        // the single-adapter parameters address adapter 0 only, of rank r.
        unsafe { self.run_backward(stream, dims, base, dy, x, linear, &adapter.a, &adapter.b, p, &[], out) }
    }

    /// The backward pass with one adapter per row, chosen from a stack as in
    /// [`LoraKernels::forward_multi`]: `dA_l`, `dB_l` sum the rows whose index
    /// is `l` only; an adapter no row uses gets zeros.
    ///
    /// # Arguments
    /// As [`LoraKernels::backward`], with the stack (A_all `[L, r_max, k]`,
    /// B_all `[L, n, r_max]`, ranks, scales), the rows' indices and status,
    /// P `[m, r_max]` in `inputs`, and outputs dA `[L, r_max, k]`, dB
    /// `[L, n, r_max]`, dX `[m, k]`, G `[m, r_max]`.
    ///
    /// # Errors
    /// As [`LoraKernels::backward`], plus [`LoraError::InvalidArgument`] for a
    /// rank outside `1..=r_max`, ranks/scales of different lengths, or a
    /// status that records calls with another number of adapters. An index
    /// out of range surfaces in [`AdapterStatus::check`](crate::AdapterStatus::check).
    ///
    /// # Example
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
    /// # let ctx = fused_lora::cudarc::driver::CudaContext::new(0)?;
    /// # let stream = ctx.default_stream();
    /// # let kernels = fused_lora::LoraKernels::new(&ctx);
    /// use fused_lora::half::f16;
    /// use fused_lora::{Adapter, AdapterStatus, BackwardInputs, BackwardOutput, GradMode, Linear, PackedAdapters, RowAdapters};
    ///
    /// let (m, k, n) = (4, 64, 32);
    /// let (a0, b0) = (stream.clone_htod(&vec![f16::ONE; 2 * k])?, stream.clone_htod(&vec![f16::ONE; n * 2])?);
    /// let (a1, b1) = (stream.clone_htod(&vec![f16::ONE; 4 * k])?, stream.clone_htod(&vec![f16::ONE; n * 4])?);
    /// let adapters = [
    ///     Adapter { a: a0.as_view(), b: b0.as_view(), rank: 2, scale: 1.0 },
    ///     Adapter { a: a1.as_view(), b: b1.as_view(), rank: 4, scale: 0.5 },
    /// ];
    /// let packed = PackedAdapters::pack(&stream, n, k, &adapters)?;
    /// let (l, r_max) = (packed.num_adapters(), packed.r_max());
    /// let x = stream.clone_htod(&vec![f16::ONE; m * k])?;
    /// let w0 = stream.clone_htod(&vec![f16::ZERO; n * k])?;
    /// let dy = stream.clone_htod(&vec![f16::ONE; m * n])?;
    /// let index = stream.clone_htod(&[0i32, 0, -1, 0])?; // adapter 1 is used by no row
    /// let mut status = AdapterStatus::new(&stream)?;
    /// let (mut da, mut db, mut dx) =
    ///     (stream.alloc_zeros::<f16>(l * r_max * k)?, stream.alloc_zeros::<f16>(l * n * r_max)?, stream.alloc_zeros::<f16>(m * k)?);
    /// let linear = Linear { weight: w0.as_view(), bias: None, n, k };
    /// let inputs = BackwardInputs { dy: dy.as_view(), x: x.as_view(), p: None, dropout: None }; // P recomputed
    /// let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
    /// let mut grads =
    ///     BackwardOutput { da: da.as_view_mut(), db: db.as_view_mut(), dx: dx.as_view_mut(), g: None, mode: GradMode::Overwrite };
    /// kernels.backward_multi(&stream, &inputs, &linear, &packed.stack(), &mut rows, &mut grads)?;
    /// status.check(&stream)?;
    /// let db: Vec<f16> = stream.clone_dtoh(&db)?;
    /// // dB_0 = s·dYᵀ·P over the three rows of adapter 0 (P = k); adapter 1's gradient is zero.
    /// assert_eq!(db[0].to_f32(), 3.0 * k as f32);
    /// assert!(db[n * r_max..].iter().all(|v| v.to_f32() == 0.0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn backward_multi<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        inputs: &BackwardInputs<'_, T>,
        linear: &Linear<'_, T>,
        adapters: &AdapterStack<'_, T>,
        rows: &mut RowAdapters<'_, '_>,
        out: &mut BackwardOutput<'_, T>,
    ) -> Result<()> {
        let BackwardInputs { dy, x, p, dropout } = inputs;
        let (p, dropout) = (p.as_ref(), dropout.as_ref());
        self.check_stream(stream)?;
        let (n, k, r_max) = (linear.n, linear.k, adapters.r_max);
        check_linear(stream, linear)?;
        let m = rows_of("x", x.len(), k)?;
        let ranks = check_stack(stream, adapters, rows, m, n, k)?;
        let num_adapters = ranks.len();
        // The rank-side grids hold one run of CTAs per adapter.
        if num_adapters > 65_535 {
            return Err(LoraError::InvalidArgument {
                what: "ranks.len()",
                value: num_adapters.to_string(),
                reason: "at most 65535 adapters per launch",
            });
        }
        let dims = Dims { m, n, k, r_max, num_adapters };
        self.check_common(stream, dims, dy, x, p, out)?;

        let dropout = MaskFields::new(dropout)?.backward();
        let ranks = stream.clone_htod(&ranks)?;
        let scales = stream.clone_htod(adapters.scales)?;
        rows.status.record(num_adapters)?;
        let mut ptrs = Pointers::new(stream);
        let index_span = ptrs.read("index", &rows.index);
        let ranks_span = ptrs.read("ranks", &ranks);
        let scales_span = ptrs.read("scales", &scales);
        let status_span = ptrs.write("status", &mut rows.status.word);
        let base = LoraBwdParams {
            row_adapter: index_span.start,
            ranks: ranks_span.start,
            scales: scales_span.start,
            status: status_span.start,
            num_adapters: num_adapters as i32,
            rank: r_max as i32,
            scale: 1.0,
            ..dropout
        };
        // SAFETY: every buffer was checked against its shape on this context;
        // the stack holds L whole adapters of r_max, every rank is in
        // 1..=r_max, and the kernels validate each row's index against L
        // before using it to address an adapter. The guards in `ptrs` keep
        // the index, ranks, scales and status alive past the launches.
        let result = unsafe {
            self.run_backward(
                stream,
                dims,
                base,
                dy,
                x,
                linear,
                &adapters.a,
                &adapters.b,
                p,
                &[index_span, status_span],
                out,
            )
        };
        drop(ptrs);
        result
    }

    /// The checks both entry points share: dY, X, P and the outputs.
    fn check_common<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        dims: Dims,
        dy: &CudaView<'_, T>,
        x: &CudaView<'_, T>,
        p: Option<&CudaView<'_, T>>,
        out: &BackwardOutput<'_, T>,
    ) -> Result<()> {
        let Dims { m, n, k, r_max, num_adapters } = dims;
        check_context(stream, "x", x.stream())?;
        check_context(stream, "dy", dy.stream())?;
        check_rows("x", m, "dy", dy.len(), n)?;
        match p {
            Some(p) => {
                check_context(stream, "p", p.stream())?;
                check_rows("x", m, "p", p.len(), r_max)?;
            }
            // The recompute runs the forward's shrink, with its K rule.
            None => check_k_aligned::<T>(k)?,
        }
        check_context(stream, "da", out.da.stream())?;
        check_context(stream, "db", out.db.stream())?;
        check_context(stream, "dx", out.dx.stream())?;
        check_len("da", out.da.len(), &[num_adapters, r_max, k])?;
        check_len("db", out.db.len(), &[num_adapters, n, r_max])?;
        check_rows("x", m, "dx", out.dx.len(), k)?;
        if let Some(g) = &out.g {
            check_context(stream, "g", g.stream())?;
            check_rows("x", m, "g", g.len(), r_max)?;
        }
        check_grid(m)?;
        // The elementwise launches (the ordered sums) are 1-D grids of one
        // thread per element.
        for (what, len) in
            [("m * k", m * k), ("n * r_max", n * r_max), ("r_max * k", r_max * k), ("m * r_max", m * r_max)]
        {
            if len.div_ceil(LORA_BWD_THREADS as usize) > i32::MAX as usize {
                return Err(LoraError::InvalidArgument {
                    what,
                    value: len.to_string(),
                    reason: "too many elements for one launch",
                });
            }
        }
        Ok(())
    }

    /// Allocates the scratch buffers, checks aliasing and enqueues the launches.
    ///
    /// # Safety
    /// Every buffer must have been checked against `dims` on this stream's
    /// context; the adapter fields of `base` (index, ranks, scales, status)
    /// must point at live buffers that describe `dims.num_adapters` adapters
    /// with ranks in `1..=dims.r_max`; `extra_inputs` are those buffers'
    /// spans (no output may overlap them).
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_backward<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        dims: Dims,
        base: LoraBwdParams,
        dy: &CudaView<'_, T>,
        x: &CudaView<'_, T>,
        linear: &Linear<'_, T>,
        a: &CudaView<'_, T>,
        b: &CudaView<'_, T>,
        p: Option<&CudaView<'_, T>>,
        extra_inputs: &[Span],
        out: &mut BackwardOutput<'_, T>,
    ) -> Result<()> {
        let Dims { m, n, k, r_max, num_adapters } = dims;
        let mut p_scratch = match p {
            Some(_) => None,
            None => Some(stream.alloc_zeros::<T>(m * r_max)?),
        };
        let mut g_scratch = match out.g {
            Some(_) => None,
            None => Some(stream.alloc_zeros::<T>(m * r_max)?),
        };
        let grouped = dims.grouped(&base);
        // The rows grouped by adapter: perm [m], segment starts and G's tile
        // prefix sums [L + 2], and the sort's per-warp counts.
        let groups = if grouped { Some(RowGroups::new(stream, m, num_adapters)?) } else { None };
        let mut ptrs = Pointers::new(stream);
        let dy_span = ptrs.read("dy", dy);
        let x_span = ptrs.read("x", x);
        let w_span = ptrs.read("weight", &linear.weight);
        let a_span = ptrs.read("a", a);
        let b_span = ptrs.read("b", b);
        let p_span = match (p, &mut p_scratch) {
            (Some(p), _) => ptrs.read("p", p),
            (None, Some(scratch)) => ptrs.write("p", scratch),
            (None, None) => unreachable!("a scratch P exists whenever P is not given"),
        };
        let g_span = match (&mut out.g, &mut g_scratch) {
            (Some(g), _) => ptrs.write("g", g),
            (None, Some(scratch)) => ptrs.write("g", scratch),
            (None, None) => unreachable!("a scratch G exists whenever out.g is None"),
        };
        let da_span = ptrs.write("da", &mut out.da);
        let db_span = ptrs.write("db", &mut out.db);
        let dx_span = ptrs.write("dx", &mut out.dx);
        let mut inputs = vec![dy_span, x_span, w_span, a_span, b_span, p_span];
        inputs.extend_from_slice(extra_inputs);
        let outputs = [g_span, da_span, db_span, dx_span];
        for (i, output) in outputs.iter().enumerate() {
            check_no_alias(output, &inputs)?;
            check_no_alias(output, &outputs[i + 1..])?;
        }
        check_no_alias(&p_span, &outputs)?;

        if p.is_none() {
            // The forward's own shrink, with the forward's dropout on its
            // input: the P the forward wrote, bit for bit.
            let shrink = LoraGemmParams {
                out: p_span.start,
                ad_mode: LoraAdapterMode_LORA_ADAPTER_SHRINK as i32,
                ad_lhs: x_span.start,
                ad_rhs: a_span.start,
                ad_rhs_stride: (r_max * k) as i64,
                ad_k: k as i32,
                row_adapter: base.row_adapter,
                ranks: base.ranks,
                status: base.status,
                m: m as i32,
                n: r_max as i32,
                num_adapters: num_adapters as i32,
                rank: if base.ranks == 0 { base.rank } else { r_max as i32 },
                scale: 1.0,
                ..MaskFields::of_backward(&base).gemm()
            };
            // SAFETY: the forward's shrink contract: X [m, k], A [L, r_max, k]
            // (checked), P [m, r_max] (scratch), K aligned (checked).
            unsafe { self.launch_shrink::<T>(stream, &shrink)? };
        }

        let params = LoraBwdParams {
            dy: dy_span.start,
            x: x_span.start,
            w: w_span.start,
            a: a_span.start,
            b: b_span.start,
            p: p_span.start,
            g: g_span.start,
            m: m as i32,
            n: n as i32,
            k: k as i32,
            r_max: r_max as i32,
            accumulate: i32::from(out.mode == GradMode::Accumulate),
            ..base
        };
        // SAFETY (all launches below): the caller's contract plus the checks
        // above: each kernel reads and writes only inside the extents
        // `params` describes, the outputs overlap no input nor each other,
        // and the launches are ordered on one stream (the grouping before
        // the rank side, G before dA and dX).
        unsafe {
            // The sort reports bad indices; the launches after it stay quiet.
            let params = match &groups {
                Some(groups) => self.group_rows(stream, params, groups)?,
                None => params,
            };
            let params = LoraBwdParams { status: 0, ..params };
            let g_ctas = row_tiles(m, num_adapters, grouped);
            let warp_mode = dims.rank_warp_mode();
            let sms = self.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
            let sms = sms.max(1) as usize;
            // Adapter groups of dB's and dA's CTAs: in warp mode, one adapter per warp.
            let groups_of = |warps: usize| if warp_mode { num_adapters.div_ceil(warps) } else { num_adapters };
            // Per launch: 32 rank columns (8 warps) or 64 (`_r64`: 6 warps for G with dB, 4 for dA),
            // by grad_cols.
            let grad_launch = |name: &str, ctas_per_group: usize, other_ctas: usize| {
                let wide_warps = wide_grad_warps(name);
                let wide_ctas = other_ctas + ctas_per_group * groups_of(wide_warps);
                let (cols, wide) = grad_cols(sms, wide_ctas, r_max);
                let warps = if wide.is_empty() { RANK_WARPS } else { wide_warps };
                let kernel = format!("lora_backward_{name}_{}{wide}", T::DTYPE.kernel_suffix());
                (kernel, ctas_per_group * groups_of(warps), r_max.div_ceil(cols) as u32)
            };
            let params = LoraBwdParams { rank_warp_mode: i32::from(warp_mode), ..params };
            let (g_db_kernel, db_ctas, g_db_rank_tiles) = grad_launch("g_db", n.div_ceil(RANK_TILE), g_ctas);
            let (da_kernel, da_ctas, da_rank_tiles) = grad_launch("da", k.div_ceil(RANK_TILE), 0);
            let g_db = LoraBwdParams { out: db_span.start, g_tiles: g_ctas as i32, ..params };
            self.launch_rank_side(stream, &g_db_kernel, g_db, ((g_ctas + db_ctas) as u32, g_db_rank_tiles, 1))?;
            let dx_params = LoraBwdParams { out: dx_span.start, ..params };
            // dA's CTAs in dX's launch have 4 warps: in warp mode, 4 adapters to a tile.
            let fused_groups = if warp_mode { num_adapters.div_ceil(BIG_TILE_WARPS) } else { num_adapters };
            let fused_da_ctas = k.div_ceil(RANK_TILE) * fused_groups;
            // One adapter for every row, no dropout: the Hopper dX may take it.
            let single = base.row_adapter == 0 && base.ranks == 0 && base.scales == 0 && base.dropout == 0;
            let hopper_dx = DxOperands {
                dx: dx_span.start,
                dy: dy_span.start,
                w: w_span.start,
                g: g_span.start,
                a: a_span.start,
                m,
                n,
                k,
                rank: r_max,
                scale: base.scale,
                accumulate: out.mode == GradMode::Accumulate,
            };
            if single && self.dx_takes_hopper(&hopper_dx, T::DTYPE)? {
                let da = LoraBwdParams { out: da_span.start, ..params };
                self.launch_rank_side(stream, &da_kernel, da, (da_ctas as u32, da_rank_tiles, 1))?;
                self.launch_hopper_dx::<T>(stream, &hopper_dx)?;
            } else if let Some(place) = Self::dx_takes_da::<T>(&dx_params, fused_da_ctas, sms) {
                let dx_da = LoraBwdParams { da: da_span.start, ..dx_params };
                // The 128x128 launch's dA tiles are 64 K columns wide past rank 32 (`fused_da_wide`).
                let launch_da_ctas = match place {
                    FusedDa::Big => k.div_ceil(fused_da_wide(r_max)) * fused_groups,
                    FusedDa::SmallColumn | FusedDa::SmallRow => fused_da_ctas,
                };
                self.launch_dx_da::<T>(stream, dx_da, launch_da_ctas, place)?;
            } else {
                let da = LoraBwdParams { out: da_span.start, ..params };
                self.launch_rank_side(stream, &da_kernel, da, (da_ctas as u32, da_rank_tiles, 1))?;
                self.row_gemm::<T>(stream, dx_params, LoraBwdReduction_LORA_BWD_REDUCE_DX)?;
            }
        }
        Ok(())
    }

    /// G (`which` = REDUCE_G, into `params.g`) or dX (REDUCE_DX, into
    /// `params.out`): one CTA per 64×64 tile of the `[m, cols]` output, and
    /// with fewer tiles than the device has SMs (small M), the reduction
    /// steps split over several CTAs per tile whose f32 partials a second
    /// launch adds in split order.
    ///
    /// # Safety
    /// As [`LoraKernels::run_backward`], with `params` filled in by it.
    unsafe fn row_gemm<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        params: LoraBwdParams,
        which: LoraBwdReduction,
    ) -> Result<()> {
        let dx = which == LoraBwdReduction_LORA_BWD_REDUCE_DX;
        let (name, m, n, r_max, k) = (
            if dx { "dx" } else { "g" },
            params.m as usize,
            params.n as usize,
            params.r_max as usize,
            params.k as usize,
        );
        let cols = if dx { k } else { r_max };
        // G reduces over N (once per adapter in a tile), dX over N plus the rank.
        let reduction = if dx { n + r_max } else { n };
        let sms = self.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let splits = k_splits(sms.max(1) as usize, m, cols, reduction);
        let grid = (cols.div_ceil(TILE_COLS) as u32, m.div_ceil(TILE_ROWS) as u32, splits as u32);
        let params = LoraBwdParams { reduction: which as i32, k_splits: splits as i32, ..params };
        let half = T::DTYPE.size_bytes() == 2;
        if dx && dx_tile(sms.max(1) as usize, m, k, half, splits) == DxTile::Big {
            // SAFETY: the caller's contract.
            return unsafe { self.launch_dx_big::<T>(stream, params) };
        }
        if splits == 1 {
            // SAFETY: the caller's contract.
            return unsafe { self.launch_tiled::<T>(stream, name, params, grid) };
        }
        let partials = stream.alloc_zeros::<f32>(splits * m * cols)?;
        let (partials_ptr, _partials_guard) = partials.device_ptr(stream);
        let params = LoraBwdParams { partials: partials_ptr, ..params };
        // SAFETY: the caller's contract; `partials` holds the [splits, m,
        // cols] floats the splits write, and the sum reads them after, in
        // stream order.
        unsafe {
            self.launch_tiled::<T>(stream, name, params, grid)?;
            self.launch_backward::<T>(stream, "sum_splits", params, m * cols, 1, 1)
        }
    }

    /// Launches the tiled kernel `lora_backward_<name>_<T>` over `grid`, one
    /// CTA per 64x64 output tile (and per adapter and split for the partials).
    ///
    /// # Safety
    /// As [`LoraKernels::launch_backward`].
    unsafe fn launch_tiled<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        name: &str,
        params: LoraBwdParams,
        grid: (u32, u32, u32),
    ) -> Result<()> {
        let function = self.function(BACKWARD, &format!("lora_backward_{name}_{}", T::DTYPE.kernel_suffix()))?;
        let config = LaunchConfig { grid_dim: grid, block_dim: (LORA_BWD_GEMM_THREADS, 1, 1), shared_mem_bytes: 0 };
        let mut launch = stream.launch_builder(&function);
        launch.arg(&params);
        // SAFETY: the caller's contract.
        unsafe { launch.launch(config) }?;
        Ok(())
    }

    /// Whether dX's launch also runs dA's CTAs, and on which tile: f16/bf16,
    /// no dropout, unsplit, on the tile [`LoraKernels::row_gemm`] picks for dX
    /// (`lora_backward_dx_da_<T>_128x128` or, on small grids,
    /// `lora_backward_dx_da_<T>` on 64×64), from the shape and the SM count.
    /// With `da_ctas` dA tiles per rank tile, each CTA of the launch's dA
    /// column (one per tile row) must also take at most
    /// [`DA_TILES_PER_DX_ROW`] (128×128) of them, or on 64×64 pass
    /// [`small_dx_takes_da`], on a device of `sms` SMs (the launch's own
    /// count). `None`: dA takes a launch of its own.
    fn dx_takes_da<T: LoraDType>(params: &LoraBwdParams, da_ctas: usize, sms: usize) -> Option<FusedDa> {
        let (m, n, k, r_max) = (params.m as usize, params.n as usize, params.k as usize, params.r_max as usize);
        let splits = k_splits(sms, m, k, n + r_max);
        let half = T::DTYPE.size_bytes() == 2;
        if params.dropout != 0 || !half || splits != 1 {
            return None;
        }
        let da_tiles = da_ctas * r_max.div_ceil(RANK_TILE);
        match dx_tile(sms, m, k, half, splits) {
            DxTile::Big => {
                (da_tiles.div_ceil(m.div_ceil(BIG_TILE_ROWS)) <= DA_TILES_PER_DX_ROW).then_some(FusedDa::Big)
            }
            DxTile::Small => small_da_placement(sms, m, n, k, r_max, da_tiles),
        }
    }

    /// Launches dX with dA's CTAs where `place` says: dX's tiles, and a last
    /// grid column (or row) whose CTAs take dA's `da_ctas` tiles per rank tile.
    ///
    /// # Safety
    /// As [`LoraKernels::launch_backward`]; `params.da` addresses dA and G is
    /// written (the launch before).
    unsafe fn launch_dx_da<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        params: LoraBwdParams,
        da_ctas: usize,
        place: FusedDa,
    ) -> Result<()> {
        let params = LoraBwdParams {
            reduction: LoraBwdReduction_LORA_BWD_REDUCE_DX as i32,
            k_splits: 1,
            da_ctas: da_ctas as i32,
            ..params
        };
        let suffix = T::DTYPE.kernel_suffix();
        let (cols, rows) =
            ((params.k as usize).div_ceil(TILE_COLS) as u32, (params.m as usize).div_ceil(TILE_ROWS) as u32);
        // The kernel tells the two 64x64 layouts apart by gridDim.x: a column past dX's tiles or none.
        match place {
            // SAFETY (all three): the caller's contract.
            // The 128x128 launch's dA tiles are 64 rank columns wide past rank 32 (`fused_da_cols`).
            FusedDa::Big => unsafe {
                let (_, wide) = fused_da_cols(params.r_max as usize);
                self.launch_big_tile(stream, &format!("lora_backward_dx_da_{suffix}_128x128{wide}"), params, 1)
            },
            FusedDa::SmallColumn => unsafe { self.launch_tiled::<T>(stream, "dx_da", params, (cols + 1, rows, 1)) },
            FusedDa::SmallRow => unsafe { self.launch_tiled::<T>(stream, "dx_da", params, (cols, rows + 1, 1)) },
        }
    }

    /// Launches `lora_backward_dx_<T>_128x128` (`lora_backward_dx_dropout_<T>_128x128`
    /// with `params.dropout` set; unsplit) over the `[m, k]` output, one CTA
    /// per 128×128 tile, with its dynamic shared memory.
    ///
    /// # Safety
    /// As [`LoraKernels::launch_backward`].
    unsafe fn launch_dx_big<T: LoraDType>(&self, stream: &Arc<CudaStream>, params: LoraBwdParams) -> Result<()> {
        // Dropout has its own entry point, so the mask's code costs the
        // launches without it no registers (cuda/backward.cu).
        let variant = if params.dropout != 0 { "dx_dropout" } else { "dx" };
        let kernel = format!("lora_backward_{variant}_{}_128x128", T::DTYPE.kernel_suffix());
        // SAFETY: the caller's contract.
        unsafe { self.launch_big_tile(stream, &kernel, params, 0) }
    }

    /// Launches `kernel`, a 128×128-tile dX kernel, one CTA per tile of the
    /// `[m, k]` output plus `extra_cols` grid columns (dA's CTAs), with the
    /// dynamic shared memory the big tile needs.
    ///
    /// # Safety
    /// As [`LoraKernels::launch_backward`].
    unsafe fn launch_big_tile(
        &self,
        stream: &Arc<CudaStream>,
        kernel: &str,
        params: LoraBwdParams,
        extra_cols: u32,
    ) -> Result<()> {
        let function = self.function(BACKWARD, kernel)?;
        // Above the 48 KB a launch gets by default: opt in.
        function.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            LORA_BWD_BIG_SHARED_BYTES as i32,
        )?;
        let grid = (
            (params.k as u32).div_ceil(LORA_BWD_BIG_TILE_COLS) + extra_cols,
            (params.m as u32).div_ceil(LORA_BWD_BIG_TILE_ROWS),
            1,
        );
        let config = LaunchConfig {
            grid_dim: grid,
            block_dim: (LORA_BWD_GEMM_THREADS, 1, 1),
            shared_mem_bytes: LORA_BWD_BIG_SHARED_BYTES,
        };
        let mut launch = stream.launch_builder(&function);
        launch.arg(&params);
        // SAFETY: the caller's contract.
        unsafe { launch.launch(config) }?;
        Ok(())
    }

    /// Launches `lora_backward_<name>_<T>` with one thread per element of
    /// `elements` along x, `grid_y` by `grid_z` times.
    ///
    /// # Safety
    /// Every pointer in `params` must address a live buffer of this context
    /// holding what `cuda/backward_params.h` describes for its dimensions.
    unsafe fn launch_backward<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        name: &str,
        params: LoraBwdParams,
        elements: usize,
        grid_y: u32,
        grid_z: u32,
    ) -> Result<()> {
        let function = self.function(BACKWARD, &format!("lora_backward_{name}_{}", T::DTYPE.kernel_suffix()))?;
        let blocks = elements.div_ceil(LORA_BWD_THREADS as usize) as u32;
        let config = LaunchConfig {
            grid_dim: (blocks, grid_y, grid_z),
            block_dim: (LORA_BWD_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = stream.launch_builder(&function);
        launch.arg(&params);
        // SAFETY: the caller's contract.
        unsafe { launch.launch(config) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{
        dx_tile, fused_da_cols, fused_da_wide, grad_cols, small_da_placement, small_dx_takes_da, wide_grad_warps,
        DxTile, FusedDa,
    };

    #[test]
    fn gradients_take_64_rank_columns_where_the_wide_grid_fills_the_device() {
        // k/v 4096->1024 at M = 4096, r = 64: G's 128 row tiles + dB's 32 = 160 wide CTAs.
        assert_eq!(grad_cols(108, 160, 64), (64, "_r64"));
        assert_eq!(grad_cols(132, 160, 64), (64, "_r64"));
        // 2048 x 1024 x 1024: 64 + 32 = 96, fewer than the SMs.
        assert_eq!(grad_cols(108, 96, 64), (32, ""));
        // Ranks up to 32 fit one 32-wide tile, whatever the grid.
        assert_eq!(grad_cols(108, 1000, 32), (32, ""));
        assert_eq!(grad_cols(108, 108, 33), (64, "_r64"));
        // dA in dX's launch: by the rank alone.
        assert_eq!(fused_da_cols(64), (64, "_r64"));
        assert_eq!(fused_da_cols(40), (64, "_r64"));
        assert_eq!(fused_da_cols(32), (32, ""));
        assert_eq!(fused_da_cols(16), (32, ""));
        assert_eq!(fused_da_wide(64), 64);
        assert_eq!(fused_da_wide(40), 64);
        assert_eq!(fused_da_wide(32), 32);
        assert_eq!(fused_da_wide(16), 32);
    }

    #[test]
    fn g_db_takes_6_warps_and_da_4_on_64_rank_columns() {
        // Two 6-warp G-with-dB CTAs share an SM (3 warps per scheduler); dA's keep 4.
        assert_eq!(wide_grad_warps("g_db"), 6);
        assert_eq!(wide_grad_warps("da"), 4);
    }

    #[test]
    fn da_takes_the_side_that_loads_the_busiest_sm_least() {
        // 2048 x 1024 x 1024 on 132 SMs: a row of 16 dA CTAs (528 CTAs, 4 per SM), not a column of 32.
        assert_eq!(small_da_placement(132, 2048, 1024, 1024, 16, 32), Some(FusedDa::SmallRow));
        assert_eq!(small_da_placement(132, 2048, 1024, 1024, 64, 64), Some(FusedDa::SmallRow));
        // 1024^3: a square grid, either side 16 CTAs: the column.
        assert_eq!(small_da_placement(132, 1024, 1024, 1024, 16, 32), Some(FusedDa::SmallColumn));
        assert_eq!(small_da_placement(108, 1024, 1024, 1024, 64, 64), Some(FusedDa::SmallColumn));
        // The tests' shapes (tests/backward.rs): one dX column, the dA column;
        // 20 x 10 tiles on 108 SMs: the row (210 CTAs, 2 per SM; the column's 220: 3).
        assert_eq!(small_da_placement(108, 760, 184, 56, 40, 12), Some(FusedDa::SmallColumn));
        assert_eq!(small_da_placement(108, 1250, 344, 600, 16, 19), Some(FusedDa::SmallRow));
        // Neither side fits: dA's own launch.
        assert_eq!(small_da_placement(108, 4111, 8, 8, 2, 1), None);
    }

    #[test]
    fn da_joins_the_small_dx_launch_where_it_fits_beside_dx() {
        // 2048 x 1024 x 1024 on 132 SMs (64x64 dX): 1 dA tile per CTA at r = 16, 2 at r = 64.
        assert!(small_dx_takes_da(132, 2048, 1024, 1024, 16, 1));
        assert!(small_dx_takes_da(132, 2048, 1024, 1024, 64, 2));
        // 1024^3: 2 and 4, on either SM count.
        for sms in [108, 132] {
            assert!(small_dx_takes_da(sms, 1024, 1024, 1024, 16, 2));
            assert!(small_dx_takes_da(sms, 1024, 1024, 1024, 64, 4));
        }
        // More tiles than the limit.
        assert!(!small_dx_takes_da(132, 1024, 1024, 1024, 64, 5));
        // A long M against a short reduction: one dA CTA would outlast every dX tile.
        assert!(!small_dx_takes_da(108, 4111, 8, 8, 2, 1));
        // The tests' shape (tests/backward.rs, small_dx_with_da): at the limit.
        assert!(small_dx_takes_da(108, 760, 184, 56, 40, 1));
        assert!(!small_dx_takes_da(108, 760, 184, 56, 40, 2));
    }

    #[test]
    fn big_dx_tile_only_where_its_grid_fills_the_device() {
        // Llama-3-8B projections at M = 4096 on 108 SMs: 32 x 32 big tiles and more.
        assert_eq!(dx_tile(108, 4096, 4096, true, 1), DxTile::Big);
        assert_eq!(dx_tile(108, 4096, 14_336, true, 1), DxTile::Big);
        // 1024 x 1024: 64 big tiles would leave 44 SMs idle.
        assert_eq!(dx_tile(108, 1024, 1024, true, 1), DxTile::Small);
        // Exactly one per SM (12 x 9 tiles), with ragged edges.
        assert_eq!(dx_tile(108, 1500, 1100, true, 1), DxTile::Big);
        assert_eq!(dx_tile(132, 1500, 1100, true, 1), DxTile::Small);
        // Decode-sized M: never, whatever K.
        assert_eq!(dx_tile(108, 16, 14_336, true, 1), DxTile::Small);
        assert_eq!(dx_tile(108, 127, 14_336, true, 1), DxTile::Small);
        assert_eq!(dx_tile(108, 128, 14_336, true, 1), DxTile::Big);
        // f32, a split reduction: always 64x64.
        assert_eq!(dx_tile(108, 4096, 4096, false, 1), DxTile::Small);
        assert_eq!(dx_tile(108, 4096, 4096, true, 2), DxTile::Small);
    }
}

//! Counted efficiency of the backward's launches on the emulator (its
//! per-launch counters; on a real GPU these tests skip): for the rank side
//! (G with dB, then dA) and dX, tensor-core instructions against the FLOP
//! minimum, global loads against the tile-reuse minimum (every sector
//! fetched is used), shared-memory bank conflicts, stores against the
//! output bytes (no f32 partials), and the instructions per mma of the
//! steady states. (Spills: `tests/ptxas.rs`.)
//!
//! The model behind the exact counts: dX's CTA owns a 64×64 output tile as
//! four 32×32 warp sub-tiles and walks the reduction 32 at a time (a
//! reduction step shorter than 32, a rank of 16 as dX's adapter segment,
//! issues only its k16 halves). dX on grids that give every SM a 128×128
//! tile (f16/bf16) takes the 128×128 kernel: four 64×64 warp sub-tiles, the
//! same counts per output element and half the loads per mma. Both dX
//! kernels (f16/bf16, unsplit, no dropout) run dA's CTAs in their launch
//! where they fit (a last grid column, or on 64x64 a last row): the launch
//! then counts exactly dX's plus dA's. The rank
//! side's CTA owns a 32 (wide) × 32 (rank) tile; each warp multiplies it over
//! its share of the reduction in m16n8k16 steps, the rank columns only up to
//! the rank's multiple of 16.

mod device;
use device::PerMma;
mod forward_support;

use cudarc::driver::CudaSlice;
use fused_lora::{
    Adapter, AdapterStack, AdapterStatus, BackwardInputs, BackwardOutput, GradMode, Linear, LoraDType, RowAdapters,
};
use half::{bf16, f16};
use serde_json::Value;

use forward_support::{poisoned, random, upload};

const TILE: usize = 64;
/// dX's big tile (128x128) and its mma.sync per k16 step: 4 warps x (4 x 8 fragments).
const BIG_TILE: usize = 128;
const BIG_MMA_PER_K16: usize = 128;

/// dX's 128-row tiles: 128x128 or 128x64 (4 warps x (4 x 4 fragments) per k16 step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowTile {
    Big,
    Wide,
}

impl RowTile {
    fn cols(self) -> usize {
        match self {
            RowTile::Big => BIG_TILE,
            RowTile::Wide => BIG_TILE / 2,
        }
    }

    fn mma_per_k16(self) -> usize {
        match self {
            RowTile::Big => BIG_MMA_PER_K16,
            RowTile::Wide => BIG_MMA_PER_K16 / 2,
        }
    }

    /// The kernel-name suffix.
    fn suffix(self) -> &'static str {
        match self {
            RowTile::Big => "_128x128",
            RowTile::Wide => "_128x64",
        }
    }

    /// A tile-aligned dX output (M, K) the host's rule sends to this tile on
    /// the emulator's 108 SMs with dA's CTAs in the launch at r = 16 and 64:
    /// 128x128 on 13 x 12 tiles (169 CTAs with dA's column, 2 on the busiest
    /// SM; 128x64 would put 4); 128x64 on 15 x 14 (225, 3 on the busiest SM,
    /// all resident; 128x128 2 of 4 warps, 64x64 5).
    fn shape(self) -> (usize, usize) {
        match self {
            RowTile::Big => (1664, 1536),
            RowTile::Wide => (1920, 896),
        }
    }
}
const STEP: usize = 32;
/// mma.sync m16n8k16 per live warp per k16 step: 2 x 4 fragments.
const MMA_PER_WARP_K16: usize = 8;
const SECTOR: u64 = 32;

#[derive(Clone, Copy, Debug)]
struct Shape {
    m: usize,
    k: usize,
    n: usize,
    r: usize,
}

/// The launch of `lora_backward_<name>_<dtype>` among `launches`.
fn launch<'a, T: LoraDType>(launches: &'a [Value], name: &str) -> &'a Value {
    kernel_launch(launches, &format!("lora_backward_{name}_{}", T::DTYPE.kernel_suffix()))
}

/// The launch of dX's 128-row `tile` kernel among `launches`: without
/// dropout it also runs dA's CTAs, `lora_backward_dx_da_<dtype>_128x128`
/// or `..._128x64` (`..._r64` for ranks past 32: dA's tiles 64 rank
/// columns wide).
fn big_dx_launch<T: LoraDType>(launches: &[Value], r: usize, tile: RowTile) -> &Value {
    let wide = if r > RANK_TILE { "_r64" } else { "" };
    kernel_launch(launches, &format!("lora_backward_dx_da_{}{}{wide}", T::DTYPE.kernel_suffix(), tile.suffix()))
}

/// Launches of a backward whose dX takes the 128x128 tile: G with dB, then
/// dX with dA.
const BIG_LAUNCHES: usize = 2;

/// Launches of a backward whose dX takes the 64x64 tile with dA's CTAs in
/// its launch (f16/bf16, unsplit, a few dA tiles per tile row): G with dB,
/// then `lora_backward_dx_da_<dtype>`.
const SMALL_FUSED_LAUNCHES: usize = 2;

/// The one launch of `kernel` among `launches`.
fn kernel_launch<'a>(launches: &'a [Value], kernel: &str) -> &'a Value {
    let found: Vec<&Value> = launches.iter().filter(|l| l["kernel"] == kernel).collect();
    assert_eq!(found.len(), 1, "one launch of {kernel} in {launches:?}");
    found[0]
}

/// The rank side's tile (both sides).
const RANK_TILE: usize = 32;

/// Runs the single-adapter backward with P kept and returns the counters of
/// its three launches (G with dB, dA, dX; `launches` is 4 when dX is split
/// over its reduction and summed after).
fn backward_launches_n<T: LoraDType>(dev: &device::Device, s: Shape, launches: usize) -> Vec<Value> {
    let stream = &dev.stream;
    let Shape { m, k, n, r } = s;
    let (dy, x, w, a, b, p): (CudaSlice<T>, _, _, _, _, _) = (
        upload(stream, &random::<T>(1, m * n)),
        upload(stream, &random::<T>(2, m * k)),
        upload(stream, &random::<T>(3, n * k)),
        upload(stream, &random::<T>(4, r * k)),
        upload(stream, &random::<T>(5, n * r)),
        upload(stream, &random::<T>(6, m * r)),
    );
    let (mut da, mut db, mut dx) =
        (poisoned::<T>(stream, r * k), poisoned::<T>(stream, n * r), poisoned::<T>(stream, m * k));
    let linear = Linear { weight: w.as_view(), bias: None, n, k };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale: 0.5 };
    let mut out = BackwardOutput {
        da: da.as_view_mut(),
        db: db.as_view_mut(),
        dx: dx.as_view_mut(),
        g: None,
        mode: GradMode::Overwrite,
    };
    let inputs = BackwardInputs { dy: dy.as_view(), x: x.as_view(), p: Some(p.as_view()), dropout: None };
    dev.kernels.backward(stream, &inputs, &linear, &adapter, &mut out).expect("backward");
    stream.synchronize().expect("sync");
    device::recent_launch_counters(launches).expect("the emulator reports every launch")
}

fn backward_launches<T: LoraDType>(dev: &device::Device, s: Shape) -> Vec<Value> {
    backward_launches_n::<T>(dev, s, 3)
}

/// What one tiled launch is expected to count.
struct Expected {
    name: &'static str,
    /// mma.sync instructions of the tile model above.
    mma: usize,
    /// The FLOP minimum in m16n8k16 instructions (rounded up per dimension).
    flop_minimum: usize,
    /// Bytes the tile grid must load: each CTA its operand rows once.
    loads: u64,
    /// Bytes written.
    stores: u64,
}

/// `wide`: the rank side's CTAs own 64 rank columns (the `_r64` kernels).
fn expected<T: LoraDType>(s: Shape, wide: bool) -> [Expected; 3] {
    let Shape { m, k, n, r } = s;
    let elem = T::DTYPE.size_bytes() as u64;
    let (tiles_m, tiles_k) = (m.div_ceil(TILE), k.div_ceil(TILE));
    let k16 = |len: usize| len.div_ceil(16);
    // Rank side (tile-aligned M, N, K; r a multiple of 16): per 32-wide tile
    // and k16 step, 2 m16 x 2 n8 per 16 rank columns; each rank tile (32
    // rank columns, or 64 on the `_r64` kernels) reads the wide operand
    // once, each wide tile the rank operand's r columns once.
    let rank_tiles = r.div_ceil(if wide { 2 * RANK_TILE } else { RANK_TILE });
    let rank_mma = |wide: usize, reduction: usize| wide.div_ceil(RANK_TILE) * k16(reduction) * 4 * r.div_ceil(16);
    let rank_loads = |wide: usize, reduction: usize| {
        (rank_tiles * reduction * wide + wide.div_ceil(RANK_TILE) * reduction * r) as u64
    };
    [
        // G [m, r] = dY [m, n] . B [n, r] and dB [n, r] = dY^T . P over M.
        Expected {
            name: "g_db",
            mma: rank_mma(m, n) + rank_mma(n, m),
            flop_minimum: m.div_ceil(16) * r.div_ceil(8) * k16(n) + n.div_ceil(16) * r.div_ceil(8) * k16(m),
            loads: (rank_loads(m, n) + rank_loads(n, m)) * elem,
            stores: ((m + n) * r) as u64 * elem,
        },
        // dA [r, k] = G^T . X over M.
        Expected {
            name: "da",
            mma: rank_mma(k, m),
            flop_minimum: r.div_ceil(16) * k.div_ceil(8) * k16(m),
            loads: rank_loads(k, m) * elem,
            stores: (r * k) as u64 * elem,
        },
        // dX [m, k] = G . A + dY . W0: the rank's k16 steps, then N's.
        Expected {
            name: "dx",
            mma: tiles_m * tiles_k * 4 * MMA_PER_WARP_K16 * (k16(r) + n.div_ceil(STEP) * 2),
            flop_minimum: m.div_ceil(16) * k.div_ceil(8) * (k16(r) + k16(n)),
            loads: (tiles_k * m * (r + n) + tiles_m * (r + n) * k) as u64 * elem,
            stores: (m * k) as u64 * elem,
        },
    ]
}

fn counted_efficiency<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    // Tile-aligned shapes (M, K, N multiples of 64), two row splits, a rank
    // narrower than a tile and one exactly a tile.
    // f16/bf16: dX's 64x64 launch runs dA's CTAs too (its last grid column),
    // and counts exactly what the two launches would: dX's plus dA's.
    let half = T::DTYPE.size_bytes() == 2;
    for s in [Shape { m: 128, k: 128, n: 192, r: 16 }, Shape { m: 128, k: 64, n: 128, r: 64 }] {
        let launches = backward_launches_n::<T>(&dev, s, if half { SMALL_FUSED_LAUNCHES } else { 3 });
        // Grids this small keep the 32-wide rank-side kernels (the 64x64 launch
        // runs dA on 32 rank columns).
        let [g_db, da, dx] = expected::<T>(s, false);
        let checks = if half {
            let fused = Expected {
                name: "dx_da",
                mma: dx.mma + da.mma,
                flop_minimum: dx.flop_minimum + da.flop_minimum,
                loads: dx.loads + da.loads,
                stores: dx.stores + da.stores,
            };
            vec![g_db, fused]
        } else {
            vec![g_db, da, dx]
        };
        for e in checks {
            let json = launch::<T>(&launches, e.name);
            let context = format!("{} {:?} {}: {json}", T::DTYPE, s, e.name);
            let mma = device::object_sum(json, "tensor_instructions") as usize;
            if T::DTYPE.size_bytes() == 2 {
                assert_eq!(mma, e.mma, "tensor instructions, {context}");
                // Tile-aligned shapes, ranks a multiple of 16: no padded mma at all.
                assert_eq!(mma, e.flop_minimum, "tile-aligned: the FLOP minimum, {context}");
            } else {
                assert_eq!(mma, 0, "f32 runs on FMA, {context}");
            }
            eprintln!("{context}\n  mma {mma} vs FLOP minimum {}", e.flop_minimum);

            assert_eq!(device::counter(json, "ldmatrix_bank_conflicts"), 0, "ldmatrix bank conflicts, {context}");
            assert_eq!(device::counter(json, "shared_bank_conflicts"), 0, "shared bank conflicts, {context}");
            let loaded = device::counter(json, "global_load_sectors") * SECTOR;
            assert_eq!(loaded, e.loads, "load traffic against the tile-reuse minimum, {context}");
            assert_eq!(device::counter(json, "global_bytes_written"), e.stores, "bytes written, {context}");
            let stored = device::counter(json, "global_store_sectors") * SECTOR;
            assert_eq!(stored, e.stores, "stores are whole sectors, {context}");
        }
    }
}

/// G with dB on 64 rank columns (`lora_backward_g_db_<T>_r64`, 6 warps):
/// M = 2048, N = 1536 (64 row tiles of G + 48 of dB = 112 CTAs, past the
/// emulated device's 108 SMs, so the host's rule takes it), r = 64: the FLOP
/// minimum exactly, dY read once for all 64 rank columns (for G and for dB)
/// and B or P once per 32-row tile, no bank conflicts, G and dB written and
/// nothing else.
fn counted_efficiency_wide_g_db<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    let s = Shape { m: 2048, k: 64, n: 1536, r: 64 };
    // dX has few tiles at this K: it may split and be summed by one more launch.
    let launches = backward_launches_n::<T>(&dev, s, 4);
    let json = kernel_launch(&launches, &format!("lora_backward_g_db_{}_r64", T::DTYPE.kernel_suffix()));
    let [e, ..] = expected::<T>(s, true);
    let narrow = expected::<T>(s, false);
    let context = format!("{} {:?} wide g_db: {json}", T::DTYPE, s);
    let mma = device::object_sum(json, "tensor_instructions") as usize;
    assert_eq!(mma, e.mma, "tensor instructions, {context}");
    assert_eq!(mma, e.flop_minimum, "the FLOP minimum, {context}");
    assert_eq!(device::counter(json, "ldmatrix_bank_conflicts"), 0, "ldmatrix bank conflicts, {context}");
    assert_eq!(device::counter(json, "shared_bank_conflicts"), 0, "shared bank conflicts, {context}");
    let loaded = device::counter(json, "global_load_sectors") * SECTOR;
    assert_eq!(loaded, e.loads, "load traffic against the 64-wide tiles' minimum, {context}");
    assert!(e.loads < narrow[0].loads, "dY once instead of twice: {} against {}", e.loads, narrow[0].loads);
    assert_eq!(device::counter(json, "global_bytes_written"), e.stores, "bytes written: G and dB, {context}");
    assert_eq!(device::counter(json, "global_store_sectors") * SECTOR, e.stores, "whole sectors, {context}");
}

#[test]
fn counted_efficiency_wide_g_db_bf16() {
    counted_efficiency_wide_g_db::<bf16>();
}

/// dA's own launch on 64 rank columns (`lora_backward_da_<T>_r64`, 4
/// warps): K = 3456 (108 K tiles: one per SM of the emulated device), M =
/// 128, N = 32 (G with dB and dX keep their small grids, and dX's reduction
/// is short enough that dA's CTAs stay out of dX's 64x64 launch:
/// `small_dx_takes_da`), r = 64: the FLOP
/// minimum exactly, X read once for all 64 rank columns and G's 64 columns
/// once per K tile, no bank conflicts, dA written and nothing else.
#[test]
fn counted_efficiency_wide_da_bf16() {
    type T = bf16;
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    let s = Shape { m: 128, k: 3456, n: 32, r: 64 };
    let launches = backward_launches::<T>(&dev, s);
    assert!(launches.iter().any(|l| l["kernel"] == "lora_backward_g_db_bf16"), "G with dB stays 32-wide: {launches:?}");
    let json = kernel_launch(&launches, "lora_backward_da_bf16_r64");
    let [_, e, _] = expected::<T>(s, true);
    let [_, narrow, _] = expected::<T>(s, false);
    let context = format!("{s:?} wide da: {json}");
    let mma = device::object_sum(json, "tensor_instructions") as usize;
    assert_eq!(mma, e.mma, "tensor instructions, {context}");
    assert_eq!(mma, e.flop_minimum, "the FLOP minimum, {context}");
    assert_eq!(device::counter(json, "ldmatrix_bank_conflicts"), 0, "ldmatrix bank conflicts, {context}");
    assert_eq!(device::counter(json, "shared_bank_conflicts"), 0, "shared bank conflicts, {context}");
    let loaded = device::counter(json, "global_load_sectors") * SECTOR;
    assert_eq!(loaded, e.loads, "load traffic against the 64-wide tiles' minimum, {context}");
    assert!(e.loads < narrow.loads, "X once instead of twice: {} against {}", e.loads, narrow.loads);
    assert_eq!(device::counter(json, "global_bytes_written"), e.stores, "bytes written: dA, {context}");
    assert_eq!(device::counter(json, "global_store_sectors") * SECTOR, e.stores, "whole sectors, {context}");
}

/// Warp instructions per mma.sync of the whole launch of dX with dA (every
/// CTA's prologue, loops and epilogue) at counted_efficiency_big's shape, at
/// most: 8.76 counted. N = 128 is a short reduction, so each dX tile's fixed
/// costs (the rows' adapters, the 128 x 128 epilogue) weigh as much as its
/// loop; the loops' steady states have their own bounds (dx_steady_state_big
/// for dX's; rank_side_steady_state for dA's, which the 4-warp CTAs here run
/// unchanged). A regression guard on the launch as a whole.
const BIG_DX_DA_PER_MMA: f64 = 9.0;

/// The same on 128x64 (counted: 11.54 at r = 16, 8.59 at r = 64): twice the
/// CTAs, each with the fixed costs of a 128-row tile (the rows' adapters,
/// the grid order) over half the mma, and dA's 4-warp CTAs 32 K columns
/// wide at every rank.
const WIDE_DX_DA_PER_MMA: f64 = 12.0;

/// dX's 128-row `tile` kernel with dA's CTAs in its launch, tile-aligned
/// (`RowTile::shape`), r = 16 and 64: exactly the FLOP minimum of both,
/// each CTA's operand rows read once (the tile-reuse minimum for the dX
/// tiles and dA's tiles: 32 K columns by 32 rank columns, or past a rank
/// of 32 by 64 rank columns, so that X is read once for both rank halves,
/// and on 128x128 64 K columns, so that G is read once per 64), no bank
/// conflicts, whole-sector stores of dX and dA and nothing else; the
/// backward in two launches (G with dB, then this one), no separate dA.
fn counted_efficiency_big<T: LoraDType>(r: usize, tile: RowTile) {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    let (m, k) = tile.shape();
    let s = Shape { m, k, n: 128, r };
    let Shape { m, k, n, r } = s;
    let launches = backward_launches_n::<T>(&dev, s, BIG_LAUNCHES);
    assert!(launches.iter().any(|l| l["kernel"] == format!("lora_backward_g_db_{}", T::DTYPE.kernel_suffix())));
    let json = big_dx_launch::<T>(&launches, r, tile);
    let context = format!("{} {:?} {tile:?} dX with dA: {json}", T::DTYPE, s);
    let elem = T::DTYPE.size_bytes() as u64;
    let (tiles_m, tiles_k) = (m.div_ceil(BIG_TILE), k.div_ceil(tile.cols()));
    let k16 = |len: usize| len.div_ceil(16);
    // dA [r, k] = G^T . X over M: per 32-wide K tile and k16 step of M, 2 m16 x 2 n8.
    let da_mma = k.div_ceil(RANK_TILE) * k16(m) * 4 * r.div_ceil(16);
    assert_eq!(da_mma, r.div_ceil(16) * k.div_ceil(8) * k16(m), "dA's FLOP minimum");
    let dx_mma = tiles_m * tiles_k * tile.mma_per_k16() * (k16(r) + n.div_ceil(STEP) * 2);
    assert_eq!(dx_mma, m.div_ceil(16) * k.div_ceil(8) * (k16(r) + k16(n)), "dX's FLOP minimum");
    let mma = device::object_sum(json, "tensor_instructions") as usize;
    assert_eq!(mma, dx_mma + da_mma, "tensor instructions: the FLOP minimum, {context}");
    assert_eq!(device::counter(json, "ldmatrix_bank_conflicts"), 0, "ldmatrix bank conflicts, {context}");
    assert_eq!(device::counter(json, "shared_bank_conflicts"), 0, "shared bank conflicts, {context}");
    // dX: each 128-row block of dY | G once per K tile, each K tile of W0 | A
    // once per row block; dA: X once (one rank tile: 32 columns at r = 16, 64
    // at r = 64), G's r columns once per dA tile's K columns (32, or 64 past
    // rank 32 on 128x128: its `_r64` warp tile is 64 K columns wide).
    let dx_loads = (tiles_k * m * (r + n) + tiles_m * (r + n) * k) as u64 * elem;
    let da_k_cols = if r > RANK_TILE && tile == RowTile::Big { 2 * RANK_TILE } else { RANK_TILE };
    let da_loads = (m * k + k.div_ceil(da_k_cols) * m * r) as u64 * elem;
    assert_eq!(
        device::counter(json, "global_load_sectors") * SECTOR,
        dx_loads + da_loads,
        "the tile-reuse minimum, {context}"
    );
    let stores = (m * k + r * k) as u64 * elem;
    assert_eq!(device::counter(json, "global_bytes_written"), stores, "bytes written: dX and dA, {context}");
    assert_eq!(device::counter(json, "global_store_sectors") * SECTOR, stores, "whole sectors, {context}");
    let per_mma = device::counter(json, "warp_instructions") as f64 / mma as f64;
    eprintln!("{} dX with dA: {per_mma:.2} warp instructions per mma, the whole launch", T::DTYPE);
    let bound = if tile == RowTile::Big { BIG_DX_DA_PER_MMA } else { WIDE_DX_DA_PER_MMA };
    assert!(per_mma <= bound, "{per_mma:.2} warp instructions per mma, {context}");
}

#[test]
fn counted_efficiency_big_f16() {
    counted_efficiency_big::<f16>(16, RowTile::Big);
}

#[test]
fn counted_efficiency_big_r64_bf16() {
    counted_efficiency_big::<bf16>(64, RowTile::Big);
}

#[test]
fn counted_efficiency_wide_bf16() {
    counted_efficiency_big::<bf16>(16, RowTile::Wide);
}

#[test]
fn counted_efficiency_wide_r64_f16() {
    counted_efficiency_big::<f16>(64, RowTile::Wide);
}

#[test]
fn counted_efficiency_f32() {
    counted_efficiency::<f32>();
}

#[test]
fn counted_efficiency_f16() {
    counted_efficiency::<f16>();
}

#[test]
fn counted_efficiency_bf16() {
    counted_efficiency::<bf16>();
}

/// With several adapters the rank side reads each row once per output tile,
/// whatever the number of adapters: the rows are grouped by adapter first
/// (lora_group_rows) and a CTA gathers only its adapter's rows. Four
/// adapters over contiguous and interleaved rows against one.
#[test]
fn rank_side_traffic_does_not_grow_with_adapters() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    type T = bf16;
    let stream = &dev.stream;
    // dA keeps its own launch to count: K = 512 makes 8 dA tiles per 64-row
    // tile row, too many for a column of dX's launch, and N = 32 too short a
    // reduction for a row's 2 (src/backward.rs, small_da_placement).
    let s = Shape { m: 128, k: 512, n: 32, r: 16 };
    let Shape { m, k, n, r } = s;
    let adapters = 4;
    let single = backward_launches::<T>(&dev, s);
    let (dy, x, w, a, b, p): (CudaSlice<T>, _, _, _, _, _) = (
        upload(stream, &random::<T>(1, m * n)),
        upload(stream, &random::<T>(2, m * k)),
        upload(stream, &random::<T>(3, n * k)),
        upload(stream, &random::<T>(4, adapters * r * k)),
        upload(stream, &random::<T>(5, adapters * n * r)),
        upload(stream, &random::<T>(6, m * r)),
    );
    let ranks = vec![r; adapters];
    let scales = vec![0.5; adapters];
    let linear = Linear { weight: w.as_view(), bias: None, n, k };
    let stack = AdapterStack { a: a.as_view(), b: b.as_view(), r_max: r, ranks: &ranks, scales: &scales };
    for (layout, indices) in [
        ("contiguous", (0..m).map(|i| (i * adapters / m) as i32).collect::<Vec<_>>()),
        ("interleaved", (0..m).map(|i| (i % adapters) as i32).collect()),
    ] {
        let index = upload(stream, &indices);
        let mut status = AdapterStatus::new(stream).expect("status");
        let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
        let (mut da, mut db, mut dx) = (
            poisoned::<T>(stream, adapters * r * k),
            poisoned::<T>(stream, adapters * n * r),
            poisoned::<T>(stream, m * k),
        );
        let mut out = BackwardOutput {
            da: da.as_view_mut(),
            db: db.as_view_mut(),
            dx: dx.as_view_mut(),
            g: None,
            mode: GradMode::Overwrite,
        };
        let inputs = BackwardInputs { dy: dy.as_view(), x: x.as_view(), p: Some(p.as_view()), dropout: None };
        dev.kernels.backward_multi(stream, &inputs, &linear, &stack, &mut rows, &mut out).expect("backward_multi");
        stream.synchronize().expect("sync");
        let multi = device::recent_launch_counters(4).expect("counters");
        let sort = multi.iter().find(|l| l["kernel"] == "lora_group_rows").expect("the rows are grouped first");
        assert_eq!(sort["grid"].as_array().map(Vec::len), Some(3), "{sort}");
        for name in ["g_db", "da"] {
            let one = device::counter(launch::<T>(&single, name), "global_load_sectors");
            let many = launch::<T>(&multi, name);
            let ctas = many["grid"].as_array().expect("grid").iter().map(|d| d.as_u64().expect("dim")).product::<u64>();
            // Per CTA beyond the single adapter's reads: its adapter's rank,
            // scale and segment, and the grouped rows it gathers (32 indices,
            // 4 sectors, per step of 32 rows and warp: at most m / 32 + L
            // steps per wide tile), and G's search of the tile list.
            let wide_tiles = (n.max(k) / 32) as u64;
            let overhead = ctas * 8 * 4 + wide_tiles * (m as u64 / 32 + adapters as u64) * 4 + ctas * 8;
            let loads = device::counter(many, "global_load_sectors");
            assert!(
                loads <= one + overhead,
                "{layout} {name}: {loads} sectors with {adapters} adapters, {one} with one (+ {overhead} allowed): {many}"
            );
            // The tensor work is the single adapter's: the rows, not the
            // adapters, decide it (each adapter's rows fill whole k16 steps here).
            assert_eq!(
                device::object_sum(many, "tensor_instructions"),
                device::object_sum(launch::<T>(&single, name), "tensor_instructions"),
                "{layout} {name}: tensor instructions"
            );
            assert_eq!(device::counter(many, "ldmatrix_bank_conflicts"), 0, "{layout} {name}");
        }
    }
}

/// The most warp instructions the rank side's loops may issue per mma.sync
/// in their steady state, measured as the difference of two runs that differ
/// only in M. At r = 16 each staged 32 x 32 wide tile feeds only 8 mma (a
/// rank-16 GEMM has little work per byte), so the copies dominate: 21.5 (G
/// with dB) and 20.4 (dA) today, against 39 for the 64x64 dA/dB partials
/// they replace. At M = 4096 that is half the modeled DRAM time (the bound).
const RANK_STEADY_STATE_PER_MMA: f64 = 22.0;

/// The rank side's steady state and its bounds: no f32 partials (every byte
/// written is an output byte), tiles narrow in the rank (the FLOP minimum
/// exactly at r = 16), and the instructions per mma of the loops.
fn rank_side_steady_state<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    // N long enough that a G tile's walk over it is mostly loop.
    let (k, n, r) = (64, 1024, 16);
    let (m_short, m_long) = (256, 1280);
    // dX has few tiles at these shapes: split, and summed by a fourth launch.
    let short = backward_launches_n::<T>(&dev, Shape { m: m_short, k, n, r }, 4);
    let long = backward_launches_n::<T>(&dev, Shape { m: m_long, k, n, r }, 4);
    let elem = T::DTYPE.size_bytes() as u64;
    // G [m, r] and dB [n, r]; dA [r, k].
    for (name, output_elements) in [("g_db", (m_long + n) * r), ("da", r * k)] {
        let (short, long) = (launch::<T>(&short, name), launch::<T>(&long, name));
        let written = device::counter(long, "global_bytes_written");
        let output = output_elements as u64 * elem;
        assert!(written <= 2 * output, "{name}: {written} bytes written for {output} of output");
        assert_eq!(written, output, "{name}: nothing but the output is written (no partials)");
        let warp = device::counter(long, "warp_instructions") - device::counter(short, "warp_instructions");
        let mma = device::object_sum(long, "tensor_instructions") - device::object_sum(short, "tensor_instructions");
        let per_mma = warp as f64 / mma as f64;
        eprintln!("{} {name} steady state per mma: {per_mma:.2} warp instructions", T::DTYPE);
        assert!(per_mma <= RANK_STEADY_STATE_PER_MMA, "{name}: {per_mma:.2} warp instructions per mma");
    }
}

#[test]
fn rank_side_steady_state_f16() {
    rank_side_steady_state::<f16>();
}

#[test]
fn rank_side_steady_state_bf16() {
    rank_side_steady_state::<bf16>();
}

/// The most warp instructions dX's reduction loop may issue per mma.sync in
/// its steady state (the base GEMM dY . W0: tile copies, ldmatrix, mma,
/// pipeline bookkeeping). NVIDIA's CUTLASS Sm80 GEMM on the same tiles
/// issues 5.08 (emu/core/tests/cutlass.rs); dX 4.56 (21.75 before the copy plans).
const STEADY_STATE_PER_MMA: f64 = 5.0;

/// dX's steady state on an `m` x `k` output as the difference of two
/// backward runs that differ only in N (dX's base reduction), both short
/// enough to run unsplit; `big`: on that 128-row kernel (else 64x64).
fn dx_steady_state_of<T: LoraDType>(dev: &device::Device, m: usize, k: usize, big: Option<RowTile>) -> PerMma {
    let r = 16;
    // dX's launch also runs dA's CTAs here (either tile: f16/bf16, unsplit,
    // a few dA tiles per tile row), whose work does not depend on N: the
    // difference is dX's.
    let launches = if big.is_some() { BIG_LAUNCHES } else { SMALL_FUSED_LAUNCHES };
    let short = backward_launches_n::<T>(dev, Shape { m, k, n: 64, r }, launches);
    let long = backward_launches_n::<T>(dev, Shape { m, k, n: 192, r }, launches);
    let dx = |launches| match big {
        Some(tile) => big_dx_launch::<T>(launches, r, tile),
        None => launch::<T>(launches, "dx_da"),
    };
    let (short, long) = (dx(&short), dx(&long));
    assert_eq!((short["grid"][2].as_u64(), long["grid"][2].as_u64()), (Some(1), Some(1)), "unsplit: {short} {long}");
    let (per, mma) = PerMma::between(short, long);
    let (rows, cols, mma_per_k16) = match big {
        Some(tile) => (BIG_TILE, tile.cols(), tile.mma_per_k16()),
        None => (TILE, TILE, 4 * MMA_PER_WARP_K16),
    };
    let tiles = m.div_ceil(rows) * k.div_ceil(cols);
    assert_eq!(mma as usize, tiles * (192 - 64) / STEP * 2 * mma_per_k16, "4 more reduction steps per tile");
    eprintln!(
        "{} dX {rows}x{cols} steady state per mma: {:.2} warp instructions, {:.2} load sectors, {:.2} shared wavefronts",
        T::DTYPE,
        per.warp,
        per.sectors,
        per.wavefronts
    );
    assert!(per.warp <= STEADY_STATE_PER_MMA, "{:.2} warp instructions per mma in dX's reduction loop", per.warp);
    per
}

fn dx_steady_state<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    dx_steady_state_of::<T>(&dev, 128, 128, None);
}

/// A 128-row kernel's steady state (on `RowTile::shape`), and what it
/// saves against the 64x64 kernel's: on 128x128 each staged element feeds
/// twice the mma, so half the load sectors and shared wavefronts per mma
/// (plus the copies' share, which halves too); on 128x64 each left element
/// twice and each right one as often, three quarters of them. These are
/// the per-mma figures of the host's tile rule (src/backward.rs,
/// `DxTile::cost`).
fn dx_steady_state_big<T: LoraDType>(tile: RowTile) {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    let small = dx_steady_state_of::<T>(&dev, 128, 128, None);
    let (m, k) = tile.shape();
    let big = dx_steady_state_of::<T>(&dev, m, k, Some(tile));
    match tile {
        RowTile::Big => PerMma::assert_tile_saves(&small, &big, 0.5, 0.55),
        RowTile::Wide => PerMma::assert_tile_saves(&small, &big, 0.75, 0.8),
    }
}

#[test]
fn dx_steady_state_big_bf16() {
    dx_steady_state_big::<bf16>(RowTile::Big);
}

#[test]
fn dx_steady_state_wide_f16() {
    dx_steady_state_big::<f16>(RowTile::Wide);
}

#[test]
fn dx_steady_state_f16() {
    dx_steady_state::<f16>();
}

#[test]
fn dx_steady_state_bf16() {
    dx_steady_state::<bf16>();
}

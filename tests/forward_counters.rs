//! Counted efficiency of the fused forward kernel on the emulator (its
//! per-launch counters; on a real GPU these tests skip): tensor-core
//! instructions against the FLOP minimum, global loads against the
//! tile-reuse minimum (fully coalesced: every sector fetched is used),
//! shared-memory bank conflicts, output sectors, and the instructions the K
//! loop issues per mma in its steady state.

mod device;
use device::PerMma;
mod forward_support;

use cudarc::driver::CudaSlice;
use fused_lora::{Adapter, AdapterStack, AdapterStatus, ForwardOutput, Linear, LoraDType, RowAdapters};
use half::{bf16, f16};

use forward_support::{download, poisoned, random, upload};

const TILE_K: usize = 32;

/// A CTA tile configuration of the fused GEMM.
#[derive(Clone, Copy)]
struct Tile {
    m: usize,
    n: usize,
    /// mma.sync m16n8k16 per CTA per K-step of 32.
    mma_per_step: usize,
    /// The entry point's name ends so.
    kernel_suffix: &'static str,
}

/// 64x64 (`lora_forward_gemm_f16`, `_bf16`): 4 warps x (2 x 4 fragments) x 2 k16 steps.
const SMALL: Tile = Tile { m: 64, n: 64, mma_per_step: 64, kernel_suffix: "16" };
/// 128x128: 4 warps x (4 x 8 fragments) x 2 k16 steps; taken when its grid
/// gives each of the emulator's 108 SMs whole waves of two CTAs
/// (`forward_tile`, src/forward/launch.rs): 12 x 18 tiles.
const BIG: Tile = Tile { m: 128, n: 128, mma_per_step: 256, kernel_suffix: "_128x128" };
/// 128x64: 4 warps x (4 x 4 fragments) x 2 k16 steps; taken where 128x128
/// would leave SMs idle or a tail wave: 12 x 9 big tiles, one per SM.
const WIDE: Tile = Tile { m: 128, n: 64, mma_per_step: 128, kernel_suffix: "_128x64" };
/// The outputs the emulator's 108 SMs give each tile.
const BIG_SHAPE: (usize, usize) = (1536, 2304);
const WIDE_SHAPE: (usize, usize) = (1536, 1152);

struct Shape {
    m: usize,
    k: usize,
    n: usize,
    r: usize,
}

/// Runs the fused forward (no bias: its reads are per-element by design) and
/// returns the counters of its second launch, the fused GEMM.
fn fused_counters<T: LoraDType>(dev: &device::Device, s: &Shape) -> serde_json::Value {
    let stream = &dev.stream;
    let x: CudaSlice<T> = upload(stream, &random::<T>(1, s.m * s.k));
    let w = upload(stream, &random::<T>(2, s.n * s.k));
    let a = upload(stream, &random::<T>(3, s.r * s.k));
    let b = upload(stream, &random::<T>(4, s.n * s.r));
    let mut y = poisoned::<T>(stream, s.m * s.n);
    let linear = Linear { weight: w.as_view(), bias: None, n: s.n, k: s.k };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: s.r, scale: 0.5 };
    let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
    dev.kernels.forward(stream, &x.as_view(), &linear, &adapter, None, &mut out).expect("forward");
    stream.synchronize().expect("sync");
    device::last_launch_counters().expect("the emulator reports every launch")
}

/// Checks the counters of one fused-GEMM launch against the minimum for
/// its tile configuration.
fn check_counts<T: LoraDType>(dev: &device::Device, s: &Shape, tile: Tile) {
    let elem = T::DTYPE.size_bytes() as u64;
    let json = fused_counters::<T>(dev, s);
    eprintln!("{} m={} k={} n={} r={}: {json}", T::DTYPE, s.m, s.k, s.n, s.r);
    let kernel = json["kernel"].as_str().expect("kernel name");
    assert!(kernel.ends_with(tile.kernel_suffix), "{kernel}: the {}x{} tile expected", tile.m, tile.n);
    {
        let (tiles_m, tiles_n) = (s.m.div_ceil(tile.m), s.n.div_ceil(tile.n));
        let steps = s.r.div_ceil(TILE_K) + s.k.div_ceil(TILE_K);

        // Tensor instructions: exactly the padded tile grid's, which is the
        // FLOP minimum (ceil to the 16x8x16 shape) apart from tail padding.
        let mma = device::object_sum(&json, "tensor_instructions") as usize;
        assert_eq!(mma, tiles_m * tiles_n * steps * tile.mma_per_step, "mma count");
        let flop_minimum = s.m.div_ceil(16) * s.n.div_ceil(8) * (s.k.div_ceil(16) + s.r.div_ceil(16));
        let aligned = s.m % tile.m == 0 && s.n % tile.n == 0 && s.k % TILE_K == 0 && s.r % TILE_K == 0;
        if aligned {
            assert_eq!(mma, flop_minimum, "tile-aligned shapes issue exactly the FLOP minimum");
        }
        eprintln!("  mma {mma} vs FLOP minimum {flop_minimum} ({:.3}x)", mma as f64 / flop_minimum as f64);

        // Shared memory: no bank conflict anywhere (ldmatrix, cp.async stores, the rest).
        assert_eq!(device::counter(&json, "ldmatrix_bank_conflicts"), 0, "ldmatrix bank conflicts");
        assert_eq!(device::counter(&json, "shared_bank_conflicts"), 0, "shared bank conflicts");

        // Every input byte is read, each at least once.
        let inputs = ((s.m * s.k + s.n * s.k + s.m * s.r + s.n * s.r) as u64) * elem;
        assert_eq!(device::counter(&json, "global_bytes_read"), inputs, "distinct bytes read");
        let loaded = device::counter(&json, "global_load_sectors") * 32;
        if aligned {
            // Tile reuse: each CTA reads its X and P rows and its W0 and B rows
            // once; with 16-byte loads filling whole sectors this is the traffic.
            let tile_minimum = ((tiles_n * s.m * (s.k + s.r) + tiles_m * s.n * (s.k + s.r)) as u64) * elem;
            assert_eq!(loaded, tile_minimum, "global load traffic against the tile-reuse minimum");
        }
        let output = (s.m * s.n) as u64 * elem;
        assert_eq!(device::counter(&json, "global_bytes_written"), output, "Y written once");
        let stored = device::counter(&json, "global_store_sectors") * 32;
        // The epilogue stores whole tile rows through shared memory: on
        // aligned shapes exactly the output's sectors; otherwise at most one
        // partly used sector at each end of each row segment of a tile.
        if aligned {
            assert_eq!(stored, output, "store traffic against the output bytes");
        } else {
            assert!(stored <= output + 2 * 32 * (s.m * tiles_n) as u64, "store sectors {stored} B for {output} B");
        }
        eprintln!("  loads {loaded} B (inputs {inputs} B), stores {stored} B for {output} B");
    }
}

fn counted_efficiency<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    // K of at most 7 K-steps keeps these on the one-launch path (no split-K
    // reduction after the GEMM), so the last launch's counters are the GEMM's.
    for s in [Shape { m: 128, k: 192, n: 128, r: 32 }, Shape { m: 113, k: 200, n: 136, r: 40 }] {
        check_counts::<T>(&dev, &s, SMALL);
    }
}

/// The 128x128 tile (12 x 18 tiles, two per SM of the emulated device) and
/// the 128x64 tile (12 x 18 tiles of its own on 12 x 9 big ones).
fn counted_efficiency_big<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    check_counts::<T>(&dev, &Shape { m: BIG_SHAPE.0, k: 128, n: BIG_SHAPE.1, r: 32 }, BIG);
}

fn counted_efficiency_wide<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    check_counts::<T>(&dev, &Shape { m: WIDE_SHAPE.0, k: 128, n: WIDE_SHAPE.1, r: 32 }, WIDE);
}

#[test]
fn counted_efficiency_wide_f16() {
    counted_efficiency_wide::<f16>();
}

#[test]
fn counted_efficiency_wide_bf16() {
    counted_efficiency_wide::<bf16>();
}

#[test]
fn counted_efficiency_big_f16() {
    counted_efficiency_big::<f16>();
}

#[test]
fn counted_efficiency_big_bf16() {
    counted_efficiency_big::<bf16>();
}

#[test]
fn counted_efficiency_f16() {
    counted_efficiency::<f16>();
}

#[test]
fn counted_efficiency_bf16() {
    counted_efficiency::<bf16>();
}

/// The most warp instructions the fused GEMM's K loop may issue per mma.sync
/// in its steady state (tile copies, ldmatrix, mma, pipeline bookkeeping).
/// The per-tile set-up is outside it: copy plans advance by a constant per
/// K-step. NVIDIA's CUTLASS Sm80 GEMM on the same 64x64 tiles with 32x32
/// warp tiles issues 5.08 (emu/core/tests/cutlass.rs, counted the same way);
/// this kernel 4.00 (18.31 before the copy plans).
const STEADY_STATE_PER_MMA: f64 = 5.0;

/// The steady state as the difference of two launches that differ only in
/// K (everything per tile is the same; the extra K-steps are all in the
/// middle of the pipeline), both short enough for the one-launch path; on
/// an `m` x `n` output whose tiles are `tile`.
fn steady_state_of<T: LoraDType>(dev: &device::Device, m: usize, n: usize, tile: Tile) -> PerMma {
    // r = 32: a rank the fused-P tile does not serve, so the shrink runs
    // apart and these shapes keep the tile under test.
    let short = fused_counters::<T>(dev, &Shape { m, k: 64, n, r: 32 });
    let long = fused_counters::<T>(dev, &Shape { m, k: 224, n, r: 32 });
    assert_eq!((short["grid"][2].as_u64(), long["grid"][2].as_u64()), (Some(1), Some(1)), "unsplit: {short} {long}");
    for json in [&short, &long] {
        let kernel = json["kernel"].as_str().expect("kernel name");
        assert!(kernel.ends_with(tile.kernel_suffix), "{kernel}: the {}x{} tile expected", tile.m, tile.n);
    }
    let (per, mma) = PerMma::between(&short, &long);
    let tiles = m.div_ceil(tile.m) * n.div_ceil(tile.n);
    assert_eq!(mma as usize, tiles * (224 - 64) / TILE_K * tile.mma_per_step, "5 more K-steps per tile");
    eprintln!(
        "{} {}x{} steady state per mma: {:.2} warp instructions, {:.2} load sectors, {:.2} shared wavefronts",
        T::DTYPE,
        tile.m,
        tile.n,
        per.warp,
        per.sectors,
        per.wavefronts
    );
    assert!(per.warp <= STEADY_STATE_PER_MMA, "{:.2} warp instructions per mma in the K loop", per.warp);
    per
}

fn steady_state<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    steady_state_of::<T>(&dev, 128, 128, SMALL);
}

/// The 128x128 tile's steady state (12 x 18 tiles: two per emulated SM),
/// and what it saves against the 64x64 tile's: each staged element feeds
/// twice the mma, so half the load sectors and shared wavefronts per mma.
fn steady_state_big<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    let small = steady_state_of::<T>(&dev, 128, 128, SMALL);
    let big = steady_state_of::<T>(&dev, BIG_SHAPE.0, BIG_SHAPE.1, BIG);
    PerMma::assert_tile_saves(&small, &big, 0.5, 0.55);
}

/// The 128x64 tile's steady state: a staged row of X feeds 64 columns
/// instead of 32, a row of W0 64 rows instead of 32, so (128 + 64) staged
/// rows per 128 x 64 outputs against (64 + 64) per 64 x 64: three quarters
/// of the 64x64 tile's load sectors per mma; its 64x32 warp tiles load 6
/// ldmatrix.x4 per 16 mma where 32x32 load 4 per 8: shared wavefronts per
/// mma at most three quarters as well.
fn steady_state_wide<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    let small = steady_state_of::<T>(&dev, 128, 128, SMALL);
    let wide = steady_state_of::<T>(&dev, WIDE_SHAPE.0, WIDE_SHAPE.1, WIDE);
    PerMma::assert_tile_saves(&small, &wide, 0.75, 0.75);
    assert!(wide.warp < small.warp, "warp instructions per mma {:.3} vs {:.3}", wide.warp, small.warp);
}

#[test]
fn steady_state_wide_f16() {
    steady_state_wide::<f16>();
}

#[test]
fn steady_state_wide_bf16() {
    steady_state_wide::<bf16>();
}

#[test]
fn steady_state_big_f16() {
    steady_state_big::<f16>();
}

#[test]
fn steady_state_big_bf16() {
    steady_state_big::<bf16>();
}

#[test]
fn steady_state_f16() {
    steady_state::<f16>();
}

#[test]
fn steady_state_bf16() {
    steady_state::<bf16>();
}

/// Runs a tiny shrink (one launch of the rank-side shrink), then `forward`, and
/// returns the counters of the two launches after the shrink's, checking
/// that they are the only ones.
fn two_launches_after_marker(dev: &device::Device, forward: impl FnOnce()) -> Vec<serde_json::Value> {
    let stream = &dev.stream;
    let x: CudaSlice<bf16> = upload(stream, &random::<bf16>(9, 8));
    let a = upload(stream, &random::<bf16>(10, 8));
    let mut p = poisoned::<bf16>(stream, 1);
    dev.kernels.shrink(stream, &x.as_view(), &a.as_view(), 1, &mut p.as_view_mut()).expect("marker shrink");
    forward();
    stream.synchronize().expect("sync");
    let recent = device::recent_launch_counters(3).expect("the emulator reports every launch");
    let marker = &recent[0];
    assert_eq!(
        (marker["kernel"].as_str(), marker["grid"][0].as_u64(), marker["grid"][1].as_u64()),
        (Some("lora_rank_shrink_bf16"), Some(1), Some(1)),
        "the launch before the last two is the marker shrink: the forward made two launches"
    );
    recent[1..].to_vec()
}

/// The decode path (M = 16, f16/bf16): two launches, the split GEMM over
/// [W0; A] and the finish; W0 read once (every byte, each 32-byte sector
/// fetched once), X once per column tile of the grid (16-byte loads, whole
/// sectors), the f32 partials written once and read once by the finish,
/// which reads nothing else but B and writes only Y and P.
fn decode_counters<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    let stream = &dev.stream;
    let (m, k, n, r) = (16usize, 2048usize, 512usize, 16usize);
    let elem = T::DTYPE.size_bytes() as u64;
    let x: CudaSlice<T> = upload(stream, &random::<T>(1, m * k));
    let w = upload(stream, &random::<T>(2, n * k));
    let a = upload(stream, &random::<T>(3, r * k));
    let b = upload(stream, &random::<T>(4, n * r));
    let mut y = poisoned::<T>(stream, m * n);
    let mut p = poisoned::<T>(stream, m * r);
    let launches = two_launches_after_marker(&dev, || {
        let linear = Linear { weight: w.as_view(), bias: None, n, k };
        let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale: 0.5 };
        let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
        dev.kernels.forward(stream, &x.as_view(), &linear, &adapter, None, &mut out).expect("forward");
    });
    let suffix = T::DTYPE.kernel_suffix();
    let names: Vec<&str> = launches.iter().map(|l| l["kernel"].as_str().expect("kernel name")).collect();
    assert_eq!(names, [format!("lora_decode_gemm_{suffix}"), format!("lora_decode_finish_{suffix}")], "launches");
    let (gemm, finish) = (&launches[0], &launches[1]);
    eprintln!("{} decode split GEMM: {gemm}\nfinish: {finish}", T::DTYPE);

    let (w0, a_bytes, x_bytes) = ((n * k) as u64 * elem, (r * k) as u64 * elem, (m * k) as u64 * elem);
    let column_tiles = (n.div_ceil(32) + r.div_ceil(32)) as u64;
    assert_eq!(gemm["grid"][0].as_u64(), Some(column_tiles), "32 columns of [W0; A] per CTA");
    let splits = gemm["grid"][1].as_u64().expect("splits");
    assert!(splits > 1, "K = {k} over {column_tiles} column tiles splits to fill the SMs");
    assert_eq!(device::counter(gemm, "global_bytes_read"), w0 + a_bytes + x_bytes, "X, W0 and A read");
    assert_eq!(
        device::counter(gemm, "global_load_sectors") * 32,
        w0 + a_bytes + column_tiles * x_bytes,
        "each sector of W0 and A fetched once, X once per column tile"
    );
    let partials = splits * (m * (n + r)) as u64 * 4;
    assert_eq!(device::counter(gemm, "global_bytes_written"), partials, "the f32 partials, once");
    assert!(partials * 10 <= w0, "partials {partials} B against W0's {w0} B");
    assert_eq!(device::counter(finish, "global_bytes_read"), partials + (n * r) as u64 * elem, "partials and B");
    assert_eq!(device::counter(finish, "global_bytes_written"), ((m * n + m * r) as u64) * elem, "Y and P");
    let (p_host, y_host) = (download(stream, &p), download(stream, &y));
    assert!(p_host.iter().chain(&y_host).all(|v| v.to_f64().is_finite()), "every output written");
}

#[test]
fn decode_counters_f16() {
    decode_counters::<f16>();
}

#[test]
fn decode_counters_bf16() {
    decode_counters::<bf16>();
}

/// With one adapter per row (16 rows, 4 adapters, one row without), still two launches.
#[test]
fn decode_multi_two_launches() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    let stream = &dev.stream;
    let (m, k, n, r_max, l) = (16usize, 512usize, 64usize, 16usize, 4usize);
    let x: CudaSlice<bf16> = upload(stream, &random::<bf16>(1, m * k));
    let w = upload(stream, &random::<bf16>(2, n * k));
    let a = upload(stream, &random::<bf16>(3, l * r_max * k));
    let b = upload(stream, &random::<bf16>(4, l * n * r_max));
    let index: Vec<i32> = (0..m as i32).map(|i| if i == 5 { -1 } else { i % l as i32 }).collect();
    let index = upload(stream, &index);
    let mut status = AdapterStatus::new(stream).expect("status");
    let mut y = poisoned::<bf16>(stream, m * n);
    let (ranks, scales) = (vec![16, 3, 8, 1], vec![1.0f32, 0.5, -2.0, 0.25]);
    let launches = two_launches_after_marker(&dev, || {
        let linear = Linear { weight: w.as_view(), bias: None, n, k };
        let stack = AdapterStack { a: a.as_view(), b: b.as_view(), r_max, ranks: &ranks, scales: &scales };
        let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
        let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
        dev.kernels.forward_multi(stream, &x.as_view(), &linear, &stack, &mut rows, None, &mut out).expect("forward");
    });
    let names: Vec<&str> = launches.iter().map(|l| l["kernel"].as_str().expect("kernel name")).collect();
    assert_eq!(names, ["lora_decode_gemm_bf16", "lora_decode_finish_bf16"], "launches");
    status.check(stream).expect("no bad index");
    assert!(download(stream, &y).iter().all(|v| v.to_f64().is_finite()), "every output written");
}

/// The fused-P tile (`lora_forward_gemm_<T>_128x256_p`: 8 warps of 64 x 64,
/// P computed in the CTA): 12 x 9 tiles of 128 x 256, one per SM of the
/// emulated device, over a short K, which `takes_fused_p` routes to it.
const FUSED_P_SHAPE: (usize, usize) = (1536, 2304);
/// The fused-P tile's steady-state warp instructions per mma at most.
const FUSED_P_WARP_PER_MMA: f64 = 2.3;

/// Runs a marker launch (a one-row shrink), then the forward, and returns
/// the counters of the forward's one launch, checking that it made one.
fn fused_p_counters<T: LoraDType>(dev: &device::Device, s: &Shape) -> serde_json::Value {
    let stream = &dev.stream;
    let mx: CudaSlice<T> = upload(stream, &random::<T>(9, 8));
    let ma = upload(stream, &random::<T>(10, 8));
    let mut mp = poisoned::<T>(stream, 1);
    dev.kernels.shrink(stream, &mx.as_view(), &ma.as_view(), 1, &mut mp.as_view_mut()).expect("marker shrink");
    let x: CudaSlice<T> = upload(stream, &random::<T>(1, s.m * s.k));
    let w = upload(stream, &random::<T>(2, s.n * s.k));
    let a = upload(stream, &random::<T>(3, s.r * s.k));
    let b = upload(stream, &random::<T>(4, s.n * s.r));
    let mut y = poisoned::<T>(stream, s.m * s.n);
    let mut p = poisoned::<T>(stream, s.m * s.r);
    let linear = Linear { weight: w.as_view(), bias: None, n: s.n, k: s.k };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: s.r, scale: 0.5 };
    let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
    dev.kernels.forward(stream, &x.as_view(), &linear, &adapter, None, &mut out).expect("forward");
    stream.synchronize().expect("sync");
    let recent = device::recent_launch_counters(2).expect("the emulator reports every launch");
    let marker = &recent[0];
    assert_eq!(
        (marker["kernel"].as_str(), marker["grid"][0].as_u64(), marker["grid"][1].as_u64()),
        (Some(format!("lora_rank_shrink_{}", T::DTYPE.kernel_suffix()).as_str()), Some(1), Some(1)),
        "the launch before the last is the marker shrink: the forward made one launch, no shrink"
    );
    let kernel = recent[1]["kernel"].as_str().expect("kernel name");
    assert!(kernel.ends_with("_128x256_p"), "{kernel}: the fused-P tile expected");
    recent[1].clone()
}

/// The fused-P tile's counts on a tile-aligned shape: mma exactly the base
/// GEMM's and the expand's FLOP minimum plus P's once per column tile (r /
/// 256 of the base at r = 16); global loads exactly the tile-reuse minimum
/// (X read once per column tile, as the base GEMM reads it, and no second
/// time for P; W0 once per row tile; A's r rows and B's slice once per
/// CTA), every input byte read, Y and P each written once in whole sectors;
/// no bank conflicts. Then the K loop's steady state (two launches
/// differing only in K) against the 128x128 tile's: P's extra mma ride on
/// the staged X tile, so fewer load sectors and shared wavefronts per mma.
fn fused_p_counts<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: launch counters exist only on the emulator");
        return;
    }
    let elem = T::DTYPE.size_bytes() as u64;
    let (m, n) = FUSED_P_SHAPE;
    let (tile_m, tile_n) = (128, 256);
    let (tiles_m, tiles_n) = (m / tile_m, n / tile_n);
    for r in [16, 8] {
        let s = Shape { m, k: 128, n, r };
        let json = fused_p_counters::<T>(&dev, &s);
        eprintln!("{} fused-P m={m} k={} n={n} r={r}: {json}", T::DTYPE, s.k);
        let mma = device::object_sum(&json, "tensor_instructions") as usize;
        // X.W0^T and the expand's one k16 (rank padded to 16), then P: the
        // CTA's 128 rows x 2 n8 fragments per k16, in every column tile.
        let base = (m / 16) * (n / 8) * (s.k / 16 + 1);
        let p_mma = tiles_n * (m / 16) * 2 * (s.k / 16);
        assert_eq!(mma, base + p_mma, "mma: the base's and P's once per column tile");
        assert_eq!(p_mma * tile_n, base * 16 * s.k / (s.k + 16), "P's share is 16 / 256 of the base GEMM's");
        assert_eq!(device::counter(&json, "ldmatrix_bank_conflicts"), 0, "ldmatrix bank conflicts");
        assert_eq!(device::counter(&json, "shared_bank_conflicts"), 0, "shared bank conflicts");
        let inputs = ((m * s.k + n * s.k + r * s.k + n * r) as u64) * elem;
        assert_eq!(device::counter(&json, "global_bytes_read"), inputs, "distinct bytes read");
        let tile_minimum =
            ((tiles_n * m * s.k + tiles_m * n * s.k + tiles_m * tiles_n * r * s.k + tiles_m * n * r) as u64) * elem;
        let loaded = device::counter(&json, "global_load_sectors") * 32;
        assert_eq!(loaded, tile_minimum, "global load traffic against the tile-reuse minimum");
        let output = ((m * n + m * r) as u64) * elem;
        assert_eq!(device::counter(&json, "global_bytes_written"), output, "Y and P written once");
        assert_eq!(device::counter(&json, "global_store_sectors") * 32, output, "whole sectors of Y and P");
    }

    let short = fused_p_counters::<T>(&dev, &Shape { m, k: 64, n, r: 16 });
    let long = fused_p_counters::<T>(&dev, &Shape { m, k: 224, n, r: 16 });
    let (fused, mma) = PerMma::between(&short, &long);
    assert_eq!(mma as usize, tiles_m * tiles_n * (224 - 64) / TILE_K * (512 + 32), "5 more K-steps per tile");
    eprintln!(
        "{} 128x256 fused-P steady state per mma: {:.3} warp instructions, {:.3} load sectors, {:.3} shared wavefronts",
        T::DTYPE,
        fused.warp,
        fused.sectors,
        fused.wavefronts
    );
    let big = steady_state_of::<T>(&dev, BIG_SHAPE.0, BIG_SHAPE.1, BIG);
    // Warp instructions: the big tile's per mma, plus P's per k16 (A's
    // ldmatrix and the choice of the warp's m16 fragment) over 34 mma
    // instead of 32: counted 2.28 against 2.06; the tile's modeled cost
    // (`TileCost::FUSED_P`, src/forward/launch.rs) assumes at most this.
    assert!(fused.warp <= FUSED_P_WARP_PER_MMA, "warp instructions per mma {:.3} vs {:.3}", fused.warp, big.warp);
    assert!(fused.sectors <= 0.75 * big.sectors, "load sectors per mma {:.3} vs {:.3}", fused.sectors, big.sectors);
    assert!(fused.wavefronts <= big.wavefronts, "wavefronts per mma {:.3} vs {:.3}", fused.wavefronts, big.wavefronts);
}

#[test]
fn fused_p_counts_f16() {
    fused_p_counts::<f16>();
}

#[test]
fn fused_p_counts_bf16() {
    fused_p_counts::<bf16>();
}

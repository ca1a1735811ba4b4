//! dX's 128-row tiles (128 × 128 and 128 × 64), with and without dA's CTAs
//! in their launch, on a device of few SMs: the emulated device presents 8
//! (`PTX_EMU_MULTIPROCESSORS`, set by every test of this binary before its
//! first launch, the same value in all of them), so the tile rule
//! (`dx_tile`, src/backward.rs) gives the 128-row tiles to grids a tenth
//! the size it needs on 108 SMs, which keeps the emulator's time short.
//! Each test asserts the tile its launches took. One combination needs
//! more adapters still on 108 SMs: dA's 64-rank-column tiles in the
//! 128 × 128 launch with a warp per adapter (the rows gathered through the
//! permutation, each warp's X tile 64 K columns wide).

mod backward_support;
mod common;
mod device;
mod forward_support;

use backward_support::{
    check_against_reference, dx_with_da_rows_free, last_kernel, run, run_dx_at, Api, Case, Initial,
};
use forward_support::{row_indices, Mix};
use fused_lora::reference::Dropout;
use fused_lora::{GradMode, LoraDType};
use half::{bf16, f16};

/// The SM count every test here presents.
const SMS: &str = "8";

fn presenting_few_sms() {
    std::env::set_var("PTX_EMU_MULTIPROCESSORS", SMS);
}

/// Nine adapters of ranks up to 40 over M = 1500 rows (warp mode: fewer
/// rows per adapter than 8 warps × 32), K = 380 (ragged): 12 × 3 dX tiles
/// of 128 × 128 and dA's column of 12 CTAs, 64 rank columns per dA tile.
const WARP_MODE_PAST_32: &[usize] = &[8, 40, 1, 17, 32, 16, 24, 3, 33];

#[test]
fn big_dx_with_wide_da_warp_mode_f16() {
    presenting_few_sms();
    dx_with_da_rows_free::<f16>("128x128", (1500, 380), WARP_MODE_PAST_32);
}

#[test]
fn big_dx_with_wide_da_warp_mode_bf16() {
    presenting_few_sms();
    dx_with_da_rows_free::<bf16>("128x128", (1500, 380), WARP_MODE_PAST_32);
}

/// One of dX's 128-row tiles, `tile` ("128x128" or "128x64"), on `(m, k)`
/// with N = `n` (the host's rule, src/backward.rs `dx_tile`, takes that tile
/// for these shapes on this binary's 8 SMs, with and without dA's CTAs;
/// f16/bf16), none a multiple of 128: ragged row and column tiles and a
/// partial last reduction step; five adapters of ranks 8, 40, 1, 17, 32
/// mixed within tiles, padding NaN: against the reference, overwriting, and
/// accumulating with dropout (the tile's dropout kernel); then the same rows
/// fed 64 at a time (fewer rows than a 128-row tile: the 64x64 tile on any
/// SM count) give the same dX and G bits. Last, `odd`: odd K and N (no operand row allows 16-byte
/// copies: every tile staged element by element) on one adapter, with
/// dropout, and without where the rule keeps the tile (`odd_plain`).
fn row_tile_bits<T: LoraDType>(
    tile: &str,
    (m, k, n): (usize, usize, usize),
    odd: (usize, usize, usize),
    odd_plain: bool,
) {
    presenting_few_sms();
    let Some(dev) = device::device() else { return };
    let r_max = 40;
    let ranks = [8, 40, 1, 17, 32];
    let index = row_indices(Mix::Unsorted, m, ranks.len(), 950);
    let mut case = Case::<T>::new(m, k, n, &ranks, r_max, index, 960);
    case.poison_padding();
    let (full, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    let big = |kernel: Option<String>| {
        kernel.map(|name| {
            assert!(name.starts_with("lora_backward_dx_"), "dX launches last: {name}");
            // With dA's CTAs in the launch, ranks past 32: `_r64`.
            name.ends_with(&format!("_{tile}")) || name.ends_with(&format!("_{tile}_r64"))
        })
    };
    assert_ne!(big(last_kernel()), Some(false), "the {tile} tile for {m} x {k}");
    check_against_reference(&format!("{tile} dX tile"), &case, &full, None);
    let initial = Initial::random(&case, 970);
    let mut dropped = Case::<T> {
        ranks: case.ranks.clone(),
        scales: case.scales.clone(),
        index: case.index.clone(),
        x: case.x.clone(),
        w: case.w.clone(),
        a: case.a.clone(),
        b: case.b.clone(),
        p: case.p.clone(),
        dy: case.dy.clone(),
        ..case
    };
    dropped.dropout = Some(Dropout::new(0.25, 0x5eed, 1 << 33).expect("dropout"));
    let (accumulated, _) =
        run(&dev, &dropped, Api::Multi, true, &initial, GradMode::Accumulate).expect("backward_multi accumulate");
    let kernel = last_kernel();
    if let Some(name) = &kernel {
        assert!(name.contains("_dropout_"), "the dropout kernel: {name}");
    }
    assert_ne!(big(kernel), Some(false), "the {tile} tile with dropout");
    check_against_reference(&format!("{tile} dX tile, dropout, accumulate"), &dropped, &accumulated, Some(&initial));

    const ROWS: usize = 64;
    for m0 in (0..m).step_by(ROWS) {
        let rows = ROWS.min(m - m0);
        let slice = Case::<T> {
            m: rows,
            ranks: case.ranks.clone(),
            scales: case.scales.clone(),
            index: case.index[m0..m0 + rows].to_vec(),
            x: case.x[m0 * k..(m0 + rows) * k].to_vec(),
            w: case.w.clone(),
            a: case.a.clone(),
            b: case.b.clone(),
            p: case.p[m0 * r_max..(m0 + rows) * r_max].to_vec(),
            dy: case.dy[m0 * n..(m0 + rows) * n].to_vec(),
            dropout: None,
            ..case
        };
        let (got, _) =
            run(&dev, &slice, Api::Multi, true, &Initial::nan(&slice), GradMode::Overwrite).expect("backward_multi");
        assert_ne!(big(last_kernel()), Some(true), "the small tile for {rows} rows");
        let bits = |v: &[T]| v.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.dx), bits(&full.dx[m0 * k..(m0 + rows) * k]), "dX rows {m0}..");
        assert_eq!(bits(&got.g), bits(&full.g[m0 * r_max..(m0 + rows) * r_max]), "G rows {m0}..");
    }

    // Odd K: a thread's two adjacent mask indices straddle a Philox block on
    // every other row, and the last column pair has one column.
    let (m, k, n) = odd;
    let r = 16;
    let mut odd = Case::<T>::new(m, k, n, &[r], r, vec![0; m], 980);
    let plain = odd_plain.then_some(None);
    for dropout in plain.into_iter().chain([Some(Dropout::new(0.5, 77, 5).expect("dropout"))]) {
        odd.dropout = dropout;
        let (got, _) = run(&dev, &odd, Api::Single, true, &Initial::nan(&odd), GradMode::Overwrite)
            .expect("backward, odd K and N");
        assert_ne!(big(last_kernel()), Some(false), "the {tile} tile for {m} x {k}");
        check_against_reference(&format!("{tile} dX tile, odd K and N, {dropout:?}"), &odd, &got, None);
    }
}

/// dX's 128x128 tile writes a whole tile straight from its accumulators
/// when the rows and the base allow vectors (K a multiple of 4, dX 16-byte
/// aligned) and stages every other tile through shared memory: the same
/// sums rounded once, so the same bits. M = 260, K = 836 (3 x 7 tiles, the
/// big tile's pick on 8 SMs; a ragged last row and column of tiles), N = 40, two adapters of ranks 16 and 8 mixed within tiles: dX
/// written at an aligned base and 1 element in (every tile staged) gives
/// the same bits, overwriting and accumulating; the aligned run against the
/// reference. f16 here; bf16's direct stores are `big_dx_tile_bf16`'s
/// interior tiles.
fn big_dx_tile_direct_store<T: LoraDType>() {
    presenting_few_sms();
    let Some(dev) = device::device() else { return };
    let (m, k, n, r_max) = (260, 836, 40, 16);
    let ranks = [16, 8];
    let index = row_indices(Mix::Unsorted, m, ranks.len(), 1000);
    let mut case = Case::<T>::new(m, k, n, &ranks, r_max, index, 1001);
    case.poison_padding();
    let bits = |v: &[T]| v.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
    for (mode, initial) in
        [(GradMode::Overwrite, Initial::nan(&case)), (GradMode::Accumulate, Initial::random(&case, 1002))]
    {
        let (aligned, _) = run_dx_at(&dev, &case, Api::Multi, true, &initial, mode, 0).expect("backward_multi");
        if let Some(name) = last_kernel() {
            assert!(name.ends_with("_128x128"), "the big tile for {m} x {k}: {name}");
        }
        let old = (mode == GradMode::Accumulate).then_some(&initial);
        check_against_reference(&format!("big dX tile, {mode:?}"), &case, &aligned, old);
        let (shifted, _) =
            run_dx_at(&dev, &case, Api::Multi, true, &initial, mode, 1).expect("backward_multi, dX shifted");
        assert_eq!(bits(&aligned.dx), bits(&shifted.dx), "dX at an aligned base against 1 element in, {mode:?}");
    }
}

#[test]
fn big_dx_tile_direct_store_f16() {
    big_dx_tile_direct_store::<f16>();
}

/// The 128x128 tile: 3 x 7 tiles (the last row 4 high, the last column 68
/// wide) on 8 SMs.
#[test]
fn big_dx_tile_bf16() {
    row_tile_bits::<bf16>("128x128", (260, 836, 72), (260, 835, 41), true);
}

/// The 128x64 tile: 4 x 5 tiles (the last row 4 high, the last column 4
/// wide) on 8 SMs, with dA's CTAs in the launch (warp mode: 5 adapters over
/// 388 rows) and, with dropout, alone. The odd shape: with dropout only in
/// f16, with and without in bf16.
#[test]
fn wide_dx_tile_f16() {
    row_tile_bits::<f16>("128x64", (388, 260, 104), (388, 261, 41), false);
}

#[test]
fn wide_dx_tile_bf16() {
    row_tile_bits::<bf16>("128x64", (388, 260, 104), (388, 261, 41), true);
}

/// dA in the launch of dX's 128-row `tile` past rank 32 with one adapter
/// (no row indices: the rows in order, staged at addresses that advance by
/// constants instead of gathered through the permutation): `(m, k)` ragged
/// (M's last reduction step 4 or 28 rows; dA's last K tile 4 or 24
/// columns; the tile's pick on 8 SMs), N = 104, r = 40, against the reference, overwriting and
/// accumulating; then the same rows through `backward_multi` with every
/// row's index 0 (gathered through the permutation) give dA, and every
/// other gradient, bit for bit. (On compute capability 9.0 one adapter's dX
/// takes the Hopper kernel and dA a launch of its own: checked against the
/// reference only.)
fn big_dx_with_da_one_adapter<T: LoraDType>(tile: &str, (m, k): (usize, usize)) {
    presenting_few_sms();
    let Some(dev) = device::device() else { return };
    let (n, r) = (104, 40);
    let case = Case::<T>::new(m, k, n, &[r], r, vec![0; m], 995);
    let (single, _) = run(&dev, &case, Api::Single, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward");
    let fused = match last_kernel() {
        Some(name) if name.ends_with("_sm90a") => false,
        Some(name) => {
            let wide = format!("_{tile}_r64");
            assert!(name.starts_with("lora_backward_dx_da_") && name.ends_with(&wide), "dX with dA: {name}");
            true
        }
        None => true,
    };
    check_against_reference("dA in dX's launch, one adapter", &case, &single, None);
    let initial = Initial::random(&case, 996);
    let (accumulated, _) =
        run(&dev, &case, Api::Single, true, &initial, GradMode::Accumulate).expect("backward accumulate");
    check_against_reference("dA in dX's launch, one adapter, accumulate", &case, &accumulated, Some(&initial));
    let (gathered, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    if let Some(name) = last_kernel() {
        assert!(name.ends_with(&format!("_{tile}_r64")), "dX with dA, rows gathered: {name}");
    }
    if !fused {
        return;
    }
    let bits = |v: &[T]| v.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&single.da), bits(&gathered.da), "dA: rows in order against gathered");
    assert_eq!(bits(&single.dx), bits(&gathered.dx), "dX: rows in order against gathered");
    assert_eq!(bits(&single.db), bits(&gathered.db), "dB: rows in order against gathered");
}

#[test]
fn big_dx_with_da_one_adapter_bf16() {
    big_dx_with_da_one_adapter::<bf16>("128x128", (900, 600));
}

#[test]
fn wide_dx_with_da_one_adapter_f16() {
    big_dx_with_da_one_adapter::<f16>("128x64", (700, 260));
}

/// Nine adapters of ranks up to 16 (warp mode: fewer rows than 9 x 256).
const WARP_MODE_RANKS: &[usize] = &[8, 16, 1, 12, 3, 16, 5, 9, 2];

/// 128x128: M = 600, K = 200 (5 x 2 tiles and dA's column on 8 SMs).
#[test]
fn big_dx_with_da_warp_mode_f16() {
    presenting_few_sms();
    dx_with_da_rows_free::<f16>("128x128", (600, 200), WARP_MODE_RANKS);
}

#[test]
fn big_dx_with_da_split_bf16() {
    presenting_few_sms();
    dx_with_da_rows_free::<bf16>("128x128", (600, 200), &[40, 17]);
}

/// 128x64: M = 900, K = 136 (8 x 3 tiles and dA's column on 8 SMs).
#[test]
fn wide_dx_with_da_warp_mode_bf16() {
    presenting_few_sms();
    dx_with_da_rows_free::<bf16>("128x64", (900, 136), WARP_MODE_RANKS);
}

//! dB's tiles in dX's 128x128 launch (after dA's, in its last grid column;
//! `big_dx_takes_db` in src/backward.rs), with G's launch running G alone,
//! on small shapes: the emulated device presents 8 SMs
//! (`PTX_EMU_MULTIPROCESSORS`, set by every test of this binary before its
//! first launch, the same value in all of them), so a grid of 9 big tiles
//! takes the 128x128 tile. Against the reference (exact and naive,
//! docs/contract.md's tolerance) with every output NaN-poisoned and the
//! adapters' padding NaN: one adapter (rows in order, the contiguous
//! staging) and several (rows scattered, then sorted: the same bits),
//! accumulating onto random gradients, ragged N and rank tiles, odd N (dY
//! staged element by element), ranks up to 32 and past; reruns give the
//! same bits; a shape whose dA and dB tiles would overload the column keeps
//! dB with G.

mod backward_support;
mod common;
mod device;
mod forward_support;

use backward_support::{assert_row_order_free, check_against_reference, run, Api, Case, Initial, RowOrder};
use forward_support::{row_indices, Mix};
use fused_lora::{GradMode, LoraDType};
use half::{bf16, f16};

/// The SM count every test here presents.
const SMS: &str = "8";

fn device() -> Option<device::Device> {
    std::env::set_var("PTX_EMU_MULTIPROCESSORS", SMS);
    device::device()
}

/// The kernels of the backward's last `count` launches, on the emulator.
fn launches(count: usize) -> Option<Vec<String>> {
    device::recent_launch_counters(count)
        .map(|l| l.iter().map(|c| c["kernel"].as_str().unwrap_or_default().to_string()).collect())
}

/// Asserts the backward's last two launches were G alone (`g_cols` rank
/// columns per CTA: a grid of G's row tiles only) and dX with dA and dB
/// (`dx_kernel`), or with `db_in_dx` false, G with dB and `dx_kernel`.
fn assert_launches<T: LoraDType>(what: &str, dx_kernel: &str, db_in_dx: bool, g_ctas: u64) {
    let Some(last) = device::recent_launch_counters(2) else { return };
    let names: Vec<&str> = last.iter().map(|c| c["kernel"].as_str().unwrap_or_default()).collect();
    let suffix = T::DTYPE.kernel_suffix();
    assert!(names[0].starts_with(&format!("lora_backward_g_db_{suffix}")), "{what}: G first: {names:?}");
    assert_eq!(names[1], format!("lora_backward_dx_da_{suffix}_128x128{dx_kernel}"), "{what}: {names:?}");
    let g_grid = last[0]["grid"][0].as_u64().expect("grid");
    if db_in_dx {
        assert_eq!(g_grid, g_ctas, "{what}: G's row tiles only");
    } else {
        assert!(g_grid > g_ctas, "{what}: G's row tiles and dB's: {g_grid}");
    }
}

/// One adapter, rows in order: M = 300 (3 tile rows, the last 44 rows; G's
/// 10 row tiles), K = 328 and N = `n` (dA's and dB's last tiles ragged), rank
/// `r`; overwrite (NaN outputs), a rerun, accumulate; then the same rows
/// through `backward_multi` (every index 0: gathered through the
/// permutation) give every gradient bit for bit.
fn one_adapter<T: LoraDType>(n: usize, r: usize, seed: u64) {
    let Some(dev) = device() else { return };
    let (m, k) = (300, 328);
    let wide = if r > 32 { "_r64" } else { "" };
    let case = Case::<T>::new(m, k, n, &[r], r, vec![0; m], seed);
    let what = format!("one adapter, n={n} r={r}");
    let (got, _) = run(&dev, &case, Api::Single, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward");
    assert_launches::<T>(&what, wide, true, 10);
    check_against_reference(&what, &case, &got, None);
    let (again, _) = run(&dev, &case, Api::Single, true, &Initial::nan(&case), GradMode::Overwrite).expect("rerun");
    assert!(again == got, "{what}: two runs bit-identical");

    let initial = Initial::random(&case, seed + 10);
    let (accumulated, _) =
        run(&dev, &case, Api::Single, true, &initial, GradMode::Accumulate).expect("backward accumulate");
    assert_launches::<T>(&what, wide, true, 10);
    check_against_reference(&format!("{what}, accumulate"), &case, &accumulated, Some(&initial));

    let (gathered, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    // Grouped rows: the host's bound on G's row tiles, one more per segment (the adapter's, the -1 rows').
    assert_launches::<T>(&what, wide, true, 12);
    let bits = |v: &[T]| v.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
    for (name, a, b) in [
        ("dA", &got.da, &gathered.da),
        ("dB", &got.db, &gathered.db),
        ("dX", &got.dx, &gathered.dx),
        ("G", &got.g, &gathered.g),
    ] {
        assert_eq!(bits(a), bits(b), "{what}: {name} with rows in order against gathered");
    }
}

#[test]
fn one_adapter_r40_bf16() {
    one_adapter::<bf16>(72, 40, 2000);
}

#[test]
fn one_adapter_r16_odd_n_f16() {
    one_adapter::<f16>(41, 16, 2100);
}

/// Several adapters (`ranks`, r_max 40) scattered over M = 600 rows with
/// every 7th base-only, padding NaN, outputs NaN: K = 200, N = 72; against
/// the reference, overwriting and accumulating; a rerun gives the same bits;
/// the same rows sorted by adapter give dA and dB, and row for row dX and
/// G, bit for bit. Two adapters: a CTA's 4 warps split an adapter's rows;
/// five: warp mode (each warp an adapter of its own).
fn several_adapters<T: LoraDType>(ranks: &[usize], seed: u64) {
    let Some(dev) = device() else { return };
    let (m, k, n, r_max) = (600, 200, 72, 40);
    let mut index = row_indices(Mix::Unsorted, m, ranks.len(), seed);
    for i in (0..m).step_by(7) {
        index[i] = -1;
    }
    let mut case = Case::<T>::new(m, k, n, ranks, r_max, index, seed + 1);
    case.poison_padding();
    let what = format!("ranks {ranks:?}");
    let (scattered, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    // G's row tiles: the host's bound, one per 32 rows and one more per segment (adapters, -1 rows).
    let g_ctas = m.div_ceil(32) + ranks.len() + 1;
    assert_launches::<T>(&what, "_r64", true, g_ctas as u64);
    check_against_reference(&what, &case, &scattered, None);
    let (again, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    assert!(again == scattered, "{what}: two runs bit-identical");

    let initial = Initial::random(&case, seed + 10);
    let (accumulated, _) =
        run(&dev, &case, Api::Multi, true, &initial, GradMode::Accumulate).expect("backward_multi accumulate");
    check_against_reference(&format!("{what}, accumulate"), &case, &accumulated, Some(&initial));

    let order = RowOrder::by_index(&case);
    let sorted = case.with_rows(&order);
    let (grouped, _) =
        run(&dev, &sorted, Api::Multi, true, &Initial::nan(&sorted), GradMode::Overwrite).expect("backward_multi");
    assert_launches::<T>(&what, "_r64", true, g_ctas as u64);
    assert_row_order_free(&case, &scattered, &grouped, &order, true);
}

#[test]
fn two_adapters_bf16() {
    several_adapters::<bf16>(&[40, 17], 2200);
}

#[test]
fn five_adapters_warp_mode_f16() {
    several_adapters::<f16>(&[8, 40, 1, 33, 24], 2300);
}

/// Where dA's and dB's tiles together would give each CTA of the column more
/// than the bound (M = 300: 3 CTAs; K = 328 and N = 1000 at r = 40: 6 dA
/// and 32 dB tiles, 13 a CTA), dB stays in G's launch and dA in dX's.
#[test]
fn overloaded_column_keeps_db_with_g() {
    let Some(dev) = device() else { return };
    let (m, k, n, r) = (300, 328, 1000, 40);
    let case = Case::<bf16>::new(m, k, n, &[r], r, vec![0; m], 2400);
    let (got, _) = run(&dev, &case, Api::Single, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward");
    assert_launches::<bf16>("overloaded", "_r64", false, 10);
    check_against_reference("dB with G", &case, &got, None);
    if let Some(names) = launches(2) {
        assert!(names[0].contains("g_db"), "{names:?}");
    }
}

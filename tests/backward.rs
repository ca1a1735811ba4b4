//! The backward kernels on a device (the emulator with every check on, or a
//! GPU) against `fused_lora::reference::backward_multi` (exact and naive, the
//! tolerance of docs/contract.md), per dtype: one adapter, per-row adapters (adapters
//! with no rows, padding poisoned with NaN), accumulation, P recomputed, and
//! determinism (two runs bit-identical).

mod backward_support;
mod common;
mod device;
mod forward_support;

use backward_support::{
    assert_row_order_free, check_against_reference, last_kernel, run, Api, Case, Initial, RowOrder,
};
use cudarc::driver::sys::CUdevice_attribute;
use forward_support::{download, row_indices, upload, Mix};
use fused_lora::reference::Dropout;
use fused_lora::{Adapter, AdapterStack, AdapterStatus, GradMode, Linear, LoraDType, LoraError, RowAdapters};
use half::{bf16, f16};

/// (m, k, n, r): a single row, tails of every dimension, M over one split
/// (64 rows) so the ordered sum of partials runs, and M past 64 x 64 rows,
/// where the chunks grow (65 rows) so that there are at most 64; several
/// 64-wide output tiles in every direction with tails (K = 136, N = 72, M =
/// 150), a rank past one warp's 32 (40: dX's second adapter step is 8 long)
/// and past one tile (72); an odd K and odd N (every operand loaded element
/// by element: no 16-byte rows); decode (M = 3, N = 1024: G and dX each
/// have one tile, so their reduction splits over several CTAs).
const SINGLE_CASES: &[(usize, usize, usize, usize)] = &[
    (1, 8, 8, 1),
    (7, 16, 13, 3),
    (70, 40, 24, 8),
    (130, 24, 40, 16),
    (4111, 8, 8, 2),
    (150, 136, 72, 40),
    (33, 72, 100, 72),
    (45, 37, 29, 5),
    (3, 64, 1024, 8),
];

fn single_adapter_matches_reference<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    for (i, &(m, k, n, r)) in SINGLE_CASES.iter().enumerate() {
        let case = Case::<T>::new(m, k, n, &[r], r, vec![0; m], 300 + 10 * i as u64);
        let initial = Initial::nan(&case);
        let (got, _) = run(&dev, &case, Api::Single, true, &initial, GradMode::Overwrite).expect("backward");
        check_against_reference(&format!("m={m} k={k} n={n} r={r}"), &case, &got, None);
        // Determinism: a second run gives the same bits.
        let (again, _) = run(&dev, &case, Api::Single, true, &initial, GradMode::Overwrite).expect("backward again");
        assert_eq!(got, again, "two runs differ for m={m} k={k} n={n} r={r}");
    }
}

fn accumulate_adds_to_old_gradients<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    // The one-launch path, and decode (G and dX through the split sum).
    for (m, k, n) in [(70, 24, 16), (2, 64, 1024)] {
        let case = Case::<T>::new(m, k, n, &[5], 5, vec![0; m], 400);
        let initial = Initial::random(&case, 410);
        let (got, _) = run(&dev, &case, Api::Single, true, &initial, GradMode::Accumulate).expect("backward");
        check_against_reference(&format!("accumulate m={m} n={n}"), &case, &got, Some(&initial));
    }
}

/// Without P the forward's shrink recomputes it: the gradients equal those
/// computed from the P the forward would have kept, bit for bit.
fn recomputed_p_matches_kept_p<T: LoraDType>(api: Api) {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    let (m, k, n) = (20, 32, 24);
    let (ranks, index) = match api {
        Api::Single => (vec![6], vec![0; m]),
        Api::Multi => (vec![6, 2, 4], row_indices(Mix::Zipf, m, 3, 7)),
    };
    let mut case = Case::<T>::new(m, k, n, &ranks, 6, index, 500);
    // The P the forward writes, from the forward kernels themselves.
    let (x, w, a, b) =
        (upload(stream, &case.x), upload(stream, &case.w), upload(stream, &case.a), upload(stream, &case.b));
    let index_dev = upload(stream, &case.index);
    let mut y = upload(stream, &vec![T::nan(); m * n]);
    let mut p = upload(stream, &vec![T::nan(); m * case.r_max]);
    let linear = Linear { weight: w.as_view(), bias: None, n, k };
    let mut out = fused_lora::ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
    let mut status = AdapterStatus::new(stream).expect("status");
    match api {
        Api::Single => {
            let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: ranks[0], scale: case.scales[0] };
            dev.kernels.forward(stream, &x.as_view(), &linear, &adapter, None, &mut out).expect("forward");
        }
        Api::Multi => {
            let stack = AdapterStack { a: a.as_view(), b: b.as_view(), r_max: 6, ranks: &ranks, scales: &case.scales };
            let mut rows = RowAdapters { index: index_dev.as_view(), status: &mut status };
            dev.kernels
                .forward_multi(stream, &x.as_view(), &linear, &stack, &mut rows, None, &mut out)
                .expect("forward");
        }
    }
    case.p = download(stream, &p);
    let initial = Initial::nan(&case);
    let (kept, _) = run(&dev, &case, api, true, &initial, GradMode::Overwrite).expect("backward with P");
    let (recomputed, _) = run(&dev, &case, api, false, &initial, GradMode::Overwrite).expect("backward without P");
    assert_eq!(kept, recomputed);
}

/// L = 3 adapters of ranks 8, 3, 5 (r_max 8), padding NaN, over several
/// index mixes; adapters without rows and padding get exact zeros.
/// The row splits hold more rows than one listing window (512) of the
/// dA/dB partials once M > 64 x 512: a stack of two adapters over 33 000
/// interleaved rows (rows of the same adapter in both windows of a split).
fn many_rows_per_split<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let (m, k, n, ranks, r_max) = (33_000, 8, 8, [2, 1], 2);
    let index: Vec<i32> = (0..m).map(|row| [0, 1, 0, -1][row % 4]).collect();
    let mut case = Case::<T>::new(m, k, n, &ranks, r_max, index, 630);
    case.poison_padding();
    let (got, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    check_against_reference("33 000 rows", &case, &got, None);
}

/// Ranks past a 64-wide tile in a stack (r_max = 80): dA has two row tiles,
/// dB two column tiles, and each adapter's rank cuts one of them.
fn multi_adapter_wide_ranks<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let (m, k, n, ranks, r_max) = (96, 80, 48, [80, 33, 64], 80);
    let index = row_indices(Mix::Unsorted, m, ranks.len(), 640);
    let mut case = Case::<T>::new(m, k, n, &ranks, r_max, index, 650);
    case.poison_padding();
    let (got, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    check_against_reference("wide ranks", &case, &got, None);
}

/// Decode with a stack: G and dX split their reduction over two CTAs, the
/// first holding exactly the three adapters' rank steps (3 + 3 + 2 of 32)
/// and the second the base steps, so the adapter term is finished at the end
/// of one split and the other adds none.
fn decode_split_multi<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let (m, k, n, ranks, r_max) = (6, 64, 256, [72, 65, 40], 72);
    let mut case = Case::<T>::new(m, k, n, &ranks, r_max, vec![0, 1, 2, 0, -1, 2], 660);
    case.poison_padding();
    let (got, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    check_against_reference("decode, split", &case, &got, None);
}

fn multi_adapter_matches_reference<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let (m, k, n, ranks, r_max) = (75, 24, 16, [8, 3, 5], 8);
    let mixes = [Mix::Zipf, Mix::Skewed, Mix::Unsorted, Mix::OneAdapterUnused, Mix::NoAdapter];
    for (i, &mix) in mixes.iter().enumerate() {
        let index = row_indices(mix, m, ranks.len(), 600 + i as u64);
        let mut case = Case::<T>::new(m, k, n, &ranks, r_max, index, 610 + 10 * i as u64);
        case.poison_padding();
        let initial = Initial::nan(&case);
        let (got, status) = run(&dev, &case, Api::Multi, true, &initial, GradMode::Overwrite).expect("backward_multi");
        status.check(&dev.stream).expect("no bad index");
        check_against_reference(&format!("{mix:?}"), &case, &got, None);
        for (l, &rank) in ranks.iter().enumerate() {
            let used = case.index.contains(&(l as i32));
            let da = &got.da[l * r_max * k..][..r_max * k];
            let db = &got.db[l * n * r_max..][..n * r_max];
            for (j, row) in da.chunks(k).enumerate() {
                if j >= rank || !used {
                    assert!(row.iter().all(|v| v.to_f64() == 0.0), "{mix:?}: dA of adapter {l}, row {j} not zero");
                }
            }
            for (col, row) in db.chunks(r_max).enumerate() {
                let from = if used { rank } else { 0 };
                assert!(
                    row[from..].iter().all(|v| v.to_f64() == 0.0),
                    "{mix:?}: dB of adapter {l}, row {col} not zero"
                );
            }
        }
        let (again, _) = run(&dev, &case, Api::Multi, true, &initial, GradMode::Overwrite).expect("again");
        assert_eq!(got, again, "{mix:?}: two runs differ");
    }
}

/// Ranks 1, 8, 16, 17, 64 and 128 in one stack over ragged shapes (M, N, K
/// not multiples of the tiles; K = 100 too odd for 16-byte copies of f16 and
/// bf16 rows), rows scattered with -1 rows among them: the gradients match
/// the reference with NaN-poisoned outputs. Then the same batch with its
/// rows grouped by adapter (each adapter's rows in the same relative order):
/// dA, dB and every row of G are bit-identical, since the device groups the
/// rows the same way whatever their order in the batch.
fn grouped_mixed_ranks<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let (m, k, n, ranks, r_max) = (77, 100, 40, [1, 8, 16, 17, 64, 128], 128);
    for (i, mix) in [Mix::Zipf, Mix::Unsorted].into_iter().enumerate() {
        let scattered = row_indices(mix, m, ranks.len(), 670 + i as u64);
        let mut case = Case::<T>::new(m, k, n, &ranks, r_max, scattered, 680 + 10 * i as u64);
        case.poison_padding();
        let (got, status) =
            run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
        status.check(&dev.stream).expect("no bad index");
        check_against_reference(&format!("mixed ranks, {mix:?}"), &case, &got, None);

        // Row order[i] of the batch moves to row i: adapters in order, then the -1 rows.
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by_key(|&row| case.adapter_of(row).unwrap_or(usize::MAX));
        let rows_of = |values: &[T], width: usize| -> Vec<T> {
            order.iter().flat_map(|&row| values[row * width..][..width].to_vec()).collect()
        };
        let mut sorted = Case::<T>::new(m, k, n, &ranks, r_max, order.iter().map(|&row| case.index[row]).collect(), 0);
        (sorted.x, sorted.w, sorted.a, sorted.b) =
            (rows_of(&case.x, k), case.w.clone(), case.a.clone(), case.b.clone());
        (sorted.p, sorted.dy, sorted.scales) = (rows_of(&case.p, r_max), rows_of(&case.dy, n), case.scales.clone());
        let (grouped, _) = run(&dev, &sorted, Api::Multi, true, &Initial::nan(&sorted), GradMode::Overwrite)
            .expect("backward_multi, grouped rows");
        check_against_reference(&format!("mixed ranks, {mix:?}, grouped"), &sorted, &grouped, None);
        assert!(grouped.da == got.da, "{mix:?}: dA differs between scattered and grouped rows");
        assert!(grouped.db == got.db, "{mix:?}: dB differs between scattered and grouped rows");
        assert!(grouped.g == rows_of(&got.g, r_max), "{mix:?}: G rows differ between scattered and grouped rows");
    }
}

/// Enough rows per adapter (M >= L x 8 x 32) that dA and dB split each
/// adapter's rows over a CTA's warps (the other mode than warp-per-adapter),
/// ranks 17 and 64 with -1 rows, accumulating onto random old gradients.
fn split_mode_accumulates<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let (m, k, n, ranks, r_max) = (530, 40, 48, [17, 64], 64);
    let index = row_indices(Mix::Zipf, m, ranks.len(), 690);
    let mut case = Case::<T>::new(m, k, n, &ranks, r_max, index, 700);
    case.poison_padding();
    let initial = Initial::random(&case, 710);
    let (got, _) = run(&dev, &case, Api::Multi, true, &initial, GradMode::Accumulate).expect("backward_multi");
    check_against_reference("split mode, accumulate", &case, &got, Some(&initial));
    let (again, _) = run(&dev, &case, Api::Multi, true, &initial, GradMode::Accumulate).expect("again");
    assert_eq!(got, again, "two runs differ");
}

/// A row whose index is out of range is reported and treated as no adapter.
fn bad_index_is_reported<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let (m, k, n) = (9, 16, 8);
    let index = vec![0, 1, 7, -1, 1, 0, -5, 1, 0];
    let case = Case::<T>::new(m, k, n, &[4, 2], 4, index, 700);
    let (got, status) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward");
    match status.check(&dev.stream) {
        Err(LoraError::AdapterIndexOutOfRange { row: 2, index: 7, num_adapters: 2 }) => {}
        other => panic!("expected row 2's index 7 reported, got {other:?}"),
    }
    // Case::reference treats out-of-range rows as -1, as the kernels do.
    check_against_reference("bad index", &case, &got, None);
}

/// Dropout p = 0.25: the mask regenerated from Philox in dA (on X) and dX
/// (on the adapter term), one adapter and a stack.
fn dropout_matches_reference<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    // Two column tiles of dX and dA with a tail (K = 72): the mask is keyed
    // by the global column.
    let (m, k, n) = (70, 72, 16);
    for p in [0.0, 0.1, 0.5] {
        let mut single = Case::<T>::new(m, k, n, &[6], 6, vec![0; m], 800);
        single.dropout = Some(Dropout::new(p, 0x1234_5678_9abc, 3).expect("dropout"));
        let (got, _) =
            run(&dev, &single, Api::Single, true, &Initial::nan(&single), GradMode::Overwrite).expect("backward");
        check_against_reference(&format!("dropout p={p}, one adapter"), &single, &got, None);
    }
    let index = row_indices(Mix::Zipf, m, 3, 810);
    let mut multi = Case::<T>::new(m, k, n, &[6, 2, 4], 6, index, 820);
    multi.dropout = Some(Dropout::new(0.25, 99, 1 << 40).expect("dropout"));
    multi.poison_padding();
    let (got, _) = run(&dev, &multi, Api::Multi, true, &Initial::nan(&multi), GradMode::Overwrite).expect("backward");
    check_against_reference("dropout, stack", &multi, &got, None);
    // Without the mask the gradients differ: the mask is really applied.
    let mut plain = multi;
    plain.dropout = None;
    let (without, _) =
        run(&dev, &plain, Api::Multi, true, &Initial::nan(&plain), GradMode::Overwrite).expect("backward");
    assert_ne!(got.dx, without.dx);
}

/// With dropout and no P, P is recomputed as the forward's shrink of the
/// dropped input: the same bits as the shrink of X~ built on the host.
fn recomputed_p_with_dropout<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    let (m, k, n, r) = (20, 32, 24, 6);
    let mut case = Case::<T>::new(m, k, n, &[r], r, vec![0; m], 900);
    let dropout = Dropout::new(0.5, 7, 11).expect("dropout");
    case.dropout = Some(dropout);
    let dropped: Vec<T> = (0..m * k)
        .map(|i| {
            let v = case.x[i].to_f64() as f32;
            if dropout.keep(i / k, i % k, k) {
                T::from_f64(f64::from(v * dropout.inv_keep()))
            } else {
                T::from_f64(0.0)
            }
        })
        .collect();
    let (dropped_dev, a) = (upload(stream, &dropped), upload(stream, &case.a));
    let mut p = upload(stream, &vec![T::nan(); m * r]);
    dev.kernels.shrink(stream, &dropped_dev.as_view(), &a.as_view(), r, &mut p.as_view_mut()).expect("shrink");
    case.p = download(stream, &p);
    let initial = Initial::nan(&case);
    let (kept, _) = run(&dev, &case, Api::Single, true, &initial, GradMode::Overwrite).expect("backward with P");
    let (recomputed, _) =
        run(&dev, &case, Api::Single, false, &initial, GradMode::Overwrite).expect("backward without P");
    assert_eq!(kept, recomputed);
}

/// dA's CTAs inside dX's 64x64 launch (`lora_backward_dx_da_<T>`, the grid's
/// last column; taken on grids with fewer 128x128 tiles than SMs, unsplit,
/// where a dA CTA's rows weigh no more than dX's reduction allows:
/// src/backward.rs, `small_dx_takes_da`): M = 760, K = 56 (12 x 1 tiles,
/// ragged rows and columns), N = 184 (the longest reduction that does not
/// split on the emulator's 108 SMs), the
/// adapters `ranks` scattered over the rows with every 9th row base-only
/// (-1), padding NaN, outputs NaN: against the reference, overwriting and
/// accumulating; a rerun gives the same bits; the same rows sorted by
/// adapter give dA and dB, and row for row dX and G, bit for bit. Nine
/// adapters: warp mode (each of a CTA's 4 warps walks an adapter of its
/// own); two: the 4 warps split one adapter's rows. Last, one adapter
/// through `backward` (r = 16).
fn small_dx_with_da<T: LoraDType>(ranks: &[usize]) {
    let Some(dev) = device::device() else { return };
    let (m, k, n, r_max) = (760, 56, 184, 40);
    let mut index = row_indices(Mix::Unsorted, m, ranks.len(), 1010);
    for i in (0..m).step_by(9) {
        index[i] = -1;
    }
    let mut case = Case::<T>::new(m, k, n, ranks, r_max, index, 1011);
    case.poison_padding();
    let fused = format!("lora_backward_dx_da_{}", T::DTYPE.kernel_suffix());
    let took_fused = |what: &str| {
        if let Some(last) = device::last_launch_counters() {
            assert_eq!(last["kernel"].as_str(), Some(fused.as_str()), "{what}: dX with dA on the 64x64 tile");
            let grid: Vec<u64> = last["grid"].as_array().expect("grid").iter().filter_map(|d| d.as_u64()).collect();
            assert_eq!(grid, [2, 12, 1], "{what}: dX's 12 x 1 tiles and a column of dA CTAs");
        }
    };
    let (scattered, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    took_fused("scattered");
    check_against_reference(&format!("dA in dX's 64x64 launch, ranks {ranks:?}"), &case, &scattered, None);
    let (again, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    assert!(again == scattered, "two runs bit-identical");

    let initial = Initial::random(&case, 1020);
    let (accumulated, _) =
        run(&dev, &case, Api::Multi, true, &initial, GradMode::Accumulate).expect("backward_multi accumulate");
    took_fused("accumulate");
    check_against_reference("dA in dX's 64x64 launch, accumulate", &case, &accumulated, Some(&initial));

    let order = RowOrder::by_index(&case);
    let sorted = case.with_rows(&order);
    let (grouped, _) =
        run(&dev, &sorted, Api::Multi, true, &Initial::nan(&sorted), GradMode::Overwrite).expect("backward_multi");
    took_fused("sorted");
    assert_row_order_free(&case, &scattered, &grouped, &order, true);

    let r = 16;
    let single = Case::<T>::new(m, k, n, &[r], r, vec![0; m], 1030);
    let (got, _) =
        run(&dev, &single, Api::Single, true, &Initial::nan(&single), GradMode::Overwrite).expect("backward");
    // On compute capability 9.0 (the test command's second pass) one
    // adapter's dX takes the Hopper kernel, and dA its own launch.
    let major = dev.ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).expect("major");
    if major == 9 {
        if let Some(name) = last_kernel() {
            assert!(name.ends_with("_sm90a"), "one adapter on 9.0: the Hopper dX, not {name}");
        }
    } else {
        took_fused("one adapter");
    }
    check_against_reference("dA in dX's 64x64 launch, one adapter", &single, &got, None);
}

/// dA's CTAs in the last grid row of dX's 64x64 launch (the host's pick
/// where a row of dA CTAs loads the busiest SM less than a column): M =
/// 1250, K = 600 (20 x 10 tiles, ragged; 210 CTAs on 108 SMs against the
/// column's 220), N = 344, one adapter of rank 16 on all rows but every
/// 5th (base-only, its P row NaN), outputs NaN: against the reference,
/// overwriting and accumulating; the rows sorted (base-only rows first) give
/// dA and dB, and row for row dX and G, bit for bit.
fn small_dx_with_da_in_last_row<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let (m, k, n, r) = (1250, 600, 344, 16);
    let index: Vec<i32> = (0..m).map(|i| if i % 5 == 3 { -1 } else { 0 }).collect();
    let mut case = Case::<T>::new(m, k, n, &[r], r, index, 1040);
    case.poison_padding();
    let fused = format!("lora_backward_dx_da_{}", T::DTYPE.kernel_suffix());
    let took_row = |what: &str| {
        if let Some(last) = device::last_launch_counters() {
            assert_eq!(last["kernel"].as_str(), Some(fused.as_str()), "{what}: dX with dA on the 64x64 tile");
            let grid: Vec<u64> = last["grid"].as_array().expect("grid").iter().filter_map(|d| d.as_u64()).collect();
            assert_eq!(grid, [10, 21, 1], "{what}: dX's 20 x 10 tiles and a row of dA CTAs");
        }
    };
    let (scattered, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    took_row("scattered");
    check_against_reference("dA in the last row of dX's 64x64 launch", &case, &scattered, None);
    let initial = Initial::random(&case, 1050);
    let (accumulated, _) =
        run(&dev, &case, Api::Multi, true, &initial, GradMode::Accumulate).expect("backward_multi accumulate");
    took_row("accumulate");
    check_against_reference("dA in the last row of dX's 64x64 launch, accumulate", &case, &accumulated, Some(&initial));

    let order = RowOrder::by_index(&case);
    let sorted = case.with_rows(&order);
    let (grouped, _) =
        run(&dev, &sorted, Api::Multi, true, &Initial::nan(&sorted), GradMode::Overwrite).expect("backward_multi");
    took_row("sorted");
    assert_row_order_free(&case, &scattered, &grouped, &order, true);
}

#[test]
fn small_dx_with_da_in_last_row_bf16() {
    small_dx_with_da_in_last_row::<bf16>();
}

#[test]
fn small_dx_with_da_warp_mode_f16() {
    small_dx_with_da::<f16>(&[8, 40, 1, 17, 32, 16, 24, 3, 33]);
}

#[test]
fn small_dx_with_da_split_bf16() {
    small_dx_with_da::<bf16>(&[40, 17]);
}

/// G with dB, and dA, on 64 rank columns (the `_r64` kernels: 6 and 4 warps,
/// the wide operand staged once for both 32-column halves), taken where their
/// grid gives every one of the emulator's 108 SMs a CTA: M = 1800, K = 896,
/// N = 384 (G with dB 110 CTAs, dA 112; dX's 105 big tiles are too few, so
/// dX takes 64x64 and dA its own launch), adapters `ranks` (r_max past 32)
/// over the rows with base-only rows, padding NaN, outputs NaN-poisoned:
/// against the reference, with or without dropout; then the same rows
/// sorted by adapter give dB and (row for row) G bit for bit, and without
/// dropout (whose mask follows a row's position) dA and dX too.
fn wide_rank_tiles<T: LoraDType>(r_max: usize, ranks: &[usize], dropout: bool) {
    let Some(dev) = device::device() else { return };
    let (m, k, n) = (1800, 896, 384);
    let index = row_indices(Mix::Zipf, m, ranks.len(), 1010);
    assert!(index.contains(&-1), "base-only rows");
    let mut case = Case::<T>::new(m, k, n, ranks, r_max, index, 1011);
    case.poison_padding();
    case.dropout = dropout.then(|| Dropout::new(0.25, 0x5eed, 7).expect("dropout"));
    let (scattered, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    if let Some(launches) = device::recent_launch_counters(4) {
        let names: Vec<&str> = launches.iter().filter_map(|l| l["kernel"].as_str()).collect();
        let suffix = T::DTYPE.kernel_suffix();
        for wide in [format!("lora_backward_g_db_{suffix}_r64"), format!("lora_backward_da_{suffix}_r64")] {
            assert!(names.contains(&wide.as_str()), "{wide}: {names:?}");
        }
    }
    check_against_reference(&format!("64 rank columns, ranks {ranks:?}, dropout {dropout}"), &case, &scattered, None);

    let order = RowOrder::by_index(&case);
    let sorted = case.with_rows(&order);
    let (grouped, _) =
        run(&dev, &sorted, Api::Multi, true, &Initial::nan(&sorted), GradMode::Overwrite).expect("backward_multi");
    assert_row_order_free(&case, &scattered, &grouped, &order, !dropout);
}

#[test]
fn wide_rank_tiles_r64_bf16() {
    wide_rank_tiles::<bf16>(64, &[64, 48, 40, 17], false);
}

#[test]
fn wide_rank_tiles_r48_dropout_f16() {
    wide_rank_tiles::<f16>(48, &[48, 40, 33, 16], true);
}

macro_rules! per_dtype {
    ($($name:ident => $body:ident;)*) => {
        $(
            mod $name {
                use super::*;
                #[test]
                fn f32() { let f: fn() = $body::<f32>; f() }
                #[test]
                fn f16() { let f: fn() = $body::<f16>; f() }
                #[test]
                fn bf16() { let f: fn() = $body::<bf16>; f() }
            }
        )*
    };
}

per_dtype! {
    single_adapter => single_adapter_matches_reference;
    accumulate => accumulate_adds_to_old_gradients;
    multi_adapter => multi_adapter_matches_reference;
    bad_index => bad_index_is_reported;
    dropout => dropout_matches_reference;
    many_rows => many_rows_per_split;
    wide_ranks => multi_adapter_wide_ranks;
    decode_split => decode_split_multi;
    dropout_recompute => recomputed_p_with_dropout;
    grouped_ranks => grouped_mixed_ranks;
    split_mode => split_mode_accumulates;
}

#[test]
fn recomputed_p_single() {
    recomputed_p_matches_kept_p::<bf16>(Api::Single);
    recomputed_p_matches_kept_p::<f32>(Api::Single);
}

#[test]
fn recomputed_p_multi() {
    recomputed_p_matches_kept_p::<f16>(Api::Multi);
}

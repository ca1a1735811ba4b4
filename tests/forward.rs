//! The forward kernels on a device (the emulator with every check on, or a
//! GPU) against the f64 reference, per dtype: fused forward with one adapter,
//! with one adapter per row, and shrink and expand alone.

mod device;
mod forward_support;

use cudarc::driver::CudaSlice;
use forward_support::{
    assert_close, assert_p_next_to_shrink, download, poison_padding, poisoned, random, row_indices, upload, Mix,
    MultiCase, Sum,
};
use fused_lora::{AdapterStatus, ForwardOutput, Linear, LoraDType, RowAdapters};

/// (m, k, n, r, bias): every M, K/N (odd multiples of 8 included) and r of the
/// test plan at least once, the big K or N only with few rows.
const FUSED_CASES: &[(usize, usize, usize, usize, bool)] = &[
    (1, 8, 8, 1, true),
    (3, 72, 136, 8, false),
    (16, 136, 72, 16, true),
    (113, 520, 136, 40, true),
    (256, 72, 520, 64, false),
    (16, 136, 136, 128, true),
    (3, 3584, 72, 8, true),
    (1, 72, 3584, 16, false),
    // N not a multiple of the 4-element output vectors: elementwise stores.
    (7, 16, 13, 3, true),
];

fn single_case<T: LoraDType>(m: usize, k: usize, n: usize, r: usize, bias: bool, seed: u64) -> MultiCase<T> {
    MultiCase {
        m,
        k,
        n,
        r_max: r,
        x: random(seed, m * k),
        w: random(seed + 1, n * k),
        bias: bias.then(|| random(seed + 2, n)),
        a: random(seed + 3, r * k),
        b: random(seed + 4, n * r),
        ranks: vec![r],
        scales: vec![0.75],
        index: vec![0; m],
    }
}

fn fused_single<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    for (i, &(m, k, n, r, with_bias)) in FUSED_CASES.iter().enumerate() {
        let case = single_case::<T>(m, k, n, r, with_bias, 100 + i as u64);
        let on = case.upload(stream);
        let mut y = poisoned::<T>(stream, m * n);
        let mut p = poisoned::<T>(stream, m * r);
        let linear = on.linear(n, k);
        let adapter = on.adapter(&case);
        let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
        dev.kernels.forward(stream, &on.x.as_view(), &linear, &adapter, None, &mut out).expect("forward");
        let p_got = download(stream, &p);
        let what = format!("m={m} k={k} n={n} r={r} bias={with_bias}");
        assert_close(&format!("P {what}"), &p_got, &case.p_reference());
        assert_close(&format!("Y {what}"), &download(stream, &y), &case.y_reference(&p_got));
    }
}

/// Without an output P the kernel uses a scratch one: Y must not change.
fn fused_without_p<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    let (m, k, n, r) = (17, 72, 40, 8);
    let case = single_case::<T>(m, k, n, r, true, 7);
    let on = case.upload(stream);
    let linear = on.linear(n, k);
    let adapter = on.adapter(&case);
    let mut y_with = poisoned::<T>(stream, m * n);
    let mut y_without = poisoned::<T>(stream, m * n);
    let mut p = poisoned::<T>(stream, m * r);
    let mut out = ForwardOutput { y: y_with.as_view_mut(), p: Some(p.as_view_mut()) };
    dev.kernels.forward(stream, &on.x.as_view(), &linear, &adapter, None, &mut out).expect("forward with P");
    let mut out = ForwardOutput { y: y_without.as_view_mut(), p: None };
    dev.kernels.forward(stream, &on.x.as_view(), &linear, &adapter, None, &mut out).expect("forward without P");
    let with: Vec<f64> = download(stream, &y_with).iter().map(|v| v.to_f64()).collect();
    let without: Vec<f64> = download(stream, &y_without).iter().map(|v| v.to_f64()).collect();
    assert!(with.iter().all(|v| v.is_finite()));
    assert_eq!(with, without, "Y depends on whether P is written out");
}

fn fused_multi<T: LoraDType>() {
    // Ranks below, at and above the 32-wide K-step, one not a multiple of 8.
    let mixes = [
        (Mix::NoAdapter, 70),
        (Mix::OneAdapter, 70),
        (Mix::DistinctPerRow, 5),
        (Mix::Zipf, 113),
        (Mix::Skewed, 70),
        (Mix::Unsorted, 113),
        (Mix::OneAdapterUnused, 33),
    ];
    run_multi::<T>(&mixes, 72, 136, 1000);
}

/// Few rows and a long K: the split-K (decode) path, with adapters.
fn fused_multi_decode<T: LoraDType>() {
    run_multi::<T>(&[(Mix::Unsorted, 3), (Mix::Zipf, 16)], 1032, 72, 2000);
}

/// The decode path's shapes (M <= 16; f16/bf16 take the two-launch path of
/// src/forward/decode.rs, f32 the tiled split-K path): K ragged against the
/// 32-long chunks and the 256-long stride of a CTA's warps, split several
/// ways; N not a multiple of a CTA's 32 columns; ranks 1, 16, 33, 64 and 200
/// (seven 32-wide tiles of A); with and without bias; and N wide enough for
/// CTAs of 2, 4 and 8 warp groups (src/forward/launch.rs, `decode_layout`;
/// f16/bf16 only: f32 does not take the decode path, and its tiled path
/// over such N is slow on the emulator).
const DECODE_CASES: &[(usize, usize, usize, usize, bool)] = &[
    (16, 2056, 100, 64, true),
    (5, 1032, 72, 200, false),
    (1, 4104, 33, 1, true),
    (16, 520, 1000, 33, true),
    (11, 3000, 40, 16, false),
    (16, 520, 6900, 64, true),
    (7, 72, 13830, 40, false),
    (16, 136, 27650, 16, true),
];

/// Above this N a decode case is for the warp groups of f16/bf16 only.
const WIDE_N: usize = 4096;

/// Each decode case against the reference, P included, and bit-identical
/// over two runs (every split summed in a fixed order).
fn fused_decode<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    for (i, &(m, k, n, r, with_bias)) in DECODE_CASES.iter().enumerate() {
        if n > WIDE_N && T::DTYPE.size_bytes() == 4 {
            continue;
        }
        let case = single_case::<T>(m, k, n, r, with_bias, 300 + i as u64);
        let on = case.upload(stream);
        let linear = on.linear(n, k);
        let adapter = on.adapter(&case);
        let mut runs = Vec::new();
        for _ in 0..2 {
            let mut y = poisoned::<T>(stream, m * n);
            let mut p = poisoned::<T>(stream, m * r);
            let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
            dev.kernels.forward(stream, &on.x.as_view(), &linear, &adapter, None, &mut out).expect("forward");
            runs.push((download(stream, &p), download(stream, &y)));
        }
        let (p_got, y_got) = &runs[0];
        let what = format!("decode m={m} k={k} n={n} r={r} bias={with_bias}");
        assert_close(&format!("P {what}"), p_got, &case.p_reference());
        assert_close(&format!("Y {what}"), y_got, &case.y_reference(p_got));
        let bits = |v: &[T]| v.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&runs[0].1), bits(&runs[1].1), "{what}: Y differs between two runs");
        assert_eq!(bits(&runs[0].0), bits(&runs[1].0), "{what}: P differs between two runs");
    }
}

/// The decode path with one adapter per row: up to 16 distinct adapters (one
/// slot each), repeats, rows without one (-1), ranks from 1 to r_max with
/// the stack's padding NaN; r_max a multiple of 8 (B in 16-byte loads) and
/// not (element by element).
fn fused_multi_decode_slots<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    let (k, n) = (1064, 72);
    let indices: [&[i32]; 3] =
        [&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], &[17, -1, 3, 3, 16, -1, 0, 17, 9], &[-1, -1, -1, -1]];
    for (r_max, seed) in [(72usize, 4000u64), (33, 5000)] {
        let num_adapters = 18;
        let ranks: Vec<usize> = (0..num_adapters).map(|l| 1 + (l * 37) % r_max).collect();
        let scales: Vec<f32> = (0..num_adapters).map(|l| 0.25 * (l as f32 - 8.0)).collect();
        for (i, index) in indices.iter().enumerate() {
            let m = index.len();
            let seed = seed + 10 * i as u64;
            let mut case = MultiCase::<T> {
                m,
                k,
                n,
                r_max,
                x: random(seed, m * k),
                w: random(seed + 1, n * k),
                bias: (i != 1).then(|| random(seed + 2, n)),
                a: random(seed + 3, num_adapters * r_max * k),
                b: random(seed + 4, num_adapters * n * r_max),
                ranks: ranks.clone(),
                scales: scales.clone(),
                index: index.to_vec(),
            };
            poison_padding(&mut case.a, &mut case.b, &ranks, r_max, n, k);
            let (p_got, y_got) = case.run(&dev.kernels, stream, None).expect("forward_multi");
            let what = format!("decode slots r_max={r_max} k={k} n={n} rows={index:?}");
            assert_close(&format!("P {what}"), &p_got, &case.p_reference());
            assert_close(&format!("Y {what}"), &y_got, &case.y_reference(&p_got));
        }
    }
}

fn run_multi<T: LoraDType>(mixes: &[(Mix, usize)], k: usize, n: usize, seed0: u64) {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    let ranks = [8usize, 40, 1, 17, 32];
    let scales = [0.5f32, -1.25, 2.0, 0.125, 1.0];
    let r_max = 40;
    for (i, &(mix, m)) in mixes.iter().enumerate() {
        for with_bias in [false, true] {
            let seed = seed0 + 10 * i as u64 + with_bias as u64;
            let mut case = MultiCase::<T> {
                m,
                k,
                n,
                r_max,
                x: random(seed, m * k),
                w: random(seed + 1, n * k),
                bias: with_bias.then(|| random(seed + 2, n)),
                a: random(seed + 3, ranks.len() * r_max * k),
                b: random(seed + 4, ranks.len() * n * r_max),
                ranks: ranks.to_vec(),
                scales: scales.to_vec(),
                index: row_indices(mix, m, ranks.len(), seed + 5),
            };
            poison_padding(&mut case.a, &mut case.b, &ranks, r_max, n, k);
            let (p_got, y_got) = case.run(&dev.kernels, stream, None).expect("forward_multi");
            let what = format!("{mix:?} m={m} k={k} n={n} bias={with_bias}");
            assert_close(&format!("P {what}"), &p_got, &case.p_reference());
            assert_close(&format!("Y {what}"), &y_got, &case.y_reference(&p_got));
        }
    }
}

/// The shrink over rows grouped by adapter on the device: ranks 1, 8, 16,
/// 17, 64 and 128 in one stack, ragged M, K and N (K = 104: a partial last
/// reduction step), -1 rows, rows scattered
/// and then the same batch grouped by adapter (each adapter's rows in the
/// same order): P and Y match the reference both times, and every row of P
/// is bit-identical between the two.
fn grouped_shrink_mixed_ranks<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    let (m, k, n) = (77, 104, 40);
    let ranks = [1usize, 8, 16, 17, 64, 128];
    let r_max = 128;
    for (i, mix) in [Mix::Zipf, Mix::Unsorted].into_iter().enumerate() {
        let seed = 3000 + 10 * i as u64;
        let mut case = MultiCase::<T> {
            m,
            k,
            n,
            r_max,
            x: random(seed, m * k),
            w: random(seed + 1, n * k),
            bias: None,
            a: random(seed + 3, ranks.len() * r_max * k),
            b: random(seed + 4, ranks.len() * n * r_max),
            ranks: ranks.to_vec(),
            scales: vec![0.5; ranks.len()],
            index: row_indices(mix, m, ranks.len(), seed + 5),
        };
        poison_padding(&mut case.a, &mut case.b, &ranks, r_max, n, k);
        let (p_got, y_got) = case.run(&dev.kernels, stream, None).expect("forward_multi");
        assert_close(&format!("P {mix:?}"), &p_got, &case.p_reference());
        assert_close(&format!("Y {mix:?}"), &y_got, &case.y_reference(&p_got));

        // Rows grouped: adapters in order, then the -1 rows, each group in batch order.
        let adapter_of = |row: usize| usize::try_from(case.index[row]).unwrap_or(usize::MAX);
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by_key(|&row| adapter_of(row));
        let rows_of = |values: &[T], width: usize| -> Vec<T> {
            order.iter().flat_map(|&row| values[row * width..][..width].to_vec()).collect()
        };
        let grouped =
            MultiCase::<T> { x: rows_of(&case.x, k), index: order.iter().map(|&r| case.index[r]).collect(), ..case };
        let (p_grouped, y_grouped) = grouped.run(&dev.kernels, stream, None).expect("forward_multi, grouped");
        assert_close(&format!("P {mix:?}, grouped"), &p_grouped, &grouped.p_reference());
        assert_close(&format!("Y {mix:?}, grouped"), &y_grouped, &grouped.y_reference(&p_grouped));
        assert!(p_grouped == rows_of(&p_got, r_max), "{mix:?}: P rows differ between scattered and grouped rows");
    }
}

/// A bad index is never dereferenced: the row gets the base output, and the
/// status names the first bad row.
fn multi_bad_index<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    let (m, k, n, r_max) = (9, 16, 24, 8);
    let mut case = MultiCase::<T> {
        m,
        k,
        n,
        r_max,
        x: random(1, m * k),
        w: random(2, n * k),
        bias: None,
        a: random(3, 2 * r_max * k),
        b: random(4, 2 * n * r_max),
        ranks: vec![8, 3],
        scales: vec![1.5, 0.5],
        index: vec![0, 1, -1, 7, 1, -5, 0, 2, 1],
    };
    poison_padding(&mut case.a, &mut case.b, &case.ranks, r_max, n, k);
    let on = case.upload(stream);
    let mut status = AdapterStatus::new(stream).expect("status");
    let mut y = poisoned::<T>(stream, m * n);
    let mut p = poisoned::<T>(stream, m * r_max);
    let linear = Linear { weight: on.w.as_view(), bias: None, n, k };
    let stack = on.stack(&case);
    let mut rows = RowAdapters { index: on.index.as_view(), status: &mut status };
    let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
    dev.kernels.forward_multi(stream, &on.x.as_view(), &linear, &stack, &mut rows, None, &mut out).expect("launch");
    match status.check(stream) {
        Err(fused_lora::LoraError::AdapterIndexOutOfRange { row: 3, index: 7, num_adapters: 2 }) => {}
        other => panic!("expected the bad index of row 3 to be reported, got {other:?}"),
    }
    // Rows with a bad index are base-only: the reference treats them so.
    let p_got = download(stream, &p);
    assert_close("P with bad rows", &p_got, &case.p_reference());
    assert_close("Y with bad rows", &download(stream, &y), &case.y_reference(&p_got));
    status.reset(stream).expect("reset");
    status.check(stream).expect("clear after reset");
}

fn shrink_alone<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    for (i, &(m, k, r)) in [(1usize, 3584usize, 16usize), (113, 136, 40), (256, 8, 1), (3, 520, 128)].iter().enumerate()
    {
        let case = single_case::<T>(m, k, 8, r, false, 300 + i as u64);
        let (x, a) = (upload(stream, &case.x), upload(stream, &case.a));
        let mut p = poisoned::<T>(stream, m * r);
        // The forward's P, unscaled: X·Aᵀ.
        dev.kernels.shrink(stream, &x.as_view(), &a.as_view(), r, &mut p.as_view_mut()).expect("shrink");
        assert_close(&format!("shrink m={m} k={k} r={r}"), &download(stream, &p), &case.p_reference());
    }
}

/// The shrink on 64 rank columns a CTA (`lora_rank_shrink_<T>_r64`, which
/// `shrink_cols` picks for ranks past 32 when its grid is one wave of at
/// least three quarters of the SMs: 85-108 row tiles on the emulator's 108)
/// against the reference, and bit for bit against the 32-wide kernel on the
/// same first rows (63 row tiles: 32-wide). r = 48 leaves the second half
/// one pair of columns; K = 72 is not a whole number of steps (the copies
/// element by element), K = 64 is.
fn shrink_wide_rank_tile_same_bits<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    let kernel = || -> String {
        device::recent_launch_counters(1)
            .and_then(|c| c.first().and_then(|c| c["kernel"].as_str().map(String::from)))
            .unwrap_or_default()
    };
    for (i, &(m, k, r)) in [(3000usize, 64usize, 48usize), (2700, 72, 64)].iter().enumerate() {
        let case = single_case::<T>(m, k, 8, r, false, 700 + i as u64);
        let (x, a) = (upload(stream, &case.x), upload(stream, &case.a));
        let mut p = poisoned::<T>(stream, m * r);
        dev.kernels.shrink(stream, &x.as_view(), &a.as_view(), r, &mut p.as_view_mut()).expect("shrink");
        if device::is_emulator() {
            assert!(kernel().ends_with("_r64"), "64 rank columns for m={m} r={r}: {}", kernel());
        }
        let full = download(stream, &p);
        assert_close(&format!("shrink m={m} k={k} r={r}"), &full, &case.p_reference());

        let rows = 2000;
        let x_rows = upload(stream, &case.x[..rows * k]);
        let mut p_rows = poisoned::<T>(stream, rows * r);
        dev.kernels.shrink(stream, &x_rows.as_view(), &a.as_view(), r, &mut p_rows.as_view_mut()).expect("shrink");
        if device::is_emulator() {
            assert!(!kernel().ends_with("_r64"), "32 rank columns for {rows} rows: {}", kernel());
        }
        let bits = |v: &[T]| v.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&download(stream, &p_rows)), bits(&full[..rows * r]), "m={m} r={r}: P's first {rows} rows");
    }
}

fn expand_alone<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    for (i, &(m, n, r)) in
        [(1usize, 3584usize, 16usize), (113, 136, 40), (16, 72, 1), (3, 520, 128), (5, 13, 3)].iter().enumerate()
    {
        let scale = 1.5f32;
        let seed = 400 + i as u64;
        let p_host: Vec<T> = random(seed, m * r);
        let b_host: Vec<T> = random(seed + 1, n * r);
        let y_host: Vec<T> = random(seed + 2, m * n);
        let (p, b) = (upload(stream, &p_host), upload(stream, &b_host));
        let mut y = upload(stream, &y_host);
        dev.kernels.expand(stream, &p.as_view(), &b.as_view(), r, scale, &mut y.as_view_mut()).expect("expand");
        let mut want = Vec::with_capacity(m * n);
        for row in 0..m {
            for col in 0..n {
                let mut sum = Sum::default();
                for j in 0..r {
                    sum.add_product(p_host[row * r + j].to_f64(), b_host[col * r + j].to_f64());
                }
                want.push(Sum::default().plus(y_host[row * n + col].to_f64()).plus_scaled(scale, sum));
            }
        }
        assert_close(&format!("expand m={m} n={n} r={r}"), &download(stream, &y), &want);
    }
}

/// Same inputs, bit-identical outputs, on the split-K path too (its partial
/// sums are added in a fixed order, no atomics).
fn deterministic<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    let (m, k, n, r) = (3, 3584, 72, 16);
    let case = single_case::<T>(m, k, n, r, true, 77);
    let on = case.upload(stream);
    let linear = on.linear(n, k);
    let adapter = on.adapter(&case);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut y = poisoned::<T>(stream, m * n);
        let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
        dev.kernels.forward(stream, &on.x.as_view(), &linear, &adapter, None, &mut out).expect("forward");
        runs.push(download(stream, &y));
    }
    assert!(runs[0].iter().all(|v| v.to_f64().is_finite()), "every output written");
    assert_eq!(runs[0], runs[1], "two runs differ");
}

/// Y as a view one element into its allocation (not 16-byte aligned): the
/// epilogue falls back to element stores and still writes every element once.
fn expand_into_offset_view<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    let (m, n, r, scale) = (9usize, 24usize, 8usize, -0.5f32);
    let p_host: Vec<T> = random(501, m * r);
    let b_host: Vec<T> = random(502, n * r);
    let y_host: Vec<T> = random(503, m * n + 1);
    let (p, b) = (upload(stream, &p_host), upload(stream, &b_host));
    let mut y = upload(stream, &y_host);
    dev.kernels.expand(stream, &p.as_view(), &b.as_view(), r, scale, &mut y.slice_mut(1..)).expect("expand");
    let got = download(stream, &y);
    assert_eq!(got[0], y_host[0], "the element before the view is untouched");
    let mut want = Vec::with_capacity(m * n);
    for row in 0..m {
        for col in 0..n {
            let mut sum = Sum::default();
            for j in 0..r {
                sum.add_product(p_host[row * r + j].to_f64(), b_host[col * r + j].to_f64());
            }
            want.push(Sum::default().plus(y_host[1 + row * n + col].to_f64()).plus_scaled(scale, sum));
        }
    }
    assert_close("expand into an offset view", &got[1..], &want);
}

macro_rules! per_dtype {
    ($($name:ident),* $(,)?) => {
        mod f32_kernels { $( #[test] fn $name() { super::$name::<f32>() } )* }
        mod f16_kernels { $( #[test] fn $name() { super::$name::<half::f16>() } )* }
        mod bf16_kernels { $( #[test] fn $name() { super::$name::<half::bf16>() } )* }
    };
}
per_dtype!(
    fused_decode,
    fused_multi_decode_slots,
    fused_single,
    fused_without_p,
    fused_multi,
    fused_multi_decode,
    deterministic,
    expand_into_offset_view,
    multi_bad_index,
    shrink_alone,
    shrink_wide_rank_tile_same_bits,
    expand_alone,
    grouped_shrink_mixed_ranks
);

/// The oracle of these tests agrees with the crate's CPU reference
/// (`fused_lora::reference`, exact mode) on a multi-adapter case with NaN
/// padding: same P once rounded, same Y for that P. Runs without a device.
#[test]
fn oracle_matches_crate_reference() {
    use fused_lora::reference::{forward_multi, Base, MultiAdapters, Precision};
    use fused_lora::MultiAdapterShape;
    type T = half::bf16;
    let (m, k, n, r_max) = (19, 40, 24, 16);
    let ranks = vec![16usize, 3, 9];
    let mut case = MultiCase::<T> {
        m,
        k,
        n,
        r_max,
        x: random(1, m * k),
        w: random(2, n * k),
        bias: Some(random(3, n)),
        a: random(4, ranks.len() * r_max * k),
        b: random(5, ranks.len() * n * r_max),
        ranks: ranks.clone(),
        scales: vec![0.5, -2.0, 1.25],
        index: row_indices(Mix::Zipf, m, ranks.len(), 6),
    };
    poison_padding(&mut case.a, &mut case.b, &ranks, r_max, n, k);
    let scales: Vec<f64> = case.scales.iter().map(|&s| s as f64).collect();
    let indices: Vec<i64> = case.index.iter().map(|&i| i as i64).collect();
    let shape = MultiAdapterShape { m, k, n, num_adapters: ranks.len(), r_max };
    let base = Base { x: &case.x, w0: &case.w, bias: case.bias.as_deref() };
    let adapters = MultiAdapters { a_all: &case.a, b_all: &case.b, ranks: &ranks, scales: &scales, indices: &indices };
    let truth = forward_multi(shape, &base, &adapters, None, Precision::Exact).expect("reference");

    let p_mine: Vec<T> = case.p_reference().iter().map(|s| T::from_f64(s.exact)).collect();
    let p_truth: Vec<T> = truth.p.iter().map(|&v| T::from_f64(v)).collect();
    assert_eq!(p_mine, p_truth, "P rounded to bf16");
    for (i, (mine, want)) in case.y_reference(&p_truth).iter().zip(&truth.y).enumerate() {
        assert!((mine.exact - want).abs() <= 1e-12 * (1.0 + mine.magnitude), "Y[{i}]: {} vs {want}", mine.exact);
    }
}

/// The fused-P tile (`lora_forward_gemm_<T>_128x256_p`: P computed inside
/// the fused GEMM's CTAs, no shrink launch), which `takes_fused_p` picks on
/// the emulator's 108 SMs for 3 x 3 tiles of 128 x 256 over a short K (one
/// CTA per SM; the shrink launch would cost more than P's extra mma; four
/// whole tiles, whose copies carry no predicate, and five on an M or N
/// edge): one
/// launch, Y and P against the reference, P against the shrink's to within
/// the documented bound (the same value or an adjacent one of T: only the
/// f32 accumulation order differs), with M, N and K tails, with and without
/// bias. Ranks the tile does not serve (past 16, or not a whole 16-byte
/// chunk) keep the shrink launch.
fn fused_p_tile<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    // A compute capability 9.0 device (the test command's second pass)
    // takes the Hopper kernel after the shrink wherever TMA reads the
    // operands, as here: the fused-P tile is the mma.sync path's.
    let major = dev
        .ctx
        .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        .expect("compute capability");
    // FUSED_LORA_HOPPER unset: the Hopper path is on (HOPPER_BY_DEFAULT).
    let hopper = major == 9 && std::env::var(fused_lora::HOPPER_ENV).map_or(true, |v| v.trim() != "0");
    // (m, k, n, r, bias, fused-P tile): M, N and K tails (K = 72: two whole
    // steps and 8 more) on the first, whole tiles on the second.
    let cases = [
        (300, 72, 600, 16, true, true),
        (384, 64, 768, 8, false, true),
        (300, 72, 600, 24, true, false),
        (300, 72, 600, 64, false, false),
        (300, 72, 600, 12, true, false),
    ];
    for (i, &(m, k, n, r, with_bias, fused)) in cases.iter().enumerate() {
        let fused = fused && !hopper;
        let case = single_case::<T>(m, k, n, r, with_bias, 900 + i as u64);
        let on = case.upload(stream);
        let mut y = poisoned::<T>(stream, m * n);
        let mut p = poisoned::<T>(stream, m * r);
        let linear = on.linear(n, k);
        let adapter = on.adapter(&case);
        // A marker launch (a one-row shrink: grid 1 x 1), then the forward.
        let (mx, ma) = (upload(stream, &case.x[..k]), upload(stream, &case.a[..k]));
        let mut mp = poisoned::<T>(stream, 1);
        dev.kernels.shrink(stream, &mx.as_view(), &ma.as_view(), 1, &mut mp.as_view_mut()).expect("marker");
        let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
        dev.kernels.forward(stream, &on.x.as_view(), &linear, &adapter, None, &mut out).expect("forward");
        let what = format!("m={m} k={k} n={n} r={r} bias={with_bias}");
        if device::is_emulator() {
            // The forward's launches: those after the marker.
            let launches = device::recent_launch_counters(if fused { 2 } else { 3 }).expect("counters");
            let names: Vec<&str> = launches.iter().map(|c| c["kernel"].as_str().unwrap_or_default()).collect();
            let marker = &launches[0];
            assert!(
                names[0].starts_with("lora_rank_shrink")
                    && (marker["grid"][0].as_u64(), marker["grid"][1].as_u64()) == (Some(1), Some(1)),
                "{what}: the marker before the forward's launches: {names:?}"
            );
            if fused {
                assert!(names[1].ends_with("_128x256_p"), "{what}: one launch, the fused-P tile: {names:?}");
            } else {
                assert!(names[1].starts_with("lora_rank_shrink") && !names[2].ends_with("_p"), "{what}: {names:?}");
            }
        }
        let p_got = download(stream, &p);
        assert_close(&format!("P {what}"), &p_got, &case.p_reference());
        assert_close(&format!("Y {what}"), &download(stream, &y), &case.y_reference(&p_got));

        let mut p_shrink = poisoned::<T>(stream, m * r);
        dev.kernels.shrink(stream, &on.x.as_view(), &on.a.as_view(), r, &mut p_shrink.as_view_mut()).expect("shrink");
        let p_shrink = download(stream, &p_shrink);
        if fused {
            assert_p_next_to_shrink(&what, &p_got, &p_shrink);
        } else {
            for (j, (f, s)) in p_got.iter().zip(&p_shrink).enumerate() {
                assert_eq!(f.to_f64().to_bits(), s.to_f64().to_bits(), "{what}: P[{j}] is the shrink's");
            }
        }

        if i == 0 {
            // Y does not depend on where P is kept: in a scratch buffer, or
            // in a view one element into a buffer (P not 16-byte aligned:
            // written element by element), which holds the same P.
            let y_bits =
                |y: &CudaSlice<T>| download(stream, y).iter().map(|v| v.to_f64().to_bits()).collect::<Vec<_>>();
            let mut y_scratch = poisoned::<T>(stream, m * n);
            let mut out = ForwardOutput { y: y_scratch.as_view_mut(), p: None };
            dev.kernels
                .forward(stream, &on.x.as_view(), &linear, &adapter, None, &mut out)
                .expect("forward, scratch P");
            assert_eq!(y_bits(&y_scratch), y_bits(&y), "{what}: Y with P in scratch");
            // (The Hopper path reads P through TMA: an offset P takes the
            // mma.sync path there, so this holds for the mma.sync path only.)
            if !hopper {
                let mut y_offset = poisoned::<T>(stream, m * n);
                let mut p_offset = poisoned::<T>(stream, m * r + 1);
                let mut out = ForwardOutput { y: y_offset.as_view_mut(), p: Some(p_offset.slice_mut(1..)) };
                dev.kernels
                    .forward(stream, &on.x.as_view(), &linear, &adapter, None, &mut out)
                    .expect("forward, offset P");
                assert_eq!(y_bits(&y_offset), y_bits(&y), "{what}: Y with P at an offset");
                let p_at = download(stream, &p_offset);
                let same = p_at[1..].iter().zip(&p_got).all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits());
                assert!(same && p_at[0].to_f64().is_nan(), "{what}: P at an offset");
            }
        }
    }
}

#[test]
fn fused_p_tile_f16() {
    fused_p_tile::<half::f16>();
}

#[test]
fn fused_p_tile_bf16() {
    fused_p_tile::<half::bf16>();
}

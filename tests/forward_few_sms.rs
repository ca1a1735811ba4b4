//! The forward's 128-row tiles (128 × 128 and 128 × 64) against the 64 × 64
//! tile, bit for bit, on a device of few SMs: the emulated device presents 8
//! (`PTX_EMU_MULTIPROCESSORS`, set by every test of this binary before its
//! first launch, the same value in all of them), so the tile rule
//! (`forward_tile`, src/forward/launch.rs) gives the 128-row tiles to grids
//! a tenth the size it needs on 108 SMs, which keeps the emulator's time
//! short. Each test asserts the tile its launch took.

mod device;
mod forward_support;

use forward_support::{assert_close, poison_padding, random, row_indices, Mix, MultiCase};
use fused_lora::LoraDType;

/// The SM count every test here presents.
const SMS: &str = "8";

fn presenting_few_sms() {
    std::env::set_var("PTX_EMU_MULTIPROCESSORS", SMS);
}

/// The 128x128 and 128x64 tiles (chosen by `forward_tile` for 8 SMs: M =
/// 600 with N = 260 takes 128x128, 5 x 3 tiles; with N = 200, 128x64, 5 x 4)
/// give the same bits as the 64x64 tile: the full problem against the same
/// rows fed 64 at a time (fewer rows than a 128-row tile: the 64x64 tile on
/// any SM count; the last slice 24 rows, past the 16 that take the decode
/// path and its own summation order), with adapters mixed within tiles, bias, and K, N, M and
/// rank tails; the full run is also checked against the reference.
fn big_tile_same_bits<T: LoraDType>() {
    tile_same_bits::<T>(260, "_128x128");
}

fn wide_tile_same_bits<T: LoraDType>() {
    tile_same_bits::<T>(200, "_128x64");
}

#[test]
fn wide_tile_same_bits_f16() {
    wide_tile_same_bits::<half::f16>();
}

#[test]
fn wide_tile_same_bits_bf16() {
    wide_tile_same_bits::<half::bf16>();
}

fn tile_same_bits<T: LoraDType>(n: usize, suffix: &str) {
    presenting_few_sms();
    let Some(dev) = device::device() else { return };
    let stream = &dev.stream;
    let (m, k, r_max) = (600, 104, 40);
    let ranks = [8usize, 40, 1, 17, 32];
    let mut case = MultiCase::<T> {
        m,
        k,
        n,
        r_max,
        x: random(501, m * k),
        w: random(502, n * k),
        bias: Some(random(503, n)),
        a: random(504, ranks.len() * r_max * k),
        b: random(505, ranks.len() * n * r_max),
        ranks: ranks.to_vec(),
        scales: vec![0.5, -1.25, 2.0, 0.125, 1.0],
        index: row_indices(Mix::Unsorted, m, ranks.len(), 506),
    };
    poison_padding(&mut case.a, &mut case.b, &ranks, r_max, n, k);
    let (p_full, y_full) = case.run(&dev.kernels, stream, None).expect("forward_multi");
    let kernels = |launches: usize| -> Vec<String> {
        device::recent_launch_counters(launches)
            .map(|all| all.iter().map(|c| c["kernel"].as_str().unwrap_or_default().to_string()).collect())
            .unwrap_or_default()
    };
    if device::is_emulator() {
        let names = kernels(2);
        assert!(names.iter().any(|k| k.ends_with(suffix)), "the {suffix} tile for {m} x {n}: {names:?}");
    }
    assert_close("P", &p_full, &case.p_reference());
    assert_close("Y", &y_full, &case.y_reference(&p_full));

    const ROWS: usize = 64;
    for m0 in (0..m).step_by(ROWS) {
        let rows = ROWS.min(m - m0);
        let slice = MultiCase::<T> {
            m: rows,
            x: case.x[m0 * k..(m0 + rows) * k].to_vec(),
            w: case.w.clone(),
            bias: case.bias.clone(),
            a: case.a.clone(),
            b: case.b.clone(),
            ranks: case.ranks.clone(),
            scales: case.scales.clone(),
            index: case.index[m0..m0 + rows].to_vec(),
            ..case
        };
        let (p, y) = slice.run(&dev.kernels, stream, None).expect("forward_multi");
        if device::is_emulator() {
            let names = kernels(2);
            assert!(
                names.iter().all(|k| !k.ends_with("_128x128") && !k.ends_with("_128x64")),
                "the small tile for {rows} rows: {names:?}"
            );
        }
        let bits = |v: &[T]| v.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p), bits(&p_full[m0 * r_max..(m0 + rows) * r_max]), "P rows {m0}..");
        assert_eq!(bits(&y), bits(&y_full[m0 * n..(m0 + rows) * n]), "Y rows {m0}..");
    }
}

#[test]
fn big_tile_same_bits_f16() {
    big_tile_same_bits::<half::f16>();
}

#[test]
fn big_tile_same_bits_bf16() {
    big_tile_same_bits::<half::bf16>();
}

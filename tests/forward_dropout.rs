//! Dropout fused into the forward shrink, on a device (the emulator with every
//! check on, or a GPU), per dtype: P is the shrink of
//! `X̃ = keep ? round_T(X·inv_keep) : 0` with the CPU reference's Philox mask,
//! Y's base term uses the undropped X, and the mask itself is checked bit for
//! bit through an identity A (then P = X̃ exactly).

mod device;
mod forward_support;

use forward_support::{assert_close, download, poison_padding, poisoned, random, row_indices, Mix, MultiCase};
use fused_lora::reference::{self, Base, MultiAdapters, Precision};
use fused_lora::{Dropout, ForwardOutput, LoraDType, LoraError, LoraShape, MultiAdapterShape};

/// The drop probabilities of the plan: none (p = 0 is "no mask"), light, heavy.
const PROBABILITIES: [f32; 3] = [0.0, 0.1, 0.5];

/// (m, k, n, r): M not a multiple of 64 over two row tiles, K = 3 whole
/// K-steps plus a tail of 8; then few rows and a long K (the split-K path of
/// the shrink and of the fused GEMM).
const SINGLE_CASES: &[(usize, usize, usize, usize)] = &[(70, 104, 72, 8), (3, 1032, 40, 16), (1, 520, 24, 5)];

/// X̃ on the host, from the crate reference's mask and `inv_keep`:
/// `round_T(x·inv_keep)` with the product in f32, 0 where dropped.
fn dropped<T: LoraDType>(x: &[T], m: usize, k: usize, dropout: &Dropout) -> Vec<T> {
    let inv_keep = dropout.inv_keep();
    let mut out = Vec::with_capacity(m * k);
    for row in 0..m {
        for col in 0..k {
            let v = x[row * k + col];
            out.push(if dropout.keep(row, col, k) {
                T::from_f32(v.to_f64() as f32 * inv_keep)
            } else {
                T::from_f64(0.0)
            });
        }
    }
    out
}

fn single_case<T: LoraDType>(m: usize, k: usize, n: usize, r: usize, seed: u64) -> MultiCase<T> {
    MultiCase {
        m,
        k,
        n,
        r_max: r,
        x: random(seed, m * k),
        w: random(seed + 1, n * k),
        bias: Some(random(seed + 2, n)),
        a: random(seed + 3, r * k),
        b: random(seed + 4, n * r),
        ranks: vec![r],
        scales: vec![-0.75],
        index: vec![0; m],
    }
}

/// The same problem with X replaced by X̃: its `p_reference` is the dropped P.
fn with_dropped_input<T: LoraDType>(case: &MultiCase<T>, dropout: &Dropout) -> MultiCase<T> {
    MultiCase {
        x: dropped(&case.x, case.m, case.k, dropout),
        w: case.w.clone(),
        bias: case.bias.clone(),
        a: case.a.clone(),
        b: case.b.clone(),
        ranks: case.ranks.clone(),
        scales: case.scales.clone(),
        index: case.index.clone(),
        ..*case
    }
}

/// Runs `forward` on `case` with `dropout`, returning (P, Y).
fn run_single<T: LoraDType>(
    dev: &device::Device,
    case: &MultiCase<T>,
    dropout: Option<&Dropout>,
) -> Result<(Vec<T>, Vec<T>), LoraError> {
    let stream = &dev.stream;
    let (m, k, n, r) = (case.m, case.k, case.n, case.r_max);
    let on = case.upload(stream);
    let mut y = poisoned::<T>(stream, m * n);
    let mut p = poisoned::<T>(stream, m * r);
    let linear = on.linear(n, k);
    let adapter = on.adapter(case);
    let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
    dev.kernels.forward(stream, &on.x.as_view(), &linear, &adapter, dropout, &mut out)?;
    Ok((download(stream, &p), download(stream, &y)))
}

/// P against the shrink of X̃, Y against the undropped base plus s·P·Bᵀ.
#[track_caller]
fn assert_forward_close<T: LoraDType>(what: &str, case: &MultiCase<T>, dropout: &Dropout, p: &[T], y: &[T]) {
    assert_close(&format!("P {what}"), p, &with_dropped_input(case, dropout).p_reference());
    assert_close(&format!("Y {what}"), y, &case.y_reference(p));
}

fn single_matches_reference<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    for (i, &(m, k, n, r)) in SINGLE_CASES.iter().enumerate() {
        let case = single_case::<T>(m, k, n, r, 100 + 10 * i as u64);
        for (j, &p) in PROBABILITIES.iter().enumerate() {
            let dropout = Dropout::new(p, 0x5eed_0000 + j as u64, 3 * i as u64).expect("valid p");
            let (p_got, y_got) = run_single(&dev, &case, Some(&dropout)).expect("forward");
            assert_forward_close(&format!("m={m} k={k} n={n} r={r} p={p}"), &case, &dropout, &p_got, &y_got);
        }
    }
}

/// L = 4 adapters of ranks 8, 40, 1, 17 (r_max 40, padding NaN), rows mixed
/// over them and over no adapter; then the decode shape (3 rows, long K).
fn multi_matches_reference<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let ranks = [8usize, 40, 1, 17];
    let r_max = 40;
    for (i, &(mix, m, k, n)) in [(Mix::Unsorted, 70, 104, 40), (Mix::Zipf, 3, 1032, 24)].iter().enumerate() {
        let seed = 200 + 10 * i as u64;
        let mut case = MultiCase::<T> {
            m,
            k,
            n,
            r_max,
            x: random(seed, m * k),
            w: random(seed + 1, n * k),
            bias: Some(random(seed + 2, n)),
            a: random(seed + 3, ranks.len() * r_max * k),
            b: random(seed + 4, ranks.len() * n * r_max),
            ranks: ranks.to_vec(),
            scales: vec![0.5, -1.25, 2.0, 0.125],
            index: row_indices(mix, m, ranks.len(), seed + 5),
        };
        poison_padding(&mut case.a, &mut case.b, &ranks, r_max, n, k);
        for (j, &p) in PROBABILITIES.iter().enumerate() {
            let dropout = Dropout::new(p, 77 + j as u64, 1 << 40).expect("valid p");
            let (p_got, y_got) = case.run(&dev.kernels, &dev.stream, Some(&dropout)).expect("forward_multi");
            assert_forward_close(&format!("multi {mix:?} m={m} k={k} n={n} p={p}"), &case, &dropout, &p_got, &y_got);
        }
    }
}

/// A = [I_K] (r = K): every P element is one X̃ element times 1 plus exact
/// zeros, so P must equal the reference's P — X̃ itself — bit for bit, which
/// checks the device mask element by element (global row and column
/// included: two row tiles, two column tiles, a K tail). Also on the split-K
/// path (3 rows) and through forward_multi.
fn mask_is_bit_exact<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    for (i, &(m, k)) in [(70usize, 104usize), (3, 520)].iter().enumerate() {
        let n = 24;
        let seed = 300 + 10 * i as u64;
        let mut identity = vec![T::from_f64(0.0); k * k];
        for j in 0..k {
            identity[j * k + j] = T::from_f64(1.0);
        }
        let case = MultiCase::<T> { a: identity.clone(), ..single_case::<T>(m, k, n, k, seed) };
        let dropout = Dropout::new(0.5, seed, 11).expect("valid p");
        let base = Base { x: &case.x, w0: &case.w, bias: case.bias.as_deref() };

        let shape = LoraShape { m, k, n, r: k };
        let adapter = reference::Adapter { a: &case.a, b: &case.b, scale: case.scales[0] as f64 };
        let truth = reference::forward(shape, &base, &adapter, Some(&dropout), Precision::Exact).expect("reference");
        let (p_got, y_got) = run_single(&dev, &case, Some(&dropout)).expect("forward");
        assert_bits("forward", &p_got, &truth.p);
        assert_forward_close(&format!("identity m={m} k={k}"), &case, &dropout, &p_got, &y_got);
        let kept = p_got.iter().zip(&case.x).filter(|(p, x)| p.to_f64() != 0.0 || x.to_f64() == 0.0).count();
        assert!(kept > m * k / 4 && kept < 3 * m * k / 4, "p = 0.5 keeps about half: {kept} of {}", m * k);

        // Two identity adapters (the second at rank k - 8: its last columns
        // stay 0), rows over both and over none.
        let ranks = [k, k - 8];
        let a_all = [identity.clone(), identity].concat();
        let multi = MultiCase::<T> {
            a: a_all,
            b: random(seed + 5, 2 * n * k),
            ranks: ranks.to_vec(),
            scales: vec![1.5, -0.5],
            index: row_indices(Mix::Unsorted, m, 2, seed + 6),
            ..single_case::<T>(m, k, n, k, seed)
        };
        let scales: Vec<f64> = multi.scales.iter().map(|&s| s as f64).collect();
        let indices: Vec<i64> = multi.index.iter().map(|&l| l as i64).collect();
        let adapters =
            MultiAdapters { a_all: &multi.a, b_all: &multi.b, ranks: &ranks, scales: &scales, indices: &indices };
        let shape = MultiAdapterShape { m, k, n, num_adapters: 2, r_max: k };
        let truth =
            reference::forward_multi(shape, &base, &adapters, Some(&dropout), Precision::Exact).expect("reference");
        let (p_got, y_got) = multi.run(&dev.kernels, &dev.stream, Some(&dropout)).expect("forward_multi");
        assert_bits("forward_multi", &p_got, &truth.p);
        assert_forward_close(&format!("identity multi m={m} k={k}"), &multi, &dropout, &p_got, &y_got);
    }
}

#[track_caller]
fn assert_bits<T: LoraDType>(what: &str, got: &[T], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, &w)) in got.iter().zip(want).enumerate() {
        assert!(*g == T::from_f64(w), "{what}: P[{i}] = {} where the reference has {w}", g.to_f64());
    }
}

/// The mask depends on the seed and on the offset; p = 0 is the plain path,
/// bit for bit the same as no dropout at all.
fn seed_and_offset_change_the_mask<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let case = single_case::<T>(70, 104, 24, 8, 400);
    let run = |dropout: Option<&Dropout>| run_single(&dev, &case, dropout).expect("forward");
    let (plain_p, plain_y) = run(None);
    let (zero_p, zero_y) = run(Some(&Dropout { p: 0.0, seed: 9, offset: 9 }));
    assert_eq!((&plain_p, &plain_y), (&zero_p, &zero_y), "p = 0 differs from no dropout");

    let reference = Dropout::new(0.1, 1234, 0).expect("valid p");
    let (p_ref, y_ref) = run(Some(&reference));
    assert_ne!(p_ref, plain_p, "p = 0.1 left P unchanged");
    for other in [Dropout { seed: 1235, ..reference }, Dropout { offset: 1, ..reference }] {
        let (p_other, y_other) = run(Some(&other));
        assert_ne!(p_other, p_ref, "{other:?} gives the same P as {reference:?}");
        assert_ne!(y_other, y_ref, "{other:?} gives the same Y as {reference:?}");
        assert_forward_close(&format!("{other:?}"), &case, &other, &p_other, &y_other);
    }
}

/// p outside [0, 1) is refused before any launch, by both entry points.
fn invalid_p_is_rejected<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let single = single_case::<T>(5, 16, 8, 4, 500);
    let multi = MultiCase::<T> { index: vec![0, -1, 0, 0, -1], ..single_case::<T>(5, 16, 8, 4, 500) };
    for p in [1.0f32, 1.5, -0.1, f32::NAN, f32::INFINITY] {
        let dropout = Dropout { p, seed: 1, offset: 2 };
        for (api, result) in [
            ("forward", run_single(&dev, &single, Some(&dropout))),
            ("forward_multi", multi.run(&dev.kernels, &dev.stream, Some(&dropout))),
        ] {
            match result {
                Err(LoraError::InvalidArgument { what: "dropout p", .. }) => {}
                other => panic!("{api} with p = {p}: {other:?}"),
            }
        }
    }
}

macro_rules! per_dtype {
    ($($name:ident),* $(,)?) => {
        mod f32_kernels { $( #[test] fn $name() { super::$name::<f32>() } )* }
        mod f16_kernels { $( #[test] fn $name() { super::$name::<half::f16>() } )* }
        mod bf16_kernels { $( #[test] fn $name() { super::$name::<half::bf16>() } )* }
    };
}
per_dtype!(
    single_matches_reference,
    multi_matches_reference,
    mask_is_bit_exact,
    seed_and_offset_change_the_mask,
    invalid_p_is_rejected
);

/// The host X̃ these tests build agrees with the crate's CPU reference: its
/// shrink, rounded, is the reference's dropped P. Runs without a device.
#[test]
fn host_dropped_input_matches_crate_reference() {
    type T = half::bf16;
    let case = single_case::<T>(19, 40, 24, 6, 600);
    let dropout = Dropout::new(0.5, 42, 7).expect("valid p");
    let base = Base { x: &case.x, w0: &case.w, bias: case.bias.as_deref() };
    let adapter = reference::Adapter { a: &case.a, b: &case.b, scale: case.scales[0] as f64 };
    let shape = LoraShape { m: case.m, k: case.k, n: case.n, r: case.r_max };
    let truth = reference::forward(shape, &base, &adapter, Some(&dropout), Precision::Exact).expect("reference");
    let mine: Vec<T> = with_dropped_input(&case, &dropout).p_reference().iter().map(|s| T::from_f64(s.exact)).collect();
    let want: Vec<T> = truth.p.iter().map(|&v| T::from_f64(v)).collect();
    assert_eq!(mine, want, "P rounded to bf16");
    let undropped: Vec<T> = case.p_reference().iter().map(|s| T::from_f64(s.exact)).collect();
    assert_ne!(mine, undropped, "p = 0.5 must change P");
}

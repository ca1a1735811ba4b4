//! The forward reference against the LoRA algebra, computed independently.

mod common;

use common::{assert_close_2d, assert_rel_close, random_tensor, rng};
use fused_lora::reference::{
    expand, forward, forward_multi, shrink, to_elems, to_f64s, Adapter, Base, Dropout, MultiAdapters, Precision,
};
use fused_lora::{LoraError, LoraShape, MultiAdapterShape};
use half::{bf16, f16};

/// `X·(W0 + s·B·A)ᵀ + bias`, merged weight first: a different association
/// from the reference's `X·W0ᵀ + s·(X·Aᵀ)·Bᵀ`.
fn merged_forward(shape: LoraShape, x: &[f64], w0: &[f64], bias: &[f64], a: &[f64], b: &[f64], s: f64) -> Vec<f64> {
    let LoraShape { m, k, n, r } = shape;
    let mut w = w0.to_vec();
    for row in 0..n {
        for col in 0..k {
            w[row * k + col] += s * (0..r).map(|j| b[row * r + j] * a[j * k + col]).sum::<f64>();
        }
    }
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for o in 0..n {
            y[i * n + o] = bias[o] + (0..k).map(|c| x[i * k + c] * w[o * k + c]).sum::<f64>();
        }
    }
    y
}

#[test]
fn forward_equals_x_times_merged_weight_in_f64() {
    let shape = LoraShape { m: 7, k: 13, n: 5, r: 3 };
    let mut g = rng(1);
    let x = random_tensor::<f64>(&mut g, 7 * 13);
    let w0 = random_tensor::<f64>(&mut g, 5 * 13);
    let bias = random_tensor::<f64>(&mut g, 5);
    let a = random_tensor::<f64>(&mut g, 3 * 13);
    let b = random_tensor::<f64>(&mut g, 5 * 3);
    let s = 0.75;
    let base = Base { x: &x, w0: &w0, bias: Some(&bias) };
    let out = forward(shape, &base, &Adapter { a: &a, b: &b, scale: s }, None, Precision::Exact).unwrap();
    assert_rel_close("Y", &out.y, &merged_forward(shape, &x, &w0, &bias, &a, &b, s), 1e-13);
    // P is X·Aᵀ, unscaled.
    let p = shrink(shape, &x, &a, 1.0, None, Precision::Exact).unwrap();
    assert_rel_close("P", &out.p, &p, 1e-15);
}

#[test]
fn forward_is_shrink_then_expand() {
    // Fused and unfused agree when P goes through the same rounding.
    let shape = LoraShape { m: 4, k: 9, n: 6, r: 2 };
    let mut g = rng(2);
    let x = random_tensor::<f16>(&mut g, 4 * 9);
    let w0 = random_tensor::<f16>(&mut g, 6 * 9);
    let a = random_tensor::<f16>(&mut g, 2 * 9);
    let b = random_tensor::<f16>(&mut g, 6 * 2);
    let base = Base { x: &x, w0: &w0, bias: None };
    let adapter = Adapter { a: &a, b: &b, scale: 2.0 };
    let out = forward(shape, &base, &adapter, None, Precision::Exact).unwrap();
    let p = shrink(shape, &x, &a, 1.0, None, Precision::Exact).unwrap();
    assert_eq!(to_elems::<f16>(&p), to_elems::<f16>(&out.p));
    let zero = vec![f16::ZERO; 4 * 6];
    let y_adapter = expand(shape, &zero, &to_elems::<f16>(&p), &b, 2.0, Precision::Exact).unwrap();
    let y_base =
        forward(shape, &base, &Adapter { a: &a, b: &[f16::ZERO; 12], scale: 2.0 }, None, Precision::Exact).unwrap().y;
    let sum: Vec<f64> = y_base.iter().zip(&y_adapter).map(|(a, b)| a + b).collect();
    assert_rel_close("Y", &out.y, &sum, 1e-12);
}

#[test]
fn p_is_rounded_to_the_storage_type() {
    let shape = LoraShape { m: 3, k: 64, n: 2, r: 4 };
    let mut g = rng(3);
    let x = random_tensor::<bf16>(&mut g, 3 * 64);
    let w0 = random_tensor::<bf16>(&mut g, 2 * 64);
    let a = random_tensor::<bf16>(&mut g, 4 * 64);
    let b = random_tensor::<bf16>(&mut g, 2 * 4);
    let out = forward(
        shape,
        &Base { x: &x, w0: &w0, bias: None },
        &Adapter { a: &a, b: &b, scale: 1.0 },
        None,
        Precision::Exact,
    )
    .unwrap();
    for p in &out.p {
        assert_eq!(bf16::from_f64(*p).to_f64(), *p, "P must hold bf16 values");
    }
    let unrounded = shrink(shape, &to_f64s(&x), &to_f64s(&a), 1.0, None, Precision::Exact).unwrap();
    assert!(out.p.iter().zip(&unrounded).any(|(p, u)| p != u), "rounding must be visible on some element");
}

#[test]
fn naive_forward_is_within_the_tolerance_of_exact_per_dtype() {
    // The naive reference is the yardstick of the tolerance: it passes its own bound.
    let shape = LoraShape { m: 5, k: 113, n: 7, r: 3 };
    let mut g = rng(4);
    let x = random_tensor::<f16>(&mut g, 5 * 113);
    let w0 = random_tensor::<f16>(&mut g, 7 * 113);
    let a = random_tensor::<f16>(&mut g, 3 * 113);
    let b = random_tensor::<f16>(&mut g, 7 * 3);
    let base = Base { x: &x, w0: &w0, bias: None };
    let adapter = Adapter { a: &a, b: &b, scale: 0.5 };
    let exact = forward(shape, &base, &adapter, None, Precision::Exact).unwrap();
    let naive = forward(shape, &base, &adapter, None, Precision::Naive).unwrap();
    for y in &naive.y {
        assert_eq!(f16::from_f64(*y).to_f64(), *y, "naive outputs are f16 values");
    }
    assert_close_2d::<f16>("Y", 7, &naive.y, &exact.y, &naive.y, 0.0);
    assert!(naive.y != exact.y, "the naive f16 path must differ from the exact one somewhere");
}

struct MultiCase {
    shape: MultiAdapterShape,
    x: Vec<f64>,
    w0: Vec<f64>,
    bias: Vec<f64>,
    a_all: Vec<f64>,
    b_all: Vec<f64>,
    ranks: Vec<usize>,
    scales: Vec<f64>,
    indices: Vec<i64>,
}

/// Three adapters of ranks 1, 4 and 2 (r_max 4), unsorted indices with −1
/// rows, padding filled with NaN.
fn multi_case() -> MultiCase {
    let shape = MultiAdapterShape { m: 9, k: 11, n: 6, num_adapters: 3, r_max: 4 };
    let ranks = vec![1, 4, 2];
    let mut g = rng(5);
    let mut a_all = random_tensor::<f64>(&mut g, 3 * 4 * 11);
    let mut b_all = random_tensor::<f64>(&mut g, 3 * 6 * 4);
    for (l, &rank) in ranks.iter().enumerate() {
        for j in rank..4 {
            a_all[(l * 4 + j) * 11..(l * 4 + j + 1) * 11].fill(f64::NAN);
            for col in 0..6 {
                b_all[(l * 6 + col) * 4 + j] = f64::NAN;
            }
        }
    }
    MultiCase {
        shape,
        x: random_tensor::<f64>(&mut g, 9 * 11),
        w0: random_tensor::<f64>(&mut g, 6 * 11),
        bias: random_tensor::<f64>(&mut g, 6),
        a_all,
        b_all,
        ranks,
        scales: vec![0.5, 2.0, -1.25],
        indices: vec![2, -1, 0, 1, 1, -1, 2, 0, 1],
    }
}

#[test]
fn multi_forward_equals_per_row_single_forward() {
    let c = multi_case();
    let dropout = Dropout::new(0.25, 99, 7).unwrap();
    for dropout in [None, Some(&dropout)] {
        let base = Base { x: &c.x, w0: &c.w0, bias: Some(&c.bias) };
        let adapters =
            MultiAdapters { a_all: &c.a_all, b_all: &c.b_all, ranks: &c.ranks, scales: &c.scales, indices: &c.indices };
        let out = forward_multi(c.shape, &base, &adapters, dropout, Precision::Exact).unwrap();
        assert!(out.y.iter().chain(&out.p).all(|v| v.is_finite()), "NaN padding leaked");
        let (k, n, r_max) = (c.shape.k, c.shape.n, c.shape.r_max);
        for row in 0..c.shape.m {
            let x_row = &c.x[row * k..(row + 1) * k];
            let y_row = &out.y[row * n..(row + 1) * n];
            let p_row = &out.p[row * r_max..(row + 1) * r_max];
            let (a, b, rank, scale) = match c.indices[row] {
                -1 => (vec![], vec![], 0, 0.0),
                l => {
                    let (l, rank) = (l as usize, c.ranks[l as usize]);
                    let a = c.a_all[l * r_max * k..(l * r_max + rank) * k].to_vec();
                    let b: Vec<f64> =
                        (0..n).flat_map(|col| c.b_all[(l * n + col) * r_max..][..rank].to_vec()).collect();
                    (a, b, rank, c.scales[l])
                }
            };
            // The single forward sees row `row` as its only row, so the dropout
            // mask is indexed by (row, k): shift the stream by whole rows.
            let single_shape = LoraShape { m: 1, k, n, r: rank };
            let row_base = Base { x: x_row, w0: &c.w0, bias: Some(&c.bias) };
            let single = single_row_forward(single_shape, &row_base, &a, &b, scale, dropout, row);
            assert_eq!(y_row, &single.0[..], "Y row {row}");
            assert_eq!(&p_row[..rank], &single.1[..], "P row {row}");
            assert!(p_row[rank..].iter().all(|&p| p == 0.0), "P padding of row {row} must be 0");
        }
    }
}

/// Forward of one row of a larger batch: with dropout, the row's mask is the
/// batch's, recovered by running the single forward on a batch whose earlier
/// rows are zero and taking its last row.
fn single_row_forward(
    shape: LoraShape,
    base: &Base<'_, f64>,
    a: &[f64],
    b: &[f64],
    scale: f64,
    dropout: Option<&Dropout>,
    row: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (k, n, r) = (shape.k, shape.n, shape.r);
    let mut x = vec![0.0; row * k];
    x.extend_from_slice(base.x);
    let padded = LoraShape { m: row + 1, ..shape };
    let out = forward(padded, &Base { x: &x, ..*base }, &Adapter { a, b, scale }, dropout, Precision::Exact).unwrap();
    (out.y[row * n..].to_vec(), out.p[row * r..].to_vec())
}

#[test]
fn out_of_range_adapter_index_is_an_error() {
    let c = multi_case();
    let base = Base { x: &c.x, w0: &c.w0, bias: None };
    for bad in [3i64, -2, i64::MAX, i64::MIN] {
        let mut indices = c.indices.clone();
        indices[4] = bad;
        let adapters =
            MultiAdapters { a_all: &c.a_all, b_all: &c.b_all, ranks: &c.ranks, scales: &c.scales, indices: &indices };
        match forward_multi(c.shape, &base, &adapters, None, Precision::Exact) {
            Err(LoraError::AdapterIndexOutOfRange { row: 4, index, num_adapters: 3 }) => assert_eq!(index, bad),
            other => panic!("index {bad}: {other:?}"),
        }
    }
}

#[test]
fn a_rank_above_r_max_is_an_error() {
    let c = multi_case();
    let base = Base { x: &c.x, w0: &c.w0, bias: None };
    let ranks = vec![1, 5, 2];
    let adapters =
        MultiAdapters { a_all: &c.a_all, b_all: &c.b_all, ranks: &ranks, scales: &c.scales, indices: &c.indices };
    assert!(matches!(
        forward_multi(c.shape, &base, &adapters, None, Precision::Exact),
        Err(LoraError::InvalidArgument { what: "ranks", .. })
    ));
}

#[test]
fn dropout_probability_outside_the_unit_interval_is_an_error() {
    assert!(Dropout::new(1.0, 0, 0).is_err());
    assert!(Dropout::new(-0.1, 0, 0).is_err());
    assert!(Dropout::new(f32::NAN, 0, 0).is_err());
    let shape = LoraShape { m: 1, k: 1, n: 1, r: 1 };
    let bad = Dropout { p: 1.5, seed: 0, offset: 0 };
    assert!(matches!(
        shrink(shape, &[1.0f32], &[1.0f32], 1.0, Some(&bad), Precision::Exact),
        Err(LoraError::InvalidArgument { what: "dropout p", .. })
    ));
}

#[test]
fn overflowing_shapes_are_errors_not_panics() {
    // K = 0 makes every input empty, so only the output sizes can overflow.
    let shape = LoraShape { m: usize::MAX / 2, k: 0, n: 3, r: 3 };
    let empty: [f32; 0] = [];
    let base = Base { x: &empty, w0: &empty, bias: None };
    let adapter = Adapter { a: &empty, b: &[0.0f32; 9], scale: 1.0 };
    let result = forward(shape, &base, &adapter, None, Precision::Exact);
    assert!(matches!(result, Err(LoraError::InvalidArgument { what: "P", .. })), "{result:?}");
    assert!(shrink(shape, &empty, &empty, 1.0, None, Precision::Exact).is_err());
}

//! Every gradient of the backward reference against central finite
//! differences of `L = Σ dY ⊙ Y`, in f64 (no rounding), with and without dropout.

mod common;

use common::{assert_close_2d, assert_rel_close, central_difference, random_tensor, rng, weighted_sum};
use fused_lora::reference::{
    backward, backward_multi, expand, forward, forward_multi, to_elems, Adapter, Base, Dropout, MultiAdapters,
    Precision,
};
use fused_lora::{LoraShape, MultiAdapterShape};
use half::bf16;

/// The loss is linear in each argument, so a large step is exact up to rounding.
const STEP: f64 = 1e-3;
const TOL: f64 = 1e-9;
const DROPOUT_PROBABILITIES: [f32; 3] = [0.0, 0.1, 0.5];

struct Single {
    shape: LoraShape,
    x: Vec<f64>,
    w0: Vec<f64>,
    bias: Vec<f64>,
    a: Vec<f64>,
    b: Vec<f64>,
    dy: Vec<f64>,
    s: f64,
}

fn single_case(seed: u64) -> Single {
    let shape = LoraShape { m: 6, k: 7, n: 5, r: 3 };
    let mut g = rng(seed);
    Single {
        shape,
        x: random_tensor(&mut g, 6 * 7),
        w0: random_tensor(&mut g, 5 * 7),
        bias: random_tensor(&mut g, 5),
        a: random_tensor(&mut g, 3 * 7),
        b: random_tensor(&mut g, 5 * 3),
        dy: random_tensor(&mut g, 6 * 5),
        s: 1.5,
    }
}

impl Single {
    fn loss(&self, x: &[f64], a: &[f64], b: &[f64], dropout: Option<&Dropout>) -> f64 {
        let base = Base { x, w0: &self.w0, bias: Some(&self.bias) };
        let out = forward(self.shape, &base, &Adapter { a, b, scale: self.s }, dropout, Precision::Exact).unwrap();
        weighted_sum(&self.dy, &out.y)
    }
}

#[test]
fn single_adapter_gradients_match_finite_differences() {
    for (case, &p) in DROPOUT_PROBABILITIES.iter().enumerate() {
        let c = single_case(10 + case as u64);
        let dropout = Dropout::new(p, 1234, 5).unwrap();
        let dropout = Some(&dropout);
        let base = Base { x: &c.x, w0: &c.w0, bias: Some(&c.bias) };
        let adapter = Adapter { a: &c.a, b: &c.b, scale: c.s };
        let fwd = forward(c.shape, &base, &adapter, dropout, Precision::Exact).unwrap();
        let grads = backward(c.shape, &base, &adapter, dropout, &c.dy, &fwd.p, Precision::Exact).unwrap();

        let fd = |len: usize, loss: &dyn Fn(&[f64]) -> f64, at: &[f64]| -> Vec<f64> {
            (0..len).map(|i| central_difference(at, i, STEP, loss)).collect()
        };
        let da = fd(c.a.len(), &|a| c.loss(&c.x, a, &c.b, dropout), &c.a);
        let db = fd(c.b.len(), &|b| c.loss(&c.x, &c.a, b, dropout), &c.b);
        let dx = fd(c.x.len(), &|x| c.loss(x, &c.a, &c.b, dropout), &c.x);
        assert_rel_close(&format!("dA (p = {p})"), &grads.da, &da, TOL);
        assert_rel_close(&format!("dB (p = {p})"), &grads.db, &db, TOL);
        assert_rel_close(&format!("dX (p = {p})"), &grads.dx, &dx, TOL);

        // s·G is the gradient of L with respect to P (through the expand).
        let zero = vec![0.0; c.shape.m * c.shape.n];
        let loss_p =
            |p_: &[f64]| weighted_sum(&c.dy, &expand(c.shape, &zero, p_, &c.b, c.s, Precision::Exact).unwrap());
        let dp = fd(fwd.p.len(), &loss_p, &fwd.p);
        let s_g: Vec<f64> = grads.g.iter().map(|g| c.s * g).collect();
        assert_rel_close(&format!("s·G (p = {p})"), &s_g, &dp, TOL);
    }
}

#[test]
fn dropout_changes_the_adapter_gradients_only() {
    let c = single_case(20);
    let base = Base { x: &c.x, w0: &c.w0, bias: None };
    let adapter = Adapter { a: &c.a, b: &c.b, scale: c.s };
    let run = |dropout: Option<&Dropout>| {
        let fwd = forward(c.shape, &base, &adapter, dropout, Precision::Exact).unwrap();
        backward(c.shape, &base, &adapter, dropout, &c.dy, &fwd.p, Precision::Exact).unwrap()
    };
    let plain = run(None);
    let zero_p = run(Some(&Dropout::new(0.0, 1, 2).unwrap()));
    assert_eq!(plain, zero_p, "p = 0 means no mask at all");
    let dropped = run(Some(&Dropout::new(0.5, 1, 2).unwrap()));
    assert_ne!(plain.da, dropped.da);
    assert_ne!(plain.dx, dropped.dx);
    // G = dY·B does not see the mask.
    assert_eq!(plain.g, dropped.g);
}

#[test]
fn naive_backward_is_within_the_tolerance_of_exact_in_bf16() {
    let shape = LoraShape { m: 9, k: 33, n: 17, r: 4 };
    let mut g = rng(21);
    let x = random_tensor::<bf16>(&mut g, 9 * 33);
    let w0 = random_tensor::<bf16>(&mut g, 17 * 33);
    let a = random_tensor::<bf16>(&mut g, 4 * 33);
    let b = random_tensor::<bf16>(&mut g, 17 * 4);
    let dy = random_tensor::<bf16>(&mut g, 9 * 17);
    let base = Base { x: &x, w0: &w0, bias: None };
    let adapter = Adapter { a: &a, b: &b, scale: 0.5 };
    let dropout = Dropout::new(0.1, 3, 4).unwrap();
    let fwd = forward(shape, &base, &adapter, Some(&dropout), Precision::Exact).unwrap();
    let p = to_elems::<bf16>(&fwd.p);
    let exact = backward(shape, &base, &adapter, Some(&dropout), &dy, &p, Precision::Exact).unwrap();
    let naive = backward(shape, &base, &adapter, Some(&dropout), &dy, &p, Precision::Naive).unwrap();
    assert_close_2d::<bf16>("dA", 33, &naive.da, &exact.da, &naive.da, 0.0);
    assert_close_2d::<bf16>("dB", 4, &naive.db, &exact.db, &naive.db, 0.0);
    assert_close_2d::<bf16>("dX", 33, &naive.dx, &exact.dx, &naive.dx, 0.0);
    for v in naive.da.iter().chain(&naive.db).chain(&naive.dx) {
        assert_eq!(bf16::from_f64(*v).to_f64(), *v, "naive outputs are bf16 values");
    }
}

struct Multi {
    shape: MultiAdapterShape,
    x: Vec<f64>,
    w0: Vec<f64>,
    a_all: Vec<f64>,
    b_all: Vec<f64>,
    ranks: Vec<usize>,
    scales: Vec<f64>,
    indices: Vec<i64>,
    dy: Vec<f64>,
}

/// Four adapters (ranks 2, 3, 1, 3; r_max 3); adapter 3 is used by no row.
fn multi_case(seed: u64) -> Multi {
    let shape = MultiAdapterShape { m: 8, k: 5, n: 4, num_adapters: 4, r_max: 3 };
    let mut g = rng(seed);
    Multi {
        shape,
        x: random_tensor(&mut g, 8 * 5),
        w0: random_tensor(&mut g, 4 * 5),
        a_all: random_tensor(&mut g, 4 * 3 * 5),
        b_all: random_tensor(&mut g, 4 * 4 * 3),
        ranks: vec![2, 3, 1, 3],
        scales: vec![0.5, 2.0, -1.0, 3.0],
        indices: vec![1, 0, -1, 2, 1, 0, 1, -1],
        dy: random_tensor(&mut g, 8 * 4),
    }
}

impl Multi {
    fn adapters<'a>(&'a self, a_all: &'a [f64], b_all: &'a [f64]) -> MultiAdapters<'a, f64> {
        MultiAdapters { a_all, b_all, ranks: &self.ranks, scales: &self.scales, indices: &self.indices }
    }

    fn loss(&self, x: &[f64], a_all: &[f64], b_all: &[f64], dropout: Option<&Dropout>) -> f64 {
        let base = Base { x, w0: &self.w0, bias: None };
        let out = forward_multi(self.shape, &base, &self.adapters(a_all, b_all), dropout, Precision::Exact).unwrap();
        weighted_sum(&self.dy, &out.y)
    }

    /// Whether element `i` of A_all `[L, r_max, K]` lies inside its adapter's rank.
    fn a_in_rank(&self, i: usize) -> bool {
        let (r_max, k) = (self.shape.r_max, self.shape.k);
        (i / k) % r_max < self.ranks[i / (r_max * k)]
    }

    /// Whether element `i` of B_all `[L, N, r_max]` lies inside its adapter's rank.
    fn b_in_rank(&self, i: usize) -> bool {
        let (r_max, n) = (self.shape.r_max, self.shape.n);
        i % r_max < self.ranks[i / (n * r_max)]
    }
}

#[test]
fn multi_adapter_gradients_match_finite_differences() {
    for (case, &p) in DROPOUT_PROBABILITIES.iter().enumerate() {
        let c = multi_case(30 + case as u64);
        let dropout = Dropout::new(p, 77, 1).unwrap();
        let dropout = Some(&dropout);
        let base = Base { x: &c.x, w0: &c.w0, bias: None };
        let adapters = c.adapters(&c.a_all, &c.b_all);
        let fwd = forward_multi(c.shape, &base, &adapters, dropout, Precision::Exact).unwrap();
        let grads = backward_multi(c.shape, &base, &adapters, dropout, &c.dy, &fwd.p, Precision::Exact).unwrap();

        let da: Vec<f64> = (0..c.a_all.len())
            .map(|i| central_difference(&c.a_all, i, STEP, |a| c.loss(&c.x, a, &c.b_all, dropout)))
            .collect();
        let db: Vec<f64> = (0..c.b_all.len())
            .map(|i| central_difference(&c.b_all, i, STEP, |b| c.loss(&c.x, &c.a_all, b, dropout)))
            .collect();
        let dx: Vec<f64> = (0..c.x.len())
            .map(|i| central_difference(&c.x, i, STEP, |x| c.loss(x, &c.a_all, &c.b_all, dropout)))
            .collect();
        assert_rel_close(&format!("dA_all (p = {p})"), &grads.da, &da, TOL);
        assert_rel_close(&format!("dB_all (p = {p})"), &grads.db, &db, TOL);
        assert_rel_close(&format!("dX (p = {p})"), &grads.dx, &dx, TOL);

        // Padding and the unused adapter 3 get exact zeros.
        for (i, v) in grads.da.iter().enumerate() {
            if !c.a_in_rank(i) || i >= 3 * 3 * 5 {
                assert_eq!(*v, 0.0, "dA_all[{i}] is padding or unused");
            }
        }
        for (i, v) in grads.db.iter().enumerate() {
            if !c.b_in_rank(i) || i >= 3 * 4 * 3 {
                assert_eq!(*v, 0.0, "dB_all[{i}] is padding or unused");
            }
        }
        // s_l·G[m] is the gradient of L with respect to P[m] through row m's
        // expand; G rows with index −1 and G padding are zero.
        let (n, r_max) = (c.shape.n, c.shape.r_max);
        for row in 0..c.shape.m {
            let g_row = &grads.g[row * r_max..(row + 1) * r_max];
            let Ok(l) = usize::try_from(c.indices[row]) else {
                assert!(g_row.iter().all(|&g| g == 0.0), "G row {row} has index -1");
                continue;
            };
            let rank = c.ranks[l];
            assert!(g_row[rank..].iter().all(|&g| g == 0.0), "G row {row} padding");
            let b_l: Vec<f64> = (0..n).flat_map(|col| c.b_all[(l * n + col) * r_max..][..rank].to_vec()).collect();
            let row_shape = LoraShape { m: 1, k: c.shape.k, n, r: rank };
            let dy_row = &c.dy[row * n..(row + 1) * n];
            let zero = vec![0.0; n];
            let loss_p = |p_: &[f64]| {
                weighted_sum(dy_row, &expand(row_shape, &zero, p_, &b_l, c.scales[l], Precision::Exact).unwrap())
            };
            let p_row = &fwd.p[row * r_max..row * r_max + rank];
            let dp: Vec<f64> = (0..rank).map(|j| central_difference(p_row, j, STEP, loss_p)).collect();
            let s_g: Vec<f64> = g_row[..rank].iter().map(|g| c.scales[l] * g).collect();
            assert_rel_close(&format!("s·G row {row} (p = {p})"), &s_g, &dp, TOL);
        }
    }
}

#[test]
fn multi_backward_padding_is_never_read() {
    let c = multi_case(40);
    let mut a_nan = c.a_all.clone();
    let mut b_nan = c.b_all.clone();
    for (i, v) in a_nan.iter_mut().enumerate() {
        if !c.a_in_rank(i) {
            *v = f64::NAN;
        }
    }
    for (i, v) in b_nan.iter_mut().enumerate() {
        if !c.b_in_rank(i) {
            *v = f64::NAN;
        }
    }
    let base = Base { x: &c.x, w0: &c.w0, bias: None };
    let dropout = Dropout::new(0.1, 5, 6).unwrap();
    let run = |a: &[f64], b: &[f64]| {
        let adapters = c.adapters(a, b);
        let fwd = forward_multi(c.shape, &base, &adapters, Some(&dropout), Precision::Exact).unwrap();
        backward_multi(c.shape, &base, &adapters, Some(&dropout), &c.dy, &fwd.p, Precision::Exact).unwrap()
    };
    assert_eq!(run(&a_nan, &b_nan), run(&c.a_all, &c.b_all));
}

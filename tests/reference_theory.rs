//! docs/theory.md's identities on the reference, f64 end to end: step-0 gradient
//! asymmetry of the init schemes, the both-zero fixed point, and the
//! α / learning-rate / init substitution for SGD and Adam.

mod common;

use common::{random_tensor, rng};
use fused_lora::reference::{backward, forward, init_adapter, AdamW, Adapter, Base, Precision, Sgd};
use fused_lora::{InitScheme, LoraShape};

const RANK: usize = 2;
const STEPS: usize = 25;

/// Frozen random W0, a hidden rank-2 target update, MSE loss
/// `L = Σ (Y − Y*)² / (2·M·N)`.
struct Regression {
    shape: LoraShape,
    x: Vec<f64>,
    w0: Vec<f64>,
    target: Vec<f64>,
}

impl Regression {
    fn new() -> Self {
        let shape = LoraShape { m: 24, k: 10, n: 6, r: RANK };
        let mut g = rng(2024);
        let x: Vec<f64> = random_tensor(&mut g, 24 * 10);
        let w0: Vec<f64> = random_tensor(&mut g, 6 * 10);
        let u: Vec<f64> = random_tensor(&mut g, 6 * RANK);
        let v: Vec<f64> = random_tensor(&mut g, RANK * 10);
        // Y* = X·(W0 + U·V)ᵀ: the same forward with the hidden adapter (U, V), s = 1.
        let base = Base { x: &x, w0: &w0, bias: None };
        let target = forward(shape, &base, &Adapter { a: &v, b: &u, scale: 1.0 }, None, Precision::Exact).unwrap().y;
        Regression { shape, x, w0, target }
    }

    /// Loss and `(dA, dB)` at `(A, B)` with scale `s`.
    fn loss_and_grads(&self, a: &[f64], b: &[f64], s: f64) -> (f64, Vec<f64>, Vec<f64>) {
        let base = Base { x: &self.x, w0: &self.w0, bias: None };
        let adapter = Adapter { a, b, scale: s };
        let out = forward(self.shape, &base, &adapter, None, Precision::Exact).unwrap();
        let count = (self.shape.m * self.shape.n) as f64;
        let residual: Vec<f64> = out.y.iter().zip(&self.target).map(|(y, t)| y - t).collect();
        let loss = residual.iter().map(|e| e * e).sum::<f64>() / (2.0 * count);
        let dy: Vec<f64> = residual.iter().map(|e| e / count).collect();
        let grads = backward(self.shape, &base, &adapter, None, &dy, &out.p, Precision::Exact).unwrap();
        (loss, grads.da, grads.db)
    }

    fn init(&self, scheme: InitScheme) -> (Vec<f64>, Vec<f64>) {
        init_adapter::<f64>(scheme, RANK, self.shape.k, self.shape.n, 77, 0).unwrap()
    }
}

enum Optimizer {
    Sgd { lr: f64 },
    Adam { lr: f64, eps: f64 },
}

/// Loss at every step of training `(A, B)` with `s = alpha / r`.
fn trajectory(problem: &Regression, alpha: f64, optimizer: &Optimizer, mut a: Vec<f64>, mut b: Vec<f64>) -> Vec<f64> {
    let s = alpha / RANK as f64;
    let mut losses = Vec::with_capacity(STEPS);
    let mut sgd = None;
    let mut adam = None;
    match optimizer {
        Optimizer::Sgd { lr } => sgd = Some((Sgd::new(*lr), Sgd::new(*lr))),
        Optimizer::Adam { lr, eps } => {
            let make = || AdamW::new(*lr, 0.9, 0.999, *eps, 0.0).unwrap();
            adam = Some((make(), make()));
        }
    }
    for _ in 0..STEPS {
        let (loss, da, db) = problem.loss_and_grads(&a, &b, s);
        losses.push(loss);
        if let Some((opt_a, opt_b)) = sgd.as_mut() {
            opt_a.step(&mut a, &da).unwrap();
            opt_b.step(&mut b, &db).unwrap();
        }
        if let Some((opt_a, opt_b)) = adam.as_mut() {
            opt_a.step(&mut a, &da).unwrap();
            opt_b.step(&mut b, &db).unwrap();
        }
    }
    losses
}

fn scaled(v: &[f64], factor: f64) -> Vec<f64> {
    v.iter().map(|x| x * factor).collect()
}

/// The largest relative difference between two loss curves.
fn max_relative_gap(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / x.abs().max(y.abs())).fold(0.0, f64::max)
}

#[test]
fn step_zero_gradients_show_the_init_asymmetry() {
    let problem = Regression::new();
    let s = 8.0 / RANK as f64;
    for scheme in [InitScheme::PeftDefault, InitScheme::Gaussian] {
        let (a, b) = problem.init(scheme);
        let (_, da, db) = problem.loss_and_grads(&a, &b, s);
        assert!(da.iter().all(|&g| g == 0.0), "{scheme:?}: dA must be exactly 0 when B = 0");
        assert!(db.iter().any(|&g| g != 0.0), "{scheme:?}: dB must move first");
    }
    let (a, b) = problem.init(InitScheme::Reversed);
    let (_, da, db) = problem.loss_and_grads(&a, &b, s);
    assert!(db.iter().all(|&g| g == 0.0), "Init[B]: dB must be exactly 0 when A = 0");
    assert!(da.iter().any(|&g| g != 0.0), "Init[B]: dA must move first");
}

#[test]
fn both_zero_never_leaves_zero() {
    let problem = Regression::new();
    let (k, n) = (problem.shape.k, problem.shape.n);
    let (mut a, mut b) = (vec![0.0; RANK * k], vec![0.0; n * RANK]);
    let (mut opt_a, mut opt_b) = (Sgd::new(0.5), Sgd::new(0.5));
    let (initial_loss, _, _) = problem.loss_and_grads(&a, &b, 4.0);
    for step in 0..20 {
        let (loss, da, db) = problem.loss_and_grads(&a, &b, 4.0);
        assert_eq!(loss, initial_loss, "step {step}: the loss must not move");
        assert!(da.iter().chain(&db).all(|&g| g == 0.0), "step {step}: no gradient reaches A or B");
        opt_a.step(&mut a, &da).unwrap();
        opt_b.step(&mut b, &db).unwrap();
    }
    assert!(a.iter().chain(&b).all(|&w| w == 0.0));
}

#[test]
fn sgd_alpha_times_k_lr_over_k_init_over_sqrt_k_is_the_same_trajectory() {
    let problem = Regression::new();
    let (a, b) = problem.init(InitScheme::PeftDefault);
    let (alpha, lr) = (4.0, 0.5);
    let reference = trajectory(&problem, alpha, &Optimizer::Sgd { lr }, a.clone(), b.clone());
    assert!(reference[STEPS - 1] < 0.8 * reference[0], "training must make progress: {reference:?}");
    for k in [4.0f64, 0.25] {
        let root = k.sqrt();
        let substituted = trajectory(
            &problem,
            alpha * k,
            &Optimizer::Sgd { lr: lr / k },
            scaled(&a, 1.0 / root),
            scaled(&b, 1.0 / root),
        );
        let gap = max_relative_gap(&reference, &substituted);
        assert!(gap <= 1e-12, "k = {k}: relative loss gap {gap:e}");
    }
    // The substitution is what makes it a no-op: α·k alone changes the trajectory.
    let alpha_only = trajectory(&problem, alpha * 4.0, &Optimizer::Sgd { lr }, a, b);
    assert!(max_relative_gap(&reference, &alpha_only) > 1e-3);
}

#[test]
fn adam_alpha_times_k_lr_over_sqrt_k_init_over_sqrt_k_is_the_same_trajectory() {
    let problem = Regression::new();
    let (a, b) = problem.init(InitScheme::PeftDefault);
    let (alpha, lr, eps) = (4.0, 0.02, 1e-8);
    let reference = trajectory(&problem, alpha, &Optimizer::Adam { lr, eps }, a.clone(), b.clone());
    assert!(reference[STEPS - 1] < 0.8 * reference[0], "training must make progress: {reference:?}");
    for k in [4.0f64, 0.25] {
        let root = k.sqrt();
        let (a_k, b_k) = (scaled(&a, 1.0 / root), scaled(&b, 1.0 / root));
        // ε scaled with the gradients (by √k): exact up to rounding.
        let exact_eps = Optimizer::Adam { lr: lr / root, eps: eps * root };
        let gap = max_relative_gap(&reference, &trajectory(&problem, alpha * k, &exact_eps, a_k.clone(), b_k.clone()));
        assert!(gap <= 1e-12, "k = {k}, ε·√k: relative loss gap {gap:e}");
        // A fixed tiny ε: ε only matters against √v̂, so the curves still agree closely.
        let tiny = 1e-12;
        let fixed_reference = trajectory(&problem, alpha, &Optimizer::Adam { lr, eps: tiny }, a.clone(), b.clone());
        let fixed = Optimizer::Adam { lr: lr / root, eps: tiny };
        let gap = max_relative_gap(&fixed_reference, &trajectory(&problem, alpha * k, &fixed, a_k, b_k));
        assert!(gap <= 1e-8, "k = {k}, fixed ε: relative loss gap {gap:e}");
    }
    // Scaling the learning rate by 1/k (the SGD rule) is not the Adam rule.
    let root = 2.0;
    let sgd_rule = Optimizer::Adam { lr: lr / 4.0, eps: eps * root };
    let wrong = trajectory(&problem, alpha * 4.0, &sgd_rule, scaled(&a, 1.0 / root), scaled(&b, 1.0 / root));
    assert!(max_relative_gap(&reference, &wrong) > 1e-3);
}

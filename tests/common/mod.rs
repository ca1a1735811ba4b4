//! Helpers shared by the crate's integration tests: seeded random tensors and
//! the tolerance assertion of docs/contract.md.
//!
//! Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use fused_lora::reference::RefElem;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[allow(unused_imports)] // each test binary uses a subset
pub use fused_lora::reference::tolerance::{assert_close, assert_close_2d};

/// A deterministic generator for test data.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `len` values uniform on `[-1, 1)`, stored in `E` (so they are exact `E` values).
pub fn random_tensor<E: RefElem>(rng: &mut ChaCha8Rng, len: usize) -> Vec<E> {
    (0..len).map(|_| E::from_f64(rng.random_range(-1.0..1.0))).collect()
}

/// `len` values uniform on `[-scale, scale)` as f64.
pub fn random_f64(rng: &mut ChaCha8Rng, len: usize, scale: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

/// `Σ dY ⊙ Y`, the scalar loss whose gradients the backward pass computes.
pub fn weighted_sum(dy: &[f64], y: &[f64]) -> f64 {
    dy.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// Central finite difference of `loss` in coordinate `i` of `params`.
pub fn central_difference(params: &[f64], i: usize, step: f64, loss: impl Fn(&[f64]) -> f64) -> f64 {
    let mut plus = params.to_vec();
    let mut minus = params.to_vec();
    plus[i] += step;
    minus[i] -= step;
    (loss(&plus) - loss(&minus)) / (2.0 * step)
}

/// Asserts `|got − expected| ≤ tol·max(1, |expected|)` element-wise, naming the first bad index.
#[track_caller]
pub fn assert_rel_close(what: &str, got: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let ok = (g - e).abs() <= tol * e.abs().max(1.0);
        assert!(ok, "{what}[{i}]: got {g:e}, expected {e:e} (tol {tol:e})");
    }
}

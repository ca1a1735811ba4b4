//! A synthetic regression task for training experiments with the kernels
//! (the main example, and the docs/theory.md identities in the tests): inputs X
//! `[m, k]` and a frozen base W0 `[n, k]` drawn with Philox, and the targets
//! of a hidden low-rank update U·V (U `[n, h]`, V `[h, k]`) that an adapter
//! can learn: `target = X·(W0 + U·V)ᵀ`, under a mean-squared-error loss.

use super::philox::uniform_symmetric;

/// The problem's data, on the host, as stored (already rounded by the
/// storage the caller chose).
#[derive(Clone, Debug)]
pub struct SyntheticTask {
    /// Rows M.
    pub m: usize,
    /// Input features K.
    pub k: usize,
    /// Output features N.
    pub n: usize,
    /// X `[m, k]`, uniform in (−1, 1).
    pub x: Vec<f32>,
    /// W0 `[n, k]`, uniform in (−w0_bound, w0_bound).
    pub w0: Vec<f32>,
    /// `X·(W0 + U·V)ᵀ` `[m, n]` from the stored X and W0, summed in f64.
    pub target: Vec<f32>,
}

impl SyntheticTask {
    /// Draws the task from Philox stream `seed` (offsets 0 to 3: X, W0, U,
    /// V; U and V uniform in (−0.5, 0.5)). `stored` is the rounding of the
    /// storage X and W0 live in (the identity for f32, a round trip for
    /// bf16): the targets are computed from the stored values.
    pub fn new(
        m: usize,
        k: usize,
        n: usize,
        hidden_rank: usize,
        seed: u64,
        w0_bound: f32,
        stored: impl Fn(f32) -> f32,
    ) -> Self {
        let draw = |len: usize, bound: f32, offset: u64| -> Vec<f32> {
            (0..len as u64).map(|i| uniform_symmetric(seed, offset, i, bound)).collect()
        };
        let x: Vec<f32> = draw(m * k, 1.0, 0).into_iter().map(&stored).collect();
        let w0: Vec<f32> = draw(n * k, w0_bound, 1).into_iter().map(&stored).collect();
        let h = hidden_rank;
        let (u, v) = (draw(n * h, 0.5, 2), draw(h * k, 0.5, 3));
        let target = (0..m * n)
            .map(|at| {
                let (row, col) = (at / n, at % n);
                (0..k)
                    .map(|kk| {
                        let delta: f64 = (0..h).map(|j| u[col * h + j] as f64 * v[j * k + kk] as f64).sum();
                        x[row * k + kk] as f64 * (w0[col * k + kk] as f64 + delta)
                    })
                    .sum::<f64>() as f32
            })
            .collect();
        SyntheticTask { m, k, n, x, w0, target }
    }

    /// The mean squared error of outputs `y` `[m, n]` against the targets,
    /// and its gradient dY = 2·(y − target)/(m·n), in f32.
    pub fn mse(&self, y: &[f32]) -> (f32, Vec<f32>) {
        let count = (self.m * self.n) as f32;
        let residual: Vec<f32> = y.iter().zip(&self.target).map(|(y, t)| y - t).collect();
        let loss = residual.iter().map(|d| d * d).sum::<f32>() / count;
        (loss, residual.iter().map(|d| 2.0 * d / count).collect())
    }
}

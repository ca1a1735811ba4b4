//! Optimizers in f64 on master weights (f32, or f64 for exact algebra), with
//! PyTorch's semantics, so fused optimizer kernels and the docs/theory.md checks
//! have one definition to follow.

use crate::error::{LoraError, Result};

/// A master-weight element: read as f64, the update computed in f64, stored
/// back rounded once.
pub trait MasterWeight: Copy {
    /// The value as an f64.
    fn to_f64(self) -> f64;
    /// `x` rounded once to this type.
    fn from_f64(x: f64) -> Self;
}

impl MasterWeight for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl MasterWeight for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

fn check_lengths(params: usize, grads: usize) -> Result<()> {
    if params == grads {
        Ok(())
    } else {
        Err(LoraError::ShapeMismatch { what: "grads", expected: vec![params], got: vec![grads] })
    }
}

/// `torch.optim.SGD`: with `g ← g + wd·w` (coupled weight decay), the
/// momentum buffer `b ← g` on the first step and `b ← μ·b + (1 − dampening)·g`
/// after, `g ← g + μ·b` (Nesterov) or `g ← b`, then `w ← w − lr·g`.
/// `momentum = 0` is plain SGD (no buffer).
#[derive(Clone, Debug)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: none).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// Weight decay (coupled).
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    buffer: Option<Vec<f64>>,
}

impl Sgd {
    /// Plain SGD.
    pub fn new(lr: f64) -> Self {
        Sgd { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false, buffer: None }
    }

    /// SGD with momentum `momentum` (no dampening, no weight decay, not Nesterov).
    pub fn with_momentum(lr: f64, momentum: f64) -> Self {
        Sgd { momentum, ..Sgd::new(lr) }
    }

    /// One step over `params` with gradients `grads`.
    ///
    /// # Errors
    /// [`LoraError::ShapeMismatch`] if the lengths differ (or differ from the
    /// first step's, once a momentum buffer exists).
    pub fn step<W: MasterWeight>(&mut self, params: &mut [W], grads: &[f64]) -> Result<()> {
        check_lengths(params.len(), grads.len())?;
        if let Some(buffer) = &self.buffer {
            check_lengths(buffer.len(), grads.len())?;
        }
        // PyTorch creates the buffer on the first step, equal to the (decayed) gradient.
        let first_step = self.buffer.is_none();
        let mut buffer = self.buffer.take().unwrap_or_else(|| vec![0.0; grads.len()]);
        for ((w, &grad), b) in params.iter_mut().zip(grads).zip(buffer.iter_mut()) {
            let weight = w.to_f64();
            let mut g = grad + self.weight_decay * weight;
            if self.momentum != 0.0 {
                *b = if first_step { g } else { self.momentum * *b + (1.0 - self.dampening) * g };
                g = if self.nesterov { g + self.momentum * *b } else { *b };
            }
            *w = W::from_f64(weight - self.lr * g);
        }
        if self.momentum != 0.0 {
            self.buffer = Some(buffer);
        }
        Ok(())
    }
}

/// `torch.optim.AdamW`: `t ← t + 1`; `w ← w·(1 − lr·wd)`;
/// `m ← β1·m + (1 − β1)·g`; `v ← β2·v + (1 − β2)·g²`;
/// `w ← w − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)`.
#[derive(Clone, Debug)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f64,
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    step: u32,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl AdamW {
    /// # Errors
    /// [`LoraError::InvalidArgument`] for betas outside `[0, 1)` or a negative ε.
    pub fn new(lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Result<Self> {
        for (what, beta) in [("beta1", beta1), ("beta2", beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(LoraError::InvalidArgument { what, value: beta.to_string(), reason: "must be in [0, 1)" });
            }
        }
        if eps.is_nan() || eps < 0.0 {
            return Err(LoraError::InvalidArgument {
                what: "eps",
                value: eps.to_string(),
                reason: "must be non-negative",
            });
        }
        Ok(AdamW { lr, beta1, beta2, eps, weight_decay, step: 0, m: Vec::new(), v: Vec::new() })
    }

    /// PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8, weight decay 0.01.
    pub fn with_defaults(lr: f64) -> Self {
        AdamW { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, step: 0, m: Vec::new(), v: Vec::new() }
    }

    /// One step over `params` with gradients `grads`.
    ///
    /// # Errors
    /// [`LoraError::ShapeMismatch`] if the lengths differ (or differ from the
    /// first step's).
    pub fn step<W: MasterWeight>(&mut self, params: &mut [W], grads: &[f64]) -> Result<()> {
        check_lengths(params.len(), grads.len())?;
        if self.step == 0 {
            self.m = vec![0.0; grads.len()];
            self.v = vec![0.0; grads.len()];
        }
        check_lengths(self.m.len(), grads.len())?;
        self.step += 1;
        let t = self.step as i32;
        let bias_correction1 = 1.0 - self.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let step_size = self.lr / bias_correction1;
        for (i, (w, &g)) in params.iter_mut().zip(grads).enumerate() {
            let mut weight = w.to_f64();
            weight *= 1.0 - self.lr * self.weight_decay;
            self.m[i] = self.beta1 * self.m[i] + (1.0 - self.beta1) * g;
            self.v[i] = self.beta2 * self.v[i] + (1.0 - self.beta2) * g * g;
            let denom = self.v[i].sqrt() / bias_correction2_sqrt + self.eps;
            weight -= step_size * self.m[i] / denom;
            *w = W::from_f64(weight);
        }
        Ok(())
    }
}

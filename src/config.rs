//! Adapter configuration: rank, α and the scaling rule that turn into the
//! scale `s` the kernels multiply the adapter path by.

use crate::error::{LoraError, Result};

/// How `α` and the rank `r` give the scale `s` (docs/contract.md).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scaling {
    /// `s = α / r` — the LoRA paper and PEFT's default.
    AlphaOverRank,
    /// `s = α / √r` — rsLoRA (Kalajdzievski 2023); keeps learning stable as r grows.
    AlphaOverSqrtRank,
    /// `s` given directly; α is ignored.
    Fixed(f32),
}

/// One adapter's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdapterConfig {
    rank: usize,
    alpha: f32,
    scaling: Scaling,
}

impl AdapterConfig {
    /// # Errors
    /// [`LoraError::InvalidArgument`] if `rank` is 0 or α (or the fixed scale)
    /// is not finite.
    pub fn new(rank: usize, alpha: f32, scaling: Scaling) -> Result<Self> {
        if rank == 0 {
            return Err(LoraError::InvalidArgument { what: "rank", value: "0".into(), reason: "must be at least 1" });
        }
        if !alpha.is_finite() {
            return Err(LoraError::InvalidArgument {
                what: "alpha",
                value: alpha.to_string(),
                reason: "must be finite",
            });
        }
        if let Scaling::Fixed(s) = scaling {
            if !s.is_finite() {
                return Err(LoraError::InvalidArgument {
                    what: "scale",
                    value: s.to_string(),
                    reason: "must be finite",
                });
            }
        }
        Ok(AdapterConfig { rank, alpha, scaling })
    }

    /// The rank r.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// α.
    pub fn alpha(&self) -> f32 {
        self.alpha
    }

    /// How α and r give the scale.
    pub fn scaling(&self) -> Scaling {
        self.scaling
    }

    /// The scale `s` the kernels apply: computed in f64, rounded once to f32.
    pub fn scale(&self) -> f32 {
        let r = self.rank as f64;
        match self.scaling {
            Scaling::AlphaOverRank => (self.alpha as f64 / r) as f32,
            Scaling::AlphaOverSqrtRank => (self.alpha as f64 / r.sqrt()) as f32,
            Scaling::Fixed(s) => s,
        }
    }
}

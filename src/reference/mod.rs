//! The naive CPU reference: the truth every kernel is tested against.
//!
//! Obviously correct beats fast here: plain loops over row-major slices, in
//! docs/contract.md's names and layouts (X `[M, K]`, W0 `[N, K]`, A `[r, K]`, B `[N, r]`).
//!
//! # Two references per operation
//!
//! Every operation takes a [`Precision`]:
//!
//! - [`Precision::Exact`]: f64 accumulation; the intermediates a kernel stores
//!   in the storage type `T` (P, G, the dropped-out X̃) are rounded to `T` at
//!   the same points; the final outputs are returned **unrounded** as f64. This
//!   is the value a kernel approximates.
//! - [`Precision::Naive`]: what a straightforward same-precision CPU loop gives:
//!   f32 accumulation in plain loop order, every stored value rounded to `T`.
//!   Its distance from `Exact` measures how hard the problem is numerically;
//!   [`tolerance`] turns it into the bound a kernel must meet.
//!
//! Both return `Vec<f64>`; in `Naive` mode every value is exactly a `T`.
//!
//! # Where `T`-rounding happens (the kernels round at the same points)
//!
//! | operation | stored intermediates (rounded to `T`) | final outputs |
//! | --- | --- | --- |
//! | [`shrink`] | X̃ | `P = scale·X̃·Aᵀ` |
//! | [`expand`] | — | `Y' = Y + scale·P·Bᵀ` |
//! | [`forward`], [`forward_multi`] | X̃, `P = X̃·Aᵀ` (unscaled, as PEFT keeps it) | `Y = X·W0ᵀ + bias + s·P·Bᵀ` |
//! | [`backward`], [`backward_multi`] | X̃, `G = dY·B` | `dB = s·dYᵀ·P`, `dA = s·Gᵀ·X̃`, `dX = dY·W0 + (s·G·A)⊙mask/(1−p)` |
//! | [`merge`] | — | `W ± s·B·A` |
//!
//! X̃ is `round_T(keep ? (x as f32)·inv_keep : 0)` with `inv_keep = 1/(1 − p)`
//! in f32 ([`Dropout`]); with no dropout (or `p = 0`) X̃ is X itself. In the
//! multi-adapter forms a row with index −1 has P and G rows of zero and only
//! the base term; adapter `l` reads only the first `ranks[l]` rows of `A_l`
//! and columns of `B_l` (the padding is never touched); `dA_l`, `dB_l` sum
//! over the rows with index `l`, exact zeros when there are none.
//!
//! # Element types
//!
//! The storage type is any [`RefElem`]: the crate's kernel types (`f32`,
//! `f16`, `bf16`) and `f64`, for which every rounding is the identity, so tests
//! can check the algebra (finite differences, optimizer trajectories) with no
//! rounding at all.
//!
//! # Errors
//!
//! Every entry point validates its inputs and returns [`LoraError`] on bad
//! shapes ([`LoraError::BufferTooSmall`] for a short buffer,
//! [`LoraError::ShapeMismatch`] for a longer one), ranks, probabilities or
//! adapter indices; none panics on bad input.

mod backward;
mod elem;
mod forward;
mod init;
mod merge;
mod optim;
pub mod philox;
pub mod synthetic;
pub mod tolerance;

pub use backward::{backward, backward_multi, Gradients, MultiGradients};
pub use elem::RefElem;
pub use forward::{expand, forward, forward_multi, shrink, Adapter, Base, ForwardOutput, MultiAdapters};
pub use init::{init_adapter, init_matrix};
pub use merge::{merge, merge_in_place, MergeDirection, MergeLayer, MergeLayerMut};
pub use optim::{AdamW, MasterWeight, Sgd};

use crate::error::{LoraError, Result};

/// Which of the two references to compute (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f64 accumulation, intermediates rounded to `T`, outputs unrounded.
    Exact,
    /// f32 accumulation in loop order, every stored value rounded to `T`.
    Naive,
}

/// PEFT's `lora_dropout` on the adapter input, with the mask drawn from
/// Philox keyed by `(seed, offset, m·K + k)` (see [`philox::dropout_keep`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Drop probability, in `[0, 1)`; `0` means no mask at all.
    pub p: f32,
    /// The Philox key (with `offset`) the mask is drawn from.
    pub seed: u64,
    /// The Philox stream offset.
    pub offset: u64,
}

impl Dropout {
    /// # Errors
    /// [`LoraError::InvalidArgument`] unless `0 ≤ p < 1`.
    pub fn new(p: f32, seed: u64, offset: u64) -> Result<Self> {
        let dropout = Dropout { p, seed, offset };
        dropout.validate()?;
        Ok(dropout)
    }

    fn validate(&self) -> Result<()> {
        if (0.0..1.0).contains(&self.p) {
            Ok(())
        } else {
            Err(LoraError::InvalidArgument {
                what: "dropout p",
                value: self.p.to_string(),
                reason: "must be in [0, 1)",
            })
        }
    }

    /// `1 / (1 − p)` computed in f32, as the kernels do.
    pub fn inv_keep(&self) -> f32 {
        1.0f32 / (1.0f32 - self.p)
    }

    /// Whether element `(m, k)` of an `[M, K]` input survives.
    pub fn keep(&self, m: usize, k: usize, k_dim: usize) -> bool {
        philox::dropout_keep(self.seed, self.offset, (m * k_dim + k) as u64, self.p)
    }
}

/// A validated optional dropout: `None` and `p == 0` both mean "no mask".
/// The kernels' wrappers validate with it too (`crate::dropout`).
pub(crate) fn active_dropout(dropout: Option<&Dropout>) -> Result<Option<Dropout>> {
    match dropout {
        None => Ok(None),
        Some(d) => {
            d.validate()?;
            Ok((d.p > 0.0).then_some(*d))
        }
    }
}

/// Checks that buffer `what` holds exactly the `shape.iter().product()`
/// elements its shape needs.
fn check_len(what: &'static str, len: usize, shape: &[usize]) -> Result<()> {
    let needed = element_count(what, shape)?;
    if len < needed {
        Err(LoraError::BufferTooSmall { what, needed, len })
    } else if len > needed {
        Err(LoraError::ShapeMismatch { what, expected: shape.to_vec(), got: vec![len] })
    } else {
        Ok(())
    }
}

/// The number of elements of `shape`, or an error if it overflows `usize`.
fn element_count(what: &'static str, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| LoraError::InvalidArgument {
        what,
        value: format!("{shape:?}"),
        reason: "element count overflows usize",
    })
}

/// The dropped-out adapter input X̃ `[M, K]`, as f64 values of `T`:
/// `round_T(keep ? x·inv_keep : 0)` (the product taken as [`RefElem::dropout_scaled`] says).
fn dropped_input<E: RefElem>(x: &[E], m_dim: usize, k_dim: usize, dropout: Option<&Dropout>) -> Vec<f64> {
    match dropout {
        None => x.iter().map(|v| v.to_f64()).collect(),
        Some(d) => {
            let inv_keep = d.inv_keep();
            let mut out = Vec::with_capacity(m_dim * k_dim);
            for m in 0..m_dim {
                for k in 0..k_dim {
                    let v = x[m * k_dim + k];
                    out.push(if d.keep(m, k, k_dim) { E::dropout_scaled(v, d.p, inv_keep) } else { 0.0 });
                }
            }
            out
        }
    }
}

/// A dot product in the requested precision: f64 sum for `Exact`, f32 sum in
/// loop order (each product rounded to f32, then added) for `Naive` on the
/// kernel types; `f64` elements always sum in f64.
fn dot<E: RefElem>(precision: Precision, terms: impl Iterator<Item = (f64, f64)>) -> f64 {
    if precision == Precision::Naive && E::NAIVE_IN_F32 {
        let mut acc = 0.0f32;
        for (a, b) in terms {
            acc += a as f32 * b as f32;
        }
        acc as f64
    } else {
        terms.fold(0.0, |acc, (a, b)| acc + a * b)
    }
}

/// How a final output leaves the reference: unrounded in `Exact` mode,
/// rounded to `T` (through an f32 value) in `Naive` mode.
fn finish<E: RefElem>(precision: Precision, value: f64) -> f64 {
    match precision {
        Precision::Exact => value,
        Precision::Naive => E::round_f64(if E::NAIVE_IN_F32 { value as f32 as f64 } else { value }),
    }
}

/// Combines the parts of an output in the working precision: f64 for
/// `Exact`, f32 for `Naive` (so `a + s·b` is rounded as an f32 kernel would).
fn combine<E: RefElem>(precision: Precision, value: impl Fn() -> f64, value_f32: impl Fn() -> f32) -> f64 {
    if precision == Precision::Naive && E::NAIVE_IN_F32 {
        value_f32() as f64
    } else {
        value()
    }
}

/// Converts reference values into storage values (round to nearest even).
pub fn to_elems<E: RefElem>(values: &[f64]) -> Vec<E> {
    values.iter().map(|&v| E::from_f64(v)).collect()
}

/// Widens storage values to f64 (exact).
pub fn to_f64s<E: RefElem>(values: &[E]) -> Vec<f64> {
    values.iter().map(|v| v.to_f64()).collect()
}

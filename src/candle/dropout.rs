//! [`super::LoraLinear`]'s dropout: the training-mode state (p, seed and the
//! count of masks drawn so far) and, for the unfused path, the dropped input
//! built with the crate's Philox mask.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Result, Tensor};

use super::bad;
use crate::reference::Dropout;

/// Dropout p and seed, and the Philox offset of the next mask: each training
/// forward draws a fresh mask (offset 0, 1, 2, ...), and its backward
/// regenerates that same mask from the [`Dropout`] the forward captured.
#[derive(Clone, Debug)]
pub(super) struct DropoutState {
    p: f32,
    seed: u64,
    /// Shared by clones of the layer, so they never draw the same mask twice.
    next_offset: Arc<AtomicU64>,
}

impl DropoutState {
    /// `None` for `p = 0` (no mask at all).
    pub(super) fn new(p: f32, seed: u64) -> Result<Option<Self>> {
        Dropout::new(p, seed, 0).map_err(|e| bad("dropout", e))?;
        Ok((p > 0.0).then(|| DropoutState { p, seed, next_offset: Arc::new(AtomicU64::new(0)) }))
    }

    /// The mask the next [`DropoutState::take`] returns.
    pub(super) fn peek(&self) -> Dropout {
        Dropout { p: self.p, seed: self.seed, offset: self.next_offset.load(Ordering::Relaxed) }
    }

    /// The next mask, advancing the offset.
    pub(super) fn take(&self) -> Dropout {
        Dropout { p: self.p, seed: self.seed, offset: self.next_offset.fetch_add(1, Ordering::Relaxed) }
    }
}

/// A dropout that changes something: validated, `None` for none or `p = 0`.
pub(super) fn active(dropout: Option<&Dropout>) -> Result<Option<Dropout>> {
    match dropout {
        Some(d) => Dropout::new(d.p, d.seed, d.offset).map(|d| (d.p > 0.0).then_some(d)).map_err(|e| bad("dropout", e)),
        None => Ok(None),
    }
}

/// X̃ for X `[m, k]`: `round_T(x·1/(1−p))` where `dropout` keeps element
/// `(row, col)` ([`Dropout::keep`], the kernels' Philox mask), else 0. The
/// product is taken in f32 and rounded once to X's dtype, as the kernels do;
/// differentiable (its gradient is the mask over `1 − p`).
pub(super) fn dropped_input(x: &Tensor, dropout: &Dropout) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    let inv_keep = dropout.inv_keep();
    let mask: Vec<f32> = (0..m * k).map(|i| if dropout.keep(i / k, i % k, k) { inv_keep } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, (m, k), x.device())?;
    (x.to_dtype(DType::F32)? * mask)?.to_dtype(x.dtype())
}

//! Dropout on the adapter input, as the kernels receive it: one rule for
//! which [`Dropout`] values are accepted, and the parameter fields that carry
//! an accepted one to the forward shrink (the backward kernels' fields are
//! filled from the same validated value).

use crate::error::Result;
use crate::params::{LoraBwdParams, LoraGemmParams};
pub(crate) use crate::reference::active_dropout;
use crate::reference::Dropout;

/// The dropout fields the forward's and the backward's parameter structs
/// both carry (same names, same meaning): the one place that fills them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct MaskFields {
    pub dropout: i32,
    pub dropout_p: f32,
    pub inv_keep: f32,
    pub seed: u64,
    pub offset: u64,
}

impl MaskFields {
    /// The fields for an optional dropout, validated ([`active_dropout`]):
    /// all clear (no mask) for `None` or `p == 0`.
    ///
    /// # Errors
    /// [`crate::LoraError::InvalidArgument`] for `p` outside `[0, 1)` (NaN included).
    pub(crate) fn new(dropout: Option<&Dropout>) -> Result<Self> {
        Ok(match active_dropout(dropout)? {
            None => MaskFields::default(),
            Some(d) => {
                MaskFields { dropout: 1, dropout_p: d.p, inv_keep: d.inv_keep(), seed: d.seed, offset: d.offset }
            }
        })
    }

    /// The fields a backward launch carries.
    pub(crate) fn of_backward(p: &LoraBwdParams) -> Self {
        MaskFields { dropout: p.dropout, dropout_p: p.dropout_p, inv_keep: p.inv_keep, seed: p.seed, offset: p.offset }
    }

    /// A [`LoraGemmParams`] with only these fields set, to complete a SHRINK
    /// launch's parameters (`..fields.gemm()`): the shrink then reads X̃
    /// instead of X as its lhs.
    pub(crate) fn gemm(self) -> LoraGemmParams {
        let MaskFields { dropout, dropout_p, inv_keep, seed, offset } = self;
        LoraGemmParams { dropout, dropout_p, inv_keep, seed, offset, ..Default::default() }
    }

    /// A [`LoraBwdParams`] with only these fields set.
    pub(crate) fn backward(self) -> LoraBwdParams {
        let MaskFields { dropout, dropout_p, inv_keep, seed, offset } = self;
        LoraBwdParams { dropout, dropout_p, inv_keep, seed, offset, ..Default::default() }
    }
}

/// [`MaskFields::new`] as a [`LoraGemmParams`] (`..shrink_dropout(dropout)?`).
///
/// # Errors
/// As [`MaskFields::new`].
pub(crate) fn shrink_dropout(dropout: Option<&Dropout>) -> Result<LoraGemmParams> {
    Ok(MaskFields::new(dropout)?.gemm())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LoraError;

    #[test]
    fn no_dropout_and_zero_p_leave_the_fields_clear() {
        for dropout in [None, Some(Dropout { p: 0.0, seed: 7, offset: 9 })] {
            let params = shrink_dropout(dropout.as_ref()).expect("accepted");
            assert_eq!((params.dropout, params.seed, params.offset), (0, 0, 0));
        }
    }

    #[test]
    fn an_active_dropout_fills_every_field() {
        let d = Dropout { p: 0.25, seed: 0x1234_5678_9abc_def0, offset: 42 };
        let params = shrink_dropout(Some(&d)).expect("accepted");
        assert_eq!(params.dropout, 1);
        assert_eq!(params.dropout_p, 0.25);
        assert_eq!(params.inv_keep, 1.0 / 0.75);
        assert_eq!((params.seed, params.offset), (d.seed, d.offset));
    }

    #[test]
    fn backward_fields_carry_the_same_mask_to_the_shrink() {
        let d = Dropout { p: 0.5, seed: 99, offset: 1 << 40 };
        let fields = MaskFields::new(Some(&d)).expect("accepted");
        assert_eq!(MaskFields::of_backward(&fields.backward()), fields);
        assert_eq!(fields.gemm().inv_keep, 2.0);
    }

    #[test]
    fn p_outside_the_unit_interval_is_rejected() {
        for p in [1.0, 1.5, -0.1, f32::NAN] {
            let err = active_dropout(Some(&Dropout { p, seed: 1, offset: 0 })).expect_err("bad p accepted");
            assert!(matches!(err, LoraError::InvalidArgument { what: "dropout p", .. }), "{err:?}");
        }
    }
}

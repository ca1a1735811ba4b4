//! Dropout on the adapter input, as the kernels receive it: one rule for
//! which [`Dropout`] values are accepted, and the parameter fields that carry
//! an accepted one to the forward shrink (the backward kernels' fields are
//! filled from the same validated value).

use crate::error::Result;
use crate::params::LoraGemmParams;
use crate::reference::Dropout;

/// The dropout the kernels must apply: `None` when there is none or `p == 0`
/// (no mask at all, the kernels' plain path).
///
/// # Errors
/// [`crate::LoraError::InvalidArgument`] for `p` outside `[0, 1)` (NaN included).
pub(crate) fn active_dropout(dropout: Option<&Dropout>) -> Result<Option<Dropout>> {
    let Some(d) = dropout else { return Ok(None) };
    // `Dropout::new` holds the rule (0 ≤ p < 1), shared with the CPU reference.
    let d = Dropout::new(d.p, d.seed, d.offset)?;
    Ok((d.p > 0.0).then_some(d))
}

/// A [`LoraGemmParams`] with only the dropout fields set, to complete a
/// SHRINK launch's parameters (`..shrink_dropout(dropout)?`): the shrink then
/// reads X̃ instead of X as its lhs.
///
/// # Errors
/// As [`active_dropout`].
pub(crate) fn shrink_dropout(dropout: Option<&Dropout>) -> Result<LoraGemmParams> {
    Ok(match active_dropout(dropout)? {
        None => LoraGemmParams::default(),
        Some(d) => LoraGemmParams {
            dropout: 1,
            dropout_p: d.p,
            inv_keep: d.inv_keep(),
            seed: d.seed,
            offset: d.offset,
            ..Default::default()
        },
    })
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
    fn p_outside_the_unit_interval_is_rejected() {
        for p in [1.0, 1.5, -0.1, f32::NAN] {
            let err = active_dropout(Some(&Dropout { p, seed: 1, offset: 0 })).expect_err("bad p accepted");
            assert!(matches!(err, LoraError::InvalidArgument { what: "dropout p", .. }), "{err:?}");
        }
    }
}

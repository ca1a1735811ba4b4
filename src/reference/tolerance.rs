//! The test tolerance of docs/contract.md: a kernel's error against the exact
//! reference may be at most twice the error of a naive same-precision CPU
//! computation, plus a small absolute floor; NaN never passes.
//!
//! Per element `i`, with `u` the storage type's unit roundoff:
//!
//! ```text
//! |got_i − exact_i| ≤ 2·max(|naive_i − exact_i|, u·|exact_i|, max_j |naive_j − exact_j|) + floor
//! ```
//!
//! - `max_j |naive_j − exact_j|`: "the error of the naive computation" of
//!   docs/contract.md, measured as computations' errors are, over the whole tensor (max
//!   norm). A per-element reading is too strict: a valid f32 accumulation in
//!   another order than the naive loop's lands, on a few elements, at 2–3 ulp
//!   where the naive loop happened to be within one (seen: the merge kernel,
//!   bit-identical to its own f32 algorithm replayed on the CPU, failed a
//!   per-element rule on 1 element in 8 450);
//! - `|naive_i − exact_i|` and `u·|exact_i|` (one rounding of the result) keep
//!   the bound of an element at least its own naive error and its final rounding.
//!
//! A non-finite `got` (or reference) always fails, as does a length mismatch
//! (a missing element).

use super::RefElem;

/// The first element that breaks the bound.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// Linear index of the element.
    pub index: usize,
    /// `(row, col)` when the tensor was described as 2-D.
    pub position: Option<(usize, usize)>,
    /// The value compared.
    pub got: f64,
    /// The exact (f64) reference value.
    pub expected: f64,
    /// The naive same-precision computation's value.
    pub naive: f64,
    /// The bound `|got − expected|` had to stay within.
    pub bound: f64,
}

/// Why a comparison failed.
#[derive(Clone, Debug, PartialEq)]
pub enum CloseError {
    /// `got`, `exact` and `naive` do not have the same number of elements.
    Length {
        /// Elements compared.
        got: usize,
        /// Elements of the exact reference.
        exact: usize,
        /// Elements of the naive computation.
        naive: usize,
    },
    /// An element outside its bound, or not finite.
    Element(Mismatch),
}

impl std::fmt::Display for CloseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseError::Length { got, exact, naive } => {
                write!(f, "length mismatch: got {got} elements, exact reference {exact}, naive reference {naive}")
            }
            CloseError::Element(m) => {
                write!(f, "first bad element at index {}", m.index)?;
                if let Some((row, col)) = m.position {
                    write!(f, " (row {row}, col {col})")?;
                }
                write!(
                    f,
                    ": got {:e}, expected {:e}, |diff| {:e} > bound {:e} (naive {:e})",
                    m.got,
                    m.expected,
                    (m.got - m.expected).abs(),
                    m.bound,
                    m.naive
                )
            }
        }
    }
}

/// The per-element bounds of the module docs.
pub fn bounds(exact: &[f64], naive: &[f64], unit_roundoff: f64, floor: f64) -> Vec<f64> {
    let errors: Vec<f64> = exact.iter().zip(naive).map(|(e, n)| (n - e).abs()).collect();
    let naive_error = errors.iter().fold(0.0f64, |m, &e| m.max(e));
    exact.iter().zip(&errors).map(|(e, &err)| 2.0 * err.max(unit_roundoff * e.abs()).max(naive_error) + floor).collect()
}

/// Compares `got` against the references; `cols` (the row length of a 2-D
/// tensor) only shapes the report.
///
/// # Errors
/// The first element out of bounds or not finite, or a length mismatch.
pub fn check_close(
    got: &[f64],
    exact: &[f64],
    naive: &[f64],
    unit_roundoff: f64,
    floor: f64,
    cols: Option<usize>,
) -> Result<(), CloseError> {
    if got.len() != exact.len() || naive.len() != exact.len() {
        return Err(CloseError::Length { got: got.len(), exact: exact.len(), naive: naive.len() });
    }
    let bounds = bounds(exact, naive, unit_roundoff, floor);
    for (index, ((&g, &e), &bound)) in got.iter().zip(exact).zip(&bounds).enumerate() {
        // Written so that any NaN (in got, the reference or the bound) fails.
        let within = g.is_finite() && e.is_finite() && (g - e).abs() <= bound;
        if !within {
            let position = cols.filter(|&c| c > 0).map(|c| (index / c, index % c));
            return Err(CloseError::Element(Mismatch {
                index,
                position,
                got: g,
                expected: e,
                naive: naive[index],
                bound,
            }));
        }
    }
    Ok(())
}

/// Panics with a message naming `what` and the first bad element unless
/// `got` is within the tolerance for storage type `E`.
#[track_caller]
pub fn assert_close<E: RefElem>(what: &str, got: &[f64], exact: &[f64], naive: &[f64], floor: f64) {
    if let Err(e) = check_close(got, exact, naive, E::UNIT_ROUNDOFF, floor, None) {
        panic!("{what}: {e}");
    }
}

/// [`assert_close`] for a row-major 2-D tensor of `cols` columns: the report
/// gives the bad element's (row, col).
#[track_caller]
pub fn assert_close_2d<E: RefElem>(what: &str, cols: usize, got: &[f64], exact: &[f64], naive: &[f64], floor: f64) {
    if let Err(e) = check_close(got, exact, naive, E::UNIT_ROUNDOFF, floor, Some(cols)) {
        panic!("{what}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: f64 = 5.960_464_477_539_063e-8; // f32, 2^-24

    /// The next f64 towards +∞ (for the finite, non-zero values used here).
    fn next_up(x: f64) -> f64 {
        if x > 0.0 {
            f64::from_bits(x.to_bits() + 1)
        } else {
            f64::from_bits(x.to_bits() - 1)
        }
    }

    /// The largest f64 above `exact` still within `bound` of it.
    fn last_inside(exact: f64, bound: f64) -> f64 {
        let mut g = exact + bound;
        while g - exact > bound {
            g = f64::from_bits(if g > 0.0 { g.to_bits() - 1 } else { g.to_bits() + 1 });
        }
        g
    }

    #[test]
    fn the_last_value_inside_passes_one_ulp_beyond_fails() {
        let exact = [1.0, -3.0, 0.5];
        let naive = [1.0 + 4.0 * U, -3.0, 0.5];
        let bounds = bounds(&exact, &naive, U, 0.0);
        let inside: Vec<f64> = exact.iter().zip(&bounds).map(|(&e, &b)| last_inside(e, b)).collect();
        assert_eq!(check_close(&inside, &exact, &naive, U, 0.0, None), Ok(()));
        for i in 0..exact.len() {
            let mut beyond = inside.clone();
            beyond[i] = next_up(inside[i]);
            match check_close(&beyond, &exact, &naive, U, 0.0, Some(3)) {
                Err(CloseError::Element(m)) => {
                    assert_eq!(m.index, i);
                    assert_eq!(m.position, Some((0, i)));
                }
                other => panic!("element {i} one ulp beyond its bound gave {other:?}"),
            }
        }
    }

    #[test]
    fn a_lucky_naive_element_still_gets_one_rounding() {
        // Naive exact everywhere: the bound is 2·u·|exact| = one f32 ulp at 1.5.
        let exact = [1.5];
        let one_ulp = 1.5 + 2.0 * U;
        assert_eq!(check_close(&[one_ulp], &exact, &exact, U, 0.0, None), Ok(()));
        assert!(check_close(&[1.5 + 4.0 * U], &exact, &exact, U, 0.0, None).is_err());
    }

    #[test]
    fn nan_and_infinity_never_pass() {
        let exact = [1.0, 2.0];
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let got = [1.0, bad];
            let err = check_close(&got, &exact, &exact, U, 1e9, Some(1)).unwrap_err();
            match err {
                CloseError::Element(m) => assert_eq!((m.index, m.position), (1, Some((1, 0)))),
                other => panic!("{other:?}"),
            }
        }
        // A NaN reference fails too, rather than comparing false and slipping through.
        assert!(check_close(&[1.0], &[f64::NAN], &[1.0], U, 1.0, None).is_err());
    }

    #[test]
    fn a_missing_element_fails() {
        let exact = [1.0, 2.0, 3.0];
        assert_eq!(
            check_close(&[1.0, 2.0], &exact, &exact, U, 0.0, None),
            Err(CloseError::Length { got: 2, exact: 3, naive: 3 })
        );
    }

    #[test]
    fn the_floor_covers_values_near_zero() {
        assert!(check_close(&[1e-7], &[0.0], &[0.0], U, 0.0, None).is_err());
        assert_eq!(check_close(&[1e-7], &[0.0], &[0.0], U, 1e-6, None), Ok(()));
    }

    #[test]
    fn the_report_names_the_element() {
        let err = check_close(&[0.0, 0.0, 0.0, 7.0], &[0.0; 4], &[0.0; 4], U, 0.0, Some(2)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("index 3") && text.contains("row 1, col 1") && text.contains("got 7e0"), "{text}");
    }
}

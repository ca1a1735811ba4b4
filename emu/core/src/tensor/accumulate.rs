//! `D = A·B + C` rounded once to D's type (round to nearest even), computed
//! in plain f64 arithmetic wherever that is provably exact, and with the
//! exact integer dot product of `numerics` everywhere else.
//!
//! Why the f64 path is exact:
//! 1. A product of two inputs of at most 11 significant bits (f16, tf32;
//!    bf16 has 8) has at most 22 bits, so it is an f64 exactly — and far from
//!    f64's overflow and subnormal range (|product| ≥ 2^-272 for tf32).
//! 2. Each product is a multiple of 2^L and below 2^H in magnitude, with
//!    `H − L ≤ spread(A row) + spread(B col) + 2p` (p = input precision,
//!    spread = difference of the largest and smallest binade of the nonzero
//!    elements; see [`spread_budget`]). Every partial sum of the k products
//!    is then a multiple of 2^L below `k · 2^H`; when that is under 2^53 · 2^L
//!    it is an f64, so every addition is exact, in any order, and `P = Σ a·b`
//!    comes out exact. Fused multiply-adds give the same `P`: there is no
//!    rounding for them to skip.
//! 3. `P + C` is formed with Knuth's TwoSum, which gives the rounded sum `s`
//!    and its exact error `e`. Forcing the last bit of `s` to 1 when `e ≠ 0`
//!    ("rounding to odd") keeps enough information for one more rounding to
//!    any format at least two bits narrower to equal the correct rounding of
//!    `P + C` (Boldo & Melquiond, "Emulation of FMA and correctly rounded
//!    sums: proved algorithms using rounding to odd", IEEE TC 2008). So C
//!    needs no exponent condition at all.
//! 4. Signed zeros: the sum starts at −0, which leaves every addend's sign
//!    as it is, and IEEE addition gives −0 for an exact zero only when both
//!    addends are −0 — the same rule as the exact path (−0 only if every
//!    term, zero terms included, is negative).
//!
//! NaN or ±∞ anywhere in a row of A, a column of B or in C sends that output
//! to the exact path, as does a spread too wide for step 2.

use super::operands::Operands;
use crate::numerics::arith::dot_product;
use crate::numerics::format::{round_to_format, Decoded, Direction, FloatFormat};

/// Computes D and hands each row to `store_row(row, bits)` as D's raw bits
/// (`.f32`, or `.f16` in the low 16 bits). `precision` is the significant
/// bits of A and B's type.
/// With `FUSED` the products are added with fused multiply-adds: the same
/// values, as every product and partial sum on this path is exact anyway,
/// in fewer instructions where the CPU has them (slow where it has not).
#[inline(always)]
pub(crate) fn multiply_accumulate<const FUSED: bool>(
    ops: &Operands,
    precision: u32,
    d_fmt: FloatFormat,
    mut store_row: impl FnMut(usize, &[u32; 8]),
) {
    let k = ops.k;
    let budget = spread_budget(precision, k);
    let row_spread = binade_spreads(&ops.a_t[..k]);
    let col_spread = binade_spreads(&ops.b[..k]);
    let widest_col = col_spread.iter().copied().max().unwrap_or(0);
    // Four rows at a time: 32 independent sums keep the floating-point
    // adder busy instead of waiting on one chain of additions.
    for quad in 0..4 {
        let mut sums = [[-0.0f64; 8]; 4];
        for (a_col, b_row) in ops.a_t[..k].iter().zip(&ops.b[..k]) {
            for (i, row_sums) in sums.iter_mut().enumerate() {
                let x = a_col[4 * quad + i];
                for c in 0..8 {
                    row_sums[c] = if FUSED { x.mul_add(b_row[c], row_sums[c]) } else { row_sums[c] + x * b_row[c] };
                }
            }
        }
        for (i, products) in sums.iter().enumerate() {
            let r = 4 * quad + i;
            let c_row = &ops.c[r];
            let rounded = row_rounded_to_odd(products, c_row);
            let mut d_row = round_row(&rounded, d_fmt);
            // A NaN or ±∞ in row r of A, a column of B or in C makes a sum
            // or C non-finite, and then `product + C` too (finite terms
            // cannot overflow f64, so a finite `product + C` means both are).
            if row_spread[r] + widest_col > budget || any_non_finite(&rounded) {
                for col in 0..8 {
                    let fits = row_spread[r] + col_spread[col] <= budget;
                    if !(fits && products[col].is_finite() && c_row[col].is_finite()) {
                        d_row[col] = exact_element(ops, r, col, d_fmt);
                    }
                }
            }
            store_row(r, &d_row);
        }
    }
}

/// The largest `spread(A row) + spread(B col)` for which every partial sum
/// of the k products is an f64: with `|x| < 2^(E+1)` and x a multiple of
/// `2^(E − p + 1)` for an input of binade E (subnormals have a coarser
/// quantum, which only helps), a product lies below `2^(Ea + Eb + 2)` and
/// is a multiple of `2^(Ea + Eb − 2p + 2)`; k of them stay below
/// `2^(max Ea + max Eb + 2 + log2 k)`. That over the smallest quantum must
/// not exceed 2^53: `spreadA + spreadB + 2p + log2 k ≤ 53`.
fn spread_budget(precision: u32, k: usize) -> i32 {
    53 - 2 * precision as i32 - k.next_power_of_two().trailing_zeros() as i32
}

/// For each of the N lanes (rows of A, columns of B) across `lines`: the
/// binade of the largest magnitude minus that of the smallest nonzero one,
/// 0 when all are zero. NaN and ±∞ give meaningless spreads; the caller
/// catches them through the non-finite sum they cause.
#[inline(always)]
fn binade_spreads<const N: usize>(lines: &[[f64; N]]) -> [i32; N] {
    let mut largest = [0.0f64; N];
    let mut smallest = [f64::INFINITY; N];
    for line in lines {
        // Lane-wise, so the compiler keeps this in vector min/max instructions.
        for i in 0..N {
            let magnitude = line[i].abs();
            let nonzero = if magnitude == 0.0 { f64::INFINITY } else { magnitude };
            largest[i] = if magnitude > largest[i] { magnitude } else { largest[i] };
            smallest[i] = if nonzero < smallest[i] { nonzero } else { smallest[i] };
        }
    }
    let binade = |x: f64| (x.to_bits() >> 52) as i32;
    let mut spreads = [0; N];
    for i in 0..N {
        if smallest[i] != f64::INFINITY {
            spreads[i] = binade(largest[i]) - binade(smallest[i]);
        }
    }
    spreads
}

/// [`sum_rounded_to_odd`] for a row of eight, written lane-wise so that it
/// compiles to vector instructions.
#[inline(always)]
fn row_rounded_to_odd(products: &[f64; 8], c: &[f64; 8]) -> [f64; 8] {
    let mut out = [0.0; 8];
    for i in 0..8 {
        out[i] = sum_rounded_to_odd(products[i], c[i]);
    }
    out
}

/// Whether any value is NaN or ±∞; lane-wise, without branches.
#[inline(always)]
fn any_non_finite(values: &[f64; 8]) -> bool {
    const EXPONENT: u64 = 0x7FF0_0000_0000_0000;
    let mut found = 0u64;
    for v in values {
        found |= u64::from(v.to_bits() & EXPONENT == EXPONENT);
    }
    found != 0
}

/// Rounds a row of f64 values (rounded to odd) to nearest even in `fmt`.
#[inline(always)]
fn round_row(values: &[f64; 8], fmt: FloatFormat) -> [u32; 8] {
    let mut out = [0u32; 8];
    if fmt == FloatFormat::F32 {
        // `as` rounds to nearest even, subnormal results and overflow to ±∞ included.
        for i in 0..8 {
            out[i] = (values[i] as f32).to_bits();
        }
    } else {
        for i in 0..8 {
            out[i] = round_once(values[i], fmt);
        }
    }
    out
}

/// `p + c`, both finite, rounded to odd in f64: the rounded sum itself when
/// exact or already odd, else its odd neighbour on the side of the exact sum.
#[inline(always)]
fn sum_rounded_to_odd(p: f64, c: f64) -> f64 {
    // TwoSum: `error` is exactly (p + c) − sum (no overflow is possible here).
    let sum = p + c;
    let c_part = sum - p;
    let p_part = sum - c_part;
    let error = (p - p_part) + (c - c_part);
    let bits = sum.to_bits();
    // Inexact and even: then sum ≠ 0 and the exact value lies strictly
    // between `sum` and its neighbour toward `error`, which is odd; on
    // sign-magnitude bits that neighbour is one step up (larger magnitude,
    // when `error` has the sign of `sum`) or down. Branch-free selects.
    let adjust = u64::from(error != 0.0) & !bits & 1;
    // +1 or −1 (all ones) from the sign bits; masked to 0 when not adjusting.
    let step = 1 | ((bits ^ error.to_bits()) as i64 >> 63) as u64;
    f64::from_bits(bits.wrapping_add(step & adjust.wrapping_neg()))
}

/// Rounds an f64 (rounded to odd, see above) to nearest even in `fmt`.
fn round_once(value: f64, fmt: FloatFormat) -> u32 {
    if fmt == FloatFormat::F32 {
        // `as` rounds to nearest even, subnormal results and overflow to ±∞ included.
        return (value as f32).to_bits();
    }
    if fmt == FloatFormat::F16 {
        if let Some(bits) = f16_normal_nearest_even(value) {
            return bits;
        }
    }
    match FloatFormat::F64.decode(value.to_bits()) {
        Decoded::Finite { neg, sig, exp } => {
            round_to_format(fmt, neg, u128::from(sig), exp, false, Direction::NearestEven) as u32
        }
        Decoded::Zero { neg } => fmt.zero(neg) as u32,
        // Finite inputs give a finite sum.
        Decoded::Inf { neg } => fmt.inf(neg) as u32,
        Decoded::Nan => fmt.canonical_nan() as u32,
    }
}

/// `value` rounded to nearest even in f16 when it lies in f16's normal
/// binades (2^-14 ≤ |value| < 2^16), the common case, on the bits directly;
/// `None` for zeros, subnormal results and larger values. A carry out of
/// the kept mantissa moves into the exponent field by itself, up to ∞.
fn f16_normal_nearest_even(value: f64) -> Option<u32> {
    const DROPPED: u32 = 52 - 10;
    let bits = value.to_bits();
    let exp = ((bits >> 52) & 0x7FF) as i32 - 1023;
    if !(-14..=15).contains(&exp) {
        return None;
    }
    let mantissa = bits & ((1 << 52) - 1);
    let kept = mantissa >> DROPPED;
    let rest = mantissa & ((1 << DROPPED) - 1);
    let half = 1 << (DROPPED - 1);
    let up = rest > half || (rest == half && kept & 1 == 1);
    let magnitude = (((exp + 15) as u64) << 10 | kept) + u64::from(up);
    let sign = (bits >> 48) & 0x8000;
    Some((sign | magnitude) as u32)
}

/// One output by the exact integer dot product (any inputs, NaN and ±∞ too).
#[inline(never)]
fn exact_element(ops: &Operands, r: usize, col: usize, d_fmt: FloatFormat) -> u32 {
    let k = ops.k;
    let a: [Decoded; 16] = std::array::from_fn(|kk| decode_exact(ops.a_t[kk][r]));
    let b: [Decoded; 16] = std::array::from_fn(|kk| decode_exact(ops.b[kk][col]));
    dot_product(&a[..k], &b[..k], decode_exact(ops.c[r][col]), d_fmt, Direction::NearestEven) as u32
}

/// An f64 holding an input or C value, decoded with its significand's
/// trailing zeros removed: it then has at most 24 bits (the widest type
/// here, f32), as [`dot_product`] requires of its operands.
fn decode_exact(value: f64) -> Decoded {
    match FloatFormat::F64.decode(value.to_bits()) {
        Decoded::Finite { neg, sig, exp } => {
            let zeros = sig.trailing_zeros();
            Decoded::Finite { neg, sig: sig >> zeros, exp: exp + zeros as i32 }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_per_input_type() {
        assert_eq!(spread_budget(8, 16), 33); // bf16 m16n8k16
        assert_eq!(spread_budget(11, 16), 27); // f16 m16n8k16
        assert_eq!(spread_budget(11, 8), 28); // f16 m16n8k8, tf32 m16n8k8
        assert_eq!(spread_budget(11, 4), 29); // tf32 m16n8k4
    }

    #[test]
    fn non_finite_detection() {
        let mut row = [1.0, -0.0, 2f64.powi(-1000), -3.5, 0.0, 1e300, -1e-300, 7.0];
        assert!(!any_non_finite(&row));
        for bad in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
            row[5] = bad;
            assert!(any_non_finite(&row), "{bad}");
        }
    }

    #[test]
    fn spreads_ignore_zeros() {
        let lines = [[0.0, 1.0, 0.0], [-0.0, -0.75, 3.0], [0.0, 8.5, 0.0]];
        assert_eq!(binade_spreads(&lines), [0, 4, 0]);
        assert_eq!(binade_spreads(&[[2f64.powi(-140), -(2f64.powi(100))]; 1]), [0, 0]);
        assert_eq!(binade_spreads(&[[2f64.powi(-140)], [-(2f64.powi(100))]]), [240]);
    }

    #[test]
    fn rounding_to_odd_marks_inexact_sums() {
        // 1 + 2^-60 is not an f64: rounded to odd it is 1 + 2^-52.
        assert_eq!(sum_rounded_to_odd(1.0, 2f64.powi(-60)), 1.0 + 2f64.powi(-52));
        // 1 − 2^-60 lies between 1 − 2^-53 (odd) and 1.
        assert_eq!(sum_rounded_to_odd(1.0, -(2f64.powi(-60))), 1.0 - 2f64.powi(-53));
        assert_eq!(sum_rounded_to_odd(-1.0, -(2f64.powi(-60))), -1.0 - 2f64.powi(-52));
        // Exact sums are left alone.
        assert_eq!(sum_rounded_to_odd(1.5, 0.25), 1.75);
        assert_eq!(sum_rounded_to_odd(-0.0, -0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(sum_rounded_to_odd(2.0, -2.0).to_bits(), 0);
    }

    #[test]
    fn a_tie_broken_by_a_tiny_remainder() {
        // 1 + 2^-24 is a tie between f32 neighbours 1 and 1 + 2^-23; a
        // remainder of ±2^-80 decides it, which plain f64 addition would lose.
        let tie = 1.0 + 2f64.powi(-24);
        let up = round_once(sum_rounded_to_odd(tie, 2f64.powi(-80)), FloatFormat::F32);
        let down = round_once(sum_rounded_to_odd(tie, -(2f64.powi(-80))), FloatFormat::F32);
        assert_eq!(up, (1.0f32 + f32::EPSILON).to_bits());
        assert_eq!(down, 1.0f32.to_bits());
        assert_eq!(round_once(tie, FloatFormat::F32), 1.0f32.to_bits());
        // The same for f16: 1 + 2^-11 is a tie between 1 and 1 + 2^-10.
        let tie = 1.0 + 2f64.powi(-11);
        assert_eq!(round_once(sum_rounded_to_odd(tie, 2f64.powi(-70)), FloatFormat::F16), 0x3C01);
        assert_eq!(round_once(sum_rounded_to_odd(tie, -(2f64.powi(-70))), FloatFormat::F16), 0x3C00);
    }

    #[test]
    fn f16_rounding_shortcut_matches_the_general_rounding() {
        let general = |v: f64| match FloatFormat::F64.decode(v.to_bits()) {
            Decoded::Finite { neg, sig, exp } => {
                round_to_format(FloatFormat::F16, neg, u128::from(sig), exp, false, Direction::NearestEven) as u32
            }
            other => panic!("{other:?}"),
        };
        let mut state = 0x0123_4567_89AB_CDEFu64;
        let mut checked = 0;
        for i in 0..200_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Binades 2^-16 ..= 2^16, and every fourth value an exact tie or a
            // neighbour of one (low mantissa bits 0 but the 2^41 one).
            let exp = 1023 - 16 + (state >> 56) % 33;
            let mut mantissa = state & ((1 << 52) - 1);
            if i % 4 == 0 {
                mantissa = (mantissa & !((1 << 42) - 1)) | (1 << 41) | (state >> 60 & 1);
            }
            let v = f64::from_bits((state & (1 << 63)) | exp << 52 | mantissa);
            if let Some(bits) = f16_normal_nearest_even(v) {
                assert_eq!(bits, general(v), "{v:e}");
                checked += 1;
            }
        }
        assert!(checked > 150_000, "{checked}");
        assert_eq!(f16_normal_nearest_even(65520.0), Some(0x7C00));
        assert_eq!(f16_normal_nearest_even(-65519.0), Some(0xFBFF));
        assert_eq!(f16_normal_nearest_even(2f64.powi(-15)), None);
        assert_eq!(f16_normal_nearest_even(0.0), None);
    }

    #[test]
    fn decode_exact_strips_trailing_zeros() {
        assert_eq!(decode_exact(1.5), Decoded::Finite { neg: false, sig: 3, exp: -1 });
        assert_eq!(decode_exact(-8.0), Decoded::Finite { neg: true, sig: 1, exp: 3 });
        assert_eq!(decode_exact(-0.0), Decoded::Zero { neg: true });
    }
}

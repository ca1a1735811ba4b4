//! IEEE arithmetic on one binary format, formed exactly and rounded once:
//! the shared core of `half_op` (f16/bf16) and `f32_op_rounded`.
//! Modifiers that differ between those (`.ftz`, `.sat`) are applied by the
//! callers around this core.

use super::exact::ExactSum;
use super::format::{round_to_format, Decoded, Direction, FloatFormat};
use super::FloatOp;

/// `op` on raw bits of `fmt`. `c` is read by `Fma` only, `b` not by `Neg`/`Abs`.
/// NaN results are `fmt`'s canonical NaN, except `Neg`/`Abs`, which only
/// touch the sign bit.
pub(crate) fn float_op(fmt: FloatFormat, op: FloatOp, dir: Direction, a: u64, b: u64, c: u64) -> u64 {
    let nan = fmt.canonical_nan();
    match op {
        FloatOp::Neg => a ^ fmt.sign_bit(),
        FloatOp::Abs => a & !fmt.sign_bit(),
        FloatOp::Min | FloatOp::Max => min_max(fmt, op == FloatOp::Min, a, b),
        FloatOp::Add => fma_like(fmt, dir, None, a, b).unwrap_or(nan),
        FloatOp::Sub => fma_like(fmt, dir, None, a, b ^ fmt.sign_bit()).unwrap_or(nan),
        FloatOp::Mul => multiply(fmt, dir, a, b).unwrap_or(nan),
        FloatOp::Fma => fma_like(fmt, dir, Some((a, b)), c, 0).unwrap_or(nan),
        FloatOp::Div => divide(fmt, dir, a, b).unwrap_or(nan),
    }
}

/// `min`/`max` without `.NaN`: a NaN operand yields the other one, two NaNs
/// the canonical NaN, and −0 orders below +0 (PTX ISA `min`/`max` semantics).
fn min_max(fmt: FloatFormat, is_min: bool, a: u64, b: u64) -> u64 {
    match (fmt.is_nan(a), fmt.is_nan(b)) {
        (true, true) => return fmt.canonical_nan(),
        (true, false) => return b,
        (false, true) => return a,
        (false, false) => {}
    }
    let key = |x: u64| {
        let mag = i128::from(x & (fmt.sign_bit() - 1));
        if x & fmt.sign_bit() != 0 {
            -mag - 1
        } else {
            mag
        }
    };
    let a_first = if is_min { key(a) <= key(b) } else { key(a) >= key(b) };
    if a_first {
        a
    } else {
        b
    }
}

/// A finite value as an exact-sum term (zeros give sig 0 and keep their sign).
fn term(d: Decoded) -> (bool, u64, i32) {
    match d {
        Decoded::Finite { neg, sig, exp } => (neg, sig, exp),
        Decoded::Zero { neg } => (neg, 0, 0),
        // Callers settle NaN and ∞ before asking for a term.
        Decoded::Inf { neg } => (neg, 0, 0),
        Decoded::Nan => (false, 0, 0),
    }
}

fn multiply(fmt: FloatFormat, dir: Direction, a: u64, b: u64) -> Option<u64> {
    let (da, db) = (fmt.decode(a), fmt.decode(b));
    let neg = sign_of(da) != sign_of(db);
    match (da, db) {
        (Decoded::Nan, _) | (_, Decoded::Nan) => None,
        (Decoded::Inf { .. }, Decoded::Zero { .. }) | (Decoded::Zero { .. }, Decoded::Inf { .. }) => None,
        (Decoded::Inf { .. }, _) | (_, Decoded::Inf { .. }) => Some(fmt.inf(neg)),
        _ => {
            let ((_, sa, ea), (_, sb, eb)) = (term(da), term(db));
            let mut acc = ExactSum::new();
            acc.add_product(neg, sa, ea, sb, eb);
            Some(acc.round(fmt, dir))
        }
    }
}

fn sign_of(d: Decoded) -> bool {
    match d {
        Decoded::Finite { neg, .. } | Decoded::Zero { neg } | Decoded::Inf { neg } => neg,
        Decoded::Nan => false,
    }
}

/// `p.0 · p.1 + x` when `product` is given, else `x + y`; one rounding.
fn fma_like(fmt: FloatFormat, dir: Direction, product: Option<(u64, u64)>, x: u64, y: u64) -> Option<u64> {
    let dx = fmt.decode(x);
    let mut acc = ExactSum::new();
    // Infinities seen so far, by sign; ∞ − ∞ is NaN.
    let (mut pos_inf, mut neg_inf) = (false, false);
    let mut note_inf = |neg: bool| if neg { neg_inf = true } else { pos_inf = true };
    if let Some((a, b)) = product {
        let (da, db) = (fmt.decode(a), fmt.decode(b));
        let neg = sign_of(da) != sign_of(db);
        match (da, db) {
            (Decoded::Nan, _) | (_, Decoded::Nan) => return None,
            (Decoded::Inf { .. }, Decoded::Zero { .. }) | (Decoded::Zero { .. }, Decoded::Inf { .. }) => return None,
            (Decoded::Inf { .. }, _) | (_, Decoded::Inf { .. }) => note_inf(neg),
            _ => {
                let ((_, sa, ea), (_, sb, eb)) = (term(da), term(db));
                acc.add_product(neg, sa, ea, sb, eb);
            }
        }
    } else {
        match fmt.decode(y) {
            Decoded::Nan => return None,
            Decoded::Inf { neg } => note_inf(neg),
            dy => {
                let (n, s, e) = term(dy);
                acc.add(n, u128::from(s), e);
            }
        }
    }
    match dx {
        Decoded::Nan => return None,
        Decoded::Inf { neg } => note_inf(neg),
        _ => {
            let (n, s, e) = term(dx);
            acc.add(n, u128::from(s), e);
        }
    }
    match (pos_inf, neg_inf) {
        (true, true) => None,
        (true, false) => Some(fmt.inf(false)),
        (false, true) => Some(fmt.inf(true)),
        (false, false) => Some(acc.round(fmt, dir)),
    }
}

fn divide(fmt: FloatFormat, dir: Direction, a: u64, b: u64) -> Option<u64> {
    let (da, db) = (fmt.decode(a), fmt.decode(b));
    let neg = sign_of(da) != sign_of(db);
    match (da, db) {
        (Decoded::Nan, _) | (_, Decoded::Nan) => None,
        (Decoded::Inf { .. }, Decoded::Inf { .. }) | (Decoded::Zero { .. }, Decoded::Zero { .. }) => None,
        (Decoded::Inf { .. }, _) | (_, Decoded::Zero { .. }) => Some(fmt.inf(neg)),
        (_, Decoded::Inf { .. }) | (Decoded::Zero { .. }, _) => Some(fmt.zero(neg)),
        (Decoded::Finite { sig: sa, exp: ea, .. }, Decoded::Finite { sig: sb, exp: eb, .. }) => {
            // Scale the dividend to 127 bits so the integer quotient keeps at
            // least 74 bits (more than any format's precision + 2); a nonzero
            // remainder is the sticky bit.
            let shift = u128::from(sa).leading_zeros() - 1;
            let num = u128::from(sa) << shift;
            let den = u128::from(sb);
            let (q, r) = (num / den, num % den);
            Some(round_to_format(fmt, neg, q, ea - eb - shift as i32, r != 0, dir))
        }
    }
}

/// `Σ a_i·b_i + c` with every product and the sum exact and one rounding to
/// `out` (the `mma` accumulation model). Inputs are raw bits: the pairs in
/// `in_fmt`, `c` in `c_fmt`. NaN anywhere, ∞·0 or ∞ − ∞ give `out`'s
/// canonical NaN.
pub(crate) fn dot_product(
    in_fmt: FloatFormat,
    pairs: impl IntoIterator<Item = (u64, u64)>,
    c_fmt: FloatFormat,
    c: u64,
    out: FloatFormat,
    dir: Direction,
) -> u64 {
    let mut acc = ExactSum::new();
    let (mut pos_inf, mut neg_inf) = (false, false);
    for (a, b) in pairs {
        let (da, db) = (in_fmt.decode(a), in_fmt.decode(b));
        let neg = sign_of(da) != sign_of(db);
        match (da, db) {
            (Decoded::Nan, _) | (_, Decoded::Nan) => return out.canonical_nan(),
            (Decoded::Inf { .. }, Decoded::Zero { .. }) | (Decoded::Zero { .. }, Decoded::Inf { .. }) => return out.canonical_nan(),
            (Decoded::Inf { .. }, _) | (_, Decoded::Inf { .. }) => {
                if neg {
                    neg_inf = true
                } else {
                    pos_inf = true
                }
            }
            _ => {
                let ((_, sa, ea), (_, sb, eb)) = (term(da), term(db));
                acc.add_product(neg, sa, ea, sb, eb);
            }
        }
    }
    match c_fmt.decode(c) {
        Decoded::Nan => return out.canonical_nan(),
        Decoded::Inf { neg: true } => neg_inf = true,
        Decoded::Inf { neg: false } => pos_inf = true,
        dc => {
            let (n, s, e) = term(dc);
            acc.add(n, u128::from(s), e);
        }
    }
    match (pos_inf, neg_inf) {
        (true, true) => out.canonical_nan(),
        (true, false) => out.inf(false),
        (false, true) => out.inf(true),
        (false, false) => acc.round(out, dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_op(op: FloatOp, dir: Direction, a: f32, b: f32, c: f32) -> f32 {
        let bits = float_op(FloatFormat::F32, op, dir, a.to_bits().into(), b.to_bits().into(), c.to_bits().into());
        f32::from_bits(bits as u32)
    }

    #[test]
    fn nearest_even_matches_host_f32() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            f32::from_bits((state >> 16) as u32)
        };
        for _ in 0..20_000 {
            let (a, b, c) = (next(), next(), next());
            let cases = [
                (FloatOp::Add, a + b),
                (FloatOp::Sub, a - b),
                (FloatOp::Mul, a * b),
                (FloatOp::Div, a / b),
                (FloatOp::Fma, a.mul_add(b, c)),
            ];
            for (op, want) in cases {
                let got = f32_op(op, Direction::NearestEven, a, b, c);
                if want.is_nan() {
                    assert!(got.is_nan(), "{op:?} {a:e} {b:e} {c:e}");
                } else {
                    assert_eq!(got.to_bits(), want.to_bits(), "{op:?} {a:e} {b:e} {c:e}");
                }
            }
        }
    }

    #[test]
    fn min_max_nan_and_signed_zero() {
        let f = FloatFormat::F16;
        assert_eq!(float_op(f, FloatOp::Min, Direction::NearestEven, 0x7E00, 0x3C00, 0), 0x3C00);
        assert_eq!(float_op(f, FloatOp::Max, Direction::NearestEven, 0x3C00, 0x7E01, 0), 0x3C00);
        assert_eq!(float_op(f, FloatOp::Min, Direction::NearestEven, 0x7E00, 0xFE00, 0), 0x7FFF);
        assert_eq!(float_op(f, FloatOp::Min, Direction::NearestEven, 0x0000, 0x8000, 0), 0x8000);
        assert_eq!(float_op(f, FloatOp::Max, Direction::NearestEven, 0x8000, 0x0000, 0), 0x0000);
    }
}

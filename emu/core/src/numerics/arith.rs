//! IEEE arithmetic on one binary format, formed exactly and rounded once:
//! the shared core of `half_op` (f16/bf16) and `f32_op_rounded`.
//! Modifiers that differ between those (`.ftz`, `.sat`) are applied by the
//! callers around this core.

use super::exact::{exact_zero_is_negative, ExactSum};
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
        FloatOp::MinNaN | FloatOp::MaxNaN if fmt.is_nan(a) || fmt.is_nan(b) => nan,
        FloatOp::MinNaN | FloatOp::MaxNaN => min_max(fmt, op == FloatOp::MinNaN, a, b),
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
/// `out` (the `mma` accumulation model). Operands come decoded (the caller
/// decodes each matrix element once, not once per product). NaN anywhere,
/// ∞·0 or ∞ − ∞ give `out`'s canonical NaN. Inputs must be f32 or narrower.
pub(crate) fn dot_product(a: &[Decoded], b: &[Decoded], c: Decoded, out: FloatFormat, dir: Direction) -> u64 {
    // Nonzero finite terms as (negative, significand, exponent); at most the
    // k products (k ≤ 16 in `mma`) and C fit inline, more go to ExactSum.
    let mut terms = [(false, 0u64, 0i32); 17];
    let mut count = 0;
    let mut overflowed = false;
    let (mut saw_pos, mut saw_neg) = (false, false);
    let (mut pos_inf, mut neg_inf) = (false, false);
    let mut push = |neg: bool, sig: u64, exp: i32, count: &mut usize, terms: &mut [(bool, u64, i32); 17]| {
        if neg {
            saw_neg = true;
        } else {
            saw_pos = true;
        }
        if sig != 0 {
            if *count < terms.len() {
                terms[*count] = (neg, sig, exp);
            } else {
                overflowed = true;
            }
            *count += 1;
        }
    };
    for (&da, &db) in a.iter().zip(b) {
        let neg = sign_of(da) != sign_of(db);
        match (da, db) {
            (Decoded::Nan, _) | (_, Decoded::Nan) => return out.canonical_nan(),
            (Decoded::Inf { .. }, Decoded::Zero { .. }) | (Decoded::Zero { .. }, Decoded::Inf { .. }) => {
                return out.canonical_nan()
            }
            (Decoded::Inf { .. }, _) | (_, Decoded::Inf { .. }) => {
                if neg {
                    neg_inf = true
                } else {
                    pos_inf = true
                }
            }
            _ => {
                let ((_, sa, ea), (_, sb, eb)) = (term(da), term(db));
                // Significands of f32 and narrower are ≤ 24 bits: the product fits.
                push(neg, sa.saturating_mul(sb), ea + eb, &mut count, &mut terms);
            }
        }
    }
    match c {
        Decoded::Nan => return out.canonical_nan(),
        Decoded::Inf { neg: true } => neg_inf = true,
        Decoded::Inf { neg: false } => pos_inf = true,
        dc => {
            let (n, s, e) = term(dc);
            push(n, s, e, &mut count, &mut terms);
        }
    }
    match (pos_inf, neg_inf) {
        (true, true) => return out.canonical_nan(),
        (true, false) => return out.inf(false),
        (false, true) => return out.inf(true),
        (false, false) => {}
    }
    if count == 0 {
        return out.zero(exact_zero_is_negative(saw_pos, saw_neg, dir));
    }
    let terms = &terms[..count.min(17)];
    let low = terms.iter().map(|t| t.2).min().unwrap_or(0);
    let high = terms.iter().map(|t| t.2 + 64 - t.1.leading_zeros() as i32).max().unwrap_or(0);
    if !overflowed && high - low <= 120 {
        // Fast path: every term fits one i128 window, and 17 of them cannot
        // carry past bit 125, so this integer sum is exact.
        let sum: i128 = terms
            .iter()
            .map(|&(neg, sig, exp)| {
                let v = i128::from(sig) << (exp - low) as u32;
                if neg {
                    -v
                } else {
                    v
                }
            })
            .sum();
        if sum == 0 {
            return out.zero(exact_zero_is_negative(saw_pos, saw_neg, dir));
        }
        return round_to_format(out, sum < 0, sum.unsigned_abs(), low, false, dir);
    }
    let mut acc = ExactSum::new();
    for (&da, &db) in a.iter().zip(b) {
        let neg = sign_of(da) != sign_of(db);
        let ((_, sa, ea), (_, sb, eb)) = (term(da), term(db));
        acc.add_product(neg, sa, ea, sb, eb);
    }
    let (n, s, e) = term(c);
    acc.add(n, u128::from(s), e);
    acc.round(out, dir)
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
        assert_eq!(float_op(f, FloatOp::MinNaN, Direction::NearestEven, 0x7E00, 0x3C00, 0), 0x7FFF);
        assert_eq!(float_op(f, FloatOp::MaxNaN, Direction::NearestEven, 0x3C00, 0xFE01, 0), 0x7FFF);
        assert_eq!(float_op(f, FloatOp::MaxNaN, Direction::NearestEven, 0x3C00, 0x4000, 0), 0x4000);
        assert_eq!(float_op(f, FloatOp::MinNaN, Direction::NearestEven, 0x0000, 0x8000, 0), 0x8000);
    }

    /// Both dot-product paths agree with a plain exact sum, across narrow
    /// windows (fast paths) and wide ones (the fallback).
    #[test]
    fn dot_product_paths_agree_with_exact_sum() {
        let f = FloatFormat::F32;
        let mut state = 0xABCD_EF01_2345_6789u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..4000 {
            // Exponent spread: narrow for half the rounds, full range for the rest.
            let spread = if round % 2 == 0 { 8 } else { 250 };
            let mut value = || {
                let exp = 127 - spread / 2 + next() % spread;
                let exp = exp.clamp(1, 254);
                (next() & 0x8000_0000) | (exp << 23) | (next() & 0x7F_FFFF)
            };
            let a: Vec<Decoded> = (0..16).map(|_| f.decode(value())).collect();
            let b: Vec<Decoded> = (0..16).map(|_| f.decode(value())).collect();
            let c = f.decode(value());
            let mut acc = ExactSum::new();
            for (&x, &y) in a.iter().zip(&b) {
                let ((nx, sx, ex), (ny, sy, ey)) = (term(x), term(y));
                acc.add_product(nx != ny, sx, ex, sy, ey);
            }
            let (n, sg, e) = term(c);
            acc.add(n, u128::from(sg), e);
            for dir in [Direction::NearestEven, Direction::TowardZero, Direction::Up] {
                let want = acc.round(f, dir);
                assert_eq!(dot_product(&a, &b, c, f, dir), want);
            }
        }
    }
}

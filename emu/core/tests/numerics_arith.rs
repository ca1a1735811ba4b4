//! f16/bf16 arithmetic (`half_op`) and f32 with directed rounding
//! (`f32_op_rounded`): hand-computed rounding cases, single rounding of fma,
//! and sampled cross-checks against exact f64 arithmetic.

use ptx_emu::numerics::{f32_op_rounded, half_op, FloatOp, Rounding};
use ptx_emu::ScalarType::{Bf16, Bf16x2, F16x2, F16};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn f16(op: FloatOp, rnd: Rounding, a: u32, b: u32) -> u32 {
    half_op(op, F16, Some(rnd), false, false, a, b, 0)
}

#[test]
fn f16_add_rounds_once_in_each_mode() {
    use Rounding::*;
    // 1 + 2^-11: a tie between 1.0 (even) and 1 + 2^-10.
    assert_eq!(f16(FloatOp::Add, Rn, 0x3C00, 0x1000), 0x3C00);
    assert_eq!(f16(FloatOp::Add, Rp, 0x3C00, 0x1000), 0x3C01);
    // (1 + 2^-10) + 2^-11: a tie between 0x3C01 (odd) and 0x3C02.
    assert_eq!(f16(FloatOp::Add, Rn, 0x3C01, 0x1000), 0x3C02);
    assert_eq!(f16(FloatOp::Add, Rz, 0x3C01, 0x1000), 0x3C01);
    assert_eq!(f16(FloatOp::Add, Rm, 0x3C01, 0x1000), 0x3C01);
    // Negative sums round the other way for Rm/Rp.
    assert_eq!(f16(FloatOp::Add, Rm, 0xBC01, 0x9000), 0xBC02);
    assert_eq!(f16(FloatOp::Add, Rp, 0xBC01, 0x9000), 0xBC01);
    // Overflow: ∞ to nearest, max finite toward zero.
    assert_eq!(f16(FloatOp::Add, Rn, 0x7BFF, 0x7BFF), 0x7C00);
    assert_eq!(f16(FloatOp::Add, Rz, 0x7BFF, 0x7BFF), 0x7BFF);
    // x − x is +0, except −0 when rounding down.
    assert_eq!(f16(FloatOp::Sub, Rn, 0x4500, 0x4500), 0x0000);
    assert_eq!(f16(FloatOp::Sub, Rm, 0x4500, 0x4500), 0x8000);
    assert_eq!(f16(FloatOp::Add, Rn, 0x8000, 0x8000), 0x8000);
    // Default rounding is .rn.
    assert_eq!(half_op(FloatOp::Add, F16, None, false, false, 0x3C01, 0x1000, 0), 0x3C02);
}

#[test]
fn f16_mul_and_fma_single_rounding() {
    use Rounding::*;
    // (1 + 2^-10)^2 = 1 + 2^-9 + 2^-20.
    assert_eq!(f16(FloatOp::Mul, Rn, 0x3C01, 0x3C01), 0x3C02);
    assert_eq!(f16(FloatOp::Mul, Rp, 0x3C01, 0x3C01), 0x3C03);
    assert_eq!(f16(FloatOp::Mul, Rz, 0x3C01, 0x3C01), 0x3C02);
    // fma: (1 + 2^-10)^2 − (1 + 2^-9) = 2^-20 exactly, a subnormal f16 (0x0010);
    // rounding the product first would give 0.
    let fma = |ftz, a, b, c| half_op(FloatOp::Fma, F16, Some(Rn), ftz, false, a, b, c);
    assert_eq!(fma(false, 0x3C01, 0x3C01, 0xBC02), 0x0010);
    assert_eq!(fma(true, 0x3C01, 0x3C01, 0xBC02), 0x0000, ".ftz flushes the subnormal result");
    let mul_then_add = f16(FloatOp::Add, Rn, f16(FloatOp::Mul, Rn, 0x3C01, 0x3C01), 0xBC02);
    assert_eq!(mul_then_add, 0x0000);
    // bf16: (1 + 2^-7)^2 − (1 + 2^-6) = 2^-14.
    let bfma = half_op(FloatOp::Fma, Bf16, Some(Rn), false, false, 0x3F81, 0x3F81, 0xBF82);
    assert_eq!(bfma, 0x3880);
    // ∞·0 + c is NaN, ∞ + finite is ∞.
    assert_eq!(fma(false, 0x7C00, 0x0000, 0x3C00), 0x7FFF);
    assert_eq!(fma(false, 0x7C00, 0x3C00, 0xFBFF), 0x7C00);
    assert_eq!(fma(false, 0x7C00, 0x3C00, 0xFC00), 0x7FFF);
}

#[test]
fn nan_sat_and_ftz() {
    assert_eq!(f16(FloatOp::Add, Rounding::Rn, 0x7E00, 0x3C00), 0x7FFF, "canonical NaN");
    assert_eq!(f16(FloatOp::Add, Rounding::Rn, 0xFD01, 0x3C00), 0x7FFF);
    assert_eq!(f16(FloatOp::Sub, Rounding::Rn, 0x7C00, 0x7C00), 0x7FFF);
    assert_eq!(half_op(FloatOp::Mul, Bf16, None, false, false, 0x7FC1, 0x3F80, 0), 0x7FFF);
    let sat = |op, a, b| half_op(op, F16, None, false, true, a, b, 0);
    assert_eq!(sat(FloatOp::Add, 0x3C00, 0x3C00), 0x3C00, "2 clamps to 1");
    assert_eq!(sat(FloatOp::Add, 0xBC00, 0x0000), 0x0000, "-1 clamps to +0");
    assert_eq!(sat(FloatOp::Add, 0x7E00, 0x0000), 0x0000, "NaN becomes +0");
    assert_eq!(sat(FloatOp::Mul, 0x3800, 0x3800), 0x3400, "0.25 stays");
    // f16 subnormals: kept by default, flushed (inputs and results) with .ftz.
    assert_eq!(half_op(FloatOp::Add, F16, None, false, false, 0x0001, 0x0001, 0), 0x0002);
    assert_eq!(half_op(FloatOp::Add, F16, None, true, false, 0x0001, 0x0001, 0), 0x0000);
    assert_eq!(half_op(FloatOp::Add, F16, None, true, false, 0x8001, 0x8000, 0), 0x8000);
    assert_eq!(half_op(FloatOp::Add, F16, None, true, false, 0x0400, 0x0001, 0), 0x0400);
    // 2^-14 · 0.5 is subnormal: flushed with .ftz.
    assert_eq!(half_op(FloatOp::Mul, F16, None, false, false, 0x0400, 0x3800, 0), 0x0200);
    assert_eq!(half_op(FloatOp::Mul, F16, None, true, false, 0x0400, 0x3800, 0), 0x0000);
    // bf16 keeps subnormals (no .ftz in the bf16 instructions).
    assert_eq!(half_op(FloatOp::Add, Bf16, None, true, false, 0x0001, 0x0001, 0), 0x0002);
}

#[test]
fn min_max_neg_abs() {
    let op = |op, ty, a, b| half_op(op, ty, None, false, false, a, b, 0);
    assert_eq!(op(FloatOp::Min, F16, 0x7E00, 0x4000), 0x4000, "min(NaN, 2) = 2");
    assert_eq!(op(FloatOp::Max, F16, 0x4000, 0xFE00), 0x4000);
    assert_eq!(op(FloatOp::Min, F16, 0x7E00, 0x7E01), 0x7FFF, "two NaNs give the canonical NaN");
    assert_eq!(op(FloatOp::Min, F16, 0x0000, 0x8000), 0x8000, "-0 < +0");
    assert_eq!(op(FloatOp::Max, F16, 0x8000, 0x0000), 0x0000);
    assert_eq!(op(FloatOp::Min, F16, 0xC000, 0x3C00), 0xC000);
    assert_eq!(op(FloatOp::Max, Bf16, 0xC000, 0x3F80), 0x3F80);
    assert_eq!(op(FloatOp::Min, Bf16x2, 0x7FC0_BF80, 0x3F80_3F80), 0x3F80_BF80);
    assert_eq!(op(FloatOp::Neg, F16, 0x3C00, 0), 0xBC00);
    assert_eq!(op(FloatOp::Abs, F16, 0xBC00, 0), 0x3C00);
    assert_eq!(op(FloatOp::Neg, F16x2, 0x3C00_BC00, 0), 0xBC00_3C00);
    assert_eq!(half_op(FloatOp::Neg, F16, None, true, false, 0x0001, 0, 0), 0x8000, ".ftz flushes first");
}

#[test]
fn packed_lanes_are_independent() {
    let a = (0x3C00 << 16) | 0x4000; // (1, 2)
    let b = (0x4000 << 16) | 0x3C00; // (2, 1)
    assert_eq!(half_op(FloatOp::Add, F16x2, None, false, false, a, b, 0), 0x4200_4200);
    // High lane NaN, low lane overflow: neither leaks into the other.
    let a = (0x7E00 << 16) | 0x7BFF;
    let b = (0x3C00 << 16) | 0x7BFF;
    assert_eq!(half_op(FloatOp::Add, F16x2, Some(Rounding::Rz), false, false, a, b, 0), 0x7FFF_7BFF);
    let fma = half_op(FloatOp::Fma, Bf16x2, None, false, false, 0x3F81_4000, 0x3F81_4040, 0xBF82_0000);
    assert_eq!(fma, 0x3880_40C0, "(2^-14, 2·3 = 6)");
    // Bits above the low 16 are ignored for scalar types.
    assert_eq!(half_op(FloatOp::Add, F16, None, false, false, 0xFFFF_3C00, 0x1234_3C00, 0), 0x4000);
}

/// Sums, differences and products of two f16 are exact in f64, so rounding
/// that f64 to f16 (here with `half`, to nearest) is the single correct
/// rounding; compare on sampled pairs.
#[test]
fn f16_and_bf16_nearest_match_exact_f64_on_samples() {
    let mut rng = Rng(7);
    for _ in 0..100_000 {
        let (a, b) = ((rng.next() & 0xFFFF) as u16, (rng.next() & 0xFFFF) as u16);
        let (x, y) = (f64::from(half::f16::from_bits(a)), f64::from(half::f16::from_bits(b)));
        for (op, exact) in [(FloatOp::Add, x + y), (FloatOp::Sub, x - y), (FloatOp::Mul, x * y)] {
            let got = half_op(op, F16, None, false, false, a.into(), b.into(), 0) as u16;
            if exact.is_nan() {
                assert_eq!(got, 0x7FFF);
            } else {
                assert_eq!(got, half::f16::from_f64(exact).to_bits(), "{op:?} {a:#06x} {b:#06x}");
            }
        }
        // bf16 products are exact in f64 too; sums only when the exponents
        // are close, so compare sums where f64's own sum is exact.
        let (x, y) = (f64::from(half::bf16::from_bits(a)), f64::from(half::bf16::from_bits(b)));
        let got = half_op(FloatOp::Mul, Bf16, None, false, false, a.into(), b.into(), 0) as u16;
        if !(x * y).is_nan() {
            assert_eq!(got, half::bf16::from_f64(x * y).to_bits(), "bf16 mul {a:#06x} {b:#06x}");
        }
        let s = x + y;
        if s.is_finite() && s - x == y && s - y == x {
            let got = half_op(FloatOp::Add, Bf16, None, false, false, a.into(), b.into(), 0) as u16;
            assert_eq!(got, half::bf16::from_f64(s).to_bits(), "bf16 add {a:#06x} {b:#06x}");
        }
    }
}

#[test]
fn f32_directed_hand_cases() {
    use Rounding::*;
    let div = |r, a: f32, b: f32| f32_op_rounded(FloatOp::Div, r, false, false, a, b, 0.0).to_bits();
    assert_eq!(div(Rz, 1.0, 3.0), 0x3EAA_AAAA);
    assert_eq!(div(Rm, 1.0, 3.0), 0x3EAA_AAAA);
    assert_eq!(div(Rp, 1.0, 3.0), 0x3EAA_AAAB);
    assert_eq!(div(Rn, 1.0, 3.0), 0x3EAA_AAAB);
    assert_eq!(div(Rn, 2.0, 3.0), 0x3F2A_AAAB);
    assert_eq!(div(Rz, 2.0, 3.0), 0x3F2A_AAAA);
    assert_eq!(div(Rm, -2.0, 3.0), 0xBF2A_AAAB);
    assert_eq!(div(Rz, 1.0, 0.0), 0x7F80_0000);
    assert_eq!(div(Rz, 0.0, 0.0), 0x7FFF_FFFF);
    assert_eq!(div(Rz, f32::MAX, 0.5), 0x7F7F_FFFF, "overflow toward zero is max finite");
    assert_eq!(div(Rn, f32::MAX, 0.5), 0x7F80_0000);
    let e = f32::EPSILON; // 2^-23
                          // 1 + 2^-24 (a tie) in each mode.
    let add = |r, a: f32, b: f32| f32_op_rounded(FloatOp::Add, r, false, false, a, b, 0.0).to_bits();
    assert_eq!(add(Rn, 1.0, e / 2.0), 0x3F80_0000);
    assert_eq!(add(Rp, 1.0, e / 2.0), 0x3F80_0001);
    assert_eq!(add(Rp, 1.0, f32::from_bits(1)), 0x3F80_0001, "the smallest subnormal still rounds up");
    assert_eq!(add(Rm, -1.0, -f32::from_bits(1)), 0xBF80_0001);
    assert_eq!(add(Rz, -1.0, -f32::from_bits(1)), 0xBF80_0000);
    // fma: (1 + e)(1 − e) − 1 = −e² exactly.
    let fma = |r, a, b, c| f32_op_rounded(FloatOp::Fma, r, false, false, a, b, c);
    assert_eq!(fma(Rz, 1.0 + e, 1.0 - e, -1.0), -(e * e));
    // (1 + e)(1 + e) = 1 + 2e + e²: only .rp sees the e².
    assert_eq!(fma(Rz, 1.0 + e, 1.0 + e, 0.0).to_bits(), 0x3F80_0002);
    assert_eq!(fma(Rp, 1.0 + e, 1.0 + e, 0.0).to_bits(), 0x3F80_0003);
    let mul = |r, a: f32, b: f32| f32_op_rounded(FloatOp::Mul, r, false, false, a, b, 0.0).to_bits();
    assert_eq!(mul(Rm, -(1.0 + e), 1.0 + e), 0xBF80_0003);
    assert_eq!(mul(Rp, -(1.0 + e), 1.0 + e), 0xBF80_0002);
}

#[test]
fn f32_ftz_and_sat() {
    let sub = f32::from_bits(0x0000_0100);
    let add = |ftz, sat, a, b| f32_op_rounded(FloatOp::Add, Rounding::Rn, ftz, sat, a, b, 0.0);
    assert_eq!(add(false, false, sub, 0.0).to_bits(), 0x100);
    assert_eq!(add(true, false, sub, 0.0).to_bits(), 0);
    assert_eq!(add(true, false, -sub, -0.0).to_bits(), 0x8000_0000);
    let tiny = f32::MIN_POSITIVE;
    let mul = |ftz, a, b| f32_op_rounded(FloatOp::Mul, Rounding::Rz, ftz, false, a, b, 0.0);
    assert_eq!(mul(false, tiny, 0.5).to_bits(), 0x0040_0000);
    assert_eq!(mul(true, tiny, 0.5).to_bits(), 0, "subnormal result flushed");
    assert_eq!(add(false, true, 0.75, 0.5), 1.0);
    assert_eq!(add(false, true, -0.75, 0.5).to_bits(), 0);
    assert_eq!(add(false, true, f32::NAN, 0.5).to_bits(), 0);
}

/// The next f32 above a finite `x` that is not −0.
fn next_up(x: f32) -> f32 {
    if x >= 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        f32::from_bits(x.to_bits() - 1)
    }
}

/// Directed results bracket the exact sum/product (exact in f64 where
/// `two_sum`'s error is zero) with adjacent f32 values, and `.rn` matches
/// the host's IEEE arithmetic.
#[test]
fn f32_directed_modes_bracket_exact_results() {
    let mut rng = Rng(0xDEAD_BEEF);
    let mut checked = 0;
    for _ in 0..100_000 {
        let pick = |r: &mut Rng| {
            let exp = 127 - 20 + (r.next() % 40) as u32;
            f32::from_bits(((r.next() as u32) & 0x8000_0000) | (exp << 23) | ((r.next() as u32) & 0x7F_FFFF))
        };
        let (a, b) = (pick(&mut rng), pick(&mut rng));
        let (x, y) = (f64::from(a), f64::from(b));
        let sum = x + y;
        let mut cases = vec![(FloatOp::Mul, x * y, a * b)];
        if sum - x == y && sum - y == x {
            cases.push((FloatOp::Add, sum, a + b));
        }
        for (op, exact, host) in cases {
            let r = |m| f32_op_rounded(op, m, false, false, a, b, 0.0);
            let (down, up, zero, near) = (r(Rounding::Rm), r(Rounding::Rp), r(Rounding::Rz), r(Rounding::Rn));
            assert_eq!(near.to_bits(), host.to_bits(), "{op:?} {a:e} {b:e}");
            assert!(f64::from(down) <= exact && exact <= f64::from(up), "{op:?} {a:e} {b:e}");
            if f64::from(down) == exact {
                assert_eq!(down.to_bits(), up.to_bits());
            } else {
                assert_eq!(next_up(down).to_bits(), up.to_bits(), "{op:?} {a:e} {b:e}");
                assert_eq!(zero.to_bits(), if exact > 0.0 { down } else { up }.to_bits());
            }
            checked += 1;
        }
    }
    assert!(checked > 150_000, "{checked}");
}

//! `cvt` against the PTX ISA's rules: hand-computed corner cases, every
//! rounding mode around halfway points, and round-to-nearest cross-checked
//! against the `half` crate.

use ptx_emu::numerics::{
    bf16_to_f32, cvt, cvt_is_valid, cvt_is_valid_with, cvt_pack_f32x2, cvt_with, f16_to_f32, f32_to_bf16, f32_to_f16,
    CvtModifiers, Rounding,
};
use ptx_emu::ScalarType::{self, *};

/// xorshift64: a fixed-seed generator, enough for sampling bit patterns.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn f32b(x: f32) -> u64 {
    u64::from(x.to_bits())
}

fn to_f16(x: f32, r: Rounding) -> u16 {
    f32_to_f16(x, r)
}

#[test]
fn every_f16_and_bf16_widens_like_half() {
    for bits in 0..=u16::MAX {
        let want = half::f16::from_bits(bits).to_f32();
        let got = f16_to_f32(bits);
        if want.is_nan() {
            assert!(got.is_nan(), "{bits:#06x}");
            assert_eq!(got.is_sign_negative(), bits & 0x8000 != 0, "{bits:#06x}");
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "f16 {bits:#06x}");
        }
        let want = half::bf16::from_bits(bits).to_f32();
        let got = bf16_to_f32(bits);
        if want.is_nan() {
            // Sign and payload kept, quieted.
            assert_eq!(got.to_bits(), (u32::from(bits) << 16) | 0x0040_0000, "bf16 {bits:#06x}");
        } else {
            // bf16 is the top half of an f32.
            assert_eq!(got.to_bits(), u32::from(bits) << 16, "bf16 {bits:#06x}");
            assert_eq!(got.to_bits(), want.to_bits());
        }
    }
}

#[test]
fn f32_to_f16_and_bf16_nearest_match_half_on_sampled_bit_patterns() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..400_000u32 {
        // Mix uniformly random patterns with patterns near f16's range, where
        // the interesting rounding happens.
        let bits = if i % 2 == 0 {
            rng.next() as u32
        } else {
            let exp = 127 - 30 + (rng.next() % 50) as u32;
            ((rng.next() as u32) & 0x8000_0000) | (exp << 23) | ((rng.next() as u32) & 0x7F_FFFF)
        };
        let x = f32::from_bits(bits);
        let h = to_f16(x, Rounding::Rn);
        let b = f32_to_bf16(x, Rounding::Rn);
        if x.is_nan() {
            assert_eq!(h, 0x7FFF);
            assert_eq!(b, 0x7FFF);
        } else {
            assert_eq!(h, half::f16::from_f32(x).to_bits(), "f16 of {bits:#010x}");
            assert_eq!(b, half::bf16::from_f32(x).to_bits(), "bf16 of {bits:#010x}");
        }
    }
}

/// The directed modes bracket the exact value with adjacent f16 values, and
/// `.rz` picks the one toward zero — checked exactly in f64, on samples.
#[test]
fn directed_f16_rounding_brackets_the_value() {
    let mut rng = Rng(42);
    for _ in 0..200_000 {
        let exp = 127 - 28 + (rng.next() % 46) as u32;
        let bits = ((rng.next() as u32) & 0x8000_0000) | (exp << 23) | ((rng.next() as u32) & 0x7F_FFFF);
        let x = f32::from_bits(bits);
        let exact = f64::from(x);
        let down = to_f16(x, Rounding::Rm);
        let up = to_f16(x, Rounding::Rp);
        let zero = to_f16(x, Rounding::Rz);
        let near = to_f16(x, Rounding::Rn);
        let (lo, hi) = (f64::from(f16_to_f32(down)), f64::from(f16_to_f32(up)));
        assert!(lo <= exact && exact <= hi, "{x:e}: {lo:e} {hi:e}");
        if lo == exact {
            assert_eq!(down, up);
            assert_eq!(near, down);
        } else {
            // Adjacent in the ordering of f16 values (bits step by one away from zero).
            let (small, large) = if x > 0.0 { (down, up) } else { (up, down) };
            assert_eq!(large, small + 1, "{x:e}");
            assert_eq!(zero, small);
            // Nearest rounding treats ∞ as the next step past 65504 (2^16),
            // as if the exponent range went on.
            let unbounded = |v: f64| if v.is_infinite() { 65536f64.copysign(v) } else { v };
            let (dl, dh) = (exact - unbounded(lo), unbounded(hi) - exact);
            if dl < dh {
                assert_eq!(near, down);
            } else if dh < dl {
                assert_eq!(near, up);
            } else {
                assert_eq!(near & 1, 0, "tie goes to even");
            }
        }
    }
}

#[test]
fn f16_halfway_cases_in_every_mode() {
    let ulp = 2f32.powi(-10);
    // 1 + ulp/2: a tie between 1.0 (even) and 1 + ulp.
    let tie_even = 1.0 + ulp / 2.0;
    assert_eq!(to_f16(tie_even, Rounding::Rn), 0x3C00);
    assert_eq!(to_f16(tie_even, Rounding::Rna), 0x3C01);
    assert_eq!(to_f16(tie_even, Rounding::Rz), 0x3C00);
    assert_eq!(to_f16(tie_even, Rounding::Rm), 0x3C00);
    assert_eq!(to_f16(tie_even, Rounding::Rp), 0x3C01);
    // 1 + 3ulp/2: a tie between 1 + ulp (odd) and 1 + 2ulp (even).
    assert_eq!(to_f16(1.0 + 1.5 * ulp, Rounding::Rn), 0x3C02);
    // Just above and just below halfway.
    let above = 1.0 + ulp / 2.0 + 2f32.powi(-20);
    let below = 1.0 + ulp / 2.0 - 2f32.powi(-20);
    assert_eq!(to_f16(above, Rounding::Rn), 0x3C01);
    assert_eq!(to_f16(below, Rounding::Rn), 0x3C00);
    assert_eq!(to_f16(below, Rounding::Rp), 0x3C01);
    assert_eq!(to_f16(-above, Rounding::Rm), 0xBC01);
    assert_eq!(to_f16(-above, Rounding::Rp), 0xBC00);
    assert_eq!(to_f16(-above, Rounding::Rz), 0xBC00);
    assert_eq!(to_f16(-below, Rounding::Rn), 0xBC00);
}

#[test]
fn f16_overflow_depends_on_rounding_mode() {
    assert_eq!(to_f16(70000.0, Rounding::Rn), 0x7C00);
    assert_eq!(to_f16(70000.0, Rounding::Rz), 0x7BFF);
    assert_eq!(to_f16(70000.0, Rounding::Rm), 0x7BFF);
    assert_eq!(to_f16(70000.0, Rounding::Rp), 0x7C00);
    assert_eq!(to_f16(-70000.0, Rounding::Rm), 0xFC00);
    assert_eq!(to_f16(-70000.0, Rounding::Rp), 0xFBFF);
    assert_eq!(to_f16(-70000.0, Rounding::Rz), 0xFBFF);
    // 65520 is halfway between 65504 (odd mantissa) and 65536 (= ∞).
    assert_eq!(to_f16(65520.0, Rounding::Rn), 0x7C00);
    assert_eq!(to_f16(65519.0, Rounding::Rn), 0x7BFF);
    assert_eq!(to_f16(f32::INFINITY, Rounding::Rz), 0x7C00, "∞ itself is not an overflow");
    assert_eq!(to_f16(f32::NEG_INFINITY, Rounding::Rn), 0xFC00);
}

#[test]
fn f16_subnormals_zeros_and_nan() {
    let min_sub = 2f32.powi(-24);
    assert_eq!(to_f16(min_sub, Rounding::Rn), 0x0001);
    assert_eq!(to_f16(min_sub / 2.0, Rounding::Rn), 0x0000, "tie to even zero");
    assert_eq!(to_f16(min_sub / 2.0, Rounding::Rp), 0x0001);
    assert_eq!(to_f16(min_sub * 0.75, Rounding::Rn), 0x0001);
    assert_eq!(to_f16(-min_sub / 2.0, Rounding::Rm), 0x8001);
    assert_eq!(to_f16(-min_sub / 2.0, Rounding::Rn), 0x8000, "sign of an underflow to zero is kept");
    assert_eq!(to_f16(2f32.powi(-14) * 1.5, Rounding::Rn), 0x0600);
    // The largest subnormal rounds up into the smallest normal.
    assert_eq!(to_f16(2f32.powi(-14) - 2f32.powi(-26), Rounding::Rn), 0x0400);
    assert_eq!(to_f16(0.0, Rounding::Rn), 0x0000);
    assert_eq!(to_f16(-0.0, Rounding::Rn), 0x8000);
    assert_eq!(to_f16(f32::NAN, Rounding::Rn), 0x7FFF);
    assert_eq!(to_f16(-f32::NAN, Rounding::Rz), 0x7FFF);
    // Widening keeps the NaN's sign and payload.
    assert_eq!(f16_to_f32(0xFE01).to_bits(), 0xFFC0_2000);
}

#[test]
fn f32_subnormals_are_kept_unless_ftz() {
    let tiny = 2f64.powi(-140);
    let bits = tiny.to_bits();
    assert_eq!(cvt(F32, F64, Some(Rounding::Rn), false, false, false, bits), 0x0000_0200);
    assert_eq!(cvt(F32, F64, Some(Rounding::Rn), true, false, false, bits), 0);
    assert_eq!(cvt(F32, F64, Some(Rounding::Rn), true, false, false, (-tiny).to_bits()), 0x8000_0000);
    // f64 → f32 below half the smallest subnormal.
    assert_eq!(cvt(F32, F64, Some(Rounding::Rp), false, false, false, 2f64.powi(-160).to_bits()), 1);
    assert_eq!(cvt(F32, F64, Some(Rounding::Rn), false, false, false, 2f64.powi(-160).to_bits()), 0);
    // An f32 subnormal widens to an exact normal f64, and flushes with .ftz.
    let sub = f32::from_bits(3);
    assert_eq!(cvt(F64, F32, None, false, false, false, f32b(sub)), (3.0 * 2f64.powi(-149)).to_bits());
    assert_eq!(cvt(F64, F32, None, true, false, false, f32b(-sub)), (-0.0f64).to_bits());
}

#[test]
fn f64_to_f32_overflow_and_exactness() {
    let big = 1e300f64.to_bits();
    assert_eq!(cvt(F32, F64, Some(Rounding::Rn), false, false, false, big), 0x7F80_0000);
    assert_eq!(cvt(F32, F64, Some(Rounding::Rz), false, false, false, big), 0x7F7F_FFFF);
    assert_eq!(cvt(F32, F64, Some(Rounding::Rm), false, false, false, (-1e300f64).to_bits()), 0xFF80_0000);
    let third = (1.0f64 / 3.0).to_bits();
    assert_eq!(cvt(F32, F64, Some(Rounding::Rz), false, false, false, third), 0x3EAA_AAAA);
    assert_eq!(cvt(F32, F64, Some(Rounding::Rp), false, false, false, third), 0x3EAA_AAAB);
    assert_eq!(cvt(F32, F64, Some(Rounding::Rn), false, false, false, third), 0x3EAA_AAAB);
}

#[test]
fn bf16_and_tf32_rounding() {
    // 1 + 2^-8 is a tie between bf16 1.0 and 1 + 2^-7.
    let tie = 1.0 + 2f32.powi(-8);
    assert_eq!(f32_to_bf16(tie, Rounding::Rn), 0x3F80);
    assert_eq!(f32_to_bf16(tie, Rounding::Rp), 0x3F81);
    assert_eq!(f32_to_bf16(-tie, Rounding::Rm), 0xBF81);
    assert_eq!(f32_to_bf16(f32::MAX, Rounding::Rn), 0x7F80);
    assert_eq!(f32_to_bf16(f32::MAX, Rounding::Rz), 0x7F7F);
    // f32 subnormals stay bf16 subnormals.
    assert_eq!(f32_to_bf16(f32::from_bits(0x0001_0000), Rounding::Rn), 0x0001);
    assert_eq!(f32_to_bf16(f32::from_bits(0x0000_8000), Rounding::Rn), 0x0000);
    assert_eq!(f32_to_bf16(f32::from_bits(0x0001_8000), Rounding::Rn), 0x0002);

    let tf32 = |x: f32, r| cvt(Tf32, F32, Some(r), false, false, false, f32b(x));
    let tie = 1.0 + 2f32.powi(-11);
    assert_eq!(tf32(tie, Rounding::Rna), 0x3F80_2000);
    assert_eq!(tf32(tie, Rounding::Rn), 0x3F80_0000);
    assert_eq!(tf32(1.0 + 3.0 * 2f32.powi(-11), Rounding::Rn), 0x3F80_4000);
    assert_eq!(tf32(-tie, Rounding::Rna), 0xBF80_2000);
    assert_eq!(tf32(1.0 + 2f32.powi(-12), Rounding::Rz), 0x3F80_0000);
}

#[test]
fn f16_bf16_cross_conversion_rounds() {
    // f16 1 + 2^-10 has more precision than bf16 keeps.
    assert_eq!(cvt(Bf16, F16, Some(Rounding::Rn), false, false, false, 0x3C01), 0x3F80);
    assert_eq!(cvt(Bf16, F16, Some(Rounding::Rp), false, false, false, 0x3C01), 0x3F81);
    // bf16 2^20 is beyond f16's range.
    assert_eq!(cvt(F16, Bf16, Some(Rounding::Rn), false, false, false, 0x4980), 0x7C00);
    assert_eq!(cvt(F16, Bf16, Some(Rounding::Rz), false, false, false, 0x4980), 0x7BFF);
    assert_eq!(cvt(F64, Bf16, Some(Rounding::Rp), false, false, false, 0xC040), (-3.0f64).to_bits());
}

#[test]
fn integer_to_integer_truncates_extends_and_saturates() {
    let c = |d: ScalarType, s: ScalarType, sat: bool, v: u64| cvt(d, s, None, false, sat, false, v);
    assert_eq!(c(S32, S8, false, 0x80), 0xFFFF_FF80, "sign extension");
    assert_eq!(c(U32, U8, false, 0x80), 0x80, "zero extension");
    assert_eq!(c(U32, S8, false, 0xFF), 0xFFFF_FFFF);
    assert_eq!(c(U32, S8, true, 0xFF), 0, "-1 saturates to 0");
    assert_eq!(c(U8, U32, false, 0x1FF), 0xFF, "truncation");
    assert_eq!(c(U8, U32, true, 0x100), 0xFF);
    assert_eq!(c(S8, S32, true, 200), 0x7F);
    assert_eq!(c(S8, S32, true, (-200i32) as u32 as u64), 0x80);
    assert_eq!(c(S8, S32, false, 200), 200 & 0xFF);
    assert_eq!(c(U32, S32, true, (-5i32) as u32 as u64), 0);
    assert_eq!(c(S32, U32, true, 0xFFFF_FFFF), 0x7FFF_FFFF);
    assert_eq!(c(S64, S32, false, 0xFFFF_FFFE), (-2i64) as u64);
    assert_eq!(c(U64, S64, true, (-1i64) as u64), 0);
    assert_eq!(c(S16, U64, true, 40_000), 0x7FFF);
    // Bits above the source width are ignored.
    assert_eq!(c(S32, S16, false, 0xABCD_0001), 1);
}

#[test]
fn float_to_integer_rounds_and_saturates() {
    let c = |d: ScalarType, r, x: f32| cvt(d, F32, Some(r), false, false, false, f32b(x));
    use Rounding::*;
    assert_eq!(c(S32, Rni, 2.5), 2);
    assert_eq!(c(S32, Rni, 3.5), 4);
    assert_eq!(c(S32, Rni, -2.5), (-2i32) as u32 as u64);
    assert_eq!(c(S32, Rzi, -2.7), (-2i32) as u32 as u64);
    assert_eq!(c(S32, Rmi, -2.1), (-3i32) as u32 as u64);
    assert_eq!(c(S32, Rpi, 2.1), 3);
    assert_eq!(c(S32, Rpi, -0.5), 0);
    assert_eq!(c(U32, Rni, 1e10), 0xFFFF_FFFF);
    assert_eq!(c(U32, Rni, -1.0), 0);
    assert_eq!(c(U32, Rpi, -0.5), 0);
    assert_eq!(c(S32, Rzi, 3e9), 0x7FFF_FFFF);
    assert_eq!(c(S32, Rzi, f32::NEG_INFINITY), 0x8000_0000);
    assert_eq!(c(S32, Rzi, f32::INFINITY), 0x7FFF_FFFF);
    assert_eq!(c(S8, Rni, 300.0), 0x7F);
    assert_eq!(c(S8, Rni, -300.0), 0x80);
    assert_eq!(c(U8, Rni, 255.4), 0xFF);
    assert_eq!(c(S64, Rzi, -9.3e18), (-9_300_000_000_000_000_000f32 as i64) as u64);
    assert_eq!(c(U64, Rzi, 1.8e19), 1.8e19f32 as u64);
    // NaN: 0, except from .f64 or to 64-bit integers.
    assert_eq!(c(S32, Rni, f32::NAN), 0);
    assert_eq!(c(U16, Rni, f32::NAN), 0);
    assert_eq!(c(S64, Rni, f32::NAN), 0x8000_0000_0000_0000);
    assert_eq!(cvt(S32, F64, Some(Rzi), false, false, false, f64::NAN.to_bits()), 0x8000_0000);
    // .ftz flushes an f32 subnormal before rounding up.
    let sub = f32::from_bits(1);
    assert_eq!(c(S32, Rpi, sub), 1);
    assert_eq!(cvt(S32, F32, Some(Rpi), true, false, false, f32b(sub)), 0);
    // f16 and f64 sources.
    assert_eq!(cvt(S32, F16, Some(Rni), false, false, false, 0x3E00), 2, "1.5 → 2");
    assert_eq!(cvt(S64, F64, Some(Rmi), false, false, false, (-1e30f64).to_bits()), 0x8000_0000_0000_0000);
}

#[test]
fn integer_to_float_rounds() {
    use Rounding::*;
    let c = |d: ScalarType, s: ScalarType, r, v: u64| cvt(d, s, Some(r), false, false, false, v);
    assert_eq!(c(F32, S32, Rn, 16_777_217), 0x4B80_0000, "2^24 + 1 ties to even");
    assert_eq!(c(F32, S32, Rp, 16_777_217), 0x4B80_0001);
    assert_eq!(c(F32, S32, Rn, 16_777_219), 0x4B80_0002, "2^24 + 3 ties to even (up)");
    assert_eq!(c(F32, S32, Rm, (-16_777_217i32) as u32 as u64), 0xCB80_0001);
    assert_eq!(c(F32, U64, Rz, u64::MAX), 0x5F7F_FFFF);
    assert_eq!(c(F32, U64, Rn, u64::MAX), 0x5F80_0000);
    assert_eq!(c(F16, S32, Rn, 65_520), 0x7C00);
    assert_eq!(c(F16, S32, Rz, 65_520), 0x7BFF);
    assert_eq!(c(F16, S32, Rn, 0), 0);
    assert_eq!(c(F64, S64, Rn, i64::MIN as u64), (-(2f64.powi(63))).to_bits());
    assert_eq!(c(F64, S8, Rn, 0xFF), (-1.0f64).to_bits());
    assert_eq!(c(Bf16, U32, Rn, 257), 0x4380, "257 ties to 256 in bf16");
    assert_eq!(c(Bf16, U32, Rp, 257), 0x4381);
}

#[test]
fn round_to_integral_keeps_the_type() {
    use Rounding::*;
    let c = |r, x: f32| f32::from_bits(cvt(F32, F32, Some(r), false, false, false, f32b(x)) as u32);
    assert_eq!(c(Rni, 2.5), 2.0);
    assert_eq!(c(Rni, 3.5), 4.0);
    assert_eq!(c(Rni, -0.4).to_bits(), 0x8000_0000, "sign of zero is kept");
    assert_eq!(c(Rpi, 1.1), 2.0);
    assert_eq!(c(Rpi, -0.9).to_bits(), 0x8000_0000);
    assert_eq!(c(Rmi, -1.1), -2.0);
    assert_eq!(c(Rzi, -1.9), -1.0);
    assert_eq!(c(Rni, 8_388_609.0), 8_388_609.0, "already integral");
    assert_eq!(c(Rni, f32::INFINITY), f32::INFINITY);
    assert!(c(Rni, f32::NAN).is_nan());
    assert_eq!(cvt(F16, F16, Some(Rni), false, false, false, 0x3E00), 0x4000, "1.5 → 2");
    assert_eq!(cvt(F16, F16, Some(Rni), false, false, false, 0x3A00), 0x3C00, "0.75 → 1");
    assert_eq!(cvt(F16, F16, Some(Rzi), false, false, false, 0xBA00), 0x8000, "-0.75 → -0");
    assert_eq!(cvt(F64, F64, Some(Rmi), false, false, false, 0.5f64.to_bits()), 0);
    // .ftz flushes a subnormal before rounding up.
    assert_eq!(cvt(F32, F32, Some(Rpi), false, false, false, 1), 0x3F80_0000);
    assert_eq!(cvt(F32, F32, Some(Rpi), true, false, false, 1), 0);
}

#[test]
fn sat_relu_and_satfinite() {
    use Rounding::*;
    let sat32 = |x: f32| f32::from_bits(cvt(F32, F32, None, false, true, false, f32b(x)) as u32);
    assert_eq!(sat32(1.5), 1.0);
    assert_eq!(sat32(0.25), 0.25);
    assert_eq!(sat32(-3.0).to_bits(), 0);
    assert_eq!(sat32(f32::NAN).to_bits(), 0, "NaN saturates to +0");
    assert_eq!(sat32(f32::INFINITY), 1.0);
    assert_eq!(cvt(F16, F32, Some(Rn), false, true, false, f32b(2.0)), 0x3C00);
    assert_eq!(cvt(F32, S32, Some(Rn), false, true, false, 7), 0x3F80_0000);

    let relu = |d, x: f32| cvt(d, F32, Some(Rn), false, false, true, f32b(x));
    assert_eq!(relu(F16, -1.0), 0);
    assert_eq!(relu(F16, 1.0), 0x3C00);
    assert_eq!(relu(F16, f32::NAN), 0x7FFF);
    assert_eq!(relu(Bf16, -5.0), 0);
    assert_eq!(relu(Bf16, -f32::NAN), 0x7FFF);

    let finite = CvtModifiers { rnd: Some(Rn), satfinite: true, ..Default::default() };
    assert_eq!(cvt_with(F16, F32, &finite, f32b(1e6)), 0x7BFF);
    assert_eq!(cvt_with(F16, F32, &finite, f32b(f32::NEG_INFINITY)), 0xFBFF);
    assert_eq!(cvt_with(F16, F32, &finite, f32b(f32::NAN)), 0x7FFF);
    assert_eq!(cvt_with(Bf16, F32, &finite, f32b(f32::INFINITY)), 0x7F7F);
}

#[test]
fn packs_a_high_and_b_low() {
    assert_eq!(cvt_pack_f32x2(F16x2, Rounding::Rn, false, 1.0, -2.0), 0x3C00_C000);
    assert_eq!(cvt_pack_f32x2(Bf16x2, Rounding::Rn, false, 1.0, 2.0), 0x3F80_4000);
    assert_eq!(cvt_pack_f32x2(F16x2, Rounding::Rn, true, -1.0, 0.5), 0x0000_3800);
    let tie = 1.0 + 2f32.powi(-11);
    assert_eq!(cvt_pack_f32x2(F16x2, Rounding::Rz, false, 70000.0, tie), 0x7BFF_3C00);
    let finite = CvtModifiers { rnd: Some(Rounding::Rn), satfinite: true, ..Default::default() };
    assert_eq!(ptx_emu::numerics::cvt_pack_f32x2_with(F16x2, &finite, 1e9, -1e9), 0x7BFF_FBFF);
}

#[test]
fn validity_follows_the_isa() {
    use Rounding::*;
    let ok = |d, s, r, sat, relu| cvt_is_valid(d, s, r, sat, relu).is_ok();
    // Legal forms nvcc emits.
    assert!(ok(F32, S32, Some(Rn), false, false));
    assert!(ok(S32, F32, Some(Rzi), false, false));
    assert!(ok(U32, F32, Some(Rni), true, false), ".sat is redundant but legal for float → int");
    assert!(ok(F32, F16, None, false, false));
    assert!(ok(F32, Bf16, None, false, false));
    assert!(ok(F16, F32, Some(Rn), false, false));
    assert!(ok(Bf16, F32, Some(Rz), false, true));
    assert!(ok(F32, F32, None, true, false));
    assert!(ok(F32, F32, Some(Rni), false, false));
    assert!(ok(F64, F32, None, false, false));
    assert!(ok(F32, F64, Some(Rm), false, false));
    assert!(ok(Tf32, F32, Some(Rna), false, false));
    assert!(ok(F16x2, F32, Some(Rn), false, true));
    assert!(ok(U8, U32, None, true, false));
    assert!(ok(U32, S32, None, true, false));
    assert!(ok(S32, S8, None, false, false));
    assert!(ok(F64, Bf16, Some(Rp), false, false), "the ISA's own example");
    // Illegal ones.
    assert!(!ok(F32, S32, None, false, false), "int → float needs a rounding");
    assert!(!ok(S32, F32, None, false, false), "float → int needs an integer rounding");
    assert!(!ok(S32, F32, Some(Rn), false, false));
    assert!(!ok(F16, F32, None, false, false), "narrowing needs a rounding");
    assert!(!ok(F16, F32, Some(Rna), false, false), ".rna is for .tf32 only");
    assert!(!ok(F16, F32, Some(Rni), false, false));
    assert!(!ok(F32, F16, Some(Rn), false, false), "exact widening takes none");
    assert!(!ok(F32, F32, Some(Rn), false, false));
    assert!(!ok(S32, S16, None, true, false), ".sat where it cannot saturate");
    assert!(!ok(U32, U16, None, true, false));
    assert!(!ok(S32, S32, Some(Rn), false, false));
    assert!(!ok(B32, U32, None, false, false));
    assert!(!ok(Tf32, F32, Some(Rm), false, false));
    assert!(!ok(Bf16, F32, Some(Rn), true, false), ".sat is for .f16/.f32/.f64");
    assert!(!ok(F32, F16, None, false, true), ".relu is for narrowing .f32");
    assert!(!ok(F16, F32, Some(Rm), false, true), ".relu needs .rn/.rz");
    assert!(!ok(E4m3x2, F32, Some(Rn), false, false));
    let ftz = CvtModifiers { rnd: Some(Rn), ftz: true, ..Default::default() };
    assert!(cvt_is_valid_with(F16, F32, &ftz).is_ok());
    assert!(cvt_is_valid_with(F16, F64, &ftz).is_err(), ".ftz needs an .f32 side");
    let err = cvt_is_valid(F32, S32, None, false, false).unwrap_err();
    assert!(err.contains("f32") && err.contains("s32"), "{err}");
}

//! An exact sum of signed terms `±sig · 2^exp` in a wide two's-complement
//! fixed-point integer, so that `a + b`, `a·b + c` and the k-term dot
//! products of `mma` are formed with no rounding at all and then rounded
//! once by [`super::format::round_to_format`].
//!
//! The window covers every product of two f32 values (subnormals included,
//! 2^-298) up to sums of many products near f32's top (2^256 each), which is
//! every input this module accepts (f16, bf16, tf32, f32).

use super::format::{round_to_format, Direction, FloatFormat};

const LIMBS: usize = 10;
/// Weight of bit 0 of the accumulator.
const LSB_EXP: i32 = -320;

#[derive(Clone, Debug)]
pub(crate) struct ExactSum {
    limbs: [u64; LIMBS],
    saw_positive: bool,
    saw_negative: bool,
}

impl Default for ExactSum {
    fn default() -> Self {
        Self::new()
    }
}

impl ExactSum {
    pub fn new() -> Self {
        Self { limbs: [0; LIMBS], saw_positive: false, saw_negative: false }
    }

    /// Adds `±sig · 2^exp`. A zero term (sig = 0) still counts for the sign
    /// of an exactly zero result. Bits below the window (never produced by
    /// the formats above) are dropped.
    pub fn add(&mut self, neg: bool, sig: u128, exp: i32) {
        if neg {
            self.saw_negative = true;
        } else {
            self.saw_positive = true;
        }
        if sig == 0 {
            return;
        }
        let (sig, pos) = if exp < LSB_EXP {
            (sig.checked_shr((LSB_EXP - exp) as u32).unwrap_or(0), 0)
        } else {
            (sig, (exp - LSB_EXP) as u32)
        };
        let word = (pos / 64) as usize;
        let bit = pos % 64;
        // sig << bit spans at most three limbs.
        let low = sig << bit;
        let high = if bit == 0 { 0 } else { sig >> (128 - bit) };
        let parts = [low as u64, (low >> 64) as u64, high as u64];
        if neg {
            self.sub_at(word, parts);
        } else {
            self.add_at(word, parts);
        }
    }

    /// Adds the product `(±a_sig · 2^a_exp) · (±b_sig · 2^b_exp)`, exactly.
    pub fn add_product(&mut self, neg: bool, a_sig: u64, a_exp: i32, b_sig: u64, b_exp: i32) {
        self.add(neg, u128::from(a_sig) * u128::from(b_sig), a_exp + b_exp);
    }

    fn add_at(&mut self, word: usize, parts: [u64; 3]) {
        let mut carry = false;
        for i in word..LIMBS {
            let part = parts.get(i - word).copied().unwrap_or(0);
            let (s1, c1) = self.limbs[i].overflowing_add(part);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            self.limbs[i] = s2;
            carry = c1 || c2;
            if !carry && i - word >= 2 {
                break;
            }
        }
    }

    fn sub_at(&mut self, word: usize, parts: [u64; 3]) {
        let mut borrow = false;
        for i in word..LIMBS {
            let part = parts.get(i - word).copied().unwrap_or(0);
            let (s1, b1) = self.limbs[i].overflowing_sub(part);
            let (s2, b2) = s1.overflowing_sub(u64::from(borrow));
            self.limbs[i] = s2;
            borrow = b1 || b2;
            if !borrow && i - word >= 2 {
                break;
            }
        }
    }

    /// Rounds the exact sum once to `fmt`. An exact zero follows IEEE 754:
    /// −0 only if every term was negative (zero terms included), or, when
    /// terms of both signs cancelled, if rounding toward −∞.
    pub fn round(&self, fmt: FloatFormat, dir: Direction) -> u64 {
        let mut mag = self.limbs;
        let neg = mag[LIMBS - 1] >> 63 == 1;
        if neg {
            let mut carry = true;
            for limb in mag.iter_mut() {
                let (v, c) = (!*limb).overflowing_add(u64::from(carry));
                *limb = v;
                carry = c;
            }
        }
        let Some(top_word) = mag.iter().rposition(|&l| l != 0) else {
            return fmt.zero(exact_zero_is_negative(self.saw_positive, self.saw_negative, dir));
        };
        let top_bit = top_word as u32 * 64 + 63 - mag[top_word].leading_zeros();
        let word_at = |i: u32| u128::from(mag.get(i as usize).copied().unwrap_or(0));
        let (sig, shift, sticky) = if top_bit < 128 {
            (word_at(0) | (word_at(1) << 64), 0, false)
        } else {
            let shift = top_bit - 127;
            let (w, b) = (shift / 64, shift % 64);
            let window = word_at(w) | (word_at(w + 1) << 64);
            let above = if b == 0 { 0 } else { word_at(w + 2) << (128 - b) };
            let below_in_word = b != 0 && word_at(w) & ((1u128 << b) - 1) != 0;
            let below_words = mag[..w as usize].iter().any(|&l| l != 0);
            ((window >> b) | above, shift, below_in_word || below_words)
        };
        round_to_format(fmt, neg, sig, LSB_EXP + shift as i32, sticky, dir)
    }
}

/// The sign of an exactly zero sum (IEEE 754): −0 only if every term was
/// negative (zero terms included), or, when terms of both signs cancelled,
/// if rounding toward −∞.
pub(crate) fn exact_zero_is_negative(saw_positive: bool, saw_negative: bool, dir: Direction) -> bool {
    match (saw_positive, saw_negative) {
        (false, true) => true,
        (true, true) => dir == Direction::Down,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_term(x: f32) -> (bool, u128, i32) {
        match FloatFormat::F32.decode(u64::from(x.to_bits())) {
            super::super::format::Decoded::Finite { neg, sig, exp } => (neg, u128::from(sig), exp),
            _ => (x.is_sign_negative(), 0, 0),
        }
    }

    #[test]
    fn sum_matches_f64_where_f64_is_exact() {
        let values = [1.5f32, -0.25, 3.0e-3, -7.0, 1.0e-30, 2.0e20];
        let mut acc = ExactSum::new();
        let mut reference = 0.0f64;
        for &v in &values[..4] {
            let (n, s, e) = f32_term(v);
            acc.add(n, s, e);
            reference += f64::from(v);
        }
        let got = f64::from_bits(acc.round(FloatFormat::F64, Direction::NearestEven));
        assert_eq!(got, reference);
    }

    #[test]
    fn cancellation_keeps_tiny_remainder() {
        // 2^100 + 2^-100 - 2^100 = 2^-100 exactly; f64 arithmetic would give 0.
        let mut acc = ExactSum::new();
        acc.add(false, 1, 100);
        acc.add(false, 1, -100);
        acc.add(true, 1, 100);
        assert_eq!(f64::from_bits(acc.round(FloatFormat::F64, Direction::NearestEven)), 2f64.powi(-100));
    }

    #[test]
    fn sticky_decides_directed_rounding() {
        // 1 + 2^-200 rounds up to the next f32 only toward +∞.
        let mut acc = ExactSum::new();
        acc.add(false, 1, 0);
        acc.add(false, 1, -200);
        assert_eq!(acc.round(FloatFormat::F32, Direction::Up), 0x3F80_0001);
        assert_eq!(acc.round(FloatFormat::F32, Direction::NearestEven), 0x3F80_0000);
        let mut acc = ExactSum::new();
        acc.add(false, 1, 0);
        acc.add(true, 1, -200);
        assert_eq!(acc.round(FloatFormat::F32, Direction::TowardZero), 0x3F7F_FFFF);
        assert_eq!(acc.round(FloatFormat::F32, Direction::NearestEven), 0x3F80_0000);
    }

    #[test]
    fn zero_sign_rules() {
        let mut acc = ExactSum::new();
        acc.add(true, 0, 0);
        acc.add(true, 0, 0);
        assert_eq!(acc.round(FloatFormat::F32, Direction::NearestEven), 0x8000_0000);
        let mut acc = ExactSum::new();
        acc.add(true, 3, 0);
        acc.add(false, 3, 0);
        assert_eq!(acc.round(FloatFormat::F32, Direction::NearestEven), 0);
        assert_eq!(acc.round(FloatFormat::F32, Direction::Down), 0x8000_0000);
    }
}

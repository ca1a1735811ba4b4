//! The A, B and C of one warp-level `mma` gathered from the lanes' registers
//! into f64 matrices. Every supported element type (f16, bf16, tf32, f32)
//! converts to f64 exactly, signed zeros, subnormals and ±∞ included; a NaN
//! stays a NaN (its payload does not matter: NaN results are canonical).

use super::layout::{cd_source, InputLayout};
use super::Fragment;
use crate::types::ScalarType;

pub(crate) struct Operands {
    /// Depth of the product (columns of A, rows of B).
    pub k: usize,
    /// A transposed, `a_t[kk][row]`, k × 16 used: a column of A is
    /// contiguous, so per-row quantities are computed sixteen rows abreast.
    pub a_t: [[f64; 16]; 16],
    /// `b[kk][col]`, k × 8 used: a row of B is contiguous, so the eight
    /// outputs of a row of D accumulate side by side.
    pub b: [[f64; 8]; 16],
    /// `c[row][col]`.
    pub c: [[f64; 8]; 16],
}

impl Operands {
    pub fn new() -> Self {
        Self { k: 0, a_t: [[0.0; 16]; 16], b: [[0.0; 8]; 16], c: [[0.0; 8]; 16] }
    }

    /// `layout` must be the one `input_layout` accepted for `ab_ty`; `c_ty`
    /// is `.f16` or `.f32`. Fills `self` in place rather than returning a
    /// new value: moving these 4 KiB costs more than the arithmetic.
    #[inline(always)]
    pub fn gather(
        &mut self,
        layout: InputLayout,
        ab_ty: ScalarType,
        c_ty: ScalarType,
        a: &Fragment,
        b: &Fragment,
        c: &Fragment,
    ) {
        let ops = self;
        ops.k = layout.k();
        // One arm per (layout, type) so that each inlined copy of
        // `fill_inputs` sees constant coordinates and a constant conversion.
        match (layout, ab_ty) {
            (InputLayout::HalfK16, ScalarType::F16) => ops.fill_inputs(InputLayout::HalfK16, f16_to_f64, a, b),
            (InputLayout::HalfK16, _) => ops.fill_inputs(InputLayout::HalfK16, bf16_to_f64, a, b),
            (InputLayout::HalfK8, ScalarType::F16) => ops.fill_inputs(InputLayout::HalfK8, f16_to_f64, a, b),
            (InputLayout::HalfK8, _) => ops.fill_inputs(InputLayout::HalfK8, bf16_to_f64, a, b),
            (InputLayout::Tf32K8, _) => ops.fill_inputs(InputLayout::Tf32K8, tf32_to_f64, a, b),
            (InputLayout::Tf32K4, _) => ops.fill_inputs(InputLayout::Tf32K4, tf32_to_f64, a, b),
        }
        if c_ty == ScalarType::F16 {
            ops.fill_accumulator(|regs, i| f16_to_f64(regs[i / 2] >> (16 * (i & 1)) & 0xFFFF), c);
        } else {
            ops.fill_accumulator(|regs, i| f64::from(f32::from_bits(regs[i])), c);
        }
    }

    #[inline(always)]
    fn fill_inputs(&mut self, layout: InputLayout, convert: impl Fn(u32) -> f64, a: &Fragment, b: &Fragment) {
        let element = |fragment: &Fragment, (lane, i): (usize, usize)| {
            let slot = layout.slot(i);
            let reg = fragment[lane][slot.reg];
            convert(if layout.packed() { reg >> (16 * slot.half) & 0xFFFF } else { reg })
        };
        // Destination order, so each row of `a_t` and `b` is written in
        // one contiguous run.
        for kk in 0..layout.k() {
            for (r, x) in self.a_t[kk].iter_mut().enumerate() {
                *x = element(a, layout.a_source(r, kk));
            }
            for (col, x) in self.b[kk].iter_mut().enumerate() {
                *x = element(b, layout.b_source(kk, col));
            }
        }
    }

    #[inline(always)]
    fn fill_accumulator(&mut self, read: impl Fn(&[u32; 4], usize) -> f64, c: &Fragment) {
        for (r, row) in self.c.iter_mut().enumerate() {
            for (col, x) in row.iter_mut().enumerate() {
                let (lane, i) = cd_source(r, col);
                *x = read(&c[lane], i);
            }
        }
    }
}

/// bf16 is the upper half of an f32.
pub(super) fn bf16_to_f64(bits: u32) -> f64 {
    f64::from(f32::from_bits(bits << 16))
}

/// tf32 operands are f32 patterns whose low 13 bits the hardware ignores.
fn tf32_to_f64(bits: u32) -> f64 {
    f64::from(f32::from_bits(bits & 0xFFFF_E000))
}

pub(super) fn f16_to_f64(bits: u32) -> f64 {
    let magnitude = u64::from(bits & 0x7FFF);
    let sign = u64::from(bits & 0x8000) << 48;
    let value = if magnitude >= 0x7C00 {
        // ±∞ and NaN: all-ones exponent, the mantissa kept (nonzero for NaN).
        0x7FF0_0000_0000_0000 | (magnitude & 0x3FF) << 42
    } else {
        // The f16 fields moved to the top of an f64 read 2^(1023 − 15) times
        // too small, subnormals included (they become f64 subnormals with
        // the same integer significand); the scaling by a power of two is exact.
        (f64::from_bits(magnitude << 42) * 2f64.powi(1008)).to_bits()
    };
    f64::from_bits(value | sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_is_exact_for_every_pattern() {
        for bits in 0..=0xFFFFu32 {
            let got = f16_to_f64(bits);
            let (sign, exp, man) = (bits >> 15, (bits >> 10) & 0x1F, bits & 0x3FF);
            let magnitude = match exp {
                0 => f64::from(man) * 2f64.powi(-24),
                0x1F if man == 0 => f64::INFINITY,
                0x1F => f64::NAN,
                _ => f64::from(man | 0x400) * 2f64.powi(exp as i32 - 25),
            };
            let want = if sign == 1 { -magnitude } else { magnitude };
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn bf16_and_tf32_conversions() {
        assert_eq!(bf16_to_f64(0x3F80), 1.0);
        assert_eq!(bf16_to_f64(0xC040), -3.0);
        assert_eq!(bf16_to_f64(0x0001), 2f64.powi(-133));
        assert_eq!(bf16_to_f64(0x8000).to_bits(), (-0.0f64).to_bits());
        assert_eq!(bf16_to_f64(0xFF80), f64::NEG_INFINITY);
        // The 13 low bits are ignored: 1 + 2^-10 + junk reads as 1 + 2^-10.
        assert_eq!(tf32_to_f64(0x3F80_2000 | 0x1FFF), 1.0 + 2f64.powi(-10));
    }
}

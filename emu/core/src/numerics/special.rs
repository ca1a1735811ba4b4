//! The `.approx.f32` special functions. Each returns the f64 value of the
//! exact function rounded to nearest f32: within 0.5 ulp plus the f64
//! library's error (< 2^-50 relative) of the exact result, which is inside
//! every bound the PTX ISA documents for these instructions:
//!
//! | op | ISA bound | here |
//! | --- | --- | --- |
//! | `ex2.approx.f32` | 2 ulp | ≤ 0.5 ulp + ε |
//! | `lg2.approx.f32` | 2^-22 abs. in (0.5, 2), 2^-22 rel. elsewhere | ≤ 0.5 ulp + ε |
//! | `rcp.approx.f32` | 1 ulp | correctly rounded (exact division) |
//! | `rsqrt.approx.f32` | 2^-22.9 rel. | ≤ 0.5 ulp + ε |
//! | `sqrt.approx.f32` | 2^-23 rel. | correctly rounded (f64 sqrt rounds innocuously) |
//! | `sin/cos.approx.f32` | 2^-20.5 abs. in [-2π, 2π] | ≤ 0.5 ulp + ε |
//! | `tanh.approx.f32` | 2^-11 rel. | ≤ 0.5 ulp + ε |
//!
//! A kernel that only works with the hardware's particular approximation
//! error is not something this model tries to reproduce.

use super::arith::float_op;
use super::format::{Direction, FloatFormat};
use super::{FloatOp, SpecialOp};

/// The f32 canonical NaN the hardware produces, 0x7FFFFFFF.
fn canonical_nan() -> f32 {
    f32::from_bits(0x7FFF_FFFF)
}

pub(crate) fn special(op: SpecialOp, ftz: bool, x: f32) -> f32 {
    let fmt = FloatFormat::F32;
    let x = if ftz { f32::from_bits(fmt.flush_subnormal(u64::from(x.to_bits())) as u32) } else { x };
    if x.is_nan() {
        return canonical_nan();
    }
    let r = match op {
        SpecialOp::Ex2 => {
            if x == f32::NEG_INFINITY {
                0.0
            } else {
                f64::from(x).exp2() as f32
            }
        }
        SpecialOp::Lg2 => {
            if x == 0.0 {
                f32::NEG_INFINITY
            } else if x < 0.0 {
                canonical_nan()
            } else {
                f64::from(x).log2() as f32
            }
        }
        SpecialOp::Rcp => {
            let one = u64::from(1.0f32.to_bits());
            f32::from_bits(float_op(fmt, FloatOp::Div, Direction::NearestEven, one, u64::from(x.to_bits()), 0) as u32)
        }
        SpecialOp::Rsqrt => {
            if x == 0.0 {
                // ±0 → ±∞
                f32::INFINITY.copysign(x)
            } else if x < 0.0 {
                canonical_nan()
            } else {
                (1.0 / f64::from(x).sqrt()) as f32
            }
        }
        SpecialOp::Sqrt => {
            if x == 0.0 {
                x
            } else if x < 0.0 {
                canonical_nan()
            } else {
                f64::from(x).sqrt() as f32
            }
        }
        SpecialOp::Sin | SpecialOp::Cos if x.is_infinite() => canonical_nan(),
        // sin(±0) = ±0 falls out of the f64 sine.
        SpecialOp::Sin => f64::from(x).sin() as f32,
        SpecialOp::Cos => f64::from(x).cos() as f32,
        SpecialOp::Tanh => f64::from(x).tanh() as f32,
    };
    if ftz {
        f32::from_bits(fmt.flush_subnormal(u64::from(r.to_bits())) as u32)
    } else {
        r
    }
}

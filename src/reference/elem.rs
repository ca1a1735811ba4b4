//! The element types the reference computes on: the kernel types and f64.

use half::{bf16, f16};

/// A storage type of the reference: how a value is rounded into it and read
/// back. `f64` is included, with every rounding the identity, so the algebra
/// can be tested with no rounding at all.
pub trait RefElem: Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// Unit roundoff (half an ulp at 1.0); 2⁻⁵³ for f64.
    const UNIT_ROUNDOFF: f64;
    /// Whether the naive reference accumulates in f32 (the kernel types) or
    /// f64 (the f64 "no rounding" path).
    const NAIVE_IN_F32: bool;
    /// Rounds to nearest even, through f32 for the halves as the kernels do
    /// (their f32 accumulator is rounded once).
    fn from_f64(x: f64) -> Self;
    /// `x` rounded to this type.
    fn from_f32(x: f32) -> Self;
    /// The value as an f64 (exact).
    fn to_f64(self) -> f64;
    /// `from_f64(x).to_f64()`: the value a stored intermediate holds.
    fn round_f64(x: f64) -> f64 {
        Self::from_f64(x).to_f64()
    }
    /// One kept element of the dropped-out input, `round_T(x·inv_keep)`. The
    /// kernel types take the product in f32 (`x as f32 · inv_keep`), f64 in
    /// f64 with the f64 factor `1 / (1 − p)`.
    fn dropout_scaled(x: Self, p: f32, inv_keep: f32) -> f64;
    /// The factor a kept element's gradient is multiplied by: `inv_keep` for
    /// the kernel types, `1 / (1 − p)` in f64 for f64 (matching
    /// [`RefElem::dropout_scaled`], so finite differences see the same map).
    fn dropout_factor(p: f32, inv_keep: f32) -> f64;
}

macro_rules! storage_elem {
    ($t:ty, $u:expr, $from_f32:expr, $to_f32:expr) => {
        impl RefElem for $t {
            const UNIT_ROUNDOFF: f64 = $u;
            const NAIVE_IN_F32: bool = true;
            fn from_f64(x: f64) -> Self {
                $from_f32(x as f32)
            }
            fn from_f32(x: f32) -> Self {
                $from_f32(x)
            }
            fn to_f64(self) -> f64 {
                $to_f32(self) as f64
            }
            fn dropout_scaled(x: Self, _p: f32, inv_keep: f32) -> f64 {
                Self::from_f32($to_f32(x) * inv_keep).to_f64()
            }
            fn dropout_factor(_p: f32, inv_keep: f32) -> f64 {
                inv_keep as f64
            }
        }
    };
}

storage_elem!(f32, 5.960_464_477_539_063e-8, |x: f32| x, |x: f32| x);
storage_elem!(f16, 4.882_812_5e-4, f16::from_f32, f16::to_f32);
storage_elem!(bf16, 3.906_25e-3, bf16::from_f32, bf16::to_f32);

impl RefElem for f64 {
    const UNIT_ROUNDOFF: f64 = f64::EPSILON / 2.0;
    const NAIVE_IN_F32: bool = false;
    fn from_f64(x: f64) -> Self {
        x
    }
    fn from_f32(x: f32) -> Self {
        x as f64
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn dropout_scaled(x: Self, p: f32, inv_keep: f32) -> f64 {
        x * Self::dropout_factor(p, inv_keep)
    }
    fn dropout_factor(p: f32, _inv_keep: f32) -> f64 {
        1.0 / (1.0 - p as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_through_f32_to_nearest_even() {
        // 1 + 2^-11 is halfway between two f16 values: ties to even gives 1.
        assert_eq!(<f16 as RefElem>::round_f64(1.0 + 2f64.powi(-11)), 1.0);
        assert_eq!(<f16 as RefElem>::round_f64(1.0 + 3.0 * 2f64.powi(-11)), 1.0 + 2f64.powi(-9));
        assert_eq!(<bf16 as RefElem>::round_f64(1.0 + 2f64.powi(-8)), 1.0);
        assert_eq!(<f64 as RefElem>::round_f64(0.1), 0.1);
    }
}

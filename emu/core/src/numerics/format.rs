//! Binary floating-point formats described by their field widths, and the one
//! rounding routine every operation in this module ends with: an exact value
//! (sign, integer significand, power-of-two exponent, sticky bit) rounded once
//! to a format in a given direction. Doing all rounding here, on integers,
//! is what makes the directed modes (`.rz/.rm/.rp`) and ties-away exact
//! instead of inheriting the host's round-to-nearest.

/// An IEEE-754-style binary format: 1 sign bit, `exp_bits`, `man_bits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FloatFormat {
    pub exp_bits: u32,
    pub man_bits: u32,
}

impl FloatFormat {
    pub const F16: Self = Self { exp_bits: 5, man_bits: 10 };
    pub const BF16: Self = Self { exp_bits: 8, man_bits: 7 };
    /// tf32 as a 19-bit format; in a register it is the upper 19 bits of an f32.
    pub const TF32: Self = Self { exp_bits: 8, man_bits: 10 };
    pub const F32: Self = Self { exp_bits: 8, man_bits: 23 };
    pub const F64: Self = Self { exp_bits: 11, man_bits: 52 };

    pub fn bias(self) -> i32 {
        (1 << (self.exp_bits - 1)) - 1
    }

    /// Exponent of the smallest normal number.
    pub fn emin(self) -> i32 {
        1 - self.bias()
    }

    pub fn sign_bit(self) -> u64 {
        1 << (self.exp_bits + self.man_bits)
    }

    fn exp_field_max(self) -> u64 {
        (1 << self.exp_bits) - 1
    }

    fn man_mask(self) -> u64 {
        (1 << self.man_bits) - 1
    }

    pub fn zero(self, neg: bool) -> u64 {
        if neg {
            self.sign_bit()
        } else {
            0
        }
    }

    pub fn inf(self, neg: bool) -> u64 {
        self.zero(neg) | (self.exp_field_max() << self.man_bits)
    }

    pub fn max_finite(self, neg: bool) -> u64 {
        self.zero(neg) | ((self.exp_field_max() - 1) << self.man_bits) | self.man_mask()
    }

    /// The canonical NaN NVIDIA hardware produces: positive, all exponent
    /// and mantissa bits set (0x7FFF for f16/bf16, 0x7FFFFFFF for f32).
    pub fn canonical_nan(self) -> u64 {
        self.sign_bit() - 1
    }

    pub fn is_nan(self, bits: u64) -> bool {
        let mag = bits & (self.sign_bit() - 1);
        mag > self.inf(false)
    }

    pub fn is_subnormal(self, bits: u64) -> bool {
        let mag = bits & (self.sign_bit() - 1);
        mag != 0 && mag >> self.man_bits == 0
    }

    /// Flushes a subnormal to zero of the same sign; other values unchanged.
    pub fn flush_subnormal(self, bits: u64) -> u64 {
        if self.is_subnormal(bits) {
            bits & self.sign_bit()
        } else {
            bits
        }
    }

    /// Splits raw bits (only the low `1 + exp_bits + man_bits` are read).
    pub fn decode(self, bits: u64) -> Decoded {
        let neg = bits & self.sign_bit() != 0;
        let exp_field = (bits >> self.man_bits) & self.exp_field_max();
        let man = bits & self.man_mask();
        if exp_field == self.exp_field_max() {
            return if man == 0 { Decoded::Inf { neg } } else { Decoded::Nan };
        }
        if exp_field == 0 {
            if man == 0 {
                return Decoded::Zero { neg };
            }
            return Decoded::Finite { neg, sig: man, exp: self.emin() - self.man_bits as i32 };
        }
        Decoded::Finite {
            neg,
            sig: man | (1 << self.man_bits),
            exp: exp_field as i32 - self.bias() - self.man_bits as i32,
        }
    }
}

/// A decoded floating-point value; finite ones are `±sig · 2^exp`, `sig > 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Nan,
    Inf { neg: bool },
    Zero { neg: bool },
    Finite { neg: bool, sig: u64, exp: i32 },
}

/// A rounding direction (the value-level meaning of `.rn/.rna/.rz/.rm/.rp`
/// and of their integer-rounding counterparts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    NearestEven,
    NearestAway,
    TowardZero,
    Down,
    Up,
}

impl Direction {
    /// Whether a magnitude truncated to `odd`-ness `odd`, with the first
    /// discarded bit `half` and any further discarded bit `rest`, rounds up
    /// (away from zero) by one unit.
    pub fn increments(self, neg: bool, odd: bool, half: bool, rest: bool) -> bool {
        match self {
            Direction::NearestEven => half && (rest || odd),
            Direction::NearestAway => half,
            Direction::TowardZero => false,
            Direction::Up => !neg && (half || rest),
            Direction::Down => neg && (half || rest),
        }
    }
}

/// `sig >> shift` with the first discarded bit and the OR of the others
/// (`sticky` included), for any shift.
pub(crate) fn shift_right_round_bits(sig: u128, shift: u32, sticky: bool) -> (u128, bool, bool) {
    match shift {
        0 => (sig, false, sticky),
        1..=127 => {
            let half = (sig >> (shift - 1)) & 1 == 1;
            let rest = sig & ((1u128 << (shift - 1)) - 1) != 0;
            (sig >> shift, half, rest || sticky)
        }
        128 => (0, sig >> 127 == 1, sig & (u128::MAX >> 1) != 0 || sticky),
        _ => (0, false, sig != 0 || sticky),
    }
}

/// The result of an overflow past the largest finite value, per direction:
/// to-nearest modes give ∞, the others stop at the largest finite value on
/// the side they round toward zero.
fn overflow(fmt: FloatFormat, neg: bool, dir: Direction) -> u64 {
    let to_inf = match dir {
        Direction::NearestEven | Direction::NearestAway => true,
        Direction::TowardZero => false,
        Direction::Up => !neg,
        Direction::Down => neg,
    };
    if to_inf {
        fmt.inf(neg)
    } else {
        fmt.max_finite(neg)
    }
}

/// Rounds the exact value `±(sig + ε) · 2^exp` to `fmt` in direction `dir`
/// and returns its bits. `sticky` says `0 < ε < 1` (the value has nonzero
/// bits below `sig`'s last one); producers set it only when `sig` already
/// carries more bits than the format keeps, so it never has to be shifted
/// left. Subnormal results, carry into the next binade, and overflow are
/// all handled here.
pub(crate) fn round_to_format(fmt: FloatFormat, neg: bool, sig: u128, exp: i32, sticky: bool, dir: Direction) -> u64 {
    let sign = fmt.zero(neg);
    if sig == 0 {
        // Only reachable with a sticky remainder of a quantity that is
        // itself below 2^exp; treat it as a tiny nonzero magnitude.
        let up = sticky && dir.increments(neg, false, false, true);
        return sign | u64::from(up);
    }
    let man = fmt.man_bits as i32;
    let top = exp + (127 - sig.leading_zeros() as i32);
    if top > fmt.bias() {
        return overflow(fmt, neg, dir);
    }
    let eff = top.max(fmt.emin());
    let quantum = eff - man;
    let (q, half, rest) = if quantum <= exp {
        // Exact: at most `man + 1` bits after the shift (top ≤ eff).
        (sig << (exp - quantum) as u32, false, sticky)
    } else {
        shift_right_round_bits(sig, (quantum - exp) as u32, sticky)
    };
    let q = q + u128::from(dir.increments(neg, q & 1 == 1, half, rest));
    // A subnormal has exponent field 0 and significand q < 2^man; a carry to
    // q = 2^man or 2^(man+1) lands in the next field value by itself.
    let biased_minus_one = (eff + fmt.bias() - 1) as u128;
    let mag = (biased_minus_one << man) + q;
    if mag >= u128::from(fmt.inf(false)) {
        return overflow(fmt, neg, dir);
    }
    sign | mag as u64
}

/// `±sig · 2^exp` rounded to an integer magnitude in direction `dir`;
/// saturates at `u128::MAX` when the magnitude does not fit.
pub(crate) fn round_to_integer(neg: bool, sig: u64, exp: i32, dir: Direction) -> u128 {
    let sig = u128::from(sig);
    if exp >= 0 {
        let bits = 128 - sig.leading_zeros();
        if exp as u32 + bits > 128 {
            return u128::MAX;
        }
        return sig << exp as u32;
    }
    let (q, half, rest) = shift_right_round_bits(sig, exp.unsigned_abs(), false);
    q + u128::from(dir.increments(neg, q & 1 == 1, half, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_and_round_trip_every_f16() {
        let f = FloatFormat::F16;
        for bits in 0..=0xFFFFu64 {
            match f.decode(bits) {
                Decoded::Finite { neg, sig, exp } => {
                    assert_eq!(round_to_format(f, neg, u128::from(sig), exp, false, Direction::NearestEven), bits);
                }
                Decoded::Zero { neg } => assert_eq!(f.zero(neg), bits),
                Decoded::Inf { neg } => assert_eq!(f.inf(neg), bits),
                Decoded::Nan => assert!(f.is_nan(bits)),
            }
        }
    }

    #[test]
    fn overflow_per_direction() {
        let f = FloatFormat::F16;
        // 65536 = 2^16 is beyond f16's max finite 65504.
        assert_eq!(round_to_format(f, false, 1, 16, false, Direction::NearestEven), 0x7C00);
        assert_eq!(round_to_format(f, false, 1, 16, false, Direction::TowardZero), 0x7BFF);
        assert_eq!(round_to_format(f, true, 1, 16, false, Direction::Up), 0xFBFF);
        assert_eq!(round_to_format(f, true, 1, 16, false, Direction::Down), 0xFC00);
        assert_eq!(round_to_format(f, false, 1, 16, false, Direction::Down), 0x7BFF);
    }

    #[test]
    fn integer_rounding_ties() {
        // 2.5 = 5 · 2^-1
        assert_eq!(round_to_integer(false, 5, -1, Direction::NearestEven), 2);
        assert_eq!(round_to_integer(false, 5, -1, Direction::NearestAway), 3);
        assert_eq!(round_to_integer(false, 7, -1, Direction::NearestEven), 4);
        assert_eq!(round_to_integer(true, 5, -1, Direction::Down), 3);
        assert_eq!(round_to_integer(true, 5, -1, Direction::Up), 2);
        assert_eq!(round_to_integer(false, 1, 200, Direction::Up), u128::MAX);
    }
}

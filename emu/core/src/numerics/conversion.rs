//! `cvt` between integers and floats of every width the ISA lists
//! (PTX ISA 9.0, "Data Movement and Conversion Instructions: cvt"):
//! which modifier combinations are legal, and their exact results.

use super::format::{round_to_format, round_to_integer, Decoded, Direction, FloatFormat};
use super::{CvtModifiers, Rounding};
use crate::types::ScalarType;

/// What a `cvt` operand type is, for conversion purposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int {
        signed: bool,
        bits: u32,
    },
    Float(FloatFormat),
    /// `.f16x2`/`.bf16x2` destinations of the two-source form; the element format.
    Packed(FloatFormat),
}

fn kind(ty: ScalarType) -> Option<Kind> {
    use ScalarType::*;
    Some(match ty {
        U8 | U16 | U32 | U64 | S8 | S16 | S32 | S64 => {
            Kind::Int { signed: ty.is_signed_int(), bits: ty.size_bytes() * 8 }
        }
        F16 => Kind::Float(FloatFormat::F16),
        Bf16 => Kind::Float(FloatFormat::BF16),
        Tf32 => Kind::Float(FloatFormat::TF32),
        F32 => Kind::Float(FloatFormat::F32),
        F64 => Kind::Float(FloatFormat::F64),
        F16x2 => Kind::Packed(FloatFormat::F16),
        Bf16x2 => Kind::Packed(FloatFormat::BF16),
        Pred | B8 | B16 | B32 | B64 | B128 | E4m3x2 | E5m2x2 => return None,
    })
}

pub(crate) fn direction(rnd: Rounding) -> Direction {
    match rnd {
        Rounding::Rn | Rounding::Rni => Direction::NearestEven,
        Rounding::Rna => Direction::NearestAway,
        Rounding::Rz | Rounding::Rzi => Direction::TowardZero,
        Rounding::Rm | Rounding::Rmi => Direction::Down,
        Rounding::Rp | Rounding::Rpi => Direction::Up,
    }
}

fn is_integer_rounding(rnd: Rounding) -> bool {
    matches!(rnd, Rounding::Rni | Rounding::Rzi | Rounding::Rmi | Rounding::Rpi)
}

fn is_float_rounding(rnd: Rounding) -> bool {
    matches!(rnd, Rounding::Rn | Rounding::Rz | Rounding::Rm | Rounding::Rp)
}

/// Whether converting `src` to `dst` can lose precision or range.
fn is_lossy(dst: FloatFormat, src: FloatFormat) -> bool {
    dst.man_bits < src.man_bits || dst.exp_bits < src.exp_bits
}

fn suffix(ty: ScalarType) -> String {
    format!("{ty:?}").to_lowercase()
}

pub(crate) fn is_valid(dst: ScalarType, src: ScalarType, m: &CvtModifiers) -> Result<(), String> {
    let name = || format!("cvt .{} ← .{}", suffix(dst), suffix(src));
    let (Some(dk), Some(sk)) = (kind(dst), kind(src)) else {
        return Err(format!("{}: only .u8-.u64, .s8-.s64, .f16, .bf16, .tf32, .f32, .f64 and packed .f16x2/.bf16x2 destinations are supported", name()));
    };
    if m.ftz && dst != ScalarType::F32 && src != ScalarType::F32 {
        return Err(format!("{}: .ftz needs .f32 as source or destination", name()));
    }
    let float_dst_sat_ok = matches!(dst, ScalarType::F16 | ScalarType::F32 | ScalarType::F64);
    let relu_satfinite_dst =
        matches!(dst, ScalarType::F16 | ScalarType::Bf16 | ScalarType::Tf32 | ScalarType::F16x2 | ScalarType::Bf16x2);
    if (m.relu || m.satfinite) && !(relu_satfinite_dst && src == ScalarType::F32) {
        return Err(format!("{}: .relu/.satfinite only convert .f32 to .f16, .bf16, .tf32 or their pairs", name()));
    }
    match (dk, sk) {
        (_, Kind::Packed(_)) => Err(format!("{}: a packed source is not a cvt form", name())),
        (Kind::Int { signed: ds, bits: db }, Kind::Int { signed: ss, bits: sb }) => {
            if m.rnd.is_some() {
                return Err(format!("{}: integer-to-integer conversions take no rounding modifier", name()));
            }
            // The ISA forbids .sat where the destination range contains the source range.
            let superset = if ds == ss { db >= sb } else { ds && db > sb };
            if m.sat && superset {
                return Err(format!("{}: .sat is illegal where saturation is impossible", name()));
            }
            Ok(())
        }
        (Kind::Float(_), Kind::Int { .. }) | (Kind::Packed(_), Kind::Int { .. }) => {
            if dst == ScalarType::Tf32 || matches!(dk, Kind::Packed(_)) {
                return Err(format!("{}: no integer source for this destination", name()));
            }
            match m.rnd {
                Some(r) if is_float_rounding(r) => {}
                _ => return Err(format!("{}: integer-to-float needs .rn, .rz, .rm or .rp", name())),
            }
            if m.sat && !float_dst_sat_ok {
                return Err(format!("{}: .sat applies to .f16, .f32 and .f64 destinations", name()));
            }
            Ok(())
        }
        (Kind::Int { .. }, Kind::Float(_)) => {
            if src == ScalarType::Tf32 {
                return Err(format!("{}: .tf32 is not a cvt source", name()));
            }
            match m.rnd {
                Some(r) if is_integer_rounding(r) => Ok(()),
                _ => Err(format!("{}: float-to-integer needs .rni, .rzi, .rmi or .rpi", name())),
            }
        }
        (Kind::Packed(_), Kind::Float(_)) => {
            if src != ScalarType::F32 {
                return Err(format!("{}: packed destinations convert two .f32", name()));
            }
            match m.rnd {
                Some(Rounding::Rn | Rounding::Rz) if !m.sat => Ok(()),
                _ => Err(format!("{}: needs .rn or .rz and takes no .sat", name())),
            }
        }
        (Kind::Float(df), Kind::Float(sf)) => {
            if src == ScalarType::Tf32 {
                return Err(format!("{}: .tf32 is not a cvt source", name()));
            }
            if dst == ScalarType::Tf32 {
                if src != ScalarType::F32 {
                    return Err(format!("{}: .tf32 is converted from .f32 only", name()));
                }
                return match m.rnd {
                    Some(Rounding::Rna) if !m.relu && !m.sat => Ok(()),
                    Some(Rounding::Rn | Rounding::Rz) if !m.sat => Ok(()),
                    _ => Err(format!("{}: needs .rna (no .relu), .rn or .rz, and takes no .sat", name())),
                };
            }
            if m.sat && !float_dst_sat_ok {
                return Err(format!("{}: .sat applies to .f16, .f32 and .f64 destinations", name()));
            }
            if m.relu && !matches!(m.rnd, Some(Rounding::Rn | Rounding::Rz)) {
                return Err(format!("{}: .relu needs .rn or .rz", name()));
            }
            if dst == src {
                return match m.rnd {
                    None => Ok(()),
                    Some(r) if is_integer_rounding(r) => Ok(()),
                    Some(_) => {
                        Err(format!("{}: a same-type cvt takes only an integer rounding (.rni/.rzi/.rmi/.rpi)", name()))
                    }
                };
            }
            if is_lossy(df, sf) {
                return match m.rnd {
                    Some(r) if is_float_rounding(r) => Ok(()),
                    _ => Err(format!("{}: a narrowing conversion needs .rn, .rz, .rm or .rp", name())),
                };
            }
            // Exact widening: the ISA makes rounding illegal, though its own
            // examples round `.bf16` sources (`cvt.f64.bf16.rp`), so allow that.
            match m.rnd {
                None => Ok(()),
                Some(r) if src == ScalarType::Bf16 && is_float_rounding(r) => Ok(()),
                Some(_) => Err(format!("{}: an exact widening conversion takes no rounding modifier", name())),
            }
        }
    }
}

/// Masks `bits` to the low `n` bits (n ≤ 64).
fn low_bits(bits: u64, n: u32) -> u64 {
    if n >= 64 {
        bits
    } else {
        bits & ((1u64 << n) - 1)
    }
}

/// Signed value of an integer operand.
fn int_value(bits: u64, signed: bool, width: u32) -> i128 {
    let v = low_bits(bits, width);
    if signed && width < 128 && v >> (width - 1) & 1 == 1 {
        i128::from(v) - (1i128 << width)
    } else {
        i128::from(v)
    }
}

fn int_range(signed: bool, width: u32) -> (i128, i128) {
    if signed {
        (-(1i128 << (width - 1)), (1i128 << (width - 1)) - 1)
    } else {
        (0, (1i128 << width) - 1)
    }
}

/// Two's-complement bits of `v` in `width` bits, zero-extended to u64.
fn int_bits(v: i128, width: u32) -> u64 {
    low_bits(v as u64, width)
}

pub(crate) fn convert(dst: ScalarType, src: ScalarType, m: &CvtModifiers, bits: u64) -> u64 {
    let (Some(dk), Some(sk)) = (kind(dst), kind(src)) else {
        return 0;
    };
    let dir = direction(m.rnd.unwrap_or(Rounding::Rn));
    match (dk, sk) {
        (Kind::Int { signed: ds, bits: db }, Kind::Int { signed: ss, bits: sb }) => {
            let v = int_value(bits, ss, sb);
            let v = if m.sat {
                let (lo, hi) = int_range(ds, db);
                v.clamp(lo, hi)
            } else {
                v
            };
            int_bits(v, db)
        }
        (Kind::Float(df), Kind::Int { signed, bits: sb }) | (Kind::Packed(df), Kind::Int { signed, bits: sb }) => {
            let v = int_value(bits, signed, sb);
            let r = if v == 0 { 0 } else { round_to_format(df, v < 0, v.unsigned_abs(), 0, false, dir) };
            finish_float(df, dst, m, r)
        }
        (Kind::Int { signed, bits: db }, Kind::Float(sf)) => float_to_int(sf, src, signed, db, m, dir, bits),
        (Kind::Float(df), Kind::Float(sf)) | (Kind::Packed(df), Kind::Float(sf)) => {
            let src_bits = source_float_bits(sf, src, m, bits);
            let r = if dst == src && m.rnd.is_some_and(is_integer_rounding) {
                round_to_integral(sf, dir, src_bits)
            } else {
                float_to_float(df, sf, dir, m, src_bits)
            };
            finish_float(df, dst, m, r)
        }
        (_, Kind::Packed(_)) => 0,
    }
}

/// The source float's own bits (tf32 registers hold an f32 pattern), with
/// `.ftz` applied to f32 inputs.
fn source_float_bits(sf: FloatFormat, src: ScalarType, m: &CvtModifiers, bits: u64) -> u64 {
    let width = 1 + sf.exp_bits + sf.man_bits;
    let b = if src == ScalarType::Tf32 { low_bits(bits, 32) >> 13 } else { low_bits(bits, width) };
    if m.ftz && src == ScalarType::F32 {
        sf.flush_subnormal(b)
    } else {
        b
    }
}

fn float_to_int(
    sf: FloatFormat,
    src: ScalarType,
    signed: bool,
    width: u32,
    m: &CvtModifiers,
    dir: Direction,
    bits: u64,
) -> u64 {
    let (lo, hi) = int_range(signed, width);
    match sf.decode(source_float_bits(sf, src, m, bits)) {
        // PTX: NaN → 0, except from .f64 or to a 64-bit integer, where it is 1 << (width − 1).
        Decoded::Nan => {
            if src != ScalarType::F64 && width != 64 {
                0
            } else {
                1u64 << (width - 1)
            }
        }
        Decoded::Inf { neg } => int_bits(if neg { lo } else { hi }, width),
        Decoded::Zero { .. } => 0,
        Decoded::Finite { neg, sig, exp } => {
            let mag = round_to_integer(neg, sig, exp, dir);
            // Float-to-integer always saturates.
            let v = if neg {
                if mag > lo.unsigned_abs() {
                    lo
                } else {
                    -(mag as i128)
                }
            } else if mag > hi as u128 {
                hi
            } else {
                mag as i128
            };
            int_bits(v.clamp(lo, hi), width)
        }
    }
}

/// `cvt.r*i` of a float to an integral value of the same type.
fn round_to_integral(fmt: FloatFormat, dir: Direction, bits: u64) -> u64 {
    match fmt.decode(bits) {
        Decoded::Nan => bits | quiet_bit(fmt),
        Decoded::Inf { .. } | Decoded::Zero { .. } => bits,
        Decoded::Finite { exp, .. } if exp >= 0 => bits,
        Decoded::Finite { neg, sig, exp } => {
            let q = round_to_integer(neg, sig, exp, dir);
            if q == 0 {
                fmt.zero(neg)
            } else {
                round_to_format(fmt, neg, q, 0, false, Direction::NearestEven)
            }
        }
    }
}

fn quiet_bit(fmt: FloatFormat) -> u64 {
    1 << (fmt.man_bits - 1)
}

fn float_to_float(df: FloatFormat, sf: FloatFormat, dir: Direction, m: &CvtModifiers, bits: u64) -> u64 {
    match sf.decode(bits) {
        Decoded::Nan => {
            if is_lossy(df, sf) || m.relu {
                df.canonical_nan()
            } else {
                // Exact widening keeps the sign and payload, quieted.
                let payload = (bits & (quiet_bit(sf) * 2 - 1)) << (df.man_bits - sf.man_bits);
                let sign = if bits & sf.sign_bit() != 0 { df.sign_bit() } else { 0 };
                sign | df.inf(false) | payload | quiet_bit(df)
            }
        }
        Decoded::Inf { neg } => {
            if m.satfinite {
                df.max_finite(neg)
            } else {
                df.inf(neg)
            }
        }
        Decoded::Zero { neg } => df.zero(neg),
        Decoded::Finite { neg, sig, exp } => {
            let r = round_to_format(df, neg, u128::from(sig), exp, false, dir);
            if m.satfinite && r & !df.sign_bit() == df.inf(false) {
                df.max_finite(neg)
            } else {
                r
            }
        }
    }
}

/// Applies `.relu`, `.sat`, `.ftz` (f32 results) to a result in `fmt`'s own
/// bits and places it in the destination register pattern.
fn finish_float(fmt: FloatFormat, dst: ScalarType, m: &CvtModifiers, r: u64) -> u64 {
    let mut r = r;
    let negative = r & fmt.sign_bit() != 0;
    if m.relu && !fmt.is_nan(r) && negative {
        r = 0;
    }
    if m.sat {
        r = saturate(fmt, r);
    }
    if m.ftz && dst == ScalarType::F32 {
        r = fmt.flush_subnormal(r);
    }
    if dst == ScalarType::Tf32 {
        // A tf32 result is an f32 pattern whose low 13 bits are zero.
        return if fmt.is_nan(r) { 0x7FFF_FFFF } else { r << 13 };
    }
    r
}

/// `.sat` on a float result: clamp to [0, 1]; NaN and −0 give +0.
pub(crate) fn saturate(fmt: FloatFormat, r: u64) -> u64 {
    if fmt.is_nan(r) || r & fmt.sign_bit() != 0 {
        return 0;
    }
    let one = (fmt.bias() as u64) << fmt.man_bits;
    r.min(one)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturate_clamps_by_bit_order() {
        let f = FloatFormat::F32;
        assert_eq!(saturate(f, 0x3F80_0001), 0x3F80_0000);
        assert_eq!(saturate(f, 0x3F00_0000), 0x3F00_0000);
        assert_eq!(saturate(f, 0xBF00_0000), 0);
        assert_eq!(saturate(f, 0x7F80_0000), 0x3F80_0000);
        assert_eq!(saturate(f, 0x7FC0_0000), 0);
    }
}

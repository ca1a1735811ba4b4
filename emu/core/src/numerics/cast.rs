//! Bit-level helpers shared by the lowering and the executor, and the
//! conversions that are exactly Rust's `as` casts (a fast path the executor
//! takes, and the lowering uses to know a `cvt` needs no other validation).

use super::Rounding;
use crate::types::ScalarType;

pub(crate) fn bits_of(ty: ScalarType) -> u32 {
    ty.size_bytes() * 8
}

pub(crate) fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

pub(crate) fn sext(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        ((v << (64 - bits)) as i64) >> (64 - bits)
    }
}

/// The conversions that are exactly Rust's `as` casts (round to nearest for
/// int/f64 → float, truncation with NaN → 0 and saturation for float → int);
/// `None` when `numerics` must decide.
pub(crate) fn cvt_fast(
    dst: ScalarType,
    src: ScalarType,
    rnd: Option<Rounding>,
    ftz: bool,
    sat: bool,
    relu: bool,
    a: u64,
) -> Option<u64> {
    use ScalarType as T;
    if ftz || sat || relu {
        return None;
    }
    let f = |x: f64| -> Option<u64> {
        Some(match dst {
            T::S8 => x as i8 as u8 as u64,
            T::S16 => x as i16 as u16 as u64,
            T::S32 => x as i32 as u32 as u64,
            T::S64 => x as i64 as u64,
            T::U8 => x as u8 as u64,
            T::U16 => x as u16 as u64,
            T::U32 => x as u32 as u64,
            T::U64 => x as u64,
            _ => return None,
        })
    };
    match (src, dst, rnd) {
        (T::F32, T::F64, None) => Some((f32::from_bits(a as u32) as f64).to_bits()),
        (T::F64, T::F32, Some(Rounding::Rn)) => Some((f64::from_bits(a) as f32).to_bits() as u64),
        (T::F32, _, Some(Rounding::Rzi)) if !dst.is_float() => f(f32::from_bits(a as u32) as f64),
        (T::F64, _, Some(Rounding::Rzi)) if !dst.is_float() && dst.size_bytes() <= 4 => f(f64::from_bits(a)),
        (_, T::F32, Some(Rounding::Rn)) if !src.is_float() => Some(match src.is_signed_int() {
            true => (sext(a, bits_of(src)) as f32).to_bits() as u64,
            false => ((a & mask(bits_of(src))) as f32).to_bits() as u64,
        }),
        (_, T::F64, Some(Rounding::Rn)) if !src.is_float() => Some(match src.is_signed_int() {
            true => (sext(a, bits_of(src)) as f64).to_bits(),
            false => ((a & mask(bits_of(src))) as f64).to_bits(),
        }),
        _ => None,
    }
}

/// Whether a `cvt` is one done as a plain Rust cast (and so needs no
/// validation beyond its types): [`cvt_fast`] decides from the types and
/// modifiers alone.
pub(crate) fn cvt_is_plain(
    dst: ScalarType,
    src: ScalarType,
    rnd: Option<Rounding>,
    ftz: bool,
    sat: bool,
    relu: bool,
) -> bool {
    cvt_fast(dst, src, rnd, ftz, sat, relu, 0).is_some()
}

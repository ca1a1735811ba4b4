//! Pure per-lane arithmetic on raw register bits: integer ops, f32/f64 ops
//! with PTX's NaN/zero rules, comparisons and integer conversions. The
//! semantics Rust lacks (directed rounding, f16/bf16) come from `numerics`.

use crate::numerics::{self, FloatOp, Rounding};
pub(crate) use crate::numerics::{bits_of, cvt_fast, mask, sext};
use crate::ptx::ir::{BoolOp, Cmp, FArith, IntOp, PrmtMode, TestKind};
use crate::types::ScalarType;

/// `v` as a signed or unsigned 128-bit value per `ty`.
fn wide(v: u64, ty: ScalarType) -> i128 {
    let b = bits_of(ty);
    if ty.is_signed_int() {
        sext(v, b) as i128
    } else {
        (v & mask(b)) as i128
    }
}

/// One integer operation on operands `a`, `b`, `c`. `extra` is the carry
/// flag for the `.cc` forms (in and out), the length operand of `bfi` and the
/// lookup table of `lop3`. Never panics: division by zero gives all ones,
/// overflow wraps.
pub(crate) fn int_op(op: IntOp, ty: ScalarType, a: u64, b: u64, c: u64, extra: &mut u64) -> u64 {
    let carry = extra;
    let bits = bits_of(ty);
    let m = mask(bits);
    let signed = ty.is_signed_int();
    let (wa, wb) = (wide(a, ty), wide(b, ty));
    let r: u64 = match op {
        IntOp::Add => a.wrapping_add(b),
        IntOp::Sub => a.wrapping_sub(b),
        IntOp::AddSat | IntOp::SubSat => {
            let v = if op == IntOp::AddSat { wa + wb } else { wa - wb };
            let (lo, hi) = if signed { (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1) } else { (0, m as i128) };
            v.clamp(lo, hi) as u64
        }
        IntOp::AddCarry { carry_in, carry_out } => {
            let cin = if carry_in { *carry & 1 } else { 0 };
            let s = (a & m) as u128 + (b & m) as u128 + cin as u128;
            if carry_out {
                *carry = (s >> bits) as u64 & 1;
            }
            s as u64
        }
        IntOp::SubCarry { carry_in, carry_out } => {
            let bin = if carry_in { *carry & 1 } else { 0 };
            let s = ((a & m) as i128) - ((b & m) as i128) - bin as i128;
            if carry_out {
                *carry = (s < 0) as u64;
            }
            s as u64
        }
        IntOp::MadCarry { hi, carry_in, carry_out } => {
            let product = full_product(wa, wb, signed) as u128;
            let half = if hi { (product >> bits) as u64 & m } else { product as u64 & m };
            let cin = if carry_in { *carry & 1 } else { 0 };
            let s = half as u128 + (c & m) as u128 + cin as u128;
            if carry_out {
                *carry = (s >> bits) as u64 & 1;
            }
            s as u64
        }
        IntOp::MulLo => a.wrapping_mul(b),
        IntOp::MulHi => (full_product(wa, wb, signed) >> bits) as u64,
        IntOp::MulWide => full_product(wa, wb, signed) as u64,
        IntOp::Mul24Lo => (wide(sext24(a, signed), ty) * wide(sext24(b, signed), ty)) as u64,
        IntOp::MadLo => a.wrapping_mul(b).wrapping_add(c),
        IntOp::MadHi => ((full_product(wa, wb, signed) >> bits) as u64).wrapping_add(c),
        IntOp::MadWide => (full_product(wa, wb, signed) as u64).wrapping_add(c),
        IntOp::Mad24Lo => ((wide(sext24(a, signed), ty) * wide(sext24(b, signed), ty)) as u64).wrapping_add(c),
        IntOp::Div => {
            if wb == 0 {
                u64::MAX
            } else if signed {
                (wa as i64).wrapping_div(wb as i64) as u64
            } else {
                (wa / wb) as u64
            }
        }
        IntOp::Rem => {
            if wb == 0 {
                a
            } else if signed {
                (wa as i64).wrapping_rem(wb as i64) as u64
            } else {
                (wa % wb) as u64
            }
        }
        IntOp::Min => wa.min(wb) as u64,
        IntOp::Max => wa.max(wb) as u64,
        IntOp::Abs => wa.unsigned_abs() as u64,
        IntOp::Neg => (wa as i64).wrapping_neg() as u64,
        IntOp::Sad => ((wa - wb).unsigned_abs() as u64).wrapping_add(c),
        IntOp::And => a & b,
        IntOp::Or => a | b,
        IntOp::Xor => a ^ b,
        IntOp::Not => !a,
        IntOp::CNot => (a & m == 0) as u64,
        IntOp::Shl => {
            let s = b as u32;
            if s >= bits {
                0
            } else {
                a << s
            }
        }
        IntOp::Shr => {
            let s = (b as u32).min(bits);
            if signed {
                (sext(a, bits) >> s.min(63)) as u64
            } else if s >= bits {
                0
            } else {
                (a & m) >> s
            }
        }
        IntOp::Popc => (a & m).count_ones() as u64,
        IntOp::Clz => ((a & m).leading_zeros() - (64 - bits)) as u64,
        IntOp::Brev => (a & m).reverse_bits() >> (64 - bits),
        IntOp::Bfind { shiftamt } => {
            let v = if signed && sext(a, bits) < 0 { !a & m } else { a & m };
            if v == 0 {
                u64::MAX
            } else {
                let msb = 63 - v.leading_zeros() as u64;
                if shiftamt {
                    bits as u64 - 1 - msb
                } else {
                    msb
                }
            }
        }
        IntOp::Fns => {
            // Find the n-th set bit of `a` at or after `base`, counting
            // forward (offset > 0) or backward (offset < 0).
            let (mask_v, base, offset) = (a as u32, b as u32, c as i32);
            fns(mask_v, base, offset) as u64
        }
        IntOp::Bfe => {
            let pos = (b & 0xff) as u32;
            let len = (c & 0xff) as u32;
            let sbit = if signed && len > 0 {
                let top = (pos + len - 1).min(bits - 1);
                (a >> top) & 1
            } else {
                0
            };
            let mut r = 0u64;
            for i in 0..bits {
                let bit = if i < len && pos + i < bits { (a >> (pos + i)) & 1 } else { sbit };
                r |= bit << i;
            }
            r
        }
        IntOp::Bfi => {
            // bfi d, a (inserted), b (base), c (position), len (in `extra`)
            let pos = (c & 0xff) as u32;
            let len = (*carry & 0xff) as u32;
            let mut r = b;
            for i in 0..len {
                if pos + i >= bits {
                    break;
                }
                let bit = (a >> i) & 1;
                r = (r & !(1 << (pos + i))) | (bit << (pos + i));
            }
            r
        }
        IntOp::Prmt(mode) => prmt(mode, a as u32, b as u32, c as u32) as u64,
        IntOp::Lop3 => {
            let lut = *carry as u8;
            let mut r = 0u64;
            for i in 0..bits {
                let idx = (((a >> i) & 1) << 2) | (((b >> i) & 1) << 1) | ((c >> i) & 1);
                r |= (((lut >> idx) & 1) as u64) << i;
            }
            r
        }
        IntOp::Shf { left, wrap } => {
            let n = if wrap { (c as u32) & 31 } else { (c as u32).min(32) };
            let v = ((b as u32 as u64) << 32) | a as u32 as u64;
            if left {
                ((v << n) >> 32) as u32 as u64
            } else {
                (v >> n) as u32 as u64
            }
        }
        IntOp::Dp4a { a_signed, b_signed } => {
            let mut acc = c as u32 as i64;
            for i in 0..4 {
                let x = (a >> (8 * i)) as u8;
                let y = (b >> (8 * i)) as u8;
                let xv = if a_signed { x as i8 as i64 } else { x as i64 };
                let yv = if b_signed { y as i8 as i64 } else { y as i64 };
                acc += xv * yv;
            }
            acc as u64
        }
    };
    let out_bits = match op {
        IntOp::MulWide | IntOp::MadWide => bits * 2,
        IntOp::Popc | IntOp::Clz | IntOp::Bfind { .. } => 32,
        _ => bits,
    };
    r & mask(out_bits)
}

/// The exact product of two operands of up to 64 bits, as 128 bits
/// (an unsigned 64×64 product does not fit in i128, so it is formed in u128).
fn full_product(a: i128, b: i128, signed: bool) -> i128 {
    if signed {
        a.wrapping_mul(b)
    } else {
        (a as u128).wrapping_mul(b as u128) as i128
    }
}

fn sext24(v: u64, signed: bool) -> u64 {
    if signed {
        sext(v & 0xff_ffff, 24) as u64
    } else {
        v & 0xff_ffff
    }
}

fn fns(m: u32, base: u32, offset: i32) -> u32 {
    if offset == 0 {
        return if base < 32 && (m >> base) & 1 == 1 { base } else { u32::MAX };
    }
    let mut count = 0;
    let mut pos = base as i64;
    let step = if offset > 0 { 1 } else { -1 };
    let target = offset.unsigned_abs();
    while (0..32).contains(&pos) {
        if (m >> pos) & 1 == 1 {
            count += 1;
            if count == target {
                return pos as u32;
            }
        }
        pos += step;
    }
    u32::MAX
}

fn prmt(mode: PrmtMode, a: u32, b: u32, c: u32) -> u32 {
    let bytes = ((b as u64) << 32 | a as u64).to_le_bytes();
    let pick = |sel: u32| -> u8 {
        let v = bytes[(sel & 7) as usize];
        if sel & 8 != 0 {
            if v & 0x80 != 0 {
                0xff
            } else {
                0
            }
        } else {
            v
        }
    };
    let sel: [u32; 4] = match mode {
        PrmtMode::Generic => [c & 0xf, (c >> 4) & 0xf, (c >> 8) & 0xf, (c >> 12) & 0xf],
        PrmtMode::F4e => {
            let s = c & 3;
            [s, (s + 1) & 7, (s + 2) & 7, (s + 3) & 7]
        }
        PrmtMode::B4e => {
            let s = c & 3;
            [s.wrapping_sub(0) & 7, (s + 7) & 7, (s + 6) & 7, (s + 5) & 7]
        }
        PrmtMode::Rc8 => {
            let s = c & 3;
            [s; 4]
        }
        PrmtMode::Ecl => {
            let s = c & 3;
            [s, if s > 1 { s } else { 1 }, if s > 2 { s } else { 2 }, 3]
        }
        PrmtMode::Ecr => {
            let s = c & 3;
            [0, if s > 1 { 1 } else { s }, if s > 2 { 2 } else { s }, s]
        }
        PrmtMode::Rc16 => {
            let s = c & 1;
            [2 * s, 2 * s + 1, 2 * s, 2 * s + 1]
        }
    };
    let msb_mode = matches!(mode, PrmtMode::Generic);
    let mut r = 0u32;
    for (i, &s) in sel.iter().enumerate() {
        let v = if msb_mode { pick(s) } else { bytes[(s & 7) as usize] };
        r |= (v as u32) << (8 * i);
    }
    r
}

fn flush32(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

fn sat01_32(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

const CANONICAL_NAN32: u32 = 0x7fff_ffff;
const CANONICAL_NAN64: u64 = 0x7fff_ffff_ffff_ffff;

fn min_max<F: Copy + PartialOrd>(a: F, b: F, a_nan: bool, b_nan: bool, a_neg: bool, is_max: bool) -> Option<F> {
    if a_nan && b_nan {
        return None;
    }
    if a_nan {
        return Some(b);
    }
    if b_nan {
        return Some(a);
    }
    // ±0 compare equal; PTX orders −0 below +0.
    if a == b {
        return Some(if a_neg != is_max { a } else { b });
    }
    Some(if (a < b) != is_max { a } else { b })
}

/// f32 arithmetic on raw bits.
pub(crate) fn f32_op(op: FArith, rnd: Option<Rounding>, ftz: bool, sat: bool, a: u64, b: u64, c: u64) -> u64 {
    let (mut x, mut y, mut z) = (f32::from_bits(a as u32), f32::from_bits(b as u32), f32::from_bits(c as u32));
    if ftz {
        x = flush32(x);
        y = flush32(y);
        z = flush32(z);
    }
    let directed = rnd.filter(|r| *r != Rounding::Rn);
    let via = |fop: FloatOp| numerics::f32_op_rounded(fop, directed.unwrap_or(Rounding::Rn), ftz, sat, x, y, z);
    let mut r = match op {
        FArith::Add if directed.is_some() => return via(FloatOp::Add).to_bits() as u64,
        FArith::Sub if directed.is_some() => return via(FloatOp::Sub).to_bits() as u64,
        FArith::Mul if directed.is_some() => return via(FloatOp::Mul).to_bits() as u64,
        FArith::Fma if directed.is_some() => return via(FloatOp::Fma).to_bits() as u64,
        FArith::Add => x + y,
        FArith::Sub => x - y,
        FArith::Mul => x * y,
        FArith::Fma => x.mul_add(y, z),
        FArith::Div | FArith::DivApprox => x / y,
        FArith::Abs => x.abs(),
        FArith::Neg => -x,
        FArith::Min { nan } | FArith::Max { nan } => {
            let is_max = matches!(op, FArith::Max { .. });
            if nan && (x.is_nan() || y.is_nan()) {
                return CANONICAL_NAN32 as u64;
            }
            match min_max(x, y, x.is_nan(), y.is_nan(), x.is_sign_negative(), is_max) {
                Some(v) => v,
                None => return CANONICAL_NAN32 as u64,
            }
        }
        FArith::Sqrt => x.sqrt(),
        FArith::Rcp => 1.0 / x,
        FArith::Rsqrt => 1.0 / x.sqrt(),
        FArith::Copysign => y.copysign(x),
    };
    if ftz {
        r = flush32(r);
    }
    if sat {
        r = sat01_32(r);
    }
    if r.is_nan() && !matches!(op, FArith::Abs | FArith::Neg | FArith::Copysign) {
        return CANONICAL_NAN32 as u64;
    }
    r.to_bits() as u64
}

/// f64 arithmetic on raw bits; directed rounding (`.rz/.rm/.rp`) on
/// add/sub/mul/fma/div only (load rejects it elsewhere).
pub(crate) fn f64_op(op: FArith, rnd: Option<Rounding>, a: u64, b: u64, c: u64) -> u64 {
    let (x, y, z) = (f64::from_bits(a), f64::from_bits(b), f64::from_bits(c));
    if let Some(r) = rnd.filter(|r| *r != Rounding::Rn) {
        let fop = match op {
            FArith::Add => Some(FloatOp::Add),
            FArith::Sub => Some(FloatOp::Sub),
            FArith::Mul => Some(FloatOp::Mul),
            FArith::Fma => Some(FloatOp::Fma),
            FArith::Div => Some(FloatOp::Div),
            _ => None,
        };
        if let Some(fop) = fop {
            return numerics::f64_op_rounded(fop, r, x, y, z).to_bits();
        }
    }
    let r = match op {
        FArith::Add => x + y,
        FArith::Sub => x - y,
        FArith::Mul => x * y,
        FArith::Fma => x.mul_add(y, z),
        FArith::Div | FArith::DivApprox => x / y,
        FArith::Abs => x.abs(),
        FArith::Neg => -x,
        FArith::Min { nan } | FArith::Max { nan } => {
            let is_max = matches!(op, FArith::Max { .. });
            if nan && (x.is_nan() || y.is_nan()) {
                return CANONICAL_NAN64;
            }
            match min_max(x, y, x.is_nan(), y.is_nan(), x.is_sign_negative(), is_max) {
                Some(v) => v,
                None => return CANONICAL_NAN64,
            }
        }
        FArith::Sqrt => x.sqrt(),
        FArith::Rcp => 1.0 / x,
        FArith::Rsqrt => 1.0 / x.sqrt(),
        FArith::Copysign => y.copysign(x),
    };
    if r.is_nan() && !matches!(op, FArith::Abs | FArith::Neg | FArith::Copysign) {
        return CANONICAL_NAN64;
    }
    r.to_bits()
}

/// `setp`/`set` comparison of `a` and `b` as `ty`.
pub(crate) fn compare(cmp: Cmp, ty: ScalarType, a: u64, b: u64) -> bool {
    use std::cmp::Ordering as O;
    let ord: Option<O> = match ty {
        ScalarType::F32 => f32::from_bits(a as u32).partial_cmp(&f32::from_bits(b as u32)),
        ScalarType::F64 => f64::from_bits(a).partial_cmp(&f64::from_bits(b)),
        // f16/bf16 → f32 is exact, so comparing the widened values is exact.
        ScalarType::F16 => numerics::f16_to_f32(a as u16).partial_cmp(&numerics::f16_to_f32(b as u16)),
        ScalarType::Bf16 => numerics::bf16_to_f32(a as u16).partial_cmp(&numerics::bf16_to_f32(b as u16)),
        _ => {
            // Integers: signed per type; `lo/ls/hi/hs` are always unsigned.
            let bits = bits_of(ty);
            let unsigned_cmp = matches!(cmp, Cmp::Lo | Cmp::Ls | Cmp::Hi | Cmp::Hs);
            if ty.is_signed_int() && !unsigned_cmp {
                Some(sext(a, bits).cmp(&sext(b, bits)))
            } else {
                Some((a & mask(bits)).cmp(&(b & mask(bits))))
            }
        }
    };
    match ord {
        None => {
            matches!(cmp, Cmp::Ne | Cmp::Equ | Cmp::Neu | Cmp::Ltu | Cmp::Leu | Cmp::Gtu | Cmp::Geu | Cmp::Nan)
                && cmp != Cmp::Ne
        }
        Some(o) => match cmp {
            Cmp::Eq | Cmp::Equ => o == O::Equal,
            Cmp::Ne | Cmp::Neu => o != O::Equal,
            Cmp::Lt | Cmp::Lo | Cmp::Ltu => o == O::Less,
            Cmp::Le | Cmp::Ls | Cmp::Leu => o != O::Greater,
            Cmp::Gt | Cmp::Hi | Cmp::Gtu => o == O::Greater,
            Cmp::Ge | Cmp::Hs | Cmp::Geu => o != O::Less,
            Cmp::Num => true,
            Cmp::Nan => false,
        },
    }
}

/// The element type of a packed half-precision type (`.f16x2` → `.f16`).
pub(crate) fn packed_half(ty: ScalarType) -> Option<ScalarType> {
    match ty {
        ScalarType::F16x2 => Some(ScalarType::F16),
        ScalarType::Bf16x2 => Some(ScalarType::Bf16),
        _ => None,
    }
}

/// What `set` writes for a comparison result `t` into an element of `dty`:
/// 1.0 in the float formats, all ones in the integer ones (per 16-bit half
/// for the packed forms), 0 when false.
pub(crate) fn set_result(dty: ScalarType, t: bool) -> u64 {
    if !t {
        return 0;
    }
    match dty {
        ScalarType::F32 => 1.0f32.to_bits() as u64,
        ScalarType::F16 | ScalarType::F16x2 => 0x3C00,
        ScalarType::Bf16 | ScalarType::Bf16x2 => 0x3F80,
        // A packed source fills each 16-bit half of a .u32/.s32 result.
        ScalarType::U32 | ScalarType::S32 | ScalarType::B32 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

pub(crate) fn combine(op: Option<BoolOp>, x: bool, c: bool) -> bool {
    match op {
        None => x,
        Some(BoolOp::And) => x && c,
        Some(BoolOp::Or) => x || c,
        Some(BoolOp::Xor) => x ^ c,
    }
}

pub(crate) fn testp(k: TestKind, ty: ScalarType, a: u64) -> bool {
    let (nan, inf, sub, zero) = if ty == ScalarType::F64 {
        let x = f64::from_bits(a);
        (x.is_nan(), x.is_infinite(), x.is_subnormal(), x == 0.0)
    } else {
        let x = f32::from_bits(a as u32);
        (x.is_nan(), x.is_infinite(), x.is_subnormal(), x == 0.0)
    };
    match k {
        TestKind::Finite => !nan && !inf,
        TestKind::Infinite => inf,
        TestKind::Number => !nan,
        TestKind::NotANumber => nan,
        TestKind::Normal => !nan && !inf && !sub && !zero,
        TestKind::Subnormal => sub,
    }
}

/// Integer → integer `cvt` (sign/zero extension, truncation, `.sat` clamping).
pub(crate) fn cvt_int(dst: ScalarType, src: ScalarType, sat: bool, a: u64) -> u64 {
    let v = wide(a, src);
    let db = bits_of(dst);
    let out = if sat {
        let (lo, hi) =
            if dst.is_signed_int() { (-(1i128 << (db - 1)), (1i128 << (db - 1)) - 1) } else { (0, mask(db) as i128) };
        v.clamp(lo, hi)
    } else {
        v
    };
    out as u64 & mask(db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ScalarType as T;

    fn op(o: IntOp, ty: ScalarType, a: u64, b: u64, c: u64) -> u64 {
        int_op(o, ty, a, b, c, &mut 0)
    }

    #[test]
    fn integer_ops_follow_the_isa() {
        assert_eq!(op(IntOp::MulHi, T::S32, (-3i32) as u32 as u64, 0x4000_0000, 0), 0xffff_ffff);
        assert_eq!(op(IntOp::MulWide, T::S32, (-3i32) as u32 as u64, 4, 0), (-12i64) as u64);
        assert_eq!(op(IntOp::MulWide, T::U32, 0xffff_ffff, 2, 0), 0x1_ffff_fffe);
        assert_eq!(op(IntOp::MulHi, T::U64, u64::MAX, u64::MAX, 0), u64::MAX - 1);
        assert_eq!(op(IntOp::MulHi, T::S64, u64::MAX, u64::MAX, 0), 0);
        assert_eq!(op(IntOp::MadHi, T::U64, u64::MAX, u64::MAX, u64::MAX), u64::MAX - 2);
        assert_eq!(op(IntOp::Div, T::U32, 7, 0, 0), 0xffff_ffff);
        assert_eq!(op(IntOp::Div, T::S32, (-7i32) as u32 as u64, 2, 0), (-3i32) as u32 as u64);
        assert_eq!(op(IntOp::Shr, T::S32, 0x8000_0000, 40, 0), 0xffff_ffff);
        assert_eq!(op(IntOp::Shr, T::U32, 0x8000_0000, 40, 0), 0);
        assert_eq!(op(IntOp::Shl, T::B32, 1, 31, 0), 0x8000_0000);
        assert_eq!(op(IntOp::Clz, T::B32, 1, 0, 0), 31);
        assert_eq!(op(IntOp::Brev, T::B32, 1, 0, 0), 0x8000_0000);
        assert_eq!(op(IntOp::Bfind { shiftamt: false }, T::U32, 0x10, 0, 0), 4);
        assert_eq!(op(IntOp::Bfe, T::U32, 0xabcd, 4, 8,), 0xbc);
        assert_eq!(op(IntOp::Bfe, T::S32, 0x0f00, 8, 4), 0xffff_ffff);
        assert_eq!(op(IntOp::Prmt(PrmtMode::Generic), T::B32, 0x4433_2211, 0x8877_6655, 0x3210), 0x4433_2211);
        assert_eq!(op(IntOp::Prmt(PrmtMode::Generic), T::B32, 0x4433_2211, 0x8877_6655, 0x0044), 0x1111_5555);
        assert_eq!(op(IntOp::Prmt(PrmtMode::Generic), T::B32, 0x0000_0080, 0, 0x8), 0x8080_80ff);
        assert_eq!(op(IntOp::Shf { left: false, wrap: true }, T::B32, 0x1, 0x2, 1), 0);
        assert_eq!(op(IntOp::Shf { left: true, wrap: false }, T::B32, 0x8000_0000, 0x1, 1), 0x3);
        assert_eq!(op(IntOp::AddSat, T::S32, 0x7fff_ffff, 1, 0), 0x7fff_ffff);
        let mut carry = 0;
        assert_eq!(
            int_op(IntOp::AddCarry { carry_in: false, carry_out: true }, T::U32, 0xffff_ffff, 1, 0, &mut carry),
            0
        );
        assert_eq!(carry, 1);
        assert_eq!(int_op(IntOp::AddCarry { carry_in: true, carry_out: false }, T::U32, 1, 1, 0, &mut carry), 3);
        // 64×64 → 128 with mad.lo.cc / madc.hi: (2^64-1)² + (2^64-1) = 2^128 - 2^64.
        let mut carry = 0;
        let madc = |hi, carry_in, carry_out| IntOp::MadCarry { hi, carry_in, carry_out };
        assert_eq!(int_op(madc(false, false, true), T::U64, u64::MAX, u64::MAX, u64::MAX, &mut carry), 0);
        assert_eq!(carry, 1);
        assert_eq!(int_op(madc(true, true, false), T::U64, u64::MAX, u64::MAX, 0, &mut carry), u64::MAX);
        let mut carry = 1;
        assert_eq!(int_op(madc(true, true, true), T::U32, 0xffff_ffff, 0xffff_ffff, 0, &mut carry), 0xffff_ffff);
        assert_eq!(carry, 0);
        let mut carry = 1;
        assert_eq!(int_op(madc(true, true, true), T::U32, 0xffff_ffff, 0xffff_ffff, 1, &mut carry), 0);
        assert_eq!(carry, 1);
        let mut lut = 0x96; // a ^ b ^ c
        assert_eq!(int_op(IntOp::Lop3, T::B32, 0b1100, 0b1010, 0b0110, &mut lut), 0b0000);
        let mut len = 4;
        assert_eq!(int_op(IntOp::Bfi, T::B32, 0xf, 0x0, 8, &mut len), 0xf00);
    }

    #[test]
    fn float_rules() {
        let b = |x: f32| x.to_bits() as u64;
        assert_eq!(f32_op(FArith::Min { nan: false }, None, false, false, b(f32::NAN), b(2.0), 0), b(2.0));
        assert_eq!(f32_op(FArith::Min { nan: false }, None, false, false, b(0.0), b(-0.0), 0), b(-0.0));
        assert_eq!(f32_op(FArith::Max { nan: false }, None, false, false, b(-0.0), b(0.0), 0), b(0.0));
        assert_eq!(f32_op(FArith::Add, None, false, true, b(0.75), b(0.5), 0), b(1.0));
        assert_eq!(f32_op(FArith::Mul, None, true, false, b(1e-39), b(1.0), 0), b(0.0));
        assert_eq!(f32_op(FArith::Div, None, false, false, b(0.0), b(0.0), 0), CANONICAL_NAN32 as u64);
        let d = |x: f64| x.to_bits();
        let third_down = f64_op(FArith::Div, Some(Rounding::Rz), d(1.0), d(3.0), 0);
        let third_up = f64_op(FArith::Div, Some(Rounding::Rp), d(1.0), d(3.0), 0);
        assert_eq!(third_up, third_down + 1, "1/3 lies between two adjacent f64s");
        assert_eq!(f64_op(FArith::Add, Some(Rounding::Rm), d(1.0), d(1e-30), 0), d(1.0));
        assert_eq!(f64_op(FArith::Add, Some(Rounding::Rp), d(1.0), d(1e-30), 0), d(1.0) + 1);
        assert_eq!(f64_op(FArith::Add, Some(Rounding::Rz), d(-1.0), d(-1e-30), 0), d(-1.0));
        assert_eq!(f64_op(FArith::Mul, Some(Rounding::Rn), d(3.0), d(0.1), 0), d(3.0 * 0.1));
        assert!(compare(Cmp::Ltu, T::F32, b(f32::NAN), b(1.0)));
        assert!(!compare(Cmp::Lt, T::F32, b(f32::NAN), b(1.0)));
        assert!(!compare(Cmp::Ne, T::F32, b(f32::NAN), b(1.0)));
        assert!(compare(Cmp::Neu, T::F32, b(f32::NAN), b(1.0)));
        assert!(compare(Cmp::Lt, T::S32, 0xffff_ffff, 0));
        assert!(!compare(Cmp::Lt, T::U32, 0xffff_ffff, 0));
        assert!(compare(Cmp::Hi, T::S32, 0xffff_ffff, 0));
    }

    #[test]
    fn conversions() {
        assert_eq!(cvt_int(T::S32, T::S16, false, 0xfffe), 0xffff_fffe);
        assert_eq!(cvt_int(T::U32, T::U16, false, 0xfffe), 0xfffe);
        assert_eq!(cvt_int(T::U8, T::S32, true, (-5i32) as u32 as u64), 0);
        assert_eq!(cvt_int(T::S8, T::S32, true, 300), 127);
        assert_eq!(
            cvt_fast(T::S32, T::F32, Some(Rounding::Rzi), false, false, false, (-2.7f32).to_bits() as u64),
            Some((-2i32) as u32 as u64)
        );
        assert_eq!(
            cvt_fast(T::U32, T::F32, Some(Rounding::Rzi), false, false, false, f32::NAN.to_bits() as u64),
            Some(0)
        );
        assert_eq!(
            cvt_fast(T::F32, T::S32, Some(Rounding::Rn), false, false, false, (-3i32) as u32 as u64),
            Some((-3.0f32).to_bits() as u64)
        );
    }
}

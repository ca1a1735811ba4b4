//! Bit-exact scalar semantics of PTX arithmetic that Rust does not give
//! directly: conversions with every rounding mode and saturation, f16/bf16
//! scalar and packed arithmetic, f32 arithmetic with directed rounding, and the
//! approximate special functions. Pure functions on raw bits.

pub(crate) mod arith;
mod cast;
mod conversion;
mod exact;
pub(crate) mod format;
mod special;

use crate::types::ScalarType;
use format::FloatFormat;

pub(crate) use cast::{bits_of, cvt_fast, cvt_is_plain, mask, sext};

/// A PTX rounding modifier. `Rn*` etc. with the `i` suffix round to an integral
/// value (`cvt.rni.f32.f32`, float → int conversions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// to nearest, ties to even
    Rn,
    /// to nearest, ties away from zero (`.rna`; the ISA has it for `cvt.rna.tf32.f32` only)
    Rna,
    /// toward zero
    Rz,
    /// toward −∞
    Rm,
    /// toward +∞
    Rp,
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

impl Rounding {
    /// Parses a modifier without its dot: `"rn"` → `Rn`.
    pub fn from_suffix(s: &str) -> Option<Self> {
        Some(match s {
            "rn" => Rounding::Rn,
            "rna" => Rounding::Rna,
            "rz" => Rounding::Rz,
            "rm" => Rounding::Rm,
            "rp" => Rounding::Rp,
            "rni" => Rounding::Rni,
            "rzi" => Rounding::Rzi,
            "rmi" => Rounding::Rmi,
            "rpi" => Rounding::Rpi,
            _ => return None,
        })
    }
}

/// The modifiers of one `cvt`, including `.satfinite`, which the shorter
/// [`cvt`]/[`cvt_is_valid`] signatures leave out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CvtModifiers {
    pub rnd: Option<Rounding>,
    pub ftz: bool,
    pub sat: bool,
    pub relu: bool,
    /// `.satfinite`: ±∞ and overflow become ±max finite; NaN stays NaN.
    pub satfinite: bool,
}

/// `cvt{.rnd}{.ftz}{.sat}{.relu}.dst.src` on raw bits (low `size_bytes` of each
/// value; the result is the destination type's bits zero-extended into u64 —
/// for signed integer destinations narrower than the register, the executor
/// sign-extends from the type's width, as the ISA requires). Follows the PTX
/// ISA: NaN → 0 for float → int (1 << (width − 1) from `.f64` or to 64-bit
/// integers), float → int always saturates, `.sat` on float destinations
/// clamps to [0, 1] with NaN → +0, `.relu` clamps negatives to +0 and gives
/// NaN as the canonical NaN, narrowing conversions give the canonical NaN and
/// exact widening ones keep the NaN's sign and payload (quieted). A missing
/// rounding modifier the ISA requires is the caller's to reject at load time
/// (see [`cvt_is_valid`]); here it defaults to `.rn`/`.rni`. tf32 results are
/// f32 patterns with the low 13 bits zero.
/// For `.f16x2`/`.bf16x2` destinations from two f32 (`cvt.rn.f16x2.f32 d, a, b`)
/// use [`cvt_pack_f32x2`].
pub fn cvt(
    dst: ScalarType,
    src: ScalarType,
    rnd: Option<Rounding>,
    ftz: bool,
    sat: bool,
    relu: bool,
    bits: u64,
) -> u64 {
    cvt_with(dst, src, &CvtModifiers { rnd, ftz, sat, relu, satfinite: false }, bits)
}

/// [`cvt`] with every modifier, `.satfinite` included.
pub fn cvt_with(dst: ScalarType, src: ScalarType, mods: &CvtModifiers, bits: u64) -> u64 {
    conversion::convert(dst, src, mods, bits)
}

/// Whether a `cvt` with these types and modifiers is a legal PTX instruction
/// this emulator supports; `Err` says why not (used at module load).
/// `.f16x2`/`.bf16x2` destinations are checked as the two-source `.f32` form.
pub fn cvt_is_valid(
    dst: ScalarType,
    src: ScalarType,
    rnd: Option<Rounding>,
    sat: bool,
    relu: bool,
) -> Result<(), String> {
    cvt_is_valid_with(dst, src, &CvtModifiers { rnd, ftz: false, sat, relu, satfinite: false })
}

/// [`cvt_is_valid`] with every modifier (`.ftz` needs an `.f32` side;
/// `.satfinite` an `.f16`/`.bf16`/`.tf32` destination from `.f32`).
pub fn cvt_is_valid_with(dst: ScalarType, src: ScalarType, mods: &CvtModifiers) -> Result<(), String> {
    conversion::is_valid(dst, src, mods)
}

/// `cvt.rn{.relu}{.satfinite}.{f16x2,bf16x2}.f32 d, a, b`: `a` goes to the upper half, `b` to the lower.
/// A `dst` other than `F16x2`/`Bf16x2` gives 0.
pub fn cvt_pack_f32x2(dst: ScalarType, rnd: Rounding, relu: bool, a: f32, b: f32) -> u32 {
    cvt_pack_f32x2_with(dst, &CvtModifiers { rnd: Some(rnd), relu, ..CvtModifiers::default() }, a, b)
}

/// [`cvt_pack_f32x2`] with every modifier (`.satfinite` included).
pub fn cvt_pack_f32x2_with(dst: ScalarType, mods: &CvtModifiers, a: f32, b: f32) -> u32 {
    let elem = match dst {
        ScalarType::F16x2 => ScalarType::F16,
        ScalarType::Bf16x2 => ScalarType::Bf16,
        _ => return 0,
    };
    let hi = cvt_with(elem, ScalarType::F32, mods, u64::from(a.to_bits())) as u32;
    let lo = cvt_with(elem, ScalarType::F32, mods, u64::from(b.to_bits())) as u32;
    (hi << 16) | (lo & 0xFFFF)
}

/// `cvt.f32.f16`: exact; NaN keeps its sign and payload, quieted.
pub fn f16_to_f32(h: u16) -> f32 {
    f32::from_bits(cvt(ScalarType::F32, ScalarType::F16, None, false, false, false, u64::from(h)) as u32)
}

/// `cvt.f32.bf16`: exact (a bf16 is the upper half of an f32).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(cvt(ScalarType::F32, ScalarType::Bf16, None, false, false, false, u64::from(h)) as u32)
}

/// `cvt.{rnd}.f16.f32`; NaN gives the canonical 0x7FFF.
pub fn f32_to_f16(x: f32, rnd: Rounding) -> u16 {
    cvt(ScalarType::F16, ScalarType::F32, Some(rnd), false, false, false, u64::from(x.to_bits())) as u16
}

/// `cvt.{rnd}.bf16.f32`; NaN gives the canonical 0x7FFF.
pub fn f32_to_bf16(x: f32, rnd: Rounding) -> u16 {
    cvt(ScalarType::Bf16, ScalarType::F32, Some(rnd), false, false, false, u64::from(x.to_bits())) as u16
}

/// Floating-point operations on f16/bf16 (scalar or packed) and f32/f64 that
/// need modifiers Rust lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FloatOp {
    Add,
    Sub,
    Mul,
    /// `fma`/`mad` with one rounding
    Fma,
    Min,
    Max,
    /// `min.NaN`/`max.NaN`: a NaN operand gives the canonical NaN.
    MinNaN,
    MaxNaN,
    Neg,
    Abs,
    /// `div` (f32 with `.rn/.rz/.rm/.rp` through [`f32_op_rounded`])
    Div,
}

/// One f16/bf16 operation. `ty` is `F16`, `Bf16` (operands in the low 16 bits)
/// or `F16x2`, `Bf16x2` (two lanes, each computed independently). `c` is used
/// by `Fma` only. `rnd` defaults to `Rn` when `None`. `ftz` flushes f16
/// subnormal inputs and results (bf16 has no `.ftz` in these instructions, so
/// it is ignored there); `sat` clamps to [0, 1] with NaN → +0; NaN results are
/// the canonical NaN (0x7FFF for both f16 and bf16) as the ISA specifies, and
/// `Min`/`Max` return the non-NaN operand when only one is NaN, with −0 < +0
/// (`MinNaN`/`MaxNaN` return the canonical NaN when either is NaN).
/// Each result is formed exactly and rounded once (`Fma` included).
/// Another `ty` gives 0.
// One parameter per PTX operand and modifier, as the executor decodes them.
#[allow(clippy::too_many_arguments)]
pub fn half_op(
    op: FloatOp,
    ty: ScalarType,
    rnd: Option<Rounding>,
    ftz: bool,
    sat: bool,
    a: u32,
    b: u32,
    c: u32,
) -> u32 {
    let (fmt, lanes) = match ty {
        ScalarType::F16 => (FloatFormat::F16, 1),
        ScalarType::F16x2 => (FloatFormat::F16, 2),
        ScalarType::Bf16 => (FloatFormat::BF16, 1),
        ScalarType::Bf16x2 => (FloatFormat::BF16, 2),
        _ => return 0,
    };
    let flush = ftz && fmt == FloatFormat::F16;
    let dir = conversion::direction(rnd.unwrap_or(Rounding::Rn));
    let lane = |shift: u32| {
        let pick = |x: u32| {
            let v = u64::from((x >> shift) & 0xFFFF);
            if flush {
                fmt.flush_subnormal(v)
            } else {
                v
            }
        };
        let mut r = arith::float_op(fmt, op, dir, pick(a), pick(b), pick(c));
        if flush {
            r = fmt.flush_subnormal(r);
        }
        if sat {
            r = conversion::saturate(fmt, r);
        }
        (r as u32) << shift
    };
    (0..lanes).map(|i| lane(16 * i)).fold(0, |acc, v| acc | v)
}

/// f32 `add/sub/mul/fma/div` with an explicit rounding mode (the `.rn` forms
/// are plain Rust arithmetic; this is for `.rz/.rm/.rp`) and `.ftz`/`.sat`.
/// Exact result, one rounding; NaN results are the canonical 0x7FFFFFFF;
/// `.ftz` flushes subnormal inputs and the rounded result.
pub fn f32_op_rounded(op: FloatOp, rnd: Rounding, ftz: bool, sat: bool, a: f32, b: f32, c: f32) -> f32 {
    let fmt = FloatFormat::F32;
    let input = |x: f32| {
        let v = u64::from(x.to_bits());
        if ftz {
            fmt.flush_subnormal(v)
        } else {
            v
        }
    };
    let mut r = arith::float_op(fmt, op, conversion::direction(rnd), input(a), input(b), input(c));
    if ftz {
        r = fmt.flush_subnormal(r);
    }
    if sat {
        r = conversion::saturate(fmt, r);
    }
    f32::from_bits(r as u32)
}

/// f64 `add/sub/mul/fma/div` with an explicit rounding mode (for
/// `.rz/.rm/.rp`; `.rn` is plain Rust arithmetic). Exact result, one rounding;
/// NaN results are the canonical 0x7FFFFFFFFFFFFFFF.
pub fn f64_op_rounded(op: FloatOp, rnd: Rounding, a: f64, b: f64, c: f64) -> f64 {
    let bits = arith::float_op(FloatFormat::F64, op, conversion::direction(rnd), a.to_bits(), b.to_bits(), c.to_bits());
    f64::from_bits(bits)
}

/// Approximate special functions (`.approx.f32`, `.approx.ftz.f32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpecialOp {
    Ex2,
    Lg2,
    Rcp,
    Rsqrt,
    Sqrt,
    Sin,
    Cos,
    Tanh,
}

/// The value of an approximate special function: the correctly rounded value
/// of the exact function (up to the f64 library's error), which is within the
/// ISA's documented maximum error (the per-op table is in `numerics/special.rs`).
/// Special cases (±0, ±∞, NaN, negative inputs) exactly as the ISA's tables;
/// NaN results are the canonical 0x7FFFFFFF; `ftz` flushes subnormal inputs
/// and outputs to sign-preserving zero.
pub fn special_f32(op: SpecialOp, ftz: bool, x: f32) -> f32 {
    special::special(op, ftz, x)
}

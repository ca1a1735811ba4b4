//! Bit-exact scalar semantics of PTX arithmetic that Rust does not give
//! directly: conversions with every rounding mode and saturation, f16/bf16
//! scalar and packed arithmetic, f32 arithmetic with directed rounding, and the
//! approximate special functions. Pure functions on raw bits.

use crate::types::ScalarType;

/// A PTX rounding modifier. `Rn*` etc. with the `i` suffix round to an integral
/// value (`cvt.rni.f32.f32`, float → int conversions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// to nearest, ties to even
    Rn,
    /// to nearest, ties away from zero (`.rna`, cvt to f16/bf16/tf32 only)
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

/// `cvt{.rnd}{.ftz}{.sat}{.relu}.dst.src` on raw bits (low `size_bytes` of each
/// value; the result is zero-extended into u64, or sign-extended bits for
/// signed integer destinations of 64 bits). Follows the PTX ISA: NaN → 0 for
/// float → int, saturation of float → int always clamps, `.sat` on float
/// destinations clamps to [0, 1], default rounding where the ISA requires one
/// is the caller's to check at load time (see [`cvt_is_valid`]).
/// For `.f16x2`/`.bf16x2` destinations from two f32 (`cvt.rn.f16x2.f32 d, a, b`)
/// use [`cvt_pack_f32x2`].
pub fn cvt(dst: ScalarType, src: ScalarType, rnd: Option<Rounding>, ftz: bool, sat: bool, relu: bool, bits: u64) -> u64 {
    let _ = (dst, src, rnd, ftz, sat, relu, bits);
    todo!()
}

/// Whether a `cvt` with these types and modifiers is a legal PTX instruction
/// this emulator supports; `Err` says why not (used at module load).
pub fn cvt_is_valid(dst: ScalarType, src: ScalarType, rnd: Option<Rounding>, sat: bool, relu: bool) -> Result<(), String> {
    let _ = (dst, src, rnd, sat, relu);
    todo!()
}

/// `cvt.rn{.relu}{.satfinite}.{f16x2,bf16x2}.f32 d, a, b`: `a` goes to the upper half, `b` to the lower.
pub fn cvt_pack_f32x2(dst: ScalarType, rnd: Rounding, relu: bool, a: f32, b: f32) -> u32 {
    let _ = (dst, rnd, relu, a, b);
    todo!()
}

pub fn f16_to_f32(h: u16) -> f32 {
    let _ = h;
    todo!()
}

pub fn bf16_to_f32(h: u16) -> f32 {
    let _ = h;
    todo!()
}

pub fn f32_to_f16(x: f32, rnd: Rounding) -> u16 {
    let _ = (x, rnd);
    todo!()
}

pub fn f32_to_bf16(x: f32, rnd: Rounding) -> u16 {
    let _ = (x, rnd);
    todo!()
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
    Neg,
    Abs,
}

/// One f16/bf16 operation. `ty` is `F16`, `Bf16` (operands in the low 16 bits)
/// or `F16x2`, `Bf16x2` (two lanes, each computed independently). `c` is used
/// by `Fma` only. `rnd` defaults to `Rn` when `None`. `ftz` flushes f16
/// subnormal inputs and results; `sat` clamps to [0, 1]; NaN results are the
/// canonical NaN (0x7FFF for both f16 and bf16) as the ISA specifies.
pub fn half_op(op: FloatOp, ty: ScalarType, rnd: Option<Rounding>, ftz: bool, sat: bool, a: u32, b: u32, c: u32) -> u32 {
    let _ = (op, ty, rnd, ftz, sat, a, b, c);
    todo!()
}

/// f32 `add/sub/mul/fma/div` with an explicit rounding mode (the `.rn` forms
/// are plain Rust arithmetic; this is for `.rz/.rm/.rp`) and `.ftz`/`.sat`.
pub fn f32_op_rounded(op: FloatOp, rnd: Rounding, ftz: bool, sat: bool, a: f32, b: f32, c: f32) -> f32 {
    let _ = (op, rnd, ftz, sat, a, b, c);
    todo!()
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
/// of the exact function, which is within the ISA's documented maximum error
/// (documented per op on this function's implementation). Special cases (±0,
/// ±∞, NaN, negative inputs) exactly as the ISA's tables; `ftz` flushes
/// subnormal inputs and outputs to sign-preserving zero.
pub fn special_f32(op: SpecialOp, ftz: bool, x: f32) -> f32 {
    let _ = (op, ftz, x);
    todo!()
}

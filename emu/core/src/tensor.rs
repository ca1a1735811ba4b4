//! Warp-wide tensor-core semantics on register fragments, exactly per the PTX
//! ISA's fragment layout tables ("Matrix fragments for mma.m16n8k16" etc.).
//! Pure functions: the executor gathers the 32 lanes' registers, calls these,
//! and scatters the results; it does the memory accesses of `ldmatrix`.

mod accumulate;
mod integer;
mod layout;
mod ldmatrix;
mod operands;
#[cfg(test)]
mod tests;
mod wgmma;
mod wmma;

use crate::numerics::format::FloatFormat;
use crate::types::ScalarType;
use accumulate::multiply_accumulate;
use layout::{cd_source, InputLayout};
use operands::Operands;
pub use wgmma::{
    accumulator_coord as wgmma_accumulator_coord, input_to_f64 as wgmma_input_to_f64,
    register_a_coord as wgmma_register_a_coord, valid_n as wgmma_valid_n, wgmma_multiply, SmemDescriptor, Swizzle,
    WgmmaDesc, WgmmaOp,
};
pub use wmma::{
    wmma_element, wmma_fragment_regs, wmma_get, wmma_mma, wmma_set, wmma_slots, WmmaFragment, WmmaMatrix, WmmaShape,
    WMMA_MAX_REGS,
};

/// `mma.sync.aligned.{shape}.{alayout}.{blayout}.{dtype}.{atype}.{btype}.{ctype}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MmaDesc {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// true for `.row` A (the only layout the ISA allows for these shapes)
    pub a_row: bool,
    /// true for `.col` B
    pub b_col: bool,
    pub d_ty: ScalarType,
    pub a_ty: ScalarType,
    pub b_ty: ScalarType,
    pub c_ty: ScalarType,
}

/// The multiplicand layout of a supported `desc`, or why it is not supported.
fn input_layout(desc: &MmaDesc) -> Result<InputLayout, String> {
    let name = || {
        format!(
            "mma.m{}n{}k{}.{}.{}.{:?}.{:?}.{:?}.{:?}",
            desc.m,
            desc.n,
            desc.k,
            if desc.a_row { "row" } else { "col" },
            if desc.b_col { "col" } else { "row" },
            desc.d_ty,
            desc.a_ty,
            desc.b_ty,
            desc.c_ty
        )
        .to_lowercase()
    };
    if (desc.m, desc.n) != (16, 8) {
        return Err(format!("{}: only the m16n8 shapes are supported", name()));
    }
    if !desc.a_row || !desc.b_col {
        return Err(format!("{}: the m16n8 shapes require .row.col", name()));
    }
    if desc.a_ty != desc.b_ty {
        return Err(format!("{}: A and B must have the same type", name()));
    }
    let layout = match (desc.a_ty, desc.k) {
        (ScalarType::F16 | ScalarType::Bf16, 16) => InputLayout::HalfK16,
        (ScalarType::F16 | ScalarType::Bf16, 8) => InputLayout::HalfK8,
        (ScalarType::Tf32, 8) => InputLayout::Tf32K8,
        (ScalarType::Tf32, 4) => InputLayout::Tf32K4,
        _ => return Err(format!("{}: supported inputs are .f16/.bf16 with k8/k16 and .tf32 with k4/k8", name())),
    };
    let accumulators_ok = match desc.a_ty {
        // f16 inputs may accumulate in f16 or f32, chosen separately for C and D.
        ScalarType::F16 => {
            matches!(desc.c_ty, ScalarType::F16 | ScalarType::F32)
                && matches!(desc.d_ty, ScalarType::F16 | ScalarType::F32)
        }
        _ => desc.c_ty == ScalarType::F32 && desc.d_ty == ScalarType::F32,
    };
    if !accumulators_ok {
        return Err(format!("{}: accumulators must be .f32 (or .f16 with .f16 inputs)", name()));
    }
    Ok(layout)
}

/// Registers per lane holding a C or D of type `ty` (4 elements each).
fn accumulator_regs(ty: ScalarType) -> usize {
    if ty == ScalarType::F16 {
        2
    } else {
        4
    }
}

/// How many 32-bit registers each lane holds for A, B, C and D of `desc`,
/// or why the combination is unsupported (module-load error).
/// Supported: `.row.col` m16n8k16 and m16n8k8 with f16/bf16 inputs and f32
/// accumulators, f16 inputs with f16 or f32 C and D (independently),
/// m16n8k8 and m16n8k4 tf32 → f32; and (`integer`) m16n8k16 and m16n8k32
/// with `.s8`/`.u8` inputs and `.s32` accumulators.
pub fn mma_fragment_regs(desc: &MmaDesc) -> Result<(usize, usize, usize, usize), String> {
    if integer::is_integer(desc) {
        return integer::fragment_regs(desc);
    }
    let layout = input_layout(desc)?;
    Ok((layout.a_regs(), layout.b_regs(), accumulator_regs(desc.c_ty), accumulator_regs(desc.d_ty)))
}

/// A fragment: lane → its registers (only the first `n` of 4 are meaningful,
/// `n` from [`mma_fragment_regs`]).
pub type Fragment = [[u32; 4]; 32];

/// Significant bits of an mma input type (tf32: 10 stored + the implicit one).
fn input_precision(ty: ScalarType) -> u32 {
    match ty {
        ScalarType::Bf16 => 8,
        _ => 11,
    }
}

/// `D = A·B + C` for the whole warp. Products are exact, the sum of the k
/// products and C is formed exactly and rounded once to D's type (round to
/// nearest even) — a documented idealisation of the hardware's accumulator,
/// which adds in a wider fixed-point format with its own truncation; results
/// can differ from a GPU's in the last bit when cancellation or very
/// different magnitudes are involved. NaN results are the canonical NaN.
/// An unsupported `desc` (see [`mma_fragment_regs`]) gives all zeros.
pub fn mma_sync(desc: &MmaDesc, a: &Fragment, b: &Fragment, c: &Fragment) -> Fragment {
    if integer::is_integer(desc) {
        return integer::mma_sync(desc, a, b, c);
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { mma_sync_avx2(desc, a, b, c) };
    }
    mma_sync_with::<false>(desc, a, b, c)
}

/// [`mma_sync`] compiled for AVX2 and FMA: four f64 lanes per instruction,
/// three-operand forms and fused multiply-adds more than halve its time
/// compared with the baseline x86-64 (SSE2) build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn mma_sync_avx2(desc: &MmaDesc, a: &Fragment, b: &Fragment, c: &Fragment) -> Fragment {
    mma_sync_with::<true>(desc, a, b, c)
}

/// `FUSED`: see [`multiply_accumulate`].
#[inline(always)]
fn mma_sync_with<const FUSED: bool>(desc: &MmaDesc, a: &Fragment, b: &Fragment, c: &Fragment) -> Fragment {
    let Ok(layout) = input_layout(desc) else {
        return [[0u32; 4]; 32];
    };
    let mut operands = Operands::new();
    operands.gather(layout, desc.a_ty, desc.c_ty, a, b, c);
    let d_fmt = if desc.d_ty == ScalarType::F16 { FloatFormat::F16 } else { FloatFormat::F32 };
    let mut d = [[0u32; 4]; 32];
    let f16_d = desc.d_ty == ScalarType::F16;
    multiply_accumulate::<FUSED>(&operands, input_precision(desc.a_ty), d_fmt, |r, row| {
        for (col, &value) in row.iter().enumerate() {
            let (lane, i) = cd_source(r, col);
            if f16_d {
                d[lane][i / 2] |= (value & 0xFFFF) << (16 * (i & 1));
            } else {
                d[lane][i] = value;
            }
        }
    });
    d
}

/// `ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16`: `rows[q*8 + j]` is
/// the 16 bytes at the address lane `q*8 + j` supplied (row `j` of matrix `q`).
/// Returns each lane's `num` destination registers: lane `l`'s register `q`
/// holds row `l/4`, elements `2(l%4)` (low half) and `2(l%4)+1` of matrix `q`
/// (of its transpose with `.trans`). Missing rows read as zero; a `num` other
/// than 1, 2, 4 gives all zeros.
pub fn ldmatrix_distribute(num: u32, trans: bool, rows: &[[u8; 16]]) -> Fragment {
    ldmatrix::distribute(num, trans, rows)
}

/// `stmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16`: the inverse of
/// [`ldmatrix_distribute`]: from each lane's `num` source registers, the
/// `num*8` rows of 16 bytes to store (row `q*8+j` to the address lane `q*8+j` supplied).
/// A `num` other than 1, 2, 4 gives no rows.
pub fn stmatrix_gather(num: u32, trans: bool, regs: &Fragment) -> Vec<[u8; 16]> {
    ldmatrix::gather(num, trans, regs)
}

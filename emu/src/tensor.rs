//! Warp-wide tensor-core semantics on register fragments, exactly per the PTX
//! ISA's fragment layout tables ("Matrix fragments for mma.m16n8k16" etc.).
//! Pure functions: the executor gathers the 32 lanes' registers, calls these,
//! and scatters the results; it does the memory accesses of `ldmatrix`.

mod layout;
mod ldmatrix;

use crate::numerics::arith::{dot_product, dot_product_finite, FiniteOperand};
use crate::numerics::format::{Decoded, Direction, FloatFormat};
use crate::types::ScalarType;
use layout::{cd_coord, InputLayout};

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
            matches!(desc.c_ty, ScalarType::F16 | ScalarType::F32) && matches!(desc.d_ty, ScalarType::F16 | ScalarType::F32)
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
/// m16n8k8 and m16n8k4 tf32 → f32.
pub fn mma_fragment_regs(desc: &MmaDesc) -> Result<(usize, usize, usize, usize), String> {
    let layout = input_layout(desc)?;
    Ok((layout.a_regs(), layout.b_regs(), accumulator_regs(desc.c_ty), accumulator_regs(desc.d_ty)))
}

/// A fragment: lane → its registers (only the first `n` of 4 are meaningful,
/// `n` from [`mma_fragment_regs`]).
pub type Fragment = [[u32; 4]; 32];

/// An element's raw bits and format as an mma operand. tf32 operands are
/// read as f32 patterns with the low 13 bits ignored, as the hardware does.
fn input_format(ty: ScalarType) -> FloatFormat {
    match ty {
        ScalarType::F16 => FloatFormat::F16,
        ScalarType::Bf16 => FloatFormat::BF16,
        ScalarType::F32 | ScalarType::Tf32 => FloatFormat::F32,
        _ => FloatFormat::F32,
    }
}

fn read_element(ty: ScalarType, reg: u32, half: u32) -> u64 {
    match ty {
        ScalarType::F16 | ScalarType::Bf16 => u64::from((reg >> (16 * half)) & 0xFFFF),
        ScalarType::Tf32 => u64::from(reg & 0xFFFF_E000),
        _ => u64::from(reg),
    }
}

/// Reads C as a 16 × 8 matrix of raw bits.
fn gather_accumulator(ty: ScalarType, frag: &Fragment) -> [[u64; 8]; 16] {
    let mut m = [[0u64; 8]; 16];
    for (lane, regs) in frag.iter().enumerate() {
        for i in 0..4 {
            let (r, c) = cd_coord(lane, i);
            m[r][c] = if ty == ScalarType::F16 { read_element(ty, regs[i / 2], (i & 1) as u32) } else { u64::from(regs[i]) };
        }
    }
    m
}

/// `D = A·B + C` for the whole warp. Products are exact, the sum of the k
/// products and C is formed exactly and rounded once to D's type (round to
/// nearest even) — a documented idealisation of the hardware's accumulator,
/// which adds in a wider fixed-point format with its own truncation; results
/// can differ from a GPU's in the last bit when cancellation or very
/// different magnitudes are involved. NaN results are the canonical NaN.
/// An unsupported `desc` (see [`mma_fragment_regs`]) gives all zeros.
pub fn mma_sync(desc: &MmaDesc, a: &Fragment, b: &Fragment, c: &Fragment) -> Fragment {
    let mut d = [[0u32; 4]; 32];
    let Ok(layout) = input_layout(desc) else {
        return d;
    };
    let k = layout.k();
    let mut a_m = [[0u64; 16]; 16];
    let mut b_m = [[0u64; 8]; 16];
    for lane in 0..32 {
        for i in 0..layout.a_elements() {
            let (r, col) = layout.a_coord(lane, i);
            let slot = layout.slot(i);
            a_m[r][col] = read_element(desc.a_ty, a[lane][slot.reg], slot.half);
        }
        for i in 0..layout.b_elements() {
            let (r, col) = layout.b_coord(lane, i);
            let slot = layout.slot(i);
            b_m[r][col] = read_element(desc.b_ty, b[lane][slot.reg], slot.half);
        }
    }
    let c_m = gather_accumulator(desc.c_ty, c);
    let in_fmt = input_format(desc.a_ty);
    let c_fmt = input_format(desc.c_ty);
    let d_fmt = input_format(desc.d_ty);
    // Decode every element once; rows of A and columns of B as slices.
    // Fixed-size arrays: this runs once per warp-level mma, allocation-free.
    let zero = Decoded::Zero { neg: false };
    let mut a_rows = [[zero; 16]; 16];
    let mut b_cols = [[zero; 16]; 8];
    for r in 0..16 {
        for kk in 0..k {
            a_rows[r][kk] = in_fmt.decode(a_m[r][kk]);
        }
    }
    for col in 0..8 {
        for kk in 0..k {
            b_cols[col][kk] = in_fmt.decode(b_m[kk][col]);
        }
    }
    // The same as finite operands, `None` for a row/column holding NaN or ∞.
    let finite = |v: &[Decoded; 16]| {
        let mut out = [FiniteOperand::default(); 16];
        for (o, &x) in out.iter_mut().zip(&v[..k]) {
            *o = FiniteOperand::new(x)?;
        }
        Some(out)
    };
    let a_finite = a_rows.map(|row| finite(&row));
    let b_finite = b_cols.map(|col| finite(&col));
    for (lane, regs) in d.iter_mut().enumerate() {
        for i in 0..4 {
            let (r, col) = cd_coord(lane, i);
            let acc = c_fmt.decode(c_m[r][col]);
            let fast = match (&a_finite[r], &b_finite[col], FiniteOperand::new(acc)) {
                (Some(x), Some(y), Some(z)) => dot_product_finite(&x[..k], &y[..k], z, d_fmt, Direction::NearestEven),
                _ => None,
            };
            let value =
                fast.unwrap_or_else(|| dot_product(&a_rows[r][..k], &b_cols[col][..k], acc, d_fmt, Direction::NearestEven)) as u32;
            if desc.d_ty == ScalarType::F16 {
                regs[i / 2] |= (value & 0xFFFF) << (16 * (i & 1));
            } else {
                regs[i] = value;
            }
        }
    }
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

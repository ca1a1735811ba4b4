//! Warp-wide tensor-core semantics on register fragments, exactly per the PTX
//! ISA's fragment layout tables ("Matrix fragments for mma.m16n8k16" etc.).
//! Pure functions: the executor gathers the 32 lanes' registers, calls these,
//! and scatters the results; it does the memory accesses of `ldmatrix`.

use crate::types::ScalarType;

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

/// How many 32-bit registers each lane holds for A, B, C and D of `desc`,
/// or why the combination is unsupported (module-load error).
/// Supported at least: m16n8k16 and m16n8k8 with f16/bf16 inputs and f32
/// accumulators, m16n8k16/m16n8k8 f16 → f16, m16n8k8 tf32 → f32.
pub fn mma_fragment_regs(desc: &MmaDesc) -> Result<(usize, usize, usize, usize), String> {
    let _ = desc;
    todo!()
}

/// A fragment: lane → its registers (only the first `n` of 4 are meaningful,
/// `n` from [`mma_fragment_regs`]).
pub type Fragment = [[u32; 4]; 32];

/// `D = A·B + C` for the whole warp. Products are exact, the sum of the k
/// products and C is formed exactly and rounded once to D's type (round to
/// nearest even) — a documented idealisation of the hardware's accumulator.
pub fn mma_sync(desc: &MmaDesc, a: &Fragment, b: &Fragment, c: &Fragment) -> Fragment {
    let _ = (desc, a, b, c);
    todo!()
}

/// `ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16`: `rows[q*8 + j]` is
/// the 16 bytes at the address lane `q*8 + j` supplied (row `j` of matrix `q`).
/// Returns each lane's `num` destination registers.
pub fn ldmatrix_distribute(num: u32, trans: bool, rows: &[[u8; 16]]) -> Fragment {
    let _ = (num, trans, rows);
    todo!()
}

/// `stmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16`: the inverse of
/// [`ldmatrix_distribute`]: from each lane's `num` source registers, the
/// `num*8` rows of 16 bytes to store (row `q*8+j` to the address lane `q*8+j` supplied).
pub fn stmatrix_gather(num: u32, trans: bool, regs: &Fragment) -> Vec<[u8; 16]> {
    let _ = (num, trans, regs);
    todo!()
}

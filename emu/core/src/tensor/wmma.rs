//! `wmma.load`, `wmma.mma` and `wmma.store` (what CUDA C++'s `nvcuda::wmma`
//! compiles to) for 16-bit inputs: shapes m16n16k16, m8n32k16 and m32n8k16,
//! `.f16` A/B with `.f16` or `.f32` C/D, `.bf16` A/B with `.f32` C/D.
//!
//! The PTX ISA fixes how many registers each fragment has and leaves the
//! distribution of the matrix elements over the warp's lanes unspecified:
//! a fragment is only meaningful to the `wmma` instructions (and to
//! element-wise code, which does not care where an element lives). So any
//! distribution that `load`, `mma` and `store` agree on is correct; this one
//! gives lane `l` the `S` consecutive elements `(l % D) * S ..` of the matrix
//! in row-major order, `S` being the elements per lane the register count
//! implies and `D` = elements / `S` (a fragment larger than the matrix, e.g.
//! eight `.f16x2` registers for a 16 x 16 A, holds each element in 32 / `D`
//! lanes). `mma` computes whole-matrix `D = A·B + C` as the 16 x 8 x 16
//! `mma.sync` tiles it is made of (m8n32k16 as m16n8k16 tiles whose rows 8-15
//! are zero), with [`super::mma_sync`]'s numerics: each output's 16 products
//! and C summed exactly and rounded once.

use super::{mma_sync, Fragment, MmaDesc};
use crate::types::ScalarType;

/// Which matrix a fragment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WmmaMatrix {
    A,
    B,
    /// C or D (the accumulator).
    C,
}

/// `.m{m}n{n}k{k}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WmmaShape {
    pub m: u32,
    pub n: u32,
    pub k: u32,
}

/// Registers per lane of the widest fragment (eight).
pub const WMMA_MAX_REGS: usize = 8;

/// A warp's fragment: lane → its registers (the first `regs` meaningful).
pub type WmmaFragment = [[u32; WMMA_MAX_REGS]; 32];

impl WmmaShape {
    /// The shape of `.m{m}n{n}k{k}`, if a supported one.
    pub fn parse(s: &str) -> Option<WmmaShape> {
        match s {
            "m16n16k16" => Some(WmmaShape { m: 16, n: 16, k: 16 }),
            "m8n32k16" => Some(WmmaShape { m: 8, n: 32, k: 16 }),
            "m32n8k16" => Some(WmmaShape { m: 32, n: 8, k: 16 }),
            _ => None,
        }
    }

    /// Rows and columns of `which` (A: m x k, B: k x n, C/D: m x n).
    pub fn dims(self, which: WmmaMatrix) -> (u32, u32) {
        match which {
            WmmaMatrix::A => (self.m, self.k),
            WmmaMatrix::B => (self.k, self.n),
            WmmaMatrix::C => (self.m, self.n),
        }
    }
}

/// Registers per lane of a `which` fragment of element type `ty`, as the
/// PTX ISA lists them, or why the combination is not supported.
pub fn wmma_fragment_regs(shape: WmmaShape, which: WmmaMatrix, ty: ScalarType) -> Result<usize, String> {
    match (which, ty) {
        // Eight .f16x2 registers for A and B whatever the shape.
        (WmmaMatrix::A | WmmaMatrix::B, ScalarType::F16) => Ok(8),
        // .bf16: exactly the elements, two per .b32 register.
        (WmmaMatrix::A | WmmaMatrix::B, ScalarType::Bf16) => {
            let (r, c) = shape.dims(which);
            Ok((r * c / 64) as usize)
        }
        (WmmaMatrix::C, ScalarType::F32) => Ok(8),
        (WmmaMatrix::C, ScalarType::F16) => Ok(4),
        _ => Err(format!("wmma .{ty:?} {which:?} fragments are not supported (A/B .f16/.bf16, C/D .f16/.f32)")),
    }
}

/// Bytes of one element of `ty` (2 or 4).
fn element_bytes(ty: ScalarType) -> usize {
    if ty == ScalarType::F32 {
        4
    } else {
        2
    }
}

/// Elements each lane holds of a `which` fragment of `ty` with `regs` registers.
fn slots(ty: ScalarType, regs: usize) -> usize {
    regs * 4 / element_bytes(ty)
}

/// The (row, column) of the matrix element in slot `slot` of lane `lane`,
/// for a `which` fragment of `ty` with `regs` registers.
pub fn wmma_element(
    shape: WmmaShape,
    which: WmmaMatrix,
    ty: ScalarType,
    regs: usize,
    lane: usize,
    slot: usize,
) -> (u32, u32) {
    let (rows, cols) = shape.dims(which);
    let s = slots(ty, regs);
    let distinct = (rows * cols) as usize / s;
    let e = (lane % distinct) * s + slot;
    ((e / cols as usize) as u32, (e % cols as usize) as u32)
}

/// Elements per lane (slots) of a fragment: what `load` fills and `store` writes.
pub fn wmma_slots(ty: ScalarType, regs: usize) -> usize {
    slots(ty, regs)
}

/// Slot `slot`'s bits in a lane's registers.
pub fn wmma_get(regs: &[u32; WMMA_MAX_REGS], ty: ScalarType, slot: usize) -> u32 {
    if element_bytes(ty) == 4 {
        regs[slot]
    } else {
        (regs[slot / 2] >> (16 * (slot % 2))) & 0xFFFF
    }
}

/// Sets slot `slot` of a lane's registers to `bits`.
pub fn wmma_set(regs: &mut [u32; WMMA_MAX_REGS], ty: ScalarType, slot: usize, bits: u32) {
    if element_bytes(ty) == 4 {
        regs[slot] = bits;
    } else {
        let shift = 16 * (slot % 2);
        regs[slot / 2] = (regs[slot / 2] & !(0xFFFF << shift)) | (bits & 0xFFFF) << shift;
    }
}

/// The whole matrix a fragment holds, `m[row][col]` (each element from the
/// first lane holding it).
fn matrix_of(f: &WmmaFragment, shape: WmmaShape, which: WmmaMatrix, ty: ScalarType, regs: usize) -> Vec<Vec<u32>> {
    let (rows, cols) = shape.dims(which);
    let mut m = vec![vec![0u32; cols as usize]; rows as usize];
    let s = slots(ty, regs);
    let distinct = (rows * cols) as usize / s;
    for (lane, lane_regs) in f.iter().enumerate().take(distinct) {
        for slot in 0..s {
            let (r, c) = wmma_element(shape, which, ty, regs, lane, slot);
            m[r as usize][c as usize] = wmma_get(lane_regs, ty, slot);
        }
    }
    m
}

/// `wmma.mma.sync.aligned.row.col.{shape}.{dtype}.{atype}.{btype}.{ctype}`
/// (the ISA's A `.row` and B `.col` variants only: fragments here hold
/// whole matrices, so the layout qualifiers only matter to `load`/`store`,
/// and each combination is accepted). `ab` is the input type (`.f16` or
/// `.bf16`), `c_ty`/`d_ty` the accumulators'.
pub fn wmma_mma(
    shape: WmmaShape,
    ab: ScalarType,
    c_ty: ScalarType,
    d_ty: ScalarType,
    a: &WmmaFragment,
    b: &WmmaFragment,
    c: &WmmaFragment,
) -> Result<WmmaFragment, String> {
    let a_regs = wmma_fragment_regs(shape, WmmaMatrix::A, ab)?;
    let b_regs = wmma_fragment_regs(shape, WmmaMatrix::B, ab)?;
    let c_regs = wmma_fragment_regs(shape, WmmaMatrix::C, c_ty)?;
    let d_regs = wmma_fragment_regs(shape, WmmaMatrix::C, d_ty)?;
    let am = matrix_of(a, shape, WmmaMatrix::A, ab, a_regs);
    let bm = matrix_of(b, shape, WmmaMatrix::B, ab, b_regs);
    let cm = matrix_of(c, shape, WmmaMatrix::C, c_ty, c_regs);
    let desc = MmaDesc { m: 16, n: 8, k: 16, a_row: true, b_col: true, d_ty, a_ty: ab, b_ty: ab, c_ty };
    let (m, n) = (shape.m as usize, shape.n as usize);
    let mut dm = vec![vec![0u32; n]; m];
    // The m16n8k16 fragment tables of the PTX ISA ("Matrix fragments for
    // mma.m16n8k16"): groupID g = lane / 4, thread in group t = lane % 4.
    for m0 in (0..m).step_by(16) {
        for n0 in (0..n).step_by(8) {
            let row = |r: usize| m0 + r;
            let (mut fa, mut fb, mut fc): (Fragment, Fragment, Fragment) = ([[0; 4]; 32], [[0; 4]; 32], [[0; 4]; 32]);
            let half = |v: u32| v & 0xFFFF;
            for lane in 0..32 {
                let (g, t) = (lane / 4, lane % 4);
                let a_at = |r: usize, k: usize| if row(r) < m { half(am[row(r)][k]) } else { 0 };
                for (i, (dr, dk)) in [(0, 0), (8, 0), (0, 8), (8, 8)].into_iter().enumerate() {
                    fa[lane][i] = a_at(g + dr, 2 * t + dk) | a_at(g + dr, 2 * t + dk + 1) << 16;
                }
                for (i, reg) in fb[lane].iter_mut().take(2).enumerate() {
                    let k = 2 * t + 8 * i;
                    *reg = half(bm[k][n0 + g]) | half(bm[k + 1][n0 + g]) << 16;
                }
                let c_at = |r: usize, col: usize| if row(r) < m { cm[row(r)][n0 + col] } else { 0 };
                if c_ty == ScalarType::F16 {
                    fc[lane][0] = half(c_at(g, 2 * t)) | half(c_at(g, 2 * t + 1)) << 16;
                    fc[lane][1] = half(c_at(g + 8, 2 * t)) | half(c_at(g + 8, 2 * t + 1)) << 16;
                } else {
                    fc[lane] = [c_at(g, 2 * t), c_at(g, 2 * t + 1), c_at(g + 8, 2 * t), c_at(g + 8, 2 * t + 1)];
                }
            }
            let fd = mma_sync(&desc, &fa, &fb, &fc);
            for (lane, regs) in fd.iter().enumerate() {
                let (g, t) = (lane / 4, lane % 4);
                let values = if d_ty == ScalarType::F16 {
                    [half(regs[0]), regs[0] >> 16, half(regs[1]), regs[1] >> 16]
                } else {
                    *regs
                };
                for (i, v) in values.into_iter().enumerate() {
                    let (r, col) = (g + 8 * (i / 2), 2 * t + i % 2);
                    if row(r) < m {
                        dm[row(r)][n0 + col] = v;
                    }
                }
            }
        }
    }
    let mut d = [[0u32; WMMA_MAX_REGS]; 32];
    for (lane, lane_regs) in d.iter_mut().enumerate() {
        for slot in 0..slots(d_ty, d_regs) {
            let (r, col) = wmma_element(shape, WmmaMatrix::C, d_ty, d_regs, lane, slot);
            wmma_set(lane_regs, d_ty, slot, dm[r as usize][col as usize]);
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_is_in_some_lane_and_lanes_agree_on_copies() {
        for shape in ["m16n16k16", "m8n32k16", "m32n8k16"].map(|s| WmmaShape::parse(s).unwrap()) {
            for (which, ty) in [
                (WmmaMatrix::A, ScalarType::F16),
                (WmmaMatrix::B, ScalarType::F16),
                (WmmaMatrix::A, ScalarType::Bf16),
                (WmmaMatrix::B, ScalarType::Bf16),
                (WmmaMatrix::C, ScalarType::F32),
                (WmmaMatrix::C, ScalarType::F16),
            ] {
                let regs = wmma_fragment_regs(shape, which, ty).unwrap();
                let (rows, cols) = shape.dims(which);
                let mut seen = vec![0u32; (rows * cols) as usize];
                for lane in 0..32 {
                    for slot in 0..wmma_slots(ty, regs) {
                        let (r, c) = wmma_element(shape, which, ty, regs, lane, slot);
                        seen[(r * cols + c) as usize] += 1;
                    }
                }
                let copies = seen[0];
                assert!(copies >= 1 && seen.iter().all(|&n| n == copies), "{shape:?} {which:?} {ty:?}: {seen:?}");
            }
        }
    }
}

//! Integer `mma`: `.s8`/`.u8` multiplicands (either signedness for A and B)
//! and `.s32` accumulators, shapes m16n8k16 and m16n8k32 with `.row.col`, as
//! Ampere's int8 tensor cores run them (llama.cpp's and candle's MMQ kernels
//! use both). Each 32-bit register holds four consecutive k elements, lowest
//! k in the lowest byte, so in units of such words the fragments are laid out
//! as the f16 m16n8k8 (k16) and m16n8k16 (k32) ones (PTX ISA, "Matrix
//! Fragments for mma.m16n8k16/k32" with `.s8`): with `g = lane >> 2` and
//! `t = lane % 4`, A's word (row, w) is lane `(row % 8) * 4 + w % 4`,
//! register `[row >= 8] + 2 [w >= 4]`; B's word (w, col) is lane
//! `col * 4 + w % 4`, register `w / 4`; C and D hold row `g` (registers 0, 1)
//! and `g + 8` (2, 3), columns `2t` and `2t + 1`.
//!
//! Exact: the products and their sum are integers; the s32 result wraps
//! modulo 2^32, as the hardware's does without `.satfinite` (which is
//! refused at load).

use super::{Fragment, MmaDesc};
use crate::types::ScalarType;

/// Whether `desc` has integer multiplicands (handled here, not by the
/// floating-point path).
pub fn is_integer(desc: &MmaDesc) -> bool {
    matches!(desc.a_ty, ScalarType::S8 | ScalarType::U8) || matches!(desc.b_ty, ScalarType::S8 | ScalarType::U8)
}

/// Registers per lane for A, B, C and D, or why `desc` is not supported.
pub fn fragment_regs(desc: &MmaDesc) -> Result<(usize, usize, usize, usize), String> {
    let name = format!(
        "mma.m{}n{}k{}.{:?}.{:?}.{:?}.{:?}",
        desc.m, desc.n, desc.k, desc.d_ty, desc.a_ty, desc.b_ty, desc.c_ty
    )
    .to_lowercase();
    if (desc.m, desc.n) != (16, 8) || !matches!(desc.k, 16 | 32) {
        return Err(format!("{name}: integer mma supports m16n8k16 and m16n8k32"));
    }
    if !desc.a_row || !desc.b_col {
        return Err(format!("{name}: the m16n8 shapes require .row.col"));
    }
    let byte = |ty: ScalarType| matches!(ty, ScalarType::S8 | ScalarType::U8);
    if !byte(desc.a_ty) || !byte(desc.b_ty) || desc.c_ty != ScalarType::S32 || desc.d_ty != ScalarType::S32 {
        return Err(format!("{name}: integer mma needs .s8/.u8 inputs and .s32 accumulators"));
    }
    let words = desc.k as usize / 4;
    Ok((words / 2, words / 4, 4, 4))
}

/// Byte `byte` of a word as the element type says (sign-extended for `.s8`).
fn element(word: u32, byte: usize, ty: ScalarType) -> i32 {
    let value = (word >> (8 * byte)) as u8;
    if ty == ScalarType::S8 {
        i32::from(value as i8)
    } else {
        i32::from(value)
    }
}

/// `D = A·B + C` for the whole warp (`desc` accepted by [`fragment_regs`]).
pub fn mma_sync(desc: &MmaDesc, a: &Fragment, b: &Fragment, c: &Fragment) -> Fragment {
    let words = desc.k as usize / 4;
    let a_word = |row: usize, w: usize| a[(row % 8) * 4 + w % 4][usize::from(row >= 8) + 2 * usize::from(w >= 4)];
    let b_word = |w: usize, col: usize| b[col * 4 + w % 4][w / 4];
    let mut d: Fragment = [[0; 4]; 32];
    for row in 0..16 {
        for col in 0..8 {
            let (lane, reg) = ((row % 8) * 4 + col / 2, col % 2 + 2 * usize::from(row >= 8));
            let mut sum = c[lane][reg] as i32;
            for w in 0..words {
                let (aw, bw) = (a_word(row, w), b_word(w, col));
                for byte in 0..4 {
                    sum = sum.wrapping_add(element(aw, byte, desc.a_ty).wrapping_mul(element(bw, byte, desc.b_ty)));
                }
            }
            d[lane][reg] = sum as u32;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs A (16 x k) and B (k x 8) into fragments element by element with
    /// the PTX ISA's per-element tables for `.s8`/`.u8` (`a_i`: row `g` for
    /// i % 8 < 4, else `g + 8`; column `4t + i % 4`, plus 16 for i >= 8;
    /// `b_i`: row `4t + i % 4`, plus 16 for i >= 4; column `g`), runs the mma
    /// and compares D with the plain product plus C.
    fn check(k: usize, a_ty: ScalarType, b_ty: ScalarType, seed: u64) {
        let desc = MmaDesc {
            m: 16,
            n: 8,
            k: k as u32,
            a_row: true,
            b_col: true,
            d_ty: ScalarType::S32,
            a_ty,
            b_ty,
            c_ty: ScalarType::S32,
        };
        let mut state = seed;
        let mut byte = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        };
        let a: Vec<Vec<u8>> = (0..16).map(|_| (0..k).map(|_| byte()).collect()).collect();
        let b: Vec<Vec<u8>> = (0..k).map(|_| (0..8).map(|_| byte()).collect()).collect();
        let (mut fa, mut fb, mut fc): (Fragment, Fragment, Fragment) = ([[0; 4]; 32], [[0; 4]; 32], [[0; 4]; 32]);
        for lane in 0..32 {
            let (g, t) = (lane / 4, lane % 4);
            for i in 0..k / 2 {
                let row = if i % 8 < 4 { g } else { g + 8 };
                let col = 4 * t + i % 4 + if i >= 8 { 16 } else { 0 };
                fa[lane][i / 4] |= u32::from(a[row][col]) << (8 * (i % 4));
            }
            for i in 0..k / 4 {
                let row = 4 * t + i % 4 + if i >= 4 { 16 } else { 0 };
                fb[lane][i / 4] |= u32::from(b[row][g]) << (8 * (i % 4));
            }
            for (i, c) in fc[lane].iter_mut().enumerate() {
                *c = (lane as u32 * 7919 + i as u32 * 104_729).wrapping_mul(2_654_435_761);
            }
        }
        let d = mma_sync(&desc, &fa, &fb, &fc);
        let value = |v: u8, ty: ScalarType| if ty == ScalarType::S8 { i32::from(v as i8) } else { i32::from(v) };
        for lane in 0..32 {
            let (g, t) = (lane / 4, lane % 4);
            for i in 0..4 {
                let (row, col) = (if i < 2 { g } else { g + 8 }, 2 * t + i % 2);
                let product: i32 = (0..k)
                    .fold(0i32, |s, j| s.wrapping_add(value(a[row][j], a_ty).wrapping_mul(value(b[j][col], b_ty))));
                let want = (fc[lane][i] as i32).wrapping_add(product);
                assert_eq!(d[lane][i] as i32, want, "k{k} {a_ty:?}x{b_ty:?}: D[{row}][{col}]");
            }
        }
    }

    #[test]
    fn integer_mma_matches_the_plain_product() {
        for (seed, (a_ty, b_ty)) in [
            (ScalarType::S8, ScalarType::S8),
            (ScalarType::U8, ScalarType::S8),
            (ScalarType::S8, ScalarType::U8),
            (ScalarType::U8, ScalarType::U8),
        ]
        .into_iter()
        .enumerate()
        {
            check(16, a_ty, b_ty, seed as u64 + 1);
            check(32, a_ty, b_ty, seed as u64 + 11);
        }
    }

    #[test]
    fn integer_mma_fragment_registers_and_refusals() {
        let desc = |k, c_ty| MmaDesc {
            m: 16,
            n: 8,
            k,
            a_row: true,
            b_col: true,
            d_ty: ScalarType::S32,
            a_ty: ScalarType::S8,
            b_ty: ScalarType::S8,
            c_ty,
        };
        assert_eq!(fragment_regs(&desc(32, ScalarType::S32)), Ok((4, 2, 4, 4)));
        assert_eq!(fragment_regs(&desc(16, ScalarType::S32)), Ok((2, 1, 4, 4)));
        assert!(fragment_regs(&desc(8, ScalarType::S32)).is_err());
        assert!(fragment_regs(&desc(32, ScalarType::F32)).is_err());
    }
}

//! `ldmatrix`/`stmatrix` against the PTX ISA's description ("each thread
//! receives one 32-bit word: lane l gets row l/4, elements 2(l%4) and
//! 2(l%4)+1 of each 8×8 matrix; .trans transposes each matrix"), and the
//! canonical pairing with `mma`: `ldmatrix.x4` of a row-major 16×16 tile is
//! the m16n8k16 A fragment, `ldmatrix.x2.trans` of a row-major 16×8 tile the
//! B fragment.

use ptx_emu::tensor::{ldmatrix_distribute, mma_sync, stmatrix_gather, MmaDesc};
use ptx_emu::ScalarType::{Bf16, F32};

/// Distinct element values: matrix q, row r, column c.
fn element(q: usize, r: usize, c: usize) -> u16 {
    (0x1000 * q + 0x100 * r + c) as u16 ^ 0x0A50
}

fn rows_of(num: usize) -> Vec<[u8; 16]> {
    let mut rows = Vec::new();
    for q in 0..num {
        for r in 0..8 {
            let mut row = [0u8; 16];
            for c in 0..8 {
                row[2 * c..2 * c + 2].copy_from_slice(&element(q, r, c).to_le_bytes());
            }
            rows.push(row);
        }
    }
    rows
}

#[test]
fn distributes_per_the_isa_for_every_count_and_transposition() {
    for num in [1usize, 2, 4] {
        for trans in [false, true] {
            let frag = ldmatrix_distribute(num as u32, trans, &rows_of(num));
            for (lane, regs) in frag.iter().enumerate() {
                for (q, &reg) in regs.iter().enumerate() {
                    let (lo, hi) = if q >= num {
                        (0, 0)
                    } else if trans {
                        (element(q, 2 * (lane % 4), lane / 4), element(q, 2 * (lane % 4) + 1, lane / 4))
                    } else {
                        (element(q, lane / 4, 2 * (lane % 4)), element(q, lane / 4, 2 * (lane % 4) + 1))
                    };
                    assert_eq!(reg, u32::from(lo) | (u32::from(hi) << 16), "x{num} trans={trans} lane {lane} reg {q}");
                }
            }
        }
    }
}

#[test]
fn stmatrix_inverts_ldmatrix() {
    let mut state = 0x0123_4567_89AB_CDEFu64;
    for num in [1u32, 2, 4] {
        for trans in [false, true] {
            let rows: Vec<[u8; 16]> = (0..num * 8)
                .map(|_| {
                    let mut row = [0u8; 16];
                    for byte in row.iter_mut() {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        *byte = state as u8;
                    }
                    row
                })
                .collect();
            let frag = ldmatrix_distribute(num, trans, &rows);
            assert_eq!(stmatrix_gather(num, trans, &frag), rows, "x{num} trans={trans}");
        }
    }
}

#[test]
fn bad_counts_and_short_input_do_not_panic() {
    assert_eq!(ldmatrix_distribute(3, false, &rows_of(4)), [[0u32; 4]; 32]);
    assert!(stmatrix_gather(0, true, &[[1u32; 4]; 32]).is_empty());
    // Only matrix 0 supplied for .x2: matrix 1 reads as zeros.
    let frag = ldmatrix_distribute(2, false, &rows_of(1));
    assert!(frag.iter().all(|regs| regs[1] == 0));
    assert_eq!(frag[5][0], u32::from(element(0, 1, 2)) | (u32::from(element(0, 1, 3)) << 16));
}

fn bf16(v: f32) -> u16 {
    half::bf16::from_f32(v).to_bits()
}

#[test]
fn ldmatrix_fragments_feed_mma() {
    // A: 16×16 row-major, B: 16×8 row-major (k × n), small integers.
    let a = |i: usize, k: usize| ((i * 3 + k * 5) % 7) as f32 - 3.0;
    let b = |k: usize, j: usize| ((k + 2 * j) % 5) as f32 - 2.0;
    // x4: lane i supplies row i % 16 at column 8·(i / 16); matrices in lane order.
    let a_rows: Vec<[u8; 16]> = (0..32)
        .map(|lane| {
            let (r, c0) = (lane % 16, 8 * (lane / 16));
            let mut row = [0u8; 16];
            for c in 0..8 {
                row[2 * c..2 * c + 2].copy_from_slice(&bf16(a(r, c0 + c)).to_le_bytes());
            }
            row
        })
        .collect();
    // x2.trans: lane i supplies row k = i of B (8 elements, n = 0..8).
    let b_rows: Vec<[u8; 16]> = (0..16)
        .map(|k| {
            let mut row = [0u8; 16];
            for j in 0..8 {
                row[2 * j..2 * j + 2].copy_from_slice(&bf16(b(k, j)).to_le_bytes());
            }
            row
        })
        .collect();
    let a_frag = ldmatrix_distribute(4, false, &a_rows);
    let b_frag = ldmatrix_distribute(2, true, &b_rows);
    let desc = MmaDesc { m: 16, n: 8, k: 16, a_row: true, b_col: true, d_ty: F32, a_ty: Bf16, b_ty: Bf16, c_ty: F32 };
    let d = mma_sync(&desc, &a_frag, &b_frag, &[[0u32; 4]; 32]);
    for (lane, regs) in d.iter().enumerate() {
        let (g, t) = (lane >> 2, lane % 4);
        for (i, &reg) in regs.iter().enumerate() {
            let (row, col) = (g + 8 * (i / 2), 2 * t + i % 2);
            let want: f32 = (0..16).map(|k| a(row, k) * b(k, col)).sum();
            assert_eq!(f32::from_bits(reg), want, "D[{row}][{col}]");
        }
    }
}

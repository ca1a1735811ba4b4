//! `ldmatrix`/`stmatrix` `.m8n8.b16`: each 8×8 matrix of 16-bit elements is
//! spread so that lane `l` holds, in register `q`, the 32-bit word of matrix
//! `q` at row `l / 4`, elements `2·(l % 4)` and `2·(l % 4) + 1` (lower
//! column in the low half). `.trans` does the same for each transposed matrix.

use super::Fragment;

fn valid_num(num: u32) -> bool {
    matches!(num, 1 | 2 | 4)
}

/// For lane `lane` and its half `h` (0 low, 1 high) of register `q`: the
/// (row, element) of matrix `q` in memory order.
fn source_of(lane: usize, h: usize, trans: bool) -> (usize, usize) {
    let (r, c) = (lane / 4, 2 * (lane % 4) + h);
    if trans {
        (c, r)
    } else {
        (r, c)
    }
}

pub(crate) fn distribute(num: u32, trans: bool, rows: &[[u8; 16]]) -> Fragment {
    let mut out = [[0u32; 4]; 32];
    if !valid_num(num) {
        return out;
    }
    let element = |q: usize, row: usize, col: usize| {
        rows.get(q * 8 + row).map_or(0, |r| u32::from(u16::from_le_bytes([r[2 * col], r[2 * col + 1]])))
    };
    for (lane, regs) in out.iter_mut().enumerate() {
        for (q, reg) in regs.iter_mut().enumerate().take(num as usize) {
            let (r0, c0) = source_of(lane, 0, trans);
            let (r1, c1) = source_of(lane, 1, trans);
            *reg = element(q, r0, c0) | (element(q, r1, c1) << 16);
        }
    }
    out
}

pub(crate) fn gather(num: u32, trans: bool, regs: &Fragment) -> Vec<[u8; 16]> {
    if !valid_num(num) {
        return Vec::new();
    }
    let mut rows = vec![[0u8; 16]; num as usize * 8];
    for (lane, lane_regs) in regs.iter().enumerate() {
        for (q, &reg) in lane_regs.iter().enumerate().take(num as usize) {
            for h in 0..2 {
                let (r, c) = source_of(lane, h, trans);
                let value = (reg >> (16 * h)) as u16;
                rows[q * 8 + r][2 * c..2 * c + 2].copy_from_slice(&value.to_le_bytes());
            }
        }
    }
    rows
}

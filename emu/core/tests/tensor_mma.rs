//! `mma_sync` against a naive matrix product. Fragments are built with this
//! file's own transcription of the PTX ISA's fragment tables ("Matrix
//! Fragments for mma.m16n8k16 / mma.m16n8k8 / mma.m16n8k4"), written per
//! register as the ISA lists them, independent of the emulator's code.

use ptx_emu::tensor::{mma_fragment_regs, mma_sync, Fragment, MmaDesc};
use ptx_emu::ScalarType::{self, Bf16, Tf32, F16, F32};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform integer in [-span, span].
    fn int(&mut self, span: i64) -> i64 {
        (self.next() % (2 * span as u64 + 1)) as i64 - span
    }
}

fn desc(k: u32, ab: ScalarType, c: ScalarType, d: ScalarType) -> MmaDesc {
    MmaDesc { m: 16, n: 8, k, a_row: true, b_col: true, d_ty: d, a_ty: ab, b_ty: ab, c_ty: c }
}

// ---- The ISA's tables, per register. groupID g = lane >> 2, threadID_in_group t = lane % 4.

/// m16n8k16 .f16/.bf16 A: four .f16x2 registers; register r holds
/// (row g + ROW[r], cols 2t + COL[r] + {0 (low half), 1 (high half)}):
/// a0,a1 → (g, 2t..); a2,a3 → (g+8, 2t..); a4,a5 → (g, 2t+8..); a6,a7 → (g+8, 2t+8..).
const A_K16_OFFSETS: [(usize, usize); 4] = [(0, 0), (8, 0), (0, 8), (8, 8)];
/// m16n8k16 B: two registers; register r holds (rows 2t + 8r + {0, 1}, col g).
/// m16n8k8 .f16/.bf16 A: two registers, (g, 2t..) and (g+8, 2t..); B: one register, (rows 2t + {0, 1}, col g).
const A_K8_OFFSETS: [(usize, usize); 2] = [(0, 0), (8, 0)];
/// m16n8k8 .tf32 A: four registers a0..a3 = (g, t), (g+8, t), (g, t+4), (g+8, t+4).
const A_TF32_K8: [(usize, usize); 4] = [(0, 0), (8, 0), (0, 4), (8, 4)];
/// m16n8k4 .tf32 A: a0 = (g, t), a1 = (g+8, t).
const A_TF32_K4: [(usize, usize); 2] = [(0, 0), (8, 0)];

/// Element bits of a matrix: `m[row][col]`.
type Matrix = Vec<Vec<u32>>;

fn pack_a(k: usize, ab: ScalarType, a: &Matrix) -> Fragment {
    let mut f = [[0u32; 4]; 32];
    for (lane, regs) in f.iter_mut().enumerate() {
        let (g, t) = (lane >> 2, lane % 4);
        match (ab, k) {
            (Tf32, 8) => {
                for (r, &(dr, dc)) in A_TF32_K8.iter().enumerate() {
                    regs[r] = a[g + dr][t + dc];
                }
            }
            (Tf32, 4) => {
                for (r, &(dr, dc)) in A_TF32_K4.iter().enumerate() {
                    regs[r] = a[g + dr][t + dc];
                }
            }
            (_, 16) => {
                for (r, &(dr, dc)) in A_K16_OFFSETS.iter().enumerate() {
                    regs[r] = a[g + dr][2 * t + dc] | (a[g + dr][2 * t + dc + 1] << 16);
                }
            }
            _ => {
                for (r, &(dr, dc)) in A_K8_OFFSETS.iter().enumerate() {
                    regs[r] = a[g + dr][2 * t + dc] | (a[g + dr][2 * t + dc + 1] << 16);
                }
            }
        }
    }
    f
}

fn pack_b(k: usize, ab: ScalarType, b: &Matrix) -> Fragment {
    let mut f = [[0u32; 4]; 32];
    for (lane, regs) in f.iter_mut().enumerate() {
        let (g, t) = (lane >> 2, lane % 4);
        match (ab, k) {
            // b0 = (t, g), b1 = (t + 4, g)
            (Tf32, 8) => {
                regs[0] = b[t][g];
                regs[1] = b[t + 4][g];
            }
            // b0 = (t, g)
            (Tf32, 4) => regs[0] = b[t][g],
            (_, 16) => {
                regs[0] = b[2 * t][g] | (b[2 * t + 1][g] << 16);
                regs[1] = b[2 * t + 8][g] | (b[2 * t + 9][g] << 16);
            }
            _ => regs[0] = b[2 * t][g] | (b[2 * t + 1][g] << 16),
        }
    }
    f
}

/// C/D: c0,c1 = (g, 2t + {0,1}), c2,c3 = (g+8, 2t + {0,1}); .f32 one per
/// register, .f16 as two .f16x2 registers {c0,c1}, {c2,c3}.
fn pack_cd(ty: ScalarType, c: &Matrix) -> Fragment {
    let mut f = [[0u32; 4]; 32];
    for (lane, regs) in f.iter_mut().enumerate() {
        let (g, t) = (lane >> 2, lane % 4);
        if ty == F16 {
            regs[0] = c[g][2 * t] | (c[g][2 * t + 1] << 16);
            regs[1] = c[g + 8][2 * t] | (c[g + 8][2 * t + 1] << 16);
        } else {
            regs[..4].copy_from_slice(&[c[g][2 * t], c[g][2 * t + 1], c[g + 8][2 * t], c[g + 8][2 * t + 1]]);
        }
    }
    f
}

fn unpack_cd(ty: ScalarType, f: &Fragment) -> Matrix {
    let mut m = vec![vec![0u32; 8]; 16];
    for (lane, regs) in f.iter().enumerate() {
        let (g, t) = (lane >> 2, lane % 4);
        if ty == F16 {
            m[g][2 * t] = regs[0] & 0xFFFF;
            m[g][2 * t + 1] = regs[0] >> 16;
            m[g + 8][2 * t] = regs[1] & 0xFFFF;
            m[g + 8][2 * t + 1] = regs[1] >> 16;
        } else {
            m[g][2 * t] = regs[0];
            m[g][2 * t + 1] = regs[1];
            m[g + 8][2 * t] = regs[2];
            m[g + 8][2 * t + 1] = regs[3];
        }
    }
    m
}

// ---- Values.

fn to_bits(ty: ScalarType, v: f64) -> u32 {
    match ty {
        F16 => u32::from(half::f16::from_f64(v).to_bits()),
        Bf16 => u32::from(half::bf16::from_f64(v).to_bits()),
        _ => (v as f32).to_bits(),
    }
}

fn to_f64(ty: ScalarType, bits: u32) -> f64 {
    match ty {
        F16 => f64::from(half::f16::from_bits(bits as u16)),
        Bf16 => f64::from(half::bf16::from_bits(bits as u16)),
        // tf32 operands: the hardware reads only the upper 19 bits.
        Tf32 => f64::from(f32::from_bits(bits & 0xFFFF_E000)),
        _ => f64::from(f32::from_bits(bits)),
    }
}

/// A value exactly representable in `ty`, on a grid coarse enough that the
/// f64 reference sum below is exact.
fn sample(rng: &mut Rng, ty: ScalarType) -> u32 {
    match ty {
        F16 => to_bits(F16, rng.int(1024) as f64 / 256.0),
        Bf16 => to_bits(Bf16, rng.int(255) as f64 / 16.0),
        // tf32: 11 significant bits, plus junk in the 13 ignored bits.
        Tf32 => to_bits(F32, rng.int(2047) as f64 / 256.0) | (rng.next() as u32 & 0x1FFF),
        _ => to_bits(F32, rng.int((1 << 23) - 1) as f64 / (1u64 << 20) as f64),
    }
}

fn random_matrix(rng: &mut Rng, rows: usize, cols: usize, ty: ScalarType) -> Matrix {
    (0..rows).map(|_| (0..cols).map(|_| sample(rng, ty)).collect()).collect()
}

/// D = A·B + C in f64 (exact for the sampled grids), rounded once to D's type.
fn reference(
    k: usize,
    ab: ScalarType,
    c_ty: ScalarType,
    d_ty: ScalarType,
    a: &Matrix,
    b: &Matrix,
    c: &Matrix,
) -> Matrix {
    (0..16)
        .map(|i| {
            (0..8)
                .map(|j| {
                    let dot: f64 = (0..k).map(|kk| to_f64(ab, a[i][kk]) * to_f64(ab, b[kk][j])).sum();
                    to_bits(d_ty, dot + to_f64(c_ty, c[i][j]))
                })
                .collect()
        })
        .collect()
}

fn check_case(k: usize, ab: ScalarType, c_ty: ScalarType, d_ty: ScalarType, seed: u64) {
    let d = desc(k as u32, ab, c_ty, d_ty);
    let mut rng = Rng(seed);
    let a = random_matrix(&mut rng, 16, k, ab);
    let b = random_matrix(&mut rng, k, 8, ab);
    let c = random_matrix(&mut rng, 16, 8, c_ty);
    let got = unpack_cd(d_ty, &mma_sync(&d, &pack_a(k, ab, &a), &pack_b(k, ab, &b), &pack_cd(c_ty, &c)));
    let want = reference(k, ab, c_ty, d_ty, &a, &b, &c);
    for i in 0..16 {
        for j in 0..8 {
            assert_eq!(got[i][j], want[i][j], "{d:?}: D[{i}][{j}] = {:#x}, want {:#x}", got[i][j], want[i][j]);
        }
    }
}

#[test]
fn m16n8k16_f16_and_bf16_match_naive_product() {
    for seed in 1..=8 {
        check_case(16, F16, F32, F32, seed);
        check_case(16, Bf16, F32, F32, seed);
        check_case(16, F16, F16, F16, seed);
        check_case(16, F16, F32, F16, seed);
        check_case(16, F16, F16, F32, seed);
    }
}

#[test]
fn m16n8k8_f16_bf16_and_tf32_match_naive_product() {
    for seed in 11..=18 {
        check_case(8, F16, F32, F32, seed);
        check_case(8, Bf16, F32, F32, seed);
        check_case(8, F16, F16, F16, seed);
        check_case(8, Tf32, F32, F32, seed);
        check_case(4, Tf32, F32, F32, seed);
    }
}

#[test]
fn small_integers_give_exact_known_results() {
    // A[i][k] = i - k, B[k][j] = j + 1 (k < 16), C[i][j] = i·j:
    // D[i][j] = (j + 1)·Σ_k (i − k) + i·j = (j + 1)(16i − 120) + i·j.
    let a: Matrix = (0..16).map(|i| (0..16).map(|k| to_bits(Bf16, (i as f64) - k as f64)).collect()).collect();
    let b: Matrix = (0..16).map(|_| (0..8).map(|j| to_bits(Bf16, j as f64 + 1.0)).collect()).collect();
    let c: Matrix = (0..16).map(|i| (0..8).map(|j| to_bits(F32, (i * j) as f64)).collect()).collect();
    let d = desc(16, Bf16, F32, F32);
    let got = unpack_cd(F32, &mma_sync(&d, &pack_a(16, Bf16, &a), &pack_b(16, Bf16, &b), &pack_cd(F32, &c)));
    for i in 0..16i64 {
        for j in 0..8i64 {
            let want = (j + 1) * (16 * i - 120) + i * j;
            assert_eq!(f32::from_bits(got[i as usize][j as usize]), want as f32, "D[{i}][{j}]");
        }
    }
}

#[test]
fn the_sum_is_rounded_once() {
    // Row 0 of A: 2^24, 1, −2^24, 0…; B all ones; C = 0. Summed exactly the
    // result is 1; accumulating in f32 step by step would lose the 1.
    let mut a: Matrix = vec![vec![0; 16]; 16];
    a[0][0] = to_bits(Bf16, 16_777_216.0);
    a[0][1] = to_bits(Bf16, 1.0);
    a[0][2] = to_bits(Bf16, -16_777_216.0);
    let b: Matrix = vec![vec![to_bits(Bf16, 1.0); 8]; 16];
    let c: Matrix = vec![vec![0; 8]; 16];
    let d = desc(16, Bf16, F32, F32);
    let got = unpack_cd(F32, &mma_sync(&d, &pack_a(16, Bf16, &a), &pack_b(16, Bf16, &b), &pack_cd(F32, &c)));
    assert!(got[0].iter().all(|&x| f32::from_bits(x) == 1.0), "{:?}", got[0]);
    assert!(got[1..].iter().flatten().all(|&x| x == 0));
}

#[test]
fn nan_and_infinity_stay_in_their_rows_and_columns() {
    let mut rng = Rng(99);
    let mut a = random_matrix(&mut rng, 16, 16, F16);
    let mut b = random_matrix(&mut rng, 16, 8, F16);
    let c = random_matrix(&mut rng, 16, 8, F32);
    a[3][5] = 0x7E00; // NaN
    b[2][6] = 0x7C00; // +∞
    let d = desc(16, F16, F32, F32);
    let got = unpack_cd(F32, &mma_sync(&d, &pack_a(16, F16, &a), &pack_b(16, F16, &b), &pack_cd(F32, &c)));
    for (i, row) in got.iter().enumerate() {
        for (j, &bits) in row.iter().enumerate() {
            let v = f32::from_bits(bits);
            if i == 3 {
                assert_eq!(bits, 0x7FFF_FFFF, "D[{i}][{j}] is the canonical NaN");
            } else if j == 6 && a[i][2] != 0 {
                assert!(v.is_infinite(), "D[{i}][{j}] = {v}");
                assert_eq!(v.is_sign_negative(), a[i][2] & 0x8000 != 0);
            } else if j != 6 {
                assert!(v.is_finite(), "D[{i}][{j}] = {v}");
            }
        }
    }
}

#[test]
fn fragment_register_counts() {
    assert_eq!(mma_fragment_regs(&desc(16, F16, F32, F32)), Ok((4, 2, 4, 4)));
    assert_eq!(mma_fragment_regs(&desc(16, Bf16, F32, F32)), Ok((4, 2, 4, 4)));
    assert_eq!(mma_fragment_regs(&desc(16, F16, F16, F16)), Ok((4, 2, 2, 2)));
    assert_eq!(mma_fragment_regs(&desc(16, F16, F16, F32)), Ok((4, 2, 2, 4)));
    assert_eq!(mma_fragment_regs(&desc(8, F16, F32, F32)), Ok((2, 1, 4, 4)));
    assert_eq!(mma_fragment_regs(&desc(8, Tf32, F32, F32)), Ok((4, 2, 4, 4)));
    assert_eq!(mma_fragment_regs(&desc(4, Tf32, F32, F32)), Ok((2, 1, 4, 4)));
    assert!(mma_fragment_regs(&desc(16, Bf16, F16, F16)).is_err(), "bf16 accumulates in f32 only");
    assert!(mma_fragment_regs(&desc(16, Tf32, F32, F32)).is_err());
    assert!(mma_fragment_regs(&desc(32, F16, F32, F32)).is_err());
    let mut mixed = desc(16, F16, F32, F32);
    mixed.b_ty = Bf16;
    assert!(mma_fragment_regs(&mixed).is_err());
    let mut col_a = desc(16, F16, F32, F32);
    col_a.a_row = false;
    assert!(mma_fragment_regs(&col_a).is_err());
    let m8n8k4 = MmaDesc { m: 8, n: 8, k: 4, ..desc(16, F16, F32, F32) };
    let err = mma_fragment_regs(&m8n8k4).unwrap_err();
    assert!(err.contains("m8n8k4"), "{err}");
    // An unsupported shape computes nothing rather than panicking.
    let zeros = [[0u32; 4]; 32];
    let ones = [[0x3C00_3C00u32; 4]; 32];
    assert_eq!(mma_sync(&m8n8k4, &ones, &ones, &ones), zeros);
}

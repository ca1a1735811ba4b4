//! sm_90a warpgroup MMA (`wgmma.mma_async.sync.aligned.m64nNk16`) for f16
//! and bf16 inputs with f32 accumulators: the shared-memory matrix
//! descriptor and its address mapping, the register fragment layouts of D
//! and of a register A, and `D = (±A)·(±B) + C` with the same numerics as
//! `mma.sync` (exact products and sum, one rounding to f32).
//!
//! Sources: the PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-
//! Accumulate" (matrix descriptor format, shared memory matrix layout, the
//! register fragment figures for m64nNk16), and CUTLASS's
//! `cute/arch/mma_sm90_desc.hpp` / `cute/atom/mma_traits_sm90_gmma.hpp`,
//! whose canonical layouts are, in 16-byte units (T = 8 elements of 16 bits):
//!
//! | operand major-ness | swizzle | layout of (MN, K) |
//! |---|---|---|
//! | K | none | ((8,m),(T,2)) : ((1T,SBO),(1,LBO)) |
//! | K | W bytes | ((8,m),(T,2)) : ((W/16·T,SBO),(1,T)) |
//! | MN | none | ((T,1,m),(8,k)) : ((1,T,SBO),(1T,LBO)) |
//! | MN | W bytes | ((T,W/16,m),(8,k)) : ((1,T,LBO),(W/16·T,SBO)) |
//!
//! composed with the swizzle `Swizzle<log2(W/16),4,3>` on the byte address:
//! bits [4, 4+b) of the shared address are XORed with bits [7, 7+b). The
//! swizzle acts on the absolute shared address (which is why a start
//! address may move inside a swizzle atom, as CUTLASS's descriptor iterator
//! does for successive k-blocks); the descriptor's base offset names the
//! pattern's phase when it does not start on its repeat boundary (1024, 512,
//! 256 bytes for 128B, 64B, 32B): the row phase is `(addr >> 7) − base`.

use super::accumulate::multiply_accumulate;
use super::operands::{bf16_to_f64, f16_to_f64, Operands};
use crate::numerics::format::FloatFormat;
use crate::types::ScalarType;

/// The swizzle mode of a matrix descriptor (bits 62–63).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swizzle {
    /// No swizzle: 8×16-byte core matrices placed by LBO and SBO.
    Interleave,
    B32,
    B64,
    B128,
}

impl Swizzle {
    /// Bytes of one swizzled row (16 for no swizzle: one core-matrix row).
    pub fn row_bytes(self) -> u32 {
        match self {
            Swizzle::Interleave => 16,
            Swizzle::B32 => 32,
            Swizzle::B64 => 64,
            Swizzle::B128 => 128,
        }
    }

    /// The address bits the swizzle XORs (a mask of bits [4, 4+b), shifted down by 4).
    fn xor_mask(self) -> u32 {
        match self {
            Swizzle::Interleave => 0,
            Swizzle::B32 => 1,
            Swizzle::B64 => 3,
            Swizzle::B128 => 7,
        }
    }
}

/// A decoded 64-bit shared-memory matrix descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmemDescriptor {
    /// Shared-memory byte address of the matrix start.
    pub start: u32,
    /// Leading dimension byte offset.
    pub lbo: u32,
    /// Stride dimension byte offset.
    pub sbo: u32,
    /// Matrix base offset (bits 49–51).
    pub base_offset: u32,
    pub swizzle: Swizzle,
}

impl SmemDescriptor {
    /// Bits 0–13 start >> 4, 16–29 LBO >> 4, 32–45 SBO >> 4, 49–51 base
    /// offset, 62–63 swizzle (0 none, 1 128B, 2 64B, 3 32B).
    pub fn decode(bits: u64) -> Self {
        let field = |lo: u32| ((bits >> lo) & 0x3fff) as u32 * 16;
        SmemDescriptor {
            start: field(0),
            lbo: field(16),
            sbo: field(32),
            base_offset: ((bits >> 49) & 7) as u32,
            swizzle: match bits >> 62 {
                0 => Swizzle::Interleave,
                1 => Swizzle::B128,
                2 => Swizzle::B64,
                _ => Swizzle::B32,
            },
        }
    }

    /// The inverse of [`SmemDescriptor::decode`] (fields must be multiples of 16 below 2^18).
    pub fn encode(&self) -> u64 {
        let f = |v: u32| u64::from((v & 0x3ffff) >> 4);
        let mode = match self.swizzle {
            Swizzle::Interleave => 0u64,
            Swizzle::B128 => 1,
            Swizzle::B64 => 2,
            Swizzle::B32 => 3,
        };
        f(self.start) | f(self.lbo) << 16 | f(self.sbo) << 32 | u64::from(self.base_offset & 7) << 49 | mode << 62
    }

    /// Shared-memory byte address of the 16-bit element at (`mn`, `k`)
    /// (`k` < 16) of an operand stored K-major (`mn_major` false: the
    /// default, `imm-trans` 0) or MN-major (`imm-trans` 1).
    pub fn element_address(&self, mn: u32, k: u32, mn_major: bool) -> u32 {
        let w = self.swizzle.row_bytes();
        let (kc, kr) = (k / 8, k % 8);
        let offset = match (mn_major, self.swizzle) {
            // Core matrices of 8 rows × 16 bytes (8 K-elements per row).
            (false, Swizzle::Interleave) => (mn / 8) * self.sbo + kc * self.lbo + (mn % 8) * 16 + 2 * kr,
            // Rows of W bytes hold the 16 K-elements; 8-row groups SBO apart.
            (false, _) => (mn / 8) * self.sbo + (mn % 8) * w + kc * 16 + 2 * kr,
            // Core matrices of 8 K-rows × 8 MN-elements.
            (true, Swizzle::Interleave) => (mn / 8) * self.sbo + kc * self.lbo + kr * 16 + 2 * (mn % 8),
            // Rows of W bytes hold W/2 MN-elements; atoms LBO apart along
            // MN, groups of 8 K-rows SBO apart.
            (true, _) => {
                let per_row = w / 2;
                (mn / per_row) * self.lbo + kc * self.sbo + kr * w + 2 * (mn % per_row)
            }
        };
        self.swizzled(self.start.wrapping_add(offset))
    }

    fn swizzled(&self, addr: u32) -> u32 {
        let mask = self.swizzle.xor_mask();
        let phase = (addr >> 7).wrapping_sub(self.base_offset) & mask;
        addr ^ (phase << 4)
    }
}

/// `wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ab_ty}.{ab_ty}` as lowered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WgmmaDesc {
    pub n: u32,
    /// `.f16` or `.bf16` (A and B alike).
    pub ab_ty: ScalarType,
    /// A from four registers per thread instead of a descriptor.
    pub a_in_regs: bool,
    /// `imm-scale-a`, `imm-scale-b`: negate A or B.
    pub negate_a: bool,
    pub negate_b: bool,
    /// `imm-trans-a`, `imm-trans-b`: the operand is MN-major in shared memory.
    pub trans_a: bool,
    pub trans_b: bool,
}

impl WgmmaDesc {
    /// The name the tensor-instruction counters use.
    pub fn counter_name(&self) -> String {
        let t = if self.ab_ty == ScalarType::F16 { "f16" } else { "bf16" };
        format!("wgmma.m64n{}k16.f32.{t}.{t}", self.n)
    }

    /// Accumulator registers per thread (f32: N/2).
    pub fn d_regs(&self) -> usize {
        self.n as usize / 2
    }
}

/// The warpgroup instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgmmaOp {
    Fence,
    Commit,
    /// `wgmma.wait_group N`: wait until at most N committed groups are pending.
    Wait(u32),
    Mma(WgmmaDesc),
}

/// Whether `n` is an N the ISA allows for f16/bf16 m64nNk16 (8 to 256, step 8).
pub fn valid_n(n: u32) -> bool {
    (8..=256).contains(&n) && n % 8 == 0
}

/// (row, column) of D held by accumulator register `i` of lane `lane` of
/// warp `warp` (0–3) of the warpgroup: each warp owns rows 16·warp..+16,
/// laid out per 8-column block as mma.m16n8's C/D fragment.
pub fn accumulator_coord(warp: usize, lane: usize, i: usize) -> (usize, usize) {
    let row = 16 * warp + lane / 4 + 8 * ((i / 2) % 2);
    let col = 8 * (i / 4) + 2 * (lane % 4) + (i % 2);
    (row, col)
}

/// (row, k) of A held by 16-bit element `j` (0–7; register j/2, low half
/// for even j) of lane `lane` of warp `warp`, for a register A: each warp
/// holds rows 16·warp..+16 laid out as mma.m16n8k16's A fragment.
pub fn register_a_coord(warp: usize, lane: usize, j: usize) -> (usize, usize) {
    let row = 16 * warp + lane / 4 + 8 * ((j / 2) % 2);
    let k = 2 * (lane % 4) + (j % 2) + 8 * (j / 4);
    (row, k)
}

/// A 16-bit input's bits as f64 (exact).
pub fn input_to_f64(ty: ScalarType, bits: u32) -> f64 {
    if ty == ScalarType::F16 {
        f16_to_f64(bits & 0xffff)
    } else {
        bf16_to_f64(bits & 0xffff)
    }
}

/// `D = A·B + C` for one m64nNk16: `a[row][k]` (64 × 16), `b[k][col]`
/// (16 × N), inputs already converted (and negated where `imm-scale` says),
/// `c` the f32 bits of C (`None` when scale-d is false: D = A·B).
/// Returns D's f32 bits, `d[row][col]`. Products and their sum are exact
/// and rounded once to f32 (round to nearest even), as `mma_sync` does.
pub fn wgmma_multiply(
    ab_ty: ScalarType,
    n: usize,
    a: &[[f64; 16]; 64],
    b: &[Vec<f64>; 16],
    c: Option<&[Vec<u32>]>,
) -> Vec<Vec<u32>> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { multiply_avx2(ab_ty, n, a, b, c) };
    }
    multiply_with::<false>(ab_ty, n, a, b, c)
}

/// [`wgmma_multiply`] compiled for AVX2 and FMA, as `mma_sync` is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn multiply_avx2(
    ab_ty: ScalarType,
    n: usize,
    a: &[[f64; 16]; 64],
    b: &[Vec<f64>; 16],
    c: Option<&[Vec<u32>]>,
) -> Vec<Vec<u32>> {
    multiply_with::<true>(ab_ty, n, a, b, c)
}

/// `FUSED`: see `multiply_accumulate`.
#[inline(always)]
fn multiply_with<const FUSED: bool>(
    ab_ty: ScalarType,
    n: usize,
    a: &[[f64; 16]; 64],
    b: &[Vec<f64>; 16],
    c: Option<&[Vec<u32>]>,
) -> Vec<Vec<u32>> {
    let precision = super::input_precision(ab_ty);
    let mut d = vec![vec![0u32; n]; 64];
    let mut ops = Operands::new();
    ops.k = 16;
    for rb in 0..4 {
        for (kk, col) in ops.a_t.iter_mut().enumerate() {
            for (r, x) in col.iter_mut().enumerate() {
                *x = a[16 * rb + r][kk];
            }
        }
        for cb in 0..n / 8 {
            for (kk, row) in ops.b.iter_mut().enumerate() {
                row.copy_from_slice(&b[kk][8 * cb..8 * cb + 8]);
            }
            for (r, row) in ops.c.iter_mut().enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    // Without C the sum starts from −0, which leaves every
                    // product's sign (an all −0 sum stays −0), as D = A·B.
                    *x = c.map_or(-0.0, |c| f64::from(f32::from_bits(c[16 * rb + r][8 * cb + j])));
                }
            }
            multiply_accumulate::<FUSED>(&ops, precision, FloatFormat::F32, |r, row| {
                d[16 * rb + r][8 * cb..8 * cb + 8].copy_from_slice(row);
            });
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(start: u32, lbo: u32, sbo: u32, swizzle: Swizzle) -> SmemDescriptor {
        SmemDescriptor { start, lbo, sbo, base_offset: 0, swizzle }
    }

    #[test]
    fn descriptor_fields_round_trip() {
        let d = SmemDescriptor { start: 0x1230, lbo: 0x40, sbo: 0x400, base_offset: 5, swizzle: Swizzle::B64 };
        let bits = d.encode();
        assert_eq!(bits & 0x3fff, 0x123);
        assert_eq!((bits >> 16) & 0x3fff, 0x4);
        assert_eq!((bits >> 32) & 0x3fff, 0x40);
        assert_eq!(bits >> 62, 2);
        assert_eq!(SmemDescriptor::decode(bits), d);
    }

    #[test]
    fn k_major_128b_swizzle_is_cutlass_sw128_atom() {
        // Layout_K_SW128_Atom<bf16>: 8 rows of 64 elements, Swizzle<3,4,3> on bytes.
        let d = desc(0, 16, 1024, Swizzle::B128);
        for mn in 0..64 {
            for k in 0..16 {
                let linear = (mn % 8) * 128 + (mn / 8) * 1024 + 2 * k;
                let want = linear ^ (((linear >> 7) & 7) << 4);
                assert_eq!(d.element_address(mn, k, false), want, "({mn},{k})");
            }
        }
        // A start moved by 32 bytes (the next k-block inside the atom) keeps the
        // absolute-address swizzle: element k of the moved view is k + 16 of the row.
        let moved = desc(32, 16, 1024, Swizzle::B128);
        let row = 3;
        let lin = row * 128 + 2 * 17;
        assert_eq!(moved.element_address(row, 1, false), lin ^ (((lin >> 7) & 7) << 4));
    }

    #[test]
    fn interleave_core_matrices() {
        let d = desc(256, 128, 512, Swizzle::Interleave);
        assert_eq!(d.element_address(0, 0, false), 256);
        assert_eq!(d.element_address(1, 0, false), 256 + 16);
        assert_eq!(d.element_address(0, 8, false), 256 + 128);
        assert_eq!(d.element_address(8, 0, false), 256 + 512);
        // MN-major: 8 MN-elements contiguous, K rows 16 bytes apart.
        assert_eq!(d.element_address(1, 0, true), 256 + 2);
        assert_eq!(d.element_address(0, 1, true), 256 + 16);
        assert_eq!(d.element_address(0, 8, true), 256 + 128);
        assert_eq!(d.element_address(8, 0, true), 256 + 512);
    }

    #[test]
    fn mn_major_swizzled_atoms() {
        // 64B: rows of 32 MN-elements; the next 32 MN at LBO, K rows 8..15 at SBO.
        let d = desc(0, 2048, 512, Swizzle::B64);
        assert_eq!(d.element_address(31, 0, true), 62);
        assert_eq!(d.element_address(32, 0, true), 2048);
        assert_eq!(d.element_address(0, 8, true), 512);
        // Row 2 (K = 2) starts at byte 128: its chunks move by (1 << 4) · 1.
        assert_eq!(d.element_address(0, 2, true), 128 ^ 16);
        let base = SmemDescriptor { base_offset: 1, ..desc(128, 2048, 512, Swizzle::B64) };
        // With the pattern starting at 128 (base offset 1), its row 0 is unswizzled.
        assert_eq!(base.element_address(8, 0, true), 128 + 16);
    }

    #[test]
    fn fragments_cover_each_element_once() {
        let mut seen = vec![[false; 256]; 64];
        for w in 0..4 {
            for lane in 0..32 {
                for i in 0..128 {
                    let (r, c) = accumulator_coord(w, lane, i);
                    assert!(!seen[r][c]);
                    seen[r][c] = true;
                }
            }
        }
        let mut a = [[false; 16]; 64];
        for w in 0..4 {
            for lane in 0..32 {
                for j in 0..8 {
                    let (r, k) = register_a_coord(w, lane, j);
                    assert!(!a[r][k]);
                    a[r][k] = true;
                }
            }
        }
        assert!(seen.iter().all(|r| r.iter().all(|x| *x)) && a.iter().all(|r| r.iter().all(|x| *x)));
    }
}

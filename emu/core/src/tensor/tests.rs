//! `mma_sync` (f64 where provably exact, else the exact integer path) against
//! the exact integer dot product applied to every output, bit for bit, on
//! seeded random matrices chosen to hit both paths and their edges.

use super::layout::{cd_coord, InputLayout};
use super::*;
use crate::numerics::arith::dot_product;
use crate::numerics::format::Direction;
use ScalarType::{Bf16, Tf32, F16, F32};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How the elements of one test case are drawn.
#[derive(Clone, Copy, Debug)]
enum Mix {
    /// Binades within ±3 of 1 (spreads far inside every budget: the f64
    /// path), a few signed zeros.
    Narrow,
    /// Binades within ±12 of 1: row and column spreads around the f64
    /// path's budgets, on both sides of them.
    Medium,
    /// Any binade, subnormals included: mostly the exact path.
    Wide,
    /// Mostly subnormals and the smallest normals.
    Tiny,
    /// Narrow plus NaN and ±∞.
    Special,
}

/// Raw bits of a random element of `fmt` (tf32: an f32 pattern with junk in
/// the 13 ignored bits).
fn element(rng: &mut Rng, ty: ScalarType, mix: Mix) -> u32 {
    let fmt = if ty == Tf32 { FloatFormat::TF32 } else { input_format(ty) };
    let sign = (rng.next() & 1) as u32;
    if rng.chance(6) {
        return sign << (fmt.exp_bits + fmt.man_bits) << tf32_shift(ty);
    }
    let exp_max = (1u64 << fmt.exp_bits) - 1;
    let bias = fmt.bias() as u64;
    let exp = match mix {
        Mix::Narrow => bias - 3 + rng.below(7),
        Mix::Medium => bias - 12 + rng.below(25),
        Mix::Wide => rng.below(exp_max),
        Mix::Tiny => rng.below(3),
        Mix::Special if rng.chance(5) => exp_max,
        Mix::Special => bias - 3 + rng.below(7),
    } as u32;
    let man = (rng.next() & ((1 << fmt.man_bits) - 1)) as u32;
    let bits = (sign << (fmt.exp_bits + fmt.man_bits)) | (exp << fmt.man_bits) | man;
    if ty == Tf32 {
        (bits << 13) | (rng.next() as u32 & 0x1FFF)
    } else {
        bits
    }
}

fn tf32_shift(ty: ScalarType) -> u32 {
    if ty == Tf32 {
        13
    } else {
        0
    }
}

fn input_format(ty: ScalarType) -> FloatFormat {
    match ty {
        F16 => FloatFormat::F16,
        Bf16 => FloatFormat::BF16,
        _ => FloatFormat::F32,
    }
}

struct Case {
    desc: MmaDesc,
    layout: InputLayout,
    a: Vec<Vec<u32>>,
    b: Vec<Vec<u32>>,
    c: Vec<Vec<u32>>,
}

impl Case {
    fn random(rng: &mut Rng, desc: MmaDesc, mix: Mix) -> Self {
        let layout = input_layout(&desc).expect("supported");
        let k = layout.k();
        let (ab, c_ty) = (desc.a_ty, desc.c_ty);
        let a = (0..16).map(|_| (0..k).map(|_| element(rng, ab, mix)).collect()).collect();
        let b = (0..k).map(|_| (0..8).map(|_| element(rng, ab, mix)).collect()).collect();
        let c = (0..16).map(|_| (0..8).map(|_| element(rng, c_ty, mix)).collect()).collect();
        Self { desc, layout, a, b, c }
    }

    /// Makes products cancel in pairs: column 2j+1 of A repeats column 2j
    /// and row 2j+1 of B is row 2j negated, for the first `pairs` pairs.
    fn cancel_pairs(&mut self, pairs: usize) {
        let sign = if self.desc.a_ty == Tf32 { 0x8000_0000 } else { 0x8000 };
        for j in 0..pairs {
            for row in &mut self.a {
                row[2 * j + 1] = row[2 * j];
            }
            self.b[2 * j + 1] = self.b[2 * j].iter().map(|&x| x ^ sign).collect();
        }
    }

    /// D from [`mma_sync`] (the build the CPU selects).
    fn run(&self) -> Vec<Vec<u32>> {
        self.run_with(mma_sync)
    }

    fn run_with(&self, mma: fn(&MmaDesc, &Fragment, &Fragment, &Fragment) -> Fragment) -> Vec<Vec<u32>> {
        let (mut fa, mut fb, mut fc) = ([[0u32; 4]; 32], [[0u32; 4]; 32], [[0u32; 4]; 32]);
        let l = self.layout;
        let place = |regs: &mut [u32; 4], i: usize, bits: u32| {
            let slot = l.slot(i);
            regs[slot.reg] |= if l.packed() { bits << (16 * slot.half) } else { bits };
        };
        for lane in 0..32 {
            for i in 0..l.a_elements() {
                let (r, col) = l.a_coord(lane, i);
                place(&mut fa[lane], i, self.a[r][col]);
            }
            for i in 0..l.b_elements() {
                let (r, col) = l.b_coord(lane, i);
                place(&mut fb[lane], i, self.b[r][col]);
            }
            for i in 0..4 {
                let (r, col) = cd_coord(lane, i);
                if self.desc.c_ty == F16 {
                    fc[lane][i / 2] |= self.c[r][col] << (16 * (i & 1));
                } else {
                    fc[lane][i] = self.c[r][col];
                }
            }
        }
        let fd = mma(&self.desc, &fa, &fb, &fc);
        let mut d = vec![vec![0u32; 8]; 16];
        for (lane, regs) in fd.iter().enumerate() {
            for i in 0..4 {
                let (r, col) = cd_coord(lane, i);
                d[r][col] = if self.desc.d_ty == F16 { regs[i / 2] >> (16 * (i & 1)) & 0xFFFF } else { regs[i] };
            }
        }
        d
    }

    /// The exact path for every output: each element decoded in its own
    /// format, the exact sum rounded once.
    fn exact(&self, r: usize, col: usize) -> u32 {
        let k = self.layout.k();
        let in_fmt = input_format(self.desc.a_ty);
        let operand =
            |bits: u32| in_fmt.decode(u64::from(if self.desc.a_ty == Tf32 { bits & 0xFFFF_E000 } else { bits }));
        let a: Vec<_> = (0..k).map(|kk| operand(self.a[r][kk])).collect();
        let b: Vec<_> = (0..k).map(|kk| operand(self.b[kk][col])).collect();
        let c = input_format(self.desc.c_ty).decode(u64::from(self.c[r][col]));
        let d_fmt = input_format(self.desc.d_ty);
        dot_product(&a, &b, c, d_fmt, Direction::NearestEven) as u32
    }

    /// Both builds — the one the CPU selects and the portable one without
    /// fused multiply-adds — against the exact path.
    #[track_caller]
    fn check(&self, what: &str) {
        let portable: fn(&MmaDesc, &Fragment, &Fragment, &Fragment) -> Fragment = mma_sync_with::<false>;
        for (build, d) in [("selected", self.run()), ("portable", self.run_with(portable))] {
            for (r, row) in d.iter().enumerate() {
                for (col, &got) in row.iter().enumerate() {
                    let want = self.exact(r, col);
                    assert_eq!(got, want, "{what} {build} {:?}: D[{r}][{col}] = {got:#x}, exact {want:#x}", self.desc);
                }
            }
        }
    }
}

fn descs() -> Vec<MmaDesc> {
    let d = |k, ab, c, dt| MmaDesc { m: 16, n: 8, k, a_row: true, b_col: true, d_ty: dt, a_ty: ab, b_ty: ab, c_ty: c };
    vec![
        d(16, F16, F32, F32),
        d(16, Bf16, F32, F32),
        d(16, F16, F16, F16),
        d(16, F16, F32, F16),
        d(16, F16, F16, F32),
        d(8, F16, F32, F32),
        d(8, Bf16, F32, F32),
        d(8, F16, F16, F16),
        d(8, Tf32, F32, F32),
        d(4, Tf32, F32, F32),
    ]
}

#[test]
fn f64_path_matches_exact_path_on_random_fragments() {
    let mut rng = Rng(0x5EED_F640_0001);
    for desc in descs() {
        for mix in [Mix::Narrow, Mix::Medium, Mix::Wide, Mix::Tiny, Mix::Special] {
            for _ in 0..40 {
                Case::random(&mut rng, desc, mix).check(&format!("{mix:?}"));
            }
        }
    }
}

#[test]
fn cancelling_products_and_negative_zero_accumulators() {
    let mut rng = Rng(0x5EED_F640_0002);
    for desc in descs() {
        let k = input_layout(&desc).expect("supported").k();
        for round in 0..40 {
            let mix = if round % 2 == 0 { Mix::Narrow } else { Mix::Tiny };
            let mut case = Case::random(&mut rng, desc, mix);
            // All pairs cancel in even rounds (the products sum to exactly 0), one pair in odd ones.
            case.cancel_pairs(if round % 4 < 2 { k / 2 } else { 1 });
            // C = −0 everywhere in half the rounds: then D = +0 when all products cancel.
            if round % 3 == 0 {
                let neg_zero = if desc.c_ty == F16 { 0x8000 } else { 0x8000_0000 };
                case.c = vec![vec![neg_zero; 8]; 16];
            }
            case.check("cancel");
        }
    }
}

#[test]
fn accumulator_cancelling_the_products() {
    // C = −round(A·B): D is the rounding error of A·B alone, a remainder
    // far below C, which only an exact sum gets right.
    let mut rng = Rng(0x5EED_F640_0003);
    for desc in descs().into_iter().filter(|d| d.c_ty == F32 && d.d_ty == F32) {
        for round in 0..80 {
            let mix = if round % 2 == 0 { Mix::Narrow } else { Mix::Medium };
            let mut case = Case::random(&mut rng, desc, mix);
            case.c = vec![vec![0; 8]; 16];
            case.c = case.run().iter().map(|row| row.iter().map(|&x| x ^ 0x8000_0000).collect()).collect();
            case.check("remainder");
        }
    }
}

#[test]
fn all_negative_zeros_give_negative_zero() {
    let mut rng = Rng(7);
    for desc in descs() {
        let mut case = Case::random(&mut rng, desc, Mix::Narrow);
        let zero = |ty| if ty == F16 || ty == Bf16 { 0x8000 } else { 0x8000_0000 };
        // −0 · (positive) is −0, and C = −0: every term is negative.
        for row in &mut case.a {
            row.fill(zero(desc.a_ty));
        }
        for row in &mut case.b {
            for x in row.iter_mut() {
                *x &= !zero(desc.a_ty);
            }
        }
        case.c = vec![vec![zero(desc.c_ty); 8]; 16];
        case.check("negative zeros");
        assert!(case.run().iter().flatten().all(|&x| x == zero(desc.d_ty)), "{desc:?}");
    }
}

#[test]
fn a_spread_beyond_53_bits_is_summed_exactly() {
    // Row 0: A = 2^24, 2^-24; B column = 1 + 2^-7 twice; C = −2^24·(1 + 2^-7).
    // The products span 2^-31..2^24, more than an f64 holds, and the result
    // is exactly the small product 2^-24·(1 + 2^-7).
    let desc = MmaDesc { m: 16, n: 8, k: 16, a_row: true, b_col: true, d_ty: F32, a_ty: Bf16, b_ty: Bf16, c_ty: F32 };
    let bf16 = |x: f32| x.to_bits() >> 16;
    let mut case = Case::random(&mut Rng(11), desc, Mix::Narrow);
    case.a[0] = vec![0; 16];
    case.a[0][0] = bf16(2f32.powi(24));
    case.a[0][1] = bf16(2f32.powi(-24));
    let b_value = 1.0 + 2f32.powi(-7);
    for (kk, row) in case.b.iter_mut().enumerate() {
        row[0] = if kk < 2 { bf16(b_value) } else { 0 };
    }
    case.c[0][0] = (-(2f32.powi(24) * b_value)).to_bits();
    case.check("wide spread");
    assert_eq!(case.run()[0][0], (2f32.powi(-24) * b_value).to_bits());
}

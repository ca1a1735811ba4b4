//! `special_f32` against the PTX ISA's special-case tables and its
//! documented maximum errors, on sampled inputs.

use ptx_emu::numerics::{special_f32, SpecialOp};
use SpecialOp::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f32 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (lo + (hi - lo) * unit) as f32
    }
}

const NEG_SUB: f32 = -1.0e-40;
const POS_SUB: f32 = 1.0e-40;

/// Checks one row of an ISA table: NaN expectations by `is_nan`, the rest by bits.
#[track_caller]
fn table(op: SpecialOp, ftz: bool, rows: &[(f32, f32)]) {
    for &(x, want) in rows {
        let got = special_f32(op, ftz, x);
        if want.is_nan() {
            assert_eq!(got.to_bits(), 0x7FFF_FFFF, "{op:?}({x:e}) should be the canonical NaN");
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "{op:?}(ftz={ftz}) of {x:e}: got {got:e}, want {want:e}");
        }
    }
}

const INF: f32 = f32::INFINITY;
const NAN: f32 = f32::NAN;

#[test]
fn special_case_tables() {
    for ftz in [false, true] {
        table(Rcp, ftz, &[(-INF, -0.0), (-0.0, -INF), (0.0, INF), (INF, 0.0), (NAN, NAN)]);
        table(Sqrt, ftz, &[(-INF, NAN), (-2.0, NAN), (-0.0, -0.0), (0.0, 0.0), (INF, INF), (NAN, NAN)]);
        table(Rsqrt, ftz, &[(-INF, NAN), (-2.0, NAN), (-0.0, -INF), (0.0, INF), (INF, 0.0), (NAN, NAN)]);
        table(Lg2, ftz, &[(-INF, NAN), (-2.0, NAN), (-0.0, -INF), (0.0, -INF), (INF, INF), (NAN, NAN)]);
        table(Ex2, ftz, &[(-INF, 0.0), (-0.0, 1.0), (0.0, 1.0), (INF, INF), (NAN, NAN)]);
        table(Sin, ftz, &[(-INF, NAN), (-0.0, -0.0), (0.0, 0.0), (INF, NAN), (NAN, NAN)]);
        table(Cos, ftz, &[(-INF, NAN), (-0.0, 1.0), (0.0, 1.0), (INF, NAN), (NAN, NAN)]);
        table(Tanh, ftz, &[(-INF, -1.0), (-0.0, -0.0), (0.0, 0.0), (INF, 1.0), (NAN, NAN)]);
    }
}

#[test]
fn subnormals_with_and_without_ftz() {
    // With .ftz a subnormal input is a signed zero.
    table(Rcp, true, &[(NEG_SUB, -INF), (POS_SUB, INF)]);
    table(Rsqrt, true, &[(POS_SUB, INF)]);
    table(Lg2, true, &[(POS_SUB, -INF), (NEG_SUB, -INF)]);
    table(Ex2, true, &[(NEG_SUB, 1.0), (POS_SUB, 1.0)]);
    table(Sqrt, true, &[(NEG_SUB, -0.0)]);
    // Without it they are numbers: 1/1e-40 overflows f32, log2 is finite.
    table(Rcp, false, &[(POS_SUB, INF), (NEG_SUB, -INF)]);
    assert_eq!(special_f32(Lg2, false, POS_SUB), f64::from(POS_SUB).log2() as f32);
    assert!((special_f32(Lg2, false, POS_SUB) + 132.877).abs() < 1e-3);
    table(Sqrt, false, &[(NEG_SUB, NAN)]);
    assert_eq!(special_f32(Sqrt, false, f32::from_bits(2)).to_bits(), (2f32.powi(-74)).to_bits());
    // tanh passes subnormals through; .ftz flushes them.
    table(Tanh, false, &[(POS_SUB, POS_SUB), (NEG_SUB, NEG_SUB)]);
    table(Tanh, true, &[(POS_SUB, 0.0), (NEG_SUB, -0.0)]);
    // A subnormal result is flushed with .ftz: 2^-140.
    assert_eq!(special_f32(Ex2, false, -140.0).to_bits(), 0x0000_0200);
    assert_eq!(special_f32(Ex2, true, -140.0).to_bits(), 0);
    // 1/2^127 = 2^-127, the largest power of two below the normal range.
    assert_eq!(special_f32(Rcp, true, 2f32.powi(127)).to_bits(), 0);
    assert_eq!(special_f32(Rcp, false, 2f32.powi(127)).to_bits(), 0x0040_0000);
    assert_eq!(special_f32(Rcp, true, 2f32.powi(126)).to_bits(), 0x0080_0000, "2^-126 is normal");
}

#[test]
fn exact_values() {
    assert_eq!(special_f32(Ex2, false, 10.0), 1024.0);
    assert_eq!(special_f32(Ex2, false, -3.0), 0.125);
    assert_eq!(special_f32(Ex2, false, 128.0), INF);
    assert_eq!(special_f32(Lg2, false, 1024.0), 10.0);
    assert_eq!(special_f32(Lg2, false, 1.0), 0.0);
    assert_eq!(special_f32(Rcp, false, 4.0), 0.25);
    assert_eq!(special_f32(Rcp, false, 3.0).to_bits(), 0x3EAA_AAAB);
    assert_eq!(special_f32(Rsqrt, false, 16.0), 0.25);
    assert_eq!(special_f32(Sqrt, false, 2.25), 1.5);
}

/// Distance in units of the last place of `want` (computed in f64).
fn ulps(got: f32, want: f64) -> f64 {
    let w = want as f32;
    let ulp = f64::from(f32::from_bits(w.abs().to_bits() + 1)) - f64::from(w.abs());
    (f64::from(got) - want).abs() / ulp
}

#[test]
fn sampled_values_are_within_the_isa_bounds() {
    let mut rng = Rng(0x5EED);
    for _ in 0..50_000 {
        // ex2: 2 ulp over the full range.
        let x = rng.uniform(-125.0, 127.0);
        assert!(ulps(special_f32(Ex2, false, x), f64::from(x).exp2()) <= 2.0, "ex2 {x:e}");
        // rcp: 1 ulp.
        let x = f32::from_bits(((rng.next() as u32) & 0x7EFF_FFFF) | 0x0080_0000);
        assert!(ulps(special_f32(Rcp, false, x), 1.0 / f64::from(x)) <= 1.0, "rcp {x:e}");
        // rsqrt: relative 2^-22.9; sqrt: relative 2^-23.
        let x = f32::from_bits(((1 + rng.next() % 254) as u32) << 23 | ((rng.next() as u32) & 0x7F_FFFF));
        let want = 1.0 / f64::from(x).sqrt();
        assert!(((f64::from(special_f32(Rsqrt, false, x)) - want) / want).abs() <= 2f64.powf(-22.9), "rsqrt {x:e}");
        let want = f64::from(x).sqrt();
        assert!(((f64::from(special_f32(Sqrt, false, x)) - want) / want).abs() <= 2f64.powi(-23), "sqrt {x:e}");
        // lg2: absolute 2^-22 in (0.5, 2), relative 2^-22 elsewhere.
        let x = rng.uniform(0.5, 2.0);
        if x > 0.5 {
            assert!((f64::from(special_f32(Lg2, false, x)) - f64::from(x).log2()).abs() <= 2f64.powi(-22), "lg2 {x:e}");
        }
        let x = rng.uniform(2.0, 1e30);
        let want = f64::from(x).log2();
        assert!(((f64::from(special_f32(Lg2, false, x)) - want) / want).abs() <= 2f64.powi(-22), "lg2 {x:e}");
        // sin/cos: absolute 2^-20.5 on [-2π, 2π].
        let x = rng.uniform(-2.0 * std::f64::consts::PI, 2.0 * std::f64::consts::PI);
        assert!((f64::from(special_f32(Sin, false, x)) - f64::from(x).sin()).abs() <= 2f64.powf(-20.5), "sin {x:e}");
        assert!((f64::from(special_f32(Cos, false, x)) - f64::from(x).cos()).abs() <= 2f64.powf(-20.5), "cos {x:e}");
        // tanh: relative 2^-11.
        let x = rng.uniform(-20.0, 20.0);
        let want = f64::from(x).tanh();
        if want != 0.0 {
            assert!(((f64::from(special_f32(Tanh, false, x)) - want) / want).abs() <= 2f64.powi(-11), "tanh {x:e}");
        }
    }
}

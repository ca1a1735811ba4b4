//! Philox-4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as
//! easy as 1, 2, 3", SC 2011; the Random123 library) and the numbers the crate
//! draws from it. The CUDA kernels implement exactly this page, bit for bit.
//!
//! # Keying
//!
//! Every random value of the crate is a pure function of `(seed, offset, i)`,
//! `i` the element's linear index in its tensor (u64):
//!
//! - key = `[seed as u32, (seed >> 32) as u32]`
//! - counter = `[(i/4) as u32, ((i/4) >> 32) as u32, offset as u32, (offset >> 32) as u32]`
//! - the 32 random bits of element `i` are word `i % 4` of `philox4x32_10(counter, key)`.
//!
//! # Uniform
//!
//! `uniform(seed, offset, i) = (bits >> 8) as f32 · 2⁻²⁴`, in `[0, 1)`, exact
//! in f32. `U(−b, b)` is `(2·u − 1) · b` in f32 (`b` rounded to f32 first;
//! `2·u − 1` is exact, so only the product rounds), then rounded to `T`.
//!
//! # Dropout
//!
//! Element `i` of an `[M, K]` input (`i = m·K + k`) is kept iff
//! `uniform(seed, offset, i) >= p`.
//!
//! # Normal (Box–Muller in f64 with only `+ − × ÷ √`)
//!
//! Every step below is one correctly rounded IEEE f64 operation (a device
//! implementation uses `__dadd_rn`, `__dsub_rn`, `__dmul_rn`, `__ddiv_rn`,
//! `__dsqrt_rn`, never a fused multiply-add), plus comparisons and `floor`
//! of an exactly representable value, which are exact. Written in evaluation
//! order, left to right:
//!
//! 1. Pair `j = i / 2` (integer division). `u1 = 1 − uniform(seed, offset, 2j)`
//!    in `(0, 1]` (exact), `u2 = uniform(seed, offset, 2j + 1)` in `[0, 1)`,
//!    both widened to f64.
//! 2. `radius = sqrt((−2) × ln(u1))` with `ln` as in [`ln_unit`] below.
//! 3. `(c, s) = (cos 2π·u2, sin 2π·u2)` as in [`cos_sin_turns`] below.
//! 4. `z = radius × c` if `i` is even, `radius × s` if odd.
//! 5. The value is `z × std` (std an f64), rounded to f32, then to `T`.
//!
//! [`ln_unit`]`(x)`, for `x` in `[2⁻²⁴, 1]`:
//!
//! 1. `e = 0; m = x; while m < SQRT_HALF { m = m × 2; e = e + 1 }` with
//!    `SQRT_HALF = 0.7071067811865476` (f64 `0x3FE6A09E667F3BCD`); now
//!    `m ∈ [√½, √2)` and `x = m·2⁻ᵉ` exactly.
//! 2. `t = (m − 1) ÷ (m + 1)` (`|t| ≤ 0.1716`), `z = t × t`.
//! 3. `q = 1 ÷ 25`; then for `n = 11, 10, …, 0`: `q = q × z + (1 ÷ (2n + 1))`
//!    (each `1 ÷ (2n+1)` a correctly rounded f64 division; so
//!    `q = Σ_{n=0}^{12} zⁿ/(2n+1)`).
//! 4. `ln x = (2 × (t × q)) − (e × LN_2)` with `e` as f64 and
//!    `LN_2 = 0.6931471805599453` (f64 `0x3FE62E42FEFA39EF`).
//!
//! [`cos_sin_turns`]`(u)`, cos and sin of `2π·u` for `u` in `[0, 1)` (a
//! multiple of 2⁻²⁴):
//!
//! 1. `v = 4 × u` (exact), `quadrant = floor(v + 0.5)` (exact, in 0..=4),
//!    `g = v − quadrant` (exact, in `[−½, ½]`), `φ = g × HALF_PI` with
//!    `HALF_PI = 1.5707963267948966` (f64 `0x3FF921FB54442D18`); `|φ| ≤ π/4`.
//! 2. `w = φ × φ`. Sine: `S = 1`; for `n = 10, 9, …, 1`:
//!    `S = 1 − ((w × S) ÷ ((2n) × (2n + 1)))`; `sin φ = φ × S`.
//!    Cosine: `C = 1`; for `n = 10, 9, …, 1`: `C = 1 − ((w × C) ÷ ((2n − 1) × (2n)))`;
//!    `cos φ = C`. (The integer products are exact f64 constants.)
//! 3. With `q = quadrant mod 4`: `(cos, sin)` of `2π·u` is
//!    `(cos φ, sin φ)`, `(−sin φ, cos φ)`, `(−cos φ, −sin φ)`, `(sin φ, −cos φ)`
//!    for `q = 0, 1, 2, 3` (negation is exact).
//!
//! Both routines are accurate to a few f64 ulps (tested against `f64::ln`,
//! `cos`, `sin`), far below the f32 the result is rounded to.

const MULTIPLIERS: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
const WEYL_KEYS: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];
const ROUNDS: usize = 10;

const SQRT_HALF: f64 = std::f64::consts::FRAC_1_SQRT_2;
const LN_2: f64 = std::f64::consts::LN_2;
const HALF_PI: f64 = std::f64::consts::FRAC_PI_2;

/// One Philox-4x32 round: two 32×32→64 multiplies, the halves xor-ed with
/// the other words and the key.
fn round(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let p0 = MULTIPLIERS[0] as u64 * ctr[0] as u64;
    let p1 = MULTIPLIERS[1] as u64 * ctr[2] as u64;
    let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
    let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
    [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0]
}

/// Philox-4x32 with 10 rounds, the key bumped by the Weyl constants between rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut ctr = counter;
    let mut key = key;
    for r in 0..ROUNDS {
        if r > 0 {
            key = [key[0].wrapping_add(WEYL_KEYS[0]), key[1].wrapping_add(WEYL_KEYS[1])];
        }
        ctr = round(ctr, key);
    }
    ctr
}

/// The 32 random bits of element `index` of stream `(seed, offset)` (module docs).
pub fn random_bits(seed: u64, offset: u64, index: u64) -> u32 {
    let block = index / 4;
    let counter = [block as u32, (block >> 32) as u32, offset as u32, (offset >> 32) as u32];
    let key = [seed as u32, (seed >> 32) as u32];
    philox4x32_10(counter, key)[(index % 4) as usize]
}

/// `(bits >> 8) · 2⁻²⁴`, uniform on `[0, 1)`, exact in f32.
pub fn uniform(seed: u64, offset: u64, index: u64) -> f32 {
    (random_bits(seed, offset, index) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// `U(−bound, bound)` in f32: `(2u − 1)·bound`.
pub fn uniform_symmetric(seed: u64, offset: u64, index: u64, bound: f32) -> f32 {
    (2.0 * uniform(seed, offset, index) - 1.0) * bound
}

/// Whether dropout keeps element `index`: `uniform >= p`.
pub fn dropout_keep(seed: u64, offset: u64, index: u64, p: f32) -> bool {
    uniform(seed, offset, index) >= p
}

/// A standard normal deviate for element `index`, before scaling (module docs).
pub fn standard_normal(seed: u64, offset: u64, index: u64) -> f64 {
    let pair = index / 2;
    let u1 = 1.0 - uniform(seed, offset, 2 * pair) as f64;
    let u2 = uniform(seed, offset, 2 * pair + 1) as f64;
    let radius = (-2.0 * ln_unit(u1)).sqrt();
    let (c, s) = cos_sin_turns(u2);
    if index % 2 == 0 {
        radius * c
    } else {
        radius * s
    }
}

/// `N(0, std²)` for element `index`: `standard_normal × std`, rounded to f32.
pub fn normal(seed: u64, offset: u64, index: u64, std: f64) -> f32 {
    (standard_normal(seed, offset, index) * std) as f32
}

/// Natural log of `x ∈ (0, 1]` with `+ − × ÷` only (module docs). Inputs
/// below `2⁻⁶⁰` are outside its contract (the crate only passes `x ≥ 2⁻²⁴`).
pub fn ln_unit(x: f64) -> f64 {
    let mut e = 0u32;
    let mut m = x;
    while m < SQRT_HALF && e < 64 {
        m *= 2.0;
        e += 1;
    }
    let t = (m - 1.0) / (m + 1.0);
    let z = t * t;
    let mut q = 1.0 / 25.0;
    for n in (0..=11u32).rev() {
        q = q * z + 1.0 / (2 * n + 1) as f64;
    }
    2.0 * (t * q) - e as f64 * LN_2
}

/// `(cos 2πu, sin 2πu)` for `u ∈ [0, 1)` with `+ − × ÷` only (module docs).
pub fn cos_sin_turns(u: f64) -> (f64, f64) {
    let v = 4.0 * u;
    let quadrant = (v + 0.5).floor();
    let phi = (v - quadrant) * HALF_PI;
    let w = phi * phi;
    let mut s = 1.0;
    let mut c = 1.0;
    for n in (1..=10u32).rev() {
        let n = n as f64;
        s = 1.0 - (w * s) / ((2.0 * n) * (2.0 * n + 1.0));
        c = 1.0 - (w * c) / ((2.0 * n - 1.0) * (2.0 * n));
    }
    let sin_phi = phi * s;
    match quadrant as u32 % 4 {
        0 => (c, sin_phi),
        1 => (-sin_phi, c),
        2 => (-c, -sin_phi),
        _ => (sin_phi, -c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_matches_std_over_the_unit_interval() {
        let mut worst = 0.0f64;
        for i in 1..=20_000u32 {
            let x = i as f64 / 20_000.0;
            worst = worst.max((ln_unit(x) - x.ln()).abs());
        }
        for e in 0..=24 {
            let x = 2f64.powi(-e);
            worst = worst.max((ln_unit(x) - x.ln()).abs());
        }
        assert!(worst < 1e-14, "worst ln error {worst:e}");
        assert_eq!(ln_unit(1.0), 0.0);
    }

    #[test]
    fn cos_sin_match_std_over_a_turn() {
        let mut worst = 0.0f64;
        for i in 0..(1u32 << 14) {
            let u = i as f64 / (1u32 << 14) as f64;
            let (c, s) = cos_sin_turns(u);
            let angle = std::f64::consts::TAU * u;
            worst = worst.max((c - angle.cos()).abs()).max((s - angle.sin()).abs());
        }
        assert!(worst < 1e-14, "worst cos/sin error {worst:e}");
        assert_eq!(cos_sin_turns(0.0), (1.0, 0.0));
    }

    #[test]
    fn constants_have_the_documented_bits() {
        // The device code spells these as hex literals; they must be the same doubles.
        assert_eq!(SQRT_HALF.to_bits(), 0x3FE6_A09E_667F_3BCD);
        assert_eq!(LN_2.to_bits(), 0x3FE6_2E42_FEFA_39EF);
        assert_eq!(HALF_PI.to_bits(), 0x3FF9_21FB_5444_2D18);
    }

    #[test]
    fn uniform_endpoints() {
        // The largest 24-bit value maps just below 1, zero maps to 0.
        assert_eq!((u32::MAX >> 8) as f32 * (1.0 / 16_777_216.0), 1.0 - 2f32.powi(-24));
        let u = uniform(1, 2, 3);
        assert!((0.0..1.0).contains(&u));
    }
}

//! Philox-4x32-10 against the published known answers, and the numbers the
//! crate draws from it: uniforms, normals, dropout masks, init schemes.

use fused_lora::reference::philox::{dropout_keep, normal, philox4x32_10, random_bits, standard_normal, uniform};
use fused_lora::reference::{init_adapter, init_matrix, Dropout};
use fused_lora::{Distribution, InitScheme};
use half::f16;

/// `(counter, key, expected)` for philox4x32 with 10 rounds. The first three
/// are the `philox4x32 10` lines of Random123's `tests/kat_vectors`
/// (DEShawResearch/random123); the others are `philox4x32 10` lines of
/// Random123's `examples/kat_vectors` (as mirrored in girving/random123-manual).
const KNOWN_ANSWERS: [([u32; 4], [u32; 2], [u32; 4]); 7] = [
    ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    (
        [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
        [0xffffffff, 0xffffffff],
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
    ),
    (
        [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
        [0xa4093822, 0x299f31d0],
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ),
    ([1, 0, 0, 0], [1, 0], [0xac08141b, 0xdfc5ccbe, 0x79c07a47, 0xa7f66093]),
    ([0, 0, 1, 0], [0, 1], [0x7f6c13ff, 0x114b2447, 0x0550eced, 0xea1fc805]),
    ([0, 1, 0, 0], [0, 0xffffffff], [0xcdfbd51c, 0xcaae5f2e, 0x10739cfc, 0x79e95162]),
    ([0, 0, 0, 0x80000000], [0, 0x80000000], [0xf7a0b371, 0xe51dc93d, 0x56ce135d, 0x1d4b5580]),
];

#[test]
fn philox4x32_10_matches_the_random123_known_answers() {
    for (counter, key, expected) in KNOWN_ANSWERS {
        assert_eq!(philox4x32_10(counter, key), expected, "counter {counter:08x?} key {key:08x?}");
    }
}

#[test]
fn keying_maps_seed_offset_and_index_onto_key_and_counter() {
    // Counter [1, 0, 0, 0], key [1, 0]: block 1 (indices 4..8), offset 0, seed 1.
    let words: Vec<u32> = (4..8).map(|i| random_bits(1, 0, i)).collect();
    assert_eq!(words, KNOWN_ANSWERS[3].2);
    // Counter [0, 0, 1, 0], key [0, 1]: block 0, offset 1, seed 1 << 32.
    let words: Vec<u32> = (0..4).map(|i| random_bits(1 << 32, 1, i)).collect();
    assert_eq!(words, KNOWN_ANSWERS[4].2);
    // Counter [0, 1, 0, 0], key [0, 0xffffffff]: block 1 << 32, seed 0xffffffff << 32.
    let words: Vec<u32> = (0..4).map(|w| random_bits(0xffff_ffff << 32, 0, (1u64 << 34) + w)).collect();
    assert_eq!(words, KNOWN_ANSWERS[5].2);
    // Offset's high word: counter [0, 0, 0, 0x80000000], key [0, 0x80000000].
    let words: Vec<u32> = (0..4).map(|i| random_bits(0x8000_0000 << 32, 0x8000_0000 << 32, i)).collect();
    assert_eq!(words, KNOWN_ANSWERS[6].2);
}

fn mean_and_variance(values: impl Iterator<Item = f64>) -> (f64, f64, usize) {
    let values: Vec<f64> = values.collect();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var, values.len())
}

const DRAWS: u64 = 100_000;

#[test]
fn uniform_has_the_moments_of_u01() {
    let (mean, var, n) = mean_and_variance((0..DRAWS).map(|i| uniform(42, 3, i) as f64));
    let n = n as f64;
    // Five standard errors: mean σ = √(1/12 / n); variance σ = √((1/80 − 1/144) / n).
    assert!((mean - 0.5).abs() < 5.0 * (1.0 / 12.0 / n).sqrt(), "mean {mean}");
    assert!((var - 1.0 / 12.0).abs() < 5.0 * ((1.0 / 80.0 - 1.0 / 144.0) / n).sqrt(), "variance {var}");
    assert!((0..DRAWS).all(|i| (0.0..1.0).contains(&uniform(42, 3, i))));
}

#[test]
fn normal_has_mean_zero_std_one_and_gaussian_mass() {
    let values: Vec<f64> = (0..DRAWS).map(|i| standard_normal(7, 0, i)).collect();
    let (mean, var, n) = mean_and_variance(values.iter().copied());
    let n = n as f64;
    assert!(mean.abs() < 5.0 / n.sqrt(), "mean {mean}");
    assert!((var.sqrt() - 1.0).abs() < 5.0 * (0.5 / n).sqrt(), "std {}", var.sqrt());
    let within_one = values.iter().filter(|v| v.abs() < 1.0).count() as f64 / n;
    let p = 0.682_689_492_137_086;
    assert!((within_one - p).abs() < 5.0 * (p * (1.0 - p) / n).sqrt(), "P(|z| < 1) = {within_one}");
}

#[test]
fn normal_pairs_share_one_radius() {
    // Box–Muller: elements 2j and 2j+1 are r·cos θ and r·sin θ with r² = −2 ln(1 − u(2j)).
    for j in 0..1000u64 {
        let (even, odd) = (standard_normal(9, 4, 2 * j), standard_normal(9, 4, 2 * j + 1));
        let u1 = 1.0 - uniform(9, 4, 2 * j) as f64;
        let r2 = -2.0 * u1.ln();
        assert!((even * even + odd * odd - r2).abs() <= 1e-12 * r2.max(1.0), "pair {j}");
    }
}

#[test]
fn normal_scales_by_std_and_rounds_to_f32() {
    for i in 0..100 {
        assert_eq!(normal(5, 6, i, 0.25), (standard_normal(5, 6, i) * 0.25) as f32);
    }
}

#[test]
fn dropout_keeps_about_one_minus_p() {
    for p in [0.1f32, 0.5] {
        let kept = (0..DRAWS).filter(|&i| dropout_keep(11, 2, i, p)).count() as f64 / DRAWS as f64;
        let keep = 1.0 - p as f64;
        assert!((kept - keep).abs() < 5.0 * (keep * (1.0 - keep) / DRAWS as f64).sqrt(), "p {p}: kept {kept}");
    }
    assert!((0..DRAWS).all(|i| dropout_keep(11, 2, i, 0.0)), "p = 0 keeps everything");
}

#[test]
fn dropout_mask_is_a_pure_function_of_seed_offset_and_index() {
    let d = Dropout::new(0.5, 123, 456).unwrap();
    let k_dim = 37;
    for m in 0..20 {
        for k in 0..k_dim {
            let index = (m * k_dim + k) as u64;
            let expected = uniform(123, 456, index) >= 0.5;
            assert_eq!(d.keep(m, k, k_dim), expected);
            assert_eq!(d.keep(m, k, k_dim), d.keep(m, k, k_dim));
        }
    }
    // Another offset or seed is another mask.
    let mask = |seed, offset| (0..1000u64).map(|i| dropout_keep(seed, offset, i, 0.5)).collect::<Vec<_>>();
    assert_ne!(mask(123, 456), mask(123, 457));
    assert_ne!(mask(123, 456), mask(124, 456));
    assert_eq!(mask(123, 456), mask(123, 456));
}

#[test]
fn init_schemes_give_the_documented_distributions() {
    let (rank, k_in, n_out) = (4usize, 1024usize, 96usize);
    // PEFT default: A ~ U(−1/√K, 1/√K), B = 0.
    let (a, b) = init_adapter::<f32>(InitScheme::PeftDefault, rank, k_in, n_out, 1, 0).unwrap();
    let bound = (1.0 / (k_in as f64).sqrt()) as f32;
    assert_eq!((a.len(), b.len()), (rank * k_in, n_out * rank));
    assert!(a.iter().all(|v| v.abs() <= bound));
    assert!(b.iter().all(|&v| v == 0.0));
    let (mean, var, n) = mean_and_variance(a.iter().map(|&v| v as f64));
    let uniform_var = (bound as f64).powi(2) / 3.0;
    assert!(mean.abs() < 5.0 * (uniform_var / n as f64).sqrt(), "mean {mean}");
    assert!((var / uniform_var - 1.0).abs() < 0.05, "variance {var} vs {uniform_var}");

    // Gaussian: A ~ N(0, (1/r)²), B = 0.
    let (a, b) = init_adapter::<f32>(InitScheme::Gaussian, rank, k_in, n_out, 2, 0).unwrap();
    let (mean, var, n) = mean_and_variance(a.iter().map(|&v| v as f64));
    let std = 1.0 / rank as f64;
    assert!(mean.abs() < 5.0 * std / (n as f64).sqrt(), "mean {mean}");
    assert!((var.sqrt() / std - 1.0).abs() < 0.05, "std {}", var.sqrt());
    assert!(b.iter().all(|&v| v == 0.0));

    // Reversed (Init[B]): A = 0, B ~ U(−1/√r, 1/√r).
    let (a, b) = init_adapter::<f32>(InitScheme::Reversed, rank, k_in, n_out, 3, 0).unwrap();
    let bound = (1.0 / (rank as f64).sqrt()) as f32;
    assert!(a.iter().all(|&v| v == 0.0));
    assert!(b.iter().all(|v| v.abs() <= bound) && b.iter().any(|&v| v != 0.0));
}

#[test]
fn init_is_deterministic_and_rounds_through_f32() {
    let dist = Distribution::Normal { std: 0.125 };
    let as_f32 = init_matrix::<f32>(dist, 500, 8, 9).unwrap();
    let as_f16 = init_matrix::<f16>(dist, 500, 8, 9).unwrap();
    assert_eq!(as_f32, init_matrix::<f32>(dist, 500, 8, 9).unwrap());
    let expected: Vec<f16> = as_f32.iter().map(|&v| f16::from_f32(v)).collect();
    assert_eq!(as_f16, expected);
    for (i, v) in as_f32.iter().enumerate() {
        assert_eq!(*v, normal(8, 9, i as u64, 0.125));
    }
    let uniform_f32 = init_matrix::<f32>(Distribution::Uniform { bound: 0.3 }, 64, 8, 9).unwrap();
    for (i, v) in uniform_f32.iter().enumerate() {
        assert_eq!(*v, (2.0 * uniform(8, 9, i as u64) - 1.0) * 0.3f32);
    }
}

#[test]
fn bad_init_arguments_are_errors() {
    assert!(init_matrix::<f32>(Distribution::Normal { std: -1.0 }, 4, 0, 0).is_err());
    assert!(init_matrix::<f32>(Distribution::Uniform { bound: f64::NAN }, 4, 0, 0).is_err());
    assert!(init_adapter::<f32>(InitScheme::PeftDefault, 0, 8, 8, 0, 0).is_err());
    assert!(init_adapter::<f32>(InitScheme::PeftDefault, 4, 0, 8, 0, 0).is_err());
}

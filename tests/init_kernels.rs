//! The device init kernels against the CPU reference: bit for bit, for every
//! scheme and dtype, on sizes that are not multiples of anything.

mod device;

use cudarc::driver::CudaSlice;
use fused_lora::reference::{self, RefElem};
use fused_lora::{Distribution, InitScheme, LoraDType, LoraError};
use half::{bf16, f16};

const SCHEMES: [InitScheme; 3] = [InitScheme::PeftDefault, InitScheme::Gaussian, InitScheme::Reversed];
const RANKS: [usize; 3] = [1, 8, 40];
const INPUTS: [usize; 3] = [3, 72, 520];
/// Output features: odd, so B `[N, r]` is never a multiple of a Philox block.
const OUTPUTS: usize = 37;

/// Bit patterns through f64 (exact for every T, keeps the sign of zero and
/// tells NaN payloads apart), so "equal" means bit-identical.
fn bits<T: LoraDType>(values: &[T]) -> Vec<u64> {
    values.iter().map(|&v| RefElem::to_f64(v).to_bits()).collect()
}

/// A device buffer of `len` NaNs: an element the kernel forgets stays NaN.
fn poisoned<T: LoraDType>(dev: &device::Device, len: usize) -> CudaSlice<T> {
    dev.stream.clone_htod(&vec![T::nan(); len]).expect("upload")
}

#[track_caller]
fn assert_bit_identical<T: LoraDType>(what: &str, got: &[T], expected: &[T]) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    if let Some(i) = bits(got).iter().zip(bits(expected)).position(|(g, e)| *g != e) {
        panic!("{what}[{i}]: device {:?}, reference {:?}", got[i], expected[i]);
    }
}

fn init_adapter_matches_reference<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let (seed, offset) = (0x5EED_0000_0000_002A, 7);
    for scheme in SCHEMES {
        for rank in RANKS {
            for k in INPUTS {
                let mut a = poisoned::<T>(&dev, rank * k);
                let mut b = poisoned::<T>(&dev, OUTPUTS * rank);
                dev.kernels
                    .init_adapter(&dev.stream, scheme, rank, k, OUTPUTS, seed, offset, &mut a, &mut b)
                    .expect("init_adapter");
                let (a_ref, b_ref) =
                    reference::init_adapter::<T>(scheme, rank, k, OUTPUTS, seed, offset).expect("reference");
                let what = format!("{scheme:?} {} r={rank} K={k}", T::DTYPE);
                assert_bit_identical(&format!("{what} A"), &dev.stream.clone_dtoh(&a).unwrap(), &a_ref);
                assert_bit_identical(&format!("{what} B"), &dev.stream.clone_dtoh(&b).unwrap(), &b_ref);
            }
        }
    }
}

/// The zero matrix of each scheme is +0.0 everywhere (a memset, not a tiny
/// random value or −0.0), and the other one is not.
fn zero_matrices_are_exactly_zero<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let (rank, k, n) = (8, 72, OUTPUTS);
    for scheme in SCHEMES {
        let mut a = poisoned::<T>(&dev, rank * k);
        let mut b = poisoned::<T>(&dev, n * rank);
        dev.kernels.init_adapter(&dev.stream, scheme, rank, k, n, 3, 0, &mut a, &mut b).unwrap();
        let (a, b) = (dev.stream.clone_dtoh(&a).unwrap(), dev.stream.clone_dtoh(&b).unwrap());
        let (zero, random) = match scheme {
            InitScheme::PeftDefault | InitScheme::Gaussian => (b, a),
            InitScheme::Reversed => (a, b),
        };
        assert!(bits(&zero).iter().all(|&b| b == 0), "{scheme:?}: zero matrix not all +0.0");
        let nonzero = random.iter().filter(|v| RefElem::to_f64(**v) != 0.0).count();
        assert!(
            nonzero > random.len() * 9 / 10,
            "{scheme:?}: only {nonzero} of {} random values non-zero",
            random.len()
        );
    }
}

/// Lengths around a Philox block (4 elements) and a Box–Muller pair, and a
/// seed and offset whose high 32 bits matter.
fn fills_match_reference_at_every_tail<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let (seed, offset) = (0xDEAD_BEEF_0123_4567, 0x0000_0001_0000_0003);
    for len in [1, 2, 3, 4, 5, 6, 7, 9, 1001] {
        for dist in [Distribution::Uniform { bound: 0.37 }, Distribution::Normal { std: 2.5 }] {
            let mut out = poisoned::<T>(&dev, len);
            dev.kernels.fill(&dev.stream, &mut out, dist, seed, offset).unwrap();
            let expected = reference::init_matrix::<T>(dist, len, seed, offset).unwrap();
            assert_bit_identical(
                &format!("{dist:?} {} len={len}", T::DTYPE),
                &dev.stream.clone_dtoh(&out).unwrap(),
                &expected,
            );
        }
    }
}

/// A fill into a view that starts mid-buffer draws indices from 0 (element
/// `i` of the view is element `i` of the stream) and leaves the rest alone.
fn fill_into_a_view<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let mut buffer = poisoned::<T>(&dev, 50);
    let mut view = buffer.slice_mut(3..46);
    dev.kernels.fill_normal(&dev.stream, &mut view, 0.125, 11, 2).unwrap();
    let got = dev.stream.clone_dtoh(&buffer).unwrap();
    let expected = reference::init_matrix::<T>(Distribution::Normal { std: 0.125 }, 43, 11, 2).unwrap();
    assert_bit_identical("view", &got[3..46], &expected);
    assert!(got[..3].iter().chain(&got[46..]).all(|v| RefElem::to_f64(*v).is_nan()), "wrote outside the view");
}

macro_rules! per_dtype {
    ($($name:ident),*) => {
        $(
            mod $name {
                use super::*;
                #[test]
                fn f32() {
                    super::$name::<f32>();
                }
                #[test]
                fn f16() {
                    super::$name::<f16>();
                }
                #[test]
                fn bf16() {
                    super::$name::<bf16>();
                }
            }
        )*
    };
}

per_dtype!(
    init_adapter_matches_reference,
    zero_matrices_are_exactly_zero,
    fills_match_reference_at_every_tail,
    fill_into_a_view
);

/// Different `(seed, offset)` streams share almost no values.
#[test]
fn different_seed_or_offset_gives_a_different_matrix() {
    let Some(dev) = device::device() else { return };
    let len = 999;
    let draw = |seed, offset| {
        let mut out = poisoned::<f32>(&dev, len);
        dev.kernels.fill_uniform(&dev.stream, &mut out, 1.0, seed, offset).unwrap();
        dev.stream.clone_dtoh(&out).unwrap()
    };
    let streams = [(1, 0), (2, 0), (1, 1), (1 << 32, 0), (1, 1 << 32)];
    let matrices: Vec<Vec<f32>> = streams.iter().map(|&(s, o)| draw(s, o)).collect();
    for i in 0..matrices.len() {
        for j in i + 1..matrices.len() {
            let same = matrices[i].iter().zip(&matrices[j]).filter(|(a, b)| a == b).count();
            // Two independent 24-bit uniforms coincide with probability 2^-24.
            assert!(same <= 1, "streams {:?} and {:?} share {same} of {len} values", streams[i], streams[j]);
        }
    }
    assert_eq!(draw(1, 0), matrices[0], "the same stream must give the same matrix");
}

/// A and B of one adapter come from different streams (offset and offset + 1).
#[test]
fn a_and_b_do_not_share_random_numbers() {
    let Some(dev) = device::device() else { return };
    // Init[B] draws B [N, r] from stream offset + 1 with bound 1/sqrt(r) = 0.5.
    let (rank, k) = (4, 4);
    let mut a = poisoned::<f32>(&dev, rank * k);
    let mut b = poisoned::<f32>(&dev, k * rank);
    dev.kernels.init_adapter(&dev.stream, InitScheme::Reversed, rank, k, k, 9, 0, &mut a, &mut b).unwrap();
    let b = dev.stream.clone_dtoh(&b).unwrap();
    let mut a_next = poisoned::<f32>(&dev, rank * k);
    dev.kernels.fill_uniform(&dev.stream, &mut a_next, 0.5, 9, 1).unwrap();
    assert_eq!(b, dev.stream.clone_dtoh(&a_next).unwrap(), "B must be stream offset + 1, bound 1/sqrt(r)");
    let mut a_same = poisoned::<f32>(&dev, rank * k);
    dev.kernels.fill_uniform(&dev.stream, &mut a_same, 0.5, 9, 0).unwrap();
    assert_ne!(b, dev.stream.clone_dtoh(&a_same).unwrap());
}

#[test]
fn bad_arguments_are_errors_and_write_nothing() {
    let Some(dev) = device::device() else { return };
    let mut out = poisoned::<bf16>(&dev, 12);
    let invalid = |r: fused_lora::Result<()>, what: &str| match r {
        Err(LoraError::InvalidArgument { what: w, .. }) => assert_eq!(w, what),
        other => panic!("expected InvalidArgument for {what}, got {other:?}"),
    };
    invalid(dev.kernels.fill_uniform(&dev.stream, &mut out, -1.0, 0, 0), "bound");
    invalid(dev.kernels.fill_uniform(&dev.stream, &mut out, f64::INFINITY, 0, 0), "bound");
    invalid(dev.kernels.fill_normal(&dev.stream, &mut out, f64::NAN, 0, 0), "std");
    invalid(dev.kernels.fill(&dev.stream, &mut out, Distribution::Normal { std: -0.5 }, 0, 0), "std");

    let mut b = poisoned::<bf16>(&dev, 12);
    invalid(dev.kernels.init_adapter(&dev.stream, InitScheme::PeftDefault, 0, 4, 3, 0, 0, &mut out, &mut b), "rank");
    invalid(dev.kernels.init_adapter(&dev.stream, InitScheme::PeftDefault, 3, 0, 4, 0, 0, &mut out, &mut b), "k");
    // A [3, 4] fits, B [5, 3] needs 15, has 12.
    match dev.kernels.init_adapter(&dev.stream, InitScheme::Gaussian, 3, 4, 5, 0, 0, &mut out, &mut b) {
        Err(LoraError::ShapeMismatch { what: "b", expected, got }) => {
            assert_eq!((expected, got), (vec![5, 3], vec![12]));
        }
        other => panic!("expected a shape mismatch for B, got {other:?}"),
    }
    for buffer in [&out, &b] {
        let values = dev.stream.clone_dtoh(buffer).unwrap();
        assert!(values.iter().all(|v| v.is_nan()), "a rejected call wrote to its output");
    }
}

/// More elements than one grid of 1024 CTAs x 256 threads x 4 covers: the
/// threads loop (grid-stride), and the loop's last lap ends mid-block.
#[test]
fn a_fill_larger_than_the_grid_loops() {
    let Some(dev) = device::device() else { return };
    let len = 1024 * 256 * 4 + 4 * 1000 + 3;
    let mut out = poisoned::<bf16>(&dev, len);
    dev.kernels.fill_uniform(&dev.stream, &mut out, 0.02, 77, 5).unwrap();
    let expected = reference::init_matrix::<bf16>(Distribution::Uniform { bound: 0.02 }, len, 77, 5).unwrap();
    assert_bit_identical("grid-stride fill", &dev.stream.clone_dtoh(&out).unwrap(), &expected);
}

//! The fused optimizer steps against the f64 reference optimizers, over
//! several steps, for every dtype, on the vector path and the scalar path.
//!
//! # Tolerance
//!
//! The device computes in f32 and keeps f32 state; the reference computes in
//! f64 and rounds only the master weight to f32 after each step. Per step and
//! element the difference is bounded by
//!
//! - the two roundings of the new master (device and reference): `2u·|w|`,
//!   plus one more for the f32 decay factor of AdamW;
//! - the f32 error of the update `lr·d`: each of the few operations of one
//!   step (products, sums, the quotient and square root of Adam) adds a
//!   relative `u` of the *magnitude* of its operands, and the state carries
//!   the errors of earlier steps, so after `s` steps the update's error is at
//!   most `C·s·u·lr·|d|ₘₐₓ` where `|d|ₘₐₓ` is the update computed with every
//!   term's absolute value (no cancellation can hide an error) and `C = 6`
//!   covers the longest chain of roundings in one step (Adam: `(1−β)·g`, the
//!   fma, `√v`, `÷ bc₂`, `+ ε`, `m ÷ denom`, and the f32 hyper-parameters);
//!
//! and the bounds of earlier steps carry over (the weight-decay factor is ≤ 1).
//! `u = 2⁻²⁴`. A wrong formula (dampening, bias correction, Nesterov, decay
//! order) is off by a relative 1e-3 or more, far above this.

mod device;

use cudarc::driver::CudaSlice;
use fused_lora::reference::{self, RefElem};
use fused_lora::{AdamWConfig, AdamWState, LoraDType, LoraError, SgdConfig, SgdState};
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const U32: f64 = 5.960_464_477_539_063e-8; // 2^-24
const C_UPDATE: f64 = 6.0;
const STEPS: usize = 6;

/// Sizes: an odd length (vector packs plus a 3-element tail) starting on an
/// aligned address, and one starting one element in (every pack scalar).
const LAYOUTS: [(usize, usize); 2] = [(1031, 0), (130, 1)];

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn uniform(rng: &mut ChaCha8Rng, len: usize, scale: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

/// The device buffers of one parameter tensor, each `pad` elements longer
/// than the tensor, which starts at element `pad`.
struct Tensor<T> {
    master: CudaSlice<f32>,
    working: CudaSlice<T>,
    pad: usize,
}

impl<T: LoraDType> Tensor<T> {
    fn new(dev: &device::Device, master: &[f32], pad: usize) -> Self {
        let mut padded = vec![0.0f32; pad];
        padded.extend_from_slice(master);
        let working = vec![T::nan(); pad + master.len()];
        Tensor {
            master: dev.stream.clone_htod(&padded).unwrap(),
            working: dev.stream.clone_htod(&working).unwrap(),
            pad,
        }
    }

    fn upload_grad<G: LoraDType>(&self, dev: &device::Device, grad: &[G]) -> CudaSlice<G> {
        let mut padded = vec![G::default(); self.pad];
        padded.extend_from_slice(grad);
        dev.stream.clone_htod(&padded).unwrap()
    }

    fn download(&self, dev: &device::Device) -> (Vec<f32>, Vec<T>) {
        let master = dev.stream.clone_dtoh(&self.master).unwrap();
        let working = dev.stream.clone_dtoh(&self.working).unwrap();
        (master[self.pad..].to_vec(), working[self.pad..].to_vec())
    }
}

/// After a step: the working copy is `round_T(master)` bit for bit, and the
/// master is within `bound` of the reference.
#[track_caller]
fn check_step<T: LoraDType>(what: &str, master: &[f32], working: &[T], expected: &[f32], bound: &[f64]) {
    for (i, (&w, &copy)) in master.iter().zip(working).enumerate() {
        let rounded = <T as RefElem>::from_f32(w);
        assert_eq!(
            RefElem::to_f64(copy).to_bits(),
            RefElem::to_f64(rounded).to_bits(),
            "{what}: working[{i}] = {copy:?} is not round_T(master[{i}] = {w:e})"
        );
    }
    let mut worst = 0.0f64;
    for (i, ((&got, &want), &bound)) in master.iter().zip(expected).zip(bound).enumerate() {
        let error = (got as f64 - want as f64).abs();
        assert!(error <= bound, "{what}: master[{i}] = {got:e}, reference {want:e}, error {error:e} > bound {bound:e}");
        if bound > 0.0 {
            worst = worst.max(error / bound);
        }
    }
    eprintln!("{what}: worst error / bound = {worst:.3}");
}

/// The SGD error budget of the module docs, accumulated step by step.
struct SgdBudget {
    config: SgdConfig,
    steps: usize,
    /// The momentum buffer computed with absolute values.
    buffer_magnitude: Vec<f64>,
    bound: Vec<f64>,
}

impl SgdBudget {
    fn new(config: SgdConfig, len: usize) -> Self {
        SgdBudget { config, steps: 0, buffer_magnitude: vec![0.0; len], bound: vec![0.0; len] }
    }

    /// Adds one step: its update's share from the weights before the step,
    /// the two roundings from the weights after it.
    fn add_step(&mut self, before: &[f32], grad: &[f64], after: &[f32]) {
        self.steps += 1;
        let SgdConfig { lr, momentum, dampening, weight_decay, nesterov } = self.config;
        for i in 0..before.len() {
            let d = grad[i].abs() + weight_decay * (before[i] as f64).abs();
            let update = if momentum != 0.0 {
                let b = &mut self.buffer_magnitude[i];
                *b = if self.steps == 1 { d } else { momentum * *b + (1.0 - dampening).abs() * d };
                if nesterov {
                    d + momentum * *b
                } else {
                    *b
                }
            } else {
                d
            };
            self.bound[i] += C_UPDATE * self.steps as f64 * U32 * lr * update + 2.0 * U32 * (after[i] as f64).abs();
        }
    }
}

fn reference_sgd(config: SgdConfig) -> reference::Sgd {
    let mut sgd = reference::Sgd::new(config.lr);
    sgd.momentum = config.momentum;
    sgd.dampening = config.dampening;
    sgd.weight_decay = config.weight_decay;
    sgd.nesterov = config.nesterov;
    sgd
}

fn sgd_matches_reference<T: LoraDType, G: LoraDType>(config: SgdConfig, seed: u64) {
    let Some(dev) = device::device() else { return };
    for (len, pad) in LAYOUTS {
        let mut rng = rng(seed);
        let start: Vec<f32> = uniform(&mut rng, len, 1.0).iter().map(|&x| x as f32).collect();
        let mut tensor = Tensor::<T>::new(&dev, &start, pad);
        let mut state = SgdState::new(&dev.stream, len).unwrap();
        let mut reference = reference_sgd(config);
        let mut expected = start.clone();
        let mut budget = SgdBudget::new(config, len);
        for step in 1..=STEPS {
            let grad: Vec<G> = uniform(&mut rng, len, 1.0).iter().map(|&g| <G as RefElem>::from_f64(g)).collect();
            let grad_f64: Vec<f64> = grad.iter().map(|&g| RefElem::to_f64(g)).collect();
            let before = expected.clone();
            reference.step(&mut expected, &grad_f64).unwrap();
            budget.add_step(&before, &grad_f64, &expected);

            let grad_device = tensor.upload_grad(&dev, &grad);
            {
                let mut master_view = tensor.master.slice_mut(pad..);
                let mut working_view = tensor.working.slice_mut(pad..);
                let grad_view = grad_device.slice(pad..);
                dev.kernels
                    .sgd_step(&dev.stream, &config, &mut master_view, &mut working_view, &grad_view, &mut state)
                    .unwrap();
            }
            let (got_master, got_working) = tensor.download(&dev);
            let what = format!("sgd {config:?} {} grad {} len={len} pad={pad} step {step}", T::DTYPE, G::DTYPE);
            check_step(&what, &got_master, &got_working, &expected, &budget.bound);
        }
    }
}

fn adamw_matches_reference<T: LoraDType, G: LoraDType>(config: AdamWConfig, seed: u64) {
    let Some(dev) = device::device() else { return };
    for (len, pad) in LAYOUTS {
        let mut rng = rng(seed);
        let start: Vec<f32> = uniform(&mut rng, len, 1.0).iter().map(|&x| x as f32).collect();
        let mut tensor = Tensor::<T>::new(&dev, &start, pad);
        let mut state = AdamWState::new(&dev.stream, len).unwrap();

        let AdamWConfig { lr, beta1, beta2, eps, weight_decay } = config;
        let mut reference = reference::AdamW::new(lr, beta1, beta2, eps, weight_decay).unwrap();
        let mut expected = start.clone();

        let (mut m_magnitude, mut v) = (vec![0.0f64; len], vec![0.0f64; len]);
        let mut bound = vec![0.0f64; len];
        for step in 1..=STEPS {
            let grad: Vec<G> = uniform(&mut rng, len, 1.0).iter().map(|&g| <G as RefElem>::from_f64(g)).collect();
            let grad_f64: Vec<f64> = grad.iter().map(|&g| RefElem::to_f64(g)).collect();

            let t = step as i32;
            let step_size = lr / (1.0 - beta1.powi(t));
            let bias_correction2_sqrt = (1.0 - beta2.powi(t)).sqrt();
            for i in 0..len {
                m_magnitude[i] = beta1 * m_magnitude[i] + (1.0 - beta1) * grad_f64[i].abs();
                v[i] = beta2 * v[i] + (1.0 - beta2) * grad_f64[i] * grad_f64[i];
                let update = step_size * m_magnitude[i] / (v[i].sqrt() / bias_correction2_sqrt + eps);
                bound[i] += C_UPDATE * step as f64 * U32 * update + U32 * (expected[i] as f64).abs();
            }
            reference.step(&mut expected, &grad_f64).unwrap();
            for i in 0..len {
                bound[i] += 2.0 * U32 * (expected[i] as f64).abs();
            }

            let grad_device = tensor.upload_grad(&dev, &grad);
            {
                let mut master_view = tensor.master.slice_mut(pad..);
                let mut working_view = tensor.working.slice_mut(pad..);
                let grad_view = grad_device.slice(pad..);
                dev.kernels
                    .adamw_step(&dev.stream, &config, &mut master_view, &mut working_view, &grad_view, &mut state)
                    .unwrap();
            }
            assert_eq!(state.step(), step as u64);
            let (got_master, got_working) = tensor.download(&dev);
            let what = format!("adamw {config:?} {} grad {} len={len} pad={pad} step {step}", T::DTYPE, G::DTYPE);
            check_step(&what, &got_master, &got_working, &expected, &bound);
        }
    }
}

fn sgd_configs() -> Vec<SgdConfig> {
    vec![
        SgdConfig::new(0.1),
        SgdConfig::with_momentum(0.1, 0.9),
        SgdConfig { lr: 0.05, momentum: 0.8, dampening: 0.3, weight_decay: 0.01, nesterov: false },
        SgdConfig { lr: 0.05, momentum: 0.9, dampening: 0.0, weight_decay: 0.02, nesterov: true },
    ]
}

fn adamw_configs() -> Vec<AdamWConfig> {
    vec![
        AdamWConfig::new(1e-2),
        AdamWConfig { lr: 3e-3, beta1: 0.8, beta2: 0.95, eps: 1e-6, weight_decay: 0.1 },
        AdamWConfig { lr: 1e-1, beta1: 0.0, beta2: 0.5, eps: 1e-3, weight_decay: 0.0 },
    ]
}

fn sgd_all_configs<T: LoraDType, G: LoraDType>() {
    for (i, config) in sgd_configs().into_iter().enumerate() {
        sgd_matches_reference::<T, G>(config, 100 + i as u64);
    }
}

fn adamw_all_configs<T: LoraDType, G: LoraDType>() {
    for (i, config) in adamw_configs().into_iter().enumerate() {
        adamw_matches_reference::<T, G>(config, 200 + i as u64);
    }
}

/// Stamps a test per (working copy, gradient) type pair: each type with its
/// own gradients, as the backward kernels write them, and with gradients of
/// another type (f32 from an accumulation buffer, or a narrower one).
macro_rules! per_type_pair {
    ($($name:ident),*) => {
        $(
            mod $name {
                #[test]
                fn f32() {
                    super::$name::<f32, f32>();
                }
                #[test]
                fn f16() {
                    super::$name::<half::f16, half::f16>();
                }
                #[test]
                fn bf16() {
                    super::$name::<half::bf16, half::bf16>();
                }
                #[test]
                fn f16_with_f32_grad() {
                    super::$name::<half::f16, f32>();
                }
                #[test]
                fn bf16_with_f32_grad() {
                    super::$name::<half::bf16, f32>();
                }
                #[test]
                fn f32_with_bf16_grad() {
                    super::$name::<f32, half::bf16>();
                }
            }
        )*
    };
}

per_type_pair!(sgd_all_configs, adamw_all_configs);

#[track_caller]
fn assert_invalid(result: fused_lora::Result<()>, what: &str) {
    match result {
        Err(LoraError::InvalidArgument { what: w, .. }) => assert_eq!(w, what),
        other => panic!("expected InvalidArgument for `{what}`, got {other:?}"),
    }
}

#[test]
fn sgd_config_rejects_bad_hyper_parameters() {
    let good = SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 0.01, nesterov: true };
    assert!(good.validate().is_ok());
    assert_invalid(SgdConfig { lr: -0.1, ..good }.validate(), "lr");
    assert_invalid(SgdConfig { lr: f64::NAN, ..good }.validate(), "lr");
    assert_invalid(SgdConfig { momentum: -0.5, ..good }.validate(), "momentum");
    assert_invalid(SgdConfig { momentum: f64::INFINITY, ..good }.validate(), "momentum");
    assert_invalid(SgdConfig { dampening: f64::NAN, ..good }.validate(), "dampening");
    assert_invalid(SgdConfig { weight_decay: -1e-3, ..good }.validate(), "weight_decay");
    assert_invalid(SgdConfig { momentum: 0.0, ..good }.validate(), "nesterov");
    assert_invalid(SgdConfig { dampening: 0.1, ..good }.validate(), "nesterov");
    assert!(SgdConfig { lr: 0.0, momentum: 0.0, nesterov: false, ..good }.validate().is_ok());
}

#[test]
fn adamw_config_rejects_bad_hyper_parameters() {
    let good = AdamWConfig::new(1e-3);
    assert!(good.validate().is_ok());
    assert!(AdamWConfig { beta1: 0.0, eps: 0.0, weight_decay: 0.0, ..good }.validate().is_ok());
    assert_invalid(AdamWConfig { lr: -1e-3, ..good }.validate(), "lr");
    assert_invalid(AdamWConfig { lr: f64::INFINITY, ..good }.validate(), "lr");
    assert_invalid(AdamWConfig { beta1: 1.0, ..good }.validate(), "beta1");
    assert_invalid(AdamWConfig { beta1: -0.1, ..good }.validate(), "beta1");
    assert_invalid(AdamWConfig { beta1: f64::NAN, ..good }.validate(), "beta1");
    assert_invalid(AdamWConfig { beta2: 1.0, ..good }.validate(), "beta2");
    assert_invalid(AdamWConfig { eps: f64::NAN, ..good }.validate(), "eps");
    assert_invalid(AdamWConfig { eps: -1e-8, ..good }.validate(), "eps");
    assert_invalid(AdamWConfig { weight_decay: f64::NAN, ..good }.validate(), "weight_decay");
}

/// Rejected steps return the error and leave master, working copy and state untouched.
#[test]
fn bad_steps_are_errors_and_write_nothing() {
    let Some(dev) = device::device() else { return };
    let len = 10;
    let start: Vec<f32> = (0..len).map(|i| i as f32 * 0.25 - 1.0).collect();
    let mut master = dev.stream.clone_htod(&start).unwrap();
    let mut working = dev.stream.clone_htod(&vec![bf16::NAN; len]).unwrap();
    let grad = dev.stream.clone_htod(&vec![bf16::ONE; len]).unwrap();
    let short_grad = dev.stream.clone_htod(&vec![bf16::ONE; len - 1]).unwrap();
    let mut short_working = dev.stream.clone_htod(&vec![bf16::NAN; len + 1]).unwrap();
    let mut sgd = SgdState::new(&dev.stream, len).unwrap();
    let mut adam = AdamWState::new(&dev.stream, len).unwrap();
    let mut adam_short = AdamWState::new(&dev.stream, len - 1).unwrap();
    let kernels = &dev.kernels;
    let stream = &dev.stream;

    let shape = |result: fused_lora::Result<()>, what: &str| match result {
        Err(LoraError::ShapeMismatch { what: w, .. }) => assert_eq!(w, what),
        other => panic!("expected ShapeMismatch for `{what}`, got {other:?}"),
    };
    let sgd_config = SgdConfig::with_momentum(0.1, 0.9);
    shape(kernels.sgd_step(stream, &sgd_config, &mut master, &mut working, &short_grad, &mut sgd), "grad");
    shape(kernels.sgd_step(stream, &sgd_config, &mut master, &mut short_working, &grad, &mut sgd), "working");
    assert_invalid(kernels.sgd_step(stream, &SgdConfig::new(-1.0), &mut master, &mut working, &grad, &mut sgd), "lr");
    let adam_config = AdamWConfig::new(1e-3);
    shape(kernels.adamw_step(stream, &adam_config, &mut master, &mut working, &grad, &mut adam_short), "state");
    shape(kernels.adamw_step(stream, &adam_config, &mut master, &mut working, &short_grad, &mut adam), "grad");
    let bad_beta = AdamWConfig { beta2: 1.5, ..adam_config };
    assert_invalid(kernels.adamw_step(stream, &bad_beta, &mut master, &mut working, &grad, &mut adam), "beta2");
    let bad_eps = AdamWConfig { eps: f64::NAN, ..adam_config };
    assert_invalid(kernels.adamw_step(stream, &bad_eps, &mut master, &mut working, &grad, &mut adam), "eps");

    assert_eq!(stream.clone_dtoh(&master).unwrap(), start, "master changed by a rejected step");
    assert!(stream.clone_dtoh(&working).unwrap().iter().all(|v| v.is_nan()), "working copy written by a rejected step");
    assert_eq!(adam.step(), 0, "a rejected step counted");
    assert!(stream.clone_dtoh(sgd.momentum_buffer()).unwrap().iter().all(|&b| b == 0.0));

    // The first accepted step then starts the momentum buffer at the gradient, as PyTorch does.
    kernels.sgd_step(stream, &sgd_config, &mut master, &mut working, &grad, &mut sgd).unwrap();
    assert!(stream.clone_dtoh(sgd.momentum_buffer()).unwrap().iter().all(|&b| b == 1.0));
}

/// More elements than one grid of 1024 CTAs x 256 threads x 4 covers: the
/// threads loop (grid-stride) and the last lap ends in a partial pack.
#[test]
fn a_step_larger_than_the_grid_loops() {
    let Some(dev) = device::device() else { return };
    let len = 1024 * 256 * 4 + 4 * 300 + 3;
    let mut rng = rng(7);
    let start: Vec<f32> = uniform(&mut rng, len, 1.0).iter().map(|&x| x as f32).collect();
    let mut master = dev.stream.clone_htod(&start).unwrap();
    let mut working = dev.stream.clone_htod(&vec![f16::NAN; len]).unwrap();
    let mut state = SgdState::new(&dev.stream, len).unwrap();
    let config = SgdConfig::with_momentum(0.5, 0.9);
    let mut reference = reference_sgd(config);
    let mut expected = start.clone();
    let mut budget = SgdBudget::new(config, len);
    for step in 1..=2 {
        let grad: Vec<f16> = uniform(&mut rng, len, 1.0).iter().map(|&g| f16::from_f64(g)).collect();
        let grad_f64: Vec<f64> = grad.iter().map(|g| g.to_f64()).collect();
        let before = expected.clone();
        reference.step(&mut expected, &grad_f64).unwrap();
        budget.add_step(&before, &grad_f64, &expected);

        let grad_device = dev.stream.clone_htod(&grad).unwrap();
        dev.kernels.sgd_step(&dev.stream, &config, &mut master, &mut working, &grad_device, &mut state).unwrap();
        let got_master = dev.stream.clone_dtoh(&master).unwrap();
        let got_working = dev.stream.clone_dtoh(&working).unwrap();
        check_step(&format!("grid-stride sgd step {step}"), &got_master, &got_working, &expected, &budget.bound);
    }
}

/// On aligned buffers every warp moves each array with one 16-byte-per-lane
/// vector access and touches each 32-byte sector once: the step reads and
/// writes exactly the bytes it must (the DRAM floor), no more.
#[test]
fn aligned_steps_are_vectorised_and_touch_each_sector_once() {
    let Some(dev) = device::device() else { return };
    let len = 5 * 256 * 4;
    let mut master = dev.stream.clone_htod(&vec![0.5f32; len]).unwrap();
    let mut working = dev.stream.clone_htod(&vec![bf16::NAN; len]).unwrap();
    let grad = dev.stream.clone_htod(&vec![bf16::from_f32(0.25); len]).unwrap();
    let mut state = AdamWState::new(&dev.stream, len).unwrap();
    dev.kernels.adamw_step(&dev.stream, &AdamWConfig::new(1e-3), &mut master, &mut working, &grad, &mut state).unwrap();
    dev.stream.synchronize().unwrap();
    // The emulator keeps the counters of each host thread's latest launch.
    let Some(counters) = device::last_launch_counters() else { return };
    assert_eq!(counters["kernel"], "lora_adamw_step_bf16_grad_bf16", "{counters}");
    let warps = (len / 4 / 32) as u64;
    // Reads master, m, v (f32) and grad (bf16); writes master, m, v and the working copy.
    let bytes = (len * (3 * 4 + 2)) as u64;
    for (name, expected) in [
        ("global_load_requests", 4 * warps),
        ("global_store_requests", 4 * warps),
        ("global_load_sectors", bytes / 32),
        ("global_store_sectors", bytes / 32),
    ] {
        assert_eq!(device::counter(&counters, name), expected, "{name} in {counters}");
    }
}

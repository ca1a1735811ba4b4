//! docs/theory.md's identities, asserted with the crate's own kernels (init,
//! forward, backward, SGD and AdamW steps) on a small synthetic regression:
//! a frozen random base W0, a hidden low-rank target, MSE loss.
//!
//! - step-0 gradients are exactly zero where the algebra says;
//! - both-zero adapters never move;
//! - (α·k, lr/k, A/√k, B/√k) gives the same SGD trajectory, and
//!   (α·k, lr/√k, A/√k, B/√k, ε·√k) the same Adam trajectory.
//!
//! With k = 4 every factor is a power of two, which commutes with f32
//! rounding (away from the subnormal range): the kernels then reproduce the
//! losses **bit for bit**, and the substituted A, B stay exactly half of the
//! originals — a far tighter check than "up to rounding".

mod device;

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};
use fused_lora::reference::synthetic::SyntheticTask;
use fused_lora::{
    AdamWConfig, AdamWState, Adapter, BackwardInputs, BackwardOutput, ForwardOutput, GradMode, InitScheme, Linear,
    LoraKernels, SgdConfig, SgdState,
};

const M: usize = 32;
const K: usize = 64;
const N: usize = 48;
const R: usize = 4;
const STEPS: usize = 20;

/// The frozen problem on the device, and its targets.
struct Task {
    x: CudaSlice<f32>,
    w0: CudaSlice<f32>,
    host: SyntheticTask,
}

fn task(stream: &Arc<CudaStream>) -> Task {
    let host = SyntheticTask::new(M, K, N, R, 99, 0.1, |v| v);
    Task { x: stream.clone_htod(&host.x).unwrap(), w0: stream.clone_htod(&host.w0).unwrap(), host }
}

/// One adapter under training: f32 master weights are the working copy too.
struct Lora {
    a: CudaSlice<f32>,
    b: CudaSlice<f32>,
    master_a: CudaSlice<f32>,
    master_b: CudaSlice<f32>,
    scale: f32,
}

fn adapter(stream: &Arc<CudaStream>, a: &[f32], b: &[f32], scale: f32) -> Lora {
    Lora {
        a: stream.clone_htod(a).unwrap(),
        b: stream.clone_htod(b).unwrap(),
        master_a: stream.clone_htod(a).unwrap(),
        master_b: stream.clone_htod(b).unwrap(),
        scale,
    }
}

/// Forward, MSE loss and its gradient on the host, backward. Returns the loss
/// (f32, as computed from the kernel's Y) and the gradients (dA, dB).
fn loss_and_grads(dev: &device::Device, task: &Task, lora: &Lora) -> (f32, CudaSlice<f32>, CudaSlice<f32>) {
    let (stream, kernels): (&Arc<CudaStream>, &LoraKernels) = (&dev.stream, &dev.kernels);
    let linear = Linear { weight: task.w0.as_view(), bias: None, n: N, k: K };
    let adapter = Adapter { a: lora.a.as_view(), b: lora.b.as_view(), rank: R, scale: lora.scale };
    let mut y = stream.alloc_zeros::<f32>(M * N).unwrap();
    let mut p = stream.alloc_zeros::<f32>(M * R).unwrap();
    kernels
        .forward(
            stream,
            &task.x.as_view(),
            &linear,
            &adapter,
            None,
            &mut ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) },
        )
        .unwrap();
    let y: Vec<f32> = stream.clone_dtoh(&y).unwrap();
    let (loss, dy) = task.host.mse(&y);
    let dy = stream.clone_htod(&dy).unwrap();

    let mut da = stream.alloc_zeros::<f32>(R * K).unwrap();
    let mut db = stream.alloc_zeros::<f32>(N * R).unwrap();
    let mut dx = stream.alloc_zeros::<f32>(M * K).unwrap();
    let mut out = BackwardOutput {
        da: da.as_view_mut(),
        db: db.as_view_mut(),
        dx: dx.as_view_mut(),
        g: None,
        mode: GradMode::Overwrite,
    };
    let inputs = BackwardInputs { dy: dy.as_view(), x: task.x.as_view(), p: Some(p.as_view()), dropout: None };
    kernels.backward(stream, &inputs, &linear, &adapter, &mut out).unwrap();
    (loss, da, db)
}

/// The PEFT-default (Init[A]) or reversed (Init[B]) adapter drawn on the device.
fn initial(dev: &device::Device, scheme: InitScheme) -> (Vec<f32>, Vec<f32>) {
    let mut a = dev.stream.alloc_zeros::<f32>(R * K).unwrap();
    let mut b = dev.stream.alloc_zeros::<f32>(N * R).unwrap();
    dev.kernels.init_adapter(&dev.stream, scheme, R, K, N, 7, 0, &mut a, &mut b).unwrap();
    (dev.stream.clone_dtoh(&a).unwrap(), dev.stream.clone_dtoh(&b).unwrap())
}

fn all_zero(v: &[f32]) -> bool {
    v.iter().all(|&x| x == 0.0)
}

#[test]
fn step0_gradients_are_exactly_zero_where_the_algebra_says() {
    let Some(dev) = device::device() else { return };
    let task = task(&dev.stream);

    // Init[A]: B = 0, so G = dY·B = 0 and dA = s·Gᵀ·X = 0 exactly; dB ≠ 0.
    let (a, b) = initial(&dev, InitScheme::PeftDefault);
    assert!(all_zero(&b) && !all_zero(&a));
    let (_, da, db) = loss_and_grads(&dev, &task, &adapter(&dev.stream, &a, &b, 2.0));
    assert!(all_zero(&dev.stream.clone_dtoh(&da).unwrap()), "Init[A]: dA must be exactly zero at step 0");
    assert!(!all_zero(&dev.stream.clone_dtoh(&db).unwrap()), "Init[A]: dB must not be zero at step 0");

    // Init[B]: A = 0, so P = X·Aᵀ = 0 and dB = s·dYᵀ·P = 0 exactly; dA ≠ 0.
    let (a, b) = initial(&dev, InitScheme::Reversed);
    assert!(all_zero(&a) && !all_zero(&b));
    let (_, da, db) = loss_and_grads(&dev, &task, &adapter(&dev.stream, &a, &b, 2.0));
    assert!(all_zero(&dev.stream.clone_dtoh(&db).unwrap()), "Init[B]: dB must be exactly zero at step 0");
    assert!(!all_zero(&dev.stream.clone_dtoh(&da).unwrap()), "Init[B]: dA must not be zero at step 0");
}

#[test]
fn both_zero_adapters_never_move() {
    let Some(dev) = device::device() else { return };
    let task = task(&dev.stream);
    let mut lora = adapter(&dev.stream, &vec![0.0; R * K], &vec![0.0; N * R], 2.0);
    let (mut state_a, mut state_b) =
        (SgdState::new(&dev.stream, R * K).unwrap(), SgdState::new(&dev.stream, N * R).unwrap());
    let config = SgdConfig::new(0.5);
    let mut losses = Vec::new();
    for _ in 0..STEPS {
        let (loss, da, db) = loss_and_grads(&dev, &task, &lora);
        losses.push(loss);
        dev.kernels.sgd_step(&dev.stream, &config, &mut lora.master_a, &mut lora.a, &da, &mut state_a).unwrap();
        dev.kernels.sgd_step(&dev.stream, &config, &mut lora.master_b, &mut lora.b, &db, &mut state_b).unwrap();
    }
    assert!(all_zero(&dev.stream.clone_dtoh(&lora.a).unwrap()) && all_zero(&dev.stream.clone_dtoh(&lora.b).unwrap()));
    assert!(losses.windows(2).all(|w| w[0].to_bits() == w[1].to_bits()), "the loss must stay flat: {losses:?}");
    assert!(losses[0] > 0.0, "the task must have something to learn");
}

enum Optimizer {
    Sgd { lr: f64 },
    Adam { lr: f64, eps: f64 },
}

/// Trains from `(a, b)` with scale `scale`; returns the losses and the final A, B.
fn trajectory(
    dev: &device::Device,
    task: &Task,
    a: &[f32],
    b: &[f32],
    scale: f32,
    optimizer: &Optimizer,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let stream = &dev.stream;
    let mut lora = adapter(stream, a, b, scale);
    let (mut sgd_a, mut sgd_b) = (SgdState::new(stream, R * K).unwrap(), SgdState::new(stream, N * R).unwrap());
    let (mut adam_a, mut adam_b) = (AdamWState::new(stream, R * K).unwrap(), AdamWState::new(stream, N * R).unwrap());
    let mut losses = Vec::with_capacity(STEPS);
    for _ in 0..STEPS {
        let (loss, da, db) = loss_and_grads(dev, task, &lora);
        losses.push(loss);
        match *optimizer {
            Optimizer::Sgd { lr } => {
                let config = SgdConfig::new(lr);
                dev.kernels.sgd_step(stream, &config, &mut lora.master_a, &mut lora.a, &da, &mut sgd_a).unwrap();
                dev.kernels.sgd_step(stream, &config, &mut lora.master_b, &mut lora.b, &db, &mut sgd_b).unwrap();
            }
            Optimizer::Adam { lr, eps } => {
                // No weight decay: decoupled decay is not part of the invariance.
                let config = AdamWConfig { lr, beta1: 0.9, beta2: 0.999, eps, weight_decay: 0.0 };
                dev.kernels.adamw_step(stream, &config, &mut lora.master_a, &mut lora.a, &da, &mut adam_a).unwrap();
                dev.kernels.adamw_step(stream, &config, &mut lora.master_b, &mut lora.b, &db, &mut adam_b).unwrap();
            }
        }
    }
    (losses, stream.clone_dtoh(&lora.a).unwrap(), stream.clone_dtoh(&lora.b).unwrap())
}

/// Runs the original and the substituted training and compares them bit for bit.
fn check_substitution(original: Optimizer, substituted: Optimizer) {
    let Some(dev) = device::device() else { return };
    let task = task(&dev.stream);
    let (a, b) = initial(&dev, InitScheme::PeftDefault);
    let k = 4.0f32;
    let (s, root_k) = (2.0f32, k.sqrt());
    let (losses, a_end, b_end) = trajectory(&dev, &task, &a, &b, s, &original);
    let a_sub: Vec<f32> = a.iter().map(|v| v / root_k).collect();
    let b_sub: Vec<f32> = b.iter().map(|v| v / root_k).collect();
    let (losses_sub, a_end_sub, b_end_sub) = trajectory(&dev, &task, &a_sub, &b_sub, s * k, &substituted);

    // The setup's sanity: the run really trains (an identity between two flat runs would be empty).
    assert!(losses[STEPS - 1] < 0.9 * losses[0], "training must make progress: {losses:?}");
    for (step, (l, l_sub)) in losses.iter().zip(&losses_sub).enumerate() {
        assert_eq!(l.to_bits(), l_sub.to_bits(), "step {step}: loss {l} vs substituted {l_sub}");
    }
    let halved = |orig: &[f32], sub: &[f32]| orig.iter().zip(sub).all(|(o, s)| (o / root_k).to_bits() == s.to_bits());
    assert!(halved(&a_end, &a_end_sub) && halved(&b_end, &b_end_sub), "A, B must stay exactly A/√k, B/√k");

    // The substitution is what makes them equal: the same scale change alone does not.
    let (losses_alpha_only, _, _) = trajectory(&dev, &task, &a, &b, s * k, &original);
    assert_ne!(losses_alpha_only, losses, "changing α alone must change the trajectory");
}

#[test]
fn sgd_trajectory_is_invariant_under_alpha_lr_init_substitution() {
    let lr = 1.0;
    check_substitution(Optimizer::Sgd { lr }, Optimizer::Sgd { lr: lr / 4.0 });
}

#[test]
fn adam_trajectory_is_invariant_under_alpha_sqrt_lr_init_substitution() {
    let (lr, eps) = (0.01, 1e-8);
    check_substitution(Optimizer::Adam { lr, eps }, Optimizer::Adam { lr: lr / 2.0, eps: eps * 2.0 });
}

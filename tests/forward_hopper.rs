//! The Hopper fused forward (`lora_forward_gemm_<T>_sm90a`: TMA, mbarriers,
//! wgmma) on a compute capability 9.0 device: the emulator presents itself
//! as one (`PTX_EMU_COMPUTE_CAPABILITY=90`, set here, with
//! `FUSED_LORA_HOPPER=1`), a GPU must be one
//! (else the tests skip, saying so). Ragged M, N and K (TMA's zero fill,
//! the epilogue's bounds), ranks shorter than one K-step, both half types,
//! against the f64 reference; bit-identical reruns; the kernel the launch
//! took; and that `FUSED_LORA_HOPPER=0` and a CC 8.0 device keep the
//! mma.sync kernel with results inside the same tolerance.

mod device;
mod forward_support;

use std::sync::Mutex;

use forward_support::{assert_close, download, poisoned, random, MultiCase};
use fused_lora::{ForwardOutput, LoraDType};

/// The tests of this binary change the process's environment (the device's
/// capability, the path override): one at a time.
static ENV: Mutex<()> = Mutex::new(());

/// (m, k, n, r, bias): M and N past whole 128 x 256 tiles, K past whole
/// 64-long steps (K = 136: two steps and 8 columns), ranks of 8 to 64, an
/// odd N (element stores), and K short enough that the mma.sync path would
/// not split it (the Hopper kernel takes only unsplit launches).
const CASES: &[(usize, usize, usize, usize, bool)] =
    &[(131, 136, 200, 16, true), (64, 72, 136, 8, false), (200, 64, 72, 24, true), (129, 200, 129, 64, true)];

fn case<T: LoraDType>(m: usize, k: usize, n: usize, r: usize, bias: bool, seed: u64) -> MultiCase<T> {
    MultiCase {
        m,
        k,
        n,
        r_max: r,
        x: random(seed, m * k),
        w: random(seed + 1, n * k),
        bias: bias.then(|| random(seed + 2, n)),
        a: random(seed + 3, r * k),
        b: random(seed + 4, n * r),
        ranks: vec![r],
        scales: vec![-0.625],
        index: vec![0; m],
    }
}

/// Runs `forward` on the case; returns (P, Y, the fused launch's kernel on the emulator).
fn run<T: LoraDType>(dev: &device::Device, case: &MultiCase<T>) -> (Vec<T>, Vec<T>, Option<String>) {
    let stream = &dev.stream;
    let (m, k, n, r) = (case.m, case.k, case.n, case.r_max);
    let on = case.upload(stream);
    let mut y = poisoned::<T>(stream, m * n);
    let mut p = poisoned::<T>(stream, m * r);
    let linear = on.linear(n, k);
    let adapter = on.adapter(case);
    let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
    dev.kernels.forward(stream, &on.x.as_view(), &linear, &adapter, None, &mut out).expect("forward");
    let kernel = device::last_launch_counters().map(|c| c["kernel"].as_str().unwrap_or_default().to_string());
    (download(stream, &p), download(stream, &y), kernel)
}

fn ragged_shapes_against_the_reference<T: LoraDType>() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device::device_as("90") else { return };
    let hopper = format!("lora_forward_gemm_{}_sm90a", T::DTYPE.kernel_suffix());
    for (i, &(m, k, n, r, bias)) in CASES.iter().enumerate() {
        let case = case::<T>(m, k, n, r, bias, 900 + 10 * i as u64);
        let (p, y, kernel) = run(&dev, &case);
        let what = format!("m={m} k={k} n={n} r={r} bias={bias}");
        if let Some(kernel) = kernel {
            assert_eq!(kernel, hopper, "{what}: the fused launch on a 9.0 device");
        }
        assert_close(&format!("P {what}"), &p, &case.p_reference());
        assert_close(&format!("Y {what}"), &y, &case.y_reference(&p));
    }
}

/// Two runs give the same bits; the mma.sync path (`FUSED_LORA_HOPPER=0`,
/// and a CC 8.0 device) meets the same tolerance on the same case.
fn deterministic_and_overridable<T: LoraDType>() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device::device_as("90") else { return };
    let case = case::<T>(131, 136, 200, 16, true, 950);
    let (p, first, _) = run(&dev, &case);
    let (_, second, _) = run(&dev, &case);
    assert_eq!(first, second, "two runs of the Hopper kernel differ");
    assert_close("Y", &first, &case.y_reference(&p));

    let mma_sync = format!("lora_forward_gemm_{}", T::DTYPE.kernel_suffix());
    std::env::set_var(fused_lora::HOPPER_ENV, "0");
    let (p, y, kernel) = run(&dev, &case);
    std::env::set_var(fused_lora::HOPPER_ENV, "1");
    if let Some(kernel) = kernel {
        assert!(kernel.starts_with(&mma_sync) && !kernel.ends_with("_sm90a"), "FUSED_LORA_HOPPER=0 took {kernel}");
    }
    assert_close("Y with FUSED_LORA_HOPPER=0", &y, &case.y_reference(&p));

    if device::is_emulator() {
        // A fresh context's kernels on the device presenting 8.0: the sm_90a
        // module is never loaded there.
        let Some(dev) = device::device_as("80") else { return };
        let (p, y, kernel) = run(&dev, &case);
        let kernel = kernel.expect("the emulator reports the kernel");
        assert!(kernel.starts_with(&mma_sync) && !kernel.ends_with("_sm90a"), "CC 8.0 took {kernel}");
        assert_close("Y on CC 8.0", &y, &case.y_reference(&p));
    }
}

#[test]
fn ragged_shapes_against_the_reference_f16() {
    ragged_shapes_against_the_reference::<half::f16>();
}

#[test]
fn ragged_shapes_against_the_reference_bf16() {
    ragged_shapes_against_the_reference::<half::bf16>();
}

#[test]
fn deterministic_and_overridable_f16() {
    deterministic_and_overridable::<half::f16>();
}

#[test]
fn deterministic_and_overridable_bf16() {
    deterministic_and_overridable::<half::bf16>();
}

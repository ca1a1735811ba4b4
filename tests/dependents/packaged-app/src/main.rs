//! One SGD step with the packaged crate's shipped PTX, checked exactly:
//! `w − lr·g` with values whose products and differences are exact in f32.

use cudarc::driver::CudaContext;
use fused_lora::{LoraKernels, SgdConfig, SgdState};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = CudaContext::new(0)?;
    let stream = ctx.default_stream();
    let kernels = LoraKernels::new(&ctx);

    let weights = [1.0f32, 2.0, 3.0, 4.0, 5.0, -6.0, 0.25];
    let grad = [2.0f32, -2.0, 0.5, 0.0, 8.0, 1.0, -0.5];
    let lr = 0.5;
    let expected: Vec<f32> = weights.iter().zip(&grad).map(|(w, g)| w - 0.5 * g).collect();

    let mut master = stream.clone_htod(&weights)?;
    // Poisoned, so an element the kernel does not write fails the check.
    let mut working = stream.clone_htod(&[f32::NAN; 7])?;
    let grad = stream.clone_htod(&grad)?;
    let mut state = SgdState::new(&stream, weights.len())?;
    kernels.sgd_step(&stream, &SgdConfig::new(lr), &mut master, &mut working, &grad, &mut state)?;

    let master = stream.clone_dtoh(&master)?;
    let working = stream.clone_dtoh(&working)?;
    if master != expected || working != expected {
        return Err(format!("sgd_step: expected {expected:?}, got master {master:?}, working {working:?}").into());
    }
    println!("sgd_step on the packaged crate: {master:?}");
    Ok(())
}

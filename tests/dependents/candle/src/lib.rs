//! One SGD step of fused-lora run on candle's CUDA stream: compiles only if
//! both crates use the same cudarc (candle's `CudaStream` goes straight into
//! fused-lora's API).

use candle_core::cuda_backend::cudarc::driver::CudaSlice;
use candle_core::cuda_backend::CudaDevice;
use fused_lora::{LoraKernels, SgdConfig, SgdState};

/// `weights ← weights − lr · grad` with fused-lora's optimizer kernel, on the
/// stream of candle's `device`; returns the updated weights.
pub fn sgd_step_on_candle_stream(
    device: &CudaDevice,
    weights: &[f32],
    grad: &[f32],
    lr: f64,
) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let stream = device.cuda_stream();
    let kernels = LoraKernels::new(stream.context());
    let mut master: CudaSlice<f32> = stream.clone_htod(weights)?;
    let mut working: CudaSlice<f32> = stream.alloc_zeros(weights.len())?;
    let grad: CudaSlice<f32> = stream.clone_htod(grad)?;
    let mut state = SgdState::new(&stream, weights.len())?;
    kernels.sgd_step(&stream, &SgdConfig::new(lr), &mut master, &mut working, &grad, &mut state)?;
    Ok(stream.clone_dtoh(&master)?)
}

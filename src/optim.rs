//! Fused optimizer steps for mixed-precision training of A and B.
//!
//! Each parameter tensor lives twice: f32 **master** weights, which the
//! optimizer updates, and a **working copy** in `T` (f32, f16 or bf16), which
//! the forward and backward kernels read. One kernel pass reads the master,
//! the gradient and the optimizer state, writes the new master and state, and
//! refreshes the working copy as `round_T(new master)`, so the copy can never
//! go stale and costs no second pass.
//!
//! - [`LoraKernels::sgd_step`]: `torch.optim.SGD` (momentum, dampening,
//!   Nesterov, coupled weight decay).
//! - [`LoraKernels::adamw_step`]: `torch.optim.AdamW` (bias correction,
//!   decoupled weight decay `w ← w·(1 − lr·wd)`, ε added to `√v̂`).
//!
//! The gradient's type `G` is any of f32, f16, bf16, independent of `T`:
//! `T` itself as the backward kernels write it, or f32 from a gradient
//! accumulation buffer; it is inferred from the `grad` argument.
//!
//! All arithmetic is f32 on the device; the scalars that depend on the step
//! count (bias corrections) are computed on the host in f64, as PyTorch
//! computes them in Python floats, and rounded once to f32. The state
//! (momentum buffer, Adam's `m` and `v`) is f32.
//!
//! Call the step once per tensor (A, then B, of every adapter); each call is
//! one launch, stream-ordered.
//!
//! ```
//! use fused_lora::cudarc::driver::CudaContext;
//! use fused_lora::{AdamWConfig, AdamWState, LoraKernels};
//! use fused_lora::half::bf16;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // Without a CUDA driver (plain `cargo test` on a machine without one) there is nothing to run.
//! # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
//! let ctx = CudaContext::new(0)?;
//! let stream = ctx.default_stream();
//! let kernels = LoraKernels::new(&ctx);
//!
//! let (r, k) = (16, 256);
//! let mut a_master = stream.alloc_zeros::<f32>(r * k)?; // A [r, K], f32 master
//! let mut a = stream.alloc_zeros::<bf16>(r * k)?; // the bf16 copy the kernels read
//! let grad_a = stream.alloc_zeros::<bf16>(r * k)?; // dA from the backward pass
//! let mut state = AdamWState::new(&stream, r * k)?;
//! let config = AdamWConfig::new(1e-4);
//!
//! kernels.adamw_step(&stream, &config, &mut a_master, &mut a, &grad_a, &mut state)?;
//! assert_eq!(state.step(), 1);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use cudarc::driver::{
    CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, DeviceSlice, LaunchConfig, PushKernelArg,
};

use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::kernels::{LoraKernels, OPTIM};
use crate::params::{LoraAdamWParams, LoraSgdParams, LORA_OPTIM_THREADS, LORA_OPTIM_VECTOR};
use crate::validate::{check_context, check_disjoint, check_len, f32_param, non_negative_f32_param, Span};

// SAFETY: plain `#[repr(C)]` structs of integers and floats, generated from
// the C header the kernels include.
unsafe impl DeviceRepr for LoraSgdParams {}
unsafe impl DeviceRepr for LoraAdamWParams {}

/// About one wave of 256-thread CTAs on an A100/H100 (108/132 SMs of 2048
/// threads); larger tensors loop (grid-stride) instead of launching more.
const MAX_BLOCKS: u64 = 1024;

/// `torch.optim.SGD`'s hyper-parameters. Per step, with `g` the gradient:
///
/// ```text
/// g ← g + weight_decay·w
/// b ← g (first step) or momentum·b + (1 − dampening)·g      (if momentum ≠ 0)
/// g ← g + momentum·b (Nesterov) or b                          (if momentum ≠ 0)
/// w ← w − lr·g
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: none).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// Weight decay (L2 penalty, coupled).
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl SgdConfig {
    /// Plain SGD: no momentum, no weight decay.
    pub fn new(lr: f64) -> Self {
        SgdConfig { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }

    /// SGD with heavy-ball momentum (no dampening, no weight decay, not Nesterov).
    pub fn with_momentum(lr: f64, momentum: f64) -> Self {
        SgdConfig { momentum, ..SgdConfig::new(lr) }
    }

    /// Checks the ranges PyTorch checks, plus finiteness in f32, the
    /// precision the kernel computes in (an `lr` of 1e39 is a finite f64 but
    /// would be an infinite f32).
    ///
    /// # Errors
    /// [`LoraError::InvalidArgument`] for a value that is not finite as an
    /// f32, a negative `lr`, `momentum` or `weight_decay`, or Nesterov without
    /// momentum or with dampening.
    pub fn validate(&self) -> Result<()> {
        non_negative_f32_param("lr", self.lr)?;
        non_negative_f32_param("momentum", self.momentum)?;
        f32_param("dampening", self.dampening)?;
        f32_param("1 - dampening", 1.0 - self.dampening)?;
        non_negative_f32_param("weight_decay", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(LoraError::InvalidArgument {
                what: "nesterov",
                value: format!("momentum {}, dampening {}", self.momentum, self.dampening),
                reason: "Nesterov momentum needs momentum > 0 and dampening = 0",
            });
        }
        Ok(())
    }
}

/// `torch.optim.AdamW`'s hyper-parameters. Per step `t = 1, 2, …`:
///
/// ```text
/// w ← w·(1 − lr·weight_decay)
/// m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²
/// w ← w − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// β1, the first moment's decay.
    pub beta1: f64,
    /// β2, the second moment's decay.
    pub beta2: f64,
    /// ε, added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8, weight decay 0.01.
    pub fn new(lr: f64) -> Self {
        AdamWConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }

    /// Checks the ranges PyTorch checks, plus finiteness in f32 of every
    /// value and of the scalars the kernel receives: the decay factor
    /// `1 − lr·weight_decay` and the largest step size `lr / (1 − β1)`.
    ///
    /// # Errors
    /// [`LoraError::InvalidArgument`] for a value that is not finite as an
    /// f32 (alone or in those two scalars), a negative `lr`, `eps` or
    /// `weight_decay`, or a β outside `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        non_negative_f32_param("lr", self.lr)?;
        for (what, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(LoraError::InvalidArgument { what, value: beta.to_string(), reason: "must be in [0, 1)" });
            }
        }
        non_negative_f32_param("eps", self.eps)?;
        non_negative_f32_param("weight_decay", self.weight_decay)?;
        self.decay()?;
        // The bias correction 1 − β1ᵗ is smallest at t = 1.
        self.step_size(1.0 - self.beta1)?;
        Ok(())
    }

    /// `1 − lr·weight_decay` as the kernel's f32.
    fn decay(&self) -> Result<f32> {
        f32_param("1 - lr * weight_decay", 1.0 - self.lr * self.weight_decay)
    }

    /// `lr / bias_correction1` as the kernel's f32.
    fn step_size(&self, bias_correction1: f64) -> Result<f32> {
        f32_param("lr / (1 - beta1^t)", self.lr / bias_correction1)
    }
}

/// SGD's per-tensor state: the f32 momentum buffer, started by the first
/// step taken with a non-zero momentum (as PyTorch creates it).
pub struct SgdState {
    momentum_buffer: CudaSlice<f32>,
    started: bool,
}

impl SgdState {
    /// State for a tensor of `len` elements, on `stream`'s context.
    ///
    /// # Errors
    /// [`LoraError::InvalidArgument`] if `len` is 0 (an empty tensor has
    /// nothing to optimise); [`LoraError::Driver`] if the allocation fails.
    pub fn new(stream: &Arc<CudaStream>, len: usize) -> Result<Self> {
        check_state_len(len)?;
        Ok(SgdState { momentum_buffer: stream.alloc_zeros(len)?, started: false })
    }

    /// The number of elements of the tensor this state belongs to.
    pub fn len(&self) -> usize {
        self.momentum_buffer.len()
    }

    /// Never true: a state is for at least one element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The momentum buffer `b` (zeros until a step with momentum ran).
    pub fn momentum_buffer(&self) -> &CudaSlice<f32> {
        &self.momentum_buffer
    }
}

/// AdamW's per-tensor state: the f32 moments `m`, `v` and the step count.
pub struct AdamWState {
    exp_avg: CudaSlice<f32>,
    exp_avg_sq: CudaSlice<f32>,
    step: u64,
}

impl AdamWState {
    /// Zero moments for a tensor of `len` elements, on `stream`'s context.
    ///
    /// # Errors
    /// [`LoraError::InvalidArgument`] if `len` is 0 (an empty tensor has
    /// nothing to optimise); [`LoraError::Driver`] if an allocation fails.
    pub fn new(stream: &Arc<CudaStream>, len: usize) -> Result<Self> {
        check_state_len(len)?;
        Ok(AdamWState { exp_avg: stream.alloc_zeros(len)?, exp_avg_sq: stream.alloc_zeros(len)?, step: 0 })
    }

    /// The number of elements of the tensor this state belongs to.
    pub fn len(&self) -> usize {
        self.exp_avg.len()
    }

    /// Never true: a state is for at least one element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Steps taken so far (`t` of the last step).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The first moment `m`.
    pub fn exp_avg(&self) -> &CudaSlice<f32> {
        &self.exp_avg
    }

    /// The second moment `v`.
    pub fn exp_avg_sq(&self) -> &CudaSlice<f32> {
        &self.exp_avg_sq
    }
}

impl LoraKernels {
    /// One SGD step over a tensor, in one pass: updates `master` and the
    /// momentum buffer from `grad`, and writes `working = round_T(master)`.
    ///
    /// # Arguments
    /// - `master`: `[len]` f32 master weights, updated in place;
    /// - `working`: `[len]` the working copy, overwritten;
    /// - `grad`: `[len]` the gradient of the working copy, in `T` or any other
    ///   supported type `G`;
    /// - `state`: [`SgdState::new`] for this tensor, carried across steps.
    ///
    /// # Errors
    /// - [`LoraError::InvalidArgument`] from [`SgdConfig::validate`];
    /// - [`LoraError::ShapeMismatch`] if a length differs from `master`'s;
    /// - [`LoraError::ContextMismatch`] for a buffer of another context;
    /// - [`LoraError::Aliasing`] if two of the buffers overlap;
    /// - [`LoraError::Driver`] from the launch.
    ///
    /// # Example
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
    /// # let ctx = fused_lora::cudarc::driver::CudaContext::new(0)?;
    /// # let stream = ctx.default_stream();
    /// # let kernels = fused_lora::LoraKernels::new(&ctx);
    /// use fused_lora::half::bf16;
    /// use fused_lora::{SgdConfig, SgdState};
    ///
    /// let len = 64;
    /// let mut master = stream.clone_htod(&vec![1.0f32; len])?;
    /// let mut working = stream.alloc_zeros::<bf16>(len)?;
    /// let grad = stream.clone_htod(&vec![bf16::from_f32(0.5); len])?;
    /// let mut state = SgdState::new(&stream, len)?;
    /// kernels.sgd_step(&stream, &SgdConfig::with_momentum(0.5, 0.9), &mut master, &mut working, &grad, &mut state)?;
    /// assert!(stream.clone_dtoh(&master)?.iter().all(|&w| w == 0.75)); // 1 − 0.5·0.5
    /// # Ok(())
    /// # }
    /// ```
    pub fn sgd_step<T: LoraDType, G: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        config: &SgdConfig,
        master: &mut impl DevicePtrMut<f32>,
        working: &mut impl DevicePtrMut<T>,
        grad: &impl DevicePtr<G>,
        state: &mut SgdState,
    ) -> Result<()> {
        config.validate()?;
        self.check_stream(stream)?;
        let len = master.len();
        check_tensor(stream, "master", master, len)?;
        check_tensor(stream, "working", working, len)?;
        check_tensor(stream, "grad", grad, len)?;
        check_tensor(stream, "state", &state.momentum_buffer, len)?;
        // The state's length is never 0 (`SgdState::new`), so neither is `len`.
        let use_buffer = config.momentum != 0.0;

        let (master_ptr, _master_guard) = master.device_ptr_mut(stream);
        let (working_ptr, _working_guard) = working.device_ptr_mut(stream);
        let (grad_ptr, _grad_guard) = grad.device_ptr(stream);
        let (buffer_ptr, _buffer_guard) = state.momentum_buffer.device_ptr_mut(stream);
        let mut spans = vec![
            Span::of::<f32>("master", master_ptr, len),
            Span::of::<T>("working", working_ptr, len),
            Span::of::<G>("grad", grad_ptr, len),
        ];
        if use_buffer {
            spans.push(Span::of::<f32>("state", buffer_ptr, len));
        }
        check_disjoint(&spans)?;

        let params = LoraSgdParams {
            master: master_ptr,
            working: working_ptr,
            grad: grad_ptr,
            momentum_buffer: buffer_ptr,
            len: len as u64,
            lr: config.lr as f32,
            momentum: config.momentum as f32,
            one_minus_dampening: (1.0 - config.dampening) as f32,
            weight_decay: config.weight_decay as f32,
            nesterov: config.nesterov as i32,
            first_step: (!state.started) as i32,
        };
        let function = self.function(OPTIM, &kernel_name::<T, G>("sgd_step"))?;
        let mut launch = stream.launch_builder(&function);
        launch.arg(&params);
        // SAFETY: every pointer comes from a live buffer of this context
        // holding `len` elements of its type (f32 for master and state, `T`
        // for working, `G` for grad: the types the kernel's name names);
        // the buffers the kernel writes overlap nothing else it touches
        // (`check_disjoint`); the kernel reads and writes indices below `len`
        // only, and reads the buffer only when it was started.
        unsafe { launch.launch(launch_config(len)) }?;
        state.started |= use_buffer;
        Ok(())
    }

    /// One AdamW step over a tensor, in one pass: updates `master`, `m` and
    /// `v` from `grad`, and writes `working = round_T(master)`. The step
    /// count `t` is the state's, plus one.
    ///
    /// # Arguments
    /// As [`LoraKernels::sgd_step`], with `state` from [`AdamWState::new`].
    ///
    /// # Errors
    /// As [`LoraKernels::sgd_step`], with [`AdamWConfig::validate`].
    pub fn adamw_step<T: LoraDType, G: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        config: &AdamWConfig,
        master: &mut impl DevicePtrMut<f32>,
        working: &mut impl DevicePtrMut<T>,
        grad: &impl DevicePtr<G>,
        state: &mut AdamWState,
    ) -> Result<()> {
        config.validate()?;
        self.check_stream(stream)?;
        let len = master.len();
        check_tensor(stream, "master", master, len)?;
        check_tensor(stream, "working", working, len)?;
        check_tensor(stream, "grad", grad, len)?;
        check_tensor(stream, "state", &state.exp_avg, len)?;
        check_tensor(stream, "state", &state.exp_avg_sq, len)?;
        // The state's length is never 0 (`AdamWState::new`), so neither is `len`.
        let step = state.step + 1;

        // As PyTorch: Python floats (f64) for everything that depends on t.
        let t = i32::try_from(step).unwrap_or(i32::MAX);
        let bias_correction1 = 1.0 - config.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - config.beta2.powi(t)).sqrt();
        let step_size = config.step_size(bias_correction1)?;
        let decay = config.decay()?;

        let (master_ptr, _master_guard) = master.device_ptr_mut(stream);
        let (working_ptr, _working_guard) = working.device_ptr_mut(stream);
        let (grad_ptr, _grad_guard) = grad.device_ptr(stream);
        let (m_ptr, _m_guard) = state.exp_avg.device_ptr_mut(stream);
        let (v_ptr, _v_guard) = state.exp_avg_sq.device_ptr_mut(stream);
        check_disjoint(&[
            Span::of::<f32>("master", master_ptr, len),
            Span::of::<T>("working", working_ptr, len),
            Span::of::<G>("grad", grad_ptr, len),
            Span::of::<f32>("state", m_ptr, len),
            Span::of::<f32>("state", v_ptr, len),
        ])?;

        let params = LoraAdamWParams {
            master: master_ptr,
            working: working_ptr,
            grad: grad_ptr,
            exp_avg: m_ptr,
            exp_avg_sq: v_ptr,
            len: len as u64,
            decay,
            beta1: config.beta1 as f32,
            one_minus_beta1: (1.0 - config.beta1) as f32,
            beta2: config.beta2 as f32,
            one_minus_beta2: (1.0 - config.beta2) as f32,
            step_size,
            bias_correction2_sqrt: bias_correction2_sqrt as f32,
            eps: config.eps as f32,
        };
        let function = self.function(OPTIM, &kernel_name::<T, G>("adamw_step"))?;
        let mut launch = stream.launch_builder(&function);
        launch.arg(&params);
        // SAFETY: as in `sgd_step`: live buffers of this context, `len`
        // elements each, of the types the kernel was stamped for, the written
        // ones disjoint from everything else; the kernel stays below `len`.
        unsafe { launch.launch(launch_config(len)) }?;
        state.step = step;
        Ok(())
    }
}

/// `lora_<op>_<T>_grad_<G>`, as `cuda/optim.cu` stamps them.
fn kernel_name<T: LoraDType, G: LoraDType>(op: &str) -> String {
    format!("lora_{op}_{}_grad_{}", T::DTYPE.kernel_suffix(), G::DTYPE.kernel_suffix())
}

fn launch_config(len: usize) -> LaunchConfig {
    let threads = LORA_OPTIM_THREADS as u64;
    let packs = (len as u64).div_ceil(LORA_OPTIM_VECTOR as u64);
    let blocks = packs.div_ceil(threads).clamp(1, MAX_BLOCKS);
    LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (LORA_OPTIM_THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// Optimizer state exists for tensors of at least one element.
fn check_state_len(len: usize) -> Result<()> {
    if len == 0 {
        return Err(LoraError::InvalidArgument {
            what: "len",
            value: "0".into(),
            reason: "optimizer state is for a tensor of at least one element",
        });
    }
    Ok(())
}

/// A tensor argument must hold `len` elements and live in `stream`'s context
/// (the driver's context: a second `CudaContext` handle on the same primary
/// context is the same context).
fn check_tensor<E>(
    stream: &Arc<CudaStream>,
    what: &'static str,
    buffer: &impl DeviceSlice<E>,
    len: usize,
) -> Result<()> {
    check_context(stream, what, buffer.stream())?;
    check_len(what, buffer.len(), &[len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_follow_the_stamps() {
        assert_eq!(kernel_name::<half::bf16, f32>("adamw_step"), "lora_adamw_step_bf16_grad_f32");
        assert_eq!(kernel_name::<f32, half::f16>("sgd_step"), "lora_sgd_step_f32_grad_f16");
    }

    #[test]
    fn launch_covers_small_tensors_and_caps_the_grid() {
        let per_block = (LORA_OPTIM_THREADS * LORA_OPTIM_VECTOR) as usize;
        for len in [1, 4, 5, per_block - 1, per_block, per_block + 1, 3 * per_block + 7] {
            let blocks = launch_config(len).grid_dim.0 as usize;
            assert!(blocks * per_block >= len, "len {len}: {blocks} blocks leave elements out");
            assert!((blocks - 1) * per_block < len, "len {len}: {blocks} blocks, one would be idle");
        }
        // Past the cap the kernel's grid-stride loop takes over.
        assert_eq!(launch_config(usize::MAX / 8).grid_dim.0 as u64, MAX_BLOCKS);
    }
}

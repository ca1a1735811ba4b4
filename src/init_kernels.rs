//! Adapter initialisation on the device: the schemes of [`InitScheme`], drawn
//! from Philox-4x32-10 and **bit-identical** to the CPU reference
//! ([`crate::reference`]'s `init` and `philox` modules, whose docs specify the
//! arithmetic step by step).
//!
//! Element `i` of a matrix filled from stream `(seed, offset)` depends on
//! `(seed, offset, i)` only, not on the launch shape, so the same call gives
//! the same matrix on every GPU, and on the emulator.
//!
//! ```
//! use fused_lora::cudarc::driver::CudaContext;
//! use fused_lora::{InitScheme, LoraKernels};
//! use fused_lora::half::bf16;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // Without a CUDA driver (plain `cargo test` on a machine without one) there is nothing to run.
//! # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
//! let ctx = CudaContext::new(0)?;
//! let stream = ctx.default_stream();
//! let kernels = LoraKernels::new(&ctx);
//!
//! let (r, k, n) = (16, 256, 128);
//! let mut a = stream.alloc_zeros::<bf16>(r * k)?; // A [r, K]
//! let mut b = stream.alloc_zeros::<bf16>(n * r)?; // B [N, r]
//! // PEFT's default: A ~ U(-1/sqrt(K), 1/sqrt(K)) from stream (seed 42, offset 0), B = 0.
//! kernels.init_adapter(&stream, InitScheme::PeftDefault, r, k, n, 42, 0, &mut a, &mut b)?;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use cudarc::driver::{CudaStream, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::dtype::LoraDType;
use crate::error::Result;
use crate::init::{Distribution, InitScheme};
use crate::kernels::{LoraKernels, INIT};
use crate::params::{LoraFillParams, LORA_INIT_THREADS};
use crate::validate::{check_context, check_dim, check_disjoint, check_len, non_negative_f32_param, Span};

// SAFETY: a plain `#[repr(C)]` struct of integers and floats, generated from
// the C header the kernels include.
unsafe impl DeviceRepr for LoraFillParams {}

/// Elements drawn per thread and loop iteration: one Philox call.
const ELEMENTS_PER_THREAD: u64 = 4;
/// About one wave of 256-thread CTAs on an A100/H100 (108/132 SMs of 2048
/// threads); larger tensors loop (grid-stride) instead of launching more.
const MAX_BLOCKS: u64 = 1024;

/// Which random fill kernel to run.
#[derive(Clone, Copy, Debug)]
enum Fill {
    Uniform,
    Normal,
}

impl Fill {
    fn kernel_name(self, suffix: &str) -> String {
        match self {
            Fill::Uniform => format!("lora_fill_uniform_{suffix}"),
            Fill::Normal => format!("lora_fill_normal_{suffix}"),
        }
    }
}

impl LoraKernels {
    /// Fills `out` with `U(−bound, bound)`: element `i` is `(2u − 1)·bound`
    /// in f32 (`bound` rounded to f32 first), `u` the Philox uniform of
    /// `(seed, offset, i)`, rounded to `T`.
    ///
    /// # Errors
    /// [`LoraError::InvalidArgument`](crate::LoraError::InvalidArgument) if `bound` is negative or not finite as
    /// an f32 (the precision the draw is made in);
    /// [`LoraError::ContextMismatch`](crate::LoraError::ContextMismatch) if `out` or `stream` belongs to another
    /// context; [`LoraError::Driver`](crate::LoraError::Driver) from the launch.
    ///
    /// # Example
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
    /// # let ctx = fused_lora::cudarc::driver::CudaContext::new(0)?;
    /// # let stream = ctx.default_stream();
    /// # let kernels = fused_lora::LoraKernels::new(&ctx);
    /// let mut out = stream.alloc_zeros::<f32>(1000)?;
    /// kernels.fill_uniform(&stream, &mut out, 0.5, 42, 0)?;
    /// let host = stream.clone_dtoh(&out)?;
    /// assert!(host.iter().all(|v| v.abs() <= 0.5));
    /// assert_eq!(host, fused_lora::reference::init_matrix::<f32>(fused_lora::Distribution::Uniform { bound: 0.5 }, 1000, 42, 0)?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn fill_uniform<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut impl DevicePtrMut<T>,
        bound: f64,
        seed: u64,
        offset: u64,
    ) -> Result<()> {
        self.fill_named(stream, "out", out, Distribution::Uniform { bound }, seed, offset)
    }

    /// Fills `out` with `N(0, std²)`: element `i` is the Box–Muller deviate of
    /// `(seed, offset, i)` computed in f64, times `std` in f64, rounded to f32
    /// and then to `T`. Elements `2j` and `2j + 1` share one pair of uniforms
    /// (`r·cos θ` and `r·sin θ`).
    ///
    /// # Errors
    /// As [`LoraKernels::fill_uniform`], for `std` (the deviates are rounded
    /// to f32, so a `std` beyond f32's range could only give infinities).
    ///
    /// # Example
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
    /// # let ctx = fused_lora::cudarc::driver::CudaContext::new(0)?;
    /// # let stream = ctx.default_stream();
    /// # let kernels = fused_lora::LoraKernels::new(&ctx);
    /// let mut out = stream.alloc_zeros::<f32>(1000)?;
    /// kernels.fill_normal(&stream, &mut out, 0.02, 7, 3)?;
    /// assert_eq!(stream.clone_dtoh(&out)?, fused_lora::reference::init_matrix::<f32>(fused_lora::Distribution::Normal { std: 0.02 }, 1000, 7, 3)?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn fill_normal<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut impl DevicePtrMut<T>,
        std: f64,
        seed: u64,
        offset: u64,
    ) -> Result<()> {
        self.fill_named(stream, "out", out, Distribution::Normal { std }, seed, offset)
    }

    /// Fills `out` from `distribution` (zero is a memset; the others as
    /// [`LoraKernels::fill_uniform`] and [`LoraKernels::fill_normal`]).
    ///
    /// # Errors
    /// As [`LoraKernels::fill_uniform`].
    ///
    /// # Example
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
    /// # let ctx = fused_lora::cudarc::driver::CudaContext::new(0)?;
    /// # let stream = ctx.default_stream();
    /// # let kernels = fused_lora::LoraKernels::new(&ctx);
    /// let mut out = stream.clone_htod(&vec![1.0f32; 64])?;
    /// kernels.fill(&stream, &mut out, fused_lora::Distribution::Zero, 0, 0)?;
    /// assert!(stream.clone_dtoh(&out)?.iter().all(|&v| v == 0.0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn fill<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut impl DevicePtrMut<T>,
        distribution: Distribution,
        seed: u64,
        offset: u64,
    ) -> Result<()> {
        self.fill_named(stream, "out", out, distribution, seed, offset)
    }

    /// [`LoraKernels::fill`] of the buffer the caller calls `what` (errors name it).
    fn fill_named<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        what: &'static str,
        out: &mut impl DevicePtrMut<T>,
        distribution: Distribution,
        seed: u64,
        offset: u64,
    ) -> Result<()> {
        let fill = FillSpread::of(distribution)?;
        self.check_stream(stream)?;
        check_context(stream, what, out.stream())?;
        match fill {
            FillSpread::Zero => {
                if !out.is_empty() {
                    stream.memset_zeros(out)?;
                }
                Ok(())
            }
            FillSpread::Uniform(bound) => self.launch_fill(stream, out, Fill::Uniform, bound, 0.0, seed, offset),
            FillSpread::Normal(std) => self.launch_fill(stream, out, Fill::Normal, 0.0, std, seed, offset),
        }
    }

    /// Initialises an adapter with `scheme`: A `[rank, k]` from stream
    /// `offset`, B `[n, rank]` from stream `offset + 1` (wrapping), so the two
    /// never share random numbers. The matrix the scheme makes zero is
    /// exactly zero.
    ///
    /// # Arguments
    /// - `a`: `[rank, k]` (`lora_A.weight`), `b`: `[n, rank]` (`lora_B.weight`);
    ///   each holds exactly its shape's elements.
    ///
    /// # Errors
    /// [`LoraError::InvalidArgument`](crate::LoraError::InvalidArgument) if `rank` or `k` is 0;
    /// [`LoraError::ShapeMismatch`](crate::LoraError::ShapeMismatch) if a buffer's length is not its shape's;
    /// [`LoraError::Aliasing`](crate::LoraError::Aliasing) if A and B overlap; otherwise as
    /// [`LoraKernels::fill_uniform`], naming `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    pub fn init_adapter<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        scheme: InitScheme,
        rank: usize,
        k: usize,
        n: usize,
        seed: u64,
        offset: u64,
        a: &mut impl DevicePtrMut<T>,
        b: &mut impl DevicePtrMut<T>,
    ) -> Result<()> {
        check_dim("rank", rank)?;
        check_dim("k", k)?;
        self.check_stream(stream)?;
        check_context(stream, "a", a.stream())?;
        check_context(stream, "b", b.stream())?;
        check_len("a", a.len(), &[rank, k])?;
        check_len("b", b.len(), &[n, rank])?;
        let (a_len, b_len) = (a.len(), b.len());
        let a_span = {
            let (address, _guard) = a.device_ptr_mut(stream);
            Span::of::<T>("a", address, a_len)
        };
        let b_span = {
            let (address, _guard) = b.device_ptr_mut(stream);
            Span::of::<T>("b", address, b_len)
        };
        check_disjoint(&[a_span, b_span])?;
        let (dist_a, dist_b) = scheme.distributions(rank, k);
        self.fill_named(stream, "a", a, dist_a, seed, offset)?;
        self.fill_named(stream, "b", b, dist_b, seed, offset.wrapping_add(1))
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_fill<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut impl DevicePtrMut<T>,
        fill: Fill,
        bound: f32,
        std_dev: f64,
        seed: u64,
        offset: u64,
    ) -> Result<()> {
        let len = out.len() as u64;
        if len == 0 {
            return Ok(());
        }
        let function = self.function(INIT, &fill.kernel_name(T::DTYPE.kernel_suffix()))?;
        let threads = LORA_INIT_THREADS as u64;
        let blocks = len.div_ceil(ELEMENTS_PER_THREAD).div_ceil(threads).min(MAX_BLOCKS);
        let config =
            LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (LORA_INIT_THREADS, 1, 1), shared_mem_bytes: 0 };
        let (out_ptr, _out_guard) = out.device_ptr_mut(stream);
        let params = LoraFillParams { out: out_ptr, len, seed, offset, bound, reserved: 0, std_dev };
        let mut launch = stream.launch_builder(&function);
        launch.arg(&params);
        // SAFETY: `out_ptr` is a live buffer of this context holding `len`
        // elements of `T` (the type the kernel's name was derived from); the
        // kernel writes only indices below `len` and reads nothing.
        unsafe { launch.launch(config) }?;
        Ok(())
    }
}

/// A distribution's spread as the kernels take it, validated: a bound the
/// draw multiplies in f32, a std it multiplies in f64 before rounding to f32.
/// Both must be non-negative and finite as f32s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum FillSpread {
    Zero,
    Uniform(f32),
    Normal(f64),
}

impl FillSpread {
    pub(crate) fn of(distribution: Distribution) -> Result<Self> {
        Ok(match distribution {
            Distribution::Zero => FillSpread::Zero,
            Distribution::Uniform { bound } => FillSpread::Uniform(non_negative_f32_param("bound", bound)?),
            Distribution::Normal { std } => {
                non_negative_f32_param("std", std)?;
                FillSpread::Normal(std)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LoraError;

    #[test]
    fn spreads_must_be_non_negative_and_finite_in_f32() {
        assert_eq!(FillSpread::of(Distribution::Uniform { bound: 0.0 }).ok(), Some(FillSpread::Uniform(0.0)));
        assert_eq!(FillSpread::of(Distribution::Normal { std: 3.0e38 }).ok(), Some(FillSpread::Normal(3.0e38)));
        for bad in [-1e-300, 3.5e38, 1e300, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = FillSpread::of(Distribution::Uniform { bound: bad });
            assert!(matches!(err, Err(LoraError::InvalidArgument { what: "bound", .. })), "{bad}");
            let err = FillSpread::of(Distribution::Normal { std: bad });
            assert!(matches!(err, Err(LoraError::InvalidArgument { what: "std", .. })), "{bad}");
        }
    }
}

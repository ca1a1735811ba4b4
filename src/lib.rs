#![deny(missing_docs)]
//! # fused-lora
//!
//! Hand-written CUDA kernels for LoRA (low-rank adaptation), wrapped in safe
//! Rust on top of `cudarc`'s driver API. The contract — shapes, layouts,
//! numerics — follows PEFT's `nn.Linear` convention: X `[M, K]`,
//! W0 `[N, K]`, A `[r, K]` (`lora_A.weight`), B `[N, r]` (`lora_B.weight`).
//!
//! Every kernel entry point lives on [`LoraKernels`], which owns the modules
//! loaded into one CUDA context; calls are stream-ordered and validate their
//! arguments before launching.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // Without a CUDA driver (plain `cargo test` on a machine without one) there is nothing to run.
//! # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
//! use fused_lora::cudarc::driver::CudaContext; // cudarc and half, re-exported
//! use fused_lora::half::bf16;
//! use fused_lora::{
//!     Adapter, AdapterConfig, BackwardInputs, BackwardOutput, Direction, FiniteCheck, ForwardOutput, GradMode, Linear,
//!     LoraKernels, MergeLayer, Scaling,
//! };
//!
//! let ctx = CudaContext::new(0)?;
//! let stream = ctx.default_stream();
//! let kernels = LoraKernels::new(&ctx); // loads the PTX once per context
//!
//! let (m, k, n) = (16, 256, 128);
//! let config = AdapterConfig::new(8, 16.0, Scaling::AlphaOverRank)?; // s = α/r = 2
//! let r = config.rank();
//! let x = stream.clone_htod(&vec![bf16::ONE; m * k])?; // X [M, K]
//! let mut w0 = stream.clone_htod(&vec![bf16::ZERO; n * k])?; // W0 [N, K]
//! let a = stream.clone_htod(&vec![bf16::ONE; r * k])?; // A [r, K]
//! let b = stream.clone_htod(&vec![bf16::ONE; n * r])?; // B [N, r]
//! let adapter = Adapter::new(&config, a.as_view(), b.as_view())?; // rank and s from the config
//!
//! // Forward: Y = X·W0ᵀ + s·P·Bᵀ, keeping P = X·Aᵀ for the backward.
//! let (mut y, mut p) = (stream.alloc_zeros::<bf16>(m * n)?, stream.alloc_zeros::<bf16>(m * r)?);
//! let linear = Linear { weight: w0.as_view(), bias: None, n, k };
//! let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
//! kernels.forward(&stream, &x.as_view(), &linear, &adapter, None, &mut out)?;
//!
//! // Backward from dY: the gradients of A, B and X; inputs by name.
//! let dy = stream.clone_htod(&vec![bf16::ONE; m * n])?;
//! let (mut da, mut db, mut dx) =
//!     (stream.alloc_zeros::<bf16>(r * k)?, stream.alloc_zeros::<bf16>(n * r)?, stream.alloc_zeros::<bf16>(m * k)?);
//! let inputs = BackwardInputs { dy: dy.as_view(), x: x.as_view(), p: Some(p.as_view()), dropout: None };
//! let mut grads =
//!     BackwardOutput { da: da.as_view_mut(), db: db.as_view_mut(), dx: dx.as_view_mut(), g: None, mode: GradMode::Overwrite };
//! kernels.backward(&stream, &inputs, &linear, &adapter, &mut grads)?;
//!
//! // Merge: W ← W + s·B·A, for as many layers as the slice holds, in one launch.
//! let mut layers = [MergeLayer { weight: w0.as_view_mut(), n, k, adapter }];
//! kernels.merge(&stream, &mut layers, Direction::Merge, FiniteCheck::RefuseNonFinite)?;
//! let y: Vec<bf16> = stream.clone_dtoh(&y)?; // synchronises
//! assert_eq!(y[0].to_f32(), 2.0 * (k * r) as f32); // s·(X·Aᵀ)·Bᵀ with all ones
//! let merged: Vec<bf16> = stream.clone_dtoh(&w0)?;
//! assert_eq!(merged[0].to_f32(), 2.0 * r as f32); // s·B·A
//! # Ok(())
//! # }
//! ```
//!
//! # The dependencies in the API
//!
//! Buffers, streams and contexts in this API are [`cudarc`]'s types, and the
//! f16/bf16 elements are [`half`]'s. Both crates are re-exported, so a
//! dependent names exactly the versions this crate was built with and does not
//! have to keep a `cudarc` or `half` requirement of its own in step:
//!
//! ```
//! use fused_lora::cudarc::driver::{CudaSlice, CudaStream};
//! use fused_lora::half::bf16;
//! use fused_lora::{LoraDType, Result};
//! use std::sync::Arc;
//!
//! /// Uploads `host` as bf16, through the same cudarc the kernels take.
//! fn upload(stream: &Arc<CudaStream>, host: &[f32]) -> Result<CudaSlice<bf16>> {
//!     let converted: Vec<bf16> = host.iter().map(|&v| bf16::from_f32(v)).collect();
//!     Ok(stream.clone_htod(&converted)?)
//! }
//!
//! assert_eq!(bf16::from_f32(1.5).to_f32(), 1.5);
//! assert_eq!(<bf16 as LoraDType>::DTYPE, fused_lora::DType::Bf16);
//! # let _ = upload;
//! ```

/// The CUDA driver bindings this crate is built on (its buffer, stream and
/// context types appear in every entry point), re-exported so dependents use
/// the same version.
pub use cudarc;
/// The `f16` and `bf16` element types the kernels take, re-exported so
/// dependents use the same version.
pub use half;

pub mod backward;
#[cfg(feature = "candle")]
pub mod candle;
pub mod config;
pub(crate) mod dropout;
pub mod dtype;
pub mod error;
pub mod forward;
pub mod init;
pub mod init_kernels;
mod kernels;
pub mod merge;
pub mod optim;
pub mod packed;
pub(crate) mod params;
pub mod peft;
pub mod ptx;
mod rank_side;
pub mod reference;
pub mod shape;
mod validate;

pub use backward::{BackwardInputs, BackwardOutput, GradMode};
pub use config::{AdapterConfig, Scaling};
pub use dtype::{DType, LoraDType};
pub use error::{LoraError, Result};
pub use forward::hopper::HOPPER_ENV;
pub use forward::{AdapterStack, AdapterStatus, ForwardOutput, Linear, RowAdapters};
pub use init::{Distribution, InitScheme};
pub use kernels::LoraKernels;
pub use merge::{Adapter, Direction, FiniteCheck, MergeIntoLayer, MergeLayer};
pub use optim::{AdamWConfig, AdamWState, SgdConfig, SgdState};
pub use packed::PackedAdapters;
pub use reference::Dropout;
pub use shape::{LoraShape, MultiAdapterShape};

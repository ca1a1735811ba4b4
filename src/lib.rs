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
//! ```no_run
//! use cudarc::driver::CudaContext;
//! use fused_lora::{Adapter, AdapterConfig, Direction, FiniteCheck, LoraKernels, MergeLayer, Scaling};
//! use half::bf16;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ctx = CudaContext::new(0)?;
//! let stream = ctx.default_stream();
//! let kernels = LoraKernels::new(&ctx);
//!
//! let (n, k) = (4096, 4096);
//! let config = AdapterConfig::new(16, 32.0, Scaling::AlphaOverRank)?; // s = α/r = 2
//! let mut w = stream.clone_htod(&vec![bf16::ZERO; n * k])?; // W0 [N, K]
//! let a = stream.clone_htod(&vec![bf16::ONE; config.rank() * k])?; // A [r, K]
//! let b = stream.clone_htod(&vec![bf16::ONE; n * config.rank()])?; // B [N, r]
//!
//! // W ← W + s·B·A, for as many layers as the slice holds, in one launch.
//! let mut layers = [MergeLayer {
//!     weight: w.as_view_mut(),
//!     n,
//!     k,
//!     adapter: Adapter { a: a.as_view(), b: b.as_view(), rank: config.rank(), scale: config.scale() },
//! }];
//! kernels.merge(&stream, &mut layers, Direction::Merge, FiniteCheck::RefuseNonFinite)?;
//! let merged: Vec<bf16> = stream.clone_dtoh(&w)?;
//! assert_eq!(merged[0].to_f32(), 2.0 * 16.0);
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
pub mod config;
pub mod dtype;
pub(crate) mod dropout;
pub mod error;
pub mod forward;
pub mod init;
pub mod init_kernels;
mod kernels;
pub mod merge;
pub mod optim;
pub mod packed;
pub(crate) mod params;
pub mod ptx;
pub mod reference;
pub mod shape;
mod validate;

pub use backward::{BackwardInputs, BackwardOutput, GradMode};
pub use config::{AdapterConfig, Scaling};
pub use dtype::{DType, LoraDType};
pub use error::{LoraError, Result};
pub use forward::{AdapterStack, AdapterStatus, ForwardOutput, Linear, RowAdapters};
pub use reference::Dropout;
pub use init::{Distribution, InitScheme};
pub use kernels::LoraKernels;
pub use merge::{Adapter, Direction, FiniteCheck, MergeIntoLayer, MergeLayer};
pub use optim::{AdamWConfig, AdamWState, SgdConfig, SgdState};
pub use packed::PackedAdapters;
pub use shape::{LoraShape, MultiAdapterShape};

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
pub(crate) mod params;
pub mod ptx;
pub mod reference;
pub mod shape;
mod validate;

pub use backward::{BackwardOutput, GradMode};
pub use config::{AdapterConfig, Scaling};
pub use dtype::{DType, LoraDType};
pub use error::{LoraError, Result};
pub use forward::{AdapterStack, AdapterStatus, ForwardOutput, Linear, RowAdapters};
pub use reference::Dropout;
pub use init::{Distribution, InitScheme};
pub use kernels::LoraKernels;
pub use merge::{Adapter, Direction, FiniteCheck, MergeIntoLayer, MergeLayer};
pub use optim::{AdamWConfig, AdamWState, SgdConfig, SgdState};
pub use shape::{LoraShape, MultiAdapterShape};

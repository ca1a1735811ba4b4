//! # fused-lora
//!
//! Hand-written CUDA kernels for LoRA (low-rank adaptation), wrapped in safe
//! Rust on top of `cudarc`'s driver API. The contract — shapes, layouts,
//! numerics — follows PEFT's `nn.Linear` convention: X `[M, K]`,
//! W0 `[N, K]`, A `[r, K]` (`lora_A.weight`), B `[N, r]` (`lora_B.weight`).

pub mod config;
pub mod dtype;
pub mod error;
pub mod forward;
pub mod init;
mod kernels;
pub mod merge;
pub(crate) mod params;
pub mod ptx;
pub mod reference;
pub mod shape;

pub use config::{AdapterConfig, Scaling};
pub use dtype::{DType, LoraDType};
pub use error::{LoraError, Result};
pub use forward::{AdapterStack, AdapterStatus, ForwardOutput, Linear, RowAdapters};
pub use init::{Distribution, InitScheme};
pub use kernels::LoraKernels;
pub use merge::{Adapter, Direction, FiniteCheck, MergeIntoLayer, MergeLayer};
pub use shape::{LoraShape, MultiAdapterShape};

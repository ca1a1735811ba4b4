//! `ptx-emu`: runs the PTX that nvcc emits on the CPU, thread by thread, with
//! the checks of a sanitizer on and with per-launch counters.
//!
//! Layers, bottom up:
//! - [`types`]: PTX scalar types shared by every layer.
//! - [`numerics`]: bit-exact scalar semantics (cvt, f16/bf16, rounding modes,
//!   approximate special functions). Pure functions.
//! - [`tensor`]: warp-wide tensor-core semantics (`mma.sync`, `ldmatrix`,
//!   `stmatrix`) on register fragments, per the PTX ISA's fragment tables. Pure.
//! - [`memory`]: device global memory — allocations, bounds, init shadow.
//! - [`module`]: PTX text → a lowered, validated module (load errors name the
//!   instruction and line).
//! - [`mod@launch`]: executes a kernel over a grid (or a sample of its CTAs);
//!   returns counters and findings.
//! - [`model`]: a modeled A100/H100/H200 time per launch from its counters.
//!
//! The CUDA driver API on top of it is the `ptx-emu-cuda` package
//! (`emu/cuda`, `libcuda.so`); the emulated cuBLAS and cuRAND libraries
//! (`emu/cublas`, `emu/cublaslt`, `emu/curand`) reach the same device
//! through it.

pub mod counters;
mod exec;
pub mod findings;
pub mod launch;
pub mod memory;
pub mod model;
pub mod module;
pub mod numerics;
mod ptx;
pub mod tensor;
pub mod tensor_map;
pub mod types;

pub use counters::Counters;
pub use findings::{Finding, FindingKind};
pub use launch::{launch, launch_with_cluster, CheckOptions, LaunchConfig, LaunchError, LaunchReport};
pub use memory::{GlobalMemory, MemError};
pub use module::{KernelInfo, LoadError, Module, ParamInfo};
pub use types::ScalarType;

//! cuBLAS on the emulated device: `libcublas.so` (SONAME `libcublas.so.13`)
//! with the C ABI of `cublas_api.h` for what cudarc's `cublas` module and
//! candle call — handles, stream, workspace, pointer and math modes, and the
//! GEMM family (S/D/H gemm, `GemmEx`, the strided-batched and pointer-array
//! batched forms).
//!
//! It links against the emulated `libcuda.so` and works through its private
//! ABI (`ptx_emu_private`), with the GEMM it shares with libcublasLt
//! (`ptx_emu_blas`): each GEMM is an operation ordered on the
//! handle's stream that reads its operands from device memory with memcheck
//! and initcheck applied (a leading dimension or batch stride that runs past
//! the operand's allocation is a finding, as the access would fault on
//! hardware), computes on the CPU, and writes only the `m x n` region of
//! each `C`. Numerics: products accumulated in f32 for f16, bf16 and f32
//! data (whatever the compute type asks: `COMPUTE_16F` and the `FAST_*`
//! types are computed more accurately than hardware would), in f64 for
//! f64, and `alpha * acc + beta * C` rounded once to C's type. Bad arguments
//! get cuBLAS's own status codes.

#![allow(non_camel_case_types)]

mod entry;
mod handle;

pub use entry::*;

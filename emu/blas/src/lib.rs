//! What the emulated `libcublas.so` and `libcublasLt.so` share: cuBLAS's
//! status codes, the data and compute types and their supported
//! combinations, and one GEMM (`D = epilogue(alpha * op(A) * op(B) + beta *
//! C)`, column-major) computed on the CPU over the emulated device memory
//! through the emulator's private ABI. Holds no state.

#![allow(non_camel_case_types)] // C type names, as cuBLAS spells them

pub mod gemm;
pub mod status;
pub mod types;

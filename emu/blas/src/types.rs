//! Data types (`cudaDataType`), compute types (`cublasComputeType_t`) and
//! the combinations `cublasGemmEx` supports.

use crate::status::{Status, CUBLAS_STATUS_INVALID_VALUE, CUBLAS_STATUS_NOT_SUPPORTED};

/// An element type of a matrix or scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F16,
    Bf16,
    F32,
    F64,
}

impl Elem {
    /// From `cudaDataType` (`CUDA_R_32F` = 0, `CUDA_R_64F` = 1,
    /// `CUDA_R_16F` = 2, `CUDA_R_16BF` = 14); others are not supported.
    pub fn from_data_type(value: i32) -> Result<Elem, u32> {
        match value {
            0 => Ok(Elem::F32),
            1 => Ok(Elem::F64),
            2 => Ok(Elem::F16),
            14 => Ok(Elem::Bf16),
            _ => Err(CUBLAS_STATUS_NOT_SUPPORTED),
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Elem::F16 | Elem::Bf16 => 2,
            Elem::F32 => 4,
            Elem::F64 => 8,
        }
    }
}

/// The arithmetic a GEMM is done in here (see the crate's docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accumulate {
    F32,
    F64,
}

/// A GEMM's types: the operands', the scale's (`alpha`, `beta`) and the
/// accumulation.
#[derive(Clone, Copy, Debug)]
pub struct GemmTypes {
    pub a: Elem,
    pub b: Elem,
    pub c: Elem,
    pub scale: Elem,
    pub accumulate: Accumulate,
}

impl GemmTypes {
    /// All operands `elem`, scaled and accumulated as cuBLAS's typed
    /// functions (`cublasSgemm`, `cublasDgemm`, `cublasHgemm`) do.
    pub fn uniform(elem: Elem) -> GemmTypes {
        let accumulate = if elem == Elem::F64 { Accumulate::F64 } else { Accumulate::F32 };
        GemmTypes { a: elem, b: elem, c: elem, scale: elem, accumulate }
    }

    /// `cublasGemmEx`'s table of supported combinations (the ones without
    /// integer or complex types): the compute type decides the scale type.
    pub fn gemm_ex(a: i32, b: i32, c: i32, compute: i32) -> Result<GemmTypes, u32> {
        let (a, b, c) = (Elem::from_data_type(a)?, Elem::from_data_type(b)?, Elem::from_data_type(c)?);
        let (scale, accumulate) = match compute {
            // CUBLAS_COMPUTE_16F, _PEDANTIC: all f16.
            64 | 65 if (a, b, c) == (Elem::F16, Elem::F16, Elem::F16) => (Elem::F16, Accumulate::F32),
            // CUBLAS_COMPUTE_32F, _PEDANTIC, _FAST_16F, _FAST_16BF, _FAST_TF32.
            68 | 69 | 74 | 75 | 77 if a == b && supported_32f(a, c) => (Elem::F32, Accumulate::F32),
            // CUBLAS_COMPUTE_64F, _PEDANTIC: all f64.
            70 | 71 if (a, b, c) == (Elem::F64, Elem::F64, Elem::F64) => (Elem::F64, Accumulate::F64),
            _ => return Err(CUBLAS_STATUS_NOT_SUPPORTED),
        };
        Ok(GemmTypes { a, b, c, scale, accumulate })
    }
}

/// With `CUBLAS_COMPUTE_32F`: f32 from f32, and f16/bf16 to itself or f32.
fn supported_32f(ab: Elem, c: Elem) -> bool {
    matches!(
        (ab, c),
        (Elem::F32, Elem::F32) | (Elem::F16, Elem::F16 | Elem::F32) | (Elem::Bf16, Elem::Bf16 | Elem::F32)
    )
}

/// `cublasOperation_t`: whether the operand is used transposed. For real
/// data `CUBLAS_OP_C` is `CUBLAS_OP_T`.
pub fn transposed(operation: i32) -> Result<bool, u32> {
    match operation {
        0 => Ok(false),
        1 | 2 => Ok(true),
        _ => Err(CUBLAS_STATUS_INVALID_VALUE),
    }
}

/// `Err(INVALID_VALUE)` unless `condition`.
pub fn require(condition: bool) -> Status {
    if condition {
        Ok(())
    } else {
        Err(CUBLAS_STATUS_INVALID_VALUE)
    }
}

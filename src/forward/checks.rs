//! Argument checks shared by the forward entry points: each returns the
//! structured error that names the argument.

use std::sync::Arc;

use cudarc::driver::CudaStream;

use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::kernels::check_same_context;

/// A dimension that must be at least 1 and fit the kernels' 32-bit ints.
pub(crate) fn check_dim(what: &'static str, value: usize) -> Result<i32> {
    if value == 0 {
        return Err(LoraError::InvalidArgument { what, value: "0".into(), reason: "must be at least 1" });
    }
    i32::try_from(value).map_err(|_| LoraError::InvalidArgument { what, value: value.to_string(), reason: "must fit in a 32-bit int" })
}

/// A buffer of exactly `shape`'s element count.
pub(crate) fn check_len(what: &'static str, len: usize, shape: &[usize]) -> Result<()> {
    let expected = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match expected {
        Some(e) if e == len => Ok(()),
        Some(_) => Err(LoraError::ShapeMismatch { what, expected: shape.to_vec(), got: vec![len] }),
        None => Err(LoraError::InvalidArgument { what, value: format!("{shape:?}"), reason: "too many elements" }),
    }
}

/// The buffer lives in the stream's context (compared by driver handle: two
/// handles on the same primary context are the same context).
pub(crate) fn check_context(stream: &Arc<CudaStream>, what: &'static str, buffer_stream: &Arc<CudaStream>) -> Result<()> {
    check_same_context(what, buffer_stream, stream.context())
}

pub(crate) fn check_scale(what: &'static str, scale: f32) -> Result<()> {
    if scale.is_finite() {
        Ok(())
    } else {
        Err(LoraError::InvalidArgument { what, value: scale.to_string(), reason: "must be finite" })
    }
}

/// Elements per 16-byte load: the K granularity of the vectorised operands.
pub(crate) fn chunk_elements<T: LoraDType>() -> usize {
    16 / T::DTYPE.size_bytes()
}

/// K must split rows into whole 16-byte chunks.
pub(crate) fn check_k_aligned<T: LoraDType>(k: usize) -> Result<()> {
    let chunk = chunk_elements::<T>();
    if k % chunk == 0 {
        Ok(())
    } else {
        Err(LoraError::Misaligned { what: "k", value: k, multiple_of: chunk })
    }
}

/// A device address that 16-byte loads can use.
pub(crate) fn check_address(what: &'static str, address: u64) -> Result<()> {
    if address % 16 == 0 {
        Ok(())
    } else {
        Err(LoraError::Misaligned { what, value: address as usize, multiple_of: 16 })
    }
}

/// The device byte range of a buffer, for the aliasing checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub what: &'static str,
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub fn new(what: &'static str, address: u64, bytes: usize) -> Self {
        Span { what, start: address, end: address + bytes as u64 }
    }

    pub fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// An output must not overlap any input (CTAs read inputs while others write).
pub(crate) fn check_no_alias(output: &Span, inputs: &[Span]) -> Result<()> {
    match inputs.iter().find(|input| output.overlaps(input)) {
        Some(input) => Err(LoraError::Aliasing { output: output.what, input: input.what }),
        None => Ok(()),
    }
}

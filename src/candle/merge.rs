//! Merge and unmerge with candle's ops (what the CPU runs): `W ± s·B·A` in
//! f32, rounded once to W's dtype, refused when it holds NaN or ±Inf, as the
//! crate's merge kernel does on CUDA.

use candle_core::{DType, Device, Result, Tensor};

use super::bad;
use crate::merge::Direction;

/// `weight ± scale·b·a` as a new tensor of `weight`'s dtype.
pub(super) fn merge_unfused(
    weight: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f32,
    direction: Direction,
) -> Result<Tensor> {
    let sign = match direction {
        Direction::Merge => 1.0,
        Direction::Unmerge => -1.0,
    };
    let delta = (b.to_dtype(DType::F32)?.matmul(&a.to_dtype(DType::F32)?)? * (sign * f64::from(scale)))?;
    // Checked after the rounding: an f16 result can overflow there.
    let merged = (weight.to_dtype(DType::F32)? + delta)?.to_dtype(weight.dtype())?;
    let host: Vec<f32> = merged.to_dtype(DType::F32)?.flatten_all()?.to_device(&Device::Cpu)?.to_vec1()?;
    if let Some(i) = host.iter().position(|v| !v.is_finite()) {
        return Err(bad("merge", format!("element {i} of the result is {}: nothing was changed", host[i])));
    }
    Ok(merged)
}

//! Adapter initialisation from Philox: bit-identical to the device init kernel.

use super::philox;
use super::RefElem;
use crate::error::{LoraError, Result};
use crate::init::{Distribution, InitScheme};
use crate::validate::{element_count, non_negative_f32_param};

/// `len` elements drawn from `dist`, element `i` from `(seed, offset, i)`
/// (see [`philox`] for the exact arithmetic).
///
/// # Errors
/// [`LoraError::InvalidArgument`] for a bound or std that is negative or not
/// finite as an f32 (as the device kernels refuse it).
pub fn init_matrix<E: RefElem>(dist: Distribution, len: usize, seed: u64, offset: u64) -> Result<Vec<E>> {
    let indices = 0..len as u64;
    match dist {
        Distribution::Zero => Ok(vec![E::from_f32(0.0); len]),
        Distribution::Uniform { bound } => {
            let bound = non_negative_f32_param("bound", bound)?;
            Ok(indices.map(|i| E::from_f32(philox::uniform_symmetric(seed, offset, i, bound))).collect())
        }
        Distribution::Normal { std } => {
            non_negative_f32_param("std", std)?;
            Ok(indices.map(|i| E::from_f32(philox::normal(seed, offset, i, std))).collect())
        }
    }
}

/// `(A [r, K], B [N, r])` for `scheme`: A from stream `offset`, B from stream
/// `offset + 1` (wrapping), so the two never share random numbers.
///
/// # Errors
/// [`LoraError::InvalidArgument`] if `rank` or `k_in` is 0, or if A or B
/// would hold more elements than `usize` counts.
pub fn init_adapter<E: RefElem>(
    scheme: InitScheme,
    rank: usize,
    k_in: usize,
    n_out: usize,
    seed: u64,
    offset: u64,
) -> Result<(Vec<E>, Vec<E>)> {
    if rank == 0 {
        return Err(LoraError::InvalidArgument { what: "rank", value: "0".into(), reason: "must be at least 1" });
    }
    if k_in == 0 {
        return Err(LoraError::InvalidArgument { what: "k_in", value: "0".into(), reason: "must be at least 1" });
    }
    let (dist_a, dist_b) = scheme.distributions(rank, k_in);
    let a_len = element_count("A", &[rank, k_in])?;
    let b_len = element_count("B", &[n_out, rank])?;
    let a = init_matrix(dist_a, a_len, seed, offset)?;
    let b = init_matrix(dist_b, b_len, seed, offset.wrapping_add(1))?;
    Ok((a, b))
}

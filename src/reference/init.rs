//! Adapter initialisation from Philox: bit-identical to the device init kernel.

use super::philox;
use super::RefElem;
use crate::error::{LoraError, Result};
use crate::init::{Distribution, InitScheme};

/// `len` elements drawn from `dist`, element `i` from `(seed, offset, i)`
/// (see [`philox`] for the exact arithmetic).
///
/// # Errors
/// [`LoraError::InvalidArgument`] for a bound or std that is negative or not finite.
pub fn init_matrix<E: RefElem>(dist: Distribution, len: usize, seed: u64, offset: u64) -> Result<Vec<E>> {
    let indices = 0..len as u64;
    match dist {
        Distribution::Zero => Ok(vec![E::from_f32(0.0); len]),
        Distribution::Uniform { bound } => {
            check_spread("bound", bound)?;
            let bound = bound as f32;
            Ok(indices.map(|i| E::from_f32(philox::uniform_symmetric(seed, offset, i, bound))).collect())
        }
        Distribution::Normal { std } => {
            check_spread("std", std)?;
            Ok(indices.map(|i| E::from_f32(philox::normal(seed, offset, i, std))).collect())
        }
    }
}

/// `(A [r, K], B [N, r])` for `scheme`: A from stream `offset`, B from stream
/// `offset + 1` (wrapping), so the two never share random numbers.
///
/// # Errors
/// [`LoraError::InvalidArgument`] if `rank` or `k_in` is 0.
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
    let a = init_matrix(dist_a, rank * k_in, seed, offset)?;
    let b = init_matrix(dist_b, n_out * rank, seed, offset.wrapping_add(1))?;
    Ok((a, b))
}

fn check_spread(what: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(LoraError::InvalidArgument { what, value: value.to_string(), reason: "must be finite and non-negative" })
    }
}

//! Merge and unmerge over many layers: `W' = round_T(W ± s·B·A)`, one rounding.
//!
//! Unmerge after merge is not exact in f16/bf16: `W + s·B·A` is rounded to
//! `T`, and subtracting the same product from the rounded value does not in
//! general give back the original bits.

use super::{check_len, combine, dot, finish, Precision, RefElem};
use crate::error::{LoraError, Result};

/// Whether the low-rank update is added or subtracted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MergeDirection {
    /// `W + s·B·A`
    Merge,
    /// `W − s·B·A`
    Unmerge,
}

impl MergeDirection {
    fn sign(self) -> f64 {
        match self {
            MergeDirection::Merge => 1.0,
            MergeDirection::Unmerge => -1.0,
        }
    }
}

/// One layer of a merge, read-only (the result goes to a separate output).
#[derive(Clone, Copy, Debug)]
pub struct MergeLayer<'a, E> {
    /// `[N, K]`
    pub w: &'a [E],
    /// `[r, K]`
    pub a: &'a [E],
    /// `[N, r]`
    pub b: &'a [E],
    /// The scale s; the direction gives the sign.
    pub scale: f64,
    /// Output features N.
    pub n: usize,
    /// Input features K.
    pub k: usize,
    /// Rank r.
    pub r: usize,
}

/// One layer of an in-place merge.
#[derive(Debug)]
pub struct MergeLayerMut<'a, E> {
    /// `[N, K]`, overwritten with the merged weight.
    pub w: &'a mut [E],
    /// `[r, K]`
    pub a: &'a [E],
    /// `[N, r]`
    pub b: &'a [E],
    /// The scale s; the direction gives the sign.
    pub scale: f64,
    /// Output features N.
    pub n: usize,
    /// Input features K.
    pub k: usize,
    /// Rank r.
    pub r: usize,
}

/// The merged (or unmerged) weights of every layer, as a separate output.
/// With `safe`, a result holding NaN or ±Inf once rounded to `T` makes the
/// whole call fail (nothing is returned).
///
/// # Errors
/// Buffer lengths that do not fit a layer's `(N, K, r)`;
/// [`LoraError::NonFinite`] naming the first bad layer in safe mode.
pub fn merge<E: RefElem>(
    layers: &[MergeLayer<'_, E>],
    direction: MergeDirection,
    safe: bool,
    precision: Precision,
) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::with_capacity(layers.len());
    for (index, layer) in layers.iter().enumerate() {
        let merged = merge_layer(layer, direction, precision)?;
        if safe && merged.iter().any(|&v| !E::round_f64(v).is_finite()) {
            return Err(LoraError::NonFinite { op: "merge", layer: index });
        }
        out.push(merged);
    }
    Ok(out)
}

/// [`merge`] written back into each layer's `W`, rounded once to `T`. In safe
/// mode nothing is written unless every layer's result is finite.
///
/// # Errors
/// As [`merge`]; on error no `W` has been modified.
pub fn merge_in_place<E: RefElem>(
    layers: &mut [MergeLayerMut<'_, E>],
    direction: MergeDirection,
    safe: bool,
) -> Result<()> {
    let merged = {
        let views: Vec<MergeLayer<'_, E>> = layers
            .iter()
            .map(|l| MergeLayer { w: &*l.w, a: l.a, b: l.b, scale: l.scale, n: l.n, k: l.k, r: l.r })
            .collect();
        merge(&views, direction, safe, Precision::Exact)?
    };
    for (layer, values) in layers.iter_mut().zip(merged) {
        for (w, v) in layer.w.iter_mut().zip(values) {
            *w = E::from_f64(v);
        }
    }
    Ok(())
}

fn merge_layer<E: RefElem>(
    layer: &MergeLayer<'_, E>,
    direction: MergeDirection,
    precision: Precision,
) -> Result<Vec<f64>> {
    let MergeLayer { w, a, b, scale, n, k, r } = *layer;
    check_len("W", w.len(), &[n, k])?;
    check_len("A", a.len(), &[r, k])?;
    check_len("B", b.len(), &[n, r])?;
    let signed_scale = direction.sign() * scale;
    let mut out = Vec::with_capacity(n * k);
    for row in 0..n {
        for col in 0..k {
            let acc = dot::<E>(precision, (0..r).map(|j| (b[row * r + j].to_f64(), a[j * k + col].to_f64())));
            let w0 = w[row * k + col].to_f64();
            let value =
                combine::<E>(precision, || w0 + signed_scale * acc, || w0 as f32 + signed_scale as f32 * acc as f32);
            out.push(finish::<E>(precision, value));
        }
    }
    Ok(out)
}

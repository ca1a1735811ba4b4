//! Forward pass: shrink, expand, the fused forward and its multi-adapter form.

use super::{active_dropout, check_len, combine, dot, dropped_input, finish, Dropout, Precision, RefElem};
use crate::error::{LoraError, Result};
use crate::shape::{LoraShape, MultiAdapterShape};

/// The frozen base layer and its input.
#[derive(Clone, Copy, Debug)]
pub struct Base<'a, E> {
    /// `[M, K]`
    pub x: &'a [E],
    /// `[N, K]`
    pub w0: &'a [E],
    /// `[N]`, optional.
    pub bias: Option<&'a [E]>,
}

/// One adapter: `A [r, K]`, `B [N, r]` and its scale `s`.
#[derive(Clone, Copy, Debug)]
pub struct Adapter<'a, E> {
    /// A `[r, K]`.
    pub a: &'a [E],
    /// B `[N, r]`.
    pub b: &'a [E],
    /// The scale s.
    pub scale: f64,
}

/// `L` stacked adapters with one adapter index per row (docs/contract.md).
#[derive(Clone, Copy, Debug)]
pub struct MultiAdapters<'a, E> {
    /// `[L, r_max, K]`; rows at and past `ranks[l]` are padding, never read.
    pub a_all: &'a [E],
    /// `[L, N, r_max]`; columns at and past `ranks[l]` are padding, never read.
    pub b_all: &'a [E],
    /// `[L]`, each in `[0, r_max]`.
    pub ranks: &'a [usize],
    /// `[L]`
    pub scales: &'a [f64],
    /// `[M]`, each in `[-1, L)`; −1 means base only.
    pub indices: &'a [i64],
}

/// Forward results: `Y [M, N]` (a final output) and `P [M, r]` (or
/// `[M, r_max]`), the unscaled projection kept for backward, always rounded to `T`.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardOutput {
    /// Y `[M, N]`.
    pub y: Vec<f64>,
    /// P `[M, r]` (or `[M, r_max]`), unscaled.
    pub p: Vec<f64>,
}

/// The shrink `P = round_T(scale · X̃·Aᵀ)` `[M, r]` (`shape.n` is unused).
///
/// # Errors
/// Buffer lengths that do not fit `shape`, or an invalid dropout `p`.
pub fn shrink<E: RefElem>(
    shape: LoraShape,
    x: &[E],
    a: &[E],
    scale: f64,
    dropout: Option<&Dropout>,
    precision: Precision,
) -> Result<Vec<f64>> {
    let LoraShape { m, k, r, .. } = shape;
    check_len("X", x.len(), &[m, k])?;
    check_len("A", a.len(), &[r, k])?;
    super::element_count("P", &[m, r])?;
    let dropout = active_dropout(dropout)?;
    let x_in = dropped_input(x, m, k, dropout.as_ref());
    let mut p = Vec::with_capacity(m * r);
    for row in 0..m {
        for j in 0..r {
            let acc = dot::<E>(precision, (0..k).map(|kk| (x_in[row * k + kk], a[j * k + kk].to_f64())));
            let value = combine::<E>(precision, || scale * acc, || scale as f32 * acc as f32);
            p.push(finish::<E>(precision, value));
        }
    }
    Ok(p)
}

/// The expand `Y' = round_T(Y + scale · P·Bᵀ)` `[M, N]` (`shape.k` is unused).
///
/// # Errors
/// Buffer lengths that do not fit `shape`.
pub fn expand<E: RefElem>(
    shape: LoraShape,
    y: &[E],
    p: &[E],
    b: &[E],
    scale: f64,
    precision: Precision,
) -> Result<Vec<f64>> {
    let LoraShape { m, n, r, .. } = shape;
    check_len("Y", y.len(), &[m, n])?;
    check_len("P", p.len(), &[m, r])?;
    check_len("B", b.len(), &[n, r])?;
    let mut out = Vec::with_capacity(m * n);
    for row in 0..m {
        for col in 0..n {
            let acc = dot::<E>(precision, (0..r).map(|j| (p[row * r + j].to_f64(), b[col * r + j].to_f64())));
            let y0 = y[row * n + col].to_f64();
            let value = combine::<E>(precision, || y0 + scale * acc, || y0 as f32 + scale as f32 * acc as f32);
            out.push(finish::<E>(precision, value));
        }
    }
    Ok(out)
}

/// The fused forward: `P = round_T(X̃·Aᵀ)`, `Y = X·W0ᵀ + bias + s·P·Bᵀ`.
///
/// # Errors
/// Buffer lengths that do not fit `shape`, or an invalid dropout `p`.
pub fn forward<E: RefElem>(
    shape: LoraShape,
    base: &Base<'_, E>,
    adapter: &Adapter<'_, E>,
    dropout: Option<&Dropout>,
    precision: Precision,
) -> Result<ForwardOutput> {
    let LoraShape { m, k, n, r } = shape;
    check_base(base, m, k, n)?;
    check_len("A", adapter.a.len(), &[r, k])?;
    check_len("B", adapter.b.len(), &[n, r])?;
    // With K = 0 the inputs are empty whatever M, N, r are: bound the outputs too.
    super::element_count("P", &[m, r])?;
    super::element_count("Y", &[m, n])?;
    let dropout = active_dropout(dropout)?;
    let x_in = dropped_input(base.x, m, k, dropout.as_ref());
    let mut p = vec![0.0; m * r];
    let mut y = vec![0.0; m * n];
    for row in 0..m {
        let x_row = &x_in[row * k..(row + 1) * k];
        let p_row = &mut p[row * r..(row + 1) * r];
        project_row::<E>(precision, x_row, adapter.a, r, k, p_row);
        let lora = RowAdapter { a_rows: r, b: adapter.b, b_stride: r, scale: adapter.scale };
        output_row(precision, base, row, k, n, Some((&lora, &*p_row)), &mut y[row * n..(row + 1) * n]);
    }
    Ok(ForwardOutput { y, p })
}

/// The multi-adapter forward: row `m` with `a = indices[m] ≥ 0` uses the first
/// `ranks[a]` rows of `A_a` and columns of `B_a` with scale `scales[a]`; rows
/// with index −1 get the base output. `P` is `[M, r_max]`, zero in its padding
/// and in rows with index −1.
///
/// # Errors
/// Buffer lengths that do not fit `shape`, a rank above `r_max`, an invalid
/// dropout `p`, or [`LoraError::AdapterIndexOutOfRange`].
pub fn forward_multi<E: RefElem>(
    shape: MultiAdapterShape,
    base: &Base<'_, E>,
    adapters: &MultiAdapters<'_, E>,
    dropout: Option<&Dropout>,
    precision: Precision,
) -> Result<ForwardOutput> {
    let MultiAdapterShape { m, k, n, r_max, .. } = shape;
    check_base(base, m, k, n)?;
    check_multi(shape, adapters)?;
    super::element_count("Y", &[m, n])?;
    let dropout = active_dropout(dropout)?;
    let x_in = dropped_input(base.x, m, k, dropout.as_ref());
    let mut p = vec![0.0; m * r_max];
    let mut y = vec![0.0; m * n];
    for row in 0..m {
        let y_row = &mut y[row * n..(row + 1) * n];
        match adapter_of_row(adapters.indices[row]) {
            None => output_row(precision, base, row, k, n, None, y_row),
            Some(l) => {
                let rank = adapters.ranks[l];
                let a_l = &adapters.a_all[l * r_max * k..(l + 1) * r_max * k];
                let b_l = &adapters.b_all[l * n * r_max..(l + 1) * n * r_max];
                let p_row = &mut p[row * r_max..row * r_max + rank];
                project_row::<E>(precision, &x_in[row * k..(row + 1) * k], a_l, rank, k, p_row);
                let lora = RowAdapter { a_rows: rank, b: b_l, b_stride: r_max, scale: adapters.scales[l] };
                output_row(precision, base, row, k, n, Some((&lora, &*p_row)), y_row);
            }
        }
    }
    Ok(ForwardOutput { y, p })
}

/// The adapter a row uses, `None` for −1 (indices are validated beforehand).
pub(super) fn adapter_of_row(index: i64) -> Option<usize> {
    usize::try_from(index).ok()
}

pub(super) fn check_base<E: RefElem>(base: &Base<'_, E>, m: usize, k: usize, n: usize) -> Result<()> {
    check_len("X", base.x.len(), &[m, k])?;
    check_len("W0", base.w0.len(), &[n, k])?;
    if let Some(bias) = base.bias {
        check_len("bias", bias.len(), &[n])?;
    }
    Ok(())
}

pub(super) fn check_multi<E: RefElem>(shape: MultiAdapterShape, adapters: &MultiAdapters<'_, E>) -> Result<()> {
    let MultiAdapterShape { m, k, n, num_adapters, r_max } = shape;
    check_len("A_all", adapters.a_all.len(), &[num_adapters, r_max, k])?;
    check_len("B_all", adapters.b_all.len(), &[num_adapters, n, r_max])?;
    check_len("ranks", adapters.ranks.len(), &[num_adapters])?;
    check_len("scales", adapters.scales.len(), &[num_adapters])?;
    check_len("indices", adapters.indices.len(), &[m])?;
    // P [M, r_max] is allocated even when no adapter exists (L = 0).
    super::element_count("P", &[m, r_max])?;
    if let Some(&rank) = adapters.ranks.iter().find(|&&rank| rank > r_max) {
        return Err(LoraError::InvalidArgument { what: "ranks", value: rank.to_string(), reason: "exceeds r_max" });
    }
    for (row, &index) in adapters.indices.iter().enumerate() {
        if index < -1 || index >= num_adapters as i64 {
            return Err(LoraError::AdapterIndexOutOfRange { row, index, num_adapters });
        }
    }
    Ok(())
}

/// `p_row[j] = round_T(Σ_k x_row[k]·A[j, k])` for the first `p_row.len()` rows of A.
fn project_row<E: RefElem>(precision: Precision, x_row: &[f64], a: &[E], rank: usize, k: usize, p_row: &mut [f64]) {
    for (j, p) in p_row.iter_mut().enumerate().take(rank) {
        let acc = dot::<E>(precision, (0..k).map(|kk| (x_row[kk], a[j * k + kk].to_f64())));
        *p = E::round_f64(acc);
    }
}

/// The part of an adapter one output row reads: B's first `a_rows` columns,
/// with row stride `b_stride` (r or r_max).
struct RowAdapter<'a, E> {
    a_rows: usize,
    b: &'a [E],
    b_stride: usize,
    scale: f64,
}

/// `y_row[c] = X[row]·W0[c]ᵀ + bias[c] + s·p_row·B[c, ..rank]ᵀ`.
fn output_row<E: RefElem>(
    precision: Precision,
    base: &Base<'_, E>,
    row: usize,
    k: usize,
    n: usize,
    lora: Option<(&RowAdapter<'_, E>, &[f64])>,
    y_row: &mut [f64],
) {
    for (col, y) in y_row.iter_mut().enumerate().take(n) {
        let base_acc =
            dot::<E>(precision, (0..k).map(|kk| (base.x[row * k + kk].to_f64(), base.w0[col * k + kk].to_f64())));
        let bias = base.bias.map_or(0.0, |b| b[col].to_f64());
        let (scale, lora_acc) = match lora {
            None => (0.0, 0.0),
            Some((ad, p_row)) => {
                let terms = (0..ad.a_rows).map(|j| (p_row[j], ad.b[col * ad.b_stride + j].to_f64()));
                (ad.scale, dot::<E>(precision, terms))
            }
        };
        let value = combine::<E>(
            precision,
            || base_acc + bias + scale * lora_acc,
            || base_acc as f32 + bias as f32 + scale as f32 * lora_acc as f32,
        );
        *y = finish::<E>(precision, value);
    }
}

//! Backward pass (dY given): G, dA, dB, dX, single and multi-adapter.

use super::forward::{adapter_of_row, check_base, check_multi, Adapter, Base, MultiAdapters};
use super::{active_dropout, check_len, combine, dot, dropped_input, finish, Dropout, Precision, RefElem};
use crate::error::Result;
use crate::shape::{LoraShape, MultiAdapterShape};

/// Single-adapter gradients. `g` is the intermediate `round_T(dY·B)`; `da`,
/// `db`, `dx` are final outputs (unrounded in `Exact` mode).
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    /// `[M, r]`
    pub g: Vec<f64>,
    /// `[r, K]`
    pub da: Vec<f64>,
    /// `[N, r]`
    pub db: Vec<f64>,
    /// `[M, K]`
    pub dx: Vec<f64>,
}

/// Multi-adapter gradients, padded like the inputs: `g [M, r_max]`,
/// `da [L, r_max, K]`, `db [L, N, r_max]`, `dx [M, K]`. Padding, rows with
/// index −1 (in `g`) and adapters no row uses are exact zeros.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiGradients {
    /// G `[M, r_max]`, rounded to the element type.
    pub g: Vec<f64>,
    /// dA.
    pub da: Vec<f64>,
    /// dB.
    pub db: Vec<f64>,
    /// dX `[M, K]`.
    pub dx: Vec<f64>,
}

/// `G = round_T(dY·B)`, `dB = s·dYᵀ·P`, `dA = s·Gᵀ·X̃`,
/// `dX = dY·W0 + (s·G·A) ⊙ mask / (1 − p)`. `P [M, r]` is the forward's
/// (already rounded) projection; the dropout must be the forward's.
///
/// # Errors
/// Buffer lengths that do not fit `shape`, or an invalid dropout `p`.
pub fn backward<E: RefElem>(
    shape: LoraShape,
    base: &Base<'_, E>,
    adapter: &Adapter<'_, E>,
    dropout: Option<&Dropout>,
    dy: &[E],
    p: &[E],
    precision: Precision,
) -> Result<Gradients> {
    let LoraShape { m, k, n, r } = shape;
    let multi_shape = MultiAdapterShape { m, k, n, num_adapters: 1, r_max: r };
    let ranks = [r];
    let scales = [adapter.scale];
    let indices = vec![0i64; m];
    let adapters =
        MultiAdapters { a_all: adapter.a, b_all: adapter.b, ranks: &ranks, scales: &scales, indices: &indices };
    // One adapter used by every row is exactly the single-adapter problem:
    // the same sums in the same order.
    let MultiGradients { g, da, db, dx } = backward_multi(multi_shape, base, &adapters, dropout, dy, p, precision)?;
    Ok(Gradients { g, da, db, dx })
}

/// The multi-adapter backward: `dA_l`, `dB_l` reduce over the rows whose
/// index is `l` only; row `m` uses the first `ranks[a(m)]` rows/columns of
/// its adapter. `P` is the forward's `[M, r_max]` projection.
///
/// # Errors
/// Buffer lengths that do not fit `shape`, a rank above `r_max`, an invalid
/// dropout `p`, or [`crate::LoraError::AdapterIndexOutOfRange`].
pub fn backward_multi<E: RefElem>(
    shape: MultiAdapterShape,
    base: &Base<'_, E>,
    adapters: &MultiAdapters<'_, E>,
    dropout: Option<&Dropout>,
    dy: &[E],
    p: &[E],
    precision: Precision,
) -> Result<MultiGradients> {
    let MultiAdapterShape { m, k, n, num_adapters, r_max } = shape;
    check_base(base, m, k, n)?;
    check_multi(shape, adapters)?;
    check_len("dY", dy.len(), &[m, n])?;
    check_len("P", p.len(), &[m, r_max])?;
    let dropout = active_dropout(dropout)?;
    let x_in = dropped_input(base.x, m, k, dropout.as_ref());
    let rows_of: Vec<Vec<usize>> = (0..num_adapters)
        .map(|l| (0..m).filter(|&row| adapter_of_row(adapters.indices[row]) == Some(l)).collect())
        .collect();
    let a_of = |l: usize, j: usize, kk: usize| adapters.a_all[(l * r_max + j) * k + kk].to_f64();
    let b_of = |l: usize, col: usize, j: usize| adapters.b_all[(l * n + col) * r_max + j].to_f64();

    // G = round_T(dY·B_a) per row, an intermediate the kernels store in T.
    let mut g = vec![0.0; m * r_max];
    for row in 0..m {
        if let Some(l) = adapter_of_row(adapters.indices[row]) {
            for j in 0..adapters.ranks[l] {
                let acc = dot::<E>(precision, (0..n).map(|col| (dy[row * n + col].to_f64(), b_of(l, col, j))));
                g[row * r_max + j] = E::round_f64(acc);
            }
        }
    }

    let mut da = vec![0.0; num_adapters * r_max * k];
    let mut db = vec![0.0; num_adapters * n * r_max];
    for (l, rows) in rows_of.iter().enumerate() {
        let scale = adapters.scales[l];
        for j in 0..adapters.ranks[l] {
            for col in 0..n {
                let terms = rows.iter().map(|&row| (dy[row * n + col].to_f64(), p[row * r_max + j].to_f64()));
                db[(l * n + col) * r_max + j] = scaled::<E>(precision, scale, dot::<E>(precision, terms));
            }
            for kk in 0..k {
                let terms = rows.iter().map(|&row| (g[row * r_max + j], x_in[row * k + kk]));
                da[(l * r_max + j) * k + kk] = scaled::<E>(precision, scale, dot::<E>(precision, terms));
            }
        }
    }

    let mut dx = vec![0.0; m * k];
    for row in 0..m {
        for kk in 0..k {
            let base_acc =
                dot::<E>(precision, (0..n).map(|col| (dy[row * n + col].to_f64(), base.w0[col * k + kk].to_f64())));
            let (scale, factor, lora_acc) = match adapter_of_row(adapters.indices[row]) {
                None => (0.0, 0.0, 0.0),
                Some(l) => {
                    let terms = (0..adapters.ranks[l]).map(|j| (g[row * r_max + j], a_of(l, j, kk)));
                    let factor = match &dropout {
                        None => 1.0,
                        Some(d) if d.keep(row, kk, k) => E::dropout_factor(d.p, d.inv_keep()),
                        Some(_) => 0.0,
                    };
                    (adapters.scales[l], factor, dot::<E>(precision, terms))
                }
            };
            let value = combine::<E>(
                precision,
                || base_acc + scale * lora_acc * factor,
                || base_acc as f32 + scale as f32 * lora_acc as f32 * factor as f32,
            );
            dx[row * k + kk] = finish::<E>(precision, value);
        }
    }
    Ok(MultiGradients { g, da, db, dx })
}

/// `finish(s·acc)` in the working precision.
fn scaled<E: RefElem>(precision: Precision, scale: f64, acc: f64) -> f64 {
    finish::<E>(precision, combine::<E>(precision, || scale * acc, || scale as f32 * acc as f32))
}

//! candle integration (feature `candle`): [`LoraLinear`], a frozen linear
//! layer with a LoRA adapter (or a stack of them, chosen per row) that
//! implements [`candle_core::Module`].
//!
//! - On CUDA tensors (feature `candle-cuda`, which turns on candle-core's
//!   `cuda`), the forward is the crate's fused kernel, run through candle's
//!   custom-op API on candle's own stream over candle's buffers (W0 and a
//!   contiguous X are read in place, never copied). Its backward, run by
//!   candle's autograd, calls the crate's backward kernels for dX, dA and dB;
//!   W0 and the bias are frozen (they get no gradient).
//! - On the CPU (and on any device without the fused path) it computes the
//!   same math with candle's ops, `x·W0ᵀ + bias + s·(x·Aᵀ)·Bᵀ`, and candle's
//!   autograd differentiates that.

#[cfg(feature = "candle-cuda")]
mod cuda;

use candle_core::{DType, Device, Module, Result, Tensor};

/// The adapters of a [`LoraLinear`].
#[derive(Clone, Debug)]
pub enum LoraAdapters {
    /// One adapter for every row: A `[r, k]`, B `[n, r]`, scale s.
    Single {
        /// A `[r, k]` (`lora_A.weight`).
        a: Tensor,
        /// B `[n, r]` (`lora_B.weight`).
        b: Tensor,
        /// The scale s.
        scale: f32,
    },
    /// `L` adapters stacked, each row using the adapter its index names
    /// (−1: none): A_all `[L, r_max, k]`, B_all `[L, n, r_max]`; adapter `l`
    /// uses the first `ranks[l]` rows of its A and columns of its B (the
    /// padding is never read by the kernels, and zeroed out of the CPU math).
    Stack {
        /// A_all `[L, r_max, k]`.
        a: Tensor,
        /// B_all `[L, n, r_max]`.
        b: Tensor,
        /// Per adapter, its rank in `1..=r_max`.
        ranks: Vec<usize>,
        /// Per adapter, its scale.
        scales: Vec<f32>,
        /// The adapter index of each row of the next inputs, `[m]` I32.
        rows: Tensor,
    },
}

/// A frozen linear layer W0 `[n, k]` (+ optional bias `[n]`) with LoRA adapters.
#[derive(Clone, Debug)]
pub struct LoraLinear {
    weight: Tensor,
    bias: Option<Tensor>,
    adapters: LoraAdapters,
}

fn bad(what: &str, why: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("LoraLinear: {what}: {why}"))
}

impl LoraLinear {
    /// A layer over W0 `[n, k]`, an optional bias `[n]`, and `adapters`.
    ///
    /// # Errors
    /// A shape, dtype or device that disagrees with W0's, a rank outside
    /// `1..=r_max`, a non-finite scale, or a row index outside `[−1, L)`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, adapters: LoraAdapters) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        // An empty weight has no layer to apply (and k = 0 would leave the
        // rows of X undefined).
        if n == 0 || k == 0 {
            return Err(bad("weight", format!("shape [{n}, {k}]: both dimensions must be at least 1")));
        }
        let same = |what: &str, t: &Tensor, dims: &[usize]| -> Result<()> {
            if t.dims() != dims {
                return Err(bad(what, format!("shape {:?}, expected {dims:?}", t.dims())));
            }
            if t.dtype() != weight.dtype() || !t.device().same_device(weight.device()) {
                return Err(bad(what, "dtype or device differs from the weight's"));
            }
            Ok(())
        };
        if let Some(bias) = &bias {
            same("bias", bias, &[n])?;
        }
        match &adapters {
            LoraAdapters::Single { a, b, scale } => {
                let r = a.dims().first().copied().unwrap_or(0);
                same("a", a, &[r, k])?;
                same("b", b, &[n, r])?;
                check_scale(*scale)?;
                if r == 0 {
                    return Err(bad("a", "rank 0"));
                }
            }
            LoraAdapters::Stack { a, b, ranks, scales, rows } => {
                let (l, r_max) = match a.dims() {
                    [l, r_max, _] => (*l, *r_max),
                    dims => return Err(bad("a", format!("shape {dims:?}, expected [L, r_max, {k}]"))),
                };
                same("a", a, &[l, r_max, k])?;
                same("b", b, &[l, n, r_max])?;
                if ranks.len() != l || scales.len() != l {
                    return Err(bad(
                        "ranks/scales",
                        format!("{} and {} entries for {l} adapters", ranks.len(), scales.len()),
                    ));
                }
                if let Some(r) = ranks.iter().find(|&&r| r == 0 || r > r_max) {
                    return Err(bad("ranks", format!("rank {r} outside 1..={r_max}")));
                }
                scales.iter().try_for_each(|&s| check_scale(s))?;
                check_rows(rows, l, weight.device())?;
            }
        }
        Ok(LoraLinear { weight, bias, adapters })
    }

    /// Replaces the per-row adapter indices of a stacked layer (`[m]` I32 in `[−1, L)`).
    ///
    /// # Errors
    /// A layer with a single adapter, or an index tensor that is invalid.
    pub fn set_rows(&mut self, new_rows: Tensor) -> Result<()> {
        match &mut self.adapters {
            LoraAdapters::Stack { a, rows, .. } => {
                check_rows(&new_rows, a.dim(0)?, self.weight.device())?;
                *rows = new_rows;
                Ok(())
            }
            LoraAdapters::Single { .. } => Err(bad("rows", "a layer with one adapter has no per-row indices")),
        }
    }

    /// W0 `[n, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[n]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The adapters.
    pub fn adapters(&self) -> &LoraAdapters {
        &self.adapters
    }

    /// The forward pass with candle's ops only (what the CPU runs): the
    /// unfused computation, differentiable by candle's autograd.
    pub fn forward_unfused(&self, x: &Tensor) -> Result<Tensor> {
        let (x2, out_dims) = self.rows_of(x)?;
        let mut y = x2.matmul(&self.weight.t()?)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        let lora = match &self.adapters {
            LoraAdapters::Single { a, b, scale } => (x2.matmul(&a.t()?)?.matmul(&b.t()?)? * f64::from(*scale))?,
            LoraAdapters::Stack { a, b, ranks, scales, rows } => stack_unfused(&x2, a, b, ranks, scales, rows)?,
        };
        (y + lora)?.reshape(out_dims)
    }

    /// X as `[m, k]` (contiguous) and the output's dims.
    fn rows_of(&self, x: &Tensor) -> Result<(Tensor, Vec<usize>)> {
        let (n, k) = self.weight.dims2()?;
        let dims = x.dims();
        if dims.last() != Some(&k) {
            return Err(bad("x", format!("shape {dims:?}: the last dimension must be k = {k}")));
        }
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("checked above") = n;
        let m = x.elem_count() / k;
        Ok((x.reshape((m, k))?.contiguous()?, out_dims))
    }
}

impl Module for LoraLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "candle-cuda")]
        if x.device().is_cuda() {
            let (x2, out_dims) = self.rows_of(x)?;
            return cuda::forward(self, &x2)?.reshape(out_dims);
        }
        self.forward_unfused(x)
    }
}

fn check_scale(scale: f32) -> Result<()> {
    if scale.is_finite() {
        Ok(())
    } else {
        Err(bad("scale", format!("{scale} is not finite")))
    }
}

/// A row-index tensor: `[m]` I32 in `[−1, L)` on the layer's device.
fn check_rows(rows: &Tensor, num_adapters: usize, device: &Device) -> Result<()> {
    if rows.dtype() != DType::I32 || rows.rank() != 1 || !rows.device().same_device(device) {
        return Err(bad("rows", "expected a [m] I32 tensor on the weight's device"));
    }
    let host: Vec<i32> = rows.to_device(&Device::Cpu)?.to_vec1()?;
    match host.iter().position(|&i| i < -1 || i64::from(i) >= num_adapters as i64) {
        Some(row) => Err(bad("rows", format!("row {row} has index {}, outside [-1, {num_adapters})", host[row]))),
        None => Ok(()),
    }
}

/// `Σ_l rows==l · s_l · (x·A_lᵀ)·B_lᵀ` with candle's ops, the padding of each
/// adapter masked to zero (where it may hold NaN, a multiplication would not do).
fn stack_unfused(x: &Tensor, a: &Tensor, b: &Tensor, ranks: &[usize], scales: &[f32], rows: &Tensor) -> Result<Tensor> {
    let (l, r_max, k) = a.dims3()?;
    let n = b.dim(1)?;
    let m = x.dim(0)?;
    let device = x.device();
    // in_rank[l, j] = j < ranks[l]
    let in_rank: Vec<u8> = (0..l * r_max).map(|i| u8::from(i % r_max < ranks[i / r_max])).collect();
    let in_rank = Tensor::from_vec(in_rank, (l, r_max), device)?;
    let a = in_rank.unsqueeze(2)?.broadcast_as((l, r_max, k))?.where_cond(a, &a.zeros_like()?)?;
    let b = in_rank.unsqueeze(1)?.broadcast_as((l, n, r_max))?.where_cond(b, &b.zeros_like()?)?;
    // Per row and slot column, the row's scale if the column belongs to its adapter, else 0.
    let host_rows: Vec<i32> = rows.to_device(&Device::Cpu)?.to_vec1()?;
    if host_rows.len() != m {
        return Err(bad("rows", format!("{} indices for {m} rows", host_rows.len())));
    }
    let mut weights = vec![0f32; m * l * r_max];
    for (row, &index) in host_rows.iter().enumerate() {
        if let Ok(adapter) = usize::try_from(index) {
            weights[row * l * r_max + adapter * r_max..][..r_max].fill(scales[adapter]);
        }
    }
    let weights = Tensor::from_vec(weights, (m, l * r_max), device)?.to_dtype(x.dtype())?;
    let p = x.matmul(&a.reshape((l * r_max, k))?.t()?)?;
    let b_cat = b.transpose(1, 2)?.contiguous()?.reshape((l * r_max, n))?;
    (p * weights)?.matmul(&b_cat)
}

//! Adapters of different ranks packed into the stacked layout the per-row
//! entry points take ([`AdapterStack`]): A_all `[L, r_max, k]`, B_all
//! `[L, n, r_max]`, built on the device from one [`Adapter`] per slot, every
//! buffer checked on the way in.
//!
//! ```
//! use fused_lora::cudarc::driver::CudaContext;
//! use fused_lora::half::bf16;
//! use fused_lora::{Adapter, AdapterConfig, PackedAdapters, Scaling};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // Without a CUDA driver (plain `cargo test` on a machine without one) there is nothing to run.
//! # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
//! let ctx = CudaContext::new(0)?;
//! let stream = ctx.default_stream();
//! let (n, k) = (128, 256);
//! let (small, large) = (AdapterConfig::new(8, 16.0, Scaling::AlphaOverRank)?, AdapterConfig::new(64, 16.0, Scaling::AlphaOverSqrtRank)?);
//! let (a0, b0) = (stream.alloc_zeros::<bf16>(8 * k)?, stream.alloc_zeros::<bf16>(n * 8)?);
//! let (a1, b1) = (stream.alloc_zeros::<bf16>(64 * k)?, stream.alloc_zeros::<bf16>(n * 64)?);
//! let adapters = [Adapter::new(&small, a0.as_view(), b0.as_view())?, Adapter::new(&large, a1.as_view(), b1.as_view())?];
//! let packed = PackedAdapters::pack(&stream, n, k, &adapters)?;
//! assert_eq!((packed.num_adapters(), packed.r_max()), (2, 64));
//! let stack = packed.stack(); // for forward_multi / backward_multi
//! # let _ = stack;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DeviceSlice};

use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::forward::AdapterStack;
use crate::merge::Adapter;
use crate::validate::{check_context, check_dim, check_len, check_scale, element_count};

/// L adapters of ranks `r_l ≤ r_max` in the stacked layout, owned on the
/// device. Adapter l's A fills the first `r_l` rows of its `[r_max, k]` slot
/// and its B the first `r_l` columns of its `[n, r_max]` slot; the padding is
/// zero and the kernels never read it.
pub struct PackedAdapters<T> {
    a: CudaSlice<T>,
    b: CudaSlice<T>,
    n: usize,
    k: usize,
    r_max: usize,
    ranks: Vec<usize>,
    scales: Vec<f32>,
}

impl<T: LoraDType> PackedAdapters<T> {
    /// Packs `adapters` (each A `[r_l, k]`, B `[n, r_l]`, scale `s_l`, any
    /// ranks) for a layer of `n` outputs and `k` inputs, with stream-ordered
    /// device-to-device copies on `stream`: one for each A, and for each B one
    /// per row of B when `r_l < r_max` (one in all when `r_l = r_max`). A
    /// one-time cost, when adapters are loaded.
    ///
    /// # Errors
    /// [`LoraError::InvalidArgument`] for a zero `n`, `k` or adapter count;
    /// [`LoraError::InAdapter`] wrapping the first bad adapter's problem (a
    /// zero rank, a non-finite scale, a buffer whose length is not its shape's,
    /// a buffer of another context); [`LoraError::Driver`] from the copies.
    pub fn pack(stream: &Arc<CudaStream>, n: usize, k: usize, adapters: &[Adapter<'_, T>]) -> Result<Self> {
        check_dim("n", n)?;
        check_dim("k", k)?;
        check_dim("adapters.len()", adapters.len())?;
        for (index, adapter) in adapters.iter().enumerate() {
            check_adapter(stream, n, k, adapter)
                .map_err(|error| LoraError::InAdapter { adapter: index, error: Box::new(error) })?;
        }
        let num_adapters = adapters.len();
        let r_max = adapters.iter().map(|adapter| adapter.rank).max().unwrap_or(1);
        let a_len = element_count("a_all", &[num_adapters, r_max, k])?;
        let b_len = element_count("b_all", &[num_adapters, n, r_max])?;
        let mut a_all = stream.alloc_zeros::<T>(a_len)?;
        let mut b_all = stream.alloc_zeros::<T>(b_len)?;
        for (l, adapter) in adapters.iter().enumerate() {
            let r = adapter.rank;
            let a_slot = l * r_max * k;
            stream.memcpy_dtod(&adapter.a, &mut a_all.slice_mut(a_slot..a_slot + r * k))?;
            let b_slot = l * n * r_max;
            if r == r_max {
                stream.memcpy_dtod(&adapter.b, &mut b_all.slice_mut(b_slot..b_slot + n * r_max))?;
            } else {
                for row in 0..n {
                    let dst = b_slot + row * r_max;
                    stream.memcpy_dtod(&adapter.b.slice(row * r..(row + 1) * r), &mut b_all.slice_mut(dst..dst + r))?;
                }
            }
        }
        Ok(PackedAdapters {
            a: a_all,
            b: b_all,
            n,
            k,
            r_max,
            ranks: adapters.iter().map(|adapter| adapter.rank).collect(),
            scales: adapters.iter().map(|adapter| adapter.scale).collect(),
        })
    }

    /// The stack for [`crate::LoraKernels::forward_multi`] and
    /// [`crate::LoraKernels::backward_multi`].
    pub fn stack(&self) -> AdapterStack<'_, T> {
        AdapterStack {
            a: self.a.as_view(),
            b: self.b.as_view(),
            r_max: self.r_max,
            ranks: &self.ranks,
            scales: &self.scales,
        }
    }

    /// The number of adapters L.
    pub fn num_adapters(&self) -> usize {
        self.ranks.len()
    }

    /// The largest rank, the width of every slot.
    pub fn r_max(&self) -> usize {
        self.r_max
    }

    /// Output features N of the layer the adapters belong to.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features K of the layer the adapters belong to.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Each adapter's rank.
    pub fn ranks(&self) -> &[usize] {
        &self.ranks
    }

    /// Each adapter's scale.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// A_all `[L, r_max, k]`.
    pub fn a(&self) -> &CudaSlice<T> {
        &self.a
    }

    /// B_all `[L, n, r_max]`.
    pub fn b(&self) -> &CudaSlice<T> {
        &self.b
    }
}

/// One adapter's rank, scale, context and buffer lengths.
fn check_adapter<T>(stream: &Arc<CudaStream>, n: usize, k: usize, adapter: &Adapter<'_, T>) -> Result<()> {
    check_dim("rank", adapter.rank)?;
    check_scale("scale", adapter.scale)?;
    check_context(stream, "a", adapter.a.stream())?;
    check_context(stream, "b", adapter.b.stream())?;
    check_len("a", adapter.a.len(), &[adapter.rank, k])?;
    check_len("b", adapter.b.len(), &[n, adapter.rank])
}

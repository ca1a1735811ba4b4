//! Merge and unmerge adapters into base weights, over many layers in one launch:
//!
//! ```text
//! W ← W + s·B·A     (merge)        W ← W − s·B·A     (unmerge)
//! ```
//!
//! The product is accumulated in f32 and each weight rounded once to its
//! type. **Unmerge after merge is not exact in f16/bf16**: the merged weight
//! was rounded, so `W + s·B·A − s·B·A` can differ from `W` by an ulp of the
//! merged value. Keep the original weights (or use [`LoraKernels::merge_into`],
//! which writes to a separate buffer) when you need them back bit for bit.

use std::sync::Arc;

use cudarc::driver::{
    CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr, DeviceSlice, LaunchConfig, PushKernelArg,
    SyncOnDrop,
};

use crate::config::AdapterConfig;
use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::kernels::{LoraKernels, MERGE};
use crate::params::{
    LoraMergeLayer, LoraMergeMode_LORA_MERGE_CHECK, LoraMergeMode_LORA_MERGE_WRITE,
    LoraMergeMode_LORA_MERGE_WRITE_IF_FINITE, LoraMergeParams, LORA_MERGE_THREADS, LORA_MERGE_TILE_K,
    LORA_MERGE_TILE_N,
};
use crate::validate::{check_context, check_dim, check_len, cols_of, Span};

// SAFETY: plain `#[repr(C)]` structs of integers and floats, generated from the
// same C header the kernels include.
unsafe impl DeviceRepr for LoraMergeLayer {}
unsafe impl DeviceRepr for LoraMergeParams {}

/// Add or subtract the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `W + s·B·A`
    Merge,
    /// `W − s·B·A`
    Unmerge,
}

/// What to do when a result is NaN or ±Inf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FiniteCheck {
    /// Write every result, whatever it is. Fully stream-ordered.
    Unchecked,
    /// Compute everything first; if any result of any layer is not finite,
    /// write nothing and return [`LoraError::NonFinite`]. Costs a second pass
    /// and one host synchronisation (to report the outcome).
    RefuseNonFinite,
}

/// The adapter of one layer: A `[r, k]`, B `[n, r]` and the scale `s`.
pub struct Adapter<'a, T> {
    /// A `[r, k]` (`lora_A.weight`).
    pub a: CudaView<'a, T>,
    /// B `[n, r]` (`lora_B.weight`).
    pub b: CudaView<'a, T>,
    /// Rank r.
    pub rank: usize,
    /// The scale s (e.g. [`crate::AdapterConfig::scale`]); the direction gives the sign.
    pub scale: f32,
}

impl<'a, T> Adapter<'a, T> {
    /// The adapter `config` describes, on its device buffers A `[rank, k]`
    /// and B `[n, rank]`: the rank and the scale s come from the config
    /// ([`AdapterConfig::scale`]), so they cannot disagree with it.
    ///
    /// # Errors
    /// [`LoraError::ShapeMismatch`] if A's or B's length is not a whole
    /// number of rank-wide rows or columns (K and N are checked against the
    /// layer where the adapter is used).
    pub fn new(config: &AdapterConfig, a: CudaView<'a, T>, b: CudaView<'a, T>) -> Result<Self> {
        let rank = config.rank();
        cols_of("a", a.len(), rank)?;
        rows_of_b(b.len(), rank)?;
        Ok(Adapter { a, b, rank, scale: config.scale() })
    }
}

/// B `[n, rank]` with n implied: a whole number of rank-wide rows.
fn rows_of_b(len: usize, rank: usize) -> Result<usize> {
    if len == 0 || len % rank != 0 {
        return Err(LoraError::ShapeMismatch {
            what: "b",
            expected: vec![len.div_ceil(rank).max(1), rank],
            got: vec![len],
        });
    }
    Ok(len / rank)
}

/// One layer updated in place: `weight` `[n, k]`.
pub struct MergeLayer<'a, T> {
    /// W `[n, k]`, updated in place.
    pub weight: CudaViewMut<'a, T>,
    /// Output features N.
    pub n: usize,
    /// Input features K.
    pub k: usize,
    /// The adapter merged into (or out of) W.
    pub adapter: Adapter<'a, T>,
}

/// One layer whose update goes to a separate buffer: `out = weight ± s·B·A`,
/// both `[n, k]`; `weight` is left untouched.
pub struct MergeIntoLayer<'a, T> {
    /// W `[n, k]`, read only.
    pub weight: CudaView<'a, T>,
    /// Where `W ± s·B·A` is written, `[n, k]`.
    pub out: CudaViewMut<'a, T>,
    /// Output features N.
    pub n: usize,
    /// Input features K.
    pub k: usize,
    /// The adapter merged into (or out of) W.
    pub adapter: Adapter<'a, T>,
}

/// What the launch needs to know of one layer, after validation.
struct Resolved {
    desc: LoraMergeLayer,
    weight: Span,
    out: Span,
    a: Span,
    b: Span,
}

impl LoraKernels {
    /// Merges (or unmerges) each layer's adapter into its weight, in place,
    /// all layers in one launch on `stream`.
    ///
    /// # Arguments
    /// - `layers`: per layer, the weight `[n, k]` and its adapter (A `[r, k]`,
    ///   B `[n, r]`, scale s); every buffer holds exactly its shape's elements.
    ///
    /// # Errors
    /// - [`LoraError::InLayer`] wrapping the first bad layer's problem: a zero
    ///   or too large dimension, a buffer whose length is not its shape's, a
    ///   non-finite scale, a buffer of another context than `stream`;
    /// - [`LoraError::Aliasing`] if a layer's weight overlaps any A or B, or
    ///   another layer's weight;
    /// - [`LoraError::NonFinite`] with [`FiniteCheck::RefuseNonFinite`] when a
    ///   result would be NaN or ±Inf (nothing is written);
    /// - [`LoraError::Driver`] from the launch.
    ///
    /// # Example
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
    /// # let ctx = fused_lora::cudarc::driver::CudaContext::new(0)?;
    /// # let stream = ctx.default_stream();
    /// # let kernels = fused_lora::LoraKernels::new(&ctx);
    /// use fused_lora::half::f16;
    /// use fused_lora::{Adapter, Direction, FiniteCheck, MergeLayer};
    ///
    /// let (n, k, r) = (16, 32, 2);
    /// let mut w = stream.clone_htod(&vec![f16::ONE; n * k])?;
    /// let (a, b) = (stream.clone_htod(&vec![f16::ONE; r * k])?, stream.clone_htod(&vec![f16::ONE; n * r])?);
    /// let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale: 0.25 };
    /// let mut layers = [MergeLayer { weight: w.as_view_mut(), n, k, adapter }];
    /// kernels.merge(&stream, &mut layers, Direction::Unmerge, FiniteCheck::Unchecked)?;
    /// assert!(stream.clone_dtoh(&w)?.iter().all(|v| v.to_f32() == 0.5)); // 1 − 0.25·2
    /// # Ok(())
    /// # }
    /// ```
    pub fn merge<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        layers: &mut [MergeLayer<'_, T>],
        direction: Direction,
        check: FiniteCheck,
    ) -> Result<()> {
        self.check_stream(stream)?;
        let mut guards: Vec<SyncOnDrop<'_>> = Vec::with_capacity(layers.len() * 3);
        let mut resolved = Vec::with_capacity(layers.len());
        for (index, layer) in layers.iter_mut().enumerate() {
            let MergeLayer { weight, n, k, adapter } = layer;
            let r = resolve(stream, index, weight, *n, *k, adapter, direction, &mut guards)?;
            resolved.push(r);
        }
        self.launch_merge::<T>(stream, resolved, true, check)
    }

    /// Like [`LoraKernels::merge`], but writes `weight ± s·B·A` to each layer's
    /// `out` and leaves `weight` as it was. `out` must not overlap any input,
    /// nor another layer's `out`.
    ///
    /// # Errors
    /// As [`LoraKernels::merge`].
    ///
    /// # Example
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
    /// # let ctx = fused_lora::cudarc::driver::CudaContext::new(0)?;
    /// # let stream = ctx.default_stream();
    /// # let kernels = fused_lora::LoraKernels::new(&ctx);
    /// use fused_lora::half::bf16;
    /// use fused_lora::{Adapter, Direction, FiniteCheck, MergeIntoLayer};
    ///
    /// let (n, k, r) = (16, 32, 2);
    /// let w = stream.clone_htod(&vec![bf16::ONE; n * k])?;
    /// let mut merged = stream.alloc_zeros::<bf16>(n * k)?;
    /// let (a, b) = (stream.clone_htod(&vec![bf16::ONE; r * k])?, stream.clone_htod(&vec![bf16::ONE; n * r])?);
    /// let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale: 0.5 };
    /// let mut layers = [MergeIntoLayer { weight: w.as_view(), out: merged.as_view_mut(), n, k, adapter }];
    /// kernels.merge_into(&stream, &mut layers, Direction::Merge, FiniteCheck::RefuseNonFinite)?;
    /// assert!(stream.clone_dtoh(&merged)?.iter().all(|v| v.to_f32() == 2.0)); // 1 + 0.5·2; W untouched
    /// # Ok(())
    /// # }
    /// ```
    pub fn merge_into<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        layers: &mut [MergeIntoLayer<'_, T>],
        direction: Direction,
        check: FiniteCheck,
    ) -> Result<()> {
        self.check_stream(stream)?;
        let mut guards: Vec<SyncOnDrop<'_>> = Vec::with_capacity(layers.len() * 4);
        let mut resolved = Vec::with_capacity(layers.len());
        for (index, layer) in layers.iter_mut().enumerate() {
            let MergeIntoLayer { weight, out, n, k, adapter } = layer;
            let r = resolve_into(stream, index, weight, out, *n, *k, adapter, direction, &mut guards)?;
            resolved.push(r);
        }
        self.launch_merge::<T>(stream, resolved, false, check)
    }

    /// Checks aliasing, numbers the tiles and launches; `in_place`: each
    /// layer's output is its weight.
    fn launch_merge<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        mut layers: Vec<Resolved>,
        in_place: bool,
        check: FiniteCheck,
    ) -> Result<()> {
        check_aliasing(&layers, in_place)?;
        number_tiles(&mut layers);
        if layers.is_empty() {
            return Ok(());
        }
        let total_tiles = layers.last().map(|l| l.desc.first_tile + tiles_of(l.desc.n, l.desc.k)).unwrap_or(0);
        if total_tiles > i32::MAX as i64 {
            return Err(LoraError::InvalidArgument {
                what: "layers",
                value: format!("{total_tiles} tiles"),
                reason: "more output tiles than one launch's grid can hold (2^31 - 1)",
            });
        }
        let descs: Vec<LoraMergeLayer> = layers.iter().map(|l| l.desc).collect();
        let descs = stream.clone_htod(&descs)?;
        let flags = stream.alloc_zeros::<i32>(layers.len())?;
        let function = self.function(MERGE, &format!("lora_merge_{}", T::DTYPE.kernel_suffix()))?;
        let config = LaunchConfig {
            grid_dim: (total_tiles as u32, 1, 1),
            block_dim: (LORA_MERGE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };

        let modes = match check {
            FiniteCheck::Unchecked => vec![LoraMergeMode_LORA_MERGE_WRITE],
            FiniteCheck::RefuseNonFinite => {
                vec![LoraMergeMode_LORA_MERGE_CHECK, LoraMergeMode_LORA_MERGE_WRITE_IF_FINITE]
            }
        };
        {
            let (descs_ptr, _descs_guard) = descs.device_ptr(stream);
            let (flags_ptr, _flags_guard) = flags.device_ptr(stream);
            for mode in modes {
                let params = LoraMergeParams {
                    layers: descs_ptr,
                    nonfinite_flags: flags_ptr,
                    num_layers: layers.len() as i32,
                    mode: mode as i32,
                    total_tiles,
                };
                let mut launch = stream.launch_builder(&function);
                launch.arg(&params);
                // SAFETY: every pointer in `params` and in the layer table was
                // taken from a live buffer of this context whose length was
                // checked against its layer's shape (`resolve`); outputs alias
                // no input (`check_aliasing`); the grid covers exactly the tiles
                // the table describes, and the kernel bounds-checks each tile's
                // edge against the layer's n and k.
                unsafe { launch.launch(config) }?;
            }
        }

        if check == FiniteCheck::RefuseNonFinite {
            let flags = stream.clone_dtoh(&flags)?;
            if let Some(layer) = flags.iter().position(|&f| f != 0) {
                return Err(LoraError::NonFinite { op: "merge", layer });
            }
        }
        Ok(())
    }
}

fn tiles_of(n: i32, k: i32) -> i64 {
    let tiles_n = (n as u64).div_ceil(LORA_MERGE_TILE_N as u64);
    let tiles_k = (k as u64).div_ceil(LORA_MERGE_TILE_K as u64);
    (tiles_n * tiles_k) as i64
}

fn in_layer(layer: usize, error: LoraError) -> LoraError {
    LoraError::InLayer { layer, error: Box::new(error) }
}

/// Checks a buffer's length and context; the shape is `[rows, cols]`.
fn check_buffer(
    stream: &Arc<CudaStream>,
    what: &'static str,
    len: usize,
    buffer_stream: &Arc<CudaStream>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    check_context(stream, what, buffer_stream)?;
    check_len(what, len, &[rows, cols])
}

/// Validates one layer's dimensions, adapter and scale, and fills the kernel
/// descriptor (pointers filled by the caller).
fn describe<T>(
    stream: &Arc<CudaStream>,
    n: usize,
    k: usize,
    adapter: &Adapter<'_, T>,
    direction: Direction,
) -> Result<LoraMergeLayer> {
    let n32 = check_dim("n", n)?;
    let k32 = check_dim("k", k)?;
    let r32 = check_dim("rank", adapter.rank)?;
    n.checked_mul(k).filter(|&nk| nk <= isize::MAX as usize / 4).ok_or_else(|| LoraError::InvalidArgument {
        what: "n * k",
        value: format!("{n} * {k}"),
        reason: "too many elements",
    })?;
    if !adapter.scale.is_finite() {
        return Err(LoraError::InvalidArgument {
            what: "scale",
            value: adapter.scale.to_string(),
            reason: "must be finite",
        });
    }
    check_buffer(stream, "a", adapter.a.len(), adapter.a.stream(), adapter.rank, k)?;
    check_buffer(stream, "b", adapter.b.len(), adapter.b.stream(), n, adapter.rank)?;
    let scale = match direction {
        Direction::Merge => adapter.scale,
        Direction::Unmerge => -adapter.scale,
    };
    Ok(LoraMergeLayer { w: 0, out: 0, a: 0, b: 0, scale, n: n32, k: k32, r: r32, first_tile: 0 })
}

#[allow(clippy::too_many_arguments)]
fn resolve<'a, T: LoraDType>(
    stream: &'a Arc<CudaStream>,
    index: usize,
    weight: &'a mut CudaViewMut<'_, T>,
    n: usize,
    k: usize,
    adapter: &'a Adapter<'_, T>,
    direction: Direction,
    guards: &mut Vec<SyncOnDrop<'a>>,
) -> Result<Resolved> {
    let mut desc = describe(stream, n, k, adapter, direction).map_err(|e| in_layer(index, e))?;
    check_buffer(stream, "weight", weight.len(), weight.stream(), n, k).map_err(|e| in_layer(index, e))?;
    let (w_ptr, w_guard) = weight.device_ptr_mut(stream);
    let (a_ptr, a_guard) = adapter.a.device_ptr(stream);
    let (b_ptr, b_guard) = adapter.b.device_ptr(stream);
    guards.extend([w_guard, a_guard, b_guard]);
    desc.w = w_ptr;
    desc.out = w_ptr;
    desc.a = a_ptr;
    desc.b = b_ptr;
    Ok(spans::<T>(desc, w_ptr, w_ptr))
}

#[allow(clippy::too_many_arguments)]
fn resolve_into<'a, T: LoraDType>(
    stream: &'a Arc<CudaStream>,
    index: usize,
    weight: &'a CudaView<'_, T>,
    out: &'a mut CudaViewMut<'_, T>,
    n: usize,
    k: usize,
    adapter: &'a Adapter<'_, T>,
    direction: Direction,
    guards: &mut Vec<SyncOnDrop<'a>>,
) -> Result<Resolved> {
    let mut desc = describe(stream, n, k, adapter, direction).map_err(|e| in_layer(index, e))?;
    check_buffer(stream, "weight", weight.len(), weight.stream(), n, k).map_err(|e| in_layer(index, e))?;
    check_buffer(stream, "out", out.len(), out.stream(), n, k).map_err(|e| in_layer(index, e))?;
    let (w_ptr, w_guard) = weight.device_ptr(stream);
    let (out_ptr, out_guard) = out.device_ptr_mut(stream);
    let (a_ptr, a_guard) = adapter.a.device_ptr(stream);
    let (b_ptr, b_guard) = adapter.b.device_ptr(stream);
    guards.extend([w_guard, out_guard, a_guard, b_guard]);
    desc.w = w_ptr;
    desc.out = out_ptr;
    desc.a = a_ptr;
    desc.b = b_ptr;
    Ok(spans::<T>(desc, w_ptr, out_ptr))
}

fn spans<T>(desc: LoraMergeLayer, w_ptr: u64, out_ptr: u64) -> Resolved {
    let (n, k, r) = (desc.n as usize, desc.k as usize, desc.r as usize);
    Resolved {
        desc,
        weight: Span::of::<T>("weight", w_ptr, n * k),
        out: Span::of::<T>("out", out_ptr, n * k),
        a: Span::of::<T>("a", desc.a, r * k),
        b: Span::of::<T>("b", desc.b, n * r),
    }
}

/// Every output must be disjoint from every input it does not own and from
/// every other output: a CTA reads A, B and its own W tile while other CTAs
/// write, with no ordering between them. `in_place`: out == weight by design.
fn check_aliasing(layers: &[Resolved], in_place: bool) -> Result<()> {
    for (i, li) in layers.iter().enumerate() {
        for (j, lj) in layers.iter().enumerate() {
            if li.out.overlaps(&lj.a) {
                return Err(LoraError::Aliasing { output: if in_place { "weight" } else { "out" }, input: "a" });
            }
            if li.out.overlaps(&lj.b) {
                return Err(LoraError::Aliasing { output: if in_place { "weight" } else { "out" }, input: "b" });
            }
            if i != j && li.out.overlaps(&lj.out) {
                return Err(LoraError::Aliasing {
                    output: if in_place { "weight" } else { "out" },
                    input: "another layer's output",
                });
            }
            if !in_place && li.out.overlaps(&lj.weight) {
                return Err(LoraError::Aliasing { output: "out", input: "weight" });
            }
        }
    }
    Ok(())
}

/// Gives each layer the index of its first tile: the prefix sums of the tile
/// counts, which is how a CTA finds its layer.
fn number_tiles(layers: &mut [Resolved]) {
    let mut next = 0i64;
    for layer in layers {
        layer.desc.first_tile = next;
        next += tiles_of(layer.desc.n, layer.desc.k);
    }
}

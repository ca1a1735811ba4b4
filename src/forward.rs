//! The forward pass: shrink, fused forward, expand, for one adapter or one
//! adapter per row (docs/contract.md's names and layouts):
//!
//! ```text
//! P = X·Aᵀ                       [M, r]   (written out for the backward pass if asked)
//! Y = X·W0ᵀ + bias + s·P·Bᵀ      [M, N]   one kernel, Y written once
//! ```
//!
//! ```
//! use fused_lora::cudarc::driver::CudaContext;
//! use fused_lora::{Adapter, ForwardOutput, Linear, LoraKernels};
//! use fused_lora::half::bf16;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // Without a CUDA driver (plain `cargo test` on a machine without one) there is nothing to run.
//! # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
//! let ctx = CudaContext::new(0)?;
//! let stream = ctx.default_stream();
//! let kernels = LoraKernels::new(&ctx);
//! let (m, k, n, r) = (16, 256, 128, 16);
//! let x = stream.clone_htod(&vec![bf16::ONE; m * k])?; // X [M, K]
//! let w0 = stream.clone_htod(&vec![bf16::ZERO; n * k])?; // W0 [N, K]
//! let a = stream.clone_htod(&vec![bf16::ONE; r * k])?; // A [r, K]
//! let b = stream.clone_htod(&vec![bf16::ONE; n * r])?; // B [N, r]
//! let mut y = stream.alloc_zeros::<bf16>(m * n)?; // Y [M, N]
//! let mut p = stream.alloc_zeros::<bf16>(m * r)?; // P [M, r], kept for backward
//!
//! let linear = Linear { weight: w0.as_view(), bias: None, n, k };
//! let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale: 2.0 };
//! let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
//! kernels.forward(&stream, &x.as_view(), &linear, &adapter, None, &mut out)?;
//! let y_host: Vec<bf16> = stream.clone_dtoh(&y)?; // synchronises
//! assert_eq!(y_host[0].to_f32(), 2.0 * (k * r) as f32);
//! # Ok(())
//! # }
//! ```
//!
//! # Numerics
//! f32 accumulation, each stored value rounded once to T. The fused forward
//! first writes `P = round_T(X·Aᵀ)` (unscaled), then computes
//! `Y = round_T(s·(P·Bᵀ) + X·W0ᵀ + bias)` from that rounded P: the adapter
//! K-steps run first on the accumulator, which is then multiplied by s in f32
//! before the base K-steps add on — the contract's formula up to the order of
//! f32 additions. [`LoraKernels::shrink`] stores the same `P = round_T(X·Aᵀ)`
//! (P has one meaning everywhere: unscaled; the scale enters where P is
//! used) and [`LoraKernels::expand`] stores `round_T(Y + s·P·Bᵀ)`.
//!
//! # Dropout
//! PEFT's `lora_dropout` on the adapter input: pass a [`Dropout`] (p, seed,
//! offset) and the shrink reads `X̃[m, k] = keep(m, k) ? round_T(X[m, k]·inv_keep) : 0`
//! instead of X, the mask drawn on the device from Philox-4x32-10 keyed by
//! `(seed, offset, m·K + k)`, bit for bit the CPU reference's
//! ([`crate::reference::forward`]) and the one [`LoraKernels::backward`]
//! regenerates from the same [`Dropout`]. P is then `round_T(X̃·Aᵀ)`; the base
//! term uses the undropped X. The mask is never stored; the dropped tiles are
//! staged element by element (no cp.async for X in that launch). `None` or
//! `p = 0`: no mask, the plain path. [`LoraKernels::shrink`] takes no dropout:
//! it is the plain GEMM `X·Aᵀ` of whatever input it is given.
//!
//! # Alignment rules
//! - `K` a multiple of 8 for f16/bf16 and of 4 for f32 (rows of X, W0, A are
//!   then whole 16-byte chunks), and X, W0 and A starting at 16-byte aligned
//!   device addresses (every cudarc allocation is; a view at an odd offset may
//!   not be). Anything else is [`LoraError::Misaligned`] (K) or
//!   [`LoraError::MisalignedAddress`] (an address).
//! - M, N, r and r_max are free (≥ 1): tails are predicated, and P and B are
//!   loaded element by element where their row stride (r) is not a multiple
//!   of 16 bytes.
//!
//! # Launches
//! The shrink runs on the rank side's kernel (cuda/rank_side.cuh, shared
//! with the backward's G, dA and dB): 32-row tiles by 32 rank columns, the
//! K reduction split over a CTA's 8 warps and added in warp order, no split
//! partials; with per-row indices the rows are first grouped by adapter on
//! the device (one small launch), so a scattered batch costs what its rows
//! cost. The fused forward and the expand are the same tiled GEMM (64×64 output tiles, K-steps of 32
//! through a cp.async pipeline; f16/bf16 on tensor cores with ldmatrix and
//! mma.sync m16n8k16, f32 with FMA; whole K-steps copied by per-thread copy
//! plans set up once per segment and advanced by a constant, as CUTLASS's
//! iterators are) over a "virtual K": the adapter K-steps,
//! then the base K-steps, on one f32 accumulator. [`LoraKernels::forward`]
//! is two launches (three with per-row indices): the shrink writing P, then
//! the fused GEMM. With few output tiles (small M, decode) and a long K, the
//! fused GEMM splits K over several CTAs per tile so every SM streams W0,
//! and a small second launch sums the f32 partials in a fixed order
//! (deterministic), adds the bias and rounds.
//!
//! # Counted efficiency (emulator counters, `tests/forward_counters.rs`)
//! For the fused GEMM launch (f16 and bf16, one-launch path):
//! - tensor-core instructions: exactly the FLOP minimum
//!   `⌈M/16⌉·⌈N/8⌉·(⌈K/16⌉ + ⌈r/16⌉)` on tile-aligned shapes (M=128, N=128,
//!   K=192, r=32: 1792 = 1792); otherwise the padded tile grid's count
//!   (M=113, N=136, K=200, r=40: 3456 against 2176, tail padding of the 64×64
//!   tiles and of r up to the 32-wide K-step);
//! - global loads fully coalesced: sectors × 32 bytes equal the tile-reuse
//!   minimum (each CTA reads its X/P rows and W0/B rows once) on aligned
//!   shapes, and every input byte is read;
//! - shared memory: zero bank conflicts, in ldmatrix and in the cp.async and
//!   other stores (f16/bf16 tiles XOR-swizzled, f32 tiles padded);
//! - Y written once, through a shared-memory staging of the output tile so
//!   each store instruction writes whole row segments: store sectors equal
//!   the output bytes on aligned shapes;
//! - the K loop's steady state (two launches differing only in K, M = N =
//!   128, r = 16): 4.00 warp instructions, 4 global load sectors and 3
//!   shared wavefronts per mma.sync (NVIDIA's CUTLASS Sm80 GEMM on the same
//!   64×64 tiles with 32×32 warp tiles: 5.08, 4 and 3; emu/core/tests/cutlass.rs);
//!   asserted at most 5;
//! - `ptxas -v` for sm_80 and sm_90: no spills, no stack frame (guarded by
//!   `tests/ptxas.rs`); GEMM f16/bf16: 91 and 96 registers (5 CTAs per SM
//!   by registers), 25.6 KB static shared memory; f32: 128 registers on
//!   both, 37.9 KB (the shrink, with or without dropout, is the rank
//!   side's: `src/rank_side.rs`).
//!
//! CTAs take their output tiles in groups of 8 tile rows, column by column
//! (`grouped_tile` in `cuda/tiles.cuh`), so the CTAs resident together share
//! a few X row blocks and W0 column blocks in L2; the order changes no
//! result. (Not measurable on the emulator, which models no L2.)
//!
//! # Several adapters
//! [`LoraKernels::forward_multi`] takes the adapters stacked ([`AdapterStack`])
//! and a device buffer of per-row indices. Indices are checked on the device,
//! where they are read: a row whose index lies outside `[−1, L)` is never used
//! to address an adapter; it gets the base output only (and a zero P row), and
//! the [`AdapterStatus`] passed with the call records the first such row.
//! Call [`AdapterStatus::check`] when you are ready to synchronise.

pub(crate) mod decode;
pub(crate) mod hopper;
pub(crate) mod launch;

use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut, DeviceSlice};

use crate::dropout::shrink_dropout;
use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::kernels::LoraKernels;
use crate::merge::Adapter;
use crate::params::{
    LoraAdapterMode_LORA_ADAPTER_EXPAND, LoraAdapterMode_LORA_ADAPTER_SHRINK, LoraDecodeParams, LoraGemmParams,
};
use crate::reference::Dropout;

use crate::validate::{
    check_address, check_context, check_dim, check_k_aligned, check_len, check_no_alias, check_rows, check_scale,
    cols_of, rows_of, Pointers, Span,
};
use hopper::HopperOperands;
use launch::{check_grid, takes_decode_path, takes_fused_p, takes_fused_p_cluster};

/// A frozen linear layer: W0 `[n, k]` and an optional bias `[n]`.
pub struct Linear<'a, T> {
    /// W0 `[n, k]`.
    pub weight: CudaView<'a, T>,
    /// The bias `[n]`, if any.
    pub bias: Option<CudaView<'a, T>>,
    /// Output features N.
    pub n: usize,
    /// Input features K.
    pub k: usize,
}

/// Where the forward pass writes: Y `[m, n]`, and optionally P (`[m, r]` for
/// one adapter, `[m, r_max]` for a stack) for the backward pass. Without P, a
/// scratch P is allocated on the stream for the call.
pub struct ForwardOutput<'a, T> {
    /// Y `[m, n]`, overwritten.
    pub y: CudaViewMut<'a, T>,
    /// P = X·Aᵀ (unscaled) `[m, r]` (`[m, r_max]` for a stack), kept for the backward pass if given.
    pub p: Option<CudaViewMut<'a, T>>,
}

/// `L` adapters stacked for per-row selection: A_all `[L, r_max, k]`,
/// B_all `[L, n, r_max]`. Adapter `l` uses the first `ranks[l]` rows of its A
/// and columns of its B only; the padding is never read (it may hold NaN).
pub struct AdapterStack<'a, T> {
    /// A_all `[L, r_max, k]`.
    pub a: CudaView<'a, T>,
    /// B_all `[L, n, r_max]`.
    pub b: CudaView<'a, T>,
    /// The slot width: the largest rank the stack may hold.
    pub r_max: usize,
    /// Per adapter, its rank in `1..=r_max`.
    pub ranks: &'a [usize],
    /// Per adapter, its scale s.
    pub scales: &'a [f32],
}

/// The per-row adapter indices of one batch, `[m]` i32 in `[−1, L)` (−1: no
/// adapter; any order), and where an out-of-range index is reported.
pub struct RowAdapters<'s, 'a> {
    /// The adapter index of each row, `[m]`, on the device.
    pub index: CudaView<'a, i32>,
    /// Where an out-of-range index is reported.
    pub status: &'s mut AdapterStatus,
}

/// A device word in which the kernels record the first row (lowest row
/// number) whose adapter index was out of range. Stream-ordered: several calls
/// may share it; [`AdapterStatus::check`] synchronises and reads it.
///
/// A status reports against one number of adapters L: the calls that share it
/// between two resets must all pass stacks of the same L (a call with another
/// L is refused), so the range a report names is the one the bad index broke.
pub struct AdapterStatus {
    pub(crate) word: CudaSlice<u64>,
    /// The L of the calls recorded since creation or the last reset.
    pub(crate) num_adapters: Option<usize>,
}

/// The status word's value while no bad index was seen; a report is
/// `row << 32 | index as u32`, and the kernels keep the smallest.
const STATUS_CLEAR: u64 = u64::MAX;

impl AdapterStatus {
    /// A clear status on `stream`'s context.
    ///
    /// # Errors
    /// [`LoraError::Driver`] if the allocation or the copy fails.
    pub fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        Ok(AdapterStatus { word: stream.clone_htod(&[STATUS_CLEAR])?, num_adapters: None })
    }

    /// Clears the status (stream-ordered); the next call may use any L.
    ///
    /// # Errors
    /// [`LoraError::Driver`] if the copy fails.
    pub fn reset(&mut self, stream: &Arc<CudaStream>) -> Result<()> {
        stream.memcpy_htod(&[STATUS_CLEAR], &mut self.word)?;
        self.num_adapters = None;
        Ok(())
    }

    /// The number of adapters L of the calls recorded since the last reset
    /// (`None` before the first).
    pub fn num_adapters(&self) -> Option<usize> {
        self.num_adapters
    }

    /// Records that a call with `num_adapters` adapters reports here.
    ///
    /// # Errors
    /// [`LoraError::InvalidArgument`] naming `status` if it already records
    /// calls with another L.
    pub(crate) fn record(&mut self, num_adapters: usize) -> Result<()> {
        match self.num_adapters {
            Some(recorded) if recorded != num_adapters => Err(LoraError::InvalidArgument {
                what: "status",
                value: format!("records calls with {recorded} adapters, this call has {num_adapters}"),
                reason: "a status reports against one number of adapters: reset it between stacks of different L, \
                         or use one status per stack",
            }),
            _ => {
                self.num_adapters = Some(num_adapters);
                Ok(())
            }
        }
    }

    /// Waits for `stream` and reports the first bad index recorded since the
    /// status was created or reset.
    ///
    /// # Errors
    /// [`LoraError::AdapterIndexOutOfRange`] naming the lowest bad row and its
    /// index; [`LoraError::Driver`] if the copy fails.
    pub fn check(&self, stream: &Arc<CudaStream>) -> Result<()> {
        let word = stream.clone_dtoh(&self.word)?;
        match word.first().copied() {
            Some(STATUS_CLEAR) | None => Ok(()),
            Some(report) => Err(LoraError::AdapterIndexOutOfRange {
                row: (report >> 32) as usize,
                index: i64::from(report as u32 as i32),
                num_adapters: self.num_adapters.unwrap_or(0),
            }),
        }
    }
}

impl LoraKernels {
    /// The fused forward pass with one adapter: `P = X·Aᵀ`, then
    /// `Y = X·W0ᵀ + bias + s·P·Bᵀ`. Two launches on `stream`, no host
    /// synchronisation: a shrink writing P, then the base GEMM with the adapter
    /// as extra K-steps on the same accumulator (Y written once).
    ///
    /// # Arguments
    /// - `x`: X `[m, k]` (m = `x.len() / k`);
    /// - `linear`: W0 `[n, k]`, bias `[n]`;
    /// - `adapter`: A `[r, k]`, B `[n, r]`, s;
    /// - `dropout`: dropout on the adapter input, if any (module docs:
    ///   dropout); keep it for the backward pass;
    /// - `out`: Y `[m, n]`, and P `[m, r]` if wanted.
    ///
    /// # Errors
    /// [`LoraError::ShapeMismatch`] for a buffer whose length is not its
    /// shape's; [`LoraError::RowsDisagree`] when Y or P holds another number
    /// of rows than X; [`LoraError::Misaligned`] or
    /// [`LoraError::MisalignedAddress`] (module docs: alignment rules);
    /// [`LoraError::InvalidArgument`] for a zero or too large dimension, a
    /// non-finite scale or a dropout p outside `[0, 1)`;
    /// [`LoraError::Aliasing`] if Y or P overlaps an input or each other;
    /// [`LoraError::ContextMismatch`]; [`LoraError::Driver`].
    pub fn forward<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        x: &CudaView<'_, T>,
        linear: &Linear<'_, T>,
        adapter: &Adapter<'_, T>,
        dropout: Option<&Dropout>,
        out: &mut ForwardOutput<'_, T>,
    ) -> Result<()> {
        self.check_stream(stream)?;
        let dropout = shrink_dropout(dropout)?;
        let (n, k, r) = (linear.n, linear.k, adapter.rank);
        check_linear(stream, linear)?;
        let m = rows_of("x", x.len(), k)?;
        check_context(stream, "x", x.stream())?;
        let r32 = check_dim("rank", r)?;
        check_scale("scale", adapter.scale)?;
        check_context(stream, "a", adapter.a.stream())?;
        check_context(stream, "b", adapter.b.stream())?;
        check_len("a", adapter.a.len(), &[r, k])?;
        check_len("b", adapter.b.len(), &[n, r])?;
        check_outputs(stream, out, m, n, r)?;
        check_k_aligned::<T>(k)?;
        check_grid(m)?;

        let mut scratch = match out.p {
            Some(_) => None,
            None => Some(stream.alloc_zeros::<T>(m * r)?),
        };
        let mut ptrs = Pointers::new(stream);
        let x_span = ptrs.read("x", x);
        let (w_span, bias_span) = read_linear(&mut ptrs, linear);
        let a_span = ptrs.read("a", &adapter.a);
        let b_span = ptrs.read("b", &adapter.b);
        let y_span = ptrs.write("y", &mut out.y);
        let p_span = match (&mut out.p, &mut scratch) {
            (Some(p), _) => ptrs.write("p", p),
            (None, Some(s)) => ptrs.write("p", s),
            (None, None) => unreachable!("a scratch P exists whenever out.p is None"),
        };
        let inputs = [x_span, w_span, bias_span, a_span, b_span];
        check_no_alias(&y_span, &inputs)?;
        check_no_alias(&p_span, &inputs)?;
        check_no_alias(&y_span, &[p_span])?;
        check_address("x", x_span.start)?;
        check_address("weight", w_span.start)?;
        check_address("a", a_span.start)?;

        let (m32, n32, k32) = (m as i32, n as i32, k as i32);
        if takes_decode_path(m, T::DTYPE.size_bytes() == 2, dropout.dropout != 0, r) {
            let params = LoraDecodeParams {
                x: x_span.start,
                w: w_span.start,
                a: a_span.start,
                b: b_span.start,
                bias: bias_span.start,
                y: y_span.start,
                p: p_span.start,
                m: m32,
                n: n32,
                k: k32,
                r_max: r32,
                num_adapters: 1,
                rank: r32,
                scale: adapter.scale,
                ..Default::default()
            };
            // SAFETY: as for the launches below; the decode path's conditions
            // were just checked.
            return unsafe { self.launch_decode::<T>(stream, &params) };
        }
        let shrink = LoraGemmParams {
            out: p_span.start,
            ad_mode: LoraAdapterMode_LORA_ADAPTER_SHRINK as i32,
            ad_lhs: x_span.start,
            ad_rhs: a_span.start,
            ad_k: k32,
            m: m32,
            n: r32,
            num_adapters: 1,
            rank: r32,
            scale: 1.0,
            ..dropout
        };
        let fused = LoraGemmParams {
            out: y_span.start,
            bias: bias_span.start,
            x: x_span.start,
            w: w_span.start,
            k: k32,
            ad_mode: LoraAdapterMode_LORA_ADAPTER_EXPAND as i32,
            ad_lhs: p_span.start,
            ad_lhs_ld: r32,
            ad_rhs: b_span.start,
            ad_rhs_ld: r32,
            m: m32,
            n: n32,
            num_adapters: 1,
            rank: r32,
            scale: adapter.scale,
            ..Default::default()
        };
        let hopper = HopperOperands {
            out: y_span.start,
            bias: bias_span.start,
            x: x_span.start,
            w: w_span.start,
            p: p_span.start,
            b: b_span.start,
            m,
            n,
            k,
            rank: r,
            scale: adapter.scale,
        };
        let hopper_path = self.takes_hopper_path(&hopper, T::DTYPE)?;
        let sms =
            self.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        // The fused-P tile reads B in 16-byte chunks. (Not P's address: P
        // kept or in scratch, Y must be the same bits.)
        let fused_p = !hopper_path
            && b_span.start % 16 == 0
            && takes_fused_p(sms, m, n, k, r, T::DTYPE.size_bytes() == 2, dropout.dropout != 0);
        let fused_p_cluster = !hopper_path
            && !fused_p
            && b_span.start % 16 == 0
            && takes_fused_p_cluster(
                sms,
                m,
                n,
                k,
                r,
                T::DTYPE.size_bytes() == 2,
                dropout.dropout != 0,
                self.compute_capability_90()?,
            );
        // SAFETY: every address above was taken from a buffer of this context
        // whose length was checked against its shape; Y and P overlap no input
        // nor each other; the shrink (which writes P) is ordered before the
        // fused launch (which reads it) on the same stream; the fused-P
        // launch's conditions were just checked.
        unsafe {
            if fused_p {
                let params = LoraGemmParams { shrink_rhs: a_span.start, ..fused };
                return self.launch_fused_p::<T>(stream, &params);
            }
            if fused_p_cluster {
                let params = LoraGemmParams { shrink_rhs: a_span.start, ..fused };
                return self.launch_fused_p_cluster::<T>(stream, &params);
            }
            self.launch_shrink::<T>(stream, &shrink)?;
            if hopper_path {
                return self.launch_hopper_gemm::<T>(stream, &hopper);
            }
            self.launch_gemm::<T>(stream, &fused)
        }
    }

    /// The fused forward pass with one adapter per row, chosen from a stack:
    /// row m uses adapter `index[m]` (−1: none): `P[m] = X[m]·A_lᵀ` (first
    /// `ranks[l]` columns; the rest of the row, and rows without an adapter,
    /// are 0), then `Y[m] = X[m]·W0ᵀ + bias + s_l·P[m]·B_lᵀ`.
    ///
    /// # Arguments
    /// - `x`: X `[m, k]`; `linear`: W0 `[n, k]`, bias `[n]`;
    /// - `adapters`: A_all `[L, r_max, k]`, B_all `[L, n, r_max]`, ranks and
    ///   scales `[L]`;
    /// - `rows`: the indices `[m]` (device, any order) and the status where a
    ///   bad index is reported (see [`AdapterStatus`]);
    /// - `dropout`: dropout on the adapter input, if any, for every row alike
    ///   (the mask index is `m·K + k` whatever the row's adapter);
    /// - `out`: Y `[m, n]`, and P `[m, r_max]` if wanted.
    ///
    /// # Errors
    /// As [`LoraKernels::forward`], plus [`LoraError::InvalidArgument`] for a
    /// rank outside `1..=r_max`, ranks/scales of different lengths, or a
    /// status that records calls with another number of adapters (see
    /// [`AdapterStatus`]); [`LoraError::RowsDisagree`] for an index buffer of
    /// another length than X's rows. An index
    /// out of range is not an error of this call (the host cannot see it
    /// without a synchronisation): it surfaces in [`AdapterStatus::check`].
    ///
    /// # Example
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
    /// # let ctx = fused_lora::cudarc::driver::CudaContext::new(0)?;
    /// # let stream = ctx.default_stream();
    /// # let kernels = fused_lora::LoraKernels::new(&ctx);
    /// use fused_lora::half::f16;
    /// use fused_lora::{Adapter, AdapterStatus, ForwardOutput, Linear, PackedAdapters, RowAdapters};
    ///
    /// let (m, k, n) = (4, 64, 32);
    /// let x = stream.clone_htod(&vec![f16::ONE; m * k])?;
    /// let w0 = stream.clone_htod(&vec![f16::ZERO; n * k])?;
    /// let (a0, b0) = (stream.clone_htod(&vec![f16::ONE; 2 * k])?, stream.clone_htod(&vec![f16::ONE; n * 2])?);
    /// let (a1, b1) = (stream.clone_htod(&vec![f16::ONE; 8 * k])?, stream.clone_htod(&vec![f16::ONE; n * 8])?);
    /// let adapters = [
    ///     Adapter { a: a0.as_view(), b: b0.as_view(), rank: 2, scale: 1.0 },
    ///     Adapter { a: a1.as_view(), b: b1.as_view(), rank: 8, scale: 0.5 },
    /// ];
    /// let packed = PackedAdapters::pack(&stream, n, k, &adapters)?;
    /// let index = stream.clone_htod(&[1i32, -1, 0, 1])?; // row 1: base layer only
    /// let mut status = AdapterStatus::new(&stream)?;
    /// let mut y = stream.alloc_zeros::<f16>(m * n)?;
    /// let linear = Linear { weight: w0.as_view(), bias: None, n, k };
    /// let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
    /// let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
    /// kernels.forward_multi(&stream, &x.as_view(), &linear, &packed.stack(), &mut rows, None, &mut out)?;
    /// status.check(&stream)?; // synchronises; Err if a row's index was out of range
    /// let y: Vec<f16> = stream.clone_dtoh(&y)?;
    /// assert_eq!([y[0].to_f32(), y[n].to_f32(), y[2 * n].to_f32()], [0.5 * (8 * k) as f32, 0.0, (2 * k) as f32]);
    /// # Ok(())
    /// # }
    /// ```
    // The arguments mirror `backward_multi`'s: grouping them into a struct
    // would only move the list into a literal at every call site.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_multi<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        x: &CudaView<'_, T>,
        linear: &Linear<'_, T>,
        adapters: &AdapterStack<'_, T>,
        rows: &mut RowAdapters<'_, '_>,
        dropout: Option<&Dropout>,
        out: &mut ForwardOutput<'_, T>,
    ) -> Result<()> {
        self.check_stream(stream)?;
        let dropout = shrink_dropout(dropout)?;
        let (n, k, r_max) = (linear.n, linear.k, adapters.r_max);
        check_linear(stream, linear)?;
        let m = rows_of("x", x.len(), k)?;
        check_context(stream, "x", x.stream())?;
        let ranks = check_stack(stream, adapters, rows, m, n, k)?;
        let num_adapters = ranks.len();
        let (r_max32, l32) = (r_max as i32, num_adapters as i32);
        check_outputs(stream, out, m, n, r_max)?;
        check_k_aligned::<T>(k)?;
        check_grid(m)?;

        let ranks = stream.clone_htod(&ranks)?;
        let scales = stream.clone_htod(adapters.scales)?;
        let mut scratch = match out.p {
            Some(_) => None,
            None => Some(stream.alloc_zeros::<T>(m * r_max)?),
        };
        rows.status.record(num_adapters)?;
        let mut ptrs = Pointers::new(stream);
        let x_span = ptrs.read("x", x);
        let (w_span, bias_span) = read_linear(&mut ptrs, linear);
        let a_span = ptrs.read("a", &adapters.a);
        let b_span = ptrs.read("b", &adapters.b);
        let index_span = ptrs.read("index", &rows.index);
        let ranks_span = ptrs.read("ranks", &ranks);
        let scales_span = ptrs.read("scales", &scales);
        let status_span = ptrs.write("status", &mut rows.status.word);
        let y_span = ptrs.write("y", &mut out.y);
        let p_span = match (&mut out.p, &mut scratch) {
            (Some(p), _) => ptrs.write("p", p),
            (None, Some(s)) => ptrs.write("p", s),
            (None, None) => unreachable!("a scratch P exists whenever out.p is None"),
        };
        let inputs = [x_span, w_span, bias_span, a_span, b_span, index_span, status_span];
        check_no_alias(&y_span, &inputs)?;
        check_no_alias(&p_span, &inputs)?;
        check_no_alias(&y_span, &[p_span])?;
        check_address("x", x_span.start)?;
        check_address("weight", w_span.start)?;
        check_address("a", a_span.start)?;

        let (m32, n32, k32) = (m as i32, n as i32, k as i32);
        if takes_decode_path(m, T::DTYPE.size_bytes() == 2, dropout.dropout != 0, r_max) {
            let params = LoraDecodeParams {
                x: x_span.start,
                w: w_span.start,
                a: a_span.start,
                b: b_span.start,
                bias: bias_span.start,
                row_adapter: index_span.start,
                ranks: ranks_span.start,
                scales: scales_span.start,
                status: status_span.start,
                y: y_span.start,
                p: p_span.start,
                m: m32,
                n: n32,
                k: k32,
                r_max: r_max32,
                num_adapters: l32,
                rank: r_max32,
                scale: 1.0,
                ..Default::default()
            };
            // SAFETY: as for the launches below; the decode path's conditions
            // were just checked, and the kernels validate each row's index
            // against L before using it to address an adapter.
            return unsafe { self.launch_decode::<T>(stream, &params) };
        }
        let shrink = LoraGemmParams {
            out: p_span.start,
            ad_mode: LoraAdapterMode_LORA_ADAPTER_SHRINK as i32,
            ad_lhs: x_span.start,
            ad_rhs: a_span.start,
            ad_rhs_stride: (r_max * k) as i64,
            ad_k: k32,
            row_adapter: index_span.start,
            ranks: ranks_span.start,
            status: status_span.start,
            m: m32,
            n: r_max32,
            num_adapters: l32,
            rank: r_max32,
            scale: 1.0,
            ..dropout
        };
        let fused = LoraGemmParams {
            out: y_span.start,
            bias: bias_span.start,
            x: x_span.start,
            w: w_span.start,
            k: k32,
            ad_mode: LoraAdapterMode_LORA_ADAPTER_EXPAND as i32,
            ad_lhs: p_span.start,
            ad_lhs_ld: r_max32,
            ad_rhs: b_span.start,
            ad_rhs_ld: r_max32,
            ad_rhs_stride: (n * r_max) as i64,
            row_adapter: index_span.start,
            ranks: ranks_span.start,
            scales: scales_span.start,
            status: status_span.start,
            m: m32,
            n: n32,
            num_adapters: l32,
            rank: r_max32,
            scale: 1.0,
            ..Default::default()
        };
        // SAFETY: as in `forward`; in addition the adapter operands hold L
        // whole adapters of r_max, every rank is in 1..=r_max (checked above),
        // and the kernel validates each row's index against L before using it
        // to address an adapter.
        unsafe {
            self.launch_shrink::<T>(stream, &shrink)?;
            self.launch_gemm::<T>(stream, &fused)
        }
    }

    /// The shrink alone: `P = X·Aᵀ`, one launch on `stream` — the same P the
    /// forward keeps (unscaled), so it may be given to
    /// [`LoraKernels::backward`] or to [`LoraKernels::expand`], which applies
    /// the scale.
    ///
    /// # Arguments
    /// X `[m, k]`, A `[rank, k]` (k = `a.len() / rank`), P `[m, rank]`.
    ///
    /// # Errors
    /// As [`LoraKernels::forward`].
    ///
    /// # Example
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
    /// # let ctx = fused_lora::cudarc::driver::CudaContext::new(0)?;
    /// # let stream = ctx.default_stream();
    /// # let kernels = fused_lora::LoraKernels::new(&ctx);
    /// use fused_lora::half::bf16;
    ///
    /// let (m, k, r) = (3, 64, 4);
    /// let x = stream.clone_htod(&vec![bf16::ONE; m * k])?;
    /// let a = stream.clone_htod(&vec![bf16::ONE; r * k])?;
    /// let mut p = stream.alloc_zeros::<bf16>(m * r)?;
    /// kernels.shrink(&stream, &x.as_view(), &a.as_view(), r, &mut p.as_view_mut())?;
    /// assert!(stream.clone_dtoh(&p)?.iter().all(|v| v.to_f32() == k as f32)); // unscaled
    /// # Ok(())
    /// # }
    /// ```
    pub fn shrink<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        x: &CudaView<'_, T>,
        a: &CudaView<'_, T>,
        rank: usize,
        p: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        self.check_stream(stream)?;
        let r32 = check_dim("rank", rank)?;
        let k = cols_of("a", a.len(), rank)?;
        let k32 = check_dim("k", k)?;
        let m = rows_of("x", x.len(), k)?;
        check_context(stream, "x", x.stream())?;
        check_context(stream, "a", a.stream())?;
        check_context(stream, "p", p.stream())?;
        check_rows("x", m, "p", p.len(), rank)?;
        check_k_aligned::<T>(k)?;
        check_grid(m)?;
        let mut ptrs = Pointers::new(stream);
        let x_span = ptrs.read("x", x);
        let a_span = ptrs.read("a", a);
        let p_span = ptrs.write("p", p);
        check_no_alias(&p_span, &[x_span, a_span])?;
        check_address("x", x_span.start)?;
        check_address("a", a_span.start)?;
        let params = LoraGemmParams {
            out: p_span.start,
            ad_mode: LoraAdapterMode_LORA_ADAPTER_SHRINK as i32,
            ad_lhs: x_span.start,
            ad_rhs: a_span.start,
            ad_k: k32,
            m: m as i32,
            n: r32,
            num_adapters: 1,
            rank: r32,
            scale: 1.0,
            ..Default::default()
        };
        // SAFETY: X, A and P were checked against `[m, k]`, `[rank, k]`,
        // `[m, rank]` on this context, and P overlaps neither input.
        unsafe { self.launch_shrink::<T>(stream, &params) }
    }

    /// The expand alone, for callers running their own base GEMM:
    /// `Y ← Y + s·P·Bᵀ`, one launch on `stream`, Y updated in place.
    ///
    /// # Arguments
    /// P `[m, rank]`, B `[n, rank]` (n = `b.len() / rank`), Y `[m, n]`.
    ///
    /// # Errors
    /// As [`LoraKernels::forward`].
    ///
    /// # Example
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # if !unsafe { fused_lora::cudarc::driver::sys::is_culib_present() } { return Ok(()); }
    /// # let ctx = fused_lora::cudarc::driver::CudaContext::new(0)?;
    /// # let stream = ctx.default_stream();
    /// # let kernels = fused_lora::LoraKernels::new(&ctx);
    /// use fused_lora::half::bf16;
    ///
    /// let (m, n, r) = (3, 32, 4);
    /// let p = stream.clone_htod(&vec![bf16::ONE; m * r])?; // P = X·Aᵀ, e.g. from `shrink`
    /// let b = stream.clone_htod(&vec![bf16::ONE; n * r])?;
    /// let mut y = stream.clone_htod(&vec![bf16::ONE; m * n])?; // the caller's base output
    /// kernels.expand(&stream, &p.as_view(), &b.as_view(), r, 0.5, &mut y.as_view_mut())?;
    /// assert!(stream.clone_dtoh(&y)?.iter().all(|v| v.to_f32() == 1.0 + 0.5 * r as f32));
    /// # Ok(())
    /// # }
    /// ```
    pub fn expand<T: LoraDType>(
        &self,
        stream: &Arc<CudaStream>,
        p: &CudaView<'_, T>,
        b: &CudaView<'_, T>,
        rank: usize,
        scale: f32,
        y: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        self.check_stream(stream)?;
        let r32 = check_dim("rank", rank)?;
        let n = rows_of("b", b.len(), rank)?;
        let m = rows_of("p", p.len(), rank)?;
        check_scale("scale", scale)?;
        check_context(stream, "p", p.stream())?;
        check_context(stream, "b", b.stream())?;
        check_context(stream, "y", y.stream())?;
        check_rows("p", m, "y", y.len(), n)?;
        check_grid(m)?;
        let mut ptrs = Pointers::new(stream);
        let p_span = ptrs.read("p", p);
        let b_span = ptrs.read("b", b);
        let y_span = ptrs.write("y", y);
        check_no_alias(&y_span, &[p_span, b_span])?;
        let params = LoraGemmParams {
            out: y_span.start,
            y_in: y_span.start,
            ad_mode: LoraAdapterMode_LORA_ADAPTER_EXPAND as i32,
            ad_lhs: p_span.start,
            ad_lhs_ld: r32,
            ad_rhs: b_span.start,
            ad_rhs_ld: r32,
            m: m as i32,
            n: n as i32,
            num_adapters: 1,
            rank: r32,
            scale,
            ..Default::default()
        };
        // SAFETY: P, B, Y checked against `[m, rank]`, `[n, rank]`, `[m, n]`
        // on this context; Y overlaps neither P nor B; each Y element is read
        // and then written by the same thread only, so in place is sound.
        unsafe { self.launch_gemm::<T>(stream, &params) }
    }
}

/// The checks a stack and its rows' indices pass before a per-row launch
/// (shared by the forward and the backward): r_max and L at least 1 and in
/// range, one scale per rank, every rank in `1..=r_max`, finite scales, A_all
/// `[L, r_max, k]`, B_all `[L, n, r_max]`, one index per row of X, all on the
/// stream's context. Returns the ranks as the kernels take them.
pub(crate) fn check_stack<T>(
    stream: &Arc<CudaStream>,
    adapters: &AdapterStack<'_, T>,
    rows: &RowAdapters<'_, '_>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<Vec<i32>> {
    let r_max = adapters.r_max;
    check_dim("r_max", r_max)?;
    let num_adapters = adapters.ranks.len();
    check_dim("ranks.len()", num_adapters)?;
    check_len("scales", adapters.scales.len(), &[num_adapters])?;
    let ranks = adapters
        .ranks
        .iter()
        .map(|&r| {
            if (1..=r_max).contains(&r) {
                Ok(r as i32)
            } else {
                Err(LoraError::InvalidArgument {
                    what: "ranks",
                    value: r.to_string(),
                    reason: "every rank must be in 1..=r_max",
                })
            }
        })
        .collect::<Result<Vec<i32>>>()?;
    for &s in adapters.scales {
        check_scale("scales", s)?;
    }
    check_context(stream, "a", adapters.a.stream())?;
    check_context(stream, "b", adapters.b.stream())?;
    check_context(stream, "index", rows.index.stream())?;
    check_context(stream, "status", rows.status.word.stream())?;
    check_len("a", adapters.a.len(), &[num_adapters, r_max, k])?;
    check_len("b", adapters.b.len(), &[num_adapters, n, r_max])?;
    check_rows("x", m, "index", rows.index.len(), 1)?;
    Ok(ranks)
}

pub(crate) fn check_linear<T: LoraDType>(stream: &Arc<CudaStream>, linear: &Linear<'_, T>) -> Result<()> {
    check_dim("n", linear.n)?;
    check_dim("k", linear.k)?;
    check_context(stream, "weight", linear.weight.stream())?;
    check_len("weight", linear.weight.len(), &[linear.n, linear.k])?;
    if let Some(bias) = &linear.bias {
        check_context(stream, "bias", bias.stream())?;
        check_len("bias", bias.len(), &[linear.n])?;
    }
    Ok(())
}

fn check_outputs<T: LoraDType>(
    stream: &Arc<CudaStream>,
    out: &ForwardOutput<'_, T>,
    m: usize,
    n: usize,
    p_cols: usize,
) -> Result<()> {
    check_context(stream, "y", out.y.stream())?;
    check_rows("x", m, "y", out.y.len(), n)?;
    if let Some(p) = &out.p {
        check_context(stream, "p", p.stream())?;
        check_rows("x", m, "p", p.len(), p_cols)?;
    }
    Ok(())
}

/// W0's span and the bias's (empty at address 0 when there is none).
fn read_linear<'s, T: LoraDType>(ptrs: &mut Pointers<'s>, linear: &'s Linear<'_, T>) -> (Span, Span) {
    let w = ptrs.read("weight", &linear.weight);
    let bias = match &linear.bias {
        Some(bias) => ptrs.read("bias", bias),
        None => Span::new("bias", 0, 0),
    };
    (w, bias)
}

//! Property-based fuzzing of the public API on a device (the emulator with
//! every check on): random shapes (1, primes, just past a tile, several
//! tiles), every dtype, ranks, views at aligned and unaligned element
//! offsets, adapters per row (−1 and out-of-range indices included),
//! dropout, the split-K/decode and tiled paths, accumulate modes, merge
//! directions and optimizer steps. Every result is checked against the CPU
//! reference at the contract's tolerance; an emulator finding is a driver
//! error, so it fails the case; the shrunk failing case is printed.
//!
//! The test command runs a few cases per target (fixed seed);
//! `FUSED_LORA_FUZZ_CASES=N` runs N per target (the soak),
//! `FUSED_LORA_FUZZ_SEED=S` draws other cases.

mod backward_support;
mod common;
mod device;
mod forward_support;
#[macro_use]
mod fuzz_support;

use backward_support::{check_gradients, Case as BackwardProblem, Got as BackwardGot, Initial};
use forward_support::{assert_close, poison_padding, random, MultiCase};
use fused_lora::reference::{self, Dropout, Precision, RefElem};
use fused_lora::{
    AdamWConfig, AdamWState, Adapter, AdapterStack, AdapterStatus, BackwardInputs, BackwardOutput, Direction,
    FiniteCheck, ForwardOutput, GradMode, Linear, LoraDType, LoraError, MergeIntoLayer, MergeLayer, RowAdapters,
    SgdConfig, SgdState,
};
use fuzz_support::{chunk, download_at, fuzz, on_device, upload_at, Dev, Ty};
use proptest::prelude::*;

// ---------------------------------------------------------------- strategies

fn ty() -> impl Strategy<Value = Ty> {
    prop_oneof![Just(Ty::F16), Just(Ty::Bf16), Just(Ty::F32)]
}

/// Rows: 1, primes, around the 16/32/64-row tiles, and several tiles.
fn rows() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => prop::sample::select(vec![1usize, 2, 3, 5, 7, 13, 16, 17, 31, 32, 33, 63, 64, 65, 67]),
        2 => 1usize..=80,
        1 => prop::sample::select(vec![97usize, 129, 131]),
    ]
}

/// K in 16-byte chunks (8 elements of f16/bf16, 4 of f32): 1, primes, past
/// the 32-wide K-step, and a long one for the split-K decode path.
fn k_chunks() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => prop::sample::select(vec![1usize, 2, 3, 4, 5, 9, 17]),
        2 => 1usize..=40,
        1 => prop::sample::select(vec![65usize, 131]),
    ]
}

/// Output features: 1, primes, odd, past the 64-wide tile.
fn cols() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => prop::sample::select(vec![1usize, 2, 3, 4, 8, 13, 31, 33, 64, 65, 67]),
        2 => 1usize..=72,
        1 => prop::sample::select(vec![127usize, 131]),
    ]
}

/// Ranks: 1, odd, multiples of 8, past the 32-wide rank tile.
fn rank() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => prop::sample::select(vec![1usize, 2, 3, 7, 8, 16, 17, 32, 33, 40, 64, 65]),
        1 => 1usize..=48,
    ]
}

/// An input view's offset: 0, one 16-byte chunk (aligned), or one element
/// (misaligned: X, W0 and A must then be refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shift {
    None,
    Chunk,
    Element,
}

fn shift() -> impl Strategy<Value = Shift> {
    prop_oneof![5 => Just(Shift::None), 2 => Just(Shift::Chunk), 1 => Just(Shift::Element)]
}

fn elems<T: LoraDType>(s: Shift) -> usize {
    match s {
        Shift::None => 0,
        Shift::Chunk => chunk::<T>(),
        Shift::Element => 1,
    }
}

/// Offsets of the views: `x`, `w`, `a` (alignment rules apply), and the
/// element offsets of the buffers that have no alignment rule.
#[derive(Clone, Copy, Debug)]
struct Offsets {
    x: Shift,
    w: Shift,
    a: Shift,
    b: usize,
    bias: usize,
    y: usize,
    p: usize,
    dy: usize,
}

fn offsets() -> impl Strategy<Value = Offsets> {
    (shift(), shift(), shift(), 0usize..4, 0usize..4, 0usize..4, 0usize..4, 0usize..4)
        .prop_map(|(x, w, a, b, bias, y, p, dy)| Offsets { x, w, a, b, bias, y, p, dy })
}

impl Offsets {
    fn misaligned(&self) -> bool {
        [self.x, self.w, self.a].contains(&Shift::Element)
    }
}

fn dropout() -> impl Strategy<Value = Option<Dropout>> {
    prop_oneof![
        2 => Just(None),
        1 => (prop::sample::select(vec![0.0f32, 0.1, 0.5, 0.9]), any::<u32>(), 0u64..1000)
            .prop_map(|(p, seed, offset)| Some(Dropout { p, seed: u64::from(seed), offset })),
    ]
}

/// The adapters: one (the single-adapter API) or a stack with one index
/// per row, some −1 and, when `bad` is set, some outside `[−1, L)`.
#[derive(Clone, Debug)]
struct Adapters {
    r_max: usize,
    ranks: Vec<usize>,
    scales: Vec<f32>,
    /// `None`: the single-adapter entry point.
    index: Option<Vec<i32>>,
}

fn scale() -> impl Strategy<Value = f32> {
    prop_oneof![Just(1.0f32), Just(0.5), Just(-2.0), -4.0f32..4.0]
}

fn adapters(m: usize) -> impl Strategy<Value = Adapters> {
    let single =
        (rank(), scale()).prop_map(|(r, s)| Adapters { r_max: r, ranks: vec![r], scales: vec![s], index: None });
    let multi = (rank(), 1usize..=5).prop_flat_map(move |(r_max, l)| {
        let bad = prop::sample::select(vec![l as i32, l as i32 + 7, -2, i32::MIN, i32::MAX]);
        let one = prop_oneof![8 => -1..l as i32, 1 => bad];
        (prop::collection::vec(1..=r_max, l), prop::collection::vec(scale(), l), prop::collection::vec(one, m))
            .prop_map(move |(ranks, scales, index)| Adapters { r_max, ranks, scales, index: Some(index) })
    });
    prop_oneof![single, multi]
}

// ---------------------------------------------------------------- helpers

/// The first row whose index lies outside `[−1, L)`, with its index.
fn first_bad(index: &[i32], num_adapters: usize) -> Option<(usize, i64)> {
    index.iter().enumerate().find(|(_, &i)| i < -1 || i >= num_adapters as i32).map(|(row, &i)| (row, i64::from(i)))
}

/// The dropped-out adapter input X̃ as T values, as the kernels stage it.
fn dropped<T: LoraDType>(x: &[T], m: usize, k: usize, dropout: Option<&Dropout>) -> Vec<T> {
    let Some(d) = dropout.filter(|d| d.p > 0.0) else { return x.to_vec() };
    (0..m * k)
        .map(|i| {
            let kept = d.keep(i / k, i % k, k);
            T::from_f64(if kept { <T as RefElem>::dropout_scaled(x[i], d.p, d.inv_keep()) } else { 0.0 })
        })
        .collect()
}

fn expect_status(status: &AdapterStatus, dev: &Dev, index: &[i32], num_adapters: usize) -> Result<(), String> {
    let got = status.check(&dev.stream);
    match (first_bad(index, num_adapters), got) {
        (None, Ok(())) => Ok(()),
        (Some((row, index)), Err(LoraError::AdapterIndexOutOfRange { row: r, index: i, num_adapters: l }))
            if (r, i, l) == (row, index, num_adapters) =>
        {
            Ok(())
        }
        (want, got) => Err(format!("status: expected bad row {want:?}, got {got:?}")),
    }
}

/// What a call must return when a view of X, W0 or A is misaligned.
fn misaligned_refused(result: Result<(), LoraError>) -> Result<(), String> {
    match result {
        Err(LoraError::MisalignedAddress { .. }) => Ok(()),
        other => Err(format!("a misaligned X/W0/A view gave {other:?}, not MisalignedAddress")),
    }
}

/// The contract's tolerance (twice the naive f32 computation's error, at
/// least one rounding) plus, per element, the error f32 accumulation may
/// commit in any order, `(terms + 2)·2⁻²⁴·Σ|terms|` (the floor of the
/// forward's checks, `forward_support::Sum::floor`): the kernels fuse
/// multiply-adds where the naive loop rounds each product, so on a small
/// output the naive error alone can fall below the kernel's by chance.
#[track_caller]
fn assert_within<T: LoraDType>(what: &str, cols: usize, got: &[f64], exact: &[f64], naive: &[f64], floors: &[f64]) {
    assert_eq!(got.len(), exact.len(), "{what}: length");
    let bounds = reference::tolerance::bounds(exact, naive, T::UNIT_ROUNDOFF, 0.0);
    for (i, (((g, e), b), f)) in got.iter().zip(exact).zip(&bounds).zip(floors).enumerate() {
        let bound = b + f;
        assert!(
            g.is_finite() && e.is_finite() && (g - e).abs() <= bound,
            "{what}[{i}] (row {}, col {}): got {g:e}, exact {e:e}, naive {:e}, |diff| {:e} > bound {bound:e}",
            i / cols,
            i % cols,
            naive[i],
            (g - e).abs()
        );
    }
}

/// Per element of `w + s·B·A` (`[n, k]`, B `[n, r]`, A `[r, k]`): the floor of [`assert_within`].
fn low_rank_floors<T: LoraDType>(w: &[T], b: &[T], a: &[T], scale: f32, n: usize, k: usize, r: usize) -> Vec<f64> {
    let mut floors = Vec::with_capacity(n * k);
    for row in 0..n {
        for col in 0..k {
            let products: f64 = (0..r).map(|j| (b[row * r + j].to_f64() * a[j * k + col].to_f64()).abs()).sum();
            let magnitude = w[row * k + col].to_f64().abs() + f64::from(scale).abs() * products;
            floors.push((r as f64 + 2.0) * 2f64.powi(-24) * magnitude + 1e-30);
        }
    }
    floors
}

fn to_f64<T: LoraDType>(v: &[T]) -> Vec<f64> {
    v.iter().map(|e| e.to_f64()).collect()
}

fn bits<T: LoraDType>(v: &[T]) -> Vec<u64> {
    v.iter().map(|e| e.to_f64().to_bits()).collect()
}

// ---------------------------------------------------------------- forward

#[derive(Clone, Debug)]
struct ForwardCase {
    ty: Ty,
    m: usize,
    k_chunks: usize,
    n: usize,
    bias: bool,
    adapters: Adapters,
    dropout: Option<Dropout>,
    keep_p: bool,
    offsets: Offsets,
    seed: u64,
}

fn forward_case() -> impl Strategy<Value = ForwardCase> {
    (ty(), rows(), k_chunks(), cols(), any::<bool>(), dropout(), any::<bool>(), offsets(), any::<u16>()).prop_flat_map(
        |(ty, m, k_chunks, n, bias, dropout, keep_p, offsets, seed)| {
            // The long K only with few rows (the decode shapes), to bound the emulator's time.
            let k_chunks = if m > 17 { k_chunks.min(40) } else { k_chunks };
            adapters(m).prop_map(move |adapters| ForwardCase {
                ty,
                m,
                k_chunks,
                n,
                bias,
                adapters,
                dropout,
                keep_p,
                offsets,
                seed: u64::from(seed),
            })
        },
    )
}

/// Device buffers of a forward problem, each at its case's offset.
struct ForwardBuffers<T: LoraDType> {
    x: cudarc::driver::CudaSlice<T>,
    w: cudarc::driver::CudaSlice<T>,
    bias: Option<cudarc::driver::CudaSlice<T>>,
    a: cudarc::driver::CudaSlice<T>,
    b: cudarc::driver::CudaSlice<T>,
    index: cudarc::driver::CudaSlice<i32>,
}

fn forward_problem<T: LoraDType>(c: &ForwardCase) -> MultiCase<T> {
    let k = c.k_chunks * chunk::<T>();
    let (m, n, r_max) = (c.m, c.n, c.adapters.r_max);
    let l = c.adapters.ranks.len();
    let mut case = MultiCase::<T> {
        m,
        k,
        n,
        r_max,
        x: random(c.seed, m * k),
        w: random(c.seed + 1, n * k),
        bias: c.bias.then(|| random(c.seed + 2, n)),
        a: random(c.seed + 3, l * r_max * k),
        b: random(c.seed + 4, l * n * r_max),
        ranks: c.adapters.ranks.clone(),
        scales: c.adapters.scales.clone(),
        index: c.adapters.index.clone().unwrap_or_else(|| vec![0; m]),
    };
    if c.adapters.index.is_some() {
        poison_padding(&mut case.a, &mut case.b, &c.adapters.ranks, r_max, n, k);
    }
    case
}

/// Runs the forward entry point of the case, P kept or not; returns (P, Y).
fn run_forward_once<T: LoraDType>(
    dev: &Dev,
    c: &ForwardCase,
    case: &MultiCase<T>,
    d: &ForwardBuffers<T>,
    keep_p: bool,
) -> Result<(Vec<T>, Vec<T>), LoraError> {
    let s = &dev.stream;
    let o = &c.offsets;
    let (m, k, n, r_max) = (case.m, case.k, case.n, case.r_max);
    let (xo, wo, ao) = (elems::<T>(o.x), elems::<T>(o.w), elems::<T>(o.a));
    let mut y = upload_at(s, &vec![T::nan(); m * n], o.y, T::nan());
    let mut p = upload_at(s, &vec![T::nan(); m * r_max], o.p, T::nan());
    let x = d.x.slice(xo..xo + m * k);
    let bias = d.bias.as_ref().map(|b| b.slice(o.bias..o.bias + n));
    let linear = Linear { weight: d.w.slice(wo..wo + n * k), bias, n, k };
    let a = d.a.slice(ao..ao + case.a.len());
    let b = d.b.slice(o.b..o.b + case.b.len());
    let mut out =
        ForwardOutput { y: y.slice_mut(o.y..o.y + m * n), p: keep_p.then(|| p.slice_mut(o.p..o.p + m * r_max)) };
    match &c.adapters.index {
        None => {
            let adapter = Adapter { a, b, rank: r_max, scale: case.scales[0] };
            dev.kernels.forward(s, &x, &linear, &adapter, c.dropout.as_ref(), &mut out)?;
        }
        Some(index) => {
            let mut status = AdapterStatus::new(s)?;
            let stack = AdapterStack { a, b, r_max, ranks: &case.ranks, scales: &case.scales };
            let mut rows = RowAdapters { index: d.index.slice(0..m), status: &mut status };
            dev.kernels.forward_multi(s, &x, &linear, &stack, &mut rows, c.dropout.as_ref(), &mut out)?;
            expect_status(&status, dev, index, case.ranks.len()).map_err(|why| LoraError::InvalidArgument {
                what: "status",
                value: why,
                reason: "the status must report the first out-of-range row",
            })?;
        }
    }
    Ok((download_at(s, &p, o.p, m * r_max), download_at(s, &y, o.y, m * n)))
}

fn check_forward<T: LoraDType>(dev: &Dev, c: &ForwardCase) -> Result<(), String> {
    let s = &dev.stream;
    let case = forward_problem::<T>(c);
    let o = &c.offsets;
    let d = ForwardBuffers {
        x: upload_at(s, &case.x, elems::<T>(o.x), T::nan()),
        w: upload_at(s, &case.w, elems::<T>(o.w), T::nan()),
        bias: case.bias.as_ref().map(|v| upload_at(s, v, o.bias, T::nan())),
        a: upload_at(s, &case.a, elems::<T>(o.a), T::nan()),
        b: upload_at(s, &case.b, o.b, T::nan()),
        index: upload_at(s, &case.index, 0, 0),
    };
    let kept = run_forward_once(dev, c, &case, &d, true);
    if o.misaligned() {
        return misaligned_refused(kept.map(|_| ()));
    }
    let (p, y) = kept.map_err(|e| format!("forward: {e}"))?;
    // P from X̃ (the dropped input); Y's base term from X, its adapter term from the kernel's P.
    let p_case = MultiCase::<T> {
        x: dropped(&case.x, case.m, case.k, c.dropout.as_ref()),
        w: Vec::new(),
        bias: None,
        a: case.a.clone(),
        b: Vec::new(),
        ranks: case.ranks.clone(),
        scales: case.scales.clone(),
        index: case.index.clone(),
        ..case
    };
    assert_close("P", &p, &p_case.p_reference());
    assert_close("Y", &y, &case.y_reference(&p));
    if !c.keep_p {
        let (_, y_scratch) =
            run_forward_once(dev, c, &case, &d, false).map_err(|e| format!("forward without P: {e}"))?;
        if bits(&y) != bits(&y_scratch) {
            return Err("Y differs between P kept and P in a scratch buffer".into());
        }
    }
    Ok(())
}

/// Grids of at least one 128 × 128 tile per multiprocessor (108 on the
/// emulator), where f16/bf16 take the 128 × 128 tile: the forward's Y, and
/// (with K that wide) the backward's dX.
fn big_grid_case(wide: bool) -> impl Strategy<Value = ForwardCase> {
    let half = prop_oneof![Just(Ty::F16), Just(Ty::Bf16)];
    let (k_chunks, n) = if wide { (1usize..=2, 1290usize..=1400) } else { (162usize..=175, 1usize..=24) };
    (half, 1290usize..=1400, k_chunks, n, any::<bool>(), dropout(), any::<bool>(), offsets(), any::<u16>())
        .prop_flat_map(|(ty, m, k_chunks, n, bias, dropout, keep_p, offsets, seed)| {
            // Aligned views only: a refused call would test nothing here.
            let aligned = |s: Shift| if s == Shift::Element { Shift::None } else { s };
            let offsets = Offsets { x: aligned(offsets.x), w: aligned(offsets.w), a: aligned(offsets.a), ..offsets };
            adapters(m).prop_map(move |adapters| ForwardCase {
                ty,
                m,
                k_chunks,
                n,
                bias,
                adapters,
                dropout,
                keep_p,
                offsets,
                seed: u64::from(seed),
            })
        })
}

#[test]
fn fuzz_forward_big_grid() {
    fuzz("forward_big_grid", 1, big_grid_case(true), |c| on_device(|dev| by_dtype!(c.ty, check_forward(dev, &c))));
}

#[test]
fn fuzz_forward() {
    fuzz("forward", 20, forward_case(), |c| on_device(|dev| by_dtype!(c.ty, check_forward(dev, &c))));
}

// ---------------------------------------------------------------- shrink and expand alone

#[derive(Clone, Debug)]
struct ShrinkExpandCase {
    ty: Ty,
    m: usize,
    k_chunks: usize,
    n: usize,
    r: usize,
    scale: f32,
    offsets: Offsets,
    seed: u64,
}

fn shrink_expand_case() -> impl Strategy<Value = ShrinkExpandCase> {
    (ty(), rows(), 1usize..=20, cols(), rank(), scale(), offsets(), any::<u16>()).prop_map(
        |(ty, m, k_chunks, n, r, scale, offsets, seed)| ShrinkExpandCase {
            ty,
            m,
            k_chunks,
            n,
            r,
            scale,
            offsets,
            seed: u64::from(seed),
        },
    )
}

fn check_shrink_expand<T: LoraDType>(dev: &Dev, c: &ShrinkExpandCase) -> Result<(), String> {
    let s = &dev.stream;
    let o = &c.offsets;
    let (m, k, n, r) = (c.m, c.k_chunks * chunk::<T>(), c.n, c.r);
    let (x, a, b, y0) = (
        random::<T>(c.seed, m * k),
        random::<T>(c.seed + 1, r * k),
        random(c.seed + 2, n * r),
        random(c.seed + 3, m * n),
    );
    let (xo, ao) = (elems::<T>(o.x), elems::<T>(o.a));
    let xd = upload_at(s, &x, xo, T::nan());
    let ad = upload_at(s, &a, ao, T::nan());
    let mut pd = upload_at(s, &vec![T::nan(); m * r], o.p, T::nan());
    let result = dev.kernels.shrink(
        s,
        &xd.slice(xo..xo + m * k),
        &ad.slice(ao..ao + r * k),
        r,
        &mut pd.slice_mut(o.p..o.p + m * r),
    );
    if o.x == Shift::Element || o.a == Shift::Element {
        return misaligned_refused(result);
    }
    result.map_err(|e| format!("shrink: {e}"))?;
    let p = download_at(s, &pd, o.p, m * r);
    let case = MultiCase::<T> {
        m,
        k,
        n,
        r_max: r,
        x,
        w: Vec::new(),
        bias: None,
        a,
        b: b.clone(),
        ranks: vec![r],
        scales: vec![c.scale],
        index: vec![0; m],
    };
    assert_close("P", &p, &case.p_reference());

    // Y ← Y + s·P·Bᵀ on the kernel's P: the reference's exact and naive expand.
    let bd = upload_at(s, &b, o.b, T::nan());
    let mut yd = upload_at(s, &y0, o.y, T::nan());
    let pv = pd.slice(o.p..o.p + m * r);
    dev.kernels
        .expand(s, &pv, &bd.slice(o.b..o.b + n * r), r, c.scale, &mut yd.slice_mut(o.y..o.y + m * n))
        .map_err(|e| format!("expand: {e}"))?;
    let y = download_at(s, &yd, o.y, m * n);
    let shape = fused_lora::LoraShape { m, k, n, r };
    let exact =
        reference::expand(shape, &y0, &p, &b, f64::from(c.scale), Precision::Exact).map_err(|e| e.to_string())?;
    let naive =
        reference::expand(shape, &y0, &p, &b, f64::from(c.scale), Precision::Naive).map_err(|e| e.to_string())?;
    // Y [m, n] = Y0 + s·P·Bᵀ: the low-rank floor with P as B and Bᵀ as A.
    let b_t: Vec<T> = (0..r * n).map(|i| b[(i % n) * r + i / n]).collect();
    let floors = low_rank_floors(&y0, &p, &b_t, c.scale, m, n, r);
    assert_within::<T>("expand Y", n, &to_f64(&y), &exact, &naive, &floors);
    Ok(())
}

#[test]
fn fuzz_shrink_expand() {
    fuzz("shrink_expand", 12, shrink_expand_case(), |c| on_device(|dev| by_dtype!(c.ty, check_shrink_expand(dev, &c))));
}

// ---------------------------------------------------------------- backward

#[derive(Clone, Debug)]
struct BackwardCase {
    forward: ForwardCase,
    mode: GradMode,
    keep_g: bool,
}

fn backward_case() -> impl Strategy<Value = BackwardCase> {
    (forward_case(), prop_oneof![Just(GradMode::Overwrite), Just(GradMode::Accumulate)], any::<bool>()).prop_map(
        |(forward, mode, keep_g)| BackwardCase { forward: ForwardCase { bias: false, ..forward }, mode, keep_g },
    )
}

fn check_backward<T: LoraDType>(dev: &Dev, bc: &BackwardCase) -> Result<(), String> {
    let c = &bc.forward;
    let s = &dev.stream;
    let o = &c.offsets;
    let forward = forward_problem::<T>(c);
    let (m, k, n, r_max) = (forward.m, forward.k, forward.n, forward.r_max);
    let l = forward.ranks.len();
    // P from the forward kernels (so the recomputed P must match it bit for bit).
    let d = ForwardBuffers {
        x: upload_at(s, &forward.x, elems::<T>(o.x), T::nan()),
        w: upload_at(s, &forward.w, elems::<T>(o.w), T::nan()),
        bias: None,
        a: upload_at(s, &forward.a, elems::<T>(o.a), T::nan()),
        b: upload_at(s, &forward.b, o.b, T::nan()),
        index: upload_at(s, &forward.index, 0, 0),
    };
    let aligned =
        ForwardCase { offsets: Offsets { x: Shift::None, w: Shift::None, a: Shift::None, ..*o }, ..c.clone() };
    let aligned_d = ForwardBuffers {
        x: upload_at(s, &forward.x, 0, T::nan()),
        w: upload_at(s, &forward.w, 0, T::nan()),
        bias: None,
        a: upload_at(s, &forward.a, 0, T::nan()),
        b: upload_at(s, &forward.b, o.b, T::nan()),
        index: upload_at(s, &forward.index, 0, 0),
    };
    let (p, _) = run_forward_once(dev, &aligned, &forward, &aligned_d, true).map_err(|e| format!("forward: {e}"))?;
    drop(aligned_d);
    let MultiCase { x, w, a, b, ranks, scales, index, .. } = forward;
    let mut case = BackwardProblem {
        m,
        k,
        n,
        r_max,
        ranks,
        scales,
        index,
        x,
        w,
        a,
        b,
        p,
        dy: random::<T>(c.seed + 5, m * n),
        dropout: c.dropout,
    };
    // P columns past a row's rank and rows without an adapter are never read.
    case.poison_padding();
    let initial = match bc.mode {
        GradMode::Overwrite => Initial::nan(&case),
        GradMode::Accumulate => Initial::random(&case, c.seed + 6),
    };
    let pd = upload_at(s, &case.p, o.p, T::nan());
    let dyd = upload_at(s, &case.dy, o.dy, T::nan());
    let mut dad = upload_at(s, &initial.da, 1, T::nan());
    let mut dbd = upload_at(s, &initial.db, 2, T::nan());
    let mut dxd = upload_at(s, &initial.dx, 3, T::nan());
    let mut gd = upload_at(s, &vec![T::nan(); m * r_max], o.y, T::nan());
    let (xo, wo, ao) = (elems::<T>(o.x), elems::<T>(o.w), elems::<T>(o.a));
    let inputs = BackwardInputs {
        dy: dyd.slice(o.dy..o.dy + m * n),
        x: d.x.slice(xo..xo + m * k),
        p: c.keep_p.then(|| pd.slice(o.p..o.p + m * r_max)),
        dropout: c.dropout,
    };
    let linear = Linear { weight: d.w.slice(wo..wo + n * k), bias: None, n, k };
    let a = d.a.slice(ao..ao + case.a.len());
    let b = d.b.slice(o.b..o.b + case.b.len());
    let mut out = BackwardOutput {
        da: dad.slice_mut(1..1 + l * r_max * k),
        db: dbd.slice_mut(2..2 + l * n * r_max),
        dx: dxd.slice_mut(3..3 + m * k),
        g: bc.keep_g.then(|| gd.slice_mut(o.y..o.y + m * r_max)),
        mode: bc.mode,
    };
    let mut status = AdapterStatus::new(s).map_err(|e| e.to_string())?;
    let result = match &c.adapters.index {
        None => {
            let adapter = Adapter { a, b, rank: r_max, scale: case.scales[0] };
            dev.kernels.backward(s, &inputs, &linear, &adapter, &mut out)
        }
        Some(_) => {
            let stack = AdapterStack { a, b, r_max, ranks: &case.ranks, scales: &case.scales };
            let mut rows = RowAdapters { index: d.index.slice(0..m), status: &mut status };
            dev.kernels.backward_multi(s, &inputs, &linear, &stack, &mut rows, &mut out)
        }
    };
    if o.misaligned() {
        // The backward reads X, W0 and A through 16-byte copies only where
        // it recomputes P; either a refusal or a correct result is right.
        match result {
            Err(LoraError::MisalignedAddress { .. }) => return Ok(()),
            Err(e) => return Err(format!("backward with a misaligned view: {e}")),
            Ok(()) => {}
        }
    } else {
        result.map_err(|e| format!("backward: {e}"))?;
    }
    if c.adapters.index.is_some() {
        expect_status(&status, dev, &case.index, l)?;
    }

    // Every gradient against the reference on the forward's P, out-of-range rows as −1.
    let got = BackwardGot {
        g: if bc.keep_g { download_at(s, &gd, o.y, m * r_max) } else { Vec::new() },
        da: download_at(s, &dad, 1, l * r_max * k),
        db: download_at(s, &dbd, 2, l * n * r_max),
        dx: download_at(s, &dxd, 3, m * k),
    };
    let accumulate = bc.mode == GradMode::Accumulate;
    check_gradients("backward", &case, &got, bc.keep_g, accumulate.then_some(&initial));
    Ok(())
}

#[test]
fn fuzz_backward_big_grid() {
    let case =
        (big_grid_case(false), prop_oneof![Just(GradMode::Overwrite), Just(GradMode::Accumulate)], any::<bool>())
            .prop_map(|(forward, mode, keep_g)| BackwardCase {
                forward: ForwardCase { bias: false, ..forward },
                mode,
                keep_g,
            });
    fuzz("backward_big_grid", 1, case, |c| on_device(|dev| by_dtype!(c.forward.ty, check_backward(dev, &c))));
}

#[test]
fn fuzz_backward() {
    fuzz("backward", 10, backward_case(), |c| on_device(|dev| by_dtype!(c.forward.ty, check_backward(dev, &c))));
}

// ---------------------------------------------------------------- merge

#[derive(Clone, Debug)]
struct MergeCase {
    ty: Ty,
    /// (n, k, r, scale) per layer.
    layers: Vec<(usize, usize, usize, f32)>,
    direction: Direction,
    into: bool,
    check: FiniteCheck,
    /// A layer whose A gets a NaN (only with `RefuseNonFinite`).
    nan_layer: Option<usize>,
    offset: usize,
    seed: u64,
}

fn merge_case() -> impl Strategy<Value = MergeCase> {
    let layer = (
        prop::sample::select(vec![1usize, 3, 17, 63, 64, 65, 129]),
        prop::sample::select(vec![1usize, 2, 7, 31, 127, 128, 129, 200]),
        rank(),
        scale(),
    );
    (
        ty(),
        prop::collection::vec(layer, 1..=3),
        prop_oneof![Just(Direction::Merge), Just(Direction::Unmerge)],
        any::<bool>(),
        prop_oneof![Just(FiniteCheck::Unchecked), Just(FiniteCheck::RefuseNonFinite)],
        prop::option::of(0usize..3),
        0usize..4,
        any::<u16>(),
    )
        .prop_map(|(ty, layers, direction, into, check, nan, offset, seed)| {
            let nan_layer = nan.filter(|&l| l < layers.len() && check == FiniteCheck::RefuseNonFinite);
            MergeCase { ty, layers, direction, into, check, nan_layer, offset, seed: u64::from(seed) }
        })
}

fn check_merge<T: LoraDType>(dev: &Dev, c: &MergeCase) -> Result<(), String> {
    let s = &dev.stream;
    let off = c.offset;
    let host: Vec<(Vec<T>, Vec<T>, Vec<T>)> = c
        .layers
        .iter()
        .enumerate()
        .map(|(i, &(n, k, r, _))| {
            let seed = c.seed + 10 * i as u64;
            let mut a = random::<T>(seed + 1, r * k);
            if c.nan_layer == Some(i) {
                a[(seed as usize) % (r * k)] = T::nan();
            }
            (random(seed, n * k), a, random(seed + 2, n * r))
        })
        .collect();
    let mut w: Vec<_> = host.iter().map(|(w, _, _)| upload_at(s, w, off, T::nan())).collect();
    let a: Vec<_> = host.iter().map(|(_, a, _)| upload_at(s, a, off, T::nan())).collect();
    let b: Vec<_> = host.iter().map(|(_, _, b)| upload_at(s, b, off, T::nan())).collect();
    let mut outs: Vec<_> =
        c.layers.iter().map(|&(n, k, _, _)| upload_at(s, &vec![T::nan(); n * k], off, T::nan())).collect();
    let adapter = |i: usize| {
        let (n, k, r, scale) = c.layers[i];
        Adapter { a: a[i].slice(off..off + r * k), b: b[i].slice(off..off + n * r), rank: r, scale }
    };
    let result = if c.into {
        let mut layers: Vec<MergeIntoLayer<'_, T>> = w
            .iter()
            .zip(outs.iter_mut())
            .enumerate()
            .map(|(i, (w, out))| {
                let (n, k, _, _) = c.layers[i];
                MergeIntoLayer {
                    weight: w.slice(off..off + n * k),
                    out: out.slice_mut(off..off + n * k),
                    n,
                    k,
                    adapter: adapter(i),
                }
            })
            .collect();
        dev.kernels.merge_into(s, &mut layers, c.direction, c.check)
    } else {
        let mut layers: Vec<MergeLayer<'_, T>> = w
            .iter_mut()
            .enumerate()
            .map(|(i, w)| {
                let (n, k, _, _) = c.layers[i];
                MergeLayer { weight: w.slice_mut(off..off + n * k), n, k, adapter: adapter(i) }
            })
            .collect();
        dev.kernels.merge(s, &mut layers, c.direction, c.check)
    };
    let results: Vec<&cudarc::driver::CudaSlice<T>> = if c.into { outs.iter().collect() } else { w.iter().collect() };
    let got: Vec<Vec<T>> =
        results.iter().zip(&c.layers).map(|(buf, &(n, k, _, _))| download_at(s, buf, off, n * k)).collect();
    if let Some(bad) = c.nan_layer {
        match result {
            Err(LoraError::NonFinite { layer, .. }) if layer == bad => {}
            other => return Err(format!("a NaN in layer {bad}'s A gave {other:?}, not NonFinite for that layer")),
        }
        // Nothing written: the weights (or the poisoned outputs) as they were.
        for (i, g) in got.iter().enumerate() {
            let before = if c.into { vec![T::nan(); g.len()] } else { host[i].0.clone() };
            if bits(g) != bits(&before) {
                return Err(format!("layer {i} was written although the merge was refused"));
            }
        }
        if c.into {
            for (i, (wd, (w0, _, _))) in w.iter().zip(&host).enumerate() {
                if bits(&download_at(s, wd, off, w0.len())) != bits(w0) {
                    return Err(format!("merge_into changed layer {i}'s weight"));
                }
            }
        }
        return Ok(());
    }
    result.map_err(|e| format!("merge: {e}"))?;
    let direction = match c.direction {
        Direction::Merge => reference::MergeDirection::Merge,
        Direction::Unmerge => reference::MergeDirection::Unmerge,
    };
    let views: Vec<reference::MergeLayer<'_, T>> = host
        .iter()
        .zip(&c.layers)
        .map(|((w, a, b), &(n, k, r, scale))| reference::MergeLayer { w, a, b, scale: f64::from(scale), n, k, r })
        .collect();
    let exact = reference::merge(&views, direction, false, Precision::Exact).map_err(|e| e.to_string())?;
    let naive = reference::merge(&views, direction, false, Precision::Naive).map_err(|e| e.to_string())?;
    for (i, g) in got.iter().enumerate() {
        let (n, k, r, scale) = c.layers[i];
        let (w0, a, b) = &host[i];
        let floors = low_rank_floors(w0, b, a, scale, n, k, r);
        assert_within::<T>(&format!("layer {i}"), k, &to_f64(g), &exact[i], &naive[i], &floors);
    }
    if c.into {
        for (i, (wd, (w0, _, _))) in w.iter().zip(&host).enumerate() {
            if bits(&download_at(s, wd, off, w0.len())) != bits(w0) {
                return Err(format!("merge_into changed layer {i}'s weight"));
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_merge() {
    fuzz("merge", 16, merge_case(), |c| on_device(|dev| by_dtype!(c.ty, check_merge(dev, &c))));
}

// ---------------------------------------------------------------- optimizer steps

#[derive(Clone, Debug)]
enum Optimizer {
    Sgd(SgdConfig),
    AdamW(AdamWConfig),
}

#[derive(Clone, Debug)]
struct OptimCase {
    ty: Ty,
    /// The gradient in f32 instead of T.
    f32_grad: bool,
    len: usize,
    offset: usize,
    optimizer: Optimizer,
    steps: usize,
    seed: u64,
}

fn optim_case() -> impl Strategy<Value = OptimCase> {
    let sgd = (
        prop::sample::select(vec![0.01f64, 0.1, 0.5]),
        prop::sample::select(vec![0.0f64, 0.5, 0.9]),
        prop::sample::select(vec![0.0f64, 0.3]),
        prop::sample::select(vec![0.0f64, 0.01]),
        any::<bool>(),
    )
        .prop_map(|(lr, momentum, dampening, weight_decay, nesterov)| {
            // Nesterov needs momentum and no dampening (as PyTorch).
            let nesterov = nesterov && momentum > 0.0;
            let dampening = if nesterov { 0.0 } else { dampening };
            Optimizer::Sgd(SgdConfig { lr, momentum, dampening, weight_decay, nesterov })
        });
    let adamw = (
        prop::sample::select(vec![1e-3f64, 1e-2, 1e-1]),
        prop::sample::select(vec![0.0f64, 0.8, 0.9]),
        prop::sample::select(vec![0.5f64, 0.95, 0.999]),
        prop::sample::select(vec![1e-8f64, 1e-6, 1e-3]),
        prop::sample::select(vec![0.0f64, 0.01, 0.1]),
    )
        .prop_map(|(lr, beta1, beta2, eps, weight_decay)| {
            Optimizer::AdamW(AdamWConfig { lr, beta1, beta2, eps, weight_decay })
        });
    (
        ty(),
        any::<bool>(),
        prop_oneof![prop::sample::select(vec![1usize, 2, 3, 4, 5, 7, 8, 9, 31, 257, 1031]), 1usize..600],
        0usize..5,
        prop_oneof![sgd, adamw],
        1usize..=3,
        any::<u16>(),
    )
        .prop_map(|(ty, f32_grad, len, offset, optimizer, steps, seed)| OptimCase {
            ty,
            f32_grad,
            len,
            offset,
            optimizer,
            steps,
            seed: u64::from(seed),
        })
}

const U32: f64 = 5.960_464_477_539_063e-8; // 2^-24
/// The f32 update's error in units of its magnitude, per step (tests/optim.rs).
const C_UPDATE: f64 = 6.0;

fn check_optim<T: LoraDType>(dev: &Dev, c: &OptimCase) -> Result<(), String> {
    if c.f32_grad {
        check_optim_with::<T, f32>(dev, c)
    } else {
        check_optim_with::<T, T>(dev, c)
    }
}

fn check_optim_with<T: LoraDType, G: LoraDType>(dev: &Dev, c: &OptimCase) -> Result<(), String> {
    let s = &dev.stream;
    let (len, off) = (c.len, c.offset);
    let start: Vec<f32> = random::<f32>(c.seed, len);
    let mut master = upload_at(s, &start, off, f32::NAN);
    let mut working = upload_at(s, &vec![T::nan(); len], off, T::nan());
    let mut expected = start.clone();
    let mut bound = vec![0.0f64; len];
    let (mut magnitude, mut v) = (vec![0.0f64; len], vec![0.0f64; len]);
    let mut sgd_state = SgdState::new(s, len).map_err(|e| e.to_string())?;
    let mut adam_state = AdamWState::new(s, len).map_err(|e| e.to_string())?;
    let mut sgd_ref = None;
    let mut adam_ref = None;
    for step in 1..=c.steps {
        let grad: Vec<G> = random(c.seed + step as u64, len);
        let g: Vec<f64> = grad.iter().map(|&x| RefElem::to_f64(x)).collect();
        let gd = upload_at(s, &grad, off, G::nan());
        let before = expected.clone();
        let mut master_view = master.slice_mut(off..off + len);
        let mut working_view = working.slice_mut(off..off + len);
        let grad_view = gd.slice(off..off + len);
        match &c.optimizer {
            Optimizer::Sgd(config) => {
                let r = sgd_ref.get_or_insert_with(|| {
                    let mut r = reference::Sgd::new(config.lr);
                    (r.momentum, r.dampening, r.weight_decay, r.nesterov) =
                        (config.momentum, config.dampening, config.weight_decay, config.nesterov);
                    r
                });
                r.step(&mut expected, &g).map_err(|e| e.to_string())?;
                for i in 0..len {
                    let d = g[i].abs() + config.weight_decay * f64::from(before[i]).abs();
                    let update = if config.momentum != 0.0 {
                        let b = &mut magnitude[i];
                        *b = if step == 1 { d } else { config.momentum * *b + (1.0 - config.dampening).abs() * d };
                        if config.nesterov {
                            d + config.momentum * *b
                        } else {
                            *b
                        }
                    } else {
                        d
                    };
                    bound[i] +=
                        C_UPDATE * step as f64 * U32 * config.lr * update + 2.0 * U32 * f64::from(expected[i]).abs();
                }
                dev.kernels
                    .sgd_step(s, config, &mut master_view, &mut working_view, &grad_view, &mut sgd_state)
                    .map_err(|e| format!("sgd step {step}: {e}"))?;
            }
            Optimizer::AdamW(config) => {
                let AdamWConfig { lr, beta1, beta2, eps, weight_decay } = *config;
                let r = adam_ref
                    .get_or_insert_with(|| reference::AdamW::new(lr, beta1, beta2, eps, weight_decay).expect("valid"));
                let t = step as i32;
                let step_size = lr / (1.0 - beta1.powi(t));
                let bc2 = (1.0 - beta2.powi(t)).sqrt();
                for i in 0..len {
                    magnitude[i] = beta1 * magnitude[i] + (1.0 - beta1) * g[i].abs();
                    v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
                    let update = step_size * magnitude[i] / (v[i].sqrt() / bc2 + eps);
                    bound[i] += C_UPDATE * step as f64 * U32 * update + U32 * f64::from(expected[i]).abs();
                }
                r.step(&mut expected, &g).map_err(|e| e.to_string())?;
                for i in 0..len {
                    bound[i] += 2.0 * U32 * f64::from(expected[i]).abs();
                }
                dev.kernels
                    .adamw_step(s, config, &mut master_view, &mut working_view, &grad_view, &mut adam_state)
                    .map_err(|e| format!("adamw step {step}: {e}"))?;
            }
        }
        let got_master = download_at(s, &master, off, len);
        let got_working = download_at(s, &working, off, len);
        for i in 0..len {
            let copy = <T as RefElem>::from_f32(got_master[i]);
            if RefElem::to_f64(got_working[i]).to_bits() != RefElem::to_f64(copy).to_bits() {
                return Err(format!("step {step}: working[{i}] is not round_T(master[{i}] = {:e})", got_master[i]));
            }
            let error = (f64::from(got_master[i]) - f64::from(expected[i])).abs();
            if error.is_nan() || error > bound[i] {
                return Err(format!(
                    "step {step}: master[{i}] = {:e}, reference {:e}, error {error:e} > bound {:e}",
                    got_master[i], expected[i], bound[i]
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_optim() {
    fuzz("optim", 16, optim_case(), |c| on_device(|dev| by_dtype!(c.ty, check_optim(dev, &c))));
}

// ---------------------------------------------------------------- initialisation

#[derive(Clone, Debug)]
struct FillCase {
    ty: Ty,
    len: usize,
    offset: usize,
    distribution: fused_lora::Distribution,
    seed: u64,
    philox_offset: u64,
}

fn fill_case() -> impl Strategy<Value = FillCase> {
    use fused_lora::Distribution;
    let distribution = prop_oneof![
        Just(Distribution::Zero),
        prop::sample::select(vec![0.0f64, 1e-3, 0.125, 1.0, 3.5]).prop_map(|bound| Distribution::Uniform { bound }),
        prop::sample::select(vec![0.0f64, 0.02, 1.0, 7.0]).prop_map(|std| Distribution::Normal { std }),
    ];
    (
        ty(),
        prop_oneof![prop::sample::select(vec![1usize, 2, 3, 4, 5, 7, 8, 9, 1023, 1025]), 1usize..3000],
        0usize..5,
        distribution,
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(ty, len, offset, distribution, seed, philox_offset)| FillCase {
            ty,
            len,
            offset,
            distribution,
            seed,
            philox_offset: u64::from(philox_offset),
        })
}

/// The fill of a view is the reference's matrix bit for bit, and the
/// elements around the view keep what they held.
fn check_fill<T: LoraDType>(dev: &Dev, c: &FillCase) -> Result<(), String> {
    let s = &dev.stream;
    let (len, off) = (c.len, c.offset);
    let mut buffer = upload_at(s, &vec![T::nan(); len + 3], off, T::nan());
    dev.kernels
        .fill(s, &mut buffer.slice_mut(off..off + len), c.distribution, c.seed, c.philox_offset)
        .map_err(|e| format!("fill: {e}"))?;
    let all = download_at(s, &buffer, 0, off + len + 3);
    let want = reference::init_matrix::<T>(c.distribution, len, c.seed, c.philox_offset).map_err(|e| e.to_string())?;
    if bits(&all[off..off + len]) != bits(&want) {
        let i = (0..len).find(|&i| all[off + i].to_f64().to_bits() != want[i].to_f64().to_bits()).unwrap_or(0);
        return Err(format!("element {i}: got {:?}, reference {:?}", all[off + i], want[i]));
    }
    if !all[..off].iter().chain(&all[off + len..]).all(|v| v.to_f64().is_nan()) {
        return Err("the fill wrote outside its view".into());
    }
    Ok(())
}

#[test]
fn fuzz_fill() {
    fuzz("fill", 16, fill_case(), |c| on_device(|dev| by_dtype!(c.ty, check_fill(dev, &c))));
}

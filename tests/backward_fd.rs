//! The backward kernels against central finite differences of the forward
//! kernels themselves (not of the CPU reference): with the loss
//! `L = Σ dY ⊙ Y`, Y from `LoraKernels::forward` / `forward_multi`, the
//! gradients `backward` / `backward_multi` return must be `∂L/∂θ`.
//!
//! L is linear in X, in A (B fixed) and in B (A fixed), so a central
//! difference with a large step is the exact derivative but for the rounding
//! of Y (and of L, computed in f64 on the host). f32 throughout: the dtype in
//! which that rounding is small enough to make the comparison sharp. Each
//! comparison's tolerance is derived from the rounding, element by element
//! (see [`fd_error_bound`] and [`gradient_error_bound`]), not picked.
//!
//! Several adapters: a perturbation of adapter l's A or B changes L by
//! exactly what dA_l / dB_l say; an adapter no row uses gets exact zeros and
//! perturbing it leaves Y bit-identical; so does perturbing the padding past
//! an adapter's rank (which holds NaN: the kernels never read it).
//!
//! Dropout (p = 0.5): the forward draws the mask, the backward regenerates
//! it; the finite differences of the forward with that mask must equal the
//! backward's gradients.
//!
//! Also here: determinism (two runs bit-identical) for every dtype, with M
//! large enough for several row chunks of the dA/dB reductions.

mod backward_support;
mod common;
mod device;
mod forward_support;

use backward_support::{Api, Got, Initial};
use cudarc::driver::CudaSlice;
use device::Device;
use forward_support::{download, poison_padding, random, upload};
use fused_lora::reference::Dropout;
use fused_lora::{Adapter, AdapterStack, AdapterStatus, ForwardOutput, GradMode, Linear, LoraDType, RowAdapters};
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The central difference's half step h. L is exactly linear in each
/// parameter, so no step size costs truncation error; what limits the
/// comparison is the rounding of Y, bounded per run by [`fd_error_bound`]
/// and divided by the step 2h. Most of that bound comes from the terms the
/// step does not touch (the base GEMM, the other rank components), which do
/// not grow with h: a large h divides it away, while the part from the
/// perturbed term grows no faster than the difference itself. h = 1024 makes
/// the bound a fraction of a percent of the gradients here, and keeps Y far
/// from f32's range. (θ ± h is rounded to f32; the step used is the
/// difference of the two stored values.)
const STEP: f64 = 1024.0;

/// The bound must stay well below the gradients for the check to mean
/// anything: a shape change that made it loose must fail, not pass silently.
const LARGEST_RELATIVE_BOUND: f64 = 0.05;

/// f32's unit roundoff.
const U32: f64 = f32::EPSILON as f64 / 2.0;
/// f64's unit roundoff (the host's loss).
const U64: f64 = f64::EPSILON / 2.0;

/// Higham's γ(n) = n·u / (1 − n·u): a sum of n terms, each carrying a
/// relative error of at most γ(a), computed in any order in precision u,
/// differs from the exact sum by at most γ(n − 1 + a)·Σ|terms|.
fn gamma(n: usize, u: f64) -> f64 {
    let nu = n as f64 * u;
    assert!(nu < 0.5, "γ({n}) is not small: the bound would be meaningless");
    nu / (1.0 - nu)
}

/// One finite-difference problem, in the stacked layout (one adapter: L = 1).
struct Case {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    r_max: usize,
    ranks: Vec<usize>,
    scales: Vec<f32>,
    /// The rows' adapter indices for `forward_multi`/`backward_multi`;
    /// `None`: `forward`/`backward` with adapter 0 on every row.
    index: Option<Vec<i32>>,
    x: Vec<f32>,
    w: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
    /// The dropout on the adapter input, given to the forward and the
    /// backward alike. `None` in every case for now: the forward does not
    /// take one yet (see [`forward`]).
    dropout: Option<Dropout>,
}

impl Case {
    /// Random data from `seed`, uniform in [−1, 1); the padding of the stack
    /// (A rows and B columns past each rank) is NaN.
    fn new(
        name: &'static str,
        m: usize,
        k: usize,
        n: usize,
        ranks: &[usize],
        index: Option<Vec<i32>>,
        seed: u64,
    ) -> Self {
        let r_max = *ranks.iter().max().expect("at least one adapter");
        let num_adapters = ranks.len();
        let mut a = random(seed + 2, num_adapters * r_max * k);
        let mut b = random(seed + 3, num_adapters * n * r_max);
        poison_padding(&mut a, &mut b, ranks, r_max, n, k);
        Case {
            name,
            m,
            k,
            n,
            r_max,
            ranks: ranks.to_vec(),
            scales: (0..num_adapters).map(|l| 0.75 + 0.5 * l as f32).collect(),
            index,
            x: random(seed, m * k),
            w: random(seed + 1, n * k),
            a,
            b,
            dy: random(seed + 4, m * n),
            dropout: None,
        }
    }

    fn adapter_of(&self, row: usize) -> Option<usize> {
        match &self.index {
            None => Some(0),
            Some(index) => usize::try_from(index[row]).ok(),
        }
    }

    fn rows_of(&self, l: usize) -> Vec<usize> {
        (0..self.m).filter(|&row| self.adapter_of(row) == Some(l)).collect()
    }

    fn a_at(&self, l: usize, j: usize, k: usize) -> usize {
        (l * self.r_max + j) * self.k + k
    }

    fn b_at(&self, l: usize, n: usize, j: usize) -> usize {
        (l * self.n + n) * self.r_max + j
    }
}

/// Y `[m, n]` and P `[m, r_max]` from the forward kernels, for the given X, A and B.
fn forward(dev: &Device, case: &Case, x: &[f32], a: &[f32], b: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let stream = &dev.stream;
    let (x, w, a, b) = (upload(stream, x), upload(stream, &case.w), upload(stream, a), upload(stream, b));
    let mut y: CudaSlice<f32> = upload(stream, &vec![f32::NAN; case.m * case.n]);
    let mut p: CudaSlice<f32> = upload(stream, &vec![f32::NAN; case.m * case.r_max]);
    let linear = Linear { weight: w.as_view(), bias: None, n: case.n, k: case.k };
    let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
    match &case.index {
        None => {
            let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: case.ranks[0], scale: case.scales[0] };
            dev.kernels
                .forward(stream, &x.as_view(), &linear, &adapter, case.dropout.as_ref(), &mut out)
                .expect("forward");
        }
        Some(index) => {
            let index = upload(stream, index);
            let mut status = AdapterStatus::new(stream).expect("status");
            let stack = AdapterStack {
                a: a.as_view(),
                b: b.as_view(),
                r_max: case.r_max,
                ranks: &case.ranks,
                scales: &case.scales,
            };
            let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
            dev.kernels
                .forward_multi(stream, &x.as_view(), &linear, &stack, &mut rows, case.dropout.as_ref(), &mut out)
                .expect("forward_multi");
            status.check(stream).expect("every index in range");
        }
    }
    let y = download(stream, &y);
    assert!(y.iter().all(|v| v.is_finite()), "{}: Y not finite", case.name);
    (y, download(stream, &p))
}

/// Every gradient's bits (through f64, which keeps each value and NaN-ness),
/// so that equal NaNs compare equal.
fn gradient_bits<T: LoraDType>(got: &Got<T>) -> Vec<u64> {
    [&got.da, &got.db, &got.dx, &got.g].into_iter().flatten().map(|v| v.to_f64().to_bits()).collect()
}

/// One backward run of the shared backward case (P kept when `keep_p`, else
/// recomputed), every gradient buffer starting as NaN; with `Api::Multi`,
/// every row's index must be in range.
fn backward<T: LoraDType>(dev: &Device, case: &backward_support::Case<T>, api: Api, keep_p: bool) -> Got<T> {
    let initial = Initial::nan(case);
    let (got, status) = backward_support::run(dev, case, api, keep_p, &initial, GradMode::Overwrite).expect("backward");
    if api == Api::Multi {
        status.check(&dev.stream).expect("every index in range");
    }
    got
}

/// Which entry point a case's rows name: `Single` without an index.
fn api_of(index: Option<&[i32]>) -> Api {
    match index {
        None => Api::Single,
        Some(_) => Api::Multi,
    }
}

impl Case {
    /// The case as a backward problem, P the forward's `p`; without an index
    /// (the single-adapter entry points, which read none) every row's is 0.
    fn backward_case(&self, p: Vec<f32>) -> backward_support::Case<f32> {
        backward_support::Case {
            m: self.m,
            k: self.k,
            n: self.n,
            r_max: self.r_max,
            ranks: self.ranks.clone(),
            scales: self.scales.clone(),
            index: self.index.clone().unwrap_or_else(|| vec![0; self.m]),
            x: self.x.clone(),
            w: self.w.clone(),
            a: self.a.clone(),
            b: self.b.clone(),
            p,
            dy: self.dy.clone(),
            dropout: self.dropout,
        }
    }
}

/// One parameter a sample perturbs.
#[derive(Clone, Copy, Debug)]
enum Param {
    X { m: usize, k: usize },
    A { l: usize, j: usize, k: usize },
    B { l: usize, n: usize, j: usize },
}

/// The Y elements whose exact value depends on the perturbed parameter:
/// `rows × (one column, or all)`. Every other element must come out
/// bit-identical from the two forward runs.
struct Affected {
    rows: Vec<usize>,
    col: Option<usize>,
}

impl Affected {
    fn of(case: &Case, param: Param) -> Self {
        match param {
            Param::X { m, .. } => Affected { rows: vec![m], col: None },
            // Past the rank the parameter is padding: nothing depends on it.
            Param::A { l, j, .. } if j >= case.ranks[l] => Affected { rows: Vec::new(), col: None },
            Param::B { l, j, .. } if j >= case.ranks[l] => Affected { rows: Vec::new(), col: None },
            Param::A { l, .. } => Affected { rows: case.rows_of(l), col: None },
            Param::B { l, n, .. } => Affected { rows: case.rows_of(l), col: Some(n) },
        }
    }

    fn cols(&self, n: usize) -> std::ops::Range<usize> {
        match self.col {
            Some(col) => col..col + 1,
            None => 0..n,
        }
    }

    fn contains(&self, row: usize, col: usize) -> bool {
        self.rows.contains(&row) && self.col.map_or(true, |c| c == col)
    }
}

/// A bound on |X̃| / |X| for the adapter's input: 1 without dropout; with
/// it, X̃ = round(mask·X/(1 − p)), at most |X|·(1 − p)⁻¹·(1 + u). X̃'s
/// rounding is not an error here: the forward and the backward round it
/// alike, so it is part of the function both compute, and it enters the
/// bounds only through this magnitude. (L stays linear in X only when
/// (1 − p)⁻¹ is a power of two, e.g. p = 0.5, which makes that rounding exact.)
fn adapter_input_gain(case: &Case) -> f64 {
    match &case.dropout {
        Some(d) if d.p > 0.0 => f64::from(d.inv_keep()) * (1.0 + U32),
        _ => 1.0,
    }
}

/// `Σ|X̃[m]|·|A_l[j]|` over K: the magnitude of `P[m, j]`'s sum.
fn p_magnitude(case: &Case, x: &[f64], a: &[f64], m: usize, l: usize, j: usize) -> f64 {
    adapter_input_gain(case) * (0..case.k).map(|k| x[m * case.k + k] * a[case.a_at(l, j, k)]).sum::<f64>()
}

/// A bound on `Σ_{(m,n) affected} |dY[m,n]|·|Ŷ[m,n] − Y[m,n]|`, the error
/// the rounding of Y puts into one forward's loss (magnitudes `x`, `a`, `b`
/// are |X|, |A|, |B| with the perturbed element at its larger value, which
/// bounds both runs of the central difference).
///
/// Derivation, in f32 (u = 2⁻²⁴), for Y[m, n] with adapter l of rank r:
/// - the shrink sums K products and stores P: |P̂ − P| ≤ γ(K+1)·Σ_k|X||A| =: γ(K+1)·P⁺;
/// - the fused GEMM sums K + r products (the adapter ones scaled by s) and
///   stores Y: |Ŷ − Y(P̂)| ≤ γ(K+r+3)·(Σ_k|X||W0| + |s|·Σ_j|P̂||B|);
/// - P's error reaches Y through s·B: ≤ |s|·Σ_j |B|·γ(K+1)·P⁺.
///
/// With |P̂| ≤ (1 + γ(K+1))·P⁺ and γ(a)(1 + γ(b)) + γ(b) ≤ γ(a + b):
/// |Ŷ − Y| ≤ γ(2K+r+4)·(Σ_k|X||W0| + |s|·Σ_j |B|·P⁺), one rounding to spare.
/// With dropout, X̃ replaces X in P⁺ ([`adapter_input_gain`]).
fn fd_error_bound(case: &Case, x: &[f64], a: &[f64], b: &[f64], w: &[f64], dy: &[f64], affected: &Affected) -> f64 {
    let (k_len, n_len) = (case.k, case.n);
    let mut total = 0.0;
    for &m in &affected.rows {
        let adapter = case.adapter_of(m);
        let p_mag: Vec<f64> = match adapter {
            Some(l) => (0..case.ranks[l]).map(|j| p_magnitude(case, x, a, m, l, j)).collect(),
            None => Vec::new(),
        };
        let rank = adapter.map_or(0, |l| case.ranks[l]);
        let scale = adapter.map_or(0.0, |l| f64::from(case.scales[l]).abs());
        let g = gamma(2 * k_len + rank + 4, U32);
        for n in affected.cols(n_len) {
            let base: f64 = (0..k_len).map(|k| x[m * k_len + k] * w[n * k_len + k]).sum();
            let lora: f64 = match adapter {
                Some(l) => p_mag.iter().enumerate().map(|(j, p)| b[case.b_at(l, n, j)] * p).sum(),
                None => 0.0,
            };
            total += dy[m * n_len + n] * g * (base + scale * lora);
        }
    }
    total
}

/// A bound on |kernel gradient − exact gradient| for one parameter, from
/// the backward's rounding (f32, u = 2⁻²⁴; l, r, s the parameter's adapter):
/// - G = dY·B stored: |Ĝ − G| ≤ γ(N+1)·G⁺, G⁺[m, j] = Σ_n|dY||B|;
/// - dA[j,k] = s·Σ_m Ĝ·X over M rows (in chunks, in any order), stored:
///   ≤ γ(M+2)·|s|Σ_m|Ĝ||X| + |s|Σ_m γ(N+1)·G⁺|X| ≤ γ(M+N+3)·|s|·Σ_m G⁺|X|;
/// - dB[n,j] = s·Σ_m dY·P̂, with P̂ the forward's (kept, or recomputed to the
///   same bits) while the exact gradient uses the exact P:
///   ≤ γ(M+K+3)·|s|·Σ_m |dY|·P⁺ (P⁺ as in [`fd_error_bound`]);
/// - dX[m,k] = Σ_n dY·W0 + s·Σ_j Ĝ·A over N + r products, stored:
///   ≤ γ(2N+r+4)·(Σ_n|dY||W0| + |s|·Σ_j G⁺|A|).
///
/// With dropout, X̃ replaces X in dA and the adapter term of dX carries the
/// mask over 1 − p: both scale by [`adapter_input_gain`].
///
/// Only rows of adapter l enter the sums over M (the others are not part of
/// the exact gradient); the γ still counts all M terms.
fn gradient_error_bound(case: &Case, mags: &Magnitudes, param: Param) -> f64 {
    let Magnitudes { x, w, a, b, dy } = mags;
    let (m_len, k_len, n_len) = (case.m, case.k, case.n);
    let g_mag =
        |m: usize, l: usize, j: usize| -> f64 { (0..n_len).map(|n| dy[m * n_len + n] * b[case.b_at(l, n, j)]).sum() };
    match param {
        Param::X { m, k } => {
            let base: f64 = (0..n_len).map(|n| dy[m * n_len + n] * w[n * k_len + k]).sum();
            let (rank, lora) = match case.adapter_of(m) {
                Some(l) => {
                    let rank = case.ranks[l];
                    let sum: f64 = (0..rank).map(|j| g_mag(m, l, j) * a[case.a_at(l, j, k)]).sum();
                    (rank, f64::from(case.scales[l]).abs() * adapter_input_gain(case) * sum)
                }
                None => (0, 0.0),
            };
            gamma(2 * n_len + rank + 4, U32) * (base + lora)
        }
        Param::A { l, j, k } if j < case.ranks[l] => {
            let sum: f64 = case.rows_of(l).into_iter().map(|m| g_mag(m, l, j) * x[m * k_len + k]).sum();
            gamma(m_len + n_len + 3, U32) * f64::from(case.scales[l]).abs() * adapter_input_gain(case) * sum
        }
        Param::B { l, n, j } if j < case.ranks[l] => {
            let sum: f64 =
                case.rows_of(l).into_iter().map(|m| dy[m * n_len + n] * p_magnitude(case, x, a, m, l, j)).sum();
            gamma(m_len + k_len + 3, U32) * f64::from(case.scales[l]).abs() * sum
        }
        // Padding: the kernels write exact zeros there.
        Param::A { .. } | Param::B { .. } => 0.0,
    }
}

/// |X|, |W0|, |A|, |B|, |dY| in f64 (NaN padding read as 0: nothing reads it).
struct Magnitudes {
    x: Vec<f64>,
    w: Vec<f64>,
    a: Vec<f64>,
    b: Vec<f64>,
    dy: Vec<f64>,
}

fn magnitudes(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| if v.is_nan() { 0.0 } else { f64::from(v).abs() }).collect()
}

impl Magnitudes {
    fn of(case: &Case) -> Self {
        Magnitudes {
            x: magnitudes(&case.x),
            w: magnitudes(&case.w),
            a: magnitudes(&case.a),
            b: magnitudes(&case.b),
            dy: magnitudes(&case.dy),
        }
    }
}

/// `Σ dY ⊙ Y` in f64 (each product of two f32 values is exact in f64), and
/// a bound on the f64 summation's own error: γ₆₄(MN)·Σ|dY ⊙ Y|.
fn loss(dy: &[f32], y: &[f32]) -> (f64, f64) {
    let products = dy.iter().zip(y).map(|(&d, &v)| f64::from(d) * f64::from(v));
    let (sum, magnitude) = products.fold((0.0, 0.0), |(s, m), p| (s + p, m + p.abs()));
    (sum, gamma(y.len(), U64) * magnitude)
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// The kernel's gradient for one parameter.
fn gradient(case: &Case, grads: &Got<f32>, param: Param) -> f64 {
    let value = match param {
        Param::X { m, k } => grads.dx[m * case.k + k],
        Param::A { l, j, k } => grads.da[case.a_at(l, j, k)],
        Param::B { l, n, j } => grads.db[case.b_at(l, n, j)],
    };
    f64::from(value)
}

/// The parameter's slot in the case's data.
fn slot(case: &mut Case, param: Param) -> &mut f32 {
    match param {
        Param::X { m, k } => &mut case.x[m * case.k + k],
        Param::A { l, j, k } => {
            let at = case.a_at(l, j, k);
            &mut case.a[at]
        }
        Param::B { l, n, j } => {
            let at = case.b_at(l, n, j);
            &mut case.b[at]
        }
    }
}

/// The central difference of the loss in one parameter, checked against the
/// kernel's gradients (P kept and P recomputed) within the derived bounds.
fn check_parameter(dev: &Device, case: &mut Case, y0: &[f32], grads: &[(&str, Got<f32>)], param: Param) {
    let name = case.name;
    let original = *slot(case, param);
    let affected = Affected::of(case, param);
    if affected.rows.is_empty() {
        // Padding, an adapter no row uses, or a row-less perturbation: any
        // value there, even a huge one, must leave Y bit-identical.
        for value in [1e30f32, -7.0] {
            *slot(case, param) = value;
            let (y, _) = forward(dev, case, &case.x, &case.a, &case.b);
            assert!(bits(&y) == bits(y0), "{name}: Y changed when {param:?} (read nowhere) became {value}");
        }
        *slot(case, param) = original;
        for (how, g) in grads {
            assert_eq!(gradient(case, g, param), 0.0, "{name}, {how}: gradient of {param:?}, which no row uses");
        }
        return;
    }
    // θ ± h rounded to f32: the step actually taken is their difference.
    let plus = (f64::from(original) + STEP) as f32;
    let minus = (f64::from(original) - STEP) as f32;
    let mut runs = Vec::new();
    for value in [plus, minus] {
        *slot(case, param) = value;
        runs.push(forward(dev, case, &case.x, &case.a, &case.b).0);
    }
    *slot(case, param) = original;
    let (y_plus, y_minus) = (&runs[0], &runs[1]);
    // The bound below covers only the affected elements: the others must not
    // have moved at all (their errors then cancel exactly in L+ − L−).
    for (i, (p, q)) in y_plus.iter().zip(y_minus).enumerate() {
        let (row, col) = (i / case.n, i % case.n);
        if !affected.contains(row, col) {
            assert_eq!(
                p.to_bits(),
                q.to_bits(),
                "{name}: Y[{row},{col}] changed with {param:?}, which it does not depend on"
            );
        }
    }
    let (l_plus, e_plus) = loss(&case.dy, y_plus);
    let (l_minus, e_minus) = loss(&case.dy, y_minus);
    let delta = f64::from(plus) - f64::from(minus);
    let difference = (l_plus - l_minus) / delta;

    // The magnitudes with the perturbed element at max(|θ+|, |θ−|).
    let mut mags = Magnitudes::of(case);
    let widest = f64::from(plus.abs().max(minus.abs()));
    match param {
        Param::X { m, k } => mags.x[m * case.k + k] = widest,
        Param::A { l, j, k } => mags.a[case.a_at(l, j, k)] = widest,
        Param::B { l, n, j } => mags.b[case.b_at(l, n, j)] = widest,
    }
    let y_error = fd_error_bound(case, &mags.x, &mags.a, &mags.b, &mags.w, &mags.dy, &affected);
    let fd_tolerance = (2.0 * y_error + e_plus + e_minus) / delta;
    let gradient_tolerance = gradient_error_bound(case, &Magnitudes::of(case), param);
    let tolerance = (fd_tolerance + gradient_tolerance) * (1.0 + 1e-12);
    assert!(
        tolerance <= LARGEST_RELATIVE_BOUND * difference.abs().max(1.0),
        "{name}: the derived bound {tolerance:e} on ∂L/∂{param:?} ≈ {difference:e} is too loose to test anything"
    );
    for (how, g) in grads {
        let got = gradient(case, g, param);
        let error = (got - difference).abs();
        assert!(
            error <= tolerance,
            "{name}, {how}: ∂L/∂{param:?}: kernel {got:e}, central difference {difference:e}, \
             |difference| {error:e} > derived bound {tolerance:e}"
        );
    }
}

/// The parameters a case samples: for X, A and B the first and last
/// elements, elements in the K tail and each used adapter's last rank
/// row/column, and a few from a fixed seed; padding and unused adapters too.
fn sample(case: &Case, seed: u64) -> Vec<Param> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (m, k, n) = (case.m, case.k, case.n);
    let mut params = vec![
        Param::X { m: 0, k: 0 },
        Param::X { m: m - 1, k: k - 1 },
        Param::X { m: m / 2, k: k - 2 },
        Param::X { m: rng.random_range(0..m), k: rng.random_range(0..k) },
    ];
    // A row without an adapter: its dX is the base term alone.
    if let Some(row) = (0..m).find(|&row| case.adapter_of(row).is_none()) {
        params.push(Param::X { m: row, k: rng.random_range(0..k) });
    }
    for (l, &rank) in case.ranks.iter().enumerate() {
        let last = rank - 1;
        if case.rows_of(l).is_empty() {
            // Unused: a gradient of exact zeros, and Y does not see it.
            params.push(Param::A { l, j: 0, k: 0 });
            params.push(Param::B { l, n: n - 1, j: last });
            continue;
        }
        params.extend([
            Param::A { l, j: 0, k: 0 },
            Param::A { l, j: last, k: k - 1 },
            Param::A { l, j: rng.random_range(0..rank), k: k - 3 },
            Param::A { l, j: rng.random_range(0..rank), k: rng.random_range(0..k) },
            Param::B { l, n: 0, j: 0 },
            Param::B { l, n: n - 1, j: last },
            Param::B { l, n: rng.random_range(0..n), j: last },
            Param::B { l, n: rng.random_range(0..n), j: rng.random_range(0..rank) },
        ]);
        if rank < case.r_max {
            params.push(Param::A { l, j: rank, k: rng.random_range(0..k) });
            params.push(Param::B { l, n: rng.random_range(0..n), j: case.r_max - 1 });
        }
    }
    params
}

fn check_case(mut case: Case, seed: u64) {
    let Some(dev) = device::device() else { return };
    let (y0, p0) = forward(&dev, &case, &case.x, &case.a, &case.b);
    let (inputs, api) = (case.backward_case(p0), api_of(case.index.as_deref()));
    let grads = [("P kept", backward(&dev, &inputs, api, true)), ("P recomputed", backward(&dev, &inputs, api, false))];
    for param in sample(&case, seed) {
        check_parameter(&dev, &mut case, &y0, &grads, param);
    }
}

/// One row with the smallest K; M over one 64-row chunk of the dA/dB
/// reduction with a K that is not a multiple of the tiles' K step; M = 130
/// (three chunks) with rank 16.
#[test]
fn single_adapter() {
    check_case(Case::new("m=1 k=4 n=8 r=1", 1, 4, 8, &[1], None, 10), 11);
    check_case(Case::new("m=70 k=100 n=48 r=8", 70, 100, 48, &[8], None, 20), 21);
    check_case(Case::new("m=130 k=36 n=24 r=16", 130, 36, 24, &[16], None, 25), 26);
}

/// Dropout p = 0.5 on the adapter input, the forward's mask regenerated by
/// the backward: 1/(1 − p) = 2 is exact, so X̃ = 2·X on kept elements and L
/// stays exactly linear in X (any other p rounds X̃).
#[test]
fn dropout() {
    let dropout = Dropout::new(0.5, 0x5eed, 3).expect("dropout");
    let mut single = Case::new("dropout, m=70 k=100 n=48 r=8", 70, 100, 48, &[8], None, 50);
    single.dropout = Some(dropout);
    check_case(single, 51);
    let m = 75;
    let mut rng = ChaCha8Rng::seed_from_u64(52);
    let index: Vec<i32> = (0..m).map(|_| rng.random_range(-1..2)).collect();
    let mut multi = Case::new("dropout, 3 adapters", m, 52, 40, &[8, 3, 5], Some(index), 53);
    multi.dropout = Some(Dropout::new(0.5, 7, 1 << 33).expect("dropout"));
    check_case(multi, 54);
}

/// Three adapters of ranks 8, 3, 5 (r_max 8), rows of adapters 0 and 1 and
/// of none (−1), in no order; adapter 2 has no rows.
#[test]
fn multi_adapter() {
    let m = 75;
    let mut rng = ChaCha8Rng::seed_from_u64(30);
    let mut index: Vec<i32> = (0..m).map(|_| rng.random_range(-1..2)).collect();
    index[0] = -1;
    index[m - 1] = 1;
    check_case(Case::new("3 adapters", m, 52, 40, &[8, 3, 5], Some(index), 31), 32);
}

// ---- Determinism ----

/// Two runs of the backward on the same inputs give bit-identical outputs,
/// one adapter and a stack, P kept and recomputed, with M = 200: four
/// 64-row chunks for the ordered sum of the dA/dB partials.
fn two_runs_bit_identical<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let (m, k, n, ranks, r_max) = (200, 40, 24, [6usize, 2, 4], 6);
    let mut rng = ChaCha8Rng::seed_from_u64(40);
    let index: Vec<i32> = (0..m).map(|_| rng.random_range(-1..3)).collect();
    let scales = [0.75f32, 1.25, 1.75];
    let (x, w, dy, p): (Vec<T>, Vec<T>, Vec<T>, Vec<T>) =
        (random(41, m * k), random(42, n * k), random(43, m * n), random(44, m * r_max));
    let (a, b): (Vec<T>, Vec<T>) = (random(45, ranks.len() * r_max * k), random(46, ranks.len() * n * r_max));
    for stacked in [false, true] {
        let (ranks, scales) = if stacked { (&ranks[..], &scales[..]) } else { (&ranks[..1], &scales[..1]) };
        let index = stacked.then_some(&index[..]);
        let case = backward_support::Case {
            m,
            k,
            n,
            r_max,
            ranks: ranks.to_vec(),
            scales: scales.to_vec(),
            index: index.map_or_else(|| vec![0; m], <[i32]>::to_vec),
            x: x.clone(),
            w: w.clone(),
            a: if stacked { a.clone() } else { a[..r_max * k].to_vec() },
            b: if stacked { b.clone() } else { b[..n * r_max].to_vec() },
            p: p.clone(),
            dy: dy.clone(),
            dropout: None,
        };
        for keep_p in [true, false] {
            let first = backward(&dev, &case, api_of(index), keep_p);
            let second = backward(&dev, &case, api_of(index), keep_p);
            assert!(first.dx.iter().all(|v| !v.to_f64().is_nan()), "dX unwritten");
            assert!(
                gradient_bits(&first) == gradient_bits(&second),
                "two runs differ (stacked: {stacked}, P kept: {keep_p})"
            );
        }
    }
}

#[test]
fn deterministic_f32() {
    two_runs_bit_identical::<f32>();
}

#[test]
fn deterministic_f16() {
    two_runs_bit_identical::<f16>();
}

#[test]
fn deterministic_bf16() {
    two_runs_bit_identical::<bf16>();
}

//! What the forward tests share: seeded data, the f64 reference of the
//! forward contract (rounding where the kernels round), the tolerance check of
//! docs/contract.md, and uploads and downloads.

#![allow(dead_code)]

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};
use fused_lora::reference::Dropout;
use fused_lora::{
    Adapter, AdapterStack, AdapterStatus, ForwardOutput, Linear, LoraDType, LoraError, LoraKernels, RowAdapters,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `len` values uniform in [-1, 1), rounded to T, from a fixed seed.
pub fn random<T: LoraDType>(seed: u64, len: usize) -> Vec<T> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| T::from_f64(rng.random_range(-1.0..1.0))).collect()
}

pub fn upload<T: cudarc::driver::DeviceRepr>(stream: &Arc<CudaStream>, host: &[T]) -> CudaSlice<T> {
    stream.clone_htod(host).expect("upload")
}

/// An output buffer filled with NaN, so an element the kernel never writes fails.
pub fn poisoned<T: LoraDType>(stream: &Arc<CudaStream>, len: usize) -> CudaSlice<T> {
    upload(stream, &vec![T::nan(); len])
}

pub fn download<T: LoraDType>(stream: &Arc<CudaStream>, device: &CudaSlice<T>) -> Vec<T> {
    stream.clone_dtoh(device).expect("download")
}

/// One output's sum, three ways: exact (f64; every product of f32-or-narrower
/// values is exact in f64), naive (sequential f32, as a plain same-precision
/// CPU loop would do), and the sum of magnitudes for the error floor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sum {
    pub exact: f64,
    pub naive: f32,
    pub magnitude: f64,
    pub terms: usize,
}

impl Sum {
    pub fn add_product(&mut self, a: f64, b: f64) {
        self.exact += a * b;
        self.naive += (a as f32) * (b as f32);
        self.magnitude += (a * b).abs();
        self.terms += 1;
    }

    /// `self + s·other`, with s applied in f32 on the naive side as the kernels do.
    pub fn plus_scaled(self, s: f32, other: Sum) -> Sum {
        Sum {
            exact: self.exact + s as f64 * other.exact,
            naive: self.naive + s * other.naive,
            magnitude: self.magnitude + (s as f64).abs() * other.magnitude,
            terms: self.terms + other.terms + 1,
        }
    }

    pub fn plus(self, v: f64) -> Sum {
        Sum {
            exact: self.exact + v,
            naive: self.naive + v as f32,
            magnitude: self.magnitude + v.abs(),
            terms: self.terms + 1,
        }
    }

    /// The error f32 accumulation may commit, in any order: (terms + 2)·2⁻²⁴·Σ|terms|.
    pub fn floor(&self) -> f64 {
        (self.terms as f64 + 2.0) * 2f64.powi(-24) * self.magnitude + 1e-30
    }
}

/// A fused-P tile's P (computed inside the GEMM) against the shrink's P of
/// the same inputs: docs/contract.md's bound, each element the shrink's or
/// the value of T next to it (only the f32 accumulation order differs), and
/// at least 95 % of them the same bits (an accumulation-order difference,
/// not a different computation).
#[track_caller]
pub fn assert_p_next_to_shrink<T: LoraDType>(what: &str, p: &[T], p_shrink: &[T]) {
    assert_eq!(p.len(), p_shrink.len(), "{what}: length");
    // One unit in the last place of T at v's binade.
    let mantissa = if T::DTYPE == fused_lora::DType::F16 { 10 } else { 7 };
    let ulp = |v: f64| 2f64.powi(v.abs().max(2f64.powi(-14)).log2().floor() as i32 - mantissa);
    let mut differ = 0;
    for (j, (f, s)) in p.iter().zip(p_shrink).enumerate() {
        let (f, s) = (f.to_f64(), s.to_f64());
        assert!((f - s).abs() <= ulp(f.abs().max(s.abs())), "{what}: P[{j}] {f} vs the shrink's {s}");
        differ += usize::from(f != s);
    }
    assert!(differ * 20 <= p.len(), "{what}: {differ} of {} P elements differ from the shrink's", p.len());
}

/// docs/contract.md's rule: |got − exact| ≤ 2·|naive − exact| + floor per element, the
/// naive result being rounded to T like the kernel's; NaN never passes.
#[track_caller]
pub fn assert_close<T: LoraDType>(what: &str, got: &[T], want: &[Sum]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f64();
        let naive = T::from_f32(w.naive).to_f64();
        let allowed = 2.0 * (naive - w.exact).abs() + w.floor();
        let err = (g - w.exact).abs();
        assert!(
            g.is_finite() && err <= allowed,
            "{what}[{i}] ({}): got {g}, exact {}, naive {naive}, error {err:e} > allowed {allowed:e}",
            T::DTYPE,
            w.exact
        );
    }
}

/// The problem of one adapter per row (a single adapter is L = 1, every index 0).
pub struct MultiCase<T> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub r_max: usize,
    pub x: Vec<T>,
    pub w: Vec<T>,
    pub bias: Option<Vec<T>>,
    pub a: Vec<T>,
    pub b: Vec<T>,
    pub ranks: Vec<usize>,
    pub scales: Vec<f32>,
    pub index: Vec<i32>,
}

/// A case's operands on the device: X, W0, the optional bias, A, B and the
/// per-row indices, with the views the entry points take.
pub struct DeviceCase<T> {
    pub x: CudaSlice<T>,
    pub w: CudaSlice<T>,
    pub bias: Option<CudaSlice<T>>,
    pub a: CudaSlice<T>,
    pub b: CudaSlice<T>,
    pub index: CudaSlice<i32>,
}

impl<T: LoraDType> DeviceCase<T> {
    /// The base layer `[n, k]` with its bias, if the case has one.
    pub fn linear(&self, n: usize, k: usize) -> Linear<'_, T> {
        Linear { weight: self.w.as_view(), bias: self.bias.as_ref().map(|b| b.as_view()), n, k }
    }

    /// The case's first adapter alone (rank `ranks[0]`, scale `scales[0]`).
    pub fn adapter<'a>(&'a self, case: &MultiCase<T>) -> Adapter<'a, T> {
        Adapter { a: self.a.as_view(), b: self.b.as_view(), rank: case.ranks[0], scale: case.scales[0] }
    }

    /// Every adapter of the case, stacked.
    pub fn stack<'a>(&'a self, case: &'a MultiCase<T>) -> AdapterStack<'a, T> {
        AdapterStack {
            a: self.a.as_view(),
            b: self.b.as_view(),
            r_max: case.r_max,
            ranks: &case.ranks,
            scales: &case.scales,
        }
    }
}

impl<T: LoraDType> MultiCase<T> {
    /// The case's operands uploaded to the device.
    pub fn upload(&self, stream: &Arc<CudaStream>) -> DeviceCase<T> {
        DeviceCase {
            x: upload(stream, &self.x),
            w: upload(stream, &self.w),
            bias: self.bias.as_ref().map(|v| upload(stream, v)),
            a: upload(stream, &self.a),
            b: upload(stream, &self.b),
            index: upload(stream, &self.index),
        }
    }

    /// Runs `forward_multi` on the case (with `dropout`), outputs poisoned
    /// first, and returns (P, Y); the status must report no bad index.
    pub fn run(
        &self,
        kernels: &LoraKernels,
        stream: &Arc<CudaStream>,
        dropout: Option<&Dropout>,
    ) -> Result<(Vec<T>, Vec<T>), LoraError> {
        let (m, k, n, r_max) = (self.m, self.k, self.n, self.r_max);
        let on = self.upload(stream);
        let mut status = AdapterStatus::new(stream).expect("status");
        let mut y = poisoned::<T>(stream, m * n);
        let mut p = poisoned::<T>(stream, m * r_max);
        let (linear, stack) = (on.linear(n, k), on.stack(self));
        let mut rows = RowAdapters { index: on.index.as_view(), status: &mut status };
        let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
        kernels.forward_multi(stream, &on.x.as_view(), &linear, &stack, &mut rows, dropout, &mut out)?;
        status.check(stream).expect("no bad index");
        Ok((download(stream, &p), download(stream, &y)))
    }
}

impl<T: LoraDType> MultiCase<T> {
    /// The row's adapter if its index is in range.
    fn adapter_of(&self, row: usize) -> Option<usize> {
        let l = self.index[row];
        (l >= 0 && (l as usize) < self.ranks.len()).then_some(l as usize)
    }

    /// P `[m, r_max]` = X·A_lᵀ over the first r_l columns (unscaled), 0 elsewhere.
    pub fn p_reference(&self) -> Vec<Sum> {
        let mut p = vec![Sum::default(); self.m * self.r_max];
        for row in 0..self.m {
            let Some(l) = self.adapter_of(row) else { continue };
            for j in 0..self.ranks[l] {
                let a_row = &self.a[(l * self.r_max + j) * self.k..][..self.k];
                let sum = &mut p[row * self.r_max + j];
                for (xv, av) in self.x[row * self.k..][..self.k].iter().zip(a_row) {
                    sum.add_product(xv.to_f64(), av.to_f64());
                }
            }
        }
        p
    }

    /// Y `[m, n]` = X·W0ᵀ + bias + s_l·P·B_lᵀ, using the P the kernel stored.
    pub fn y_reference(&self, p: &[T]) -> Vec<Sum> {
        let mut y = Vec::with_capacity(self.m * self.n);
        for row in 0..self.m {
            for col in 0..self.n {
                let mut base = Sum::default();
                for (xv, wv) in self.x[row * self.k..][..self.k].iter().zip(&self.w[col * self.k..][..self.k]) {
                    base.add_product(xv.to_f64(), wv.to_f64());
                }
                if let Some(l) = self.adapter_of(row) {
                    let mut adapter = Sum::default();
                    let b_row = &self.b[(l * self.n + col) * self.r_max..][..self.r_max];
                    for j in 0..self.ranks[l] {
                        adapter.add_product(p[row * self.r_max + j].to_f64(), b_row[j].to_f64());
                    }
                    base = base.plus_scaled(self.scales[l], adapter);
                }
                if let Some(bias) = &self.bias {
                    base = base.plus(bias[col].to_f64());
                }
                y.push(base);
            }
        }
        y
    }
}

/// Writes NaN into every padding element of the stacked adapters (rows of A
/// and columns of B past each rank): the kernels must never read them.
pub fn poison_padding<T: LoraDType>(a: &mut [T], b: &mut [T], ranks: &[usize], r_max: usize, n: usize, k: usize) {
    for (l, &r) in ranks.iter().enumerate() {
        for j in r..r_max {
            a[(l * r_max + j) * k..][..k].fill(T::nan());
            for col in 0..n {
                b[(l * n + col) * r_max + j] = T::nan();
            }
        }
    }
}

/// Index mixes of docs/contract.md ("How results are tested") for `m` rows over `num_adapters` adapters.
#[derive(Clone, Copy, Debug)]
pub enum Mix {
    /// Every row −1: base only.
    NoAdapter,
    /// Every row adapter 0.
    OneAdapter,
    /// Row i uses adapter i (needs L ≥ m).
    DistinctPerRow,
    /// Zipf-like: adapter l drawn with weight 1/(l+1), some rows −1.
    Zipf,
    /// Most rows one adapter, a few others.
    Skewed,
    /// Rows of each adapter in contiguous runs, then shuffled.
    Unsorted,
    /// Every adapter but the last has rows; the last has none.
    OneAdapterUnused,
}

pub fn row_indices(mix: Mix, m: usize, num_adapters: usize, seed: u64) -> Vec<i32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let l = num_adapters as i32;
    match mix {
        Mix::NoAdapter => vec![-1; m],
        Mix::OneAdapter => vec![0; m],
        Mix::DistinctPerRow => (0..m as i32).map(|i| i % l).collect(),
        Mix::Zipf => {
            let weights: Vec<f64> = (0..=num_adapters).map(|i| 1.0 / (i as f64 + 1.0)).collect();
            let total: f64 = weights.iter().sum();
            (0..m)
                .map(|_| {
                    let mut u = rng.random_range(0.0..total);
                    for (i, w) in weights.iter().enumerate() {
                        if u < *w {
                            // The last bucket stands for "no adapter".
                            return if i == num_adapters { -1 } else { i as i32 };
                        }
                        u -= w;
                    }
                    -1
                })
                .collect()
        }
        Mix::Skewed => {
            (0..m).map(|_| if rng.random_range(0..10) < 8 { 1 % l } else { rng.random_range(-1..l) }).collect()
        }
        Mix::Unsorted => {
            let mut idx: Vec<i32> = (0..m).map(|i| (i * num_adapters / m) as i32).collect();
            for i in (1..m).rev() {
                let j = rng.random_range(0..=i);
                idx.swap(i, j);
            }
            idx
        }
        Mix::OneAdapterUnused => (0..m).map(|i| (i % (num_adapters - 1).max(1)) as i32).collect(),
    }
}

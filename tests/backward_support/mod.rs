//! What the backward tests share: one backward problem on the host (seeded
//! data, stacked adapters, NaN in every element the kernels must not read),
//! its f64 reference (exact and naive), the gradient buffers' initial
//! contents (NaN poison or random old gradients), a run on the device, and
//! the check of every gradient against the reference with docs/contract.md's
//! tolerance.
//!
//! A binary that uses it declares `common`, `device` and `forward_support`
//! beside it.

#![allow(dead_code)]

use cudarc::driver::CudaSlice;
use fused_lora::reference::{backward_multi, Base, Dropout, MultiAdapters, MultiGradients, Precision};
use fused_lora::{
    Adapter, AdapterStack, AdapterStatus, BackwardInputs, BackwardOutput, GradMode, Linear, LoraDType, LoraError,
    MultiAdapterShape, RowAdapters,
};

use crate::common::assert_close_2d;
use crate::device::Device;
use crate::forward_support::{download, poison_padding, random, row_indices, upload, Mix};

/// One backward problem on the host, stacked form (one adapter: L = 1).
pub struct Case<T> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub r_max: usize,
    pub ranks: Vec<usize>,
    pub scales: Vec<f32>,
    pub index: Vec<i32>,
    pub x: Vec<T>,
    pub w: Vec<T>,
    pub a: Vec<T>,
    pub b: Vec<T>,
    pub p: Vec<T>,
    pub dy: Vec<T>,
    pub dropout: Option<Dropout>,
}

impl<T: LoraDType> Case<T> {
    /// Random X, W0, A, B, P and dY from `seed` to `seed + 5`; adapter l
    /// scaled by 0.75 + 0.5·l.
    pub fn new(m: usize, k: usize, n: usize, ranks: &[usize], r_max: usize, index: Vec<i32>, seed: u64) -> Self {
        let num_adapters = ranks.len();
        Case {
            m,
            k,
            n,
            r_max,
            ranks: ranks.to_vec(),
            scales: (0..num_adapters).map(|l| 0.75 + 0.5 * l as f32).collect(),
            index,
            x: random(seed, m * k),
            w: random(seed + 1, n * k),
            a: random(seed + 2, num_adapters * r_max * k),
            b: random(seed + 3, num_adapters * n * r_max),
            p: random(seed + 4, m * r_max),
            dy: random(seed + 5, m * n),
            dropout: None,
        }
    }

    pub fn num_adapters(&self) -> usize {
        self.ranks.len()
    }

    /// The row's adapter if its index is in range (else the row has none).
    pub fn adapter_of(&self, row: usize) -> Option<usize> {
        usize::try_from(self.index[row]).ok().filter(|&l| l < self.num_adapters())
    }

    /// NaN in every element the kernels must not read: A rows and B columns
    /// past each rank, P columns past the row's rank and P rows without an adapter.
    pub fn poison_padding(&mut self) {
        let (ranks, r_max, n, k) = (self.ranks.clone(), self.r_max, self.n, self.k);
        poison_padding(&mut self.a, &mut self.b, &ranks, r_max, n, k);
        for row in 0..self.m {
            let rank = self.adapter_of(row).map_or(0, |l| ranks[l]);
            self.p[row * r_max..][rank..r_max].fill(T::nan());
        }
    }

    /// The reference gradients; rows whose index is out of range count as
    /// −1 (no adapter), as the kernels treat them.
    pub fn reference(&self, precision: Precision) -> MultiGradients {
        let shape =
            MultiAdapterShape { m: self.m, k: self.k, n: self.n, num_adapters: self.num_adapters(), r_max: self.r_max };
        let base = Base { x: &self.x, w0: &self.w, bias: None };
        let scales: Vec<f64> = self.scales.iter().map(|&s| f64::from(s)).collect();
        let indices: Vec<i64> = (0..self.m).map(|row| self.adapter_of(row).map_or(-1, |l| l as i64)).collect();
        let adapters =
            MultiAdapters { a_all: &self.a, b_all: &self.b, ranks: &self.ranks, scales: &scales, indices: &indices };
        // The reference must not see the poisoned padding of P either: it
        // reads only the columns inside each row's rank, as the kernels do.
        backward_multi(shape, &base, &adapters, self.dropout.as_ref(), &self.dy, &self.p, precision).expect("reference")
    }
}

/// The gradients a device run produced, downloaded.
#[derive(PartialEq, Debug)]
pub struct Got<T> {
    pub g: Vec<T>,
    pub da: Vec<T>,
    pub db: Vec<T>,
    pub dx: Vec<T>,
}

/// Initial contents of the gradient buffers.
pub struct Initial<T> {
    pub da: Vec<T>,
    pub db: Vec<T>,
    pub dx: Vec<T>,
}

impl<T: LoraDType> Initial<T> {
    /// NaN everywhere: overwriting must write every element.
    pub fn nan(case: &Case<T>) -> Self {
        let l = case.num_adapters();
        Initial {
            da: vec![T::nan(); l * case.r_max * case.k],
            db: vec![T::nan(); l * case.n * case.r_max],
            dx: vec![T::nan(); case.m * case.k],
        }
    }

    /// Random old gradients (dA, dB, dX from `seed` to `seed + 2`) to accumulate onto.
    pub fn random(case: &Case<T>, seed: u64) -> Self {
        let l = case.num_adapters();
        Initial {
            da: random(seed, l * case.r_max * case.k),
            db: random(seed + 1, l * case.n * case.r_max),
            dx: random(seed + 2, case.m * case.k),
        }
    }
}

/// How a case is sent to the kernels.
#[derive(Clone, Copy, PartialEq)]
pub enum Api {
    Single,
    Multi,
}

/// Runs the backward entry point `api` on the case (P passed when `keep_p`,
/// else recomputed), the gradient buffers starting as `initial` and G as NaN;
/// returns the gradients and the adapter status (unchecked).
pub fn run<T: LoraDType>(
    dev: &Device,
    case: &Case<T>,
    api: Api,
    keep_p: bool,
    initial: &Initial<T>,
    mode: GradMode,
) -> Result<(Got<T>, AdapterStatus), LoraError> {
    run_dx_at(dev, case, api, keep_p, initial, mode, 0)
}

/// `run` with dX written `dx_offset` elements into its buffer (a base that
/// need not be aligned); asserts the NaN poison before it stays untouched.
pub fn run_dx_at<T: LoraDType>(
    dev: &Device,
    case: &Case<T>,
    api: Api,
    keep_p: bool,
    initial: &Initial<T>,
    mode: GradMode,
    dx_offset: usize,
) -> Result<(Got<T>, AdapterStatus), LoraError> {
    let stream = &dev.stream;
    let (x, w, a, b, p, dy) = (
        upload(stream, &case.x),
        upload(stream, &case.w),
        upload(stream, &case.a),
        upload(stream, &case.b),
        upload(stream, &case.p),
        upload(stream, &case.dy),
    );
    let index = upload(stream, &case.index);
    let mut dx_then_initial = vec![T::nan(); dx_offset];
    dx_then_initial.extend_from_slice(&initial.dx);
    let (mut da, mut db, mut dx): (CudaSlice<T>, CudaSlice<T>, CudaSlice<T>) =
        (upload(stream, &initial.da), upload(stream, &initial.db), upload(stream, &dx_then_initial));
    let mut g = upload(stream, &vec![T::nan(); case.m * case.r_max]);
    let linear = Linear { weight: w.as_view(), bias: None, n: case.n, k: case.k };
    let inputs =
        BackwardInputs { dy: dy.as_view(), x: x.as_view(), p: keep_p.then(|| p.as_view()), dropout: case.dropout };
    let mut status = AdapterStatus::new(stream)?;
    let mut out = BackwardOutput {
        da: da.as_view_mut(),
        db: db.as_view_mut(),
        dx: dx.slice_mut(dx_offset..),
        g: Some(g.as_view_mut()),
        mode,
    };
    match api {
        Api::Single => {
            let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: case.ranks[0], scale: case.scales[0] };
            dev.kernels.backward(stream, &inputs, &linear, &adapter, &mut out)?;
        }
        Api::Multi => {
            let stack = AdapterStack {
                a: a.as_view(),
                b: b.as_view(),
                r_max: case.r_max,
                ranks: &case.ranks,
                scales: &case.scales,
            };
            let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
            dev.kernels.backward_multi(stream, &inputs, &linear, &stack, &mut rows, &mut out)?;
        }
    }
    let mut dx = download(stream, &dx);
    assert!(dx.drain(..dx_offset).all(|v| v.to_f64().is_nan()), "dX written before its view");
    let got = Got { g: download(stream, &g), da: download(stream, &da), db: download(stream, &db), dx };
    Ok((got, status))
}

/// The kernel of the calling thread's last launch (dX's, the backward's
/// last), on the emulator; `None` on a GPU.
pub fn last_kernel() -> Option<String> {
    crate::device::last_launch_counters().map(|c| c["kernel"].as_str().unwrap_or_default().to_string())
}

pub fn to_f64<T: LoraDType>(values: &[T]) -> Vec<f64> {
    values.iter().map(|v| v.to_f64()).collect()
}

/// The tolerance floor: every gradient is a sum of O(1) products.
pub fn floor<T: LoraDType>() -> f64 {
    T::UNIT_ROUNDOFF * 1e-3
}

/// `old + reference`, rounded like the kernel's store for the naive side.
pub fn plus_old<T: LoraDType>(old: &[T], reference: &[f64], round: bool) -> Vec<f64> {
    old.iter()
        .zip(reference)
        .map(|(o, r)| {
            let sum = o.to_f64() + r;
            if round {
                T::from_f64(f64::from(sum as f32)).to_f64()
            } else {
                sum
            }
        })
        .collect()
}

/// Every gradient (G, dA, dB, dX) against the exact and naive references
/// (docs/contract.md's tolerance); with `old`, the reference is old +
/// gradient (the naive side rounded as the kernels store it).
pub fn check_against_reference<T: LoraDType>(what: &str, case: &Case<T>, got: &Got<T>, old: Option<&Initial<T>>) {
    check_gradients(what, case, got, true, old);
}

/// [`check_against_reference`], G checked only `with_g` (a run that kept no
/// G leaves `got.g` unchecked).
pub fn check_gradients<T: LoraDType>(what: &str, case: &Case<T>, got: &Got<T>, with_g: bool, old: Option<&Initial<T>>) {
    let exact = case.reference(Precision::Exact);
    let naive = case.reference(Precision::Naive);
    let fl = floor::<T>();
    if with_g {
        assert_close_2d::<T>(&format!("G {what}"), case.r_max, &to_f64(&got.g), &exact.g, &naive.g, fl);
    }
    let (da_e, db_e, dx_e, da_n, db_n, dx_n) = match old {
        None => (exact.da, exact.db, exact.dx, naive.da, naive.db, naive.dx),
        Some(old) => (
            plus_old(&old.da, &exact.da, false),
            plus_old(&old.db, &exact.db, false),
            plus_old(&old.dx, &exact.dx, false),
            plus_old(&old.da, &naive.da, true),
            plus_old(&old.db, &naive.db, true),
            plus_old(&old.dx, &naive.dx, true),
        ),
    };
    assert_close_2d::<T>(&format!("dA {what}"), case.k, &to_f64(&got.da), &da_e, &da_n, fl);
    assert_close_2d::<T>(&format!("dB {what}"), case.r_max, &to_f64(&got.db), &db_e, &db_n, fl);
    assert_close_2d::<T>(&format!("dX {what}"), case.k, &to_f64(&got.dx), &dx_e, &dx_n, fl);
}

/// The rows of a case in another order: row `i` of the reordered batch is
/// row `order[i]` of the original.
pub struct RowOrder(Vec<usize>);

impl RowOrder {
    /// The rows sorted by their adapter index (stable; base-only rows, -1,
    /// first): the order the device's grouping gives them.
    pub fn by_index<T>(case: &Case<T>) -> Self {
        let mut order: Vec<usize> = (0..case.m).collect();
        order.sort_by_key(|&i| case.index[i]);
        RowOrder(order)
    }

    /// `values`' rows of `width` elements in this order.
    pub fn rows<E: Copy>(&self, values: &[E], width: usize) -> Vec<E> {
        self.0.iter().flat_map(|&i| values[i * width..(i + 1) * width].iter().copied()).collect()
    }
}

impl<T: LoraDType> Case<T> {
    /// The same problem with its rows in `order`: X, P, dY and the indices
    /// move with their rows; W0, A, B, the ranks, scales and dropout stay.
    pub fn with_rows(&self, order: &RowOrder) -> Self {
        Case {
            ranks: self.ranks.clone(),
            scales: self.scales.clone(),
            index: order.rows(&self.index, 1),
            x: order.rows(&self.x, self.k),
            w: self.w.clone(),
            a: self.a.clone(),
            b: self.b.clone(),
            p: order.rows(&self.p, self.r_max),
            dy: order.rows(&self.dy, self.n),
            ..*self
        }
    }
}

/// Asserts that the backward of the same rows in `order` (`reordered`) gave
/// `got`'s gradients bit for bit: dB, and G row for row; with `da_dx` also dA,
/// and dX row for row (not under dropout, whose mask follows a row's
/// position in the batch).
pub fn assert_row_order_free<T: LoraDType>(
    case: &Case<T>,
    got: &Got<T>,
    reordered: &Got<T>,
    order: &RowOrder,
    da_dx: bool,
) {
    let bits = |v: &[T]| v.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&reordered.db), bits(&got.db), "dB whatever the row order");
    assert_eq!(bits(&reordered.g), bits(&order.rows(&got.g, case.r_max)), "G row for row");
    if da_dx {
        assert_eq!(bits(&reordered.da), bits(&got.da), "dA whatever the row order");
        assert_eq!(bits(&reordered.dx), bits(&order.rows(&got.dx, case.k)), "dX row for row");
    }
}

/// dA's CTAs inside the launch of dX's 128-row `tile` ("128x128" or
/// "128x64"; its last grid column; dA's tiles 64 rank columns wide where
/// r_max, the largest of `ranks`, is past 32): `(m, k)` (ragged), N = 104,
/// the adapters `ranks` scattered over the rows, against the reference; then the same rows sorted by adapter give dA, dB and (row for
/// row) dX and G bit for bit. Nine adapters: warp mode (each of a CTA's 4
/// warps walks an adapter of its own); two: the 4 warps split one
/// adapter's rows.
pub fn dx_with_da_rows_free<T: LoraDType>(tile: &str, (m, k): (usize, usize), ranks: &[usize]) {
    let Some(dev) = crate::device::device() else { return };
    let n = 104;
    let r_max = *ranks.iter().max().expect("ranks");
    let index = row_indices(Mix::Unsorted, m, ranks.len(), 990);
    let mut case = Case::<T>::new(m, k, n, ranks, r_max, index, 991);
    case.poison_padding();
    let (scattered, _) =
        run(&dev, &case, Api::Multi, true, &Initial::nan(&case), GradMode::Overwrite).expect("backward_multi");
    if let Some(name) = last_kernel() {
        // r_max = 40: dA's tiles 64 rank columns wide (X staged once for both halves).
        let wide = format!("_{tile}{}", if r_max > 32 { "_r64" } else { "" });
        assert!(name.starts_with("lora_backward_dx_da_") && name.ends_with(&wide), "dX with dA: {name}");
    }
    check_against_reference(&format!("dA in dX's {tile} launch, ranks {ranks:?}"), &case, &scattered, None);

    let order = RowOrder::by_index(&case);
    let sorted = case.with_rows(&order);
    let (grouped, _) =
        run(&dev, &sorted, Api::Multi, true, &Initial::nan(&sorted), GradMode::Overwrite).expect("backward_multi");
    assert_row_order_free(&case, &scattered, &grouped, &order, true);
}
